/* vision.c — the Pixtral vision tower (PixtralVisionModel) in HF's eager float32 form: patch
 * convolution per image, one sequence of all images' patches, ln_pre, axial 2-D RoPE,
 * block-diagonal attention layers, feature-layer selection (MODEL.md §3.1–3.5; golden/README.md
 * "Pixtral RoPE changed" for the transformers 5.24 axial form). */
#include "vision.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int m4_ref_patch_grids(const m4_vision_config *cfg, const m4_pixel_batch *px, m4_patch_grid *grids,
                       int64_t *patches, m4_error *err) {
    const int64_t p = cfg->patch_size;
    if (px->n <= 0 || px->height <= 0 || px->width <= 0)
        return m4_fail(err, "vision: empty pixel batch (%lld images of %lld x %lld)",
                       (long long)px->n, (long long)px->height, (long long)px->width);
    *patches = 0;
    for (int64_t n = 0; n < px->n; n++) {
        int64_t h = px->image_sizes[2 * n], w = px->image_sizes[2 * n + 1];
        if (h < p || w < p || h > px->height || w > px->width)
            return m4_fail(err, "vision: image %lld is %lld x %lld pixels; it must be at least one "
                                "%lld-pixel patch and fit the padded batch %lld x %lld",
                           (long long)n, (long long)h, (long long)w, (long long)p,
                           (long long)px->height, (long long)px->width);
        grids[n] = (m4_patch_grid){h / p, w / p};
        *patches += grids[n].rows * grids[n].cols;
    }
    return 0;
}

/* vision.patch_conv — nn.Conv2d(C → Dv, kernel = stride = p, bias = False) as im2col + linear:
 * patch (n, R, Cc) is the vector x[c·p·p + i·p + j] = pixel[n, c, R·p + i, Cc·p + j] (the weight's
 * own [Dv, C, p, p] order), out[n, o, R, Cc] = W[o] · x. */
int m4_ref_patch_conv(const m4_vision_config *cfg, const m4_weight *w, const m4_pixel_batch *px,
                      float *out, m4_error *err) {
    const int64_t C = cfg->num_channels, p = cfg->patch_size, Dv = cfg->hidden_size;
    const int64_t H = px->height, W = px->width, gh = H / p, gw = W / p, K = C * p * p;
    if (w->rows != Dv || w->cols != K)
        return m4_fail(err, "vision.patch_conv: weight is [%lld, %lld], the config implies [%lld, %lld]",
                       (long long)w->rows, (long long)w->cols, (long long)Dv, (long long)K);
    if (px->n <= 0 || gh <= 0 || gw <= 0)
        return m4_fail(err, "vision.patch_conv: %lld images of %lld x %lld pixels hold no %lld-pixel patch",
                       (long long)px->n, (long long)H, (long long)W, (long long)p);
    const int64_t L = gh * gw;                                   /* patches per image */
    float *cols = malloc(sizeof(float) * (size_t)(L * K));        /* [L, C·p·p] */
    float *y = malloc(sizeof(float) * (size_t)(L * Dv));          /* [L, Dv] */
    if (!cols || !y) {
        free(cols), free(y);
        return m4_fail(err, "vision.patch_conv: out of memory for %lld patches", (long long)L);
    }
    for (int64_t n = 0; n < px->n; n++) {
        const float *img = px->pixel_values + n * C * H * W;      /* [C, H, W] */
        for (int64_t R = 0; R < gh; R++)
            for (int64_t Cc = 0; Cc < gw; Cc++) {
                float *x = cols + (R * gw + Cc) * K;
                for (int64_t c = 0; c < C; c++)
                    for (int64_t i = 0; i < p; i++)
                        memcpy(x + (c * p + i) * p, img + (c * H + R * p + i) * W + Cc * p,
                               sizeof(float) * (size_t)p);
            }
        m4_ref_linear(cols, L, w, y);
        float *o = out + n * Dv * L;                              /* [Dv, gh, gw] */
        for (int64_t l = 0; l < L; l++)
            for (int64_t d = 0; d < Dv; d++) o[d * L + l] = y[l * Dv + d];
    }
    free(cols), free(y);
    return 0;
}

