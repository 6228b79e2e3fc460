/* The CUDA backends at decode sizes (1–8 tokens), which the golden cases (about 20 tokens) never
 * reach: there the linear layers and the routed experts take the GEMV kernels instead of cuBLAS.
 * Each component is compared with the reference backend on the text_tiny checkpoint, on the same
 * random inputs: cuda-fp32 within the float32 budget (relative L2 1e-5), cuda-bf16 within bf16's
 * (2e-2). The reference is the oracle here because golden/ already proves it against HF on these
 * components. Skips (exit 77) without a GPU. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuda_backend.h"

typedef struct {
    m4_model model;
    const m4_backend *cuda;
    void *cuda_state;
    double budget;
} fixture;

static double rel_l2(const float *got, const float *want, int64_t n) {
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) return INFINITY;
        diff += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        norm += (double)want[i] * want[i];
    }
    return sqrt(diff / (norm > 0 ? norm : 1));
}

static float *random_rows(int64_t n, int64_t D, unsigned seed) {
    float *x = malloc(sizeof(float) * (size_t)(n * D));
    for (int64_t i = 0; i < n * D; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = ((float)(seed >> 8) / (float)(1 << 24) - 0.5f) * 2.0f;
    }
    return x;
}

static int open_fixture(void **state, const char *backend) {
    fixture *f = calloc(1, sizeof *f);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/golden/cases/text_tiny/model", getenv("M4_SOURCE_DIR") ? getenv("M4_SOURCE_DIR") : ".");
    m4_error err = {{0}};
    if (m4_model_open(dir, &f->model, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    f->cuda = m4_backend_find(backend);
    if (!f->cuda || f->cuda->open(&f->model, &f->cuda_state, &err) != 0) {
        fprintf(stderr, "%s: %s\n", backend, err.msg);
        return -1;
    }
    f->budget = strcmp(backend, "cuda-bf16") == 0 ? 2e-2 : 1e-5;
    *state = f;
    return 0;
}
static int open_fp32(void **state) { return open_fixture(state, "cuda-fp32"); }
static int open_bf16(void **state) { return open_fixture(state, "cuda-bf16"); }
static int close_fixture(void **state) {
    fixture *f = *state;
    f->cuda->close(f->cuda_state);
    m4_model_close(&f->model);
    free(f);
    return 0;
}

/* lm_head, the MoE block (router + GEMV experts + shared expert) and a whole decoder layer (MLA
 * with S = n) at n = 1, 3, 8 tokens. */
static void decode_sizes_match_reference(void **state) {
    fixture *f = *state;
    const m4_backend *ref = m4_backend_find("ref");
    void *ref_state;
    m4_error err = {{0}};
    assert_int_equal(ref->open(&f->model, &ref_state, &err), 0);
    const m4_text_config *cfg = &f->model.config.text;
    const int64_t D = cfg->hidden_size, V = f->model.weights.lm_head.rows;
    const float scale = m4_ref_mla_softmax_scale(cfg, M4_SOFTMAX_SCALE_MSCALE2);
    const int64_t sizes[] = {1, 3, 8};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        const int64_t n = sizes[s];
        float *x = random_rows(n, D, 7u + (unsigned)n);
        float *want = malloc(sizeof(float) * (size_t)(n * V)), *got = malloc(sizeof(float) * (size_t)(n * V));

        assert_int_equal(ref->lm_head(ref_state, x, n, want, &err), 0);
        assert_int_equal(f->cuda->lm_head(f->cuda_state, x, n, got, &err), 0);
        fprintf(stderr, "%s n=%lld lm_head rel_l2 %.2e\n", f->cuda->name, (long long)n, rel_l2(got, want, n * V));
        assert_true(rel_l2(got, want, n * V) <= f->budget);

        for (int layer = 0; layer < (int)cfg->num_hidden_layers; layer++) {
            assert_int_equal(ref->mlp(ref_state, layer, x, n, want, &err), 0);
            assert_int_equal(f->cuda->mlp(f->cuda_state, layer, x, n, got, &err), 0);
            fprintf(stderr, "%s n=%lld layer %d mlp rel_l2 %.2e\n", f->cuda->name, (long long)n, layer, rel_l2(got, want, n * D));
            assert_true(rel_l2(got, want, n * D) <= f->budget);

            assert_int_equal(ref->decoder_layer(ref_state, layer, x, 1, n, NULL, NULL, scale, want, &err), 0);
            assert_int_equal(f->cuda->decoder_layer(f->cuda_state, layer, x, 1, n, NULL, NULL, scale, got, &err), 0);
            fprintf(stderr, "%s n=%lld layer %d decoder_layer rel_l2 %.2e\n", f->cuda->name, (long long)n, layer,
                    rel_l2(got, want, n * D));
            assert_true(rel_l2(got, want, n * D) <= f->budget);
        }
        free(x), free(want), free(got);
    }
    ref->close(ref_state);
}

/* Bad input is an error, not a crash: an out-of-range expert id and token id. */
static void bad_ids_are_errors(void **state) {
    fixture *f = *state;
    const m4_text_config *cfg = &f->model.config.text;
    const int64_t D = cfg->hidden_size, K = cfg->num_experts_per_tok;
    float *x = random_rows(1, D, 3u), *out = malloc(sizeof(float) * (size_t)D);
    int64_t ids[64] = {0};
    float weights[64] = {0};
    ids[0] = cfg->n_routed_experts;
    m4_error err = {{0}};
    assert_int_not_equal(f->cuda->experts(f->cuda_state, 0, x, 1, ids, weights, out, &err), 0);
    assert_non_null(strstr(err.msg, "expert id"));
    int64_t token = f->model.weights.embed_tokens.rows;
    assert_int_not_equal(f->cuda->embed_tokens(f->cuda_state, &token, 1, out, &err), 0);
    assert_non_null(strstr(err.msg, "vocabulary"));
    (void)K;
    free(x), free(out);
}

int main(void) {
    int devices = 0;
    m4_error err;
    if (m4_cuda_device_count(&devices, &err) != 0 || devices == 0) {
        fprintf(stderr, "test_gpu_backend: no CUDA device, skipped\n");
        return 77;
    }
    const struct CMUnitTest fp32[] = {cmocka_unit_test(decode_sizes_match_reference), cmocka_unit_test(bad_ids_are_errors)};
    const struct CMUnitTest bf16[] = {cmocka_unit_test(decode_sizes_match_reference)};
    return cmocka_run_group_tests_name("cuda-fp32", fp32, open_fp32, close_fixture) |
           cmocka_run_group_tests_name("cuda-bf16", bf16, open_bf16, close_fixture);
}
