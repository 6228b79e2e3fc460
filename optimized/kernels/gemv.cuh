/* gemv.cuh — decode-sized matrix products over float32, bf16 and FP8 weights, and the FP8 → bf16
 * dequantisation (gemv.cu); m4k_fp8_scales, how every FP8 kernel finds a weight's scales.
 * Launcher conventions: common.cuh. */
#ifndef M4_KERNELS_GEMV_CUH
#define M4_KERNELS_GEMV_CUH

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <stdint.h>

#include "common.cuh"
#include "fp8_blocks.h"

extern "C" {
#include "config.h"
}

/* Most tokens one GEMV launch serves; larger batches go through cuBLAS. */
#define M4_CUDA_GEMV_MAX_TOKENS 8

/* The scales of an FP8 weight stack W [E, rows, cols] (fp8_blocks.h): scale [E, ⌈rows /
 * block_rows⌉, ⌈cols / block_cols⌉] on the device, element (e, r, c) = float(W[e, r, c]) ·
 * scale[e][r / block_rows][c / block_cols] in float32. Per-tensor FP8: block = the whole matrix. */
struct m4k_fp8_scales {
    const float *scale = nullptr;
    int64_t block_rows = 0, block_cols = 0;
};

/* Matrix-vector products for up to M4_CUDA_GEMV_MAX_TOKENS tokens, one warp per output row, the
 * weight read once with 16-byte loads. `groups` independent problems (grid.y): group g multiplies
 * matrix (expert ? expert[g] : 0) of the stack W [*, rows, cols] with the `ntok` input rows
 * starting at x row (g / x_div)·ntok, writing y rows g·ntok…; y [groups·ntok, rows].
 * swiglu: the matrix is a gate_up pair [2F, cols]; row f of y is act(gate_f·x) · (up_f·x) and
 * y has F = rows/2 columns. Needs cols a multiple of 8.
 * FP8 (W = __nv_fp8_e4m3, `scales` required): a 16-byte load is 16 codes, converted exactly
 * (e4m3 → half → float, the hardware conversion on sm_89+) and multiplied by their block's scale
 * in float32 — the reference's dequantised weight, bit for bit — before the float32 dot product.
 * Needs cols a multiple of 16 and block_cols the whole width or a power of two ≥ 16
 * (m4_fp8_col_shift); any block_rows. */
/* Launch configuration of m4k_gemv, defaults measured on an H200 (bench/results); m4_gpu_bench's
 * tune/ rows try the others. blocks_per_sm: blocks per multiprocessor over all groups (the grid
 * loops over rows); unroll: 16-byte loads per row a lane issues before using them (2, 4 or 8);
 * x_in_shared: stage the input rows in shared memory when they fit in 32 KiB. */
struct m4k_gemv_tuning {
    int blocks_per_sm = 4;   /* H200: lm_head at batch 1 100% of the copy ceiling, experts 46% (2: 82%, 35%) */
    int unroll = 4;
    bool x_in_shared = true;
};
extern m4k_gemv_tuning m4k_gemv_config;

template <typename W>
int m4k_gemv(const W *Wt, int64_t rows, int64_t cols, const int32_t *expert, int64_t groups,
             const float *x, int64_t x_div, int ntok, float *y, bool swiglu, m4_activation act,
             cudaStream_t stream, m4_error *err, const m4k_fp8_scales *scales = nullptr);

/* Dequantises rows [row0, row0 + n_rows) of one FP8 matrix W [rows, cols] (scales: that matrix's
 * [⌈rows / block_rows⌉, ⌈cols / block_cols⌉], any block sizes) to bf16:
 * out[(r − row0)·cols + c] = bf16_rn(float(W[r, c]) · scale[r / block_rows][c / block_cols]) —
 * bit for bit the bf16 rounding of m4_weight_row_f32, i.e. what the bf16 upload used to store. */
int m4k_fp8_to_bf16(const __nv_fp8_e4m3 *W, const m4k_fp8_scales &scales, int64_t rows, int64_t cols,
                    int64_t row0, int64_t n_rows, __nv_bfloat16 *out, cudaStream_t stream, m4_error *err);

#endif
