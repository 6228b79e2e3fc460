/* mistral4/plugin.h — the plugin ABI: how an outside implementation of Mistral 4 is checked by
 * `mistral4 conform --backend plugin:PATH.so` against golden Hugging Face activations.
 *
 * A plugin is a shared object exporting one C function, m4_plugin_get_info (M4_PLUGIN_ENTRY),
 * that returns a static m4_plugin_info: the ABI version it was built with, its name, which
 * components it implements (M4_PLUGIN_* bits) and a function pointer for each of them. The
 * harness checks the version first, then that every declared component has its pointer, then
 * calls init once per golden case and each component teacher-forced (HF's own inputs). A
 * component the plugin does not declare is reported as "not implemented", never failed.
 *
 * All buffers are host memory, float32 row-major (int64 for token ids and positions), owned by
 * the harness; a call reads its inputs and writes every element of its outputs. Shapes are in
 * the comments, with the names of docs/MODEL.md: B batch, S sequence, N = B·S tokens, D hidden
 * size, V vocabulary, E routed experts, K experts per token, H heads, dq = qk_head_dim,
 * dn/dr = the nope/rope parts of it, dv = v_head_dim, Rkv = kv_lora_rank, Dv the vision width,
 * P patches, M merged image tokens. Layer indices count from 0.
 *
 * Each call returns 0, or non-zero with a message in *err (shown in the report's row). A call
 * that crashes (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) is reported as such and the plugin is
 * not called again.
 * C99, no other dependency: this header stands alone (docs/PLUGINS.md). */
#ifndef MISTRAL4_PLUGIN_H
#define MISTRAL4_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any change to the structs or calls below; the harness refuses another version. */
#define M4_PLUGIN_ABI_VERSION 1

/* The one symbol the harness looks up: const m4_plugin_info *m4_plugin_get_info(void). */
#define M4_PLUGIN_ENTRY "m4_plugin_get_info"

#if defined(_WIN32)
#define M4_PLUGIN_EXPORT __declspec(dllexport)
#else
#define M4_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

/* ---- plain data ------------------------------------------------------------------------------ */

typedef struct {
    char msg[512];
} m4_plugin_error;

