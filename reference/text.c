/* text.c — the text decoder: Mistral4DecoderLayer and Mistral4ForCausalLM.forward (embedding,
 * 36 pre-norm layers, final norm, lm_head) (MODEL.md §2.1, §2.3), with or without the MLA kv
 * cache (§6.1): the uncached functions are the cache-less case of the cached ones. */
#include "reference.h"

#include <stdlib.h>
#include <string.h>

/* text.layers.{i} — Mistral4DecoderLayer.forward without a cache. */
int m4_ref_decoder_layer(const m4_text_config *cfg, const m4_text_layer_weights *w, float *h,
                         int64_t B, int64_t S, const int64_t *position_ids,
                         const int64_t *attention_mask, float softmax_scale, m4_error *err) {
    return m4_ref_decoder_layer_cached(cfg, w, h, B, S, position_ids, attention_mask, softmax_scale,
                                       NULL, 0, err);
}

/* text.layers.{i} — Mistral4DecoderLayer.forward, h [B, S, D] in place:
 * h = h + self_attn(input_layernorm(h)); h = h + mlp(post_attention_layernorm(h)). The attention
 * reads and appends layer `layer` of the cache when there is one. */
int m4_ref_decoder_layer_cached(const m4_text_config *cfg, const m4_text_layer_weights *w, float *h,
                                int64_t B, int64_t S, const int64_t *position_ids,
                                const int64_t *attention_mask, float softmax_scale,
                                m4_kv_cache *cache, int64_t layer, m4_error *err) {
    const int64_t N = B * S, D = cfg->hidden_size;
    const float eps = (float)cfg->rms_norm_eps;
    if (w->input_layernorm.cols != D || w->post_attention_layernorm.cols != D)
        return m4_fail(err, "decoder layer: norm weights are [%lld] and [%lld], hidden_size is %lld",
                       (long long)w->input_layernorm.cols, (long long)w->post_attention_layernorm.cols,
                       (long long)D);
    float *normed = malloc(sizeof(float) * (size_t)(N * D));    /* [N, D] */
    float *delta = malloc(sizeof(float) * (size_t)(N * D));     /* [N, D] attention / mlp output */
    int rc = -1;
    if (!normed || !delta) {
        m4_fail(err, "decoder layer: out of memory for %lld tokens", (long long)N);
        goto done;
    }
    m4_ref_rmsnorm(h, N, D, &w->input_layernorm, eps, normed);
    if (m4_ref_mla_cached(cfg, w, normed, B, S, position_ids, attention_mask, softmax_scale, cache,
                          layer, delta, err))
        goto done;
    for (int64_t i = 0; i < N * D; i++) h[i] = h[i] + delta[i];
    m4_ref_rmsnorm(h, N, D, &w->post_attention_layernorm, eps, normed);
    if (m4_ref_mlp(cfg, w, normed, N, delta, err)) goto done;
    for (int64_t i = 0; i < N * D; i++) h[i] = h[i] + delta[i];
    rc = 0;
done:
    free(normed), free(delta);
    return rc;
}

/* model (text) — Mistral4ForCausalLM.forward without a cache. */
int m4_ref_text_forward(const m4_model *model, const int64_t *ids, const float *inputs_embeds,
                        int64_t B, int64_t S, const int64_t *position_ids,
                        const int64_t *attention_mask, int64_t keep,
                        m4_softmax_scale_rule scale_rule, float *logits, m4_error *err) {
    return m4_ref_text_forward_cached(model, ids, inputs_embeds, B, S, position_ids, attention_mask,
                                      keep, scale_rule, NULL, NULL, logits, err);
}

/* model (text) — Mistral4ForCausalLM.forward: ids [B, S] (or inputs_embeds [B, S, D]) →
 * logits [B, keep, V] of the last `keep` positions of each row (keep = 0: all S, as HF's
 * logits_to_keep = 0). With a cache the new tokens follow its `length` positions (position_ids
 * NULL: length + arange(S) per row; attention_mask [B, length + S]) and length grows by S. */
