/* dtype.h — the element types a safetensors checkpoint can hold, and their conversion to float32. */
#ifndef M4_DTYPE_H
#define M4_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    M4_DTYPE_F32,
    M4_DTYPE_BF16,
    M4_DTYPE_F16,
    M4_DTYPE_F8_E4M3,
    M4_DTYPE_I64,
    M4_DTYPE_I32,
    M4_DTYPE_COUNT
} m4_dtype;

/* Bytes per element. */
size_t m4_dtype_size(m4_dtype t);

/* The safetensors spelling ("F32", "BF16", "F16", "F8_E4M3", "I64", "I32"). */
const char *m4_dtype_name(m4_dtype t);

/* Parses a safetensors dtype string; returns 0 and sets *out, or -1 when unknown. */
int m4_dtype_parse(const char *name, m4_dtype *out);

/* true for the floating types a weight can be stored in. */
int m4_dtype_is_float(m4_dtype t);

static inline float m4_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = {.u = (uint32_t)h << 16};
    return v.f;
}

static inline float m4_bits_to_f32(uint32_t u) {
    union { uint32_t u; float f; } v = {.u = u};
    return v.f;
}

static inline uint32_t m4_f32_bits(float f) {
    union { float f; uint32_t u; } v = {.f = f};
    return v.u;
}

/* All-ones when cond is true, else 0: lets the conversions below select without branches, so
 * that loops over a row vectorise (GCC will not if-convert the ternary form of these). */
static inline uint32_t m4_mask(int cond) { return (uint32_t)0 - (uint32_t)(cond != 0); }

/* IEEE half: bias 15. */
static inline float m4_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t mag = h & 0x7FFFu;
    uint32_t normal = (mag << 13) + (112u << 23);                    /* rebias 15 → 127 */
    uint32_t inf_nan = (0xFFu << 23) | ((mag & 0x3FFu) << 13);
    uint32_t subnormal = m4_f32_bits((float)(mag & 0x3FFu) * 0x1p-24f);
    uint32_t is_special = m4_mask(mag >= 0x7C00u), is_normal = m4_mask(mag >= 0x400u);
    uint32_t bits = (inf_nan & is_special) | (normal & is_normal & ~is_special) | (subnormal & ~is_normal);
    return m4_bits_to_f32(bits | sign);
}

/* OCP FP8 E4M3 ("e4m3fn"): bias 7, no infinities, S.1111.111 is NaN, max finite ±448. */
static inline float m4_f8e4m3_to_f32(uint8_t b) {
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t mag = b & 0x7Fu;
    uint32_t normal = (mag << 20) + (120u << 23);                    /* rebias 7 → 127 */
    uint32_t subnormal = m4_f32_bits((float)(mag & 7u) * 0x1p-9f);
    uint32_t is_nan = m4_mask(mag == 0x7Fu), is_normal = m4_mask(mag >= 8u);
    uint32_t bits = (0x7FC00000u & is_nan) | (normal & is_normal & ~is_nan) | (subnormal & ~is_normal);
    return m4_bits_to_f32(bits | sign);
}

/* value(b) · 2^-120, exactly, for every finite code b (a NaN for NaN codes), without selects:
 * the fast FP8 path multiplies it by scale · 2^120 (dtype.c explains why that product is
 * m4_f8e4m3_to_f32(b) · scale bit for bit). */
static inline float m4_f8e4m3_times_2m120(uint8_t b) {
    int16_t word = (int16_t)(uint16_t)(b << 8);                /* b in the top byte */
    uint16_t hi = (uint16_t)((uint16_t)(word >> 4) & 0x87F0u); /* sign | exp | mantissa */
    uint16_t nan = (uint16_t)(0u - (uint16_t)((hi & 0x7FF0u) == 0x07F0u));
    hi = (uint16_t)(hi | (nan & 0x7800u));                     /* 0x7F / 0xFF: exponent 0xFF */
    return m4_bits_to_f32((uint32_t)hi << 16);
}

/* dst[i] = m4_f8e4m3_to_f32(src[i]) · scale (float32 product), bit for bit, for n FP8 codes —
 * computed without the per-code selects above, so that it runs at several codes per cycle
 * (dtype.c explains why it is exact). NaN codes give a NaN (of another payload). */
void m4_convert_f8e4m3_to_f32(const uint8_t *src, size_t n, float scale, float *dst);

/* dst[i] = float32(src[i]) · scale for n elements of type t (integers are converted too).
 * The product is done in float32, as MODEL.md §7 trap 9 requires for FP8 dequantisation. */
void m4_convert_to_f32(m4_dtype t, const void *src, size_t n, float scale, float *dst);

#endif
