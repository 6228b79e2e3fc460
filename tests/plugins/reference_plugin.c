/* reference_plugin.c — the plain-C reference as a plugin (include/mistral4/plugin.h): every
 * component, each call forwarded to the reference's backend table. `mistral4 conform --backend
 * plugin:…` must pass it on every golden case (tests/plugins/CMakeLists.txt).
 *
 * Built a second time with PLANTED_BUG: the post-attention RMSNorm then uses epsilon 1e-2 in
 * place of the config's, so exactly the text.layers.{i}.post_attention_layernorm rows fail and the
 * first divergence is text.layers.0.post_attention_layernorm. (The reference's decoder layer
 * and forward call their own norms, so no other row sees the bug.) */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <mistral4/plugin.h>

#include "backend.h"

#ifdef PLANTED_BUG
#define PLUGIN_NAME "ref-bug"
#else
#define PLUGIN_NAME "ref"
#endif

typedef struct {
    m4_model model;
    void *state;  /* the reference backend's */
    m4_error err; /* the reference's message of the last call */
} plugin;

static const m4_backend *ref = &m4_backend_reference;

/* The reference's status as the plugin's: its message copied into err. */
static int status(plugin *p, int rc, m4_plugin_error *err) {
    if (rc) m4_plugin_fail(err, "%s", p->err.msg);
    return rc;
}

/* A float32 view as the reference's weight type. */
static m4_weight weight_of(const m4_plugin_weight *w) {
    return (m4_weight){.name = w->name, .dtype = M4_DTYPE_F32, .rows = w->ndim == 1 ? 1 : w->shape[0],
                       .cols = w->ndim == 1 ? w->shape[0] : w->shape[1], .data = (const uint8_t *)w->data,
                       .scale = 1.0f};
}

static m4_pixel_batch pixels_of(const m4_plugin_pixels *px) {
    return (m4_pixel_batch){.n = px->n, .height = px->height, .width = px->width,
                            .pixel_values = px->pixel_values, .image_sizes = px->image_sizes};
}

/* m4_plugin_grid and m4_patch_grid are both {int64 rows, cols}. */
_Static_assert(sizeof(m4_plugin_grid) == sizeof(m4_patch_grid) &&
                   offsetof(m4_plugin_grid, cols) == offsetof(m4_patch_grid, cols),
               "the ABI's patch grid is laid out as the reference's");
static const m4_patch_grid *grids_of(const m4_plugin_grid *g) { return (const m4_patch_grid *)g; }

static m4_softmax_scale_rule rule_of(int scale_rule) {
    return scale_rule == M4_PLUGIN_SCALE_MSCALE2 ? M4_SOFTMAX_SCALE_MSCALE2 : M4_SOFTMAX_SCALE_BASE;
}

static int init(const m4_plugin_host *host, void **ctx, m4_plugin_error *err) {
    plugin *p = calloc(1, sizeof *p);
    if (!p) return m4_plugin_fail(err, "out of memory");
    if (m4_model_open(host->model_dir, &p->model, &p->err) || ref->open(&p->model, &p->state, &p->err)) {
        m4_plugin_fail(err, "%s", p->err.msg);
        free(p);
        return -1;
    }
    *ctx = p;
    return 0;
}

static void teardown(void *ctx) {
    plugin *p = ctx;
    ref->close(p->state);
    m4_model_close(&p->model);
    free(p);
}

static int embed_tokens(void *ctx, const int64_t *ids, int64_t n, float *out, m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->embed_tokens(p->state, ids, n, out, &p->err), err);
}

static int rmsnorm(void *ctx, const m4_plugin_weight *w, const float *x, int64_t n, int64_t dim, float eps,
                   float *y, m4_plugin_error *err) {
    plugin *p = ctx;
    m4_weight weight = weight_of(w);
#ifdef PLANTED_BUG
    if (strstr(w->name, "post_attention_layernorm")) eps = 1e-2f;
#endif
    return status(p, ref->rmsnorm(p->state, &weight, x, n, dim, eps, y, &p->err), err);
}

