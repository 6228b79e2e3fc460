/* mla.c — text.layers.{i}.self_attn: Mistral4Attention (multi-head latent attention), in its two
 * forms (MODEL.md §2.5, §6.1):
 *
 *   expanded (HF's eager forward, m4_ref_mla): kv_b_proj expands every key position's latent c_kv
 *     into per-head [k_nope | v]; attention over keys [k_nope | k_rope] and values v.
 *   absorbed (the cached decode, m4_ref_mla_cached): kv_b's key half is folded into the query
 *     (q_lat = W_UKᵀ q_nope, per head) and its value half applied after the attention
 *     (o = W_UV · Σ_j p_j c_kv_j), so the attention runs over the cached latents [c_kv | k_rope]
 *     themselves and nothing is re-expanded per step — what DeepSeek's and our GPU decode do.
 *
 * The same math in exact arithmetic; in float32 the sums are grouped differently (checked against
 * each other and against HF in tests/test_reference_units.c and tests/test_generate.c). Both start
 * from mla_project (the projections, RoPE and the Llama-4 scale) and end with o_proj; the cache and
 * the trace are written beside the math, not inside it. */
#include "reference.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Mistral4Attention.scaling — qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)² under the
 * HF ≥ PR #47435 rule when the rope type is not "default" and mscale_all_dim is non-zero
 * (yarn_apply_mscale; Python doubles, cast to float32 where torch multiplies the scores). */
float m4_ref_mla_softmax_scale(const m4_text_config *cfg, m4_softmax_scale_rule rule) {
    double scale = pow((double)cfg->qk_head_dim, -0.5);
    const m4_rope_config *r = &cfg->rope;
    if (rule == M4_SOFTMAX_SCALE_MSCALE2 && r->type != M4_ROPE_DEFAULT && r->has_mscale_all_dim &&
        r->mscale_all_dim != 0) {
        double m = r->factor <= 1.0 ? 1.0 : 0.1 * r->mscale_all_dim * log(r->factor) + 1.0;
        scale = scale * m * m;
    }
    return (float)scale;
}

static int check_shape(const m4_weight *w, int64_t rows, int64_t cols, const char *what, m4_error *err) {
    if (!w->data) return m4_fail(err, "self_attn: %s weight is missing", what);
    if (w->rows != rows || w->cols != cols)
        return m4_fail(err, "self_attn: %s is [%lld, %lld], the config implies [%lld, %lld]", what,
                       (long long)w->rows, (long long)w->cols, (long long)rows, (long long)cols);
    return 0;
}

static int check_weights(const m4_text_config *c, const m4_text_layer_weights *w, m4_error *err) {
    const int64_t D = c->hidden_size, H = c->num_attention_heads, dq = c->qk_head_dim;
    const int64_t dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
    const int64_t Rq = c->q_lora_rank, Rkv = c->kv_lora_rank;
    if (D <= 0 || H <= 0 || dr <= 0 || dr % 2 || dn < 0 || dv <= 0 || Rkv <= 0 || dq != dn + dr)
        return m4_fail(err, "self_attn: bad dims (hidden %lld, heads %lld, nope %lld, rope %lld, "
                            "qk_head %lld, v %lld, kv_lora %lld)", (long long)D, (long long)H,
                       (long long)dn, (long long)dr, (long long)dq, (long long)dv, (long long)Rkv);
    if (c->num_key_value_heads != H)
        return m4_fail(err, "self_attn: num_key_value_heads %lld != num_attention_heads %lld (MLA "
                            "expands keys to every head)", (long long)c->num_key_value_heads,
                       (long long)H);
    if (Rq > 0) {
        if (check_shape(&w->q_a_proj, Rq, D, "q_a_proj", err) ||
            check_shape(&w->q_a_layernorm, 1, Rq, "q_a_layernorm", err) ||
            check_shape(&w->q_b_proj, H * dq, Rq, "q_b_proj", err))
            return -1;
    } else if (check_shape(&w->q_proj, H * dq, D, "q_proj", err)) {
        return -1;
    }
    if (check_shape(&w->kv_a_proj_with_mqa, Rkv + dr, D, "kv_a_proj_with_mqa", err) ||
        check_shape(&w->kv_a_layernorm, 1, Rkv, "kv_a_layernorm", err) ||
        check_shape(&w->kv_b_proj, H * (dn + dv), Rkv, "kv_b_proj", err) ||
        check_shape(&w->o_proj, D, H * dv, "o_proj", err))
        return -1;
    return 0;
}

