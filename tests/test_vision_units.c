/* test_vision_units.c — the vision path's pieces on small hand-checkable cases: the axial 2-D RoPE
 * angles of a known patch (MODEL.md §3.2), the patch merger's channel interleave on a hand grid
 * (§3.6), the block-diagonal mask and the attention's independence across images (§3.3), Pixtral
 * attention against a naive double-precision transcription, the patch convolution and flatten
 * (§3.1), the vision_feature_layer selection (§3.5), and the [IMG] scatter with its count check,
 * alone and in the whole-model forward (§3.7). */
#include "vision.h"
#include "testutil.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static m4_weight f32w(const float *data, int64_t rows, int64_t cols) {
    return (m4_weight){.name = "test", .dtype = M4_DTYPE_F32, .rows = rows, .cols = cols,
                       .data = (const uint8_t *)data, .scale = 1.0f};
}

static void assert_near(double got, double want, double tol, const char *what, int i) {
    if (!(fabs(got - want) <= tol * fmax(1.0, fabs(want))))
        fail_msg("%s[%d]: got %.9g, want %.9g (tol %g)", what, i, got, want, tol);
}

/* A deterministic pseudo-random float in [-1, 1). */
static float rnd(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

static float *rnd_array(int64_t n, uint32_t seed, float scale, float offset) {
    float *a = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) a[i] = offset + scale * rnd(&seed);
    return a;
}

/* The published Pixtral config (MODEL.md §1.2), by hand. */
static m4_vision_config published_vision_config(void) {
    m4_vision_config v;
    memset(&v, 0, sizeof v);
    v.hidden_size = 1024, v.intermediate_size = 4096, v.num_hidden_layers = 24;
    v.num_attention_heads = 16, v.head_dim = 64, v.num_channels = 3, v.image_size = 1540;
    v.patch_size = 14, v.hidden_act = M4_ACT_SILU, v.rope_theta = 10000.0;
    return v;
}

/* ---- vision.rope ------------------------------------------------------------------------------- */

/* Patch (r, c) = (3, 5) of the published config: head_dim 64, f[j] = 10000^(−j/32). The first 16
 * angles are r·f[0], r·f[2], …, r·f[30]; the last 16 are c·f[1], c·f[3], …, c·f[31]. */
static void rope_angle_of_a_known_patch(void **state) {
    m4_vision_config v = published_vision_config();
    float inv_freq[32], cos_v[32], sin_v[32];
    m4_error err;
    assert_int_equal(m4_ref_vision_rope_inv_freq(&v, inv_freq, &err), 0);
    assert_near(inv_freq[0], 1.0, 1e-7, "inv_freq", 0);
    assert_near(inv_freq[1], 0.5623413324356079, 1e-6, "inv_freq", 1);       /* f[2] = 10000^(-1/16) */
    assert_near(inv_freq[16], 0.7498942017555237, 1e-6, "inv_freq", 16);     /* f[1] = 10000^(-1/32) */
    assert_near(inv_freq[31], pow(10000.0, -31.0 / 32.0), 1e-6, "inv_freq", 31);
    m4_ref_vision_rope_angles(inv_freq, 64, 3, 5, cos_v, sin_v);
    for (int i = 0; i < 16; i++) {
        double row = 3.0 * pow(10000.0, -(2.0 * i) / 32.0), col = 5.0 * pow(10000.0, -(2.0 * i + 1) / 32.0);
        assert_near(cos_v[i], cos(row), 1e-6, "cos row", i);
        assert_near(sin_v[i], sin(row), 1e-6, "sin row", i);
        assert_near(cos_v[16 + i], cos(col), 1e-6, "cos col", i);
        assert_near(sin_v[16 + i], sin(col), 1e-6, "sin col", i);
    }
    /* the two hand-checkable ones: angle 0 = 3 rad, angle 16 = 5·0.7498942 = 3.749471 rad */
    assert_near(sin_v[0], 0.1411200080598672, 1e-6, "sin(3)", 0);
    assert_near(cos_v[16], cos(3.7494710087776184), 1e-6, "cos(3.749471)", 16);
    /* patch (0, 0) is not rotated */
    m4_ref_vision_rope_angles(inv_freq, 64, 0, 0, cos_v, sin_v);
    for (int i = 0; i < 32; i++) assert_true(cos_v[i] == 1.0f && sin_v[i] == 0.0f);
}

