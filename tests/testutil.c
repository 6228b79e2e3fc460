/* nftw needs X/Open; the feature macro must come before any system header (testutil.h has some). */
#define _XOPEN_SOURCE 700
#include "testutil.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *m4t_tempdir(void) {
    const char *base = getenv("TMPDIR");
    char *path = m4t_join(base && *base ? base : "/tmp", "mistral4-test-XXXXXX");
    assert_non_null(mkdtemp(path));
    return path;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void m4t_rmtree(const char *dir) { nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

int m4t_dir_setup(void **state) {
    m4t_dir_fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    f->dir = m4t_tempdir();
    *state = f;
    return 0;
}

int m4t_dir_teardown(void **state) {
    m4t_dir_fixture *f = *state;
    m4t_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

char *m4t_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

char *m4t_source_path(const char *rel) {
    const char *root = getenv("M4_SOURCE_DIR");
    return m4t_join(root && *root ? root : M4_SOURCE_DIR, rel);
}

void m4t_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot create %s", path);
    if (n && fwrite(data, 1, n, f) != n) fail_msg("cannot write %s", path);
    assert_int_equal(fclose(f), 0);
}

void m4t_write_text(const char *path, const char *text) { m4t_write_file(path, text, strlen(text)); }

static void put_u64_le(unsigned char out[8], uint64_t v) {
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)(v >> (8 * i));
}

void m4t_write_raw_safetensors(const char *path, uint64_t header_len, const char *header,
                               const void *data, size_t data_len) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot create %s", path);
    unsigned char len[8];
    put_u64_le(len, header_len);
    assert_int_equal(fwrite(len, 1, 8, f), 8);
    size_t text_len = strlen(header);
    assert_int_equal(fwrite(header, 1, text_len, f), text_len);
    if (data_len) assert_int_equal(fwrite(data, 1, data_len, f), data_len);
    assert_int_equal(fclose(f), 0);
}

void m4t_write_safetensors(const char *path, const m4t_tensor *tensors, size_t n) {
    size_t cap = 256 + n * 256, len = 0, offset = 0, data_len = 0;
    char *header = malloc(cap);
    assert_non_null(header);
    len += (size_t)snprintf(header + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < n; i++) {
        len += (size_t)snprintf(header + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                                tensors[i].name, tensors[i].dtype);
        for (int d = 0; d < tensors[i].ndim; d++)
            len += (size_t)snprintf(header + len, cap - len, "%s%lld", d ? "," : "",
                                    (long long)tensors[i].shape[d]);
        len += (size_t)snprintf(header + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", offset,
                                offset + tensors[i].nbytes);
        offset += tensors[i].nbytes;
        assert_true(len < cap - 64);
    }
    len += (size_t)snprintf(header + len, cap - len, "}");
    while (len % 8) header[len++] = ' '; /* the format pads the header to 8 bytes */
    header[len] = 0;
    data_len = offset;
    unsigned char *data = malloc(data_len ? data_len : 1);
    assert_non_null(data);
    offset = 0;
    for (size_t i = 0; i < n; i++) {
        if (tensors[i].nbytes) memcpy(data + offset, tensors[i].data, tensors[i].nbytes);
        offset += tensors[i].nbytes;
    }
    m4t_write_raw_safetensors(path, len, header, data, data_len);
    free(data);
    free(header);
}

uint16_t m4t_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if (isnan(f)) return 0x7FC0;
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

uint8_t m4t_f32_to_f8e4m3(float f) {
    /* Exhaustive nearest search over the 126 finite non-negative codes: slow but obviously right. */
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (isnan(f)) return 0x7F;
    uint8_t best = 0;
    float best_err = INFINITY;
    for (int code = 0; code < 0x7F; code++) {
        int e = code >> 3, m = code & 7;
        float v = e ? ldexpf(1.0f + m / 8.0f, e - 7) : ldexpf(m / 8.0f, -6);
        float err = fabsf(v - a);
        if (err < best_err || (err == best_err && (code & 1) == 0)) best = (uint8_t)code, best_err = err;
    }
    return sign | best;
}

void m4t_assert_contains_impl(const char *haystack, const char *needle, const char *file, int line) {
    if (!haystack || !strstr(haystack, needle))
        fail_msg("%s:%d: expected \"%s\" in \"%s\"", file, line, needle, haystack ? haystack : "(null)");
}