/* What both forms compute from x [B, S, D] (steps 1–4, and the query of step 6): one allocation,
 * carved like llama2.c's RunState. */
typedef struct {
    float *qa, *qa_norm; /* [N, Rq] q_a_proj output, after q_a_layernorm (q_lora_rank > 0) */
    float *q;            /* [N, H·dq] q_b_proj (or q_proj) output, before RoPE */
    float *kva;          /* [N, Rkv + dr] kv_a_proj_with_mqa output: [latent | k_pe] */
    float *ckv;          /* [N, Rkv] c_kv = kv_a_layernorm(latent) */
    float *k_rope;       /* [N, dr] k_pe rotated: the key part every head shares */
    float *l4;           /* [N] the Llama-4 query scale of each position */
    float *Q;            /* [B, H, S, dq] queries: [q_nope | rope(q_pe)] · l4 */
    float *mem;
} mla_projections;

/* The key positions' latents: position j of row b is c_kv + (b·stride + j)·Rkv and
 * k_rope + (b·stride + j)·dr (the call's own tokens, stride S; or the cache, stride capacity). */
typedef struct {
    const float *c_kv, *k_rope;
    int64_t stride;
} mla_keys;

/* Steps 1–4 and the query of step 6. position_ids [B, S] (NULL: past + arange(S) per row). */
static int mla_project(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *x, int64_t B,
                       int64_t S, const int64_t *position_ids, int64_t past, mla_projections *p, m4_error *err) {
    const int64_t N = B * S, H = cfg->num_attention_heads;
    const int64_t dn = cfg->qk_nope_head_dim, dr = cfg->qk_rope_head_dim, dq = cfg->qk_head_dim;
    const int64_t Rq = cfg->q_lora_rank, Rkv = cfg->kv_lora_rank, half = dr / 2, kva_w = Rkv + dr;
    const size_t floats = (size_t)(half + N * (Rq > 0 ? 2 * Rq : 0) + N * H * dq + N * kva_w + N * Rkv + N * dr +
                                   2 * N * half + N + N * H * dq);
    float *mem = malloc(sizeof(float) * floats);
    int64_t *pos = position_ids ? NULL : malloc(sizeof(int64_t) * (size_t)N);
    if (!mem || (!position_ids && !pos)) {
        free(mem), free(pos);
        return m4_fail(err, "self_attn: out of memory (%zu floats)", floats);
    }
    float *m = mem;
    float *inv_freq = m;  m += half;                    /* [dr/2] */
    p->qa = m;            m += Rq > 0 ? N * Rq : 0;
    p->qa_norm = m;       m += Rq > 0 ? N * Rq : 0;
    p->q = m;             m += N * H * dq;
    p->kva = m;           m += N * kva_w;
    p->ckv = m;           m += N * Rkv;
    p->k_rope = m;        m += N * dr;
    float *cos_t = m;     m += N * half;                /* [N, dr/2] */
    float *sin_t = m;     m += N * half;                /* [N, dr/2] */
    p->l4 = m;            m += N;
    p->Q = m;             m += N * H * dq;
    p->mem = mem;
    if (!position_ids) {                                /* HF default: past + arange(S) per row */
        for (int64_t t = 0; t < N; t++) pos[t] = past + t % S;
        position_ids = pos;
    }
    float attention_factor;
    if (m4_ref_rope_inv_freq(cfg, inv_freq, &attention_factor, err)) {
        free(pos), free(mem);
        return -1;
    }

    /* 1. queries: q_b_proj(q_a_layernorm(q_a_proj(x))) or q_proj(x) */
    if (Rq > 0) {
        m4_ref_linear(x, N, &w->q_a_proj, p->qa);
        m4_ref_rmsnorm(p->qa, N, Rq, &w->q_a_layernorm, M4_MLA_NORM_EPS, p->qa_norm);
        m4_ref_linear(p->qa_norm, N, &w->q_b_proj, p->q);
    } else {
        m4_ref_linear(x, N, &w->q_proj, p->q);
    }
    /* 2–3. compressed kv = [latent | k_pe]; c_kv = kv_a_layernorm(latent) */
    m4_ref_linear(x, N, &w->kv_a_proj_with_mqa, p->kva);
    for (int64_t t = 0; t < N; t++)
        m4_ref_rmsnorm(p->kva + t * kva_w, 1, Rkv, &w->kv_a_layernorm, M4_MLA_NORM_EPS, p->ckv + t * Rkv);

    /* 4. RoPE on the shared key part (the query part per head below) */
    m4_ref_rope_cos_sin(inv_freq, half, attention_factor, position_ids, N, cos_t, sin_t);
    for (int64_t t = 0; t < N; t++)
        m4_ref_apply_rope(p->kva + t * kva_w + Rkv, p->k_rope + t * dr, dr, cos_t + t * half, sin_t + t * half,
                          cfg->rope_interleave);

    /* 6 (the query). query = [q_nope | rope(q_pe)] · llama4_scale(p) */
    const m4_rope_config *r = &cfg->rope;
    for (int64_t t = 0; t < N; t++)
        p->l4[t] = r->has_llama_4_scaling_beta
                       ? m4_ref_llama4_scale(position_ids[t], (float)r->llama_4_scaling_beta,
                                             r->original_max_position_embeddings)
                       : 1.0f;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t s = 0; s < S; s++) {
                const int64_t t = b * S + s;
                float *Qv = p->Q + ((b * H + h) * S + s) * dq;
                const float *qh = p->q + t * H * dq + h * dq;
                memcpy(Qv, qh, sizeof(float) * (size_t)dn);
                m4_ref_apply_rope(qh + dn, Qv + dn, dr, cos_t + t * half, sin_t + t * half, cfg->rope_interleave);
                for (int64_t d = 0; d < dq; d++) Qv[d] = Qv[d] * p->l4[t];
            }
    free(pos);
    return 0;
}

