#include "dtype.h"

#include <string.h>

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

void m4_convert_to_f32(m4_dtype t, const void *src, size_t n, float scale, float *dst) {
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
    case M4_DTYPE_F8_E4M3: {
        const uint8_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = m4_f8e4m3_to_f32(s[i]) * scale;
        break;
    }
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
