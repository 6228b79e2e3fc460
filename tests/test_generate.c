/* test_generate.c — the kv cache, sampling and the generation loop (reference/kv_cache.c,
 * sampling.c, generate.c; MODEL.md §6):
 *  - cached == uncached: prefill then one token at a time (teacher-forced with HF's generated
 *    tokens) gives, at every step, the logits of one uncached forward over the whole sequence
 *    (rel L2 ≤ 1e-5) on every golden case; so does a prefill split into chunks;
 *  - greedy generation reproduces HF generate()'s ids (/generate/ids) on every golden case: left
 *    padding (text_tiny), explicit positions past original_max_position_embeddings
 *    (long_positions), group-limited routing (routing_variants), and the multimodal cases from our
 *    own vision path and from HF's merged inputs_embeds;
 *  - sampling: greedy ties, temperature / top-k / top-p semantics, seeded reproducibility;
 *  - the loop: end-of-sequence ids, pads after a stopped row, the callback, stats, bad input. */
#include "generate.h"
#include "golden.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHED_TOL 1e-5

/* ---- a golden case ------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    m4_model model;
    m4_golden *golden;
    m4_softmax_scale_rule rule;      /* from the file's mla_softmax_scale_rule */
    int64_t B, S, V, D, G;           /* batch, prompt length, vocabulary, hidden, generated tokens */
    m4_array ids, mask, pos, gen;    /* /inputs/{input_ids,attention_mask,position_ids}, /generate/ids */
    int multimodal;                  /* has /multimodal.merge/out */
} gcase;

static void read_or_fail(const m4_golden *g, const char *path, bool as_int, m4_array *a) {
    m4_error err;
    if (m4_golden_read(g, path, as_int, a, &err)) fail_msg("%s: %s", path, err.msg);
}

static void open_case(gcase *c, const char *name) {
    memset(c, 0, sizeof *c);
    c->name = name;
    char rel[256];
    m4_error err;
    snprintf(rel, sizeof rel, "golden/cases/%s/model", name);
    char *dir = m4t_source_path(rel);
    if (m4_model_open(dir, &c->model, &err)) fail_msg("%s", err.msg);
    free(dir);
    snprintf(rel, sizeof rel, "golden/cases/%s/%s.h5", name, name);
    char *h5 = m4t_source_path(rel);
    if (m4_golden_open(h5, &c->golden, &err)) fail_msg("%s", err.msg);
    free(h5);
    char rule[32];
    if (m4_golden_attr(c->golden, "mla_softmax_scale_rule", rule, sizeof rule, &err)) fail_msg("%s", err.msg);
    c->rule = strcmp(rule, "mscale2") == 0 ? M4_SOFTMAX_SCALE_MSCALE2 : M4_SOFTMAX_SCALE_BASE;
    read_or_fail(c->golden, "inputs/input_ids", true, &c->ids);
    read_or_fail(c->golden, "inputs/attention_mask", true, &c->mask);
    read_or_fail(c->golden, "inputs/position_ids", true, &c->pos);
    read_or_fail(c->golden, "generate/ids", true, &c->gen);
    c->B = c->ids.dims[0], c->S = c->ids.dims[1];
    c->V = c->model.config.text.vocab_size, c->D = c->model.config.text.hidden_size;
    c->G = c->gen.dims[1] - c->S;
    c->multimodal = m4_golden_has(c->golden, "multimodal.merge/out");
    assert_true(c->G > 0);
}

static void close_case(gcase *c) {
    m4_array_free(&c->ids), m4_array_free(&c->mask), m4_array_free(&c->pos), m4_array_free(&c->gen);
    m4_golden_close(c->golden);
    m4_model_close(&c->model);
}

/* The prompt's inputs_embeds: HF's merged ones (hf = 1), or ours from the golden pixels. */
static float *prompt_embeds(gcase *c, int hf) {
    float *e = malloc(sizeof(float) * (size_t)(c->B * c->S * c->D));
    if (hf) {
        m4_array m;
        read_or_fail(c->golden, "multimodal.merge/out", false, &m);
        memcpy(e, m.f32, sizeof(float) * (size_t)(c->B * c->S * c->D));
        m4_array_free(&m);
        return e;
    }
    m4_array px, sizes;
    m4_error err;
    read_or_fail(c->golden, "inputs/pixel_values", false, &px);
    read_or_fail(c->golden, "inputs/image_sizes", true, &sizes);
    m4_pixel_batch images = {.n = px.dims[0], .height = px.dims[2], .width = px.dims[3],
                             .pixel_values = px.f32, .image_sizes = sizes.i64};
    if (m4_ref_prompt_embeds(&c->model, c->ids.i64, c->B, c->S, &images, e, &err))
        fail_msg("%s: %s", c->name, err.msg);
    m4_array_free(&px), m4_array_free(&sizes);
    return e;
}