/* 7. The mask on one query's scores z [T], then softmax: query i of the call (key index past + i)
 * may see key j when j ≤ past + i and mask_row[j] ≠ 0 (mask_row NULL: every key); a disallowed
 * score gets finfo(float32).min added, exactly as HF's eager mask does (so a fully masked row —
 * left padding — softmaxes to uniform weights over all T keys). */
static void masked_softmax(float *z, int64_t T, int64_t causal_end, const int64_t *mask_row) {
    for (int64_t j = 0; j < T; j++) {
        const int allowed = j <= causal_end && (!mask_row || mask_row[j] != 0);
        z[j] = z[j] + (allowed ? 0.0f : -FLT_MAX);
    }
    m4_ref_softmax(z, T);
}

/* 5–8, the expanded form (HF's): kv_b_proj(c_kv) = per head [k_nope | v] for every key position;
 * z = (Q·Kᵀ)·scale + mask, P = softmax(z), attn = P·v. attn [N, H·dv]; probs [B, H, S, T] when
 * non-NULL (else one score row per (b, h) of scratch); kvb [B·T, H·(dn+dv)] and K [B, H, T, dq]
 * are the caller's, for the trace. */
static void mla_attend_expanded(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *Q,
                                mla_keys keys, int64_t B, int64_t S, int64_t past, const int64_t *attention_mask,
                                float softmax_scale, float *kvb, float *K, float *scores, float *probs, float *attn) {
    const int64_t H = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim, dr = cfg->qk_rope_head_dim;
    const int64_t dq = cfg->qk_head_dim, dv = cfg->v_head_dim, Rkv = cfg->kv_lora_rank, kvb_w = dn + dv;
    const int64_t T = past + S;
    /* 5. keys and values for every head and key position */
    if (keys.stride == T)
        m4_ref_linear(keys.c_kv, B * T, &w->kv_b_proj, kvb);
    else
        for (int64_t b = 0; b < B; b++)
            m4_ref_linear(keys.c_kv + b * keys.stride * Rkv, T, &w->kv_b_proj, kvb + b * T * H * kvb_w);
    /* 6 (the key). key = [k_nope | k_rope] */
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t j = 0; j < T; j++) {
                float *Kv = K + ((b * H + h) * T + j) * dq;
                memcpy(Kv, kvb + (b * T + j) * H * kvb_w + h * kvb_w, sizeof(float) * (size_t)dn);
                memcpy(Kv + dn, keys.k_rope + (b * keys.stride + j) * dr, sizeof(float) * (size_t)dr);
            }
    /* 7–8. per (batch, head): z = (q·kᵀ)·scale + mask, P = softmax(z), o = P·v */
