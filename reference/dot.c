/* dot.c — the reference's dot products (dot.h), its hot loop: every linear layer ends here, and a
 * decode step is little else than weight rows streamed through m4_dot_rows.
 *
 * One summation order everywhere (lane j % 16, products and sums rounded one at a time:
 * -ffp-contract=off, no -ffast-math). A block of 16 consecutive elements maps lane for lane onto
 * one 16-wide vector, so vector code computes the same IEEE operations in the same order as the
 * scalar definition, and gives the same bits. m4_dot_rows differs from its twin
 * m4_dot_rows_plain only in how fast it gets there:
 *   - the weight is read in place and converted in registers (BF16: a 16-bit shift; FP8: a few
 *     integer operations and one multiply by scale · 2^120, exact as loader/dtype.c explains),
 *     instead of through a float32 buffer;
 *   - on a CPU with AVX-512 (this project's CPUs; GCC builds), M4_DOT_ROWS rows share each load
 *     of x and their partial sums are M4_DOT_ROWS independent chains, so additions overlap
 *     instead of waiting on one another; each row advances two blocks a step (a whole 64-byte
 *     line of BF16). This is the one place in the reference with intrinsics: GCC 12 splits the
 *     widening loads of its own vector code in two, and the loop streamed the lm_head at
 *     20 GB/s against 22.6 with intrinsics (2-core EPYC VM, docs/PERF.md);
 *   - elsewhere, one row at a time in GCC's vector extension (plain C: operators act lane by
 *     lane), compiled for AVX2 and the x86-64 baseline (function multi-versioning, as in
 *     loader/dtype.c).
 * tests/test_reference_units.c holds both fast paths to the twin bit for bit, over every dtype,
 * tails, row groups past the last row and special values. */
#include "dot.h"

#include <math.h>
#include <string.h>

#include "dtype.h"

#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && !defined(__clang__) && \
    defined(__has_attribute) && !defined(M4_NO_TARGET_CLONES)
#if __has_attribute(target_clones)
#define M4_CLONES __attribute__((target_clones("avx2", "default")))
#define M4_HAVE_AVX512 1
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

/* One block of 16 consecutive elements as one value, in GCC's vector extension (plain C: each
 * operator acts lane by lane, as the scalar code would; the compiler picks the instructions). */
#pragma GCC diagnostic ignored "-Wpsabi"   /* the helpers below are always inlined: no ABI to keep */
typedef float f32x16 __attribute__((vector_size(64)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));
typedef int16_t i16x16 __attribute__((vector_size(32)));
typedef uint8_t u8x16 __attribute__((vector_size(16)));
_Static_assert(M4_LANES == 16, "one vector block per lane set");

M4_INLINE f32x16 load_f32(const float *p) { f32x16 v; memcpy(&v, p, sizeof v); return v; }

/* W[row, j … j + 15] as float32, for the dtypes m4_dot_rows reads (a constant t folds the
 * switch away): BF16 is the float's upper half; FP8 as m4_f8e4m3_times_2m120, lane by lane. */
M4_INLINE f32x16 weight_block(m4_dtype t, const uint8_t *row, int64_t j, float fp8_factor) {
    switch (t) {
    case M4_DTYPE_BF16: {
        u16x16 h;
        memcpy(&h, row + 2 * j, sizeof h);
        return (f32x16)(__builtin_convertvector(h, u32x16) << 16);
    }
    case M4_DTYPE_F32: return load_f32((const float *)row + j);
    default: {                                                    /* M4_DTYPE_F8_E4M3 */
        u8x16 b;
        memcpy(&b, row + j, sizeof b);
        i16x16 word = (i16x16)(__builtin_convertvector(b, u16x16) << 8);    /* b in the top byte */
        u16x16 hi = (u16x16)(word >> 4) & 0x87F0;                           /* sign | exp | mantissa */
        u16x16 nan = (u16x16)((hi & 0x7FF0) == 0x07F0);                     /* all-ones for NaN codes */
        hi |= nan & 0x7800;
        return (f32x16)(__builtin_convertvector(hi, u32x16) << 16) * fp8_factor;
    }
    }
}

/* W[row, j] as float32, one element (the tails past the last whole block). */
M4_INLINE float weight_at(m4_dtype t, const uint8_t *row, int64_t j, float fp8_factor) {
    switch (t) {
    case M4_DTYPE_BF16: return m4_bf16_to_f32(((const uint16_t *)row)[j]);
    case M4_DTYPE_F32: return ((const float *)row)[j];
    default: return m4_f8e4m3_times_2m120(row[j]) * fp8_factor;   /* M4_DTYPE_F8_E4M3 */
    }
}

/* Row `row` · x [n], summed as dot.h says (the portable path). */
M4_INLINE float row_dot(m4_dtype t, const uint8_t *row, float fp8_factor, const float *restrict x, int64_t n) {
    f32x16 a = {0};                                   /* lane k: partial sum k */
    int64_t j = 0;
    for (; j + M4_LANES <= n; j += M4_LANES) a += weight_block(t, row, j, fp8_factor) * load_f32(x + j);
    float acc[M4_LANES];
    memcpy(acc, &a, sizeof acc);
    for (int64_t k = 0; j + k < n; k++) acc[k] += weight_at(t, row, j + k, fp8_factor) * x[j + k];
    return m4_dot_lanes_sum(acc);
}

