/* fp8_blocks.h — where an FP8 weight's scales sit, shared by the host (upload, launchers, tests)
 * and the CUDA kernels. Plain C, so that a CPU unit test (tests/test_fp8_blocks.c) includes it.
 *
 * An FP8 weight on the device is [E, rows, cols] e4m3 codes with float32 scales
 * [E, ⌈rows / br⌉, ⌈cols / bc⌉]: element (e, r, c) is float32(code) · scale[e][r / br][c / bc], the
 * product in float32 — the reference's dequantisation (m4_weight_row_f32: m4_f8e4m3_to_f32(code) ·
 * weight_scale_inv, bit for bit). The published checkpoint is per tensor (per expert for the
 * stacks): br = rows, bc = cols, one scale per matrix. Block-wise checkpoints (HF's
 * weight_block_size, e.g. [128, 128]) are refused by the loader today; the kernels already take
 * any br, and a bc that is the whole width or a power of two (m4_fp8_col_shift). */
#ifndef M4_FP8_BLOCKS_H
#define M4_FP8_BLOCKS_H

#include <stdint.h>

#if defined(__CUDACC__)
#define M4_FP8_HD __host__ __device__
#else
#define M4_FP8_HD
#endif

/* Blocks of `block` covering n (the last one may be partial). */
static inline M4_FP8_HD int64_t m4_fp8_blocks(int64_t n, int64_t block) { return (n + block - 1) / block; }

/* Index of element (e, r, c)'s scale in the [E, ⌈rows / br⌉, ⌈cols / bc⌉] array. */
static inline M4_FP8_HD int64_t m4_fp8_scale_index(int64_t e, int64_t r, int64_t c, int64_t rows, int64_t cols,
                                                   int64_t br, int64_t bc) {
    return (e * m4_fp8_blocks(rows, br) + r / br) * m4_fp8_blocks(cols, bc) + c / bc;
}

/* The shift s with c >> s == c / bc for every column c < cols, which is how the GEMV and the
 * grouped GEMM find a column's block (no division in their inner loops): 62 when one block spans
 * the width (bc ≥ cols, the per-tensor case), log2(bc) when bc is a power of two and a multiple
 * of `step` (the columns a kernel scales with one value: 16 per GEMV load, 32 per grouped GEMM
 * k-tile), else -1 (unsupported by those kernels; the dequantisation kernel takes any bc). */
static inline int m4_fp8_col_shift(int64_t cols, int64_t bc, int64_t step) {
    if (cols < 1 || bc < 1 || step < 1) return -1;
    if (bc >= cols) return 62;
    if (bc % step != 0 || (bc & (bc - 1)) != 0) return -1;
    int s = 0;
    while (((int64_t)1 << s) < bc) s++;
    return s;
}

#endif