/* Positions restart at (0, 0) for every image and use the image's own grid width. */
static void rope_rows_follow_each_image_grid(void **state) {
    m4_vision_config v = published_vision_config();
    float inv_freq[32];
    m4_error err;
    assert_int_equal(m4_ref_vision_rope_inv_freq(&v, inv_freq, &err), 0);
    m4_patch_grid grids[2] = {{2, 3}, {1, 2}};   /* patches (0,0) (0,1) (0,2) (1,0) … then (0,0) (0,1) */
    float cos_t[8 * 32], sin_t[8 * 32], cw[32], sw[32];
    m4_ref_vision_rope_cos_sin(inv_freq, 64, grids, 2, cos_t, sin_t);
    const int64_t rc[8][2] = {{0, 0}, {0, 1}, {0, 2}, {1, 0}, {1, 1}, {1, 2}, {0, 0}, {0, 1}};
    for (int t = 0; t < 8; t++) {
        m4_ref_vision_rope_angles(inv_freq, 64, rc[t][0], rc[t][1], cw, sw);
        assert_memory_equal(cos_t + t * 32, cw, sizeof cw);
        assert_memory_equal(sin_t + t * 32, sw, sizeof sw);
    }
}

/* ---- the block-diagonal mask and attention --------------------------------------------------- */

static void block_mask_is_per_image(void **state) {
    m4_patch_grid grids[2] = {{1, 2}, {1, 3}};   /* P = 5: patches 0–1 image 0, 2–4 image 1 */
    float mask[25];
    m4_ref_vision_block_mask(grids, 2, mask);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) {
            bool same = (i < 2) == (j < 2);
            if (same ? mask[i * 5 + j] != 0.0f : mask[i * 5 + j] != -FLT_MAX)
                fail_msg("mask[%d][%d] = %g", i, j, mask[i * 5 + j]);
        }
}

/* A tiny Pixtral layer: Dv 8, 2 heads of 4, MLP 12. Weights owned by the struct. */
typedef struct {
    m4_vision_config cfg;
    m4_vision_layer_weights w;
    float *data[9];
} tiny_layer;

static void tiny_layer_init(tiny_layer *t, uint32_t seed) {
    memset(t, 0, sizeof *t);
    m4_vision_config *v = &t->cfg;
    v->hidden_size = 8, v->intermediate_size = 12, v->num_hidden_layers = 2;
    v->num_attention_heads = 2, v->head_dim = 4, v->num_channels = 2, v->image_size = 8;
    v->patch_size = 2, v->hidden_act = M4_ACT_SILU, v->rope_theta = 100.0;
    const int64_t D = 8, I = 12;
    for (int a = 0; a < 4; a++) t->data[a] = rnd_array(D * D, seed + a, 0.5f, 0.0f);
    t->data[4] = rnd_array(I * D, seed + 4, 0.5f, 0.0f);
    t->data[5] = rnd_array(I * D, seed + 5, 0.5f, 0.0f);
    t->data[6] = rnd_array(D * I, seed + 6, 0.5f, 0.0f);
    t->data[7] = rnd_array(D, seed + 7, 0.1f, 1.0f);
    t->data[8] = rnd_array(D, seed + 8, 0.1f, 1.0f);
    m4_vision_layer_weights *w = &t->w;
    w->q_proj = f32w(t->data[0], D, D), w->k_proj = f32w(t->data[1], D, D);
    w->v_proj = f32w(t->data[2], D, D), w->o_proj = f32w(t->data[3], D, D);
    w->gate_proj = f32w(t->data[4], I, D), w->up_proj = f32w(t->data[5], I, D);
    w->down_proj = f32w(t->data[6], D, I);
    w->attention_norm = f32w(t->data[7], 1, D), w->ffn_norm = f32w(t->data[8], 1, D);
}

static void tiny_layer_free(tiny_layer *t) {
    for (int a = 0; a < 9; a++) free(t->data[a]);
}

/* PixtralAttention transcribed naively in double: rotate_half pairs (d, d + hd/2) at angle
 * φ[d mod hd/2], rows r·f[even] then columns c·f[odd]; scores · hd^-0.5 over the query's image. */
