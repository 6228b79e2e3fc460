/* vision.cu — the Pixtral vision tower, the Mistral3 projector and the image-feature merge on the
 * device, step for step as reference/vision.c, projector.c and multimodal.c. */
#include <math.h>
#include <string.h>

#include <vector>

#include "cuda_model.cuh"
#include "kernels/norm.cuh"
#include "kernels/rope.cuh"
#include "kernels/vision.cuh"

#define WEIGHT(field, what) m4_cuda_weight(st, (field).data, what, err)

static int64_t total_patches(const m4_patch_grid *grids, int64_t n_images) {
    int64_t P = 0;
    for (int64_t n = 0; n < n_images; n++) P += grids[n].rows * grids[n].cols;
    return P;
}

/* The patch convolution as im2col + linear over the listed patches (image, row, col). */
static int patch_rows(m4_cuda *st, const m4_pixel_batch *px, const std::vector<int32_t> &img,
                      const std::vector<int32_t> &pr, const std::vector<int32_t> &pc, float *d_out,
                      m4_error *err) {
    const m4_vision_config *v = &st->model->config.vision;
    const int64_t C = v->num_channels, p = v->patch_size, rows = (int64_t)img.size();
    const m4_dev_weight *w = WEIGHT(st->model->weights.patch_conv, "vision.patch_conv");
    if (!w) return -1;
    if (w->rows != v->hidden_size || w->cols != C * p * p)
        return m4_fail(err, "vision.patch_conv: weight is [%lld, %lld], the config implies [%lld, %lld]",
                       (long long)w->rows, (long long)w->cols, (long long)v->hidden_size, (long long)(C * p * p));
    m4_arena arena(st->stream);
    float *pixels = arena.upload(px->pixel_values, px->n * C * px->height * px->width, err);
    int32_t *d_img = arena.upload(img.data(), rows, err), *d_pr = arena.upload(pr.data(), rows, err);
    int32_t *d_pc = arena.upload(pc.data(), rows, err);
    float *cols = arena.get<float>(rows * C * p * p, err);
    if (!pixels || !d_img || !d_pr || !d_pc || !cols) return -1;
    return m4k_im2col(pixels, C, px->height, px->width, p, d_img, d_pr, d_pc, rows, cols, st->stream, err) ||
           m4_cuda_linear(st, cols, rows, *w, d_out, err);
}

/* vision.patch_conv over the whole padded batch, in the conv layout [N_img, Dv, H/p, W/p]. */
int m4_cuda_patch_conv(m4_cuda *st, const m4_pixel_batch *px, float *d_out, m4_error *err) {
    const m4_vision_config *v = &st->model->config.vision;
    const int64_t p = v->patch_size, gh = px->height / p, gw = px->width / p, Dv = v->hidden_size;
    if (px->n <= 0 || gh <= 0 || gw <= 0)
        return m4_fail(err, "vision.patch_conv: %lld images of %lld x %lld pixels hold no %lld-pixel patch",
                       (long long)px->n, (long long)px->height, (long long)px->width, (long long)p);
    std::vector<int32_t> img, pr, pc;
    for (int64_t n = 0; n < px->n; n++)
        for (int64_t r = 0; r < gh; r++)
            for (int64_t c = 0; c < gw; c++) img.push_back((int32_t)n), pr.push_back((int32_t)r), pc.push_back((int32_t)c);
    m4_arena arena(st->stream);
    float *rows = arena.get<float>(px->n * gh * gw * Dv, err);
    return !rows || patch_rows(st, px, img, pr, pc, rows, err) ||
           m4k_to_channels_first(rows, px->n, gh * gw, Dv, d_out, st->stream, err);
}

/* vision.layers.{j}.attention — PixtralAttention (eager): q, k, v projections, rotate_half RoPE
 * with the axial 2-D tables (host, reference functions), block-diagonal softmax attention over
 * each image's patches, o_proj. */
