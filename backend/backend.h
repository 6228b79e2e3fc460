/* backend.h — the one interface both implementations sit behind: components one call each, and
 * generation sessions. The backend room (backend/) is the ground floor that the harness, the CLI
 * and the CUDA implementation build on; it depends only on the loader and on the reference's
 * types (docs/ARCHITECTURE.md, "Layout").
 *
 * Each component entry takes the component's inputs (float32 host arrays, shapes in the comments) and writes
 * its outputs; weights come from the m4_model the backend was opened on. An entry left NULL is a
 * component the backend does not implement: the harness reports it as such and never falls back
 * to another backend. Entries return 0, or -1 with `err` set. */
#ifndef M4_BACKEND_H
#define M4_BACKEND_H

#include <stdint.h>

#include "m4_error.h"
#include "reference.h"
#include "vision.h"
#include "weights.h"

#include <stddef.h>

/* The arithmetic a backend's components run in: float32 (the reference, cuda-fp32: checked at
 * float32's budgets), or bf16 weights and GEMM operands with float32 accumulation (cuda-bf16:
 * checked at the bf16 budgets by default). */
typedef enum { M4_PRECISION_FP32, M4_PRECISION_BF16 } m4_precision;

typedef struct m4_backend m4_backend;

struct m4_backend {
    const char *name;        /* "ref", "cuda-fp32", "cuda-bf16" */
    const char *description;
    m4_precision precision;

    /* The fast paths in effect (which kernels serve which component, as switched on or off for
     * this process) into buf: one short line when `table` is 0 (`mistral4 conform` prints it above
     * its table and records it in the JSON report as backend_paths), the whole table of paths, their
     * twins and proofs when 1 (`mistral4 --help`). NULL for a backend with no alternative paths
     * (the reference). */
    void (*describe_paths)(char *buf, size_t size, int table);

    /* Per-model state (device copies of the weights, scratch). */
    int (*open)(const m4_model *model, void **state, m4_error *err);
    void (*close)(void *state);
    /* Device time of the last entry call in milliseconds (CUDA events around the component's
     * kernels, transfers excluded); NULL for host backends, whose wall time is the figure. */
    double (*last_device_ms)(void *state);
    /* Optional: the one dotted name, with its layer index ("text.layers.3.self_attn"), of the
     * component the next entry calls serve — the report row's — set by the runner before a call
     * and cleared (NULL) after it. A profiling backend names its ranges with it (the CUDA backends:
     * NVTX), so a profile and a report line up row for row. */
    void (*name_calls)(void *state, const char *component);

    /* text.embed_tokens: ids [N] → out [N, D] */
    int (*embed_tokens)(void *state, const int64_t *ids, int64_t n, float *out, m4_error *err);
    /* any RMSNorm (text, vision, projector): x [n, dim] → y, weight w, epsilon eps */
    int (*rmsnorm)(void *state, const m4_weight *w, const float *x, int64_t n, int64_t dim,
                   float eps, float *y, m4_error *err);
    /* text.layers.{i}.self_attn.rope: positions [n] → cos, sin [n, dr/2] with the attention
     * factor applied (HF's table is cat(φ, φ) of these) */
    int (*rope)(void *state, const int64_t *positions, int64_t n, float *cos, float *sin, m4_error *err);
    /* text.layers.{i}.self_attn: x [B, S, D] → out [B, S, D] (trace may be NULL) */
    int (*self_attn)(void *state, int layer, const float *x, int64_t B, int64_t S,
                     const int64_t *position_ids, const int64_t *attention_mask, float softmax_scale,
                     float *out, m4_mla_trace *trace, m4_error *err);
    /* text.layers.{i}.mlp.gate: x [N, D] → logits [N, E], ids [N, K], weights [N, K] */
    int (*router)(void *state, int layer, const float *x, int64_t n, float *logits,
                  int64_t *topk_ids, float *topk_weights, m4_error *err);
    /* text.layers.{i}.mlp.experts: x [N, D] with the given routing → out [N, D] */
    int (*experts)(void *state, int layer, const float *x, int64_t n, const int64_t *topk_ids,
                   const float *topk_weights, float *out, m4_error *err);
    /* text.layers.{i}.mlp.shared_experts: x [N, D] → out [N, D] */
    int (*shared_experts)(void *state, int layer, const float *x, int64_t n, float *out,
                          m4_error *err);
    /* text.layers.{i}.mlp (MoE block or dense MLP): x [N, D] → out [N, D] */
    int (*mlp)(void *state, int layer, const float *x, int64_t n, float *out, m4_error *err);
    /* text.layers.{i}: h [B, S, D] → out [B, S, D] */
    int (*decoder_layer)(void *state, int layer, const float *h, int64_t B, int64_t S,
                         const int64_t *position_ids, const int64_t *attention_mask,
                         float softmax_scale, float *out, m4_error *err);
    /* text.lm_head: x [N, D] → logits [N, V] */
    int (*lm_head)(void *state, const float *x, int64_t n, float *logits, m4_error *err);
    /* model / text: ids [B, S] (or inputs_embeds [B, S, D] when non-NULL) → logits [B, S, V] */
    int (*forward)(void *state, const int64_t *ids, const float *inputs_embeds, int64_t B, int64_t S,
                   const int64_t *position_ids, const int64_t *attention_mask,
                   m4_softmax_scale_rule rule, float *logits, m4_error *err);

    /* ---- the vision path (Mistral3ForConditionalGeneration). P patches of all images in one
     * sequence, grids[n_images] each image's patch grid, M merged tokens (vision.h). ---- */