static int rope(void *ctx, const int64_t *positions, int64_t n, float *cos, float *sin, m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->rope(p->state, positions, n, cos, sin, &p->err), err);
}

static int self_attn(void *ctx, int layer, const float *x, int64_t B, int64_t S, const int64_t *position_ids,
                     const int64_t *attention_mask, float softmax_scale, float *out, m4_plugin_mla_trace *t,
                     m4_plugin_error *err) {
    plugin *p = ctx;
    m4_mla_trace trace = {.q = t->q, .kv_a = t->kv_a, .c_kv = t->c_kv, .llama4_scale = t->llama4_scale,
                          .q_rot = t->q_rot, .k_rot = t->k_rot, .attn_weights = t->attn_weights,
                          .attn_output = t->attn_output};
    return status(p, ref->self_attn(p->state, layer, x, B, S, position_ids, attention_mask, softmax_scale, out,
                                    &trace, &p->err), err);
}

static int router(void *ctx, int layer, const float *x, int64_t n, float *logits, int64_t *topk_ids,
                  float *topk_weights, m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->router(p->state, layer, x, n, logits, topk_ids, topk_weights, &p->err), err);
}

static int experts(void *ctx, int layer, const float *x, int64_t n, const int64_t *topk_ids,
                   const float *topk_weights, float *out, m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->experts(p->state, layer, x, n, topk_ids, topk_weights, out, &p->err), err);
}

static int shared_experts(void *ctx, int layer, const float *x, int64_t n, float *out, m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->shared_experts(p->state, layer, x, n, out, &p->err), err);
}

static int mlp(void *ctx, int layer, const float *x, int64_t n, float *out, m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->mlp(p->state, layer, x, n, out, &p->err), err);
}

static int decoder_layer(void *ctx, int layer, const float *h, int64_t B, int64_t S, const int64_t *position_ids,
                         const int64_t *attention_mask, float softmax_scale, float *out, m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->decoder_layer(p->state, layer, h, B, S, position_ids, attention_mask, softmax_scale,
                                        out, &p->err), err);
}

static int lm_head(void *ctx, const float *x, int64_t n, float *logits, m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->lm_head(p->state, x, n, logits, &p->err), err);
}

static int forward(void *ctx, const int64_t *ids, const float *inputs_embeds, int64_t B, int64_t S,
                   const int64_t *position_ids, const int64_t *attention_mask, int scale_rule, float *logits,
                   m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->forward(p->state, ids, inputs_embeds, B, S, position_ids, attention_mask,
                                  rule_of(scale_rule), logits, &p->err), err);
}

static int patch_conv(void *ctx, const m4_plugin_pixels *px, float *out, m4_plugin_error *err) {
    plugin *p = ctx;
    m4_pixel_batch batch = pixels_of(px);
    return status(p, ref->patch_conv(p->state, &batch, out, &p->err), err);
}

static int vision_rope(void *ctx, const m4_plugin_grid *grids, int64_t n_images, float *cos, float *sin,
                       m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->vision_rope(p->state, grids_of(grids), n_images, cos, sin, &p->err), err);
}

static int vision_attention(void *ctx, int layer, const float *x, const m4_plugin_grid *grids, int64_t n_images,
                            float *out, m4_plugin_vision_trace *t, m4_plugin_error *err) {
    plugin *p = ctx;
    m4_vision_attn_trace trace = {.q_rot = t->q_rot, .k_rot = t->k_rot, .attn_weights = t->attn_weights};
    return status(p, ref->vision_attention(p->state, layer, x, grids_of(grids), n_images, out, &trace, &p->err),
                  err);
}

static int vision_feed_forward(void *ctx, int layer, const float *x, int64_t n, float *out, m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->vision_feed_forward(p->state, layer, x, n, out, &p->err), err);
}

static int vision_layer(void *ctx, int layer, const float *h, const m4_plugin_grid *grids, int64_t n_images,
                        float *out, m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->vision_layer(p->state, layer, h, grids_of(grids), n_images, out, &p->err), err);
}