/* PixtralVisionModel.forward's `embed[..., :h, :w]`, `flatten(1).T`, `cat`: conv [N_img, Dv, gh,
 * gw] → patches [P, Dv], image by image, each grid row-major. */
void m4_ref_patch_flatten(const float *conv, int64_t Dv, int64_t gh, int64_t gw,
                          const m4_patch_grid *grids, int64_t n_images, float *patches) {
    float *row = patches;
    for (int64_t n = 0; n < n_images; n++) {
        const float *img = conv + n * Dv * gh * gw;
        for (int64_t r = 0; r < grids[n].rows; r++)
            for (int64_t c = 0; c < grids[n].cols; c++, row += Dv)
                for (int64_t d = 0; d < Dv; d++) row[d] = img[(d * gh + r) * gw + c];
    }
}

/* PixtralVisionRotaryEmbedding.compute_axial_rope_parameters — f[j] = 1 / theta^(2j/hd) in
 * float32 (torch: python-float base ** float32 tensor, then 1.0 / ·), inv_freq = cat(f[0::2],
 * f[1::2]): row frequencies first, column frequencies second. */
int m4_ref_vision_rope_inv_freq(const m4_vision_config *cfg, float *inv_freq, m4_error *err) {
    const int64_t hd = cfg->head_dim, half = hd / 2, quarter = hd / 4;
    if (hd <= 0 || hd % 4 != 0)
        return m4_fail(err, "vision.rope: head_dim %lld must be a positive multiple of 4 (two axes "
                            "of rotate_half pairs)", (long long)hd);
    if (!(cfg->rope_theta > 0)) return m4_fail(err, "vision.rope: rope_theta %g must be > 0", cfg->rope_theta);
    const float base = (float)cfg->rope_theta;
    for (int64_t j = 0; j < half; j++) {
        float f = 1.0f / powf(base, (float)(2 * j) / (float)hd);
        inv_freq[j % 2 == 0 ? j / 2 : quarter + j / 2] = f;
    }
    return 0;
}

/* vision.rope — PixtralVisionRotaryEmbedding.forward + recomposition_frequencies for one patch:
 * φ = [r·inv_freq[0..hd/4), c·inv_freq[hd/4..hd/2)] (position · frequency, one float32 product),
 * cos/sin of φ (attention_scaling is 1). */
void m4_ref_vision_rope_angles(const float *inv_freq, int64_t hd, int64_t r, int64_t c,
                               float *cos_out, float *sin_out) {
    const int64_t quarter = hd / 4;
    for (int64_t i = 0; i < 2 * quarter; i++) {
        float angle = (float)(i < quarter ? r : c) * inv_freq[i];
        cos_out[i] = cosf(angle);
        sin_out[i] = sinf(angle);
    }
}

/* vision.rope over a batch: the patches of every image in sequence order, (row, col) from the
 * image's own grid (HF's meshgrid position_ids [P, 2]). cos/sin [P, hd/2]. */
void m4_ref_vision_rope_cos_sin(const float *inv_freq, int64_t hd, const m4_patch_grid *grids,
                                int64_t n_images, float *cos_out, float *sin_out) {
    const int64_t half = hd / 2;
    int64_t t = 0;
    for (int64_t n = 0; n < n_images; n++)
        for (int64_t r = 0; r < grids[n].rows; r++)
            for (int64_t c = 0; c < grids[n].cols; c++, t++)
                m4_ref_vision_rope_angles(inv_freq, hd, r, c, cos_out + t * half, sin_out + t * half);
}

/* generate_block_attention_mask — [P, P]: 0 inside each image's diagonal block, −FLT_MAX
 * (finfo(float32).min) elsewhere. */
void m4_ref_vision_block_mask(const m4_patch_grid *grids, int64_t n_images, float *mask) {
    int64_t P = 0;
    for (int64_t n = 0; n < n_images; n++) P += grids[n].rows * grids[n].cols;
    for (int64_t i = 0; i < P * P; i++) mask[i] = -FLT_MAX;
    int64_t start = 0;
    for (int64_t n = 0; n < n_images; n++) {
        int64_t end = start + grids[n].rows * grids[n].cols;
        for (int64_t i = start; i < end; i++)
            for (int64_t j = start; j < end; j++) mask[i * P + j] = 0.0f;
        start = end;
    }
}