/* Sets err's message (printf-style) and returns -1: `return m4_plugin_fail(err, "…", …);`. */
static inline int m4_plugin_fail(m4_plugin_error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* A weight of the checkpoint as host float32, row-major, dequantised (FP8: float32(x) · its
 * _scale_inv, per expert for expert stacks). Valid until the plugin's teardown. */
typedef struct {
    const char *name;        /* the tensor's name in the checkpoint */
    const float *data;
    int32_t ndim;
    int64_t shape[4];
} m4_plugin_weight;

/* One image's patch grid: rows × cols patches. */
typedef struct {
    int64_t rows, cols;
} m4_plugin_grid;

/* The images of a case, as the processor made them: each zero-padded bottom/right to the batch
 * maximum height × width; image_sizes [n, 2] = (H, W) of each before the padding. */
typedef struct {
    int64_t n, channels, height, width;
    const float *pixel_values;   /* [n, channels, height, width] */
    const int64_t *image_sizes;  /* [n, 2] */
} m4_plugin_pixels;

/* The self-attention's intermediates the golden file holds; a NULL pointer is not asked for,
 * every other one must be written. */
typedef struct {
    float *q;             /* [N, H·dq]      q_b_proj (or q_proj) output, before RoPE */
    float *kv_a;          /* [N, Rkv + dr]  kv_a_proj_with_mqa output */
    float *c_kv;          /* [N, Rkv]       after kv_a_layernorm */
    float *llama4_scale;  /* [N]            the Llama-4 query scale of each position */
    float *q_rot;         /* [B, H, S, dq]  query after RoPE and the Llama-4 scale */
    float *k_rot;         /* [B, H, S, dq]  key after RoPE */
    float *attn_weights;  /* [B, H, S, S]   post-softmax */
    float *attn_output;   /* [N, H·dv]      before o_proj */
} m4_plugin_mla_trace;

/* The vision attention's intermediates, as above. hv vision heads, hd their width. */
typedef struct {
    float *q_rot, *k_rot;  /* [hv, P, hd] after RoPE */
    float *attn_weights;   /* [hv, P, P]  post-softmax (0 outside an image's block) */
} m4_plugin_vision_trace;

/* ACT2FN names: the projector's projector_hidden_act. */
enum { M4_PLUGIN_ACT_SILU, M4_PLUGIN_ACT_GELU, M4_PLUGIN_ACT_GELU_TANH, M4_PLUGIN_ACT_RELU };

/* The MLA softmax scale the golden file was made with (docs/MODEL.md §0.1): qk_head_dim^-0.5,
 * or that times mscale(factor, mscale_all_dim)². The teacher-forced calls get its value. */
enum { M4_PLUGIN_SCALE_BASE, M4_PLUGIN_SCALE_MSCALE2 };

/* Where the buffers live. ABI 1 has host buffers only; a plugin on a GPU copies. */
enum { M4_PLUGIN_HOST_BUFFERS = 0 };

/* The components, one bit each (m4_plugin_info.components). */
enum {
    M4_PLUGIN_EMBED_TOKENS = 1u << 0,
    M4_PLUGIN_RMSNORM = 1u << 1,
    M4_PLUGIN_ROPE = 1u << 2,
    M4_PLUGIN_SELF_ATTN = 1u << 3,
    M4_PLUGIN_ROUTER = 1u << 4,
    M4_PLUGIN_EXPERTS = 1u << 5,
    M4_PLUGIN_SHARED_EXPERTS = 1u << 6,
    M4_PLUGIN_MLP = 1u << 7,
    M4_PLUGIN_DECODER_LAYER = 1u << 8,
    M4_PLUGIN_LM_HEAD = 1u << 9,
    M4_PLUGIN_FORWARD = 1u << 10,
    M4_PLUGIN_PATCH_CONV = 1u << 11,
    M4_PLUGIN_VISION_ROPE = 1u << 12,
    M4_PLUGIN_VISION_ATTENTION = 1u << 13,
    M4_PLUGIN_VISION_FEED_FORWARD = 1u << 14,
    M4_PLUGIN_VISION_LAYER = 1u << 15,
    M4_PLUGIN_VISION_TOWER = 1u << 16,
    M4_PLUGIN_PATCH_MERGER = 1u << 17,
    M4_PLUGIN_LINEAR = 1u << 18,
    M4_PLUGIN_ACTIVATION = 1u << 19,
    M4_PLUGIN_PROJECTOR = 1u << 20,
    M4_PLUGIN_MERGE_IMAGE_FEATURES = 1u << 21,
    M4_PLUGIN_FORWARD_MULTIMODAL = 1u << 22
};

/* What the harness gives init. */
typedef struct {
    uint32_t abi_version;    /* the harness's M4_PLUGIN_ABI_VERSION */
    const char *model_dir;   /* the checkpoint: config.json and the safetensors */
    void *host;              /* pass to weight() */
    /* A checkpoint tensor as float32 by name (either spelling: `model.language_model.…` or the
     * legacy one). Returns 0, or -1 with err set when there is no such tensor. */
    int (*weight)(void *host, const char *name, m4_plugin_weight *out, m4_plugin_error *err);
} m4_plugin_host;

/* What a plugin is. abi_version stays the first member in every version. */
typedef struct {
    uint32_t abi_version;    /* M4_PLUGIN_ABI_VERSION as the plugin was built */
    const char *name;        /* short, shown as "plugin:NAME" */
    const char *description;
    uint32_t buffers;        /* M4_PLUGIN_HOST_BUFFERS */
    uint64_t components;     /* the M4_PLUGIN_* bits it implements */

    /* Once per model: *ctx is passed to every call below. */
    int (*init)(const m4_plugin_host *host, void **ctx, m4_plugin_error *err);
    void (*teardown)(void *ctx);
    /* Optional (NULL): device time of the last call in milliseconds, beside the wall time. */
    double (*last_device_ms)(void *ctx);

    /* text.embed_tokens: ids [N] → out [N, D] */
    int (*embed_tokens)(void *ctx, const int64_t *ids, int64_t n, float *out, m4_plugin_error *err);
    /* any RMSNorm (text, vision, projector): x [n, dim] → y = x · rsqrt(mean(x²) + eps) · w */
    int (*rmsnorm)(void *ctx, const m4_plugin_weight *w, const float *x, int64_t n, int64_t dim,
                   float eps, float *y, m4_plugin_error *err);
    /* text.layers.{i}.self_attn.rope: positions [n] → cos, sin [n, dr/2] with the attention
     * factor applied (HF's table is cat(φ, φ) of these) */
    int (*rope)(void *ctx, const int64_t *positions, int64_t n, float *cos, float *sin,
                m4_plugin_error *err);
    /* text.layers.{i}.self_attn: x [B, S, D] → out [B, S, D]; position_ids [B, S];
     * attention_mask [B, S] (1 keep, 0 padding) or NULL; trace as above */
    int (*self_attn)(void *ctx, int layer, const float *x, int64_t B, int64_t S,
                     const int64_t *position_ids, const int64_t *attention_mask,
                     float softmax_scale, float *out, m4_plugin_mla_trace *trace,
                     m4_plugin_error *err);
    /* text.layers.{i}.mlp.gate: x [N, D] → logits [N, E], topk_ids [N, K], topk_weights [N, K]
     * (any order within a token: the harness compares the sets) */
    int (*router)(void *ctx, int layer, const float *x, int64_t n, float *logits,
                  int64_t *topk_ids, float *topk_weights, m4_plugin_error *err);
    /* text.layers.{i}.mlp.experts: x [N, D] with HF's routing → out [N, D] */
    int (*experts)(void *ctx, int layer, const float *x, int64_t n, const int64_t *topk_ids,
                   const float *topk_weights, float *out, m4_plugin_error *err);
    /* text.layers.{i}.mlp.shared_experts: x [N, D] → out [N, D] */
    int (*shared_experts)(void *ctx, int layer, const float *x, int64_t n, float *out,
                          m4_plugin_error *err);
    /* text.layers.{i}.mlp (MoE block or dense MLP): x [N, D] → out [N, D] */
    int (*mlp)(void *ctx, int layer, const float *x, int64_t n, float *out, m4_plugin_error *err);
    /* text.layers.{i}: h [B, S, D] → out [B, S, D] */
    int (*decoder_layer)(void *ctx, int layer, const float *h, int64_t B, int64_t S,
                         const int64_t *position_ids, const int64_t *attention_mask,
                         float softmax_scale, float *out, m4_plugin_error *err);
    /* text.lm_head: x [N, D] → logits [N, V] */
    int (*lm_head)(void *ctx, const float *x, int64_t n, float *logits, m4_plugin_error *err);
    /* text / model: ids [B, S] (or inputs_embeds [B, S, D] when non-NULL) → logits [B, S, V];
     * scale_rule M4_PLUGIN_SCALE_* */
    int (*forward)(void *ctx, const int64_t *ids, const float *inputs_embeds, int64_t B, int64_t S,
                   const int64_t *position_ids, const int64_t *attention_mask, int scale_rule,
                   float *logits, m4_plugin_error *err);

    /* ---- the vision path: grids [n_images] each image's patch grid ---- */

    /* vision.patch_conv: pixels → out [n, Dv, height/p, width/p] */
    int (*patch_conv)(void *ctx, const m4_plugin_pixels *px, float *out, m4_plugin_error *err);
    /* vision.rope: cos, sin [P, hd/2] of the images' patch grids (HF's is cat(φ, φ) of these) */
    int (*vision_rope)(void *ctx, const m4_plugin_grid *grids, int64_t n_images, float *cos,
                       float *sin, m4_plugin_error *err);
    /* vision.layers.{j}.attention: x [P, Dv] (normed) → out [P, Dv], block-diagonal over images */
    int (*vision_attention)(void *ctx, int layer, const float *x, const m4_plugin_grid *grids,
                            int64_t n_images, float *out, m4_plugin_vision_trace *trace,
                            m4_plugin_error *err);
    /* vision.layers.{j}.feed_forward: x [n, Dv] → out [n, Dv] */
    int (*vision_feed_forward)(void *ctx, int layer, const float *x, int64_t n, float *out,
                               m4_plugin_error *err);
    /* vision.layers.{j}: h [P, Dv] → out [P, Dv] */
    int (*vision_layer)(void *ctx, int layer, const float *h, const m4_plugin_grid *grids,
                        int64_t n_images, float *out, m4_plugin_error *err);
    /* vision: pixels → the selected features [P, Dv] (hidden_states[vision_feature_layer]) */
    int (*vision_tower)(void *ctx, const m4_plugin_pixels *px, float *features,
                        m4_plugin_error *err);
    /* projector.patch_merger: x [P, Dv] → out [M, Dv] */
    int (*patch_merger)(void *ctx, const float *x, const m4_plugin_grid *grids, int64_t n_images,
                        float *out, m4_plugin_error *err);
    /* projector.linear_1 / linear_2: x [n, in] → y [n, out] = x · wᵀ + bias (bias NULL: none) */
    int (*linear)(void *ctx, const m4_plugin_weight *w, const m4_plugin_weight *bias,
                  const float *x, int64_t n, float *y, m4_plugin_error *err);
    /* projector.act: y[n] = ACT2FN[act](x[n]), act M4_PLUGIN_ACT_* */
    int (*activation)(void *ctx, int act, const float *x, int64_t n, float *y,
                      m4_plugin_error *err);
    /* projector: x [P, Dv] → out [M, D] */
    int (*projector)(void *ctx, const float *x, const m4_plugin_grid *grids, int64_t n_images,
                     float *out, m4_plugin_error *err);
    /* multimodal.merge: embeds [n, D] with its image-token rows replaced, in order, by
     * features [n_features, D] → out [n, D]; fails when the counts differ */
    int (*merge_image_features)(void *ctx, const int64_t *ids, int64_t n, const float *embeds,
                                const float *features, int64_t n_features, float *out,
                                m4_plugin_error *err);
    /* model with images: ids [B, S] + pixels → logits [B, S, V] */
    int (*forward_multimodal)(void *ctx, const int64_t *ids, int64_t B, int64_t S,
                              const m4_plugin_pixels *px, const int64_t *position_ids,
                              const int64_t *attention_mask, int scale_rule, float *logits,
                              m4_plugin_error *err);
} m4_plugin_info;

/* The entry point every plugin defines. */
M4_PLUGIN_EXPORT const m4_plugin_info *m4_plugin_get_info(void);

#ifdef __cplusplus
}
#endif

#endif