M4_CLONES void m4_dot_rows_portable(const m4_weight *w, int64_t row0, const float *x, float y[M4_DOT_ROWS]) {
    const size_t row_bytes = (size_t)w->cols * m4_dtype_size(w->dtype);
    const float factor = fp8_factor(w);
    for (int r = 0; r < M4_DOT_ROWS; r++) {
        const uint8_t *row = w->data + (size_t)(row0 + r < w->rows ? row0 + r : w->rows - 1) * row_bytes;
        switch (w->dtype) {   /* one instance of the loop per dtype, each vectorised on its own */
        case M4_DTYPE_BF16: y[r] = row_dot(M4_DTYPE_BF16, row, factor, x, w->cols); break;
        case M4_DTYPE_F32: y[r] = row_dot(M4_DTYPE_F32, row, factor, x, w->cols); break;
        default: y[r] = row_dot(M4_DTYPE_F8_E4M3, row, factor, x, w->cols); break;
        }
    }
}

#ifdef M4_HAVE_AVX512
#include <immintrin.h>
#define M4_AVX512 __attribute__((target("avx512f")))

/* weight_block on AVX-512F: the same bits. BF16: widened to 32 bits, shifted into the upper half.
 * FP8: the code sign-extended to 32 bits and shifted left by 20 holds sign copies in bits 27–31
 * and exponent | mantissa in bits 20–26, so one mask leaves exactly the bits of
 * m4_f8e4m3_times_2m120 (bit 31 and bits 20–26); NaN codes (b & 0x7F == 0x7F, which that would
 * read as 480 · 2^-120) are looked for in the 16 bytes at once and, when there is one, get
 * exponent bits 0xFF. */
static inline __attribute__((always_inline)) M4_AVX512 __m512 weight_block_avx512(m4_dtype t, const uint8_t *row,
                                                                                  int64_t j, __m512 fp8_factor) {
    switch (t) {
    case M4_DTYPE_BF16: {
        __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(row + 2 * j)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
    }
    case M4_DTYPE_F32: return _mm512_loadu_ps((const float *)row + j);
    default: {                                                    /* M4_DTYPE_F8_E4M3 */
        const __m128i b = _mm_loadu_si128((const __m128i *)(row + j));
        __m512i bits = _mm512_and_si512(_mm512_slli_epi32(_mm512_cvtepi8_epi32(b), 20),
                                        _mm512_set1_epi32((int)0x87F00000u));
        const int nan = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_and_si128(b, _mm_set1_epi8(0x7F)), _mm_set1_epi8(0x7F)));
        if (nan) bits = _mm512_mask_or_epi32(bits, (__mmask16)nan, bits, _mm512_set1_epi32(0x78000000));
        return _mm512_mul_ps(_mm512_castsi512_ps(bits), fp8_factor);
    }
    }
}

/* M4_DOT_ROWS rows · x [n]: x loaded once per block for all rows, one accumulator per row. */
static inline __attribute__((always_inline)) M4_AVX512 void rows_dot_avx512(m4_dtype t, const uint8_t *const rows[M4_DOT_ROWS],
                                                                           float fp8_factor, const float *x, int64_t n,
                                                                           float y[M4_DOT_ROWS]) {
    const __m512 factor = _mm512_set1_ps(fp8_factor);
    __m512 a[M4_DOT_ROWS];
    for (int r = 0; r < M4_DOT_ROWS; r++) a[r] = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 2 * M4_LANES <= n; j += 2 * M4_LANES) {   /* two blocks a row: a whole line of BF16 */
        const __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + M4_LANES);
        for (int r = 0; r < M4_DOT_ROWS; r++) {
            a[r] = _mm512_add_ps(a[r], _mm512_mul_ps(weight_block_avx512(t, rows[r], j, factor), x0));
            a[r] = _mm512_add_ps(a[r], _mm512_mul_ps(weight_block_avx512(t, rows[r], j + M4_LANES, factor), x1));
        }
    }
    for (; j + M4_LANES <= n; j += M4_LANES) {
        const __m512 xj = _mm512_loadu_ps(x + j);
        for (int r = 0; r < M4_DOT_ROWS; r++)
            a[r] = _mm512_add_ps(a[r], _mm512_mul_ps(weight_block_avx512(t, rows[r], j, factor), xj));
    }
    for (int r = 0; r < M4_DOT_ROWS; r++) {
        float acc[M4_LANES];
        _mm512_storeu_ps(acc, a[r]);
        for (int64_t k = 0; j + k < n; k++) acc[k] += weight_at(t, rows[r], j + k, fp8_factor) * x[j + k];
        y[r] = m4_dot_lanes_sum(acc);
    }
}

static M4_AVX512 void dot_rows_avx512(const m4_weight *w, int64_t row0, const float *x, float y[M4_DOT_ROWS]) {
    const size_t row_bytes = (size_t)w->cols * m4_dtype_size(w->dtype);
    const uint8_t *rows[M4_DOT_ROWS];
    for (int r = 0; r < M4_DOT_ROWS; r++)
        rows[r] = w->data + (size_t)(row0 + r < w->rows ? row0 + r : w->rows - 1) * row_bytes;
    switch (w->dtype) {
    case M4_DTYPE_BF16: rows_dot_avx512(M4_DTYPE_BF16, rows, 0.0f, x, w->cols, y); break;
    case M4_DTYPE_F32: rows_dot_avx512(M4_DTYPE_F32, rows, 0.0f, x, w->cols, y); break;
    default: rows_dot_avx512(M4_DTYPE_F8_E4M3, rows, fp8_factor(w), x, w->cols, y); break;
    }
}
#endif

void m4_dot_rows(const m4_weight *w, int64_t row0, const float *x, float y[M4_DOT_ROWS]) {
#ifdef M4_HAVE_AVX512
    if (__builtin_cpu_supports("avx512f")) {
        dot_rows_avx512(w, row0, x, y);
        return;
    }
#endif
    m4_dot_rows_portable(w, row0, x, y);
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