    /* vision.patch_conv: pixels [N_img, C, H, W] → out [N_img, Dv, H/p, W/p] (padded batch) */
    int (*patch_conv)(void *state, const m4_pixel_batch *px, float *out, m4_error *err);
    /* vision.rope: the 2-D table of the images' patch grids → cos, sin [P, hd/2] (HF's is
     * cat(φ, φ) of these) */
    int (*vision_rope)(void *state, const m4_patch_grid *grids, int64_t n_images, float *cos, float *sin,
                       m4_error *err);
    /* vision.layers.{j}.attention: x [P, Dv] (normed) → out [P, Dv], block-diagonal over the
     * images (trace may be NULL) */
    int (*vision_attention)(void *state, int layer, const float *x, const m4_patch_grid *grids,
                            int64_t n_images, float *out, m4_vision_attn_trace *trace, m4_error *err);
    /* vision.layers.{j}.feed_forward: x [n, Dv] → out [n, Dv] */
    int (*vision_feed_forward)(void *state, int layer, const float *x, int64_t n, float *out,
                               m4_error *err);
    /* vision.layers.{j}: h [P, Dv] → out [P, Dv] */
    int (*vision_layer)(void *state, int layer, const float *h, const m4_patch_grid *grids,
                        int64_t n_images, float *out, m4_error *err);
    /* vision: pixels → the selected vision features [P, Dv] (hidden_states[vision_feature_layer]) */
    int (*vision_tower)(void *state, const m4_pixel_batch *px, float *features, m4_error *err);
    /* projector.patch_merger: x [P, Dv] → out [M, Dv] */
    int (*patch_merger)(void *state, const float *x, const m4_patch_grid *grids, int64_t n_images,
                        float *out, m4_error *err);
    /* projector.linear_1 / linear_2 (any nn.Linear; bias NULL or unbound = none): x [n, in] → y [n, out] */
    int (*linear)(void *state, const m4_weight *w, const m4_weight *bias, const float *x, int64_t n,
                  float *y, m4_error *err);
    /* projector.act: y[n] = ACT2FN[act](x[n]) */
    int (*activation)(void *state, m4_activation act, const float *x, int64_t n, float *y,
                      m4_error *err);
    /* projector: x [P, Dv] → out [M, D] (norm, patch_merger, linear_1, act, linear_2) */
    int (*projector)(void *state, const float *x, const m4_patch_grid *grids, int64_t n_images,
                     float *out, m4_error *err);
    /* multimodal.merge: embeds [n, D] with its [IMG] rows replaced, in order, by features
     * [n_features, D] → out [n, D]; fails when the counts differ */
    int (*merge_image_features)(void *state, const int64_t *ids, int64_t n, const float *embeds,
                                const float *features, int64_t n_features, float *out, m4_error *err);
    /* model with images: ids [B, S] + pixels → logits [B, S, V] */
    int (*forward_multimodal)(void *state, const int64_t *ids, int64_t B, int64_t S,
                              const m4_pixel_batch *px, const int64_t *position_ids,
                              const int64_t *attention_mask, m4_softmax_scale_rule rule,
                              float *logits, m4_error *err);

    /* ---- generation: a session holds the weights (on the device) and its own kv cache of
     * `batch` rows × `capacity` positions, and serves m4_ref_generate as its m4_cached_forward
     * (generate.h). All NULL for the reference, whose generation loop owns its cache
     * (m4_ref_generate with no cached forward). ---- */

    /* upload_progress (may be NULL) hears of each text layer's weights uploaded. */
    int (*session_open)(const m4_model *model, int64_t batch, int64_t capacity,
                        const m4_progress *upload_progress, void **session, m4_error *err);
    /* ids [B, S] (or inputs_embeds [B, S, D] when non-NULL) after the positions the cache holds
     * → the last position's logits [B, V]; the cache then holds S more positions
     * (m4_cached_forward's forward). */
    int (*session_forward)(void *session, const int64_t *ids, const float *inputs_embeds, int64_t B,
                           int64_t S, const int64_t *position_ids, const int64_t *attention_mask,
                           m4_softmax_scale_rule rule, float *logits, m4_error *err);
    /* The prompt's inputs_embeds [B, S, D]: embed_tokens(ids) with the image-token rows replaced
     * in order by the images' features; px NULL: no images (m4_ref_prompt_embeds's twin). */
    int (*session_prompt_embeds)(void *session, const int64_t *ids, int64_t B, int64_t S,
                                 const m4_pixel_batch *px, float *embeds, m4_error *err);
    /* Empties the cache: the next forward starts at position 0 (the weights stay). */
    int (*session_reset)(void *session, m4_error *err);
    /* The device's name ("NVIDIA H200") into buf. */
    int (*session_device_name)(void *session, char *buf, size_t size, m4_error *err);
    void (*session_close)(void *session);
};

/* The plain-C float32 reference (reference_backend.c). */
extern const m4_backend m4_backend_reference;

/* ---- the backends built into this binary (builtin.c, generated by CMake from the tables each
 * room registers with m4_register_backends: the reference always, the CUDA ones when the build
 * found nvcc) ---- */

/* Looks a backend up by name ("ref"); NULL when unknown or not built (e.g. CUDA without nvcc). */
const m4_backend *m4_backend_find(const char *name);

/* The backends built into this binary, in registration order, NULL-terminated. */
const m4_backend *const *m4_backend_list(void);

#endif