static void naive_attention(const tiny_layer *t, const float *x, const m4_patch_grid *grids, int n_images,
                            double *out) {
    const int D = 8, H = 2, hd = 4, half = 2;
    int P = 0, img[64], r_of[64], c_of[64];
    for (int n = 0; n < n_images; n++)
        for (int r = 0; r < grids[n].rows; r++)
            for (int c = 0; c < grids[n].cols; c++, P++) img[P] = n, r_of[P] = r, c_of[P] = c;
    double q[64][8], k[64][8], v[64][8], o[64][8];
    const float *W[3] = {t->data[0], t->data[1], t->data[2]};
    for (int p = 0; p < P; p++)
        for (int d = 0; d < D; d++) {
            double acc[3] = {0, 0, 0};
            for (int a = 0; a < 3; a++)
                for (int e = 0; e < D; e++) acc[a] += (double)W[a][d * D + e] * x[p * D + e];
            q[p][d] = acc[0], k[p][d] = acc[1], v[p][d] = acc[2];
        }
    /* f[j] = theta^(−2j/hd), j < hd/2: row uses f[0], column uses f[1] */
    double f[2] = {1.0, pow(100.0, -2.0 / 4.0)};
    for (int p = 0; p < P; p++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < half; i++) {
                double angle = i == 0 ? r_of[p] * f[0] : c_of[p] * f[1];
                double *vecs[2] = {q[p], k[p]};
                for (int a = 0; a < 2; a++) {
                    double x1 = vecs[a][h * hd + i], x2 = vecs[a][h * hd + half + i];
                    vecs[a][h * hd + i] = x1 * cos(angle) - x2 * sin(angle);
                    vecs[a][h * hd + half + i] = x2 * cos(angle) + x1 * sin(angle);
                }
            }
    for (int h = 0; h < H; h++)
        for (int i = 0; i < P; i++) {
            double z[64], max = -INFINITY, sum = 0;
            for (int j = 0; j < P; j++) {
                z[j] = -INFINITY;
                if (img[j] != img[i]) continue;
                z[j] = 0;
                for (int d = 0; d < hd; d++) z[j] += q[i][h * hd + d] * k[j][h * hd + d];
                z[j] *= 0.5;                                         /* 4^-0.5 */
                max = fmax(max, z[j]);
            }
            for (int j = 0; j < P; j++) sum += z[j] == -INFINITY ? 0 : exp(z[j] - max);
            for (int d = 0; d < hd; d++) {
                double acc = 0;
                for (int j = 0; j < P; j++)
                    if (z[j] != -INFINITY) acc += exp(z[j] - max) / sum * v[j][h * hd + d];
                o[i][h * hd + d] = acc;
            }
        }
    for (int p = 0; p < P; p++)
        for (int d = 0; d < D; d++) {
            double acc = 0;
            for (int e = 0; e < D; e++) acc += (double)t->data[3][d * D + e] * o[p][e];
            out[p * D + d] = acc;
        }
}

static void attention_matches_naive_transcription(void **state) {
    tiny_layer t;
    tiny_layer_init(&t, 11);
    m4_patch_grid grids[2] = {{2, 3}, {3, 1}};      /* P = 9 */
    float *x = rnd_array(9 * 8, 99, 1.0f, 0.0f), out[72];
    double want[72];
    float weights[2 * 9 * 9];
    m4_vision_attn_trace trace = {.attn_weights = weights};
    m4_error err;
    assert_int_equal(m4_ref_vision_attention(&t.cfg, &t.w, x, grids, 2, out, &trace, &err), 0);
    naive_attention(&t, x, grids, 2, want);
    for (int i = 0; i < 72; i++) assert_near(out[i], want[i], 2e-5, "attention", i);
    /* the weights of a query are 0 outside its own image and sum to 1 inside */
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 9; i++) {
            double sum = 0;
            for (int j = 0; j < 9; j++) {
                float pij = weights[(h * 9 + i) * 9 + j];
                if ((i < 6) != (j < 6)) assert_true(pij == 0.0f);
                sum += pij;
            }
            assert_near(sum, 1.0, 1e-6, "weights row sum", i);
        }
    free(x);
    tiny_layer_free(&t);
}