static int check_linear(const m4_weight *w, int64_t rows, int64_t cols, const char *what, m4_error *err) {
    if (!w->data) return m4_fail(err, "vision: %s weight is missing", what);
    if (w->rows != rows || w->cols != cols)
        return m4_fail(err, "vision: %s is [%lld, %lld], the config implies [%lld, %lld]", what,
                       (long long)w->rows, (long long)w->cols, (long long)rows, (long long)cols);
    return 0;
}

/* vision.layers.{j}.attention — PixtralAttention.forward with eager_attention_forward:
 * q, k, v = x·Wᵀ viewed [P, hv, hd]; q, k ← q·cos + rotate_half(q)·sin (pair d, d + hd/2);
 * per head and query i of image block [s, e): z_j = (q_i·k_j)·hd^-0.5 for j in the block (every
 * other key gets finfo.min added in HF, i.e. probability exactly 0), P = softmax(z) in float32,
 * o_i = Σ_j P_j v_j; out = o_proj(o) with o [P, hv·hd] head-major. */
int m4_ref_vision_attention(const m4_vision_config *cfg, const m4_vision_layer_weights *w,
                            const float *x, const m4_patch_grid *grids, int64_t n_images,
                            float *out, m4_vision_attn_trace *trace, m4_error *err) {
    const int64_t Dv = cfg->hidden_size, hv = cfg->num_attention_heads, hd = Dv / hv, half = hd / 2;
    if (hv <= 0 || Dv % hv != 0 || hd != cfg->head_dim)
        return m4_fail(err, "vision attention: hidden_size %lld, %lld heads, head_dim %lld do not agree",
                       (long long)Dv, (long long)hv, (long long)cfg->head_dim);
    if (check_linear(&w->q_proj, Dv, Dv, "attention.q_proj", err) ||
        check_linear(&w->k_proj, Dv, Dv, "attention.k_proj", err) ||
        check_linear(&w->v_proj, Dv, Dv, "attention.v_proj", err) ||
        check_linear(&w->o_proj, Dv, Dv, "attention.o_proj", err))
        return -1;
    int64_t P = 0, max_block = 0;
    for (int64_t n = 0; n < n_images; n++) {
        int64_t len = grids[n].rows * grids[n].cols;
        P += len;
        max_block = len > max_block ? len : max_block;
    }
    if (P <= 0) return m4_fail(err, "vision attention: no patches");

    const size_t floats = (size_t)(half + 2 * P * half + 3 * P * Dv + 2 * hv * P * hd + P * Dv +
                                   hv * max_block);
    float *mem = malloc(sizeof(float) * floats);
    int64_t *block = malloc(sizeof(int64_t) * (size_t)(2 * P));
    if (!mem || !block) {
        free(mem), free(block);
        return m4_fail(err, "vision attention: out of memory for %lld patches", (long long)P);
    }
    float *p = mem;
    float *inv_freq = p;  p += half;             /* [hd/2] */
    float *cos_t = p;     p += P * half;         /* [P, hd/2] */
    float *sin_t = p;     p += P * half;         /* [P, hd/2] */
    float *q = p;         p += P * Dv;           /* [P, hv·hd] */
    float *k = p;         p += P * Dv;           /* [P, hv·hd] */
    float *v = p;         p += P * Dv;           /* [P, hv·hd] */
    float *Q = p;         p += hv * P * hd;      /* [hv, P, hd] rotated */
    float *K = p;         p += hv * P * hd;      /* [hv, P, hd] rotated */
    float *o = p;         p += P * Dv;           /* [P, hv·hd] before o_proj */
    float *scores = p;    p += hv * max_block;   /* [hv, max_block]: one score row per head */
    int64_t *block_start = block, *block_end = block + P;  /* [P] the image block of each patch */

    if (m4_ref_vision_rope_inv_freq(cfg, inv_freq, err)) {
        free(mem), free(block);
        return -1;
    }
    m4_ref_vision_rope_cos_sin(inv_freq, hd, grids, n_images, cos_t, sin_t);
    for (int64_t n = 0, start = 0; n < n_images; n++) {
        int64_t end = start + grids[n].rows * grids[n].cols;
        for (int64_t t = start; t < end; t++) block_start[t] = start, block_end[t] = end;
        start = end;
    }

    m4_ref_linear(x, P, &w->q_proj, q);
    m4_ref_linear(x, P, &w->k_proj, k);
    m4_ref_linear(x, P, &w->v_proj, v);
    for (int64_t h = 0; h < hv; h++)
        for (int64_t t = 0; t < P; t++) {
            m4_ref_apply_rope(q + t * Dv + h * hd, Q + (h * P + t) * hd, hd, cos_t + t * half,
                              sin_t + t * half, 0);
            m4_ref_apply_rope(k + t * Dv + h * hd, K + (h * P + t) * hd, hd, cos_t + t * half,
                              sin_t + t * half, 0);
        }

    const float scale = (float)pow((double)hd, -0.5);
    float *probs = trace ? trace->attn_weights : NULL;
    if (probs)
        for (int64_t i = 0; i < hv * P * P; i++) probs[i] = 0.0f;
#pragma omp parallel for schedule(static)
    for (int64_t h = 0; h < hv; h++) {
        float *z = scores + h * max_block;
        for (int64_t i = 0; i < P; i++) {
            const int64_t s = block_start[i], len = block_end[i] - s;
            const float *qi = Q + (h * P + i) * hd;
            for (int64_t j = 0; j < len; j++) z[j] = m4_ref_dot(qi, K + (h * P + s + j) * hd, hd) * scale;
            m4_ref_softmax(z, len);
            float *oi = o + i * Dv + h * hd;                          /* [hd] */
            for (int64_t d = 0; d < hd; d++) oi[d] = 0.0f;
            for (int64_t j = 0; j < len; j++) {
                const float *vj = v + (s + j) * Dv + h * hd;
                for (int64_t d = 0; d < hd; d++) oi[d] += z[j] * vj[d];
            }
            if (probs) memcpy(probs + (h * P + i) * P + s, z, sizeof(float) * (size_t)len);
        }
    }
    m4_ref_linear(o, P, &w->o_proj, out);

    if (trace) {
        /* [P, hv·hd] → [hv, P, hd] for the unrotated projections */
        float *const views[3] = {trace->q, trace->k, trace->v};
        const float *const src[3] = {q, k, v};
        for (int a = 0; a < 3; a++)
            if (views[a])
                for (int64_t h = 0; h < hv; h++)
                    for (int64_t t = 0; t < P; t++)
                        memcpy(views[a] + (h * P + t) * hd, src[a] + t * Dv + h * hd, sizeof(float) * (size_t)hd);
        if (trace->q_rot) memcpy(trace->q_rot, Q, sizeof(float) * (size_t)(hv * P * hd));
        if (trace->k_rot) memcpy(trace->k_rot, K, sizeof(float) * (size_t)(hv * P * hd));
    }
    free(mem), free(block);
    return 0;
}

