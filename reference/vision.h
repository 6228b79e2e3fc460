/* vision.h — the plain-C float32 reference of the multimodal half of Mistral 4: the Pixtral
 * vision tower (vision.c), the Mistral3 multimodal projector (projector.c), and the placement of
 * image features into the text sequence plus the whole Mistral3ForConditionalGeneration forward
 * (multimodal.c). Same conventions as reference.h (MODEL.md §3).
 *
 * Notation: N_img images, C channels, p patch size, (H, W) the padded batch's pixel size, one
 * image's grid h_n × w_n patches = its unpadded (image_sizes) size / p, P = Σ h_n·w_n patches of
 * all images in one sequence, Dv vision hidden, hv heads × hd head dim, Iv vision MLP hidden,
 * m spatial merge size, M = Σ (h_n/m)·(w_n/m) merged tokens, D text hidden. */
#ifndef M4_VISION_H
#define M4_VISION_H

#include <stdint.h>

#include "reference.h"

/* The images arrive as an m4_pixel_batch, the pre-processing's output (preprocess/image.h):
 * n images, pixel_values [n, C, height, width] each zero-padded bottom/right to the batch maximum,
 * image_sizes [n, 2] = (H, W) before the padding. The functions below only read it. The pointers
 * are const so that a batch can also view pixel values held elsewhere (a golden file); only a
 * batch filled by m4_image_preprocess owns them (m4_pixel_batch_free). */
typedef struct {
    int64_t n;                   /* images */
    int64_t height, width;       /* the batch maximum H, W (pixel_values is padded to it) */
    const float *pixel_values;   /* [n, 3, height, width] float32; zeros outside each image */
    const int64_t *image_sizes;  /* [n, 2]: (H, W) of each resized image before padding */
} m4_pixel_batch;

/* The epsilon of every Pixtral RMSNorm (ln_pre, attention_norm, ffn_norm): PixtralRMSNorm(eps=1e-5)
 * is hard-coded in HF, not read from the config. (projector.norm is Mistral3RMSNorm with the text
 * rms_norm_eps, MODEL.md §2.2.) */
#define M4_VISION_NORM_EPS 1e-5f

/* One image's patch grid: rows × cols patches (its image_sizes // patch_size). */
typedef struct {
    int64_t rows, cols;
} m4_patch_grid;

/* ---- vision.c: the Pixtral vision tower ----------------------------------------------------- */

/* The patch grids of a batch: grids[n] = image_sizes[n] // p; *patches = P. Fails when an image
 * is larger than the padded batch or smaller than one patch. grids holds px->n entries. */
int m4_ref_patch_grids(const m4_vision_config *cfg, const m4_pixel_batch *px, m4_patch_grid *grids,
                       int64_t *patches, m4_error *err);

/* vision.patch_conv — nn.Conv2d(C → Dv, kernel = stride = p, no bias) over the padded batch:
 * pixel_values [N_img, C, H, W] → out [N_img, Dv, H/p, W/p]; w is the conv weight viewed
 * [Dv, C·p·p]. */
int m4_ref_patch_conv(const m4_vision_config *cfg, const m4_weight *w, const m4_pixel_batch *px,
                      float *out, m4_error *err);

/* PixtralVisionModel's flatten: of each image's conv output keep the top-left grid, flatten it
 * row-major (patch r·cols + c) and concatenate the images: conv [N_img, Dv, gh, gw] →
 * patches [P, Dv]. */
void m4_ref_patch_flatten(const float *conv, int64_t Dv, int64_t gh, int64_t gw,
                          const m4_patch_grid *grids, int64_t n_images, float *patches);

/* vision.rope init — PixtralVisionRotaryEmbedding (axial): f[j] = 1 / theta^(2j/hd),
 * j < hd/2, reordered inv_freq[hd/2] = [f0, f2, …, f(hd/2−2), f1, f3, …, f(hd/2−1)]. */
int m4_ref_vision_rope_inv_freq(const m4_vision_config *cfg, float *inv_freq, m4_error *err);

/* vision.rope — PixtralVisionRotaryEmbedding.forward for patch (r, c): the angle vector
 * φ[hd/2] = [r·inv_freq[0 .. hd/4), c·inv_freq[hd/4 .. hd/2)] (float32 products); cos/sin[hd/2]
 * of it. HF's table is cat(φ, φ) [hd]: rotate_half pairs d with d + hd/2 at angle φ[d]. */
void m4_ref_vision_rope_angles(const float *inv_freq, int64_t hd, int64_t r, int64_t c,
                               float *cos_out, float *sin_out);

/* The same for every patch of a batch in sequence order: cos/sin [P, hd/2]. */
void m4_ref_vision_rope_cos_sin(const float *inv_freq, int64_t hd, const m4_patch_grid *grids,
                                int64_t n_images, float *cos_out, float *sin_out);

/* generate_block_attention_mask — the additive [P, P] mask of one sequence of images: 0 where
 * query and key belong to the same image, finfo(float32).min elsewhere. (The attention itself
 * works on the image blocks and never builds the P² mask.) */
void m4_ref_vision_block_mask(const m4_patch_grid *grids, int64_t n_images, float *mask);

/* Optional views into the vision attention's intermediates (golden vision.layers.{j}.attention);
 * any pointer may be NULL. */
typedef struct {
    float *q, *k, *v;          /* [hv, P, hd] after the projections, before RoPE */
    float *q_rot, *k_rot;      /* [hv, P, hd] after RoPE */
    float *attn_weights;       /* [hv, P, P] post-softmax (0 outside an image's block) */
} m4_vision_attn_trace;