/* Changing the second image's patches leaves the first image's attention output bit-identical. */
static void images_do_not_attend_to_each_other(void **state) {
    tiny_layer t;
    tiny_layer_init(&t, 21);
    m4_patch_grid grids[2] = {{2, 2}, {2, 2}};
    float *x = rnd_array(8 * 8, 5, 1.0f, 0.0f), a[64], b[64];
    m4_error err;
    assert_int_equal(m4_ref_vision_attention(&t.cfg, &t.w, x, grids, 2, a, NULL, &err), 0);
    for (int i = 4 * 8; i < 8 * 8; i++) x[i] = -3.0f * x[i] + 0.5f;
    assert_int_equal(m4_ref_vision_attention(&t.cfg, &t.w, x, grids, 2, b, NULL, &err), 0);
    assert_memory_equal(a, b, sizeof(float) * 4 * 8);
    assert_memory_not_equal(a + 32, b + 32, sizeof(float) * 4 * 8);
    free(x);
    tiny_layer_free(&t);
}

/* ---- patch conv, grids, flatten --------------------------------------------------------------- */

static void patch_conv_matches_direct_sum(void **state) {
    tiny_layer t;
    tiny_layer_init(&t, 31);                        /* C 2, p 2, Dv 8 */
    const int N = 2, C = 2, H = 4, W = 6, p = 2, Dv = 8, gh = 2, gw = 3;
    float *px = rnd_array(N * C * H * W, 7, 1.0f, 0.0f), *wt = rnd_array(Dv * C * p * p, 8, 0.5f, 0.0f);
    m4_weight conv_w = f32w(wt, Dv, C * p * p);
    int64_t sizes[4] = {4, 6, 2, 4};                /* image 1 is 2×4 pixels inside the 4×6 batch */
    m4_pixel_batch batch = {.pixel_values = px, .image_sizes = sizes, .n = N, .height = H, .width = W};
    float out[2 * 8 * 2 * 3];
    m4_error err;
    assert_int_equal(m4_ref_patch_conv(&t.cfg, &conv_w, &batch, out, &err), 0);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < Dv; o++)
            for (int R = 0; R < gh; R++)
                for (int Cc = 0; Cc < gw; Cc++) {
                    double acc = 0;
                    for (int c = 0; c < C; c++)
                        for (int i = 0; i < p; i++)
                            for (int j = 0; j < p; j++)
                                acc += (double)wt[((o * C + c) * p + i) * p + j] *
                                       px[((n * C + c) * H + R * p + i) * W + Cc * p + j];
                    int idx = ((n * Dv + o) * gh + R) * gw + Cc;
                    assert_near(out[idx], acc, 1e-5, "conv", idx);
                }
    /* grids: 2×3 and 1×2; flatten keeps image 1's top-left 1×2 */
    m4_patch_grid grids[2];
    int64_t P;
    assert_int_equal(m4_ref_patch_grids(&t.cfg, &batch, grids, &P, &err), 0);
    assert_int_equal(P, 8);
    assert_int_equal(grids[1].rows, 1);
    assert_int_equal(grids[1].cols, 2);
    float patches[8 * 8];
    m4_ref_patch_flatten(out, Dv, gh, gw, grids, 2, patches);
    for (int d = 0; d < Dv; d++) {
        assert_true(patches[4 * Dv + d] == out[(0 * gh + 1) * gw + 1 + d * gh * gw]);   /* image 0 (1,1) */
        assert_true(patches[7 * Dv + d] == out[Dv * gh * gw + d * gh * gw + 1]);        /* image 1 (0,1) */
    }
    /* an image larger than the padded batch, or smaller than a patch, is refused */
    int64_t too_big[4] = {4, 8, 2, 4}, too_small[4] = {4, 6, 1, 4};
    batch.image_sizes = too_big;
    assert_int_equal(m4_ref_patch_grids(&t.cfg, &batch, grids, &P, &err), -1);
    m4t_assert_contains(err.msg, "image 0 is 4 x 8 pixels");
    batch.image_sizes = too_small;
    assert_int_equal(m4_ref_patch_grids(&t.cfg, &batch, grids, &P, &err), -1);
    m4t_assert_contains(err.msg, "image 1");
    free(px), free(wt);
    tiny_layer_free(&t);
}

/* ---- projector.patch_merger ------------------------------------------------------------------- */