int m4_cuda_vision_attention(m4_cuda *st, int layer, const float *d_x, const m4_patch_grid *grids,
                             int64_t n_images, float *d_out, m4_vision_attn_trace *trace, m4_error *err) {
    const m4_vision_config *v = &st->model->config.vision;
    const m4_vision_layer_weights *w = &st->model->weights.vision_layers[layer];
    const int64_t Dv = v->hidden_size, hv = v->num_attention_heads, hd = v->head_dim, half = hd / 2;
    if (hv <= 0 || Dv % hv != 0 || Dv / hv != hd)
        return m4_fail(err, "vision attention: hidden_size %lld, %lld heads, head_dim %lld do not agree",
                       (long long)Dv, (long long)hv, (long long)hd);
    const int64_t P = total_patches(grids, n_images);
    if (P <= 0) return m4_fail(err, "vision attention: no patches");
    std::vector<float> inv_freq((size_t)half), cos_t((size_t)(P * half)), sin_t((size_t)(P * half));
    if (m4_ref_vision_rope_inv_freq(v, inv_freq.data(), err)) return -1;
    m4_ref_vision_rope_cos_sin(inv_freq.data(), hd, grids, n_images, cos_t.data(), sin_t.data());
    std::vector<int32_t> lo((size_t)P), hi((size_t)P);         /* each patch's image block */
    for (int64_t n = 0, start = 0; n < n_images; n++) {
        const int64_t end = start + grids[n].rows * grids[n].cols;
        for (int64_t t = start; t < end; t++) lo[(size_t)t] = (int32_t)start, hi[(size_t)t] = (int32_t)end;
        start = end;
    }
    const m4_dev_weight *wq = WEIGHT(w->q_proj, "attention.q_proj");
    const m4_dev_weight *wk = wq ? WEIGHT(w->k_proj, "attention.k_proj") : nullptr;
    const m4_dev_weight *wv = wk ? WEIGHT(w->v_proj, "attention.v_proj") : nullptr;
    const m4_dev_weight *wo = wv ? WEIGHT(w->o_proj, "attention.o_proj") : nullptr;
    if (!wo) return -1;
    m4_arena arena(st->stream);
    float *q = arena.get<float>(P * Dv, err), *k = arena.get<float>(P * Dv, err), *val = arena.get<float>(P * Dv, err);
    float *Q = arena.get<float>(P * Dv, err), *K = arena.get<float>(P * Dv, err), *o = arena.get<float>(P * Dv, err);
    float *d_cos = arena.upload(cos_t.data(), P * half, err), *d_sin = arena.upload(sin_t.data(), P * half, err);
    int32_t *d_lo = arena.upload(lo.data(), P, err), *d_hi = arena.upload(hi.data(), P, err);
    float *probs = trace && trace->attn_weights ? arena.get<float>(hv * P * P, err) : nullptr;
    if (!q || !k || !val || !Q || !K || !o || !d_cos || !d_sin || !d_lo || !d_hi || (trace && trace->attn_weights && !probs))
        return -1;
    if (m4_cuda_linear(st, d_x, P, *wq, q, err) || m4_cuda_linear(st, d_x, P, *wk, k, err) ||
        m4_cuda_linear(st, d_x, P, *wv, val, err) ||
        m4k_rope(q, Dv, hd, 1, P, hv, 0, hd, d_cos, d_sin, nullptr, 0, Q, st->stream, err) ||
        m4k_rope(k, Dv, hd, 1, P, hv, 0, hd, d_cos, d_sin, nullptr, 0, K, st->stream, err))
        return -1;
    m4k_attention_args a = {};
    a.Q = Q, a.K = K, a.V = val;
    a.B = 1, a.H = hv, a.S = P, a.T = P, a.dq = hd, a.dv = hd;
    a.v_row_stride = Dv, a.v_head_stride = hd;
    a.scale = (float)pow((double)hd, -0.5), a.causal = false;
    a.block_lo = d_lo, a.block_hi = d_hi, a.O = o, a.probs = probs;
    if (m4_cuda_attention(st, &a, err) || m4_cuda_linear(st, o, P, *wo, d_out, err)) return -1;
    if (!trace) return 0;
    /* [P, hv·hd] → [hv, P, hd] for the unrotated projections; rotated ones are already head-major */
    float *const views[3] = {trace->q, trace->k, trace->v};
    const float *const src[3] = {q, k, val};
    std::vector<float> host((size_t)(P * Dv));
    for (int i = 0; i < 3; i++) {
        if (!views[i]) continue;
        M4_CUDA_TRY(cudaMemcpyAsync(host.data(), src[i], sizeof(float) * (size_t)(P * Dv), cudaMemcpyDeviceToHost, st->stream), err);
        M4_CUDA_TRY(cudaStreamSynchronize(st->stream), err);
        for (int64_t h = 0; h < hv; h++)
            for (int64_t t = 0; t < P; t++)
                memcpy(views[i] + (h * P + t) * hd, host.data() + t * Dv + h * hd, sizeof(float) * (size_t)hd);
    }
    if (trace->q_rot) M4_CUDA_TRY(cudaMemcpyAsync(trace->q_rot, Q, sizeof(float) * (size_t)(P * Dv), cudaMemcpyDeviceToHost, st->stream), err);
    if (trace->k_rot) M4_CUDA_TRY(cudaMemcpyAsync(trace->k_rot, K, sizeof(float) * (size_t)(P * Dv), cudaMemcpyDeviceToHost, st->stream), err);
    if (probs) M4_CUDA_TRY(cudaMemcpyAsync(trace->attn_weights, probs, sizeof(float) * (size_t)(hv * P * P), cudaMemcpyDeviceToHost, st->stream), err);
    M4_CUDA_TRY(cudaStreamSynchronize(st->stream), err);
    return 0;
}