static double rel_l2(const float *got, const float *want, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)got[i] - (double)want[i];
        num += d * d, den += (double)want[i] * want[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- cached == uncached, step by step -------------------------------------------------------- */

/* The first T positions of seq [B, S + G] as generate() extends a prompt: ids, the mask (1 for
 * every new token), positions (the row's last prompt position + 1, + 2, …), and, for a prompt
 * given as embeddings, inputs_embeds (new tokens through embed_tokens). Rows are [B, T]. */
static void build_sequences(gcase *c, const int64_t *seq, int64_t G, const float *embeds, int64_t T,
                            int64_t *ids, int64_t *mask, int64_t *pos, float *emb) {
    const int64_t S = c->S, D = c->D, Tmax = S + G;
    m4_error err;
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t j = 0; j < T; j++) {
            ids[b * T + j] = seq[b * Tmax + j];
            mask[b * T + j] = j < S ? c->mask.i64[b * S + j] : 1;
            pos[b * T + j] = j < S ? c->pos.i64[b * S + j] : c->pos.i64[b * S + S - 1] + (j - S + 1);
            if (!emb) continue;
            if (j < S)
                memcpy(emb + (b * T + j) * D, embeds + (b * S + j) * D, sizeof(float) * (size_t)D);
            else if (m4_ref_embed_tokens(&c->model.weights.embed_tokens, &ids[b * T + j], 1, emb + (b * T + j) * D,
                                         &err))
                fail_msg("%s", err.msg);
        }
}

/* Teacher-forced with the tokens of seq [B, S + G] (prompt, then G generated tokens): prefill
 * the prompt into a cache, then feed generated token k at position last + k; after every forward
 * the last position's logits must equal those of an uncached forward over prompt + k tokens.
 * per_step: one uncached forward per step, over exactly that prefix (the literal check);
 * otherwise one uncached forward over the whole sequence, read at each step's position (the
 * same numbers — causal attention never looks ahead — at a fraction of the cost). Returns the
 * largest rel L2 over the prefill and the G − 1 decode steps. */
static double cached_vs_uncached(gcase *c, const float *embeds, const int64_t *seq, int64_t G, int per_step) {
    const int64_t B = c->B, S = c->S, V = c->V, D = c->D, Tmax = S + G, Tlast = Tmax - 1;
    m4_error err;
    m4_kv_cache cache;
    if (m4_kv_cache_init(&cache, &c->model.config.text, B, Tmax, &err)) fail_msg("%s", err.msg);
    int64_t *ids = malloc(sizeof(int64_t) * (size_t)(B * Tmax));     /* [B, T] */
    int64_t *mask = malloc(sizeof(int64_t) * (size_t)(B * Tmax));
    int64_t *pos = malloc(sizeof(int64_t) * (size_t)(B * Tmax));
    float *emb = embeds ? malloc(sizeof(float) * (size_t)(B * Tmax * D)) : NULL;
    float *cached = malloc(sizeof(float) * (size_t)(B * V)), *full = malloc(sizeof(float) * (size_t)(B * V));
    float *all = per_step ? NULL : malloc(sizeof(float) * (size_t)(B * Tlast * V));   /* [B, Tlast, V] */
    int64_t *step_ids = malloc(sizeof(int64_t) * (size_t)B), *step_pos = malloc(sizeof(int64_t) * (size_t)B);
    double worst = 0;
    if (!per_step) {
        build_sequences(c, seq, G, embeds, Tlast, ids, mask, pos, emb);
        if (m4_ref_text_forward(&c->model, emb ? NULL : ids, emb, B, Tlast, pos, mask, 0, c->rule, all, &err))
            fail_msg("%s uncached: %s", c->name, err.msg);
    }

    for (int64_t T = S; T <= Tlast; T++) {
        build_sequences(c, seq, G, embeds, T, ids, mask, pos, emb);
        if (per_step) {
            if (m4_ref_text_forward(&c->model, emb ? NULL : ids, emb, B, T, pos, mask, 1, c->rule, full, &err))
                fail_msg("%s uncached T=%lld: %s", c->name, (long long)T, err.msg);
        } else {
            for (int64_t b = 0; b < B; b++)
                memcpy(full + b * V, all + (b * Tlast + T - 1) * V, sizeof(float) * (size_t)V);
        }
        if (T == S) {                              /* prefill */
            if (m4_ref_text_forward_cached(&c->model, emb ? NULL : ids, emb, B, S, pos, mask, 1, c->rule,
                                           &cache, NULL, cached, &err))
                fail_msg("%s prefill: %s", c->name, err.msg);
        } else {                                   /* one new token per row */
            for (int64_t b = 0; b < B; b++) step_ids[b] = ids[b * T + T - 1], step_pos[b] = pos[b * T + T - 1];
            if (m4_ref_text_forward_cached(&c->model, step_ids, NULL, B, 1, step_pos, mask, 1, c->rule,
                                           &cache, NULL, cached, &err))
                fail_msg("%s step T=%lld: %s", c->name, (long long)T, err.msg);
        }
        assert_int_equal(cache.length, T);
        double e = rel_l2(cached, full, B * V);
        if (!(e <= CACHED_TOL))
            fail_msg("%s: cached logits after %lld positions: rel L2 %.3g > %g", c->name, (long long)T, e,
                     CACHED_TOL);
        worst = e > worst ? e : worst;
    }
    m4_kv_cache_free(&cache);
    free(ids), free(mask), free(pos), free(emb), free(cached), free(full), free(all), free(step_ids), free(step_pos);
    return worst;
}

