/* projector.c — the Mistral3 multimodal projector (Mistral3MultiModalProjector): RMSNorm with
 * the text eps, the 2×2 patch merger (unfold + merging_layer), linear_1, exact GELU, linear_2
 * (MODEL.md §3.6). */
#include "vision.h"

#include <stdlib.h>
#include <string.h>

int64_t m4_ref_merged_tokens(const m4_patch_grid *grids, int64_t n_images, int64_t m) {
    int64_t M = 0;
    for (int64_t n = 0; n < n_images; n++) M += (grids[n].rows / m) * (grids[n].cols / m);
    return M;
}

/* Mistral3PatchMerger's unfold: image_tokens.view(h, w, Dv).permute(2, 0, 1) → F.unfold(kernel =
 * stride = m) [Dv·m², L] → .view(Dv·m², −1).t() [L, Dv·m²]. Row (R, Cb) of an image, element
 * ch·m² + dr·m + dc = x[(R·m + dr)·w + Cb·m + dc][ch]. */
void m4_ref_patch_unfold(const float *x, int64_t Dv, int64_t m, const m4_patch_grid *grids,
                         int64_t n_images, float *out) {
    const int64_t mm = m * m;
    for (int64_t n = 0; n < n_images; n++) {
        const int64_t h = grids[n].rows, w = grids[n].cols;
        for (int64_t R = 0; R < h / m; R++)
            for (int64_t Cb = 0; Cb < w / m; Cb++, out += Dv * mm)
                for (int64_t dr = 0; dr < m; dr++)
                    for (int64_t dc = 0; dc < m; dc++) {
                        const float *patch = x + ((R * m + dr) * w + Cb * m + dc) * Dv;
                        for (int64_t ch = 0; ch < Dv; ch++) out[ch * mm + dr * m + dc] = patch[ch];
                    }
        x += h * w * Dv;
    }
}

/* projector.patch_merger — Mistral3PatchMerger.forward: merging_layer(unfold(x)), x [P, Dv] →
 * out [M, Dv]. */
int m4_ref_patch_merger(const m4_config *cfg, const m4_weight *merging_layer, const float *x,
                        const m4_patch_grid *grids, int64_t n_images, float *out, m4_error *err) {
    const int64_t Dv = cfg->vision.hidden_size, m = cfg->spatial_merge_size;
    if (m <= 0) return m4_fail(err, "projector.patch_merger: spatial_merge_size %lld must be > 0", (long long)m);
    if (merging_layer->rows != Dv || merging_layer->cols != Dv * m * m)
        return m4_fail(err, "projector.patch_merger: merging_layer is [%lld, %lld], the config implies "
                            "[%lld, %lld]", (long long)merging_layer->rows, (long long)merging_layer->cols,
                       (long long)Dv, (long long)(Dv * m * m));
    const int64_t M = m4_ref_merged_tokens(grids, n_images, m);
    if (M <= 0) return m4_fail(err, "projector.patch_merger: no %lldx%lld block in the images", (long long)m, (long long)m);
    float *merged = malloc(sizeof(float) * (size_t)(M * Dv * m * m));   /* [M, Dv·m²] */
    if (!merged) return m4_fail(err, "projector.patch_merger: out of memory for %lld tokens", (long long)M);
    m4_ref_patch_unfold(x, Dv, m, grids, n_images, merged);
    m4_ref_linear(merged, M, merging_layer, out);
    free(merged);
    return 0;
}

/* nn.Linear with bias — y = x·Wᵀ + b (b skipped when NULL or unbound). */
void m4_ref_linear_bias(const float *x, int64_t n, const m4_weight *w, const m4_weight *bias,
                        float *y) {
    m4_ref_linear(x, n, w, y);
    if (!bias || !bias->data) return;
    const int64_t out = w->rows;
    float chunk[512];                                   /* bias[o0, o0 + nc), on the stack */
    for (int64_t o0 = 0; o0 < out; o0 += 512) {
        int64_t nc = out - o0 < 512 ? out - o0 : 512;
        m4_weight_row_chunk_f32(bias, 0, o0, nc, chunk);
        for (int64_t r = 0; r < n; r++)
            for (int64_t j = 0; j < nc; j++) y[r * out + o0 + j] = y[r * out + o0 + j] + chunk[j];
    }
}

/* projector — Mistral3MultiModalProjector.forward: x [P, Dv] (the selected vision features) →
 * linear_2(act(linear_1(patch_merger(norm(x))))) [M, D]. */
int m4_ref_projector(const m4_model *model, const float *x, const m4_patch_grid *grids,
                     int64_t n_images, float *out, m4_error *err) {
    const m4_config *cfg = &model->config;
    const m4_weights *w = &model->weights;
    const int64_t Dv = cfg->vision.hidden_size, D = cfg->text.hidden_size;
    if (!cfg->multimodal) return m4_fail(err, "projector: the model has no multimodal projector");
    if (w->projector_norm.cols != Dv || w->linear_1.rows != D || w->linear_1.cols != Dv ||
        w->linear_2.rows != D || w->linear_2.cols != D)
        return m4_fail(err, "projector: norm [%lld], linear_1 [%lld, %lld], linear_2 [%lld, %lld] do "
                            "not match vision hidden %lld / text hidden %lld",
                       (long long)w->projector_norm.cols, (long long)w->linear_1.rows,
                       (long long)w->linear_1.cols, (long long)w->linear_2.rows,
                       (long long)w->linear_2.cols, (long long)Dv, (long long)D);
    int64_t P = 0;
    for (int64_t n = 0; n < n_images; n++) P += grids[n].rows * grids[n].cols;
    const int64_t M = m4_ref_merged_tokens(grids, n_images, cfg->spatial_merge_size);
    float *normed = malloc(sizeof(float) * (size_t)(P * Dv));    /* [P, Dv] */
    float *merged = malloc(sizeof(float) * (size_t)(M * Dv));    /* [M, Dv] */
    float *hidden = malloc(sizeof(float) * (size_t)(M * D));     /* [M, D] */
    int rc = -1;
    if (!normed || !merged || !hidden) {
        m4_fail(err, "projector: out of memory for %lld patches", (long long)P);
        goto done;
    }
    m4_ref_rmsnorm(x, P, Dv, &w->projector_norm, (float)cfg->text.rms_norm_eps, normed);
    if (m4_ref_patch_merger(cfg, &w->patch_merger, normed, grids, n_images, merged, err)) goto done;
    m4_ref_linear_bias(merged, M, &w->linear_1, &w->linear_1_bias, hidden);
    m4_ref_activation(hidden, M * D, cfg->projector_hidden_act);
    m4_ref_linear_bias(hidden, M, &w->linear_2, &w->linear_2_bias, out);
    rc = 0;
done:
    free(normed), free(merged), free(hidden);
    return rc;
}