/* vision.layers.{j} — h += attention(attention_norm(h)); h += feed_forward(ffn_norm(h)). */
int m4_cuda_vision_layer(m4_cuda *st, int layer, float *d_h, const m4_patch_grid *grids,
                         int64_t n_images, m4_error *err) {
    const m4_vision_config *v = &st->model->config.vision;
    const m4_vision_layer_weights *w = &st->model->weights.vision_layers[layer];
    const int64_t Dv = v->hidden_size, P = total_patches(grids, n_images);
    const m4_dev_weight *attn_norm = WEIGHT(w->attention_norm, "attention_norm");
    const m4_dev_weight *ffn_norm = attn_norm ? WEIGHT(w->ffn_norm, "ffn_norm") : nullptr;
    if (!ffn_norm) return -1;
    m4_arena arena(st->stream);
    float *normed = arena.get<float>(P * Dv, err), *delta = arena.get<float>(P * Dv, err);
    if (!normed || !delta) return -1;
    return m4k_rmsnorm(d_h, Dv, nullptr, nullptr, attn_norm->f32(), normed, Dv, P, Dv, M4_VISION_NORM_EPS, st->stream, err) ||
           m4_cuda_vision_attention(st, layer, normed, grids, n_images, delta, nullptr, err) ||
           m4k_rmsnorm(d_h, Dv, d_h, delta, ffn_norm->f32(), normed, Dv, P, Dv, M4_VISION_NORM_EPS, st->stream, err) ||
           m4_cuda_swiglu_mlp(st, normed, P, &w->gate_proj, &w->up_proj, &w->down_proj, v->hidden_act, delta, err) ||
           m4k_add(d_h, delta, P * Dv, st->stream, err);
}

/* vision — patch conv over each image's own grid (sequence order), ln_pre, the layers up to
 * vision_feature_layer. */
int m4_cuda_vision_tower(m4_cuda *st, const m4_pixel_batch *px, float *d_features, m4_error *err) {
    const m4_config *cfg = &st->model->config;
    const m4_vision_config *v = &cfg->vision;
    if (!cfg->multimodal) return m4_fail(err, "vision: the model has no vision tower (architecture %s)", cfg->architecture);
    const int64_t L = v->num_hidden_layers, Dv = v->hidden_size;
    const int64_t layers = cfg->vision_feature_layer < 0 ? cfg->vision_feature_layer + L + 1 : cfg->vision_feature_layer;
    if (layers < 0 || layers > L)
        return m4_fail(err, "vision: vision_feature_layer %lld is outside [-%lld, %lld]",
                       (long long)cfg->vision_feature_layer, (long long)(L + 1), (long long)L);
    std::vector<m4_patch_grid> grids((size_t)(px->n > 0 ? px->n : 1));
    int64_t P;
    if (m4_ref_patch_grids(v, px, grids.data(), &P, err)) return -1;
    std::vector<int32_t> img, pr, pc;
    for (int64_t n = 0; n < px->n; n++)
        for (int64_t r = 0; r < grids[(size_t)n].rows; r++)
            for (int64_t c = 0; c < grids[(size_t)n].cols; c++) img.push_back((int32_t)n), pr.push_back((int32_t)r), pc.push_back((int32_t)c);
    const m4_dev_weight *ln_pre = WEIGHT(st->model->weights.ln_pre, "ln_pre");
    m4_arena arena(st->stream);
    float *patches = ln_pre ? arena.get<float>(P * Dv, err) : nullptr;
    if (!patches || patch_rows(st, px, img, pr, pc, patches, err) ||
        m4k_rmsnorm(patches, Dv, nullptr, nullptr, ln_pre->f32(), d_features, Dv, P, Dv, M4_VISION_NORM_EPS, st->stream, err))
        return -1;
    for (int64_t l = 0; l < layers; l++)
        if (m4_cuda_vision_layer(st, (int)l, d_features, grids.data(), px->n, err)) {
            m4_fail_context(err, "vision.layers.%lld", (long long)l);
            return -1;
        }
    return 0;
}

