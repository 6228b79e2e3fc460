/* mla.c — text.layers.{i}.self_attn: Mistral4Attention (multi-head latent attention) in HF's
 * eager form, with or without a cache (MODEL.md §2.5, §6.1). One function does both: without a
 * cache the keys are the S new tokens; with one they are the cached positions followed by the
 * new ones, whose latents the call appends. */
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

/* Mistral4Attention.forward (eager, no cache): the cache-less case of m4_ref_mla_cached. */
int m4_ref_mla(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *x, int64_t B,
               int64_t S, const int64_t *position_ids, const int64_t *attention_mask,
               float softmax_scale, float *out, m4_mla_trace *trace, m4_error *err) {
    return m4_ref_mla_cached(cfg, w, x, B, S, position_ids, attention_mask, softmax_scale, NULL, 0,
                             out, trace, err);
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

/* Mistral4Attention.forward (eager), x [B, S, D] (already input_layernorm'ed) → out [B, S, D],
 * keys at T = past + S positions: the cache's `past` earlier ones (none without a cache), then
 * the S new tokens. New token s sits at key index past + s: it attends causally by index, and
 * only to keys whose attention_mask [B, T] is 1; a disallowed score gets finfo(float32).min
 * added, exactly as HF's eager mask does (so a fully masked query row — left padding —
 * softmaxes to uniform weights). */
int m4_ref_mla_cached(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *x,
                      int64_t B, int64_t S, const int64_t *position_ids,
                      const int64_t *attention_mask, float softmax_scale, m4_kv_cache *cache,
                      int64_t layer, float *out, m4_mla_trace *trace, m4_error *err) {
    if (B <= 0 || S <= 0) return m4_fail(err, "self_attn: empty input (B %lld, S %lld)", (long long)B, (long long)S);
    if (check_weights(cfg, w, err)) return -1;
    if (cache && check_cache(cfg, cache, B, S, layer, err)) return -1;
    const int64_t N = B * S, H = cfg->num_attention_heads;
    const int64_t dn = cfg->qk_nope_head_dim, dr = cfg->qk_rope_head_dim, dq = cfg->qk_head_dim;
    const int64_t dv = cfg->v_head_dim, Rq = cfg->q_lora_rank, Rkv = cfg->kv_lora_rank;
    const int64_t half = dr / 2, kva_w = Rkv + dr, kvb_w = dn + dv; /* kv_a row, kv_b per head */
    const int64_t past = cache ? cache->length : 0, T = past + S;   /* cached, all key positions */
    const int interleave = cfg->rope_interleave;

    /* One allocation, carved like llama2.c's RunState. */
    const size_t floats = (size_t)(half + N * (Rq > 0 ? 2 * Rq : 0) + N * H * dq + N * kva_w + N * Rkv +
                                   B * T * H * kvb_w + 2 * N * half + N + N * H * dq + B * T * H * dq +
                                   N * dr + B * H * T + N * H * dv);
    float *mem = malloc(sizeof(float) * floats);
    if (!mem) return m4_fail(err, "self_attn: out of memory (%zu floats)", floats);
    float *p = mem;
    float *inv_freq = p;  p += half;                   /* [dr/2] */
    float *qa = p;        p += Rq > 0 ? N * Rq : 0;    /* [N, Rq] q_a_proj output */
    float *qa_norm = p;   p += Rq > 0 ? N * Rq : 0;    /* [N, Rq] after q_a_layernorm */
    float *q = p;         p += N * H * dq;             /* [N, H·dq] before RoPE */
    float *kva = p;       p += N * kva_w;              /* [N, Rkv + dr] */
    float *ckv = p;       p += N * Rkv;                /* [N, Rkv] after kv_a_layernorm */
    float *kvb = p;       p += B * T * H * kvb_w;      /* [B, T, H·(dn + dv)] every key position */
    float *cos_t = p;     p += N * half;               /* [N, dr/2] */
    float *sin_t = p;     p += N * half;               /* [N, dr/2] */
    float *l4 = p;        p += N;                      /* [N] Llama-4 query scale */
    float *Q = p;         p += N * H * dq;             /* [B, H, S, dq] */
    float *K = p;         p += B * T * H * dq;         /* [B, H, T, dq] */
    float *k_rope = p;    p += N * dr;                 /* [N, dr] rotated shared key part */
    float *scores = p;    p += B * H * T;              /* [B·H, T]: one score row per (b, h) */
    float *attn = p;      p += N * H * dv;             /* [N, H·dv] */
    int64_t *pos = NULL;

    float attention_factor;
    if (m4_ref_rope_inv_freq(cfg, inv_freq, &attention_factor, err)) goto fail;
    if (!position_ids) {                               /* HF default: past + arange(S) per row */
        pos = malloc(sizeof(int64_t) * (size_t)N);
        if (!pos) { m4_fail(err, "self_attn: out of memory"); goto fail; }
        for (int64_t t = 0; t < N; t++) pos[t] = past + t % S;
        position_ids = pos;
    }

    /* 1. queries: q_b_proj(q_a_layernorm(q_a_proj(x))) or q_proj(x) */
    if (Rq > 0) {
        m4_ref_linear(x, N, &w->q_a_proj, qa);
        m4_ref_rmsnorm(qa, N, Rq, &w->q_a_layernorm, 1e-6f, qa_norm);
        m4_ref_linear(qa_norm, N, &w->q_b_proj, q);
    } else {
        m4_ref_linear(x, N, &w->q_proj, q);
    }
    /* 2–3. compressed kv = [latent | k_rope]; c_kv = kv_a_layernorm(latent) */
    m4_ref_linear(x, N, &w->kv_a_proj_with_mqa, kva);
    for (int64_t t = 0; t < N; t++)
        m4_ref_rmsnorm(kva + t * kva_w, 1, Rkv, &w->kv_a_layernorm, 1e-6f, ckv + t * Rkv);

    /* 4. RoPE on the shared key part; the query part is rotated per head below */
    m4_ref_rope_cos_sin(inv_freq, half, attention_factor, position_ids, N, cos_t, sin_t);
    for (int64_t t = 0; t < N; t++)
        m4_ref_apply_rope(kva + t * kva_w + Rkv, k_rope + t * dr, dr, cos_t + t * half,
                          sin_t + t * half, interleave);

    /* The key positions' latents: the new tokens' own, or the cache after appending them
     * (HF: past_key_values.update(c_kv, k_rope) returns every cached position). key_ckv(b, j)
     * and key_rope(b, j) are position j of row b; rows are `stride` positions apart. */
    const float *key_ckv = ckv, *key_rope = k_rope;
    int64_t stride = S;
    if (cache) {
        for (int64_t b = 0; b < B; b++)
            for (int64_t s = 0; s < S; s++) {
                memcpy(m4_kv_cache_c_kv(cache, layer, b, past + s), ckv + (b * S + s) * Rkv,
                       sizeof(float) * (size_t)Rkv);
                memcpy(m4_kv_cache_k_rope(cache, layer, b, past + s), k_rope + (b * S + s) * dr,
                       sizeof(float) * (size_t)dr);
            }
        key_ckv = m4_kv_cache_c_kv(cache, layer, 0, 0);
        key_rope = m4_kv_cache_k_rope(cache, layer, 0, 0);
        stride = cache->capacity;
    }

    /* 5. keys and values for every head and key position: kv_b_proj(c_kv) = per head [k_nope | v]
     * (a cache's latents are re-expanded at every call, as HF does) */
    if (stride == T)
        m4_ref_linear(key_ckv, B * T, &w->kv_b_proj, kvb);
    else
        for (int64_t b = 0; b < B; b++)
            m4_ref_linear(key_ckv + b * stride * Rkv, T, &w->kv_b_proj, kvb + b * T * H * kvb_w);

    /* 6. query = [q_nope | rope(q_rope)] · llama4_scale(p); key = [k_nope | k_rope] */
    const m4_rope_config *r = &cfg->rope;
    for (int64_t t = 0; t < N; t++)
        l4[t] = r->has_llama_4_scaling_beta
                    ? m4_ref_llama4_scale(position_ids[t], (float)r->llama_4_scaling_beta,
                                          r->original_max_position_embeddings)
                    : 1.0f;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            for (int64_t s = 0; s < S; s++) {
                const int64_t t = b * S + s;
                float *Qv = Q + ((b * H + h) * S + s) * dq;
                const float *qh = q + t * H * dq + h * dq;
                memcpy(Qv, qh, sizeof(float) * (size_t)dn);
                m4_ref_apply_rope(qh + dn, Qv + dn, dr, cos_t + t * half, sin_t + t * half, interleave);
                for (int64_t d = 0; d < dq; d++) Qv[d] = Qv[d] * l4[t];
            }
            for (int64_t j = 0; j < T; j++) {
                float *Kv = K + ((b * H + h) * T + j) * dq;
                memcpy(Kv, kvb + (b * T + j) * H * kvb_w + h * kvb_w, sizeof(float) * (size_t)dn);
                memcpy(Kv + dn, key_rope + (b * stride + j) * dr, sizeof(float) * (size_t)dr);
            }
        }

    /* 7–8. per (batch, head): z = (q·kᵀ)·scale + mask, P = softmax(z), o = P·v */
    float *probs = trace && trace->attn_weights ? trace->attn_weights : scores;
    const int keep_all_rows = trace && trace->attn_weights;
#pragma omp parallel for schedule(static) if (B * H * S * T * (dq + dv) >= (1 << 18))
    for (int64_t bh = 0; bh < B * H; bh++) {
        const int64_t b = bh / H, h = bh % H;
        for (int64_t i = 0; i < S; i++) {
            float *z = keep_all_rows ? probs + (bh * S + i) * T : probs + bh * T;   /* [T] */
            const float *qi = Q + (bh * S + i) * dq;
            for (int64_t j = 0; j < T; j++) {
                int allowed = j <= past + i && (!attention_mask || attention_mask[b * T + j] != 0);
                z[j] = m4_ref_dot(qi, K + (bh * T + j) * dq, dq) * softmax_scale;
                z[j] = z[j] + (allowed ? 0.0f : -FLT_MAX);
            }
            m4_ref_softmax(z, T);
            float *o = attn + (b * S + i) * H * dv + h * dv;                       /* [dv] */
            for (int64_t d = 0; d < dv; d++) o[d] = 0.0f;
            for (int64_t j = 0; j < T; j++) {
                const float *v = kvb + (b * T + j) * H * kvb_w + h * kvb_w + dn;
                for (int64_t d = 0; d < dv; d++) o[d] += z[j] * v[d];
            }
        }
    }

    /* 9. o_proj */
    m4_ref_linear(attn, N, &w->o_proj, out);

    if (trace) {
        if (trace->q_a && Rq > 0) memcpy(trace->q_a, qa, sizeof(float) * (size_t)(N * Rq));
        if (trace->q) memcpy(trace->q, q, sizeof(float) * (size_t)(N * H * dq));
        if (trace->kv_a) memcpy(trace->kv_a, kva, sizeof(float) * (size_t)(N * kva_w));
        if (trace->c_kv) memcpy(trace->c_kv, ckv, sizeof(float) * (size_t)(N * Rkv));
        if (trace->kv_b) memcpy(trace->kv_b, kvb, sizeof(float) * (size_t)(B * T * H * kvb_w));
        if (trace->q_rot) memcpy(trace->q_rot, Q, sizeof(float) * (size_t)(N * H * dq));
        if (trace->k_rot) memcpy(trace->k_rot, K, sizeof(float) * (size_t)(B * T * H * dq));
        if (trace->llama4_scale) memcpy(trace->llama4_scale, l4, sizeof(float) * (size_t)N);
        if (trace->attn_output) memcpy(trace->attn_output, attn, sizeof(float) * (size_t)(N * H * dv));
        if (trace->v)
            for (int64_t b = 0; b < B; b++)
                for (int64_t h = 0; h < H; h++)
                    for (int64_t j = 0; j < T; j++)
                        memcpy(trace->v + ((b * H + h) * T + j) * dv,
                               kvb + (b * T + j) * H * kvb_w + h * kvb_w + dn, sizeof(float) * (size_t)dv);
    }
    free(pos);
    free(mem);
    return 0;
fail:
    free(pos);
    free(mem);
    return -1;
}
