/* reference_backend.c — the plain-C reference behind the backend interface: each entry forwards to
 * the m4_ref_* function of the same HF module. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

static int ref_open(const m4_model *model, void **state, m4_error *err) {
    *state = (void *)model;
    return 0;
}

static void ref_close(void *state) {}

static const m4_model *model_of(void *state) { return state; }

static int ref_embed_tokens(void *state, const int64_t *ids, int64_t n, float *out, m4_error *err) {
    return m4_ref_embed_tokens(&model_of(state)->weights.embed_tokens, ids, n, out, err);
}

static int ref_rmsnorm(void *state, const m4_weight *w, const float *x, int64_t n, int64_t dim,
                       float eps, float *y, m4_error *err) {
    m4_ref_rmsnorm(x, n, dim, w, eps, y);
    return 0;
}

static int ref_rope(void *state, const int64_t *positions, int64_t n, float *cos, float *sin, m4_error *err) {
    const m4_text_config *t = &model_of(state)->config.text;
    float inv_freq[512], attention_factor;
    if (t->qk_rope_head_dim / 2 > 512)
        return m4_fail(err, "qk_rope_head_dim %lld: more than the 1024 the reference's rope table holds",
                       (long long)t->qk_rope_head_dim);
    if (m4_ref_rope_inv_freq(t, inv_freq, &attention_factor, err)) return -1;
    m4_ref_rope_cos_sin(inv_freq, t->qk_rope_head_dim / 2, attention_factor, positions, n, cos, sin);
    return 0;
}

static int ref_self_attn(void *state, int layer, const float *x, int64_t B, int64_t S,
                         const int64_t *position_ids, const int64_t *attention_mask,
                         float softmax_scale, float *out, m4_mla_trace *trace, m4_error *err) {
    const m4_model *m = model_of(state);
    return m4_ref_mla(&m->config.text, &m->weights.layers[layer], x, B, S, position_ids,
                      attention_mask, softmax_scale, out, trace, err);
}

static int ref_router(void *state, int layer, const float *x, int64_t n, float *logits,
                      int64_t *topk_ids, float *topk_weights, m4_error *err) {
    const m4_model *m = model_of(state);
    return m4_ref_router(&m->config.text, &m->weights.layers[layer], x, n, logits, topk_ids,
                         topk_weights, err);
}

static int ref_experts(void *state, int layer, const float *x, int64_t n, const int64_t *topk_ids,
                       const float *topk_weights, float *out, m4_error *err) {
    const m4_model *m = model_of(state);
    return m4_ref_experts(&m->config.text, &m->weights.layers[layer], x, n, topk_ids, topk_weights,
                          out, err);
}

static int ref_shared_experts(void *state, int layer, const float *x, int64_t n, float *out,
                              m4_error *err) {
    const m4_model *m = model_of(state);
    const m4_text_layer_weights *w = &m->weights.layers[layer];
    return m4_ref_swiglu_mlp(x, n, &w->shared_gate_proj, &w->shared_up_proj, &w->shared_down_proj,
                             m->config.text.hidden_act, out, err);
}

static int ref_mlp(void *state, int layer, const float *x, int64_t n, float *out, m4_error *err) {
    const m4_model *m = model_of(state);
    return m4_ref_mlp(&m->config.text, &m->weights.layers[layer], x, n, out, err);
}

static int ref_decoder_layer(void *state, int layer, const float *h, int64_t B, int64_t S,
                             const int64_t *position_ids, const int64_t *attention_mask,
                             float softmax_scale, float *out, m4_error *err) {
    const m4_model *m = model_of(state);
    memcpy(out, h, (size_t)(B * S * m->config.text.hidden_size) * sizeof *out);
    return m4_ref_decoder_layer(&m->config.text, &m->weights.layers[layer], out, B, S, position_ids,
                                attention_mask, softmax_scale, err);
}

static int ref_lm_head(void *state, const float *x, int64_t n, float *logits, m4_error *err) {
    m4_ref_linear(x, n, &model_of(state)->weights.lm_head, logits);
    return 0;
}

static int ref_forward(void *state, const int64_t *ids, const float *inputs_embeds, int64_t B,
                       int64_t S, const int64_t *position_ids, const int64_t *attention_mask,
                       m4_softmax_scale_rule rule, float *logits, m4_error *err) {
    return m4_ref_text_forward(model_of(state), ids, inputs_embeds, B, S, position_ids,
                               attention_mask, S, rule, logits, err);
}

/* ---- the vision path --------------------------------------------------------------------- */

static int ref_patch_conv(void *state, const m4_pixel_batch *px, float *out, m4_error *err) {
    const m4_model *m = model_of(state);
    return m4_ref_patch_conv(&m->config.vision, &m->weights.patch_conv, px, out, err);
}