static void run_cached_case(const char *name, int hf_embeds) {
    gcase c;
    open_case(&c, name);
    float *embeds = c.multimodal ? prompt_embeds(&c, hf_embeds) : NULL;
    double worst = cached_vs_uncached(&c, embeds, c.gen.i64, c.G, 1);
    print_message("%-17s cached vs uncached (HF's tokens): max rel L2 over prefill + %lld decode "
                  "steps = %.3g\n", name, (long long)(c.G - 1), worst);
    free(embeds);
    close_case(&c);
}

static void test_cached_text_tiny(void **state) { (void)state; run_cached_case("text_tiny", 0); }
static void test_cached_long_positions(void **state) { (void)state; run_cached_case("long_positions", 0); }
static void test_cached_routing_variants(void **state) { (void)state; run_cached_case("routing_variants", 0); }
static void test_cached_multimodal(void **state) { (void)state; run_cached_case("multimodal", 0); }
static void test_cached_fp8(void **state) { (void)state; run_cached_case("fp8", 0); }

/* A longer decode: 24 more tokens after long_positions' prompts, whose positions continue from
 * 208 and 1005 — row 1 crosses 1024 = 16 · original_max_position_embeddings, where the Llama-4
 * query scale steps from 1 + 0.1·ln 16 to 1 + 0.1·ln 17 mid-decode (and both rows run past
 * max_position_embeddings = 256, as the golden does) — checked step by step against an uncached
 * forward. Any tokens do for this equality: seeded pseudo-random ids. */
static void test_cached_long_decode(void **state) {
    (void)state;
    gcase c;
    open_case(&c, "long_positions");
    enum { G = 24 };
    const int64_t B = c.B, S = c.S;
    int64_t seq[2 * (12 + G)];
    m4_rng rng;
    m4_rng_seed(&rng, 99);
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < S + G; j++)
            seq[b * (S + G) + j] = j < S ? c.ids.i64[b * S + j] : 20 + (int64_t)(m4_rng_next(&rng) % 492);
    double worst = cached_vs_uncached(&c, NULL, seq, G, 0);
    print_message("%-17s cached vs uncached (24 more tokens, row 1 across position 1024): max rel L2 = %.3g\n",
                  "long_positions", worst);
    close_case(&c);
}

/* A prefill split into chunks (4 + 3 + 3 positions, every chunk attending to the cached ones):
 * the real tokens' logits equal the uncached forward's. (Padded query rows are not compared: a
 * fully masked row attends uniformly to every key it sees, and a chunk sees fewer keys — HF's
 * garbage there depends on how the prompt was split too. Real tokens never attend to them.) */
static void test_chunked_prefill(void **state) {
    (void)state;
    gcase c;
    open_case(&c, "text_tiny");
    const int64_t B = c.B, S = c.S, V = c.V;
    m4_error err;
    float *full = malloc(sizeof(float) * (size_t)(B * S * V));
    if (m4_ref_text_forward(&c.model, c.ids.i64, NULL, B, S, c.pos.i64, c.mask.i64, 0, c.rule, full, &err))
        fail_msg("%s", err.msg);
    m4_kv_cache cache;
    if (m4_kv_cache_init(&cache, &c.model.config.text, B, S, &err)) fail_msg("%s", err.msg);
    const int64_t chunks[] = {4, 3, 3};
    int64_t start = 0;
    for (int k = 0; k < 3; k++) {
        const int64_t n = chunks[k], T = start + n;
        int64_t ids[2 * 4], pos[2 * 4], mask[2 * 10];
        float *logits = malloc(sizeof(float) * (size_t)(B * n * V));
        for (int64_t b = 0; b < B; b++) {
            for (int64_t s = 0; s < n; s++)
                ids[b * n + s] = c.ids.i64[b * S + start + s], pos[b * n + s] = c.pos.i64[b * S + start + s];
            for (int64_t j = 0; j < T; j++) mask[b * T + j] = c.mask.i64[b * S + j];
        }
        if (m4_ref_text_forward_cached(&c.model, ids, NULL, B, n, pos, mask, 0, c.rule, &cache, NULL,
                                       logits, &err))
            fail_msg("chunk %d: %s", k, err.msg);
        for (int64_t b = 0; b < B; b++)
            for (int64_t s = 0; s < n; s++) {
                if (!c.mask.i64[b * S + start + s]) continue;
                double e = rel_l2(logits + (b * n + s) * V, full + (b * S + start + s) * V, V);
                if (!(e <= CACHED_TOL))
                    fail_msg("row %lld position %lld: rel L2 %.3g", (long long)b, (long long)(start + s), e);
            }
        free(logits);
        start = T;
    }
    assert_int_equal(cache.length, S);
    /* the cache is full now: one more position is refused, and nothing changes */
    int64_t one[2] = {5, 6}, mask11[2 * 11];
    for (int i = 0; i < 22; i++) mask11[i] = 1;
    float *l = malloc(sizeof(float) * (size_t)(B * V));
    assert_int_equal(m4_ref_text_forward_cached(&c.model, one, NULL, B, 1, NULL, mask11, 1, c.rule, &cache,
                                                NULL, l, &err), -1);
    m4t_assert_contains(err.msg, "kv cache is full");
    assert_int_equal(cache.length, S);
    free(l);
    m4_kv_cache_free(&cache);
    free(full);
    close_case(&c);
}

