/* measure_open.c — how long opening and binding a big checkpoint takes, and how much memory it
 * keeps resident. Not a test and not built by CMake (tests/measure_open.sh builds and runs it).
 *
 *   measure_open write DIR CONFIG.json SHARDS  writes config.json and a checkpoint holding every
 *       tensor CONFIG implies (FP8 where it says so, F32 scales, BF16 the rest): real headers,
 *       sparse data (ftruncate), so a 119B-parameter layout costs no disk.
 *   measure_open open DIR  times m4_model_open + m4_model_close and reports the resident set. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "weights.h"

static long status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') v = strtol(line + n + 1, NULL, 10);
    if (f) fclose(f);
    return v;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int elem_rank(const char *dtype) { return !strcmp(dtype, "F32") ? 0 : !strcmp(dtype, "BF16") ? 1 : 2; }

static int write_checkpoint(const char *dir, const char *config_path, int shards) {
    m4_config cfg;
    m4_error err = {{0}};
    if (m4_config_load(config_path, &cfg, &err) != 0) return fprintf(stderr, "%s\n", err.msg), 1;
    m4_tensor_spec *specs;
    size_t n;
    if (m4_weight_specs(&cfg, NULL, &specs, &n, &err) != 0) return fprintf(stderr, "%s\n", err.msg), 1;

    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *in = fopen(config_path, "rb"), *out = fopen(path, "wb");
    if (!in || !out) return perror("config"), 1;
    int c;
    while ((c = fgetc(in)) != EOF) fputc(c, out);
    fclose(in);
    fclose(out);

    /* Shards by cumulative bytes, each shard's tensors ordered by element size (alignment). */
    uint64_t total = 0, *bytes = calloc(n, sizeof *bytes);
    const char **dtypes = calloc(n, sizeof *dtypes);
    int *shard_of = calloc(n, sizeof *shard_of);
    for (size_t i = 0; i < n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < specs[i].ndim; d++) numel *= (uint64_t)specs[i].shape[d];
        dtypes[i] = specs[i].kind == M4_SPEC_SCALE || specs[i].kind == M4_SPEC_ACT_SCALE ? "F32"
                    : specs[i].fp8 && cfg.quant.fp8                                       ? "F8_E4M3"
                                                                                          : "BF16";
        bytes[i] = numel * (!strcmp(dtypes[i], "F32") ? 4 : !strcmp(dtypes[i], "BF16") ? 2 : 1);
        total += bytes[i];
    }
    uint64_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        shard_of[i] = (int)((acc * (uint64_t)shards) / (total ? total : 1));
        if (shard_of[i] >= shards) shard_of[i] = shards - 1;
        acc += bytes[i];
    }
    size_t index_cap = 4096 + n * 256, index_len = 0;
    char *index = malloc(index_cap);
    index_len += (size_t)snprintf(index, index_cap, "{\"metadata\": {\"total_size\": %llu}, \"weight_map\": {",
                                  (unsigned long long)total);
    int first_entry = 1;
    for (int k = 0; k < shards; k++) {
        char file[64];
        if (shards == 1) snprintf(file, sizeof file, "model.safetensors");
        else snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", k + 1, shards);
        size_t cap = 4096 + n * 256, len = 0;
        char *header = malloc(cap);
        len += (size_t)snprintf(header, cap, "{\"__metadata__\":{\"format\":\"pt\"}");
        uint64_t offset = 0;
        for (int rank = 0; rank < 3; rank++)
            for (size_t i = 0; i < n; i++) {
                if (shard_of[i] != k || elem_rank(dtypes[i]) != rank) continue;
                len += (size_t)snprintf(header + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                                        specs[i].name, dtypes[i]);
                for (int d = 0; d < specs[i].ndim; d++)
                    len += (size_t)snprintf(header + len, cap - len, "%s%lld", d ? "," : "",
                                            (long long)specs[i].shape[d]);
                len += (size_t)snprintf(header + len, cap - len, "],\"data_offsets\":[%llu,%llu]}",
                                        (unsigned long long)offset,
                                        (unsigned long long)(offset + bytes[i]));
                offset += bytes[i];
                index_len += (size_t)snprintf(index + index_len, index_cap - index_len, "%s\"%s\": \"%s\"",
                                              first_entry ? "" : ", ", specs[i].name, file);
                first_entry = 0;
            }
        len += (size_t)snprintf(header + len, cap - len, "}");
        while (len % 8) header[len++] = ' ';
        snprintf(path, sizeof path, "%s/%s", dir, file);
        FILE *f = fopen(path, "wb");
        if (!f) return perror(path), 1;
        unsigned char hl[8];
        for (int b = 0; b < 8; b++) hl[b] = (unsigned char)((uint64_t)len >> (8 * b));
        fwrite(hl, 1, 8, f);
        fwrite(header, 1, len, f);
        fclose(f);
        if (truncate(path, (off_t)(8 + len + offset)) != 0) return perror("truncate"), 1;
        free(header);
    }
    snprintf(index + index_len, index_cap - index_len, "}}\n");
    if (shards > 1) {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        FILE *f = fopen(path, "wb");
        fputs(index, f);
        fclose(f);
    }
    printf("wrote %zu tensors, %.3f GiB of tensor data (sparse) in %d file(s) under %s\n", n,
           (double)total / (1u << 30), shards, dir);
    free(index), free(bytes), free(dtypes), free(shard_of), free(specs);
    return 0;
}

static int open_checkpoint(const char *dir) {
    long rss0 = status_kb("VmRSS"), vm0 = status_kb("VmSize");
    double t0 = now();
    m4_model m;
    m4_error err = {{0}};
    if (m4_model_open(dir, &m, &err) != 0) return fprintf(stderr, "%s\n", err.msg), 1;
    double t1 = now();
    long rss1 = status_kb("VmRSS"), vm1 = status_kb("VmSize");
    size_t tensors = m4_checkpoint_tensor_count(m.checkpoint);
    uint64_t data = m4_checkpoint_data_bytes(m.checkpoint);
    m4_model_close(&m);
    double t2 = now();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("open+bind: %zu tensors, %.2f GiB mapped: %.1f ms (close %.1f ms)\n", tensors,
           (double)data / (1u << 30), 1e3 * (t1 - t0), 1e3 * (t2 - t1));
    printf("VmRSS before %ld KiB, after open %ld KiB (+%ld KiB); ru_maxrss %ld KiB; "
           "VmSize +%ld MiB (the mapping)\n", rss0, rss1, rss1 - rss0, ru.ru_maxrss, (vm1 - vm0) / 1024);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && !strcmp(argv[1], "write")) return write_checkpoint(argv[2], argv[3], atoi(argv[4]));
    if (argc == 3 && !strcmp(argv[1], "open")) return open_checkpoint(argv[2]);
    fprintf(stderr, "usage: %s write DIR CONFIG.json SHARDS | open DIR\n", argv[0]);
    return 2;
}