/* Dv = 2, m = 2. Image 0 is a 2×4 grid (patches p0…p7), image 1 a 3×3 grid (p8…p16; its last row
 * and column are dropped). x[p][ch] = 10·p + ch. Element 4·ch + k, k = 2·dr + dc. */
static void patch_merger_interleaves_channels(void **state) {
    m4_patch_grid grids[2] = {{2, 4}, {3, 3}};
    float x[17 * 2];
    for (int p = 0; p < 17; p++) x[2 * p] = 10.0f * p, x[2 * p + 1] = 10.0f * p + 1;
    assert_int_equal(m4_ref_merged_tokens(grids, 2, 2), 3);
    float out[3 * 8];
    m4_ref_patch_unfold(x, 2, 2, grids, 2, out);
    const float want[3][8] = {
        {0, 10, 40, 50, 1, 11, 41, 51},        /* block (0,0): p0 p1 / p4 p5 */
        {20, 30, 60, 70, 21, 31, 61, 71},      /* block (0,1): p2 p3 / p6 p7 */
        {80, 90, 110, 120, 81, 91, 111, 121},  /* image 1 block (0,0): p8 p9 / p11 p12 */
    };
    assert_memory_equal(out, want, sizeof want);

    /* merging_layer then reads that vector: a weight picking element 4·1 + 2 (channel 1, bottom-left) */
    m4_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.vision.hidden_size = 2, cfg.spatial_merge_size = 2;
    float wt[2 * 8] = {0};
    wt[0 * 8 + 6] = 1.0f, wt[1 * 8 + 3] = 1.0f;   /* out0 = ch1 of k=2; out1 = ch0 of k=3 */
    m4_weight merging = f32w(wt, 2, 8);
    float merged[3 * 2];
    m4_error err;
    assert_int_equal(m4_ref_patch_merger(&cfg, &merging, x, grids, 2, merged, &err), 0);
    const float want_merged[6] = {41, 50, 61, 70, 111, 120};
    assert_memory_equal(merged, want_merged, sizeof want_merged);
}

/* ---- multimodal.merge ------------------------------------------------------------------------- */

static void scatter_fills_img_rows_in_order_and_checks_the_count(void **state) {
    const int64_t ids[6] = {1, 10, 10, 5, 10, 12};
    float embeds[6 * 2], original[6 * 2];
    for (int i = 0; i < 12; i++) embeds[i] = original[i] = (float)i;
    const float features[3 * 2] = {100, 101, 200, 201, 300, 301};
    m4_error err;
    /* two feature rows for three [IMG] tokens: refused, nothing written */
    assert_int_equal(m4_ref_merge_image_features(ids, 6, 10, features, 2, 2, embeds, &err), -1);
    m4t_assert_contains(err.msg, "3 [IMG] (id 10) tokens, 2 feature rows");
    assert_memory_equal(embeds, original, sizeof embeds);
    /* four is refused too */
    const float four[4 * 2] = {0};
    assert_int_equal(m4_ref_merge_image_features(ids, 6, 10, four, 4, 2, embeds, &err), -1);
    /* three: rows 1, 2, 4 become the features in order, the others keep their embedding */
    assert_int_equal(m4_ref_merge_image_features(ids, 6, 10, features, 3, 2, embeds, &err), 0);
    const float want[12] = {0, 1, 100, 101, 200, 201, 6, 7, 300, 301, 10, 11};
    assert_memory_equal(embeds, want, sizeof want);
}

/* The whole-model forward checks the count before any vision work: the multimodal case's model
 * (patch 4, merge 2) with two images of 24×32 and 32×24 pixels gives 2·(3·4) = 24 features. */
static void forward_refuses_a_wrong_img_count(void **state) {
    char *dir = m4t_source_path("golden/cases/multimodal/model");
    m4_model model;
    m4_error err;
    if (m4_model_open(dir, &model, &err) != 0) fail_msg("%s", err.msg);
    float *px = calloc(2 * 3 * 32 * 32, sizeof(float));
    int64_t sizes[4] = {24, 32, 32, 24};
    m4_pixel_batch batch = {.pixel_values = px, .image_sizes = sizes, .n = 2, .height = 32, .width = 32};
    int64_t ids[30];
    for (int i = 0; i < 30; i++) ids[i] = i < 23 ? model.config.image_token_index : 20 + i;
    float *logits = malloc(sizeof(float) * 30 * (size_t)model.config.text.vocab_size);
    assert_int_equal(m4_ref_multimodal_forward(&model, ids, 1, 30, &batch, NULL, NULL, 0, M4_SOFTMAX_SCALE_BASE,
                                               logits, &err), -1);
    m4t_assert_contains(err.msg, "23 [IMG] (id 10) tokens, 2 images give 24 feature rows");
    ids[23] = model.config.image_token_index;                 /* 24: it runs */
    assert_int_equal(m4_ref_multimodal_forward(&model, ids, 1, 30, &batch, NULL, NULL, 0, M4_SOFTMAX_SCALE_BASE,
                                               logits, &err), 0);
    free(px), free(logits), free(dir);
    m4_model_close(&model);
}

