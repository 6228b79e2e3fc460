/* calls.c — the backend calls that serve the registry's rows (calls.h): one adapter per
 * m4_backend entry, taking the row's golden inputs in[] (shapes checked by the runner) and the
 * case, writing the row's outputs out[]. */
#include "calls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define ENTRY(name) offsetof(m4_backend, name)

static const m4_config *config_of(const m4_case *c) { return &c->model->config; }

static int64_t rows_of(const m4_array *a, int64_t width) { return a->numel / width; }

/* ---- text ---------------------------------------------------------------------------------- */

static int run_embed_tokens(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                            void *const *out, m4_call_work *w, m4_error *err) {
    w->tokens = in[0].numel;
    return c->backend->embed_tokens(c->state, in[0].i64, in[0].numel, out[0], err);
}
const m4_row_call m4_call_embed_tokens = {.entry = ENTRY(embed_tokens), .run = run_embed_tokens};

/* The weight of a norm row, its width and epsilon: Pixtral's norms have M4_VISION_NORM_EPS; the
 * projector norm uses the text rms_norm_eps over the vision width (MODEL.md §2.2). */
static const m4_weight *norm_weight(const m4_model *m, m4_component_kind kind, int layer, int64_t *dim, float *eps) {
    const m4_config *cfg = &m->config;
    *dim = kind == M4_COMP_LN_PRE || kind == M4_COMP_VISION_ATTN_NORM || kind == M4_COMP_VISION_FFN_NORM ||
                   kind == M4_COMP_PROJECTOR_NORM
               ? cfg->vision.hidden_size
               : cfg->text.hidden_size;
    *eps = (float)cfg->text.rms_norm_eps;
    switch (kind) {
    case M4_COMP_INPUT_NORM: return &m->weights.layers[layer].input_layernorm;
    case M4_COMP_POST_NORM: return &m->weights.layers[layer].post_attention_layernorm;
    case M4_COMP_LN_PRE: return *eps = M4_VISION_NORM_EPS, &m->weights.ln_pre;
    case M4_COMP_VISION_ATTN_NORM: return *eps = M4_VISION_NORM_EPS, &m->weights.vision_layers[layer].attention_norm;
    case M4_COMP_VISION_FFN_NORM: return *eps = M4_VISION_NORM_EPS, &m->weights.vision_layers[layer].ffn_norm;
    case M4_COMP_PROJECTOR_NORM: return &m->weights.projector_norm;
    default: return &m->weights.norm;
    }
}

static int run_rmsnorm(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                       void *const *out, m4_call_work *w, m4_error *err) {
    int64_t dim;
    float eps;
    const m4_weight *weight = norm_weight(c->model, comp->kind, layer, &dim, &eps);
    w->tokens = rows_of(&in[0], dim);
    return c->backend->rmsnorm(c->state, weight, in[0].f32, w->tokens, dim, eps, out[0], err);
}
const m4_row_call m4_call_rmsnorm = {.entry = ENTRY(rmsnorm), .run = run_rmsnorm};

/* HF's rotary tables are cat(φ, φ) [rows, 2·half] of the backend's [rows, half]: widens cos_half
 * and sin_half into out[0] (cos) and out[1] (sin). */
static void widen_rope_tables(const float *cos_half, const float *sin_half, int64_t rows, int64_t half,
                              void *const *out) {
    float *cos_full = out[0], *sin_full = out[1];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < 2 * half; j++) {
            cos_full[r * 2 * half + j] = cos_half[r * half + j % half];
            sin_full[r * 2 * half + j] = sin_half[r * half + j % half];
        }
}

/* The sin table after the cos one (the row's dataset): the row reports the worse of the two. */
static void check_sin_table(m4_result *res, void *const *got, m4_array *want) {
    m4_comparison s = m4_compare_f32(got[1], want[1].f32, want[1].numel, res->tolerance);
    if (!s.pass || s.rel_l2 > res->cmp.rel_l2) res->cmp = s;
    if (!s.pass) res->status = M4_RESULT_FAIL;
}

/* rows × half of cos and of sin, or NULL with err set. */
static float *alloc_half_tables(int64_t rows, int64_t half, m4_error *err) {
    float *t = malloc(sizeof(float) * (size_t)(2 * rows * half > 0 ? 2 * rows * half : 1));
    if (!t)
        m4_fail(err, "out of memory for the rotary tables (%lld rows, %zu bytes)", (long long)rows,
                sizeof(float) * (size_t)(2 * rows * half));
    return t;
}