/* vision.layers.{j}.feed_forward — PixtralMLP: down(act(x·gateᵀ) ⊙ (x·upᵀ)), act = hidden_act. */
int m4_ref_vision_feed_forward(const m4_vision_config *cfg, const m4_vision_layer_weights *w,
                               const float *x, int64_t n, float *out, m4_error *err) {
    const int64_t Dv = cfg->hidden_size, Iv = cfg->intermediate_size;
    if (check_linear(&w->gate_proj, Iv, Dv, "feed_forward.gate_proj", err) ||
        check_linear(&w->up_proj, Iv, Dv, "feed_forward.up_proj", err) ||
        check_linear(&w->down_proj, Dv, Iv, "feed_forward.down_proj", err))
        return -1;
    return m4_ref_swiglu_mlp(x, n, &w->gate_proj, &w->up_proj, &w->down_proj, cfg->hidden_act, out, err);
}

/* vision.layers.{j} — PixtralAttentionLayer.forward, h [P, Dv] in place:
 * h = h + attention(attention_norm(h)); h = h + feed_forward(ffn_norm(h)). */
int m4_ref_vision_layer(const m4_vision_config *cfg, const m4_vision_layer_weights *w, float *h,
                        const m4_patch_grid *grids, int64_t n_images, m4_error *err) {
    const int64_t Dv = cfg->hidden_size;
    int64_t P = 0;
    for (int64_t n = 0; n < n_images; n++) P += grids[n].rows * grids[n].cols;
    if (check_linear(&w->attention_norm, 1, Dv, "attention_norm", err) ||
        check_linear(&w->ffn_norm, 1, Dv, "ffn_norm", err))
        return -1;
    float *normed = malloc(sizeof(float) * (size_t)(P * Dv));     /* [P, Dv] */
    float *delta = malloc(sizeof(float) * (size_t)(P * Dv));      /* [P, Dv] sublayer output */
    int rc = -1;
    if (!normed || !delta) {
        m4_fail(err, "vision layer: out of memory for %lld patches", (long long)P);
        goto done;
    }
    m4_ref_rmsnorm(h, P, Dv, &w->attention_norm, M4_VISION_NORM_EPS, normed);
    if (m4_ref_vision_attention(cfg, w, normed, grids, n_images, delta, NULL, err)) goto done;
    for (int64_t i = 0; i < P * Dv; i++) h[i] = h[i] + delta[i];
    m4_ref_rmsnorm(h, P, Dv, &w->ffn_norm, M4_VISION_NORM_EPS, normed);
    if (m4_ref_vision_feed_forward(cfg, w, normed, P, delta, err)) goto done;
    for (int64_t i = 0; i < P * Dv; i++) h[i] = h[i] + delta[i];
    rc = 0;
done:
    free(normed), free(delta);
    return rc;
}