/* ---- vision_feature_layer ---------------------------------------------------------------------- */

/* hidden_states[k] of PixtralTransformer: 0 = ln_pre output, k = after layer k−1, −1 = the last. */
static void feature_layer_selects_the_hidden_state(void **state) {
    tiny_layer l0, l1;
    tiny_layer_init(&l0, 41);
    tiny_layer_init(&l1, 51);
    m4_model model;
    memset(&model, 0, sizeof model);
    model.config.multimodal = true;
    model.config.vision = l0.cfg;
    m4_vision_layer_weights layers[2] = {l0.w, l1.w};
    model.weights.vision_layers = layers;
    float *conv_w = rnd_array(8 * 2 * 2 * 2, 61, 0.5f, 0.0f), *ln_w = rnd_array(8, 62, 0.1f, 1.0f);
    model.weights.patch_conv = f32w(conv_w, 8, 8);
    model.weights.ln_pre = f32w(ln_w, 1, 8);
    float *px = rnd_array(1 * 2 * 4 * 4, 63, 1.0f, 0.0f);
    int64_t sizes[2] = {4, 4};
    m4_pixel_batch batch = {.pixel_values = px, .image_sizes = sizes, .n = 1, .height = 4, .width = 4};
    m4_patch_grid grid = {2, 2};
    float conv[8 * 4], patches[4 * 8], expect[4 * 8], got[4 * 8];
    m4_error err;
    /* by hand: conv → flatten → ln_pre (eps 1e-5) */
    assert_int_equal(m4_ref_patch_conv(&model.config.vision, &model.weights.patch_conv, &batch, conv, &err), 0);
    m4_ref_patch_flatten(conv, 8, 2, 2, &grid, 1, patches);
    m4_ref_rmsnorm(patches, 4, 8, &model.weights.ln_pre, 1e-5f, expect);
    for (int k = 0; k <= 2; k++) {
        model.config.vision_feature_layer = k;
        assert_int_equal(m4_ref_vision_tower(&model, &batch, got, &err), 0);
        assert_memory_equal(got, expect, sizeof got);
        if (k < 2) assert_int_equal(m4_ref_vision_layer(&model.config.vision, &layers[k], expect, &grid, 1, &err), 0);
    }
    model.config.vision_feature_layer = -1;                   /* = 2: the last layer's output */
    assert_int_equal(m4_ref_vision_tower(&model, &batch, got, &err), 0);
    assert_memory_equal(got, expect, sizeof got);
    model.config.vision_feature_layer = -3;                   /* = 0 */
    float first[4 * 8];
    assert_int_equal(m4_ref_vision_tower(&model, &batch, first, &err), 0);
    m4_ref_rmsnorm(patches, 4, 8, &model.weights.ln_pre, 1e-5f, expect);
    assert_memory_equal(first, expect, sizeof first);
    free(conv_w), free(ln_w), free(px);
    tiny_layer_free(&l0), tiny_layer_free(&l1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rope_angle_of_a_known_patch),
        cmocka_unit_test(rope_rows_follow_each_image_grid),
        cmocka_unit_test(block_mask_is_per_image),
        cmocka_unit_test(attention_matches_naive_transcription),
        cmocka_unit_test(images_do_not_attend_to_each_other),
        cmocka_unit_test(patch_conv_matches_direct_sum),
        cmocka_unit_test(patch_merger_interleaves_channels),
        cmocka_unit_test(scatter_fills_img_rows_in_order_and_checks_the_count),
        cmocka_unit_test(forward_refuses_a_wrong_img_count),
        cmocka_unit_test(feature_layer_selects_the_hidden_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
