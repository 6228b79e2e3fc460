/* multimodal.c — image features into the text sequence (Mistral3Model.get_placeholder_mask +
 * masked_scatter) and the whole Mistral3ForConditionalGeneration forward: ids + pixels → logits
 * (MODEL.md §3.7). */
#include "vision.h"

#include <stdlib.h>
#include <string.h>

/* multimodal.merge — inputs_embeds.masked_scatter(ids == image_token_index, features): the k-th
 * [IMG] row (in flattened [B·S] order) becomes features[k]. The count is checked first, so a
 * mismatch leaves embeds untouched (HF raises "Image features and image tokens do not match"). */
int m4_ref_merge_image_features(const int64_t *ids, int64_t n, int64_t image_token_index,
                                const float *features, int64_t n_features, int64_t D, float *embeds,
                                m4_error *err) {
    int64_t tokens = 0;
    for (int64_t t = 0; t < n; t++) tokens += ids[t] == image_token_index;
    if (tokens != n_features)
        return m4_fail(err, "multimodal.merge: image features and image tokens do not match: %lld "
                            "[IMG] (id %lld) tokens, %lld feature rows", (long long)tokens,
                       (long long)image_token_index, (long long)n_features);
    for (int64_t t = 0, k = 0; t < n; t++)
        if (ids[t] == image_token_index)
            memcpy(embeds + t * D, features + (k++) * D, sizeof(float) * (size_t)D);
    return 0;
}

/* Mistral3Model.get_image_features — the projector over the vision tower's selected features:
 * pixels → features [M, D], images in order, each image's merged blocks row-major. */
int m4_ref_image_features(const m4_model *model, const m4_pixel_batch *px, float *features,
                          m4_error *err) {
    const m4_config *cfg = &model->config;
    if (!cfg->multimodal) return m4_fail(err, "image features: the model has no vision tower");
    m4_patch_grid *grids = malloc(sizeof *grids * (size_t)(px->n > 0 ? px->n : 1));
    float *vision = NULL;
    int64_t P;
    int rc = -1;
    if (!grids) return m4_fail(err, "image features: out of memory");
    if (m4_ref_patch_grids(&cfg->vision, px, grids, &P, err)) goto done;
    vision = malloc(sizeof(float) * (size_t)(P * cfg->vision.hidden_size));   /* [P, Dv] */
    if (!vision) {
        m4_fail(err, "image features: out of memory for %lld patches", (long long)P);
        goto done;
    }
    if (m4_ref_vision_tower(model, px, vision, err) ||
        m4_ref_projector(model, vision, grids, px->n, features, err))
        goto done;
    rc = 0;
done:
    free(grids), free(vision);
    return rc;
}

/* Mistral3Model.forward's first step: inputs_embeds = embed_tokens(ids), then
 * get_placeholder_mask + masked_scatter of the image features (vision tower → projector) into
 * the [IMG] rows. */
int m4_ref_prompt_embeds(const m4_model *model, const int64_t *ids, int64_t B, int64_t S,
                         const m4_pixel_batch *images, float *embeds, m4_error *err) {
    const m4_config *cfg = &model->config;
    const int64_t N = B * S, D = cfg->text.hidden_size;
    if (B <= 0 || S <= 0) return m4_fail(err, "prompt embeds: empty input (B %lld, S %lld)", (long long)B, (long long)S);
    if (model->weights.embed_tokens.cols != D)
        return m4_fail(err, "prompt embeds: embed_tokens has %lld columns, hidden_size is %lld",
                       (long long)model->weights.embed_tokens.cols, (long long)D);
    if (m4_ref_embed_tokens(&model->weights.embed_tokens, ids, N, embeds, err)) return -1;
    if (!images || images->n <= 0) return 0;
    if (!cfg->multimodal)
        return m4_fail(err, "prompt embeds: %lld images given to a text-only model (%s)",
                       (long long)images->n, cfg->architecture);

    m4_patch_grid *grids = malloc(sizeof *grids * (size_t)images->n);
    float *features = NULL;
    int rc = -1;
    int64_t P;
    if (!grids) return m4_fail(err, "prompt embeds: out of memory");
    if (m4_ref_patch_grids(&cfg->vision, images, grids, &P, err)) goto done;
    const int64_t M = m4_ref_merged_tokens(grids, images->n, cfg->spatial_merge_size);
    int64_t image_tokens = 0;                             /* checked before the vision work */
    for (int64_t t = 0; t < N; t++) image_tokens += ids[t] == cfg->image_token_index;
    if (image_tokens != M) {
        m4_fail(err, "prompt embeds: image features and image tokens do not match: %lld [IMG] (id "
                     "%lld) tokens, %lld images give %lld feature rows", (long long)image_tokens,
                (long long)cfg->image_token_index, (long long)images->n, (long long)M);
        goto done;
    }
    features = malloc(sizeof(float) * (size_t)(M * D));  /* [M, D] */
    if (!features) {
        m4_fail(err, "prompt embeds: out of memory for %lld image features", (long long)M);
        goto done;
    }
    if (m4_ref_image_features(model, images, features, err) ||
        m4_ref_merge_image_features(ids, N, cfg->image_token_index, features, M, D, embeds, err))
        goto done;
    rc = 0;
done:
    free(grids), free(features);
    return rc;
}

/* model — Mistral3ForConditionalGeneration.forward: inputs_embeds = embed_tokens(ids) with the
 * [IMG] rows replaced by the image features (m4_ref_prompt_embeds); then the language model from
 * inputs_embeds (Mistral4ForCausalLM: layers, final norm, lm_head). */
int m4_ref_multimodal_forward(const m4_model *model, const int64_t *ids, int64_t B, int64_t S,
                              const m4_pixel_batch *px, const int64_t *position_ids,
                              const int64_t *attention_mask, int64_t keep,
                              m4_softmax_scale_rule scale_rule, float *logits, m4_error *err) {
    if (!px || px->n == 0)
        return m4_ref_text_forward(model, ids, NULL, B, S, position_ids, attention_mask, keep,
                                   scale_rule, logits, err);
    if (!ids) return m4_fail(err, "model: image inputs need input_ids to place them");
    if (B <= 0 || S <= 0) return m4_fail(err, "model: empty input (B %lld, S %lld)", (long long)B, (long long)S);
    float *embeds = malloc(sizeof(float) * (size_t)(B * S * model->config.text.hidden_size)); /* [B, S, D] */
    if (!embeds) return m4_fail(err, "model: out of memory for %lld tokens", (long long)(B * S));
    int rc = m4_ref_prompt_embeds(model, ids, B, S, px, embeds, err) ||
             m4_ref_text_forward(model, NULL, embeds, B, S, position_ids, attention_mask, keep,
                                 scale_rule, logits, err);
    free(embeds);
    return rc ? -1 : 0;
}