/* vision — PixtralVisionModel.forward (patch_conv, flatten, ln_pre, the transformer layers) up to
 * hidden_states[vision_feature_layer]: features [P, Dv]. */
int m4_ref_vision_tower(const m4_model *model, const m4_pixel_batch *px, float *features,
                        m4_error *err) {
    const m4_config *cfg = &model->config;
    const m4_vision_config *v = &cfg->vision;
    const m4_weights *w = &model->weights;
    if (!cfg->multimodal || !w->vision_layers)
        return m4_fail(err, "vision: the model has no vision tower (architecture %s)", cfg->architecture);
    const int64_t L = v->num_hidden_layers, Dv = v->hidden_size, p = v->patch_size;
    int64_t layers = cfg->vision_feature_layer < 0 ? cfg->vision_feature_layer + L + 1
                                                    : cfg->vision_feature_layer;
    if (layers < 0 || layers > L)
        return m4_fail(err, "vision: vision_feature_layer %lld is outside [-%lld, %lld]",
                       (long long)cfg->vision_feature_layer, (long long)(L + 1), (long long)L);
    if (check_linear(&w->ln_pre, 1, Dv, "ln_pre", err)) return -1;
    m4_patch_grid *grids = malloc(sizeof *grids * (size_t)(px->n > 0 ? px->n : 1));
    float *conv = NULL, *patches = NULL;
    int64_t P;
    int rc = -1;
    if (!grids) return m4_fail(err, "vision: out of memory");
    if (m4_ref_patch_grids(v, px, grids, &P, err)) goto done;
    const int64_t gh = px->height / p, gw = px->width / p;
    conv = malloc(sizeof(float) * (size_t)(px->n * Dv * gh * gw));   /* [N_img, Dv, gh, gw] */
    patches = malloc(sizeof(float) * (size_t)(P * Dv));                     /* [P, Dv] */
    if (!conv || !patches) {
        m4_fail(err, "vision: out of memory for %lld patches", (long long)P);
        goto done;
    }
    if (m4_ref_patch_conv(v, &w->patch_conv, px, conv, err)) goto done;
    m4_ref_patch_flatten(conv, Dv, gh, gw, grids, px->n, patches);
    m4_ref_rmsnorm(patches, P, Dv, &w->ln_pre, M4_VISION_NORM_EPS, features);
    for (int64_t l = 0; l < layers; l++)
        if (m4_ref_vision_layer(v, &w->vision_layers[l], features, grids, px->n, err)) {
            m4_fail_context(err, "vision.layers.%lld", (long long)l);
            goto done;
        }
    rc = 0;
done:
    free(grids), free(conv), free(patches);
    return rc;
}