/* projector.patch_merger — unfold each image's m×m blocks (gather), then merging_layer. */
int m4_cuda_patch_merger(m4_cuda *st, const float *d_x, const m4_patch_grid *grids, int64_t n_images,
                         float *d_out, m4_error *err) {
    const m4_config *cfg = &st->model->config;
    const int64_t Dv = cfg->vision.hidden_size, m = cfg->spatial_merge_size, m2 = m * m;
    if (m <= 0) return m4_fail(err, "projector.patch_merger: spatial_merge_size %lld must be > 0", (long long)m);
    const m4_dev_weight *merge = WEIGHT(st->model->weights.patch_merger, "patch_merger.merging_layer");
    if (!merge) return -1;
    if (merge->rows != Dv || merge->cols != Dv * m2)
        return m4_fail(err, "projector.patch_merger: merging_layer is [%lld, %lld], the config implies [%lld, %lld]",
                       (long long)merge->rows, (long long)merge->cols, (long long)Dv, (long long)(Dv * m2));
    std::vector<int32_t> src;                     /* [M, m²] source patch of each sub-position */
    for (int64_t n = 0, base = 0; n < n_images; n++) {
        const int64_t h = grids[n].rows, w = grids[n].cols;
        for (int64_t R = 0; R < h / m; R++)
            for (int64_t Cb = 0; Cb < w / m; Cb++)
                for (int64_t dr = 0; dr < m; dr++)
                    for (int64_t dc = 0; dc < m; dc++) src.push_back((int32_t)(base + (R * m + dr) * w + Cb * m + dc));
        base += h * w;
    }
    const int64_t M = (int64_t)src.size() / m2;
    if (M <= 0) return m4_fail(err, "projector.patch_merger: no %lldx%lld block in the images", (long long)m, (long long)m);
    m4_arena arena(st->stream);
    int32_t *d_src = arena.upload(src.data(), (int64_t)src.size(), err);
    float *merged = arena.get<float>(M * Dv * m2, err);
    return !d_src || !merged || m4k_unfold(d_x, d_src, M, m2, Dv, merged, st->stream, err) ||
           m4_cuda_linear(st, merged, M, *merge, d_out, err);
}