/* ---- greedy generation == HF generate() -------------------------------------------------------- */

static int count_tokens(void *user, int64_t row, int64_t index, int64_t token) {
    (void)row, (void)index, (void)token;
    (*(int *)user)++;
    return 0;
}

/* Greedy generation from the golden prompt: the new tokens must be HF's, every step. */
static void run_greedy_case(const char *name, int embeds_from) {
    gcase c;
    open_case(&c, name);
    const int64_t B = c.B, S = c.S, G = c.G;
    float *embeds = c.multimodal ? prompt_embeds(&c, embeds_from) : NULL;
    m4_prompt prompt = {.batch = B, .length = S, .ids = c.ids.i64, .inputs_embeds = embeds,
                        .attention_mask = c.mask.i64, .position_ids = c.pos.i64};
    m4_generate_options opt = m4_generate_defaults(&c.model);
    opt.max_new_tokens = G;
    opt.scale_rule = c.rule;
    int calls = 0;
    opt.on_token = count_tokens, opt.user = &calls;
    int64_t *out = malloc(sizeof(int64_t) * (size_t)(B * G)), n_out[8];
    m4_generate_stats st;
    m4_error err;
    if (m4_ref_generate(&c.model, &prompt, &opt, NULL, out, n_out, &st, &err)) fail_msg("%s: %s", name, err.msg);
    for (int64_t b = 0; b < B; b++)
        for (int64_t k = 0; k < G; k++)
            if (out[b * G + k] != c.gen.i64[b * (S + G) + S + k])
                fail_msg("%s row %lld: new token %lld is %lld, HF generate() gave %lld", name, (long long)b,
                         (long long)k, (long long)out[b * G + k], (long long)c.gen.i64[b * (S + G) + S + k]);
    int64_t total = 0;
    for (int64_t b = 0; b < B; b++) total += n_out[b];
    assert_int_equal(st.new_tokens, total);
    assert_int_equal(calls, total);
    assert_int_equal(st.prompt_tokens, B * S);
    print_message("%-17s greedy == HF generate(): %lld rows x %lld tokens%s\n", name, (long long)B,
                  (long long)G, c.multimodal ? (embeds_from ? " (HF's merged inputs_embeds)" : " (our vision path)") : "");
    free(out), free(embeds);
    close_case(&c);
}

static void test_greedy_text_tiny(void **state) { (void)state; run_greedy_case("text_tiny", 0); }
static void test_greedy_long_positions(void **state) { (void)state; run_greedy_case("long_positions", 0); }
static void test_greedy_routing_variants(void **state) { (void)state; run_greedy_case("routing_variants", 0); }
static void test_greedy_multimodal(void **state) { (void)state; run_greedy_case("multimodal", 0); }
static void test_greedy_multimodal_hf_embeds(void **state) { (void)state; run_greedy_case("multimodal", 1); }
static void test_greedy_fp8(void **state) { (void)state; run_greedy_case("fp8", 0); }
static void test_greedy_fp8_hf_embeds(void **state) { (void)state; run_greedy_case("fp8", 1); }

/* text_tiny with its mask but no position ids: generate() derives cumsum(mask) − 1 itself (the
 * golden file passed exactly those) and must give HF's tokens. */
static void test_greedy_default_positions(void **state) {
    (void)state;
    gcase c;
    open_case(&c, "text_tiny");
    const int64_t B = c.B, S = c.S, G = c.G;
    m4_prompt prompt = {.batch = B, .length = S, .ids = c.ids.i64, .attention_mask = c.mask.i64};
    m4_generate_options opt = m4_generate_defaults(&c.model);
    opt.max_new_tokens = G, opt.scale_rule = c.rule;
    int64_t out[2 * 4];
    m4_error err;
    if (m4_ref_generate(&c.model, &prompt, &opt, NULL, out, NULL, NULL, &err)) fail_msg("%s", err.msg);
    for (int64_t b = 0; b < B; b++)
        for (int64_t k = 0; k < G; k++) assert_int_equal(out[b * G + k], c.gen.i64[b * (S + G) + S + k]);
    close_case(&c);
}

/* Row 0 of text_tiny without its padding (positions 0…6, no mask) generates the same tokens as
 * the padded batch: padding is invisible to the real tokens. */
