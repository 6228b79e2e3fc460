/* grouped_gemm.cuh — the routed experts of a large batch, one launch per projection
 * (grouped_gemm.cu). Launcher conventions: common.cuh. */
#ifndef M4_KERNELS_GROUPED_GEMM_CUH
#define M4_KERNELS_GROUPED_GEMM_CUH

#include <stdint.h>

#include "common.cuh"
#include "gemv.cuh"   /* m4k_fp8_scales */

extern "C" {
#include "config.h"
}

/* Grouped GEMM over an expert stack, one launch, for batches past the GEMV:
 * the M slots of X [M, cols] are sorted by expert, expert e owning slots [offsets[e],
 * offsets[e + 1]) (offsets [E + 1] on the device, non-decreasing, offsets[E] ≤ M; slots past
 * offsets[E] are neither read nor written), and Y[s, :] = X[s, :] · W[e]ᵀ for W [E, rows, cols]
 * bf16; X is rounded to bf16, sums in float32 (tensor cores). swiglu: W[e] is a gate_up pair
 * [2F, cols] and Y [M, F] = act(x·gate_fᵀ) · (x·up_fᵀ), as m4k_gemv's. No host synchronisation
 * (CUDA-graph capturable). Needs cols a multiple of 8 and W, X 16-byte aligned.
 * FP8 (W = __nv_fp8_e4m3, `scales` required): the codes are staged as bytes with cp.async and
 * dequantised in shared memory to bf16_rn(float(code) · scale) — m4k_fp8_to_bf16's values — ahead
 * of the same tensor-core loop, so the result equals the bf16 kernel's on m4k_fp8_to_bf16's output
 * bit for bit. Needs block_cols the whole width or a power of two ≥ 32 (m4_fp8_col_shift); any
 * block_rows. */
template <typename W>
int m4k_grouped_gemm(const W *Wt, int64_t E, int64_t rows, int64_t cols, const int32_t *offsets,
                     const float *X, int64_t M, float *Y, bool swiglu, m4_activation act, cudaStream_t stream,
                     m4_error *err, const m4k_fp8_scales *scales = nullptr);

#endif