#pragma omp parallel for schedule(static) if (B * H * S * T * (dq + dv) >= (1 << 18))
    for (int64_t bh = 0; bh < B * H; bh++) {
        const int64_t b = bh / H, h = bh % H;
        for (int64_t i = 0; i < S; i++) {
            float *z = probs ? probs + (bh * S + i) * T : scores + bh * T;     /* [T] */
            const float *qi = Q + (bh * S + i) * dq;
            for (int64_t j = 0; j < T; j++) z[j] = m4_ref_dot(qi, K + (bh * T + j) * dq, dq) * softmax_scale;
            masked_softmax(z, T, past + i, attention_mask ? attention_mask + b * T : NULL);
            float *o = attn + (b * S + i) * H * dv + h * dv;                  /* [dv] */
            for (int64_t d = 0; d < dv; d++) o[d] = 0.0f;
            for (int64_t j = 0; j < T; j++) {
                const float *v = kvb + (b * T + j) * H * kvb_w + h * kvb_w + dn;
                for (int64_t d = 0; d < dv; d++) o[d] += z[j] * v[d];
            }
        }
    }
}

/* 5–8, the absorbed form: kv_b_proj's rows of head h are W_UK [dn, Rkv] (the key half) and
 * W_UV [dv, Rkv] (the value half). Per query: q_lat = W_UKᵀ q_nope [Rkv];
 * z_j = (q_lat·c_kv_j + q_pe·k_rope_j)·scale + mask, P = softmax(z), o_lat = Σ_j P_j c_kv_j [Rkv],
 * o = W_UV · o_lat [dv]. kv_b [H·(dn+dv), Rkv] is read once, dequantised to float32. */
static int mla_attend_absorbed(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *Q,
                               mla_keys keys, int64_t B, int64_t S, int64_t past, const int64_t *attention_mask,
                               float softmax_scale, float *attn, m4_error *err) {
    const int64_t H = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim, dr = cfg->qk_rope_head_dim;
    const int64_t dq = cfg->qk_head_dim, dv = cfg->v_head_dim, Rkv = cfg->kv_lora_rank, kvb_w = dn + dv;
    const int64_t T = past + S;
    /* kv_b [H·(dn+dv), Rkv], then per (b, h): q_lat [Rkv], o_lat [Rkv], z [T] */
    const size_t floats = (size_t)(H * kvb_w * Rkv + B * H * (2 * Rkv + T));
    float *mem = malloc(sizeof(float) * floats);
    if (!mem) return m4_fail(err, "self_attn: out of memory (%zu floats)", floats);
    float *kv_b = mem;
    for (int64_t r = 0; r < H * kvb_w; r++) m4_weight_row_f32(&w->kv_b_proj, r, kv_b + r * Rkv);
#pragma omp parallel for schedule(static) if (B * H * S * T * (Rkv + dr) >= (1 << 18))
    for (int64_t bh = 0; bh < B * H; bh++) {
        const int64_t b = bh / H, h = bh % H;
        float *q_lat = mem + H * kvb_w * Rkv + bh * (2 * Rkv + T);
        float *o_lat = q_lat + Rkv, *z = o_lat + Rkv;
        const float *W_UK = kv_b + h * kvb_w * Rkv, *W_UV = W_UK + dn * Rkv;   /* [dn, Rkv], [dv, Rkv] */
        for (int64_t i = 0; i < S; i++) {
            const float *qi = Q + (bh * S + i) * dq;                            /* [q_nope | q_pe] */
            for (int64_t r = 0; r < Rkv; r++) q_lat[r] = 0.0f;
            for (int64_t d = 0; d < dn; d++)
                for (int64_t r = 0; r < Rkv; r++) q_lat[r] += qi[d] * W_UK[d * Rkv + r];
            for (int64_t j = 0; j < T; j++) {
                const int64_t key = b * keys.stride + j;
                z[j] = (m4_ref_dot(q_lat, keys.c_kv + key * Rkv, Rkv) + m4_ref_dot(qi + dn, keys.k_rope + key * dr, dr)) *
                       softmax_scale;
            }
            masked_softmax(z, T, past + i, attention_mask ? attention_mask + b * T : NULL);
            for (int64_t r = 0; r < Rkv; r++) o_lat[r] = 0.0f;
            for (int64_t j = 0; j < T; j++) {
                const float *c = keys.c_kv + (b * keys.stride + j) * Rkv;
                for (int64_t r = 0; r < Rkv; r++) o_lat[r] += z[j] * c[r];
            }
            float *o = attn + (b * S + i) * H * dv + h * dv;                    /* [dv] */
            for (int64_t e = 0; e < dv; e++) o[e] = m4_ref_dot(W_UV + e * Rkv, o_lat, Rkv);
        }
    }
    free(mem);
    return 0;
}

