/* moe.c — text.layers.{i}.mlp: the router (Mistral4TopkRouter), the routed experts
 * (Mistral4Experts, eager) and the MoE block with its shared expert (Mistral4MoE), or the dense
 * SwiGLU MLP of layers < first_k_dense_replace (MODEL.md §2.6). */
#include "reference.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Index of the largest v[i] with !taken[i]; ties go to the lower index (HF's topk leaves tie
 * order implementation-defined; this is the documented choice here). */
static int64_t argmax_free(const float *v, const bool *taken, int64_t n) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++)
        if (!taken[i] && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

static int check_router(const m4_text_config *c, const m4_text_layer_weights *w, m4_error *err) {
    const int64_t E = c->n_routed_experts, K = c->num_experts_per_tok, G = c->n_group;
    if (!w->router.data || w->router.rows != E || w->router.cols != c->hidden_size)
        return m4_fail(err, "mlp.gate: router weight is %s[%lld, %lld], the config implies [%lld, %lld]",
                       w->router.data ? "" : "missing or ", (long long)w->router.rows,
                       (long long)w->router.cols, (long long)E, (long long)c->hidden_size);
    if (G <= 0 || E % G != 0 || c->topk_group <= 0 || c->topk_group > G)
        return m4_fail(err, "mlp.gate: n_group %lld / topk_group %lld do not divide %lld experts",
                       (long long)G, (long long)c->topk_group, (long long)E);
    if (G > 1 && E / G < 2)
        return m4_fail(err, "mlp.gate: group-limited routing needs >= 2 experts per group (HF takes "
                            "the top 2 of each), got %lld", (long long)(E / G));
    if (K <= 0 || K > (E / G) * c->topk_group)
        return m4_fail(err, "mlp.gate: num_experts_per_tok %lld exceeds the %lld experts of the kept "
                            "groups", (long long)K, (long long)((E / G) * c->topk_group));
    if (c->scoring_func == M4_ROUTER_SIGMOID &&
        (!w->router_bias.data || w->router_bias.rows * w->router_bias.cols != E))
        return m4_fail(err, "mlp.gate: a sigmoid router needs e_score_correction_bias [%lld]", (long long)E);
    return 0;
}

/* text.layers.{i}.mlp.gate — Mistral4TopkRouter.forward, x [N, D] → logits [N, E], ids and
 * weights [N, K]. Per token: scores = softmax(logits) (or sigmoid(logits), with choice scores
 * + e_score_correction_bias); group score = sum of the group's top-2 choice scores; the best
 * topk_group groups stay, the others' choice scores become 0; the top K of the choice scores are
 * the experts, their (unbiased) scores the weights, renormalised by Σ + 1e-20 when norm_topk_prob,
 * then × routed_scaling_factor. */
int m4_ref_router(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *x,
                  int64_t N, float *logits, int64_t *topk_ids, float *topk_weights, m4_error *err) {
    if (check_router(cfg, w, err)) return -1;
    const int64_t E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    const int64_t G = cfg->n_group, per_group = E / G;
    float *mem = malloc(sizeof(float) * (size_t)(3 * E + G));
    bool *taken = malloc(sizeof(bool) * (size_t)(E > G ? E : G));
    if (!mem || !taken) {
        free(mem), free(taken);
        return m4_fail(err, "mlp.gate: out of memory");
    }
    float *scores = mem;              /* [E] softmax or sigmoid */
    float *choice = mem + E;          /* [E] scores_for_choice */
    float *bias = mem + 2 * E;        /* [E] e_score_correction_bias (sigmoid routers) */
    float *group_scores = mem + 3 * E;/* [G] */
    if (cfg->scoring_func == M4_ROUTER_SIGMOID) m4_weight_row_f32(&w->router_bias, 0, bias);

    m4_ref_linear(x, N, &w->router, logits);
    for (int64_t t = 0; t < N; t++) {
        memcpy(scores, logits + t * E, sizeof(float) * (size_t)E);
        if (cfg->scoring_func == M4_ROUTER_SIGMOID) {
            for (int64_t e = 0; e < E; e++) scores[e] = 1.0f / (1.0f + expf(-scores[e]));
            for (int64_t e = 0; e < E; e++) choice[e] = scores[e] + bias[e];
        } else {
            m4_ref_softmax(scores, E);
            memcpy(choice, scores, sizeof(float) * (size_t)E);
        }
        /* group-limited selection (a no-op with one group) */
        if (G > 1) {
            for (int64_t g = 0; g < G; g++) {
                const float *c = choice + g * per_group;
                memset(taken, 0, sizeof(bool) * (size_t)per_group);
                int64_t first = argmax_free(c, taken, per_group);
                taken[first] = true;
                int64_t second = argmax_free(c, taken, per_group);
                group_scores[g] = c[first] + c[second];
            }
            memset(taken, 0, sizeof(bool) * (size_t)G);
            for (int64_t k = 0; k < cfg->topk_group; k++) taken[argmax_free(group_scores, taken, G)] = true;
            for (int64_t g = 0; g < G; g++)           /* taken[g]: group g is kept */
                if (!taken[g])
                    for (int64_t e = 0; e < per_group; e++) choice[g * per_group + e] = 0.0f;
        }
        /* top-K experts, descending choice score, ties to the lower id */
        memset(taken, 0, sizeof(bool) * (size_t)E);
        int64_t *ids = topk_ids + t * K;
        float *wts = topk_weights + t * K;
        for (int64_t k = 0; k < K; k++) {
            ids[k] = argmax_free(choice, taken, E);
            taken[ids[k]] = true;
            wts[k] = scores[ids[k]];
        }
        if (cfg->norm_topk_prob) {
            float denominator = 0.0f;
            for (int64_t k = 0; k < K; k++) denominator += wts[k];
            denominator = denominator + 1e-20f;
            for (int64_t k = 0; k < K; k++) wts[k] = wts[k] / denominator;
        }
        for (int64_t k = 0; k < K; k++) wts[k] = wts[k] * (float)cfg->routed_scaling_factor;
    }
    free(mem), free(taken);
    return 0;
}

/* text.layers.{i}.mlp.experts — Mistral4Experts.forward (eager): out[N, D] starts at zero; for
 * each expert in ascending id, its tokens' SwiGLU output (gate_up_proj[e] [2F, D], gate rows
 * first; down_proj[e] [D, F]) times the routing weight is added to their rows. */
int m4_ref_experts(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *x,
                   int64_t N, const int64_t *topk_ids, const float *topk_weights, float *out,
                   m4_error *err) {
    const int64_t D = cfg->hidden_size, E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    const int64_t F = cfg->moe_intermediate_size;
    const m4_expert_stack *gu = &w->experts_gate_up, *dn = &w->experts_down;
    if (!gu->data || gu->experts != E || gu->rows != 2 * F || gu->cols != D)
        return m4_fail(err, "mlp.experts: gate_up_proj is [%lld, %lld, %lld], the config implies "
                            "[%lld, %lld, %lld]", (long long)gu->experts, (long long)gu->rows,
                       (long long)gu->cols, (long long)E, (long long)(2 * F), (long long)D);
    if (!dn->data || dn->experts != E || dn->rows != D || dn->cols != F)
        return m4_fail(err, "mlp.experts: down_proj is [%lld, %lld, %lld], the config implies "
                            "[%lld, %lld, %lld]", (long long)dn->experts, (long long)dn->rows,
                       (long long)dn->cols, (long long)E, (long long)D, (long long)F);
    for (int64_t i = 0; i < N * K; i++)
        if (topk_ids[i] < 0 || topk_ids[i] >= E)
            return m4_fail(err, "mlp.experts: expert id %lld outside [0, %lld)", (long long)topk_ids[i],
                           (long long)E);

    int64_t *tok = malloc(sizeof(int64_t) * (size_t)N);                  /* tokens routed to e */
    float *wt = malloc(sizeof(float) * (size_t)N);                       /* their weights */
    float *xs = malloc(sizeof(float) * (size_t)(N * D));                 /* [n_e, D] gathered x */
    float *h = malloc(sizeof(float) * (size_t)(N * 2 * F));              /* [n_e, 2F] gate | up */
    float *hm = malloc(sizeof(float) * (size_t)(N * F));                 /* [n_e, F] act(gate)·up */
    float *y = malloc(sizeof(float) * (size_t)(N * D));                  /* [n_e, D] */
    if (!tok || !wt || !xs || !h || !hm || !y) {
        free(tok), free(wt), free(xs), free(h), free(hm), free(y);
        return m4_fail(err, "mlp.experts: out of memory for %lld tokens", (long long)N);
    }
    memset(out, 0, sizeof(float) * (size_t)(N * D));
    for (int64_t e = 0; e < E; e++) {
        int64_t n = 0;
        for (int64_t t = 0; t < N; t++)
            for (int64_t k = 0; k < K; k++)
                if (topk_ids[t * K + k] == e) {
                    tok[n] = t, wt[n] = topk_weights[t * K + k];
                    memcpy(xs + n * D, x + t * D, sizeof(float) * (size_t)D);
                    n++;
                }
        if (n == 0) continue;
        m4_weight gate_up = m4_expert_weight(gu, e), down = m4_expert_weight(dn, e);
        m4_ref_linear(xs, n, &gate_up, h);
        for (int64_t i = 0; i < n; i++) {
            float *hi = h + i * 2 * F, *mi = hm + i * F;
            memcpy(mi, hi, sizeof(float) * (size_t)F);
            m4_ref_activation(mi, F, cfg->hidden_act);
            for (int64_t f = 0; f < F; f++) mi[f] = mi[f] * hi[F + f];
        }
        m4_ref_linear(hm, n, &down, y);
        for (int64_t i = 0; i < n; i++)
            for (int64_t d = 0; d < D; d++) out[tok[i] * D + d] += y[i * D + d] * wt[i];
    }
    free(tok), free(wt), free(xs), free(h), free(hm), free(y);
    return 0;
}

/* text.layers.{i}.mlp — Mistral4MoE.forward: experts(x, router(x)) + shared_experts(x), the
 * routed sum first, the shared expert added after; x [N, D] → out [N, D]. A dense layer
 * (i < first_k_dense_replace) is Mistral4MLP: down(act(gate(x)) ⊙ up(x)). */
int m4_ref_mlp(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *x, int64_t N,
               float *out, m4_error *err) {
    const int64_t D = cfg->hidden_size, E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    if (!w->moe) {
        if (!w->gate_proj.data || !w->up_proj.data || !w->down_proj.data)
            return m4_fail(err, "mlp: dense MLP weights are missing");
        return m4_ref_swiglu_mlp(x, N, &w->gate_proj, &w->up_proj, &w->down_proj, cfg->hidden_act, out, err);
    }
    float *logits = malloc(sizeof(float) * (size_t)(N * E));
    int64_t *ids = malloc(sizeof(int64_t) * (size_t)(N * K));
    float *wts = malloc(sizeof(float) * (size_t)(N * K));
    float *shared = malloc(sizeof(float) * (size_t)(N * D));
    int rc = -1;
    if (!logits || !ids || !wts || !shared) {
        m4_fail(err, "mlp: out of memory for %lld tokens", (long long)N);
        goto done;
    }
    if (m4_ref_router(cfg, w, x, N, logits, ids, wts, err)) goto done;
    if (m4_ref_experts(cfg, w, x, N, ids, wts, out, err)) goto done;
    if (cfg->n_shared_experts > 0) {
        if (!w->shared_gate_proj.data || !w->shared_up_proj.data || !w->shared_down_proj.data) {
            m4_fail(err, "mlp.shared_experts: weights are missing");
            goto done;
        }
        if (m4_ref_swiglu_mlp(x, N, &w->shared_gate_proj, &w->shared_up_proj, &w->shared_down_proj,
                              cfg->hidden_act, shared, err))
            goto done;
        for (int64_t i = 0; i < N * D; i++) out[i] = out[i] + shared[i];
    }
    rc = 0;
done:
    free(logits), free(ids), free(wts), free(shared);
    return rc;
}
