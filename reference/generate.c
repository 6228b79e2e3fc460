/* generate.c — the generation loop of HF's generate() (greedy or sampled, use_cache=True) over the
 * reference's cached text forward, and the multimodal prompt's inputs_embeds (MODEL.md §6). */
#include "generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vision.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

m4_generate_options m4_generate_defaults(const m4_model *model) {
    const m4_text_config *t = &model->config.text;
    return (m4_generate_options){
        .max_new_tokens = 32,
        .sampling = m4_sampling_greedy(),
        .eos_ids = t->eos_token_ids,
        .n_eos = t->n_eos_token_ids,
        .pad_id = t->pad_token_id >= 0 ? t->pad_token_id : 0,
        .scale_rule = M4_SOFTMAX_SCALE_BASE,
    };
}

static int is_eos(const m4_generate_options *opt, int64_t token) {
    for (int i = 0; i < opt->n_eos; i++)
        if (opt->eos_ids[i] == token) return 1;
    return 0;
}

/* The running state of one generation: the cache and the growing 2-D mask, as HF's
 * model_kwargs carry them from step to step. */
typedef struct {
    m4_kv_cache cache;    /* the reference's (unused with a backend forward) */
    int64_t length, capacity; /* positions forwarded so far, and room for the whole generation */
    int64_t *mask;        /* [B, capacity]: 1 token / 0 padding of every position so far */
    int64_t *step_mask;   /* [B, T] the mask handed to a forward (its rows contiguous) */
    int64_t *next_pos;    /* [B] position id of each row's next token */
    int64_t *step_ids;    /* [B] the tokens a decode step feeds */
    int64_t *step_pos;    /* [B] their positions */
    int *done;            /* [B] row reached an end-of-sequence id */
    float *logits;        /* [B, V] last position of each row */
} gen_state;

static void gen_state_free(gen_state *g) {
    m4_kv_cache_free(&g->cache);
    free(g->mask), free(g->step_mask), free(g->next_pos), free(g->step_ids), free(g->step_pos);
    free(g->done), free(g->logits);
}

/* The mask of the cache's positions plus `S` new ones, [B, length + S] with contiguous rows. */
static const int64_t *step_mask(gen_state *g, int64_t B, int64_t S) {
    const int64_t T = g->length + S, cap = g->capacity;
    for (int64_t b = 0; b < B; b++) memcpy(g->step_mask + b * T, g->mask + b * cap, sizeof(int64_t) * (size_t)T);
    return g->step_mask;
}

/* One cached forward of S positions per row: the backend's, or the reference on g->cache. */
static int forward(const m4_model *model, const m4_generate_options *opt, gen_state *g, const int64_t *ids,
                   const float *embeds, int64_t B, int64_t S, const int64_t *pos, const m4_progress *progress,
                   m4_error *err) {
    const int64_t *mask = step_mask(g, B, S);
    int rc = opt->backend.forward
                 ? opt->backend.forward(opt->backend.user, ids, embeds, B, S, pos, mask, opt->scale_rule, g->logits, err)
                 : m4_ref_text_forward_cached(model, ids, embeds, B, S, pos, mask, 1, opt->scale_rule, &g->cache,
                                              progress, g->logits, err);
    if (rc == 0) g->length += S;
    return rc;
}

/* Chooses each running row's next token from g->logits; a stopped row gets the pad id. Writes
 * them to out[:, index] and to g->step_ids, calls on_token. Returns 1 when the caller asked to
 * stop, 0 otherwise, −1 on a sampling error. */
static int choose_tokens(const m4_generate_options *opt, gen_state *g, int64_t B, int64_t V,
                         int64_t index, m4_rng *rng, int64_t *out, int64_t *n_out,
                         int64_t *new_tokens, m4_error *err) {
    int stop = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t token = opt->pad_id;
        if (!g->done[b]) {
            if (m4_sample(&opt->sampling, g->logits + b * V, V, rng, &token, err)) {
                m4_fail_context(err, "row %lld, token %lld", (long long)b, (long long)index);
                return -1;
            }
            if (n_out) n_out[b] = index + 1;
            (*new_tokens)++;
            g->done[b] = is_eos(opt, token);
            if (opt->on_token && opt->on_token(opt->user, b, index, token)) stop = 1;
        }
        out[b * opt->max_new_tokens + index] = token;
        g->step_ids[b] = token;
    }
    return stop;
}