int m4_ref_text_forward_cached(const m4_model *model, const int64_t *ids,
                               const float *inputs_embeds, int64_t B, int64_t S,
                               const int64_t *position_ids, const int64_t *attention_mask,
                               int64_t keep, m4_softmax_scale_rule scale_rule, m4_kv_cache *cache,
                               const m4_progress *progress, float *logits, m4_error *err) {
    const m4_text_config *cfg = &model->config.text;
    const m4_weights *w = &model->weights;
    const int64_t N = B * S, D = cfg->hidden_size;
    if (B <= 0 || S <= 0) return m4_fail(err, "text forward: empty input (B %lld, S %lld)", (long long)B, (long long)S);
    if (keep < 0 || keep > S)
        return m4_fail(err, "text forward: keep = %lld must be in [0, S = %lld]", (long long)keep, (long long)S);
    if (keep == 0) keep = S;
    if (!inputs_embeds && !ids) return m4_fail(err, "text forward: neither ids nor inputs_embeds given");
    if (cache && cache->layers != cfg->num_hidden_layers)
        return m4_fail(err, "text forward: the kv cache has %lld layers, the model %lld",
                       (long long)cache->layers, (long long)cfg->num_hidden_layers);
    if (w->norm.cols != D || w->lm_head.cols != D)
        return m4_fail(err, "text forward: norm [%lld] / lm_head [%lld, %lld] do not match hidden_size %lld",
                       (long long)w->norm.cols, (long long)w->lm_head.rows, (long long)w->lm_head.cols,
                       (long long)D);

    float *h = malloc(sizeof(float) * (size_t)(N * D));         /* [B, S, D] residual stream */
    float *last = malloc(sizeof(float) * (size_t)(B * keep * D)); /* [B, keep, D] */
    int64_t *pos = NULL;
    int rc = -1;
    if (!h || !last) {
        m4_fail(err, "text forward: out of memory for %lld tokens", (long long)N);
        goto done;
    }
    if (!position_ids) {
        pos = malloc(sizeof(int64_t) * (size_t)N);
        if (!pos) { m4_fail(err, "text forward: out of memory"); goto done; }
        const int64_t past = cache ? cache->length : 0;
        for (int64_t t = 0; t < N; t++) pos[t] = past + t % S;
        position_ids = pos;
    }
    if (inputs_embeds) {
        memcpy(h, inputs_embeds, sizeof(float) * (size_t)(N * D));
    } else {
        if (w->embed_tokens.cols != D) {
            m4_fail(err, "text forward: embed_tokens has %lld columns, hidden_size is %lld",
                    (long long)w->embed_tokens.cols, (long long)D);
            goto done;
        }
        if (m4_ref_embed_tokens(&w->embed_tokens, ids, N, h, err)) goto done;
    }

    const float scale = m4_ref_mla_softmax_scale(cfg, scale_rule);
    for (int64_t l = 0; l < cfg->num_hidden_layers; l++) {
        if (m4_ref_decoder_layer_cached(cfg, &w->layers[l], h, B, S, position_ids, attention_mask,
                                        scale, cache, l, err)) {
            m4_fail_context(err, "text.layers.%lld", (long long)l);
            goto done;
        }
        if (progress && progress->layer_done) progress->layer_done(progress->user, l, cfg->num_hidden_layers);
    }
    if (cache) cache->length += S;                   /* every layer now holds the S new positions */

    /* text.norm on the kept rows (a per-row op), then text.lm_head */
    for (int64_t b = 0; b < B; b++)
        memcpy(last + b * keep * D, h + (b * S + S - keep) * D, sizeof(float) * (size_t)(keep * D));
    m4_ref_rmsnorm(last, B * keep, D, &w->norm, (float)cfg->rms_norm_eps, last);
    m4_ref_linear(last, B * keep, &w->lm_head, logits);
    rc = 0;
done:
    free(h), free(last), free(pos);
    return rc;
}