/* Mistral4Attention.forward (eager, no cache): HF's expanded form over the S new tokens. */
int m4_ref_mla(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *x, int64_t B,
               int64_t S, const int64_t *position_ids, const int64_t *attention_mask,
               float softmax_scale, float *out, m4_mla_trace *trace, m4_error *err) {
    if (B <= 0 || S <= 0) return m4_fail(err, "self_attn: empty input (B %lld, S %lld)", (long long)B, (long long)S);
    if (check_weights(cfg, w, err)) return -1;
    const int64_t N = B * S, H = cfg->num_attention_heads, dq = cfg->qk_head_dim, dv = cfg->v_head_dim;
    const int64_t Rq = cfg->q_lora_rank, Rkv = cfg->kv_lora_rank, dr = cfg->qk_rope_head_dim;
    const int64_t kvb_w = cfg->qk_nope_head_dim + dv;
    mla_projections p;
    if (mla_project(cfg, w, x, B, S, position_ids, 0, &p, err)) return -1;
    const size_t floats = (size_t)(N * H * kvb_w + N * H * dq + B * H * S + N * H * dv);
    float *mem = malloc(sizeof(float) * floats);
    if (!mem) {
        free(p.mem);
        return m4_fail(err, "self_attn: out of memory (%zu floats)", floats);
    }
    float *kvb = mem;                       /* [B·S, H·(dn+dv)] */
    float *K = kvb + N * H * kvb_w;         /* [B, H, S, dq] */
    float *scores = K + N * H * dq;         /* [B·H, S] */
    float *attn = scores + B * H * S;       /* [N, H·dv] */
    const mla_keys own = {p.ckv, p.k_rope, S};
    mla_attend_expanded(cfg, w, p.Q, own, B, S, 0, attention_mask, softmax_scale, kvb, K, scores,
                        trace ? trace->attn_weights : NULL, attn);
    m4_ref_linear(attn, N, &w->o_proj, out);                                 /* 9. o_proj */

    if (trace) {
        if (trace->q_a && Rq > 0) memcpy(trace->q_a, p.qa, sizeof(float) * (size_t)(N * Rq));
        if (trace->q) memcpy(trace->q, p.q, sizeof(float) * (size_t)(N * H * dq));
        if (trace->kv_a) memcpy(trace->kv_a, p.kva, sizeof(float) * (size_t)(N * (Rkv + dr)));
        if (trace->c_kv) memcpy(trace->c_kv, p.ckv, sizeof(float) * (size_t)(N * Rkv));
        if (trace->kv_b) memcpy(trace->kv_b, kvb, sizeof(float) * (size_t)(N * H * kvb_w));
        if (trace->q_rot) memcpy(trace->q_rot, p.Q, sizeof(float) * (size_t)(N * H * dq));
        if (trace->k_rot) memcpy(trace->k_rot, K, sizeof(float) * (size_t)(N * H * dq));
        if (trace->llama4_scale) memcpy(trace->llama4_scale, p.l4, sizeof(float) * (size_t)N);
        if (trace->attn_output) memcpy(trace->attn_output, attn, sizeof(float) * (size_t)(N * H * dv));
        if (trace->v)
            for (int64_t b = 0; b < B; b++)
                for (int64_t h = 0; h < H; h++)
                    for (int64_t j = 0; j < S; j++)
                        memcpy(trace->v + ((b * H + h) * S + j) * dv, kvb + (b * S + j) * H * kvb_w + h * kvb_w + kvb_w - dv,
                               sizeof(float) * (size_t)dv);
    }
    free(mem), free(p.mem);
    return 0;
}

