/* Element types: every FP8 E4M3, F16 and BF16 code against an independent ldexp-based formula,
 * the dtype names, and m4_convert_to_f32 with a scale (product in float32, MODEL.md §7 trap 9). */
#include "testutil.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "dtype.h"

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Same value, same sign of zero, or both NaN. */
static int same_float(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return f32_bits(a) == f32_bits(b);
}

/* OCP E4M3 ("e4m3fn") from its definition: bias 7, subnormals m·2^-9, S.1111.111 is NaN. */
static double fp8_formula(unsigned code) {
    int s = (code >> 7) & 1, e = (code >> 3) & 15, m = code & 7;
    double v;
    if (e == 15 && m == 7) return NAN;
    v = e == 0 ? ldexp(m, -9) : ldexp(8 + m, e - 10);
    return s ? -v : v;
}

/* IEEE binary16: bias 15, subnormals m·2^-24. */
static double f16_formula(unsigned h) {
    int s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31) v = m ? NAN : INFINITY;
    else v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

/* bfloat16: float32's upper half; bias 127, 7 mantissa bits, subnormals m·2^-133. */
static double bf16_formula(unsigned h) {
    int s = (h >> 15) & 1, e = (h >> 7) & 255, m = h & 127;
    double v;
    if (e == 255) v = m ? NAN : INFINITY;
    else v = e == 0 ? ldexp(m, -133) : ldexp(128 + m, e - 134);
    return s ? -v : v;
}

static void fp8_all_256_codes(void **state) {
    (void)state;
    int nans = 0;
    for (unsigned code = 0; code < 256; code++) {
        float got = m4_f8e4m3_to_f32((uint8_t)code);
        float want = (float)fp8_formula(code);
        if (!same_float(got, want))
            fail_msg("FP8 code 0x%02X: got %a, want %a", code, (double)got, (double)want);
        nans += isnan(got) != 0;
    }
    assert_int_equal(nans, 2); /* only 0x7F and 0xFF; e4m3fn has no infinities */
    assert_true(isnan(m4_f8e4m3_to_f32(0x7F)) && isnan(m4_f8e4m3_to_f32(0xFF)));
    /* Anchors from the OCP spec. */
    assert_true(m4_f8e4m3_to_f32(0x7E) == 448.0f);
    assert_true(m4_f8e4m3_to_f32(0xFE) == -448.0f);
    assert_true(m4_f8e4m3_to_f32(0x38) == 1.0f);
    assert_true(m4_f8e4m3_to_f32(0x08) == 0x1p-6f);  /* smallest normal */
    assert_true(m4_f8e4m3_to_f32(0x07) == 0x1.cp-7f); /* largest subnormal 7/8 · 2^-6 */
    assert_true(m4_f8e4m3_to_f32(0x01) == 0x1p-9f);  /* smallest subnormal */
    assert_true(m4_f8e4m3_to_f32(0x78) == 256.0f);
    assert_true(m4_f8e4m3_to_f32(0x00) == 0.0f && !signbit(m4_f8e4m3_to_f32(0x00)));
    assert_true(m4_f8e4m3_to_f32(0x80) == 0.0f && signbit(m4_f8e4m3_to_f32(0x80)));
}

static void fp8_round_trip_through_test_encoder(void **state) {
    (void)state;
    for (unsigned code = 0; code < 256; code++) {
        if ((code & 0x7F) == 0x7F) continue;
        assert_int_equal(m4t_f32_to_f8e4m3(m4_f8e4m3_to_f32((uint8_t)code)), code);
    }
}

static void f16_all_codes(void **state) {
    (void)state;
    for (unsigned h = 0; h < 65536; h++) {
        float got = m4_f16_to_f32((uint16_t)h);
        float want = (float)f16_formula(h);
        if (!same_float(got, want))
            fail_msg("F16 code 0x%04X: got %a, want %a", h, (double)got, (double)want);
    }
}

static void f16_special_values(void **state) {
    (void)state;
    assert_true(m4_f16_to_f32(0x3C00) == 1.0f);
    assert_true(m4_f16_to_f32(0xC000) == -2.0f);
    assert_true(m4_f16_to_f32(0x7BFF) == 65504.0f);       /* largest finite */
    assert_true(m4_f16_to_f32(0x0400) == 0x1p-14f);       /* smallest normal */
    assert_true(m4_f16_to_f32(0x0001) == 0x1p-24f);       /* smallest subnormal */
    assert_true(m4_f16_to_f32(0x03FF) == 1023 * 0x1p-24f); /* largest subnormal */
    assert_true(m4_f16_to_f32(0x8001) == -0x1p-24f);
    assert_true(m4_f16_to_f32(0x0000) == 0.0f && !signbit(m4_f16_to_f32(0x0000)));
    assert_true(m4_f16_to_f32(0x8000) == 0.0f && signbit(m4_f16_to_f32(0x8000)));
    assert_true(isinf(m4_f16_to_f32(0x7C00)) && m4_f16_to_f32(0x7C00) > 0);
    assert_true(isinf(m4_f16_to_f32(0xFC00)) && m4_f16_to_f32(0xFC00) < 0);
    assert_true(isnan(m4_f16_to_f32(0x7E00)));
    assert_true(isnan(m4_f16_to_f32(0x7C01)));
    assert_true(isnan(m4_f16_to_f32(0xFFFF)));
}