int m4_ref_generate(const m4_model *model, const m4_prompt *prompt, const m4_generate_options *opt,
                    m4_rng *rng, int64_t *out, int64_t *n_out, m4_generate_stats *stats,
                    m4_error *err) {
    const m4_text_config *cfg = &model->config.text;
    const int64_t B = prompt->batch, S = prompt->length, V = cfg->vocab_size;
    const int64_t max_new = opt->max_new_tokens;
    if (B <= 0 || S <= 0) return m4_fail(err, "generate: empty prompt (B %lld, S %lld)", (long long)B, (long long)S);
    if (max_new <= 0) return m4_fail(err, "generate: max_new_tokens = %lld must be > 0", (long long)max_new);
    if (!prompt->ids && !prompt->inputs_embeds) return m4_fail(err, "generate: the prompt has neither ids nor inputs_embeds");
    if (opt->pad_id < 0 || opt->pad_id >= V)
        return m4_fail(err, "generate: pad id %lld outside the vocabulary [0, %lld)", (long long)opt->pad_id, (long long)V);
    if (opt->sampling.temperature > 0.0f && !rng)
        return m4_fail(err, "generate: sampling at temperature %g needs a random generator",
                       opt->sampling.temperature);

    const int64_t capacity = S + max_new;   /* the last token is never forwarded: one to spare */
    gen_state g = {.capacity = capacity};
    int rc = -1;
    if (!opt->backend.forward && m4_kv_cache_init(&g.cache, cfg, B, capacity, err)) return m4_fail_context(err, "generate");
    g.mask = malloc(sizeof(int64_t) * (size_t)(B * capacity));
    g.step_mask = malloc(sizeof(int64_t) * (size_t)(B * capacity));
    g.next_pos = malloc(sizeof(int64_t) * (size_t)B);
    g.step_ids = malloc(sizeof(int64_t) * (size_t)B);
    g.step_pos = malloc(sizeof(int64_t) * (size_t)B);
    g.done = calloc((size_t)B, sizeof(int));
    g.logits = malloc(sizeof(float) * (size_t)(B * V));
    int64_t *pos = malloc(sizeof(int64_t) * (size_t)(B * S));   /* [B, S] prompt positions */
    if (!g.mask || !g.step_mask || !g.next_pos || !g.step_ids || !g.step_pos || !g.done ||
        !g.logits || !pos) {
        m4_fail(err, "generate: out of memory for %lld rows", (long long)B);
        goto done;
    }

    /* The prompt's mask and positions: given, or HF's cumsum(mask) − 1 (0 at padding). Every new
     * token then continues its row at the last prompt position + 1. */
    for (int64_t b = 0; b < B; b++) {
        int64_t seen = 0;
        for (int64_t s = 0; s < S; s++) {
            const int64_t m = prompt->attention_mask ? prompt->attention_mask[b * S + s] : 1;
            g.mask[b * capacity + s] = m;
            seen += m != 0;
            pos[b * S + s] = prompt->position_ids ? prompt->position_ids[b * S + s]
                                                  : (m != 0 ? seen - 1 : 0);
        }
        g.next_pos[b] = pos[b * S + S - 1] + 1;
        if (n_out) n_out[b] = 0;
    }
    for (int64_t i = 0; i < B * max_new; i++) out[i] = opt->pad_id;

    /* prefill: the whole prompt, logits of the last position only */
    m4_generate_stats st = {.prompt_tokens = B * S};
    double t0 = now_seconds();
    if (forward(model, opt, &g, prompt->ids, prompt->inputs_embeds, B, S, pos, &opt->prefill_progress, err)) {
        m4_fail_context(err, "generate: prefill");
        goto done;
    }
    st.prefill_seconds = now_seconds() - t0;

    /* decode: choose, stop or feed the choice back, one position per row at a time */
    t0 = now_seconds();
    for (int64_t index = 0;; index++) {
        int stop = choose_tokens(opt, &g, B, V, index, rng, out, n_out, &st.new_tokens, err);
        if (stop < 0) goto done;
        int all_done = 1;
        for (int64_t b = 0; b < B; b++) all_done &= g.done[b];
        if (stop || all_done || index + 1 == max_new) break;
        const int64_t T = g.length + 1;
        for (int64_t b = 0; b < B; b++) {
            g.mask[b * capacity + T - 1] = 1;               /* HF appends a 1 for every row */
            g.step_pos[b] = g.next_pos[b]++;
        }
        if (forward(model, opt, &g, g.step_ids, NULL, B, 1, g.step_pos, NULL, err)) {
            m4_fail_context(err, "generate: decode step %lld", (long long)(index + 1));
            goto done;
        }
        st.decode_steps++;
    }
    st.decode_seconds = now_seconds() - t0;
    if (st.prefill_seconds > 0) st.prefill_tokens_per_second = (double)st.prompt_tokens / st.prefill_seconds;
    if (st.decode_seconds > 0 && st.decode_steps > 0)
        st.decode_tokens_per_second = (double)(B * st.decode_steps) / st.decode_seconds;
    if (stats) *stats = st;
    rc = 0;
done:
    gen_state_free(&g);
    free(pos);
    return rc;
}
