#include "dtype.h"

#include <math.h>
#include <string.h>

/* The conversions below are compiled twice, for the x86-64 baseline (SSE2) and for AVX2, and the
 * dynamic linker picks one at start-up (GCC function multi-versioning, an ELF ifunc): twice the
 * codes per instruction where the CPU has it, no -march flag for the whole build. Both clones do
 * the same integer work and the same single IEEE multiply per element (nothing to contract), so
 * their results are identical bit for bit. GCC only: clang 14 names the dispatcher
 * "<name>.ifunc" and leaves callers in other files unresolved (the fuzz preset's clang build gets
 * the baseline version). M4_NO_TARGET_CLONES turns it off. */
#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && !defined(__clang__) && \
    defined(__has_attribute) && !defined(M4_NO_TARGET_CLONES)
#if __has_attribute(target_clones)
#define M4_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef M4_CLONES
#define M4_CLONES
#endif

static const struct {
    const char *name;
    size_t size;
} dtype_info[M4_DTYPE_COUNT] = {
    [M4_DTYPE_F32] = {"F32", 4},     [M4_DTYPE_BF16] = {"BF16", 2}, [M4_DTYPE_F16] = {"F16", 2},
    [M4_DTYPE_F8_E4M3] = {"F8_E4M3", 1}, [M4_DTYPE_I64] = {"I64", 8}, [M4_DTYPE_I32] = {"I32", 4},
};

size_t m4_dtype_size(m4_dtype t) { return t < M4_DTYPE_COUNT ? dtype_info[t].size : 0; }

const char *m4_dtype_name(m4_dtype t) { return t < M4_DTYPE_COUNT ? dtype_info[t].name : "?"; }

int m4_dtype_parse(const char *name, m4_dtype *out) {
    for (int t = 0; t < M4_DTYPE_COUNT; t++) {
        if (strcmp(name, dtype_info[t].name) == 0) {
            *out = (m4_dtype)t;
            return 0;
        }
    }
    return -1;
}

int m4_dtype_is_float(m4_dtype t) {
    return t == M4_DTYPE_F32 || t == M4_DTYPE_BF16 || t == M4_DTYPE_F16 || t == M4_DTYPE_F8_E4M3;
}

/* FP8 E4M3 → float32 × scale, the fast way (the weight-streaming hot path: a decode step
 * converts every FP8 weight it reads). For a code b, the float32 with bits
 *     ((b & 0x80) << 24) | ((b & 0x7F) << 20)
 * has the code's sign, its 4 exponent bits as float32 exponent bits 23–26 and its 3 mantissa
 * bits as the top of float32's mantissa: that float is exactly value(b) · 2^-120 for EVERY
 * finite code — normal codes (float32 bias 127 = E4M3 bias 7 + 120) and subnormal ones alike
 * (E4M3 subnormal m · 2^-9 lands on the float32 subnormal m · 2^-129). So
 *     value(b) · scale = float(bits) · (scale · 2^120),
 * and because scale · 2^120 is exact (a power-of-two multiply that cannot underflow) and both
 * sides round the same real product once, the result is bit-identical to the definition
 * m4_f8e4m3_to_f32(b) · scale, for any finite scale for which scale · 2^120 does not overflow
 * (|scale| < 2^8). Otherwise (huge, infinite or NaN scale) the product is taken in two exact
 * steps, (float(bits) · 2^120) · scale, which is the definition again, one multiply more.
 * NaN codes (S.1111.111) get exponent bits 0xFF added, a quiet NaN that the multiply keeps.
 *
 * The bit work (m4_f8e4m3_times_2m120 in dtype.h) is done on 16-bit lanes — the float's upper half, as for BF16 — so that SSE2
 * handles 8 codes per instruction: the byte goes to the top of a 16-bit word, an arithmetic
 * shift right by 4 puts the mantissa and exponent in place and smears the sign over bits
 * 11–15, and a mask keeps bit 15 (sign) and bits 4–10. Branch-free, strict IEEE (one multiply,
 * nothing to contract), vectorised by GCC 12 at -O3 (the Release build) without any -m flag.
 * Speed note: subnormal codes (|value| < 2^-6) become subnormal float32 operands, which x86
 * cores may handle with a microcode assist (about 40 cycles each on the EPYC this was measured
 * on); per-tensor-scaled checkpoints rarely hold such codes. Under denormals-are-zero (never
 * set by this project) they would read as zero. */
static inline void f8e4m3_times(const uint8_t *restrict s, size_t n, float factor, float *restrict dst) {
    for (size_t i = 0; i < n; i++) dst[i] = m4_f8e4m3_times_2m120(s[i]) * factor;
}

M4_CLONES void m4_convert_f8e4m3_to_f32(const uint8_t *src, size_t n, float scale, float *dst) {
    const float folded = scale * 0x1p120f;
    if (isfinite(folded)) {
        f8e4m3_times(src, n, folded, dst);
        return;
    }
    f8e4m3_times(src, n, 0x1p120f, dst); /* exact: the codes' values */
    for (size_t i = 0; i < n; i++) dst[i] *= scale;
}

M4_CLONES void m4_convert_to_f32(m4_dtype t, const void *src, size_t n, float scale, float *dst) {
    switch (t) {
    case M4_DTYPE_F32: {
        const float *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = s[i] * scale;
        break;
    }
    case M4_DTYPE_BF16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = m4_bf16_to_f32(s[i]) * scale;
        break;
    }
    case M4_DTYPE_F16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = m4_f16_to_f32(s[i]) * scale;
        break;
    }
    case M4_DTYPE_F8_E4M3: m4_convert_f8e4m3_to_f32(src, n, scale, dst); break;
    case M4_DTYPE_I64: {
        const int64_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = (float)s[i] * scale;
        break;
    }
    case M4_DTYPE_I32: {
        const int32_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = (float)s[i] * scale;
        break;
    }
    case M4_DTYPE_COUNT: break;
    }
}