static void bf16_all_codes_and_round_trip(void **state) {
    (void)state;
    for (unsigned h = 0; h < 65536; h++) {
        float got = m4_bf16_to_f32((uint16_t)h);
        float want = (float)bf16_formula(h);
        if (!same_float(got, want))
            fail_msg("BF16 code 0x%04X: got %a, want %a", h, (double)got, (double)want);
        if (!isnan(got)) assert_int_equal(m4t_f32_to_bf16(got), h);
    }
    assert_true(m4_bf16_to_f32(0x3F80) == 1.0f);
    assert_true(m4_bf16_to_f32(0xC040) == -3.0f);
    assert_true(isinf(m4_bf16_to_f32(0x7F80)));
    /* float → bf16 → float keeps 8 significant bits (relative error ≤ 2^-9). */
    const float samples[] = {3.14159265f, -1e-3f, 123456.789f, 1e-38f, 0.1f, -65504.0f};
    for (size_t i = 0; i < sizeof samples / sizeof *samples; i++) {
        float back = m4_bf16_to_f32(m4t_f32_to_bf16(samples[i]));
        assert_true(fabsf(back - samples[i]) <= fabsf(samples[i]) * 0x1p-9f);
    }
}

static void dtype_names_sizes_and_parse(void **state) {
    (void)state;
    static const struct {
        const char *name;
        m4_dtype t;
        size_t size;
        int is_float;
    } table[] = {
        {"F32", M4_DTYPE_F32, 4, 1},      {"BF16", M4_DTYPE_BF16, 2, 1},
        {"F16", M4_DTYPE_F16, 2, 1},      {"F8_E4M3", M4_DTYPE_F8_E4M3, 1, 1},
        {"I64", M4_DTYPE_I64, 8, 0},      {"I32", M4_DTYPE_I32, 4, 0},
    };
    assert_int_equal(sizeof table / sizeof *table, M4_DTYPE_COUNT);
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
        m4_dtype t = M4_DTYPE_COUNT;
        assert_int_equal(m4_dtype_parse(table[i].name, &t), 0);
        assert_int_equal(t, table[i].t);
        assert_string_equal(m4_dtype_name(t), table[i].name);
        assert_int_equal(m4_dtype_size(t), table[i].size);
        assert_int_equal(m4_dtype_is_float(t) != 0, table[i].is_float);
    }
    static const char *unknown[] = {"F8_E5M2", "f32", "BF16 ", "", "BOOL", "F64", "U8", "F8_E4M3FN"};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        m4_dtype t = M4_DTYPE_I64;
        assert_int_equal(m4_dtype_parse(unknown[i], &t), -1);
        assert_int_equal(t, M4_DTYPE_I64); /* untouched on failure */
    }
    assert_int_equal(m4_dtype_size(M4_DTYPE_COUNT), 0);
    assert_string_equal(m4_dtype_name(M4_DTYPE_COUNT), "?");
    assert_false(m4_dtype_is_float(M4_DTYPE_COUNT));
}

static void convert_with_scale(void **state) {
    (void)state;
    enum { N = 256 };
    float dst[N], want;
    const float scale = 0.0137f; /* not a power of two: the product must round in float32 */

    uint8_t f8[N];
    for (int i = 0; i < N; i++) f8[i] = (uint8_t)i;
    m4_convert_to_f32(M4_DTYPE_F8_E4M3, f8, N, scale, dst);
    for (int i = 0; i < N; i++) {
        float v = (float)fp8_formula((unsigned)i);
        want = v * scale; /* float × float, rounded once to float32 */
        if (!same_float(dst[i], want))
            fail_msg("F8 0x%02X × %a: got %a, want %a", i, (double)scale, (double)dst[i], (double)want);
    }

    uint16_t h[N];
    for (int i = 0; i < N; i++) h[i] = (uint16_t)(i * 257);
    m4_convert_to_f32(M4_DTYPE_BF16, h, N, scale, dst);
    for (int i = 0; i < N; i++) {
        float v = (float)bf16_formula(h[i]);
        want = v * scale;
        assert_true(same_float(dst[i], want));
    }
    m4_convert_to_f32(M4_DTYPE_F16, h, N, scale, dst);
    for (int i = 0; i < N; i++) {
        float v = (float)f16_formula(h[i]);
        want = v * scale;
        assert_true(same_float(dst[i], want));
    }

    float f[4] = {1.5f, -2.25f, 1e30f, 0.0f};
    m4_convert_to_f32(M4_DTYPE_F32, f, 4, 2.0f, dst);
    assert_true(dst[0] == 3.0f && dst[1] == -4.5f && dst[2] == 2e30f && dst[3] == 0.0f);
    m4_convert_to_f32(M4_DTYPE_F32, f, 4, 1.0f, dst);
    assert_memory_equal(dst, f, sizeof f);

    int64_t i64[3] = {-7, 0, (int64_t)1 << 40};
    m4_convert_to_f32(M4_DTYPE_I64, i64, 3, 0.5f, dst);
    assert_true(dst[0] == -3.5f && dst[1] == 0.0f && dst[2] == 0x1p39f);
    int32_t i32[3] = {-3, 5, 1 << 30};
    m4_convert_to_f32(M4_DTYPE_I32, i32, 3, 4.0f, dst);
    assert_true(dst[0] == -12.0f && dst[1] == 20.0f && dst[2] == 0x1p32f);

    /* n = 0 touches nothing. */
    dst[0] = 42.0f;
    m4_convert_to_f32(M4_DTYPE_F8_E4M3, NULL, 0, scale, dst);
    assert_true(dst[0] == 42.0f);
}