static int ref_vision_rope(void *state, const m4_patch_grid *grids, int64_t n_images, float *cos, float *sin,
                           m4_error *err) {
    const m4_vision_config *v = &model_of(state)->config.vision;
    float *inv_freq = malloc(sizeof *inv_freq * (size_t)(v->head_dim / 2 > 0 ? v->head_dim / 2 : 1));
    if (!inv_freq) return m4_fail(err, "out of memory for the vision rope frequencies");
    int rc = m4_ref_vision_rope_inv_freq(v, inv_freq, err);
    if (rc == 0) m4_ref_vision_rope_cos_sin(inv_freq, v->head_dim, grids, n_images, cos, sin);
    free(inv_freq);
    return rc;
}

static int ref_vision_attention(void *state, int layer, const float *x, const m4_patch_grid *grids,
                                int64_t n_images, float *out, m4_vision_attn_trace *trace,
                                m4_error *err) {
    const m4_model *m = model_of(state);
    return m4_ref_vision_attention(&m->config.vision, &m->weights.vision_layers[layer], x, grids,
                                   n_images, out, trace, err);
}

static int ref_vision_feed_forward(void *state, int layer, const float *x, int64_t n, float *out,
                                   m4_error *err) {
    const m4_model *m = model_of(state);
    return m4_ref_vision_feed_forward(&m->config.vision, &m->weights.vision_layers[layer], x, n, out, err);
}

static int ref_vision_layer(void *state, int layer, const float *h, const m4_patch_grid *grids,
                            int64_t n_images, float *out, m4_error *err) {
    const m4_model *m = model_of(state);
    int64_t P = 0;
    for (int64_t n = 0; n < n_images; n++) P += grids[n].rows * grids[n].cols;
    memcpy(out, h, (size_t)(P * m->config.vision.hidden_size) * sizeof *out);
    return m4_ref_vision_layer(&m->config.vision, &m->weights.vision_layers[layer], out, grids,
                               n_images, err);
}

static int ref_vision_tower(void *state, const m4_pixel_batch *px, float *features, m4_error *err) {
    return m4_ref_vision_tower(model_of(state), px, features, err);
}

static int ref_patch_merger(void *state, const float *x, const m4_patch_grid *grids, int64_t n_images,
                            float *out, m4_error *err) {
    const m4_model *m = model_of(state);
    return m4_ref_patch_merger(&m->config, &m->weights.patch_merger, x, grids, n_images, out, err);
}

static int ref_linear(void *state, const m4_weight *w, const m4_weight *bias, const float *x,
                      int64_t n, float *y, m4_error *err) {
    m4_ref_linear_bias(x, n, w, bias, y);
    return 0;
}

static int ref_activation(void *state, m4_activation act, const float *x, int64_t n, float *y,
                          m4_error *err) {
    if (y != x) memcpy(y, x, (size_t)n * sizeof *y);
    m4_ref_activation(y, n, act);
    return 0;
}

static int ref_projector(void *state, const float *x, const m4_patch_grid *grids, int64_t n_images,
                         float *out, m4_error *err) {
    return m4_ref_projector(model_of(state), x, grids, n_images, out, err);
}

static int ref_merge_image_features(void *state, const int64_t *ids, int64_t n, const float *embeds,
                                    const float *features, int64_t n_features, float *out,
                                    m4_error *err) {
    const m4_config *cfg = &model_of(state)->config;
    const int64_t D = cfg->text.hidden_size;
    memcpy(out, embeds, (size_t)(n * D) * sizeof *out);
    return m4_ref_merge_image_features(ids, n, cfg->image_token_index, features, n_features, D, out, err);
}

static int ref_forward_multimodal(void *state, const int64_t *ids, int64_t B, int64_t S,
                                  const m4_pixel_batch *px, const int64_t *position_ids,
                                  const int64_t *attention_mask, m4_softmax_scale_rule rule,
                                  float *logits, m4_error *err) {
    return m4_ref_multimodal_forward(model_of(state), ids, B, S, px, position_ids, attention_mask, S,
                                     rule, logits, err);
}

const m4_backend m4_backend_reference = {
    .name = "ref",
    .description = "plain-C float32 reference (reference/)",
    .precision = M4_PRECISION_FP32,
    .open = ref_open,
    .close = ref_close,
    .embed_tokens = ref_embed_tokens,
    .rmsnorm = ref_rmsnorm,
    .rope = ref_rope,
    .self_attn = ref_self_attn,
    .router = ref_router,
    .experts = ref_experts,
    .shared_experts = ref_shared_experts,
    .mlp = ref_mlp,
    .decoder_layer = ref_decoder_layer,
    .lm_head = ref_lm_head,
    .forward = ref_forward,
    .patch_conv = ref_patch_conv,
    .vision_rope = ref_vision_rope,
    .vision_attention = ref_vision_attention,
    .vision_feed_forward = ref_vision_feed_forward,
    .vision_layer = ref_vision_layer,
    .vision_tower = ref_vision_tower,
    .patch_merger = ref_patch_merger,
    .linear = ref_linear,
    .activation = ref_activation,
    .projector = ref_projector,
    .merge_image_features = ref_merge_image_features,
    .forward_multimodal = ref_forward_multimodal,
};
