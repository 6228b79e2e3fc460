/* backend_ref.c — the plain-C reference behind the backend interface: each entry forwards to
 * the m4_ref_* function of the same HF module. */
#include <stddef.h>
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

const m4_backend m4_backend_reference = {
    .name = "ref",
    .description = "plain-C float32 reference (reference/)",
    .open = ref_open,
    .close = ref_close,
    .embed_tokens = ref_embed_tokens,
    .rmsnorm = ref_rmsnorm,
    .self_attn = ref_self_attn,
    .router = ref_router,
    .experts = ref_experts,
    .shared_experts = ref_shared_experts,
    .mlp = ref_mlp,
    .decoder_layer = ref_decoder_layer,
    .lm_head = ref_lm_head,
    .forward = ref_forward,
};
