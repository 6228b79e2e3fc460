/* The CUDA generation session (optimized/session.cu): prefill then one token at a time through
 * the device MLA cache, whose attention runs in the absorbed latent form, teacher-forced with
 * HF generate()'s tokens (/generate/ids) on every golden case. After every step the last
 * position's logits must match the reference's uncached forward over the same prefix (cuda-fp32:
 * relative L2 1e-5, the reference's own cached-vs-uncached budget; cuda-bf16: 2e-2), and under
 * fp32 the greedy token must be HF's. The one-token steps replay a CUDA graph; a second session
 * launching them one by one runs beside it and must give the same logits bit for bit. Skips
 * (exit 77) without a GPU. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "golden.h"
#include "vision.h"

static double rel_l2(const float *got, const float *want, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) return INFINITY;
        double d = (double)got[i] - (double)want[i];
        num += d * d, den += (double)want[i] * want[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int64_t argmax(const float *v, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static void read_or_fail(const m4_golden *g, const char *path, bool as_int, m4_array *a) {
    m4_error err;
    if (m4_golden_read(g, path, as_int, a, &err)) fail_msg("%s: %s", path, err.msg);
}

static void run_case(const char *name, bool bf16) {
    char rel[256];
    m4_error err = {{0}};
    m4_model model;
    m4_golden *golden;
    snprintf(rel, sizeof rel, "golden/cases/%s/model", name);
    char *dir = m4t_source_path(rel);
    if (m4_model_open(dir, &model, &err)) fail_msg("%s", err.msg);
    snprintf(rel, sizeof rel, "golden/cases/%s/%s.h5", name, name);
    char *h5 = m4t_source_path(rel);
    if (m4_golden_open(h5, &golden, &err)) fail_msg("%s", err.msg);
    free(dir), free(h5);
    char rule_name[32];
    if (m4_golden_attr(golden, "mla_softmax_scale_rule", rule_name, sizeof rule_name, &err)) fail_msg("%s", err.msg);
    const m4_softmax_scale_rule rule = strcmp(rule_name, "mscale2") == 0 ? M4_SOFTMAX_SCALE_MSCALE2 : M4_SOFTMAX_SCALE_BASE;
    m4_array ids, mask, pos, gen;
    read_or_fail(golden, "inputs/input_ids", true, &ids);
    read_or_fail(golden, "inputs/attention_mask", true, &mask);
    read_or_fail(golden, "inputs/position_ids", true, &pos);
    read_or_fail(golden, "generate/ids", true, &gen);
    const int64_t B = ids.dims[0], S = ids.dims[1], Tmax = gen.dims[1], Tlast = Tmax - 1;
    const int64_t V = model.config.text.vocab_size, D = model.config.text.hidden_size;

    /* The whole sequence [B, Tlast] as generate() extends the prompt: ids, mask, positions and,
     * for an image prompt, the embeddings (the prompt's from the reference, new tokens' from
     * embed_tokens). */
    int64_t *seq = malloc(sizeof(int64_t) * (size_t)(B * Tlast)), *seq_mask = malloc(sizeof(int64_t) * (size_t)(B * Tlast));
    int64_t *seq_pos = malloc(sizeof(int64_t) * (size_t)(B * Tlast));
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < Tlast; j++) {
            seq[b * Tlast + j] = gen.i64[b * Tmax + j];
            seq_mask[b * Tlast + j] = j < S ? mask.i64[b * S + j] : 1;
            seq_pos[b * Tlast + j] = j < S ? pos.i64[b * S + j] : pos.i64[b * S + S - 1] + (j - S + 1);
        }
    float *embeds = NULL;
    if (m4_golden_has(golden, "inputs/pixel_values")) {
        m4_array px, sizes;
        read_or_fail(golden, "inputs/pixel_values", false, &px);
        read_or_fail(golden, "inputs/image_sizes", true, &sizes);
        m4_pixel_batch images = {.n = px.dims[0], .height = px.dims[2], .width = px.dims[3],
                                 .pixel_values = px.f32, .image_sizes = sizes.i64};
        float *prompt = malloc(sizeof(float) * (size_t)(B * S * D));
        embeds = malloc(sizeof(float) * (size_t)(B * Tlast * D));
        if (m4_ref_prompt_embeds(&model, ids.i64, B, S, &images, prompt, &err)) fail_msg("%s", err.msg);
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = 0; j < Tlast; j++) {
                float *row = embeds + (b * Tlast + j) * D;
                if (j < S) memcpy(row, prompt + (b * S + j) * D, sizeof(float) * (size_t)D);
                else if (m4_ref_embed_tokens(&model.weights.embed_tokens, &seq[b * Tlast + j], 1, row, &err)) fail_msg("%s", err.msg);
            }
        free(prompt), m4_array_free(&px), m4_array_free(&sizes);
    }
    /* reference: one uncached forward over the whole sequence, read at each step's position */
    float *all = malloc(sizeof(float) * (size_t)(B * Tlast * V));
    if (m4_ref_text_forward(&model, embeds ? NULL : seq, embeds, B, Tlast, seq_pos, seq_mask, 0, rule, all, &err))
        fail_msg("%s: %s", name, err.msg);

    m4_cuda_session *s, *eager;
    if (m4_cuda_session_open(&model, bf16, B, Tmax, NULL, &s, &err) ||
        m4_cuda_session_open(&model, bf16, B, Tmax, NULL, &eager, &err))
        fail_msg("%s: %s", name, err.msg);
    m4_cuda_session_use_graphs(s, true), m4_cuda_session_use_graphs(eager, false);
    float *logits = malloc(sizeof(float) * (size_t)(B * V)), *want = malloc(sizeof(float) * (size_t)(B * V));
    float *eager_logits = malloc(sizeof(float) * (size_t)(B * V));
    int64_t *step_ids = malloc(sizeof(int64_t) * (size_t)B), *step_pos = malloc(sizeof(int64_t) * (size_t)B);
    int64_t *step_mask = malloc(sizeof(int64_t) * (size_t)(B * Tlast));
    float *step_emb = embeds ? malloc(sizeof(float) * (size_t)(B * S * D)) : NULL;
    const double budget = bf16 ? 2e-2 : 1e-5;
    double worst = 0;
    int64_t greedy_mismatches = 0;
    for (int64_t T = S; T <= Tlast; T++) {
        const int64_t n = T == S ? S : 1, first = T - n;      /* the positions fed this step */
        for (int64_t b = 0; b < B; b++) {
            for (int64_t j = 0; j < T; j++) step_mask[b * T + j] = seq_mask[b * Tlast + j];
            if (n == 1) step_ids[b] = seq[b * Tlast + T - 1], step_pos[b] = seq_pos[b * Tlast + T - 1];
            if (step_emb)
                memcpy(step_emb + b * n * D, embeds + (b * Tlast + first) * D, sizeof(float) * (size_t)(n * D));
        }
        int64_t *prompt_ids = malloc(sizeof(int64_t) * (size_t)(B * n)), *prompt_pos = malloc(sizeof(int64_t) * (size_t)(B * n));
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = 0; j < n; j++)
                prompt_ids[b * n + j] = seq[b * Tlast + first + j], prompt_pos[b * n + j] = seq_pos[b * Tlast + first + j];
        if (m4_cuda_session_forward(s, step_emb ? NULL : prompt_ids, step_emb, B, n, prompt_pos, step_mask, rule, logits, &err) ||
            m4_cuda_session_forward(eager, step_emb ? NULL : prompt_ids, step_emb, B, n, prompt_pos, step_mask, rule,
                                    eager_logits, &err))
            fail_msg("%s T=%lld: %s", name, (long long)T, err.msg);
        if (memcmp(logits, eager_logits, sizeof(float) * (size_t)(B * V)) != 0)
            fail_msg("%s %s T=%lld: the graph-replayed step differs from the same step launched eagerly", name,
                     bf16 ? "bf16" : "fp32", (long long)T);
        free(prompt_ids), free(prompt_pos);
        assert_int_equal(m4_cuda_session_length(s), T);
        for (int64_t b = 0; b < B; b++) {
            memcpy(want + b * V, all + (b * Tlast + T - 1) * V, sizeof(float) * (size_t)V);
            if (argmax(logits + b * V, V) != gen.i64[b * Tmax + T]) greedy_mismatches++;
        }
        const double e = rel_l2(logits, want, B * V);
        if (!(e <= budget))
            fail_msg("%s %s: logits after %lld positions: rel L2 %.3g > %g", name, bf16 ? "bf16" : "fp32", (long long)T, e, budget);
        worst = e > worst ? e : worst;
    }
    print_message("%-17s cuda-%s cached (absorbed MLA) vs reference uncached: max rel L2 %.3g over prefill + "
                  "%lld steps; greedy tokens differing from HF: %lld of %lld\n", name, bf16 ? "bf16" : "fp32", worst,
                  (long long)(Tlast - S), (long long)greedy_mismatches, (long long)(B * (Tmax - S)));
    if (!bf16) assert_int_equal(greedy_mismatches, 0);
    m4_cuda_session_close(s), m4_cuda_session_close(eager);
    free(eager_logits);
    free(seq), free(seq_mask), free(seq_pos), free(embeds), free(all), free(logits), free(want);
    free(step_ids), free(step_pos), free(step_mask), free(step_emb);
    m4_array_free(&ids), m4_array_free(&mask), m4_array_free(&pos), m4_array_free(&gen);
    m4_golden_close(golden);
    m4_model_close(&model);
}

static const char *const cases[] = {"text_tiny", "long_positions", "routing_variants", "multimodal", "fp8"};

static void all_cases_fp32(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(cases[i], false);
}
static void all_cases_bf16(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(cases[i], true);
}

int main(void) {
    int devices = 0;
    m4_error err;
    if (m4_cuda_device_count(&devices, &err) != 0 || devices == 0) {
        fprintf(stderr, "test_gpu_generate: no CUDA device, skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(all_cases_fp32), cmocka_unit_test(all_cases_bf16)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