static void test_unpadded_row_matches(void **state) {
    (void)state;
    gcase c;
    open_case(&c, "text_tiny");
    const int64_t pad = 3, S = c.S - pad, G = c.G;
    m4_prompt prompt = {.batch = 1, .length = S, .ids = c.ids.i64 + pad};
    m4_generate_options opt = m4_generate_defaults(&c.model);
    opt.max_new_tokens = G, opt.scale_rule = c.rule;
    int64_t out[16];
    m4_error err;
    if (m4_ref_generate(&c.model, &prompt, &opt, NULL, out, NULL, NULL, &err)) fail_msg("%s", err.msg);
    for (int64_t k = 0; k < G; k++) assert_int_equal(out[k], c.gen.i64[c.S + k]);
    close_case(&c);
}

/* ---- the loop's bookkeeping ------------------------------------------------------------------ */

typedef struct {
    int calls;
    int stop_after;                 /* ask to stop after this many calls (0: never) */
    int64_t rows[32], tokens[32];
} recorder;

static int record(void *user, int64_t row, int64_t index, int64_t token) {
    recorder *r = user;
    (void)index;
    r->rows[r->calls] = row, r->tokens[r->calls] = token;
    r->calls++;
    return r->stop_after && r->calls >= r->stop_after;
}

/* An end-of-sequence id stops its row (the id is kept, pads follow) and not the other. */
static void test_eos_stops_a_row(void **state) {
    (void)state;
    gcase c;
    open_case(&c, "text_tiny");
    const int64_t B = c.B, S = c.S, G = c.G;
    const int64_t eos = c.gen.i64[1 * (S + G) + S + 1];   /* row 1's second new token */
    m4_prompt prompt = {.batch = B, .length = S, .ids = c.ids.i64, .attention_mask = c.mask.i64,
                        .position_ids = c.pos.i64};
    m4_generate_options opt = m4_generate_defaults(&c.model);
    opt.max_new_tokens = G, opt.scale_rule = c.rule, opt.eos_ids = &eos, opt.n_eos = 1;
    recorder rec = {0};
    opt.on_token = record, opt.user = &rec;
    int64_t out[2 * 4], n_out[2];
    m4_generate_stats st;
    m4_error err;
    if (m4_ref_generate(&c.model, &prompt, &opt, NULL, out, n_out, &st, &err)) fail_msg("%s", err.msg);
    for (int64_t k = 0; k < G; k++) assert_int_equal(out[k], c.gen.i64[S + k]);   /* row 0 unchanged */
    assert_int_equal(n_out[0], G);
    assert_int_equal(n_out[1], 2);
    assert_int_equal(out[G + 0], c.gen.i64[(S + G) + S]);
    assert_int_equal(out[G + 1], eos);
    for (int64_t k = 2; k < G; k++) assert_int_equal(out[G + k], c.model.config.text.pad_token_id);
    assert_int_equal(rec.calls, G + 2);
    assert_int_equal(st.new_tokens, G + 2);
    assert_int_equal(st.decode_steps, G - 1);
    close_case(&c);
}

/* The callback can stop generation; max_new_tokens = 1 runs the prefill only. */
static void test_callback_stop_and_budget(void **state) {
    (void)state;
    gcase c;
    open_case(&c, "routing_variants");
    const int64_t B = c.B, S = c.S, G = c.G;
    m4_prompt prompt = {.batch = B, .length = S, .ids = c.ids.i64};
    m4_generate_options opt = m4_generate_defaults(&c.model);
    opt.max_new_tokens = G, opt.scale_rule = c.rule;
    recorder rec = {.stop_after = 3};
    opt.on_token = record, opt.user = &rec;
    int64_t out[2 * 4], n_out[2];
    m4_generate_stats st;
    m4_error err;
    if (m4_ref_generate(&c.model, &prompt, &opt, NULL, out, n_out, &st, &err)) fail_msg("%s", err.msg);
    /* rows 0, 1 at step 0, row 0 at step 1 asks to stop; row 1 still gets its step-1 token */
    assert_int_equal(rec.calls, 4);
    assert_int_equal(rec.rows[2], 0);
    assert_int_equal(rec.rows[3], 1);
    assert_int_equal(n_out[0], 2);
    assert_int_equal(n_out[1], 2);
    assert_int_equal(st.decode_steps, 1);

    opt.max_new_tokens = 1, opt.on_token = NULL;
    if (m4_ref_generate(&c.model, &prompt, &opt, NULL, out, n_out, &st, &err)) fail_msg("%s", err.msg);
    assert_int_equal(st.decode_steps, 0);
    assert_int_equal(st.new_tokens, 2);
    assert_int_equal(out[0], c.gen.i64[S]);
    assert_int_equal(out[1], c.gen.i64[(S + G) + S]);
    assert_true(st.prefill_seconds >= 0 && st.prefill_tokens_per_second >= 0);
    close_case(&c);
}

