/* sampling.c — choosing the next token from a row of logits: greedy, or temperature → top-k →
 * top-p → a draw, in the order HF's logits warpers apply them; and the caller-owned random
 * generator the draw uses. */
#include "generate.h"

#include <math.h>
#include <stdlib.h>

/* ---- the random generator: xoshiro256** (Blackman & Vigna), seeded with splitmix64 ---------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void m4_rng_seed(m4_rng *rng, uint64_t seed) {
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t m4_rng_next(m4_rng *rng) {
    uint64_t *s = rng->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double m4_rng_uniform(m4_rng *rng) { return (double)(m4_rng_next(rng) >> 11) * 0x1.0p-53; }

/* ---- sampling ------------------------------------------------------------------------------- */

m4_sampling m4_sampling_greedy(void) { return (m4_sampling){.temperature = 0.0f, .top_k = 0, .top_p = 1.0f}; }

int64_t m4_argmax(const float *logits, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

/* A candidate token: its id and temperature-scaled logit. */
typedef struct {
    int64_t id;
    float logit;
} candidate;

/* Descending logit; the lower id first on a tie (a total order, so the result is deterministic). */
static int by_logit_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

int m4_sample(const m4_sampling *s, const float *logits, int64_t V, m4_rng *rng, int64_t *token,
              m4_error *err) {
    if (V <= 0) return m4_fail(err, "sampling: empty logits row");
    for (int64_t i = 0; i < V; i++)
        if (isnan(logits[i])) return m4_fail(err, "sampling: logit of token %lld is NaN", (long long)i);
    if (!(s->temperature > 0.0f)) {                          /* greedy (also for NaN/−0 settings) */
        if (isnan(s->temperature)) return m4_fail(err, "sampling: temperature is NaN");
        *token = m4_argmax(logits, V);
        return 0;
    }
    if (!isfinite(s->temperature)) return m4_fail(err, "sampling: temperature %g is not finite", s->temperature);
    if (s->temperature < M4_SAMPLING_MIN_TEMPERATURE)
        return m4_fail(err, "sampling: temperature %g is below %g (M4_SAMPLING_MIN_TEMPERATURE), where the logits "
                            "divided by it overflow", s->temperature, (double)M4_SAMPLING_MIN_TEMPERATURE);
    if (!(s->top_p > 0.0f)) return m4_fail(err, "sampling: top_p %g must be > 0", s->top_p);
    if (!rng) return m4_fail(err, "sampling: temperature %g needs a random generator", s->temperature);

    candidate *c = malloc(sizeof *c * (size_t)V);
    if (!c) return m4_fail(err, "sampling: out of memory for %lld candidates", (long long)V);
    /* TemperatureLogitsWarper: scores / temperature (float32) */
    for (int64_t i = 0; i < V; i++) c[i] = (candidate){.id = i, .logit = logits[i] / s->temperature};
    qsort(c, (size_t)V, sizeof *c, by_logit_desc);
    if (!isfinite(c[0].logit)) {
        float top = c[0].logit;
        free(c);
        return m4_fail(err, "sampling: the largest logit / temperature is %g: no distribution to draw "
                            "from", top);
    }

    /* TopKLogitsWarper: drop every logit below the k-th largest (ties with it stay) */
    int64_t n = V;
    if (s->top_k > 0 && s->top_k < V) {
        n = s->top_k;
        while (n < V && c[n].logit == c[s->top_k - 1].logit) n++;
    }

    /* softmax over the survivors (max-subtracted, accumulated in double) */
    double *p = malloc(sizeof *p * (size_t)n), total = 0.0;
    if (!p) {
        free(c);
        return m4_fail(err, "sampling: out of memory");
    }
    for (int64_t i = 0; i < n; i++) total += p[i] = exp((double)c[i].logit - (double)c[0].logit);

    /* TopPLogitsWarper: a token stays when the tokens ranked above it hold less than top_p of the
     * probability (so the most likely token always stays) */
    if (s->top_p < 1.0f) {
        double above = 0.0;
        int64_t keep = 0;
        while (keep < n && above < (double)s->top_p * total) above += p[keep++];
        n = keep;
        total = above;
    }

    /* the draw: walk the survivors, most likely first, until the cumulative mass passes u */
    const double u = m4_rng_uniform(rng) * total;
    double acc = 0.0;
    int64_t pick = n - 1;                  /* rounding can leave u ≥ the last sum: take the last */
    for (int64_t i = 0; i < n; i++) {
        acc += p[i];
        if (u < acc) {
            pick = i;
            break;
        }
    }
    *token = c[pick].id;
    free(p);
    free(c);
    return 0;
}