/* projector — norm (text eps over Dv), patch_merger, linear_1 (+ bias), act, linear_2 (+ bias). */
int m4_cuda_projector(m4_cuda *st, const float *d_x, const m4_patch_grid *grids, int64_t n_images,
                      float *d_out, m4_error *err) {
    const m4_config *cfg = &st->model->config;
    const m4_weights *w = &st->model->weights;
    const int64_t Dv = cfg->vision.hidden_size, D = cfg->text.hidden_size, P = total_patches(grids, n_images);
    if (!cfg->multimodal) return m4_fail(err, "projector: the model has no multimodal projector");
    const int64_t M = m4_ref_merged_tokens(grids, n_images, cfg->spatial_merge_size);
    const m4_dev_weight *norm = WEIGHT(w->projector_norm, "projector.norm");
    const m4_dev_weight *l1 = norm ? WEIGHT(w->linear_1, "projector.linear_1") : nullptr;
    const m4_dev_weight *l2 = l1 ? WEIGHT(w->linear_2, "projector.linear_2") : nullptr;
    if (!l2) return -1;
    if (norm->cols != Dv || l1->rows != D || l1->cols != Dv || l2->rows != D || l2->cols != D)
        return m4_fail(err, "projector: norm [%lld], linear_1 [%lld, %lld], linear_2 [%lld, %lld] do not match "
                            "vision hidden %lld / text hidden %lld", (long long)norm->cols, (long long)l1->rows,
                       (long long)l1->cols, (long long)l2->rows, (long long)l2->cols, (long long)Dv, (long long)D);
    const m4_dev_weight *b1 = w->linear_1_bias.data ? WEIGHT(w->linear_1_bias, "linear_1.bias") : nullptr;
    const m4_dev_weight *b2 = w->linear_2_bias.data ? WEIGHT(w->linear_2_bias, "linear_2.bias") : nullptr;
    if ((w->linear_1_bias.data && !b1) || (w->linear_2_bias.data && !b2)) return -1;
    m4_arena arena(st->stream);
    float *normed = arena.get<float>(P * Dv, err), *merged = arena.get<float>(M * Dv, err), *hidden = arena.get<float>(M * D, err);
    if (!normed || !merged || !hidden) return -1;
    return m4k_rmsnorm(d_x, Dv, nullptr, nullptr, norm->f32(), normed, Dv, P, Dv, (float)cfg->text.rms_norm_eps, st->stream, err) ||
           m4_cuda_patch_merger(st, normed, grids, n_images, merged, err) ||
           m4_cuda_linear_bias(st, merged, M, *l1, b1, hidden, err) ||
           m4k_activation(hidden, M * D, cfg->projector_hidden_act, st->stream, err) ||
           m4_cuda_linear_bias(st, hidden, M, *l2, b2, d_out, err);
}

/* multimodal.merge — get_placeholder_mask + masked_scatter: the image-token rows, in order, take
 * the feature rows; fails (nothing written) when the counts differ. */
int m4_cuda_merge(m4_cuda *st, const int64_t *ids, int64_t n, const float *d_embeds,
                  const float *d_features, int64_t n_features, float *d_out, m4_error *err) {
    const int64_t image_token = st->model->config.image_token_index, D = st->model->config.text.hidden_size;
    std::vector<int32_t> src((size_t)n);
    int64_t used = 0;
    for (int64_t i = 0; i < n; i++) src[(size_t)i] = ids[i] == image_token ? (int32_t)used++ : -1;
    if (used != n_features)
        return m4_fail(err, "multimodal.merge: %lld image tokens in the ids but %lld image feature rows",
                       (long long)used, (long long)n_features);
    m4_arena arena(st->stream);
    int32_t *d_src = arena.upload(src.data(), n, err);
    return !d_src || m4k_merge_rows(d_embeds, d_features, d_src, n, D, d_out, st->stream, err);
}

/* Mistral3Model's first step: embed_tokens(ids), then the image-token rows replaced by the images'
 * features (vision tower → projector), d_h [B·S, D]. px NULL or empty: the plain embedding. */
int m4_cuda_prompt_embeds(m4_cuda *st, const int64_t *ids, int64_t B, int64_t S, const m4_pixel_batch *px,
                          float *d_h, m4_error *err) {
    const m4_config *cfg = &st->model->config;
    const int64_t N = B * S, D = cfg->text.hidden_size;
    if (m4_cuda_embed(st, ids, N, d_h, err)) return -1;
    if (!px || px->n <= 0) return 0;
    std::vector<m4_patch_grid> grids((size_t)px->n);
    int64_t P;
    if (m4_ref_patch_grids(&cfg->vision, px, grids.data(), &P, err)) return -1;
    const int64_t M = m4_ref_merged_tokens(grids.data(), px->n, cfg->spatial_merge_size);
    m4_arena arena(st->stream);
    float *features = arena.get<float>(P * cfg->vision.hidden_size, err), *projected = arena.get<float>(M * D, err);
    return !features || !projected || m4_cuda_vision_tower(st, px, features, err) ||
           m4_cuda_projector(st, features, grids.data(), px->n, projected, err) ||
           m4_cuda_merge(st, ids, N, d_h, projected, M, d_h, err);
}