static int run_rope(const m4_case *c, const m4_component *comp, int layer, const m4_array *in, void *const *out,
                    m4_call_work *w, m4_error *err) {
    const int64_t n = c->dims.B * c->dims.S, half = config_of(c)->text.qk_rope_head_dim / 2;
    float *t = alloc_half_tables(n, half, err);
    w->tokens = n;
    int rc = !t || c->backend->rope(c->state, c->positions, n, t, t + n * half, err) ? -1 : 0;
    if (rc == 0) widen_rope_tables(t, t + n * half, n, half, out);
    free(t);
    return rc;
}
const m4_row_call m4_call_rope = {.entry = ENTRY(rope), .run = run_rope, .check = check_sin_table};

/* out: out, then the trace's datasets in the order of the registry's attention rows. */
static int run_self_attn(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                         void *const *out, m4_call_work *w, m4_error *err) {
    m4_mla_trace trace = {.q = out[1], .kv_a = out[2], .c_kv = out[3], .llama4_scale = out[4], .q_rot = out[5],
                          .k_rot = out[6], .attn_weights = out[7], .attn_output = out[8]};
    w->tokens = c->dims.B * c->dims.S;
    return c->backend->self_attn(c->state, layer, in[0].f32, c->dims.B, c->dims.S, c->positions, c->mask,
                                 c->softmax_scale, out[0], &trace, err);
}
const m4_row_call m4_call_self_attn = {.entry = ENTRY(self_attn), .run = run_self_attn, .shared = true};

/* Sorts each token's (id, weight) pairs by id so two routers' outputs compare position-wise. */
static void sort_routing(int64_t *ids, float *weights, int64_t n, int64_t k) {
    for (int64_t t = 0; t < n; t++) {
        int64_t *I = ids + t * k;
        float *W = weights + t * k;
        for (int64_t a = 1; a < k; a++)
            for (int64_t b = a; b > 0 && I[b - 1] > I[b]; b--) {
                int64_t ti = I[b]; I[b] = I[b - 1]; I[b - 1] = ti;
                float tw = W[b]; W[b] = W[b - 1]; W[b - 1] = tw;
            }
    }
}

/* After the logits: the top-k expert sets (identical or FAIL) and their weights. */
static void check_routing(m4_result *res, void *const *got, m4_array *want) {
    const int64_t n = want[1].dims[0], K = want[1].dims[1];
    res->topk_mismatches = m4_topk_set_mismatches(got[1], want[1].i64, n, K);
    sort_routing(got[1], got[2], n, K);
    sort_routing(want[1].i64, want[2].f32, n, K);
    m4_comparison w = m4_compare_f32(got[2], want[2].f32, n * K, res->tolerance);
    if (res->topk_mismatches || !w.pass) res->status = M4_RESULT_FAIL;
    snprintf(res->message, sizeof res->message, "top-%lld sets differ on %lld of %lld tokens; weights rel L2 %.2e",
             (long long)K, (long long)res->topk_mismatches, (long long)n, w.rel_l2);
}

static int run_router(const m4_case *c, const m4_component *comp, int layer, const m4_array *in, void *const *out,
                      m4_call_work *w, m4_error *err) {
    w->tokens = rows_of(&in[0], config_of(c)->text.hidden_size);
    return c->backend->router(c->state, layer, in[0].f32, w->tokens, out[0], out[1], out[2], err);
}
const m4_row_call m4_call_router = {.entry = ENTRY(router), .run = run_router, .check = check_routing};

static int run_experts(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                       void *const *out, m4_call_work *w, m4_error *err) {
    w->tokens = rows_of(&in[0], config_of(c)->text.hidden_size);
    return c->backend->experts(c->state, layer, in[0].f32, w->tokens, in[1].i64, in[2].f32, out[0], err);
}
const m4_row_call m4_call_experts = {.entry = ENTRY(experts), .run = run_experts, .note = "HF's routing"};

static int run_shared_experts(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                              void *const *out, m4_call_work *w, m4_error *err) {
    w->tokens = rows_of(&in[0], config_of(c)->text.hidden_size);
    return c->backend->shared_experts(c->state, layer, in[0].f32, w->tokens, out[0], err);
}
const m4_row_call m4_call_shared_experts = {.entry = ENTRY(shared_experts), .run = run_shared_experts};