/* vision.layers.{j}.attention — PixtralAttention.forward (eager): x [P, Dv] (already
 * attention_norm'ed) → out [P, Dv]. q, k, v, o [Dv, Dv]; RoPE (rotate_half) on q and k;
 * scores (q·kᵀ)·hd^-0.5, block-diagonal over the images, softmax in float32; o_proj. */
int m4_ref_vision_attention(const m4_vision_config *cfg, const m4_vision_layer_weights *w,
                            const float *x, const m4_patch_grid *grids, int64_t n_images,
                            float *out, m4_vision_attn_trace *trace, m4_error *err);

/* vision.layers.{j}.feed_forward — PixtralMLP (SwiGLU, config hidden_act): x [P, Dv] → out. */
int m4_ref_vision_feed_forward(const m4_vision_config *cfg, const m4_vision_layer_weights *w,
                               const float *x, int64_t n, float *out, m4_error *err);

/* vision.layers.{j} — PixtralAttentionLayer.forward, h [P, Dv] in place (norms eps 1e-5):
 * h += attention(attention_norm(h)); h += feed_forward(ffn_norm(h)). */
int m4_ref_vision_layer(const m4_vision_config *cfg, const m4_vision_layer_weights *w, float *h,
                        const m4_patch_grid *grids, int64_t n_images, m4_error *err);

/* vision — PixtralVisionModel.forward + Mistral3Model's feature selection: pixels →
 * features [P, Dv] = hidden_states[vision_feature_layer] (0 = after ln_pre, k = after layer k;
 * −1 = the last layer's output; no final norm). features holds P·Dv floats
 * (m4_ref_patch_grids tells P). */
int m4_ref_vision_tower(const m4_model *model, const m4_pixel_batch *px, float *features,
                        m4_error *err);

/* ---- projector.c: the Mistral3 multimodal projector ----------------------------------------- */

/* Merged tokens of a batch: M = Σ (rows/m)·(cols/m) (an odd last row/column is dropped). */
int64_t m4_ref_merged_tokens(const m4_patch_grid *grids, int64_t n_images, int64_t m);

/* F.unfold(kernel = stride = m) of Mistral3PatchMerger: per image, its [rows, cols, Dv] grid →
 * one vector per m×m block (blocks row-major) whose element ch·m² + k is channel ch of
 * sub-patch k = dr·m + dc: x [P, Dv] → out [M, Dv·m²] (MODEL.md §3.6). */
void m4_ref_patch_unfold(const float *x, int64_t Dv, int64_t m, const m4_patch_grid *grids,
                         int64_t n_images, float *out);

/* projector.patch_merger — Mistral3PatchMerger.forward: unfold, then merging_layer
 * [Dv, Dv·m²]: x [P, Dv] → out [M, Dv]. */
int m4_ref_patch_merger(const m4_config *cfg, const m4_weight *merging_layer, const float *x,
                        const m4_patch_grid *grids, int64_t n_images, float *out, m4_error *err);

/* projector.linear_1 / projector.linear_2 — nn.Linear with an optional bias (bias NULL or
 * unbound: none): y[n, out] = x[n, in] · Wᵀ + b. */
void m4_ref_linear_bias(const float *x, int64_t n, const m4_weight *w, const m4_weight *bias,
                        float *y);

/* projector — Mistral3MultiModalProjector.forward: norm (eps = text rms_norm_eps), patch_merger,
 * linear_1, projector_hidden_act, linear_2: x [P, Dv] → out [M, D]. */
int m4_ref_projector(const m4_model *model, const float *x, const m4_patch_grid *grids,
                     int64_t n_images, float *out, m4_error *err);

/* ---- multimodal.c: image features into the text, and the whole model ------------------------ */

/* multimodal.merge — Mistral3Model.get_placeholder_mask + masked_scatter: embeds [n, D] in
 * place; the rows whose id is image_token_index are overwritten, in sequence order, by the rows
 * of features [n_features, D]. Fails (nothing written) when the count of such rows differs from
 * n_features. */
int m4_ref_merge_image_features(const int64_t *ids, int64_t n, int64_t image_token_index,
                                const float *features, int64_t n_features, int64_t D, float *embeds,
                                m4_error *err);

/* The image features of a batch: vision tower → projector, [M, D] (m4_ref_patch_grids and
 * m4_ref_merged_tokens tell M). */
int m4_ref_image_features(const m4_model *model, const m4_pixel_batch *px, float *features,
                          m4_error *err);

/* The prompt's inputs_embeds [B, S, D] for a multimodal model (Mistral3Model's first step):
 * embed_tokens(ids), then the rows of image_token_index replaced in order by the image features
 * (vision tower → projector) of the images (image.h's preprocessed batch). images NULL or empty:
 * the plain embedding. Fails when the [IMG] count and the images' feature rows differ. */
int m4_ref_prompt_embeds(const m4_model *model, const int64_t *ids, int64_t B, int64_t S,
                         const m4_pixel_batch *images, float *embeds, m4_error *err);

/* model — Mistral3ForConditionalGeneration.forward: ids [B, S] + images → logits [B, keep, V]
 * (keep as m4_ref_text_forward; 0 = all S). px NULL or without images: the text model alone. */
int m4_ref_multimodal_forward(const m4_model *model, const int64_t *ids, int64_t B, int64_t S,
                              const m4_pixel_batch *px, const int64_t *position_ids,
                              const int64_t *attention_mask, int64_t keep,
                              m4_softmax_scale_rule scale_rule, float *logits, m4_error *err);

#endif
