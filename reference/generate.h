/* generate.h — text generation with the plain-C reference: sampling (sampling.c) and the
 * generation loop over the MLA kv cache (generate.c), as HF's generate() runs them
 * (MODEL.md §6.1–6.2).
 *
 * The loop: one prefill forward over the prompt (only the last position's logits, HF's
 * logits_to_keep = 1), then one forward per new token, each reading the cache. Rows of a batch
 * are left-padded to one length; positions are cumsum(attention_mask) − 1 (HF's rule for a 2-D
 * mask) unless given, and every new token gets its row's previous position + 1. A row stops at
 * an end-of-sequence id; afterwards it is fed the pad id, as HF does, until every row stopped or
 * the token budget is spent.
 *
 * Randomness comes only from a caller-owned m4_rng: no global state, the same seed gives the
 * same tokens. Nothing here prints: tokens reach the caller through a callback. */
#ifndef M4_GENERATE_H
#define M4_GENERATE_H

#include <stdint.h>

#include "reference.h"
#include "vision.h" /* m4_ref_prompt_embeds, m4_pixel_batch */

/* ---- sampling.c ---------------------------------------------------------------------------- */

/* A small, fast, seedable generator (xoshiro256**, seeded through splitmix64). Owned by the
 * caller; copy it to replay a stream. */
typedef struct {
    uint64_t s[4];
} m4_rng;

void m4_rng_seed(m4_rng *rng, uint64_t seed);
uint64_t m4_rng_next(m4_rng *rng);
/* Uniform in [0, 1), 53 random bits. */
double m4_rng_uniform(m4_rng *rng);

/* How the next token is chosen from a row of logits. HF's order of logits warpers:
 * temperature, then top-k, then top-p, then a draw from the softmax of what is left. */
typedef struct {
    float temperature; /* ≤ 0: greedy (argmax; top_k and top_p are not used), HF do_sample=False */
    int64_t top_k;     /* keep the k largest logits (and any tied with the k-th); ≤ 0: all */
    float top_p;       /* keep the smallest set of most likely tokens whose probability reaches
                        * top_p (at least one); ≥ 1: all */
} m4_sampling;

/* The smallest temperature above 0 (greedy) that sampling accepts. The logits are divided by it in
 * float32 (HF's TemperatureLogitsWarper), and the quotient must stay finite to draw from: at
 * 1e-6 every logit below 3.4e32 in magnitude does (FLT_MAX · 1e-6), while at float's smallest
 * temperature, 1.4e-45, a logit of 1e-6 already overflows to inf. Going lower would change nothing
 * but that: at 1e-6 a gap of 1e-4 between the two largest logits already makes the second
 * e^-100 times less likely than the first (greedy in all but name). */
#define M4_SAMPLING_MIN_TEMPERATURE 1e-6f

/* Greedy sampling: the default. */
m4_sampling m4_sampling_greedy(void);

/* argmax over n logits; the lowest id wins a tie (torch.argmax). */
int64_t m4_argmax(const float *logits, int64_t n);

/* The next token for one row of V logits under `s`. Fails on NaN logits or bad settings
 * (temperature not finite or in (0, M4_SAMPLING_MIN_TEMPERATURE), top_p ≤ 0 or NaN). rng may be NULL only for greedy sampling. */
int m4_sample(const m4_sampling *s, const float *logits, int64_t V, m4_rng *rng, int64_t *token,
              m4_error *err);

/* ---- generate.c ---------------------------------------------------------------------------- */

/* A batch of prompts, left-padded to one length S. */
typedef struct {
    int64_t batch, length;          /* B, S */
    const int64_t *ids;             /* [B, S] token ids (needed unless inputs_embeds is given) */
    const float *inputs_embeds;     /* [B, S, D] or NULL: replaces the prompt's embedding lookup
                                     * (images already scattered in: m4_ref_prompt_embeds) */
    const int64_t *attention_mask;  /* [B, S] 1 token / 0 padding, or NULL: all tokens */
    const int64_t *position_ids;    /* [B, S] or NULL: cumsum(mask) − 1, 0 at padding */
} m4_prompt;

/* Called for every token a row generates (its end-of-sequence id included, never the pad a
 * stopped row is fed): row, index of the token in that row's output, the id. Return non-zero to
 * stop: no forward runs after the current step (the other rows of the step still get, and
 * report, their token, so every running row ends with the same count). */
typedef int (*m4_token_fn)(void *user, int64_t row, int64_t index, int64_t token);

/* A cached forward for the loop to call instead of the reference's: ids [B, S] (or
 * inputs_embeds [B, S, D]) at positions [B, S] after the `length` positions it already holds,
 * attention_mask [B, length + S] → the last position's logits [B, V]; the implementation keeps
 * its own cache, sized for the whole generation (e.g. the CUDA session, cuda_backend.h). */
typedef struct {
    int (*forward)(void *user, const int64_t *ids, const float *inputs_embeds, int64_t B, int64_t S,
                   const int64_t *position_ids, const int64_t *attention_mask,
                   m4_softmax_scale_rule rule, float *logits, m4_error *err);
    void *user;
} m4_cached_forward;

typedef struct {
    int64_t max_new_tokens;        /* per row, > 0 */
    m4_sampling sampling;
    const int64_t *eos_ids;        /* ids that end a row (model config eos_token_id) */
    int n_eos;
    int64_t pad_id;                /* fed to (and written for) rows that stopped; HF pad_token_id */
    m4_softmax_scale_rule scale_rule;
    m4_token_fn on_token;          /* may be NULL */
    void *user;
    m4_progress prefill_progress;  /* layer-by-layer progress of the prefill; may be empty */
    m4_cached_forward backend;     /* forward NULL: the reference, with a kv cache the loop owns */
} m4_generate_options;

/* Defaults: greedy, 32 new tokens, the model's eos ids and pad id (0 when it has none), base
 * softmax scale, no callbacks. */
m4_generate_options m4_generate_defaults(const m4_model *model);

/* Timing of one generation (CLOCK_MONOTONIC). Prefill: the prompt's forward; decode: the
 * one-token forwards and their sampling. Rates are 0 when nothing was timed. */
typedef struct {
    int64_t prompt_tokens;         /* B·S positions in the prefill forward */
    int64_t new_tokens;            /* tokens generated over all rows (not the pads) */
    int64_t decode_steps;          /* one-token forwards (the last token is never forwarded) */
    double prefill_seconds, decode_seconds;
    double prefill_tokens_per_second;  /* prompt_tokens / prefill_seconds */
    double decode_tokens_per_second;   /* B·decode_steps / decode_seconds: positions per second */
} m4_generate_stats;

/* Generates up to max_new_tokens per row. out [B, max_new_tokens] receives each row's tokens, the
 * pad id after a row stopped (HF's layout); n_out [B] (may be NULL) how many tokens each row
 * generated. rng may be NULL for greedy sampling. stats may be NULL. Fails, with nothing
 * generated, on a bad prompt (empty, ids outside the vocabulary) or settings, and on a failing
 * forward. */
int m4_ref_generate(const m4_model *model, const m4_prompt *prompt, const m4_generate_options *opt,
                    m4_rng *rng, int64_t *out, int64_t *n_out, m4_generate_stats *stats,
                    m4_error *err);


#endif