static int check_cache(const m4_text_config *c, const m4_kv_cache *cache, int64_t B, int64_t S,
                       int64_t layer, m4_error *err) {
    if (cache->kv_lora_rank != c->kv_lora_rank || cache->rope_dim != c->qk_rope_head_dim)
        return m4_fail(err, "self_attn: the kv cache holds [%lld | %lld] per token, the config "
                            "[%lld | %lld]", (long long)cache->kv_lora_rank, (long long)cache->rope_dim,
                       (long long)c->kv_lora_rank, (long long)c->qk_rope_head_dim);
    if (layer < 0 || layer >= cache->layers)
        return m4_fail(err, "self_attn: layer %lld outside the kv cache's %lld layers",
                       (long long)layer, (long long)cache->layers);
    if (cache->batch != B)
        return m4_fail(err, "self_attn: the kv cache has %lld rows, the input %lld",
                       (long long)cache->batch, (long long)B);
    if (cache->length + S > cache->capacity)
        return m4_fail(err, "self_attn: the kv cache is full: %lld cached + %lld new positions > "
                            "capacity %lld", (long long)cache->length, (long long)S,
                       (long long)cache->capacity);
    return 0;
}

/* HF's past_key_values.update: the S new tokens' c_kv and rotated k_rope at [length, length + S)
 * of every row of the layer. */
static void cache_append(m4_kv_cache *cache, int64_t layer, int64_t B, int64_t S, const float *ckv,
                         const float *k_rope) {
    const int64_t Rkv = cache->kv_lora_rank, dr = cache->rope_dim;
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0; s < S; s++) {
            memcpy(m4_kv_cache_c_kv(cache, layer, b, cache->length + s), ckv + (b * S + s) * Rkv,
                   sizeof(float) * (size_t)Rkv);
            memcpy(m4_kv_cache_k_rope(cache, layer, b, cache->length + s), k_rope + (b * S + s) * dr,
                   sizeof(float) * (size_t)dr);
        }
}

/* Mistral4Attention.forward with a cache, in the absorbed form: the S new tokens' latents are
 * appended, then they attend over every cached position (T = length + S). */
int m4_ref_mla_cached(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *x,
                      int64_t B, int64_t S, const int64_t *position_ids,
                      const int64_t *attention_mask, float softmax_scale, m4_kv_cache *cache,
                      int64_t layer, float *out, m4_error *err) {
    if (!cache) return m4_ref_mla(cfg, w, x, B, S, position_ids, attention_mask, softmax_scale, out, NULL, err);
    if (B <= 0 || S <= 0) return m4_fail(err, "self_attn: empty input (B %lld, S %lld)", (long long)B, (long long)S);
    if (check_weights(cfg, w, err) || check_cache(cfg, cache, B, S, layer, err)) return -1;
    const int64_t N = B * S, H = cfg->num_attention_heads, dv = cfg->v_head_dim;
    mla_projections p;
    if (mla_project(cfg, w, x, B, S, position_ids, cache->length, &p, err)) return -1;
    float *attn = malloc(sizeof(float) * (size_t)(N * H * dv));             /* [N, H·dv] */
    int rc = attn ? 0 : m4_fail(err, "self_attn: out of memory for %lld tokens", (long long)N);
    if (rc == 0) {
        cache_append(cache, layer, B, S, p.ckv, p.k_rope);
        const mla_keys cached = {m4_kv_cache_c_kv(cache, layer, 0, 0), m4_kv_cache_k_rope(cache, layer, 0, 0),
                                 cache->capacity};
        rc = mla_attend_absorbed(cfg, w, p.Q, cached, B, S, cache->length, attention_mask, softmax_scale, attn, err);
    }
    if (rc == 0) m4_ref_linear(attn, N, &w->o_proj, out);                    /* 9. o_proj */
    free(attn), free(p.mem);
    return rc;
}