/* m4_convert_f8e4m3_to_f32 (the folded-scale fast path and its overflow fallback) against the
 * definition, bit for bit: every one of the 256 codes × scales from the smallest subnormal to the
 * largest float, negative, zero, infinite and NaN, each code's product checked two ways — as the
 * float32 product m4_f8e4m3_to_f32(code) · scale, and as the exact double product rounded once
 * to float32 (both factors have ≤ 24 significant bits, so the double product is exact). Codes are
 * laid at every offset and length around the vector width so the vectorised body, its
 * remainder loops and unaligned pointers all meet every code. */
static void fp8_fast_conversion_all_codes_all_scales(void **state) {
    (void)state;
    const float scales[] = {
        1.0f, 0.015625f, 0.0137f, 1.0f / 3, 3.0f, 255.9999847f, 0x1.fffffep7f, /* just below 2^8 */
        256.0f, 0x1.000002p8f, 1e10f, 1e30f, 3.4028235e38f,                      /* fold overflows */
        1e-10f, 1e-30f, 1.1754944e-38f /* FLT_MIN */, 1e-40f /* subnormal */, 1e-45f /* 2^-149 */,
        0x1p-120f, 0x1p-126f, 7.5e-5f, 0.0f, -0.0f, -1.0f, -0.0137f, -1e30f, -1e-40f,
        INFINITY, -INFINITY, NAN,
    };
    enum { MAXN = 256 + 64 };
    uint8_t codes[MAXN + 8];
    float got[MAXN + 8];
    for (size_t si = 0; si < sizeof scales / sizeof *scales; si++) {
        const float scale = scales[si];
        for (int offset = 0; offset < 4; offset++) {
            /* lengths: everything at once, then short runs that end in every remainder */
            const int lengths[] = {256, 256 + 17, 1, 7, 15, 16, 17, 31, 33, 63};
            for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++) {
                const int n = lengths[li];
                for (int k = 0; k < n; k++) codes[offset + k] = (uint8_t)((k * 7 + (int)li * 31 + offset) & 0xFF);
                if (n >= 256)
                    for (int k = 0; k < 256; k++) codes[offset + k] = (uint8_t)k; /* every code */
                memset(got, 0xA5, sizeof got);
                m4_convert_f8e4m3_to_f32(codes + offset, (size_t)n, scale, got + offset);
                for (int k = 0; k < n; k++) {
                    unsigned code = codes[offset + k];
                    float want = m4_f8e4m3_to_f32((uint8_t)code) * scale;
                    float exact = (float)(fp8_formula(code) * (double)scale);
                    float g = got[offset + k];
                    if (!same_float(g, want) || !same_float(g, exact))
                        fail_msg("FP8 0x%02X × %a (n=%d, offset %d): got %a, want %a", code, (double)scale,
                                 n, offset, (double)g, (double)want);
                    if ((code & 0x7F) == 0x7F) assert_true(isnan(g));
                }
                /* nothing written outside [offset, offset + n) */
                uint32_t poison;
                memset(&poison, 0xA5, sizeof poison);
                for (int k = 0; k < offset; k++) assert_int_equal(f32_bits(got[k]), poison);
                assert_int_equal(f32_bits(got[offset + n]), poison);
            }
        }
    }
    /* m4_convert_to_f32 routes FP8 through it */
    uint8_t all[256];
    float a[256], b[256];
    for (int k = 0; k < 256; k++) all[k] = (uint8_t)k;
    m4_convert_to_f32(M4_DTYPE_F8_E4M3, all, 256, 0.0137f, a);
    m4_convert_f8e4m3_to_f32(all, 256, 0.0137f, b);
    for (int k = 0; k < 256; k++) assert_true(same_float(a[k], b[k]));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fp8_all_256_codes),
        cmocka_unit_test(fp8_round_trip_through_test_encoder),
        cmocka_unit_test(f16_all_codes),
        cmocka_unit_test(f16_special_values),
        cmocka_unit_test(bf16_all_codes_and_round_trip),
        cmocka_unit_test(dtype_names_sizes_and_parse),
        cmocka_unit_test(convert_with_scale),
        cmocka_unit_test(fp8_fast_conversion_all_codes_all_scales),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