static int run_mlp(const m4_case *c, const m4_component *comp, int layer, const m4_array *in, void *const *out,
                   m4_call_work *w, m4_error *err) {
    w->tokens = rows_of(&in[0], config_of(c)->text.hidden_size);
    return c->backend->mlp(c->state, layer, in[0].f32, w->tokens, out[0], err);
}
const m4_row_call m4_call_mlp = {.entry = ENTRY(mlp), .run = run_mlp};

static int run_decoder_layer(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                             void *const *out, m4_call_work *w, m4_error *err) {
    w->tokens = c->dims.B * c->dims.S;
    return c->backend->decoder_layer(c->state, layer, in[0].f32, c->dims.B, c->dims.S, c->positions, c->mask,
                                     c->softmax_scale, out[0], err);
}
const m4_row_call m4_call_decoder_layer = {.entry = ENTRY(decoder_layer), .run = run_decoder_layer};

static int run_lm_head(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                       void *const *out, m4_call_work *w, m4_error *err) {
    w->tokens = rows_of(&in[0], config_of(c)->text.hidden_size);
    return c->backend->lm_head(c->state, in[0].f32, w->tokens, out[0], err);
}
const m4_row_call m4_call_lm_head = {.entry = ENTRY(lm_head), .run = run_lm_head};

/* `text`: the language model from HF's merged inputs_embeds (in[0]), so a case with images checks
 * the whole text stack apart from the vision path. */
static int run_forward_embeds(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                              void *const *out, m4_call_work *w, m4_error *err) {
    w->tokens = c->dims.B * c->dims.S;
    return c->backend->forward(c->state, c->ids, in[0].f32, c->dims.B, c->dims.S, c->positions, c->mask, c->rule,
                               out[0], err);
}
const m4_row_call m4_call_forward_embeds = {.entry = ENTRY(forward), .run = run_forward_embeds};

/* `model`: end to end from the ids, and the pixels of a case with images (then the vision tower
 * and the projector add to the row's cost). */
static int run_forward(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                       void *const *out, m4_call_work *w, m4_error *err) {
    w->tokens = c->dims.B * c->dims.S;
    if (!c->px)
        return c->backend->forward(c->state, c->ids, NULL, c->dims.B, c->dims.S, c->positions, c->mask, c->rule,
                                   out[0], err);
    w->extra = m4_vision_path_cost(config_of(c), c->dims.P, 4);
    return c->backend->forward_multimodal(c->state, c->ids, c->dims.B, c->dims.S, c->px, c->positions, c->mask,
                                          c->rule, out[0], err);
}
const m4_row_call m4_call_forward = {
    .entry = ENTRY(forward), .entry_with_images = ENTRY(forward_multimodal), .run = run_forward};

/* ---- the vision path ----------------------------------------------------------------------- */

/* vision.patch_conv on the golden pixels (its `in`, the padded batch) with the case's image sizes. */
static int run_patch_conv(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                          void *const *out, m4_call_work *w, m4_error *err) {
    const int64_t p = config_of(c)->vision.patch_size;
    m4_pixel_batch px = {.pixel_values = in[0].f32, .image_sizes = c->px->image_sizes, .n = in[0].dims[0],
                         .height = in[0].dims[2], .width = in[0].dims[3]};
    w->tokens = px.n * (px.height / p) * (px.width / p);
    return c->backend->patch_conv(c->state, &px, out[0], err);
}
const m4_row_call m4_call_patch_conv = {.entry = ENTRY(patch_conv), .run = run_patch_conv};

static int run_vision_rope(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                           void *const *out, m4_call_work *w, m4_error *err) {
    const int64_t P = c->dims.P, half = config_of(c)->vision.head_dim / 2;
    float *t = alloc_half_tables(P, half, err);
    w->tokens = P;
    int rc = !t || c->backend->vision_rope(c->state, c->grids, c->dims.images, t, t + P * half, err) ? -1 : 0;
    if (rc == 0) widen_rope_tables(t, t + P * half, P, half, out);
    free(t);
    return rc;
}
const m4_row_call m4_call_vision_rope = {.entry = ENTRY(vision_rope), .run = run_vision_rope,
                                         .check = check_sin_table};

