/* dot.c — the reference's dot products (dot.h), its hot loop: every linear layer ends here, and a
 * decode step is little else than weight rows streamed through m4_dot_rows.
 *
 * Plain C, no intrinsics. The summation order (lane j % 16, products and sums rounded one at a
 * time: -ffp-contract=off, no -ffast-math) maps one lane to one vector element, so the compiler
 * vectorises it without reordering anything: the vector code computes the same IEEE operations
 * in the same order as the scalar definition, and gives the same bits. m4_dot_rows differs from
 * its twin m4_dot_rows_plain only in how fast it gets there:
 *   - the weight is read in place and converted in registers (BF16: a 16-bit shift; FP8: a few
 *     integer operations and one multiply by scale · 2^120, exact as dtype.c explains), instead
 *     of through a float32 buffer;
 *   - M4_DOT_ROWS rows share each load of x, and their M4_DOT_ROWS × 16 partial sums are
 *     independent chains, so additions overlap instead of waiting on one another;
 *   - it is compiled for AVX-512, AVX2 and the x86-64 baseline (GCC function multi-versioning,
 *     as in loader/dtype.c) and the dynamic linker picks the one the CPU runs.
 * tests/test_reference_units.c holds both to each other bit for bit, over every dtype, tails,
 * odd row counts and special values. */
#include "dot.h"

#include <math.h>

#include "dtype.h"

#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && !defined(__clang__) && \
    defined(__has_attribute) && !defined(M4_NO_TARGET_CLONES)
#if __has_attribute(target_clones)
#define M4_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef M4_CLONES
#define M4_CLONES
#endif
#define M4_INLINE static inline __attribute__((always_inline))

M4_CLONES void m4_dot_lanes(float acc[M4_LANES], const float *restrict w, const float *restrict x, int64_t n) {
    float a[M4_LANES];             /* a local copy, so the lanes live in registers */
    for (int k = 0; k < M4_LANES; k++) a[k] = acc[k];
    int64_t j = 0;
    for (; j + M4_LANES <= n; j += M4_LANES)
        for (int k = 0; k < M4_LANES; k++) a[k] += w[j + k] * x[j + k];
    for (int k = 0; j < n; j++, k++) a[k] += w[j] * x[j];
    for (int k = 0; k < M4_LANES; k++) acc[k] = a[k];
}

float m4_dot_lanes_sum(float acc[M4_LANES]) {
    for (int width = M4_LANES / 2; width >= 1; width /= 2)
        for (int k = 0; k < width; k++) acc[k] += acc[k + width];
    return acc[0];
}

/* scale · 2^120, the FP8 fast path's one multiplier; not finite when |scale| ≥ 2^8. */
static float fp8_factor(const m4_weight *w) { return w->scale * 0x1p120f; }

bool m4_dot_rows_supported(const m4_weight *w) {
    switch (w->dtype) {
    case M4_DTYPE_BF16:
    case M4_DTYPE_F32: return w->scale == 1.0f;
    case M4_DTYPE_F8_E4M3: return isfinite(fp8_factor(w));
    default: return false;
    }
}

/* W[row, j] as float32, for the dtypes m4_dot_rows reads (a constant t folds the switch away). */
M4_INLINE float weight_at(m4_dtype t, const uint8_t *row, int64_t j, float fp8_factor) {
    switch (t) {
    case M4_DTYPE_BF16: return m4_bf16_to_f32(((const uint16_t *)row)[j]);
    case M4_DTYPE_F32: return ((const float *)row)[j];
    default: return m4_f8e4m3_times_2m120(row[j]) * fp8_factor;   /* M4_DTYPE_F8_E4M3 */
    }
}

/* The M4_DOT_ROWS rows at `rows` · x [n], summed as dot.h says, into y. */
M4_INLINE void rows_dot(m4_dtype t, const uint8_t *const rows[M4_DOT_ROWS], float fp8_factor,
                        const float *restrict x, int64_t n, float y[M4_DOT_ROWS]) {
    float a[M4_DOT_ROWS][M4_LANES] = {{0}};
    int64_t j = 0;
    for (; j + M4_LANES <= n; j += M4_LANES)
#pragma GCC unroll 4   /* the rows' partial sums stay in registers */
        for (int r = 0; r < M4_DOT_ROWS; r++)
            for (int k = 0; k < M4_LANES; k++) a[r][k] += weight_at(t, rows[r], j + k, fp8_factor) * x[j + k];
    for (int r = 0; r < M4_DOT_ROWS; r++)
        for (int64_t k = 0; j + k < n; k++) a[r][k] += weight_at(t, rows[r], j + k, fp8_factor) * x[j + k];
    for (int r = 0; r < M4_DOT_ROWS; r++) y[r] = m4_dot_lanes_sum(a[r]);
}

M4_CLONES void m4_dot_rows(const m4_weight *w, int64_t row0, const float *x, float y[M4_DOT_ROWS]) {
    const size_t row_bytes = (size_t)w->cols * m4_dtype_size(w->dtype);
    const uint8_t *rows[M4_DOT_ROWS];
    for (int r = 0; r < M4_DOT_ROWS; r++) {
        const int64_t i = row0 + r < w->rows ? row0 + r : w->rows - 1;
        rows[r] = w->data + (size_t)i * row_bytes;
    }
    switch (w->dtype) {   /* one instance of the loop per dtype, each vectorised on its own */
    case M4_DTYPE_BF16: rows_dot(M4_DTYPE_BF16, rows, 0.0f, x, w->cols, y); break;
    case M4_DTYPE_F32: rows_dot(M4_DTYPE_F32, rows, 0.0f, x, w->cols, y); break;
    default: rows_dot(M4_DTYPE_F8_E4M3, rows, fp8_factor(w), x, w->cols, y); break;
    }
}

void m4_dot_rows_plain(const m4_weight *w, int64_t row0, const float *x, float y[M4_DOT_ROWS]) {
    for (int r = 0; r < M4_DOT_ROWS; r++) {
        const int64_t i = row0 + r < w->rows ? row0 + r : w->rows - 1;
        float acc[M4_LANES] = {0};
        for (int64_t j = 0; j < w->cols; j++) {
            const size_t at = (size_t)(i * w->cols + j);    /* W[i, j] = value · scale (float32) */
            float wij = w->dtype == M4_DTYPE_BF16 ? m4_bf16_to_f32(((const uint16_t *)w->data)[at]) * w->scale
                      : w->dtype == M4_DTYPE_F32  ? ((const float *)w->data)[at] * w->scale
                                                  : m4_f8e4m3_to_f32(w->data[at]) * w->scale;
            acc[j % M4_LANES] += wij * x[j];
        }
        y[r] = m4_dot_lanes_sum(acc);
    }
}