static int vision_tower(void *ctx, const m4_plugin_pixels *px, float *features, m4_plugin_error *err) {
    plugin *p = ctx;
    m4_pixel_batch batch = pixels_of(px);
    return status(p, ref->vision_tower(p->state, &batch, features, &p->err), err);
}

static int patch_merger(void *ctx, const float *x, const m4_plugin_grid *grids, int64_t n_images, float *out,
                        m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->patch_merger(p->state, x, grids_of(grids), n_images, out, &p->err), err);
}

static int linear(void *ctx, const m4_plugin_weight *w, const m4_plugin_weight *bias, const float *x, int64_t n,
                  float *y, m4_plugin_error *err) {
    plugin *p = ctx;
    m4_weight weight = weight_of(w), b = bias ? weight_of(bias) : (m4_weight){0};
    return status(p, ref->linear(p->state, &weight, bias ? &b : NULL, x, n, y, &p->err), err);
}

static int activation(void *ctx, int act, const float *x, int64_t n, float *y, m4_plugin_error *err) {
    static const m4_activation acts[] = {[M4_PLUGIN_ACT_SILU] = M4_ACT_SILU, [M4_PLUGIN_ACT_GELU] = M4_ACT_GELU,
                                         [M4_PLUGIN_ACT_GELU_TANH] = M4_ACT_GELU_TANH,
                                         [M4_PLUGIN_ACT_RELU] = M4_ACT_RELU};
    plugin *p = ctx;
    return status(p, ref->activation(p->state, acts[act], x, n, y, &p->err), err);
}

static int projector(void *ctx, const float *x, const m4_plugin_grid *grids, int64_t n_images, float *out,
                     m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->projector(p->state, x, grids_of(grids), n_images, out, &p->err), err);
}

static int merge_image_features(void *ctx, const int64_t *ids, int64_t n, const float *embeds,
                                const float *features, int64_t n_features, float *out, m4_plugin_error *err) {
    plugin *p = ctx;
    return status(p, ref->merge_image_features(p->state, ids, n, embeds, features, n_features, out, &p->err), err);
}

static int forward_multimodal(void *ctx, const int64_t *ids, int64_t B, int64_t S, const m4_plugin_pixels *px,
                              const int64_t *position_ids, const int64_t *attention_mask, int scale_rule,
                              float *logits, m4_plugin_error *err) {
    plugin *p = ctx;
    m4_pixel_batch batch = pixels_of(px);
    return status(p, ref->forward_multimodal(p->state, ids, B, S, &batch, position_ids, attention_mask,
                                             rule_of(scale_rule), logits, &p->err), err);
}

static const m4_plugin_info info = {
    .abi_version = M4_PLUGIN_ABI_VERSION,
    .name = PLUGIN_NAME,
    .description = "the plain-C reference through the plugin ABI",
    .buffers = M4_PLUGIN_HOST_BUFFERS,
    .components = (1u << 23) - 1, /* all of ABI 1's */
    .init = init,
    .teardown = teardown,
    .embed_tokens = embed_tokens,
    .rmsnorm = rmsnorm,
    .rope = rope,
    .self_attn = self_attn,
    .router = router,
    .experts = experts,
    .shared_experts = shared_experts,
    .mlp = mlp,
    .decoder_layer = decoder_layer,
    .lm_head = lm_head,
    .forward = forward,
    .patch_conv = patch_conv,
    .vision_rope = vision_rope,
    .vision_attention = vision_attention,
    .vision_feed_forward = vision_feed_forward,
    .vision_layer = vision_layer,
    .vision_tower = vision_tower,
    .patch_merger = patch_merger,
    .linear = linear,
    .activation = activation,
    .projector = projector,
    .merge_image_features = merge_image_features,
    .forward_multimodal = forward_multimodal,
};

M4_PLUGIN_EXPORT const m4_plugin_info *m4_plugin_get_info(void) { return &info; }