/* Sampled generation: a seed fixes the tokens; top_k = 1 is greedy whatever the temperature. */
static void test_sampled_generation(void **state) {
    (void)state;
    gcase c;
    open_case(&c, "routing_variants");
    const int64_t B = c.B, S = c.S;
    enum { G = 6 };
    m4_prompt prompt = {.batch = B, .length = S, .ids = c.ids.i64};
    m4_generate_options opt = m4_generate_defaults(&c.model);
    opt.max_new_tokens = G, opt.scale_rule = c.rule, opt.n_eos = 0;
    opt.sampling = (m4_sampling){.temperature = 1.5f, .top_k = 0, .top_p = 1.0f};
    int64_t a[2 * G], b2[2 * G], greedy[2 * G];
    m4_rng rng;
    m4_error err;
    m4_rng_seed(&rng, 42);
    if (m4_ref_generate(&c.model, &prompt, &opt, &rng, a, NULL, NULL, &err)) fail_msg("%s", err.msg);
    m4_rng_seed(&rng, 42);
    if (m4_ref_generate(&c.model, &prompt, &opt, &rng, b2, NULL, NULL, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(a, b2, sizeof a);
    int differs = 0;
    for (uint64_t seed = 1; seed <= 8 && !differs; seed++) {
        m4_rng_seed(&rng, seed);
        if (m4_ref_generate(&c.model, &prompt, &opt, &rng, b2, NULL, NULL, &err)) fail_msg("%s", err.msg);
        differs = memcmp(a, b2, sizeof a) != 0;
    }
    assert_true(differs);
    /* without a generator, sampling is refused */
    assert_int_equal(m4_ref_generate(&c.model, &prompt, &opt, NULL, a, NULL, NULL, &err), -1);
    m4t_assert_contains(err.msg, "random generator");
    opt.sampling.top_k = 1;
    if (m4_ref_generate(&c.model, &prompt, &opt, &rng, a, NULL, NULL, &err)) fail_msg("%s", err.msg);
    opt.sampling = m4_sampling_greedy();
    if (m4_ref_generate(&c.model, &prompt, &opt, NULL, greedy, NULL, NULL, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(a, greedy, sizeof a);
    close_case(&c);
}

static void test_generate_bad_input(void **state) {
    (void)state;
    gcase c;
    open_case(&c, "routing_variants");
    m4_error err;
    int64_t out[8], ids[3] = {1, 2, 9999};
    m4_prompt prompt = {.batch = 1, .length = 3, .ids = ids};
    m4_generate_options opt = m4_generate_defaults(&c.model);
    opt.max_new_tokens = 2;
    assert_int_equal(m4_ref_generate(&c.model, &prompt, &opt, NULL, out, NULL, NULL, &err), -1);
    m4t_assert_contains(err.msg, "outside the vocabulary");
    ids[2] = 5;
    opt.max_new_tokens = 0;
    assert_int_equal(m4_ref_generate(&c.model, &prompt, &opt, NULL, out, NULL, NULL, &err), -1);
    m4t_assert_contains(err.msg, "max_new_tokens");
    opt.max_new_tokens = 2, opt.pad_id = -1;
    assert_int_equal(m4_ref_generate(&c.model, &prompt, &opt, NULL, out, NULL, NULL, &err), -1);
    m4t_assert_contains(err.msg, "pad id");
    opt.pad_id = 11;
    prompt.length = 0;
    assert_int_equal(m4_ref_generate(&c.model, &prompt, &opt, NULL, out, NULL, NULL, &err), -1);
    m4t_assert_contains(err.msg, "empty prompt");
    /* a text-only model refuses images */
    float px[3 * 4 * 4] = {0};
    int64_t size[2] = {4, 4};
    float emb[3 * 64];
    m4_pixel_batch images = {.n = 1, .height = 4, .width = 4, .pixel_values = px, .image_sizes = size};
    assert_int_equal(m4_ref_prompt_embeds(&c.model, ids, 1, 3, &images, emb, &err), -1);
    m4t_assert_contains(err.msg, "text-only");
    close_case(&c);
}

/* The two MLA forms on HF's own layer-0 input (the multimodal case's is the merged sequence):
 * the expanded m4_ref_mla and the absorbed m4_ref_mla_cached (an empty cache of exactly the
 * prompt) each within the float32 budget of HF's self_attn output, and of each other — padded rows
 * included (both give a fully masked row the uniform average of every key). */
static void run_absorbed_case(const char *name) {
    gcase c;
    open_case(&c, name);
    const m4_text_config *t = &c.model.config.text;
    m4_array x, want;
    read_or_fail(c.golden, "text.layers.0.self_attn/in", false, &x);
    read_or_fail(c.golden, "text.layers.0.self_attn/out", false, &want);
    const int64_t B = x.dims[0], S = x.dims[1], n = B * S * t->hidden_size;
    assert_int_equal(want.numel, n);
    const float scale = m4_ref_mla_softmax_scale(t, c.rule);
    float *expanded = malloc(sizeof(float) * (size_t)n), *absorbed = malloc(sizeof(float) * (size_t)n);
    m4_kv_cache cache;
    m4_error err;
    if (m4_ref_mla(t, &c.model.weights.layers[0], x.f32, B, S, c.pos.i64, c.mask.i64, scale, expanded, NULL, &err) ||
        m4_kv_cache_init(&cache, t, B, S, &err) ||
        m4_ref_mla_cached(t, &c.model.weights.layers[0], x.f32, B, S, c.pos.i64, c.mask.i64, scale, &cache, 0, absorbed,
                          &err))
        fail_msg("%s: %s", name, err.msg);
    const double e_exp = rel_l2(expanded, want.f32, n), e_abs = rel_l2(absorbed, want.f32, n);
    const double e_forms = rel_l2(absorbed, expanded, n);
    print_message("%-17s self_attn vs HF: expanded %.3g, absorbed %.3g; absorbed vs expanded %.3g\n", name, e_exp, e_abs,
                  e_forms);
    assert_true(e_exp <= CACHED_TOL && e_abs <= CACHED_TOL && e_forms <= CACHED_TOL);
    assert_true(e_forms > 0);   /* two groupings of the sums, not one function called twice */
    m4_kv_cache_free(&cache);
    free(expanded), free(absorbed), m4_array_free(&x), m4_array_free(&want);
    close_case(&c);
}
static void test_absorbed_forms(void **state) {
    (void)state;
    for (const char *const *name = (const char *const[]){"text_tiny", "long_positions", "routing_variants", "multimodal",
                                                           "fp8", NULL};
         *name; name++)
        run_absorbed_case(*name);
}

/* The cache refuses a mismatched batch or layer and reports its size. */
static void test_kv_cache_checks(void **state) {
    (void)state;
    gcase c;
    open_case(&c, "text_tiny");
    const m4_text_config *t = &c.model.config.text;
    m4_error err;
    m4_kv_cache cache;
    assert_int_equal(m4_kv_cache_init(&cache, t, 0, 4, &err), -1);
    assert_int_equal(m4_kv_cache_init(&cache, t, 1, 8, &err), 0);
    assert_int_equal(m4_kv_cache_bytes(t, 1, 8), 4 * t->num_hidden_layers * 8 * (t->kv_lora_rank + t->qk_rope_head_dim));
    float *x = calloc((size_t)(16 * t->hidden_size), sizeof(float)), *out = malloc(sizeof(float) * (size_t)(16 * t->hidden_size));
    float scale = m4_ref_mla_softmax_scale(t, c.rule);
    assert_int_equal(m4_ref_mla_cached(t, &c.model.weights.layers[0], x, 2, 1, NULL, NULL, scale, &cache, 0, out,
                                       &err), -1);
    m4t_assert_contains(err.msg, "1 rows, the input 2");
    assert_int_equal(m4_ref_mla_cached(t, &c.model.weights.layers[0], x, 1, 1, NULL, NULL, scale, &cache, 7, out,
                                       &err), -1);
    m4t_assert_contains(err.msg, "layer 7");
    assert_int_equal(m4_ref_mla_cached(t, &c.model.weights.layers[0], x, 1, 9, NULL, NULL, scale, &cache, 0,
                                       out, &err), -1);
    m4t_assert_contains(err.msg, "kv cache is full: 0 cached + 9 new positions > capacity 8");
    /* the layer appends its latents; only the text forward moves `length` */
    assert_int_equal(m4_ref_mla_cached(t, &c.model.weights.layers[0], x, 1, 2, NULL, NULL, scale, &cache, 0,
                                       out, &err), 0);
    assert_int_equal(cache.length, 0);
    m4_kv_cache_reset(&cache);
    assert_int_equal(cache.length, 0);
    m4_kv_cache_free(&cache);
    free(x), free(out);
    close_case(&c);
}

/* ---- sampling ------------------------------------------------------------------------------- */

static void test_argmax_and_greedy(void **state) {
    (void)state;
    const float l[5] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
    assert_int_equal(m4_argmax(l, 5), 1);                       /* first of the tied maxima */
    m4_sampling g = m4_sampling_greedy();
    int64_t tok;
    m4_error err;
    assert_int_equal(m4_sample(&g, l, 5, NULL, &tok, &err), 0);
    assert_int_equal(tok, 1);
    float bad[3] = {0.0f, NAN, 1.0f};
    assert_int_equal(m4_sample(&g, bad, 3, NULL, &tok, &err), -1);
    m4t_assert_contains(err.msg, "NaN");
    m4_sampling s = {.temperature = 1.0f, .top_k = 0, .top_p = 0.0f};
    m4_rng rng;
    m4_rng_seed(&rng, 1);
    assert_int_equal(m4_sample(&s, l, 5, &rng, &tok, &err), -1);
    m4t_assert_contains(err.msg, "top_p");
    s.top_p = 1.0f;
    assert_int_equal(m4_sample(&s, l, 5, NULL, &tok, &err), -1);
    s.temperature = INFINITY;
    assert_int_equal(m4_sample(&s, l, 5, &rng, &tok, &err), -1);
    /* issue #18: below M4_SAMPLING_MIN_TEMPERATURE the logits / temperature overflow (at float's
     * smallest, 1.4e-45, a logit of 1e-6 does): refused by the setting, whatever the logits */
    const float small[2] = {1e-7f, 0.0f};
    s.temperature = M4_SAMPLING_MIN_TEMPERATURE;
    assert_int_equal(m4_sample(&s, small, 2, &rng, &tok, &err), 0);
    s.temperature = 1e-45f;
    assert_int_equal(m4_sample(&s, small, 2, &rng, &tok, &err), -1);
    m4t_assert_contains(err.msg, "below 1e-06 (M4_SAMPLING_MIN_TEMPERATURE)");
}

/* Draw many times from p = (0.5, 0.3, 0.2): the frequencies match; top_k = 2 never draws id 2;
 * top_p = 0.6 keeps {0, 1} (0.5 above id 1 is < 0.6; 0.8 above id 2 is not); a small top_p is
 * greedy. */
static void test_sampling_distribution(void **state) {
    (void)state;
    const float l[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    m4_rng rng;
    m4_rng_seed(&rng, 1234);
    m4_error err;
    enum { DRAWS = 20000 };
    struct { m4_sampling s; double want[3]; } cases[] = {
        {{1.0f, 0, 1.0f}, {0.5, 0.3, 0.2}},
        {{1.0f, 2, 1.0f}, {0.625, 0.375, 0.0}},
        {{1.0f, 0, 0.6f}, {0.625, 0.375, 0.0}},
        {{1.0f, 0, 0.4f}, {1.0, 0.0, 0.0}},
        {{2.0f, 0, 1.0f}, {0, 0, 0}},          /* want filled below: p^(1/2) normalised */
    };
    double r[3], sum = 0;
    for (int i = 0; i < 3; i++) sum += r[i] = sqrt((double)(i == 0 ? 0.5 : i == 1 ? 0.3 : 0.2));
    for (int i = 0; i < 3; i++) cases[4].want[i] = r[i] / sum;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int count[3] = {0};
        for (int d = 0; d < DRAWS; d++) {
            int64_t tok;
            if (m4_sample(&cases[k].s, l, 3, &rng, &tok, &err)) fail_msg("%s", err.msg);
            assert_in_range(tok, 0, 2);
            count[tok]++;
        }
        for (int i = 0; i < 3; i++) {
            double f = (double)count[i] / DRAWS;
            if (fabs(f - cases[k].want[i]) > 0.015)
                fail_msg("case %zu: token %d drawn %.4f of the time, want %.4f", k, i, f, cases[k].want[i]);
        }
    }
}

/* The generator: a seed fixes the stream, copies replay it, uniforms stay in [0, 1). */
static void test_rng(void **state) {
    (void)state;
    m4_rng a, b;
    m4_rng_seed(&a, 7);
    m4_rng_seed(&b, 7);
    for (int i = 0; i < 100; i++) assert_true(m4_rng_next(&a) == m4_rng_next(&b));
    m4_rng c = a;
    assert_true(m4_rng_next(&a) == m4_rng_next(&c));
    m4_rng_seed(&b, 8);
    assert_true(m4_rng_next(&a) != m4_rng_next(&b));
    double mean = 0;
    for (int i = 0; i < 10000; i++) {
        double u = m4_rng_uniform(&a);
        assert_true(u >= 0.0 && u < 1.0);
        mean += u / 10000;
    }
    assert_true(fabs(mean - 0.5) < 0.02);
}

int main(int argc, char **argv) {
    if (argc > 1) cmocka_set_test_filter(argv[1]);     /* e.g. test_generate 'test_greedy_*' */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cached_text_tiny),
        cmocka_unit_test(test_cached_long_positions),
        cmocka_unit_test(test_cached_routing_variants),
        cmocka_unit_test(test_cached_multimodal),
        cmocka_unit_test(test_cached_fp8),
        cmocka_unit_test(test_cached_long_decode),
        cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_greedy_text_tiny),
        cmocka_unit_test(test_greedy_long_positions),
        cmocka_unit_test(test_greedy_routing_variants),
        cmocka_unit_test(test_greedy_multimodal),
        cmocka_unit_test(test_greedy_multimodal_hf_embeds),
        cmocka_unit_test(test_greedy_fp8),
        cmocka_unit_test(test_greedy_fp8_hf_embeds),
        cmocka_unit_test(test_greedy_default_positions),
        cmocka_unit_test(test_unpadded_row_matches),
        cmocka_unit_test(test_eos_stops_a_row),
        cmocka_unit_test(test_callback_stop_and_budget),
        cmocka_unit_test(test_sampled_generation),
        cmocka_unit_test(test_generate_bad_input),
        cmocka_unit_test(test_absorbed_forms),
        cmocka_unit_test(test_kv_cache_checks),
        cmocka_unit_test(test_argmax_and_greedy),
        cmocka_unit_test(test_sampling_distribution),
        cmocka_unit_test(test_rng),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
