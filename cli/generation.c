/* generation.c — the generation helpers `run` and `bench` share (generation.h). */
#include "generation.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "backend.h"
#include "cli.h"
#ifdef M4_HAVE_CUDA
#include "cuda_backend.h"
#endif

int cli_parse_backend(const char *cmd, const char *value, const char **out) {
    if (strcmp(value, "ref") != 0 && !(m4_backend_find(value) && strncmp(value, "cuda-", 5) == 0))
        return cli_usage_error(cmd, "--backend: unknown backend '%s' (built here: %s)", value, cli_backend_list());
    *out = value;
    return CLI_OK;
}

int cli_parse_count(const char *cmd, const char *opt, const char *value, int64_t min, int64_t max, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (errno || end == value || *end || v < min || v > max) {
        if (max == INT64_MAX)
            return cli_usage_error(cmd, "%s wants a whole number >= %lld, got '%s'", opt, (long long)min, value);
        return cli_usage_error(cmd, "%s wants a whole number in %lld..%lld, got '%s'", opt, (long long)min,
                               (long long)max, value);
    }
    *out = v;
    return CLI_OK;
}

double cli_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_on_layer(void *watch, int64_t layer, int64_t layers) {
    cli_layer_watch *w = watch;
    double t = cli_now_seconds() - w->start;
    if (t > 1.0 || w->shown) {
        fprintf(stderr, "\rmistral4 %s: %s: layer %lld/%lld, %.1f s", w->cmd, w->what, (long long)(layer + 1),
                (long long)layers, t);
        w->shown = true;
        if (layer + 1 == layers) fputc('\n', stderr);
    }
}

double cli_checkpoint_gib(const char *dir) {
    DIR *d = opendir(dir);
    double bytes = 0;
    if (!d) return 0;
    struct dirent *e;
    char path[2048];
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (n > 12 && strcmp(e->d_name + n - 12, ".safetensors") == 0 && stat(path, &st) == 0)
            bytes += (double)st.st_size;
    }
    closedir(d);
    return bytes / (1024.0 * 1024.0 * 1024.0);
}

#ifdef M4_HAVE_CUDA
static int session_forward(void *user, const int64_t *ids, const float *inputs_embeds, int64_t B, int64_t S,
                           const int64_t *position_ids, const int64_t *attention_mask, m4_softmax_scale_rule rule,
                           float *logits, m4_error *err) {
    return m4_cuda_session_forward(user, ids, inputs_embeds, B, S, position_ids, attention_mask, rule, logits, err);
}
#endif

int cli_backend_open(const char *cmd, const char *backend, const m4_model *model, int64_t capacity,
                     m4_generate_options *opt, void **gpu) {
    *gpu = NULL;
    if (strcmp(backend, "ref") == 0) return CLI_OK;
#ifdef M4_HAVE_CUDA
    m4_error err = {{0}};
    m4_cuda_session *session;
    cli_layer_watch watch = {.cmd = cmd, .what = "upload to the GPU", .start = cli_now_seconds()};
    const m4_progress upload = {.layer_done = cli_on_layer, .user = &watch};
    if (m4_cuda_session_open(model, strcmp(backend, "cuda-bf16") == 0, 1, capacity, &upload, &session, &err)) {
        if (watch.shown) fputc('\n', stderr);
        cli_error(cmd, "%s: %s", backend, err.msg);
        return CLI_FAILED;
    }
    *gpu = session;
    opt->backend = (m4_cached_forward){.forward = session_forward, .user = session};
    return CLI_OK;
#else
    (void)model, (void)capacity, (void)opt;
    cli_error(cmd, "--backend %s: this build has no CUDA", backend);
    return CLI_FAILED;
#endif
}

int cli_prompt_embeds(void *gpu, const m4_model *model, const int64_t *ids, int64_t S, const m4_pixel_batch *px,
                      float *embeds, m4_error *err) {
#ifdef M4_HAVE_CUDA
    if (gpu) return m4_cuda_session_prompt_embeds(gpu, ids, 1, S, px, embeds, err);
#endif
    return m4_ref_prompt_embeds(model, ids, 1, S, px, embeds, err);
}

int cli_backend_reset(void *gpu, m4_error *err) {
#ifdef M4_HAVE_CUDA
    if (gpu) return m4_cuda_session_reset(gpu, err);
#endif
    (void)gpu, (void)err;
    return 0;
}

void cli_backend_device(void *gpu, char *buf, size_t n) {
#ifdef M4_HAVE_CUDA
    m4_error err;
    if (gpu && m4_cuda_device_name(buf, n, &err) == 0) return;
#endif
    (void)gpu;
    snprintf(buf, n, "%s", gpu ? "GPU" : "CPU");
}

void cli_backend_close(void *gpu) {
#ifdef M4_HAVE_CUDA
    m4_cuda_session_close(gpu);
#endif
    (void)gpu;
}
