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

/* model — Mistral3ForConditionalGeneration.forward: inputs_embeds = embed_tokens(ids); the [IMG]
 * rows replaced by the image features; then the language model from inputs_embeds
 * (Mistral4ForCausalLM: layers, final norm, lm_head). */
int m4_ref_multimodal_forward(const m4_model *model, const int64_t *ids, int64_t B, int64_t S,
                              const m4_pixel_batch *px, const int64_t *position_ids,
                              const int64_t *attention_mask, int64_t keep,
                              m4_softmax_scale_rule scale_rule, float *logits, m4_error *err) {
    const m4_config *cfg = &model->config;
    const int64_t N = B * S, D = cfg->text.hidden_size;
    if (!px || px->n == 0)
        return m4_ref_text_forward(model, ids, NULL, B, S, position_ids, attention_mask, keep,
                                   scale_rule, logits, err);
    if (!ids) return m4_fail(err, "model: image inputs need input_ids to place them");
    if (B <= 0 || S <= 0) return m4_fail(err, "model: empty input (B %lld, S %lld)", (long long)B, (long long)S);
    if (!cfg->multimodal)
        return m4_fail(err, "model: %lld images given to a text-only model (%s)", (long long)px->n,
                       cfg->architecture);
    if (model->weights.embed_tokens.cols != D)
        return m4_fail(err, "model: embed_tokens has %lld columns, hidden_size is %lld",
                       (long long)model->weights.embed_tokens.cols, (long long)D);

    m4_patch_grid *grids = malloc(sizeof *grids * (size_t)(px->n > 0 ? px->n : 1));
    float *embeds = NULL, *features = NULL;
    int rc = -1;
    int64_t P;
    if (!grids) return m4_fail(err, "model: out of memory");
    if (m4_ref_patch_grids(&cfg->vision, px, grids, &P, err)) goto done;
    const int64_t M = m4_ref_merged_tokens(grids, px->n, cfg->spatial_merge_size);
    embeds = malloc(sizeof(float) * (size_t)(N * D));            /* [B, S, D] inputs_embeds */
    features = malloc(sizeof(float) * (size_t)(M * D));          /* [M, D] image features */
    if (!embeds || !features) {
        m4_fail(err, "model: out of memory for %lld tokens and %lld image features", (long long)N,
                (long long)M);
        goto done;
    }
    int64_t image_tokens = 0;                                    /* checked before the vision work */
    for (int64_t t = 0; t < N; t++) image_tokens += ids[t] == cfg->image_token_index;
    if (image_tokens != M) {
        m4_fail(err, "model: image features and image tokens do not match: %lld [IMG] (id %lld) "
                     "tokens, %lld images give %lld feature rows", (long long)image_tokens,
                (long long)cfg->image_token_index, (long long)px->n, (long long)M);
        goto done;
    }
    if (m4_ref_embed_tokens(&model->weights.embed_tokens, ids, N, embeds, err) ||
        m4_ref_image_features(model, px, features, err) ||
        m4_ref_merge_image_features(ids, N, cfg->image_token_index, features, M, D, embeds, err) ||
        m4_ref_text_forward(model, NULL, embeds, B, S, position_ids, attention_mask, keep, scale_rule,
                            logits, err))
        goto done;
    rc = 0;
done:
    free(grids), free(embeds), free(features);
    return rc;
}
