/* st_write.h — builds small, valid safetensors files in memory (test code: the seed generator and
 * the index mode of fuzz_safetensors write the shards they need with it). The header is padded
 * with spaces to a multiple of 8 bytes, as the reference writer does, and tensors are laid out in
 * the order given, back to back. */
#ifndef M4_FUZZ_ST_WRITE_H
#define M4_FUZZ_ST_WRITE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    const char *dtype;     /* "F32", "BF16", "F16", "F8_E4M3", "I64", "I32" */
    int ndim;
    int64_t shape[8];
    const void *data;      /* nbytes bytes, or NULL for a deterministic pattern */
    size_t nbytes;
} st_entry;

/* Returns a malloc'd file image and its size in *size; NULL when out of memory. */
static uint8_t *st_build(const st_entry *e, size_t n, const char *metadata_json, size_t *size) {
    size_t cap = 256 + (metadata_json ? strlen(metadata_json) : 0), len = 0;
    for (size_t i = 0; i < n; i++) cap += strlen(e[i].name) + 160;
    char *h = malloc(cap);
    if (!h) return NULL;
    len += (size_t)snprintf(h + len, cap - len, "{");
    if (metadata_json) len += (size_t)snprintf(h + len, cap - len, "\"__metadata__\":%s%s", metadata_json, n ? "," : "");
    size_t off = 0, total = 0;
    for (size_t i = 0; i < n; i++) {
        len += (size_t)snprintf(h + len, cap - len, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "",
                                e[i].name, e[i].dtype);
        for (int d = 0; d < e[i].ndim; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "", (long long)e[i].shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off, off + e[i].nbytes);
        off += e[i].nbytes;
    }
    total = off;
    len += (size_t)snprintf(h + len, cap - len, "}");
    size_t padded = (len + 7) / 8 * 8;
    *size = 8 + padded + total;
    uint8_t *out = malloc(*size ? *size : 1);
    if (!out) {
        free(h);
        return NULL;
    }
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(out + 8, h, len);
    memset(out + 8 + len, ' ', padded - len);
    free(h);
    uint8_t *p = out + 8 + padded;
    for (size_t i = 0; i < n; i++) {
        if (e[i].data) {
            memcpy(p, e[i].data, e[i].nbytes);
        } else { /* small values that are finite in every dtype: bytes 0x00..0x37 */
            for (size_t b = 0; b < e[i].nbytes; b++) p[b] = (uint8_t)((b * 7 + i) % 0x38);
        }
        p += e[i].nbytes;
    }
    return out;
}

#endif
