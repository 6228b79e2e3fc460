/* paths.c — the table of CUDA fast paths and their twins (paths.h), and the switches' parser.
 *
 * A row's proof is filled in only by the commit that adds the bench/results/ file proving it
 * (scripts/gpu-check writes each path's verdict there); tests/test_cuda_paths.c reads the
 * committed files and fails when a row claims a proof its file does not hold, or a file proves a
 * path the table still keeps off. The twins were proven on an H200 on 2026-11-26
 * (bench/results/2026-11-26-NVIDIA-H200-gpu.json, commit 8b02397); the cache length moved to the
 * device after that run (de942ee), so the next run proves the twins again by the same token. */
#include "paths.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const m4_cuda_path_info m4_cuda_path_table[M4_PATH_COUNT] = {
    [M4_PATH_FLASH] = {"flash", "bf16 prefill attention on the tensor cores (kernels/flash_attention.cu)",
                       "the float32 attention kernel, one block per query", NULL, NULL},
    [M4_PATH_CUDNN] = {"cudnn", "cuDNN's fused attention (SDPA) for the bf16 prefill: text MLA prompts and Pixtral",
                       "flash when it is on, else the float32 attention kernel", NULL, NULL},
    [M4_PATH_GROUPED] = {"grouped", "one grouped GEMM launch per expert projection, boundaries read on the device",
                         "a host sync, then one cuBLAS GEMM per expert", NULL, NULL},
    [M4_PATH_PAIRS] = {"pairs", "q_a_proj|kv_a_proj_with_mqa and gate_proj|up_proj uploaded side by side, one GEMV/GEMM each pair",
                       "one GEMV/GEMM per weight", NULL, NULL},
    [M4_PATH_LATENT_TC] = {"latent_tc", "latent attention on the tensor cores (kernels/latent_attention.cu: every head of a position in one block, cp.async tiles)",
                           "the CUDA-core flash-decoding split kernel", NULL, NULL},
    [M4_PATH_GRAPHS] = {"graphs", "the generation session's one-token step captured once as a CUDA graph and replayed",
                        "the step's kernels launched one by one", NULL, NULL},
    [M4_PATH_PROMPT_EXPAND] = {"prompt_expand", "a prompt into an empty cache in the HF form (kv_b expands the latents, prefill attention)",
                               "the absorbed latent attention over the prompt's own cache", NULL, NULL},
    [M4_PATH_FP8_CODES] = {"fp8_codes", "an FP8 checkpoint's GEMM weights kept as e4m3 codes + scales on cuda-bf16 (half the bytes)",
                           "dequantised to bf16 at upload", NULL, NULL},
};

m4_cuda_paths m4_cuda_path_switches;

m4_cuda_paths m4_cuda_paths_default(void) {
    m4_cuda_paths p;
    for (int i = 0; i < M4_PATH_COUNT; i++) p.on[i] = m4_cuda_path_proven((m4_cuda_path)i);
    return p;
}

/* Sets every path named in `list` (or all, for "all") to `on`. */
static int apply(const char *variable, const char *list, bool on, m4_cuda_paths *out, m4_error *err) {
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        const size_t len = end ? (size_t)(end - p) : strlen(p);
        bool known = len == 0;
        if (len == 3 && strncmp(p, "all", 3) == 0) {
            for (int i = 0; i < M4_PATH_COUNT; i++) out->on[i] = on;
            known = true;
        }
        for (int i = 0; i < M4_PATH_COUNT && !known; i++)
            if (strlen(m4_cuda_path_table[i].name) == len && strncmp(m4_cuda_path_table[i].name, p, len) == 0)
                out->on[i] = on, known = true;
        if (!known) {
            char names[256] = "";
            for (int i = 0; i < M4_PATH_COUNT; i++) {
                strncat(names, m4_cuda_path_table[i].name, sizeof names - strlen(names) - 1);
                strncat(names, ", ", sizeof names - strlen(names) - 1);
            }
            return m4_fail(err, "%s: unknown path '%.*s' (known: %sall)", variable, (int)len, p, names);
        }
        p = end ? end + 1 : p + len;
    }
    return 0;
}

int m4_cuda_paths_parse(const char *enable, const char *disable, m4_cuda_paths *out, m4_error *err) {
    *out = m4_cuda_paths_default();
    return apply("M4_CUDA_ENABLE", enable, true, out, err) || apply("M4_CUDA_DISABLE", disable, false, out, err) ? -1 : 0;
}

int m4_cuda_paths_from_env(m4_cuda_paths *out, m4_error *err) {
    return m4_cuda_paths_parse(getenv("M4_CUDA_ENABLE"), getenv("M4_CUDA_DISABLE"), out, err);
}

/* snprintf that keeps counting past a full buffer (the length the whole text needs). */
static size_t append(char *buf, size_t n, size_t at, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int len = vsnprintf(at < n ? buf + at : NULL, at < n ? n - at : 0, fmt, ap);
    va_end(ap);
    return at + (len > 0 ? (size_t)len : 0);
}

size_t m4_cuda_paths_describe(const m4_cuda_paths *paths, char *buf, size_t n) {
    size_t at = 0;
    if (n) buf[0] = '\0';
    for (int i = 0; i < M4_PATH_COUNT; i++) {
        const m4_cuda_path_info *r = &m4_cuda_path_table[i];
        at = append(buf, n, at, "  %-14s %-3s  ", r->name, paths->on[i] ? "on" : "off");
        at = r->proof ? append(buf, n, at, "proven (%s @ %s)", r->proof, r->proof_commit)
                      : append(buf, n, at, "unproven");
        at = append(buf, n, at, "\n      fast: %s\n      twin: %s\n", r->fast, r->twin);
    }
    return at;
}

size_t m4_cuda_paths_list_on(const m4_cuda_paths *paths, char *buf, size_t n) {
    size_t at = 0;
    if (n) buf[0] = '\0';
    for (int i = 0; i < M4_PATH_COUNT; i++)
        if (paths->on[i]) at = append(buf, n, at, "%s%s", at ? "," : "", m4_cuda_path_table[i].name);
    return at ? at : append(buf, n, 0, "none");
}