/* out: out, q_rot, k_rot, attn_weights (the registry's vision attention rows). */
static int run_vision_attention(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                                void *const *out, m4_call_work *w, m4_error *err) {
    m4_vision_attn_trace trace = {.q_rot = out[1], .k_rot = out[2], .attn_weights = out[3]};
    w->tokens = c->dims.P;
    return c->backend->vision_attention(c->state, layer, in[0].f32, c->grids, c->dims.images, out[0], &trace, err);
}
const m4_row_call m4_call_vision_attention = {
    .entry = ENTRY(vision_attention), .run = run_vision_attention, .shared = true};

static int run_vision_feed_forward(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                                   void *const *out, m4_call_work *w, m4_error *err) {
    w->tokens = rows_of(&in[0], config_of(c)->vision.hidden_size);
    return c->backend->vision_feed_forward(c->state, layer, in[0].f32, w->tokens, out[0], err);
}
const m4_row_call m4_call_vision_feed_forward = {.entry = ENTRY(vision_feed_forward), .run = run_vision_feed_forward};

static int run_vision_layer(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                            void *const *out, m4_call_work *w, m4_error *err) {
    w->tokens = rows_of(&in[0], config_of(c)->vision.hidden_size);
    return c->backend->vision_layer(c->state, layer, in[0].f32, c->grids, c->dims.images, out[0], err);
}
const m4_row_call m4_call_vision_layer = {.entry = ENTRY(vision_layer), .run = run_vision_layer};

/* vision: the tower end to end from the case's pixels, against the features the projector saw. */
static int run_vision_tower(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                            void *const *out, m4_call_work *w, m4_error *err) {
    w->tokens = c->dims.P;
    return c->backend->vision_tower(c->state, c->px, out[0], err);
}
const m4_row_call m4_call_vision_tower = {.entry = ENTRY(vision_tower), .run = run_vision_tower};

static int run_patch_merger(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                            void *const *out, m4_call_work *w, m4_error *err) {
    w->tokens = rows_of(&in[0], config_of(c)->vision.hidden_size);
    return c->backend->patch_merger(c->state, in[0].f32, c->grids, c->dims.images, out[0], err);
}
const m4_row_call m4_call_patch_merger = {.entry = ENTRY(patch_merger), .run = run_patch_merger};

/* projector.linear_1 (vision width in) or projector.linear_2 (text width in). */
static int run_linear(const m4_case *c, const m4_component *comp, int layer, const m4_array *in, void *const *out,
                      m4_call_work *w, m4_error *err) {
    const m4_weights *m = &c->model->weights;
    const bool first = comp->kind == M4_COMP_PROJECTOR_LINEAR_1;
    w->tokens = rows_of(&in[0], first ? config_of(c)->vision.hidden_size : config_of(c)->text.hidden_size);
    return c->backend->linear(c->state, first ? &m->linear_1 : &m->linear_2,
                              first ? &m->linear_1_bias : &m->linear_2_bias, in[0].f32, w->tokens, out[0], err);
}
const m4_row_call m4_call_linear = {.entry = ENTRY(linear), .run = run_linear};

static int run_activation(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                          void *const *out, m4_call_work *w, m4_error *err) {
    w->tokens = rows_of(&in[0], config_of(c)->text.hidden_size);
    return c->backend->activation(c->state, config_of(c)->projector_hidden_act, in[0].f32, in[0].numel, out[0], err);
}
const m4_row_call m4_call_activation = {.entry = ENTRY(activation), .run = run_activation};

static int run_projector(const m4_case *c, const m4_component *comp, int layer, const m4_array *in,
                         void *const *out, m4_call_work *w, m4_error *err) {
    w->tokens = rows_of(&in[0], config_of(c)->vision.hidden_size);
    return c->backend->projector(c->state, in[0].f32, c->grids, c->dims.images, out[0], err);
}
const m4_row_call m4_call_projector = {.entry = ENTRY(projector), .run = run_projector};

/* multimodal.merge: HF's embeddings (in[0]) and projector output (in[1], image_features)
 * scattered into the [IMG] rows of the case's ids. */
static int run_merge(const m4_case *c, const m4_component *comp, int layer, const m4_array *in, void *const *out,
                     m4_call_work *w, m4_error *err) {
    const int64_t D = config_of(c)->text.hidden_size;
    w->tokens = c->dims.B * c->dims.S;
    return c->backend->merge_image_features(c->state, c->ids, w->tokens, in[0].f32, in[1].f32,
                                            rows_of(&in[1], D), out[0], err);
}
const m4_row_call m4_call_merge = {.entry = ENTRY(merge_image_features), .run = run_merge};
