/* test_reference_units.c — the reference's building blocks on small hand-checkable cases:
 * YaRN frequencies of the published config (MODEL.md §2.4), RoPE pairing and layout, the Llama-4
 * query scale and the MLA softmax-scale rules (§2.5), RMSNorm, SwiGLU, softmax, linear over every
 * weight dtype, the router's tie/renormalisation/group rules (§2.6), expert accumulation, MLA
 * against a naive double-precision transcription, and the text forward's logits_to_keep. */
#include "dot.h"
#include "reference.h"
#include "testutil.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PUBLISHED "tests/fixtures/mistral-small-4-119b-2603.config.json"

static m4_weight f32w(const float *data, int64_t rows, int64_t cols) {
    return (m4_weight){.name = "test", .dtype = M4_DTYPE_F32, .rows = rows, .cols = cols,
                       .data = (const uint8_t *)data, .scale = 1.0f};
}

static void assert_near(double got, double want, double tol, const char *what, int i) {
    if (!(fabs(got - want) <= tol * fmax(1.0, fabs(want))))
        fail_msg("%s[%d]: got %.9g, want %.9g (tol %g)", what, i, got, want, tol);
}

/* |got − want| within `ulps` float32 ulps of want */
static void assert_ulps(float got, float want, int ulps, const char *what, int i) {
    float ulp = nextafterf(fabsf(want), INFINITY) - fabsf(want);
    if (!(fabsf(got - want) <= (float)ulps * ulp))
        fail_msg("%s[%d]: got %.9g, want %.9g (%d ulp)", what, i, got, want, ulps);
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

/* The published text config (MODEL.md §1.1), written by hand so the rope tests do not depend on
 * the config parser. */
static m4_text_config published_text_config(void) {
    m4_text_config t;
    memset(&t, 0, sizeof t);
    t.vocab_size = 131072, t.hidden_size = 4096, t.num_hidden_layers = 36;
    t.num_attention_heads = 32, t.num_key_value_heads = 32;
    t.q_lora_rank = 1024, t.kv_lora_rank = 256;
    t.qk_nope_head_dim = 64, t.qk_rope_head_dim = 64, t.qk_head_dim = 128, t.v_head_dim = 128;
    t.n_routed_experts = 128, t.num_experts_per_tok = 4, t.n_group = 1, t.topk_group = 1;
    t.n_shared_experts = 1, t.moe_intermediate_size = 2048, t.norm_topk_prob = true;
    t.routed_scaling_factor = 1.0, t.rms_norm_eps = 1e-6, t.rope_interleave = true;
    t.max_position_embeddings = 1048576;
    m4_rope_config *r = &t.rope;
    r->type = M4_ROPE_YARN, r->theta = 10000.0, r->factor = 128.0;
    r->original_max_position_embeddings = 8192, r->has_original_max_position_embeddings = true;
    r->beta_fast = 32.0, r->beta_slow = 1.0;
    r->has_mscale = r->has_mscale_all_dim = true, r->mscale = r->mscale_all_dim = 1.0;
    r->truncate = true, r->partial_rotary_factor = 0.5;
    r->has_llama_4_scaling_beta = true, r->llama_4_scaling_beta = 0.1;
    return t;
}

/* ---- rope.c ------------------------------------------------------------------------------- */

/* inv_freq of HF 5.24's _compute_yarn_parameters for the published config (float32 output of
 * transformers, printed with 9+ digits; MODEL.md §2.4 lists the same values). */
static const double published_inv_freq[32] = {
    1.0, 0.7498942017555237, 0.5623413324356079, 0.4216965138912201, 0.3162277638912201,
    0.23713736236095428, 0.17782793939113617, 0.1333521455526352, 0.10000000149011612,
    0.07498941570520401, 0.05623412877321243, 0.04216964915394783, 0.03162277862429619,
    0.021903853863477707, 0.015068354085087776, 0.010281899943947792, 0.006947115529328585,
    0.004637266509234905, 0.003048268612474203, 0.001964031020179391, 0.001231463858857751,
    0.0007424794021062553, 0.00042105893953703344, 0.00021397248201537877, 8.413461182499304e-05,
    5.858548320247792e-06, 4.3932914195465855e-06, 3.294503812867333e-06, 2.4705295800231397e-06,
    1.8526358189774328e-06, 1.3892807828597142e-06, 1.04181367532874e-06};

static void yarn_inv_freq_published(void **state) {
    (void)state;
    m4_text_config t = published_text_config();
    float inv[32], af = 0;
    m4_error err = {{0}};
    if (m4_ref_rope_inv_freq(&t, inv, &af, &err)) fail_msg("%s", err.msg);
    assert_true(af == 1.0f);                                  /* mscale == mscale_all_dim */
    for (int i = 0; i < 32; i++) assert_ulps(inv[i], (float)published_inv_freq[i], 1, "inv_freq", i);
    /* the correction range is [12, 25]: below it plain RoPE, above it exactly /factor */
    for (int i = 0; i <= 12; i++) {
        float plain = 1.0f / powf(10000.0f, (float)(2 * i) / 64.0f);
        if (inv[i] != plain) fail_msg("inv_freq[%d] = %.9g is not plain %.9g", i, inv[i], plain);
    }
    for (int i = 25; i < 32; i++) {
        float interp = 1.0f / (128.0f * powf(10000.0f, (float)(2 * i) / 64.0f));
        if (inv[i] != interp) fail_msg("inv_freq[%d] = %.9g is not interpolated %.9g", i, inv[i], interp);
    }
    for (int i = 13; i < 25; i++) {                           /* strictly blended */
        float plain = 1.0f / powf(10000.0f, (float)(2 * i) / 64.0f);
        assert_true(inv[i] < plain && inv[i] > plain / 128.0f);
    }
}

static void yarn_attention_factor_rules(void **state) {
    (void)state;
    m4_text_config t = published_text_config();
    float inv[32], af;
    m4_error err = {{0}};
    t.rope.mscale = 0.0;                                      /* falsy: get_mscale(factor) */
    assert_int_equal(m4_ref_rope_inv_freq(&t, inv, &af, &err), 0);
    assert_near(af, 1.4852030263919618, 1e-7, "attention_factor mscale=0", 0);
    t.rope.has_mscale_all_dim = false, t.rope.mscale = 1.0;   /* absent: same */
    assert_int_equal(m4_ref_rope_inv_freq(&t, inv, &af, &err), 0);
    assert_near(af, 1.4852030263919618, 1e-7, "attention_factor absent", 0);
    t.rope.has_mscale_all_dim = true, t.rope.mscale = 2.0;    /* ratio (0.2 ln128 + 1)/(0.1 ln128 + 1) */
    assert_int_equal(m4_ref_rope_inv_freq(&t, inv, &af, &err), 0);
    assert_near(af, (0.2 * log(128.0) + 1) / (0.1 * log(128.0) + 1), 1e-7, "attention_factor ratio", 0);
    t.rope.has_attention_factor = true, t.rope.attention_factor = 0.75;
    assert_int_equal(m4_ref_rope_inv_freq(&t, inv, &af, &err), 0);
    assert_true(af == 0.75f);
}

static void default_rope_and_bad_dims(void **state) {
    (void)state;
    m4_text_config t = published_text_config();
    t.rope.type = M4_ROPE_DEFAULT, t.rope.factor = 1.0;
    float inv[32], af = 0;
    m4_error err = {{0}};
    assert_int_equal(m4_ref_rope_inv_freq(&t, inv, &af, &err), 0);
    assert_true(af == 1.0f);
    for (int i = 0; i < 32; i++) assert_near(inv[i], pow(10000.0, -2.0 * i / 64.0), 3e-7, "default inv_freq", i);
    t.rope.partial_rotary_factor = 1.0;                       /* would rotate 128 of 64 dims */
    assert_int_equal(m4_ref_rope_inv_freq(&t, inv, &af, &err), -1);
    m4t_assert_contains(err.msg, "qk_rope_head_dim");
}

static void rope_cos_sin_and_interleaved_layout(void **state) {
    (void)state;
    const float inv[2] = {1.0f, 0.25f};
    const int64_t positions[2] = {0, 3};
    float c[4], s[4];
    m4_ref_rope_cos_sin(inv, 2, 1.0f, positions, 2, c, s);
    assert_true(c[0] == 1.0f && c[1] == 1.0f && s[0] == 0.0f && s[1] == 0.0f);
    assert_true(c[2] == cosf(3.0f) && s[2] == sinf(3.0f) && c[3] == cosf(0.75f) && s[3] == sinf(0.75f));

    const float x[4] = {1, 2, 3, 4};
    float out[4];
    /* position 0: identity rotation, so only the layout shows: interleaved pairs come out
     * de-interleaved (evens first), rotate_half leaves the vector alone */
    m4_ref_apply_rope(x, out, 4, c, s, 1);
    assert_true(out[0] == 1 && out[1] == 3 && out[2] == 2 && out[3] == 4);
    m4_ref_apply_rope(x, out, 4, c, s, 0);
    assert_true(out[0] == 1 && out[1] == 2 && out[2] == 3 && out[3] == 4);

    /* position 3: pair (x0, x1) turns by 3 rad, (x2, x3) by 0.75 rad */
    m4_ref_apply_rope(x, out, 4, c + 2, s + 2, 1);
    const float want[4] = {1 * cosf(3) - 2 * sinf(3), 3 * cosf(0.75f) - 4 * sinf(0.75f),
                           2 * cosf(3) + 1 * sinf(3), 4 * cosf(0.75f) + 3 * sinf(0.75f)};
    for (int i = 0; i < 4; i++) assert_near(out[i], want[i], 1e-6, "interleaved rope", i);
    /* rotate_half pairs (x0, x2) and (x1, x3) instead: a different answer */
    float half_out[4];
    m4_ref_apply_rope(x, half_out, 4, c + 2, s + 2, 0);
    const float want_half[4] = {1 * cosf(3) - 3 * sinf(3), 2 * cosf(0.75f) - 4 * sinf(0.75f),
                                3 * cosf(3) + 1 * sinf(3), 4 * cosf(0.75f) + 2 * sinf(0.75f)};
    for (int i = 0; i < 4; i++) assert_near(half_out[i], want_half[i], 1e-6, "rotate_half rope", i);
    assert_true(fabsf(out[0] - half_out[0]) > 0.1f);
}

/* q·k after RoPE depends only on the position difference (both rotated the same way). */
static void rope_relative_position(void **state) {
    (void)state;
    m4_text_config t = published_text_config();
    float inv[32], af;
    m4_error err = {{0}};
    assert_int_equal(m4_ref_rope_inv_freq(&t, inv, &af, &err), 0);
    float *q = rnd_array(64, 7, 1, 0), *k = rnd_array(64, 8, 1, 0);
    const int64_t pos[4] = {5, 2, 105, 102};                  /* two pairs 3 apart */
    float c[4 * 32], s[4 * 32], qr[2][64], kr[2][64];
    m4_ref_rope_cos_sin(inv, 32, af, pos, 4, c, s);
    for (int p = 0; p < 2; p++) {
        m4_ref_apply_rope(q, qr[p], 64, c + (2 * p) * 32, s + (2 * p) * 32, 1);
        m4_ref_apply_rope(k, kr[p], 64, c + (2 * p + 1) * 32, s + (2 * p + 1) * 32, 1);
    }
    assert_near(m4_ref_dot(qr[0], kr[0], 64), m4_ref_dot(qr[1], kr[1], 64), 1e-4, "q.k shift", 0);
    free(q), free(k);
}

static void llama4_scale_values(void **state) {
    (void)state;
    const int64_t p[] = {0, 1, 8191, 8192, 16383, 16384, 24575, 262143, 1048575};
    const double want[] = {1, 1, 1, 1.0693147, 1.0693147, 1.1098612, 1.1098612, 1.3465736, 1.4852030};
    for (int i = 0; i < 9; i++) assert_near(m4_ref_llama4_scale(p[i], 0.1f, 8192), want[i], 1e-7, "llama4", i);
    assert_true(m4_ref_llama4_scale(8191, 0.1f, 8192) == 1.0f);
}

static void softmax_scale_rules(void **state) {
    (void)state;
    m4_text_config t = published_text_config();
    assert_true(m4_ref_mla_softmax_scale(&t, M4_SOFTMAX_SCALE_BASE) == (float)0.08838834764831845);
    assert_true(m4_ref_mla_softmax_scale(&t, M4_SOFTMAX_SCALE_MSCALE2) == (float)0.19496949473302969);
    t.rope.mscale_all_dim = 0.0;                              /* falsy: no mscale */
    assert_true(m4_ref_mla_softmax_scale(&t, M4_SOFTMAX_SCALE_MSCALE2) == (float)0.08838834764831845);
    t = published_text_config();
    t.rope.type = M4_ROPE_DEFAULT;
    assert_true(m4_ref_mla_softmax_scale(&t, M4_SOFTMAX_SCALE_MSCALE2) == (float)0.08838834764831845);
}

/* The same figures through the config parser and the published config.json. */
static void published_fixture_through_config(void **state) {
    (void)state;
    char *path = m4t_source_path(PUBLISHED);
    m4_config cfg;
    m4_error err = {{0}};
    if (m4_config_load(path, &cfg, &err) != 0) fail_msg("%s", err.msg);
    float inv[32], af = 0;
    if (m4_ref_rope_inv_freq(&cfg.text, inv, &af, &err)) fail_msg("%s", err.msg);
    assert_true(af == 1.0f);
    for (int i = 0; i < 32; i++) assert_ulps(inv[i], (float)published_inv_freq[i], 1, "inv_freq", i);
    assert_true(m4_ref_mla_softmax_scale(&cfg.text, M4_SOFTMAX_SCALE_MSCALE2) == (float)0.19496949473302969);
    free(path);
}

/* ---- ops.c -------------------------------------------------------------------------------- */

static void rmsnorm_hand_vector(void **state) {
    (void)state;
    const float x[8] = {1, 2, 3, 4, -2, 0, 0, 2}, wv[4] = {1, 1, 2, 0.5f};
    m4_weight w = f32w(wv, 1, 4);
    float y[8];
    m4_ref_rmsnorm(x, 2, 4, &w, 1e-6f, y);
    double r0 = 1 / sqrt(30.0 / 4 + 1e-6), r1 = 1 / sqrt(8.0 / 4 + 1e-6);
    const double want[8] = {r0, 2 * r0, 6 * r0, 2 * r0, -2 * r1, 0, 0, r1};
    for (int i = 0; i < 8; i++) assert_near(y[i], want[i], 1e-6, "rmsnorm", i);
    /* eps matters for a tiny row, and y may alias x */
    float z[4] = {1e-4f, 0, 0, 0};
    m4_ref_rmsnorm(z, 1, 4, &w, 1e-6f, z);
    assert_near(z[0], 1e-4 / sqrt(2.5e-9 + 1e-6), 1e-6, "rmsnorm eps", 0);
}

static void softmax_and_masks(void **state) {
    (void)state;
    float x[3] = {1, 2, 3};
    m4_ref_softmax(x, 3);
    double d = exp(-2) + exp(-1) + 1;
    assert_near(x[0], exp(-2) / d, 1e-6, "softmax", 0);
    assert_near(x[2], 1 / d, 1e-6, "softmax", 2);
    float m[3] = {0.5f, -FLT_MAX, 0.5f - FLT_MAX};            /* a causally masked key */
    m4_ref_softmax(m, 3);
    assert_true(m[0] == 1.0f && m[1] == 0.0f && m[2] == 0.0f);
    float all[4] = {0.3f - FLT_MAX, -1.7f - FLT_MAX, -FLT_MAX, 2.0f - FLT_MAX}; /* fully masked row */
    m4_ref_softmax(all, 4);
    for (int i = 0; i < 4; i++) assert_true(all[i] == 0.25f);
}

static void activations(void **state) {
    (void)state;
    float v[4] = {-2, 0, 1, 3};
    m4_ref_silu(v, 4);
    assert_near(v[0], -2 / (1 + exp(2)), 1e-6, "silu", 0);
    assert_true(v[1] == 0.0f);
    assert_near(v[3], 3 / (1 + exp(-3)), 1e-6, "silu", 3);
    float g[3] = {-1, 0.5f, 2};
    m4_ref_gelu(g, 3);
    for (int i = 0; i < 3; i++) {
        double x = (double[]){-1, 0.5, 2}[i];
        assert_near(g[i], 0.5 * x * (1 + erf(x / sqrt(2.0))), 1e-6, "gelu", i);
    }
}

/* Linear over F32, BF16 and FP8 (× scale) weights; rows longer than a chunk, more tokens than a
 * token block, against a double-precision product. */
static void linear_dtypes_and_blocking(void **state) {
    (void)state;
    const float w2[6] = {1, 2, 3, -1, 0.5f, 0.25f}, x2[6] = {1, 1, 1, 2, 0, -4};
    m4_weight w = f32w(w2, 2, 3);
    float y2[4];
    m4_ref_linear(x2, 2, &w, y2);
    assert_true(y2[0] == 6 && y2[1] == -0.25f && y2[2] == -10 && y2[3] == -3);

    enum { OUT = 7, IN = 1000, N = 11 };
    float *wf = rnd_array(OUT * IN, 1, 1, 0), *x = rnd_array(N * IN, 2, 1, 0);
    uint16_t *wb = malloc(sizeof(uint16_t) * OUT * IN);
    uint8_t *w8 = malloc(OUT * IN);
    for (int i = 0; i < OUT * IN; i++) {
        wb[i] = m4t_f32_to_bf16(wf[i]);
        w8[i] = m4t_f32_to_f8e4m3(wf[i] * 400.0f);
    }
    const m4_weight views[3] = {
        f32w(wf, OUT, IN),
        {.dtype = M4_DTYPE_BF16, .rows = OUT, .cols = IN, .data = (const uint8_t *)wb, .scale = 1.0f},
        {.dtype = M4_DTYPE_F8_E4M3, .rows = OUT, .cols = IN, .data = w8, .scale = 1.0f / 400.0f}};
    float *row = malloc(sizeof(float) * IN), y[N * OUT];
    for (int v = 0; v < 3; v++) {
        m4_ref_linear(x, N, &views[v], y);
        for (int o = 0; o < OUT; o++) {
            m4_weight_row_f32(&views[v], o, row);             /* the dequantised truth */
            for (int t = 0; t < N; t++) {
                double want = 0;
                for (int j = 0; j < IN; j++) want += (double)row[j] * x[t * IN + j];
                assert_near(y[t * OUT + o], want, 2e-5, "linear", v * 100 + o);
            }
        }
    }
    /* FP8 dequantisation really applies the scale: a weight of 1.0 stored as 448 × (1/448) */
    uint8_t one = m4t_f32_to_f8e4m3(448.0f);
    m4_weight w1 = {.dtype = M4_DTYPE_F8_E4M3, .rows = 1, .cols = 1, .data = &one, .scale = 1.0f / 448.0f};
    float xin = 3.0f, yout;
    m4_ref_linear(&xin, 1, &w1, &yout);
    assert_near(yout, 3.0, 1e-7, "fp8 scale", 0);
    free(wf), free(x), free(wb), free(w8), free(row);
}

/* Same float32 bits, or both NaN (the fast FP8 path's NaN has another payload). */
static void assert_same_bits(float got, float want, const char *what, int i) {
    if (isnan(got) && isnan(want)) return;
    if (memcmp(&got, &want, sizeof got) != 0) fail_msg("%s[%d]: got %a, want %a", what, i, got, want);
}

/* dot.c's vectorised m4_dot_rows (AVX-512 here) and its portable path against their plain twin,
 * bit for bit: every dtype it reads,
 * widths around the 16-lane blocks, row groups past the last row, and special values (FP8: all
 * 256 codes, NaN and subnormal ones included; BF16: ±0, ±inf, NaN, subnormals). And m4_ref_linear
 * through it against the chunked path it replaced (rows dequantised to float32, m4_dot_lanes). */
static void dot_rows_match_plain_twin(void **state) {
    (void)state;
    enum { ROWS = 19, MAXC = 4096 + 37 };
    static const int64_t widths[] = {1, 7, 15, 16, 17, 33, 256, 1000, 4096, MAXC};
    float *wf = rnd_array(ROWS * MAXC, 3, 1, 0), *x = rnd_array(2 * MAXC, 4, 1, 0);
    uint16_t *wb = malloc(sizeof(uint16_t) * ROWS * MAXC);
    uint8_t *w8 = malloc(ROWS * MAXC);
    float *row = malloc(sizeof(float) * MAXC), *y = malloc(sizeof(float) * 2 * ROWS);
    const uint16_t bf16_special[] = {0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x0001, 0x807F, 0x3F80};
    for (int i = 0; i < ROWS * MAXC; i++) {
        wb[i] = i % 97 < 8 ? bf16_special[i % 97] : m4t_f32_to_bf16(wf[i]);
        w8[i] = (uint8_t)(i % 3 == 0 ? i * 7 : m4t_f32_to_f8e4m3(wf[i] * 400.0f));  /* every code */
    }
    x[5] = -0.0f, x[6] = 1e-40f;                                   /* a signed zero, a subnormal */
    assert_true(m4_dot_rows_supported(&(m4_weight){.dtype = M4_DTYPE_F8_E4M3, .scale = 0.25f}));
    assert_false(m4_dot_rows_supported(&(m4_weight){.dtype = M4_DTYPE_F8_E4M3, .scale = 512.0f}));
    assert_false(m4_dot_rows_supported(&(m4_weight){.dtype = M4_DTYPE_BF16, .scale = 2.0f}));
    assert_false(m4_dot_rows_supported(&(m4_weight){.dtype = M4_DTYPE_F16, .scale = 1.0f}));
    for (size_t c = 0; c < sizeof widths / sizeof *widths; c++) {
        const int64_t in = widths[c];
        /* F32 is read as-is, so its rows come from wb's bf16 values (specials included) */
        float *wfs = malloc(sizeof(float) * ROWS * (size_t)in);
        for (int64_t i = 0; i < ROWS * in; i++) wfs[i] = m4_bf16_to_f32(wb[i]);
        const m4_weight views[3] = {
            f32w(wfs, ROWS, in),
            {.dtype = M4_DTYPE_BF16, .rows = ROWS, .cols = in, .data = (const uint8_t *)wb, .scale = 1.0f},
            {.dtype = M4_DTYPE_F8_E4M3, .rows = ROWS, .cols = in, .data = w8, .scale = 1.0f / 400.0f}};
        for (int v = 0; v < 3; v++) {
            assert_true(m4_dot_rows_supported(&views[v]));
            for (int64_t row0 = 0; row0 < ROWS; row0 += M4_DOT_ROWS) {  /* the last group runs past */
                float fast[M4_DOT_ROWS], portable[M4_DOT_ROWS], plain[M4_DOT_ROWS];
                m4_dot_rows(&views[v], row0, x, fast);                 /* AVX-512 where the CPU has it */
                m4_dot_rows_portable(&views[v], row0, x, portable);
                m4_dot_rows_plain(&views[v], row0, x, plain);
                for (int r = 0; r < M4_DOT_ROWS; r++) {
                    assert_same_bits(fast[r], plain[r], "dot_rows", v * 1000 + (int)c * 10 + r);
                    assert_same_bits(portable[r], plain[r], "dot_rows_portable", v * 1000 + (int)c * 10 + r);
                }
            }
            m4_ref_linear(x, 2, &views[v], y);
            for (int o = 0; o < ROWS; o++) {
                m4_weight_row_f32(&views[v], o, row);
                for (int t = 0; t < 2; t++) {
                    float acc[M4_LANES] = {0};
                    for (int64_t c0 = 0; c0 < in; c0 += 512)               /* the old chunked path */
                        m4_dot_lanes(acc, row + c0, x + t * in + c0, in - c0 < 512 ? in - c0 : 512);
                    assert_same_bits(y[t * ROWS + o], m4_dot_lanes_sum(acc), "linear", v * 1000 + o * 10 + t);
                }
            }
        }
        free(wfs);
    }
    free(wf), free(x), free(wb), free(w8), free(row), free(y);
}

static void swiglu_hand_case(void **state) {
    (void)state;
    const float gate[4] = {1, 0, 0, 1}, up[4] = {1, 0, 0, 2}, down[4] = {1, 1, 1, -1};
    m4_weight g = f32w(gate, 2, 2), u = f32w(up, 2, 2), d = f32w(down, 2, 2);
    const float x[2] = {1, -1};
    float y[2];
    m4_error err = {{0}};
    assert_int_equal(m4_ref_swiglu_mlp(x, 1, &g, &u, &d, M4_ACT_SILU, y, &err), 0);
    double h0 = 1 / (1 + exp(-1.0)) * 1, h1 = (-1 / (1 + exp(1.0))) * -2;
    assert_near(y[0], h0 + h1, 1e-6, "swiglu", 0);
    assert_near(y[1], h0 - h1, 1e-6, "swiglu", 1);
    m4_weight bad = f32w(up, 1, 2);                           /* up with a different F */
    assert_int_equal(m4_ref_swiglu_mlp(x, 1, &g, &bad, &d, M4_ACT_SILU, y, &err), -1);
    m4t_assert_contains(err.msg, "swiglu");
}

static void embed_tokens_rows_and_range(void **state) {
    (void)state;
    const float table[6] = {0, 1, 10, 11, 20, 21};
    m4_weight e = f32w(table, 3, 2);
    const int64_t ids[3] = {2, 0, 2};
    float out[6];
    m4_error err = {{0}};
    assert_int_equal(m4_ref_embed_tokens(&e, ids, 3, out, &err), 0);
    assert_true(out[0] == 20 && out[1] == 21 && out[2] == 0 && out[3] == 1 && out[4] == 20);
    const int64_t bad[2] = {1, 3};
    assert_int_equal(m4_ref_embed_tokens(&e, bad, 2, out, &err), -1);
    m4t_assert_contains(err.msg, "text.embed_tokens");
    m4t_assert_contains(err.msg, "3");
}

/* ---- moe.c -------------------------------------------------------------------------------- */

/* A router whose logits are the weight column itself: D = 1, x = [1]. */
typedef struct {
    m4_text_config cfg;
    m4_text_layer_weights w;
} router_case;

static router_case make_router(const float *logit_column, int64_t E, int64_t K) {
    router_case r;
    memset(&r, 0, sizeof r);
    r.cfg.hidden_size = 1, r.cfg.n_routed_experts = E, r.cfg.num_experts_per_tok = K;
    r.cfg.n_group = 1, r.cfg.topk_group = 1, r.cfg.norm_topk_prob = true, r.cfg.routed_scaling_factor = 1.0;
    r.w.moe = true;
    r.w.router = f32w(logit_column, E, 1);
    return r;
}

static void route(router_case *r, float *logits, int64_t *ids, float *wts) {
    const float one = 1.0f;
    m4_error err = {{0}};
    if (m4_ref_router(&r->cfg, &r->w, &one, 1, logits, ids, wts, &err)) fail_msg("%s", err.msg);
}

static void router_ties_and_renormalisation(void **state) {
    (void)state;
    float logits[8], wts[4];
    int64_t ids[4];
    const float equal[4] = {0, 0, 0, 0};
    router_case r = make_router(equal, 4, 2);
    r.cfg.routed_scaling_factor = 2.5;
    route(&r, logits, ids, wts);
    assert_int_equal(ids[0], 0);                             /* equal logits: lower ids win */
    assert_int_equal(ids[1], 1);
    assert_true(wts[0] == 1.25f && wts[1] == 1.25f);          /* sums to routed_scaling_factor */

    const float col[6] = {0.1f, 2.0f, -1.0f, 1.0f, 2.0f, 0.5f};
    r = make_router(col, 6, 3);
    r.cfg.routed_scaling_factor = 2.5;
    route(&r, logits, ids, wts);
    assert_true(logits[1] == 2.0f);
    assert_int_equal(ids[0], 1), assert_int_equal(ids[1], 4), assert_int_equal(ids[2], 3);
    assert_near(wts[0] + wts[1] + wts[2], 2.5, 1e-6, "renormalised sum", 0);
    double z = exp(0.1) + 2 * exp(2.0) + exp(-1.0) + exp(1.0) + exp(0.5);
    assert_near(wts[2], 2.5 * exp(1.0) / (2 * exp(2.0) + exp(1.0)), 1e-6, "renormalised", 2);

    r.cfg.norm_topk_prob = false, r.cfg.routed_scaling_factor = 1.0;   /* raw softmax weights */
    route(&r, logits, ids, wts);
    assert_near(wts[0], exp(2.0) / z, 1e-6, "raw weight", 0);
    assert_near(wts[2], exp(1.0) / z, 1e-6, "raw weight", 2);
}

static void router_group_limited(void **state) {
    (void)state;
    /* group 0 (experts 0-3) has the best top-2 sum (2·e^2.5 > e^3 + e^-5); the single best
     * expert (4, logit 3) sits in group 1, which is dropped */
    const float col[8] = {2.5f, 2.5f, 0, 0, 3.0f, -5, -5, -5};
    router_case r = make_router(col, 8, 2);
    float logits[8], wts[2];
    int64_t ids[2];
    route(&r, logits, ids, wts);                              /* one group: expert 4 first */
    assert_int_equal(ids[0], 4);
    r.cfg.n_group = 2, r.cfg.topk_group = 1;
    route(&r, logits, ids, wts);
    assert_int_equal(ids[0], 0), assert_int_equal(ids[1], 1);
    assert_near(wts[0], 0.5, 1e-6, "group weights", 0);
    r.cfg.topk_group = 2;                                     /* both groups kept again */
    route(&r, logits, ids, wts);
    assert_int_equal(ids[0], 4);
    r.cfg.n_group = 3;                                        /* 8 experts do not split in 3 */
    m4_error err = {{0}};
    const float one = 1.0f;
    assert_int_equal(m4_ref_router(&r.cfg, &r.w, &one, 1, logits, ids, wts, &err), -1);
    m4t_assert_contains(err.msg, "n_group");
}

static void router_sigmoid_bias(void **state) {
    (void)state;
    const float col[4] = {0, 1, 0, 0}, bias[4] = {0, 0, 2, 0};
    router_case r = make_router(col, 4, 1);
    r.cfg.scoring_func = M4_ROUTER_SIGMOID, r.cfg.norm_topk_prob = false;
    r.w.router_bias = f32w(bias, 1, 4);
    float logits[4], wts[1];
    int64_t ids[1];
    route(&r, logits, ids, wts);
    assert_int_equal(ids[0], 2);                              /* chosen with the bias */
    assert_true(wts[0] == 0.5f);                              /* weighted without it: sigmoid(0) */
}

/* Two experts, D = 2, F = 1: out = w_a · y_a + w_b · y_b, then the shared expert on top. */
static void experts_and_moe_block(void **state) {
    (void)state;
    m4_text_config c;
    memset(&c, 0, sizeof c);
    c.hidden_size = 2, c.n_routed_experts = 3, c.num_experts_per_tok = 2, c.moe_intermediate_size = 1;
    c.n_group = 1, c.topk_group = 1, c.norm_topk_prob = true, c.routed_scaling_factor = 1.0;
    c.hidden_act = M4_ACT_SILU, c.n_shared_experts = 1;
    /* gate_up_proj [3, 2, 2]: expert e gate row, up row; down_proj [3, 2, 1] */
    const float gu[12] = {1, 0, 0, 1, /* e0 */ 0, 1, 1, 1, /* e1 */ 1, 1, 1, 0 /* e2 */};
    const float dn[6] = {1, 2, -1, 1, 3, 0};
    const float router_w[6] = {1, 0, 0, 1, 0.5f, 0.5f};
    const float sg[2] = {1, 1}, su[2] = {1, -1}, sd[2] = {1, 0.5f};
    m4_text_layer_weights w;
    memset(&w, 0, sizeof w);
    w.moe = true;
    w.router = f32w(router_w, 3, 2);
    w.experts_gate_up = (m4_expert_stack){.dtype = M4_DTYPE_F32, .experts = 3, .rows = 2, .cols = 2,
                                          .data = (const uint8_t *)gu};
    w.experts_down = (m4_expert_stack){.dtype = M4_DTYPE_F32, .experts = 3, .rows = 2, .cols = 1,
                                       .data = (const uint8_t *)dn};
    w.shared_gate_proj = f32w(sg, 1, 2), w.shared_up_proj = f32w(su, 1, 2), w.shared_down_proj = f32w(sd, 2, 1);

    const float x[2] = {2.0f, -1.0f};
    const int64_t ids[2] = {2, 0};                            /* slot order is not expert order */
    const float wts[2] = {0.25f, 0.75f};
    float out[2];
    m4_error err = {{0}};
    assert_int_equal(m4_ref_experts(&c, &w, x, 1, ids, wts, out, &err), 0);
    double silu2 = 2 / (1 + exp(-2.0)), silu1 = 1 / (1 + exp(-1.0));
    double h0 = silu2 * -1.0, h2 = silu1 * 2.0;               /* expert 0: gate x0, up x1 */
    assert_near(out[0], 0.75 * h0 * 1 + 0.25 * h2 * 3, 1e-6, "experts", 0);
    assert_near(out[1], 0.75 * h0 * 2 + 0.25 * h2 * 0, 1e-6, "experts", 1);
    const int64_t bad_ids[2] = {0, 3};
    assert_int_equal(m4_ref_experts(&c, &w, x, 1, bad_ids, wts, out, &err), -1);

    /* the whole block: router picks experts 0 (logit 2) and 2 (logit 0.5) */
    float logits[3], rw[2], routed[2], moe[2];
    int64_t rid[2];
    assert_int_equal(m4_ref_router(&c, &w, x, 1, logits, rid, rw, &err), 0);
    assert_int_equal(rid[0], 0), assert_int_equal(rid[1], 2);
    assert_int_equal(m4_ref_experts(&c, &w, x, 1, rid, rw, routed, &err), 0);
    assert_int_equal(m4_ref_mlp(&c, &w, x, 1, moe, &err), 0);
    double shared = (1 / (1 + exp(-1.0))) * 3;                /* silu(x0 + x1) · (x0 − x1) */
    assert_near(moe[0], routed[0] + shared * 1, 1e-6, "moe", 0);
    assert_near(moe[1], routed[1] + shared * 0.5, 1e-6, "moe", 1);

    /* a dense layer ignores the router and runs gate/up/down */
    m4_text_layer_weights dense;
    memset(&dense, 0, sizeof dense);
    dense.gate_proj = w.shared_gate_proj, dense.up_proj = w.shared_up_proj, dense.down_proj = w.shared_down_proj;
    assert_int_equal(m4_ref_mlp(&c, &dense, x, 1, moe, &err), 0);
    assert_near(moe[0], shared, 1e-6, "dense", 0);
}

/* ---- mla.c and text.c: a tiny model against a naive double-precision transcription --------- */

enum { TD = 8, TH = 2, TDN = 2, TDR = 4, TDQ = 6, TDV = 3, TRQ = 5, TRKV = 3, TE = 4, TK = 2, TF = 3, TV = 11 };

typedef struct {
    m4_model model;
    m4_text_layer_weights layer;
    float *arrays[32];
    int n_arrays;
} tiny_model;

static m4_weight tiny_w(tiny_model *m, int64_t rows, int64_t cols, float scale, float offset) {
    float *a = rnd_array(rows * cols, (uint32_t)(101 + m->n_arrays * 7919), scale, offset);
    m->arrays[m->n_arrays++] = a;
    return f32w(a, rows, cols);
}

static void tiny_init(tiny_model *m) {
    memset(m, 0, sizeof *m);
    m4_text_config *c = &m->model.config.text;
    *c = published_text_config();
    c->vocab_size = TV, c->hidden_size = TD, c->num_hidden_layers = 1;
    c->num_attention_heads = TH, c->num_key_value_heads = TH;
    c->q_lora_rank = TRQ, c->kv_lora_rank = TRKV;
    c->qk_nope_head_dim = TDN, c->qk_rope_head_dim = TDR, c->qk_head_dim = TDQ, c->v_head_dim = TDV;
    c->n_routed_experts = TE, c->num_experts_per_tok = TK, c->moe_intermediate_size = TF;
    c->hidden_act = M4_ACT_SILU, c->rms_norm_eps = 1e-5;
    c->rope.factor = 4.0, c->rope.original_max_position_embeddings = 4;  /* llama-4 scale visible */
    c->rope.partial_rotary_factor = (double)TDR / TDQ;
    m4_text_layer_weights *w = &m->layer;
    w->input_layernorm = tiny_w(m, 1, TD, 0.1f, 1);
    w->q_a_proj = tiny_w(m, TRQ, TD, 0.4f, 0);
    w->q_a_layernorm = tiny_w(m, 1, TRQ, 0.1f, 1);
    w->q_b_proj = tiny_w(m, TH * TDQ, TRQ, 0.5f, 0);
    w->kv_a_proj_with_mqa = tiny_w(m, TRKV + TDR, TD, 0.4f, 0);
    w->kv_a_layernorm = tiny_w(m, 1, TRKV, 0.1f, 1);
    w->kv_b_proj = tiny_w(m, TH * (TDN + TDV), TRKV, 0.6f, 0);
    w->o_proj = tiny_w(m, TD, TH * TDV, 0.4f, 0);
    w->post_attention_layernorm = tiny_w(m, 1, TD, 0.1f, 1);
    w->moe = true;
    w->router = tiny_w(m, TE, TD, 0.7f, 0);
    float *gu = rnd_array(TE * 2 * TF * TD, 55, 0.4f, 0), *dn = rnd_array(TE * TD * TF, 56, 0.5f, 0);
    m->arrays[m->n_arrays++] = gu, m->arrays[m->n_arrays++] = dn;
    w->experts_gate_up = (m4_expert_stack){.dtype = M4_DTYPE_F32, .experts = TE, .rows = 2 * TF, .cols = TD,
                                           .data = (const uint8_t *)gu};
    w->experts_down = (m4_expert_stack){.dtype = M4_DTYPE_F32, .experts = TE, .rows = TD, .cols = TF,
                                        .data = (const uint8_t *)dn};
    w->shared_gate_proj = tiny_w(m, TF, TD, 0.4f, 0);
    w->shared_up_proj = tiny_w(m, TF, TD, 0.4f, 0);
    w->shared_down_proj = tiny_w(m, TD, TF, 0.5f, 0);
    m->model.weights.layers = &m->layer;
    m->model.weights.embed_tokens = tiny_w(m, TV, TD, 1, 0);
    m->model.weights.norm = tiny_w(m, 1, TD, 0.1f, 1);
    m->model.weights.lm_head = tiny_w(m, TV, TD, 0.4f, 0);
}

static void tiny_free(tiny_model *m) {
    for (int i = 0; i < m->n_arrays; i++) free(m->arrays[i]);
}

static double wat(const m4_weight *w, int64_t r, int64_t c) { return ((const float *)w->data)[r * w->cols + c]; }

static void naive_rmsnorm(const double *x, int64_t n, const m4_weight *w, double eps, double *y) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    double r = 1 / sqrt(ss / (double)n + eps);
    for (int64_t i = 0; i < n; i++) y[i] = wat(w, 0, i) * x[i] * r;
}

static void naive_linear(const double *x, const m4_weight *w, double *y) {
    for (int64_t o = 0; o < w->rows; o++) {
        y[o] = 0;
        for (int64_t i = 0; i < w->cols; i++) y[o] += wat(w, o, i) * x[i];
    }
}

/* MODEL.md §2.5 transcribed literally in doubles, one (b, h, i) at a time. */
static void naive_mla(const m4_text_config *c, const m4_text_layer_weights *w, const float *x, int64_t B,
                      int64_t S, const int64_t *pos, const int64_t *mask, double scale, double *out) {
    enum { MAXS = 8 };
    double q[MAXS * 2][TH * TDQ], kva[MAXS * 2][TRKV + TDR], ckv[MAXS * 2][TRKV], kvb[MAXS * 2][TH * (TDN + TDV)];
    double kr[MAXS * 2][TDR], qr[MAXS * 2][TH][TDQ], attn[MAXS * 2][TH * TDV];
    const double beta = c->rope.llama_4_scaling_beta, L = (double)c->rope.original_max_position_embeddings;
    float inv[TDR / 2], af;
    m4_error err;
    assert_int_equal(m4_ref_rope_inv_freq(c, inv, &af, &err), 0);
    for (int64_t t = 0; t < B * S; t++) {
        double xd[TD], qa[TRQ], qn[TRQ];
        for (int i = 0; i < TD; i++) xd[i] = x[t * TD + i];
        naive_linear(xd, &w->q_a_proj, qa);
        naive_rmsnorm(qa, TRQ, &w->q_a_layernorm, 1e-6, qn);
        naive_linear(qn, &w->q_b_proj, q[t]);
        naive_linear(xd, &w->kv_a_proj_with_mqa, kva[t]);
        naive_rmsnorm(kva[t], TRKV, &w->kv_a_layernorm, 1e-6, ckv[t]);
        naive_linear(ckv[t], &w->kv_b_proj, kvb[t]);
        double l4 = 1 + beta * log(1 + floor((double)pos[t] / L));
        for (int i = 0; i < TDR / 2; i++) {                   /* interleaved pairs, de-interleaved out */
            double th = (double)pos[t] * inv[i], co = cos(th), si = sin(th);
            const double *k = kva[t] + TRKV;
            kr[t][i] = k[2 * i] * co - k[2 * i + 1] * si;
            kr[t][TDR / 2 + i] = k[2 * i + 1] * co + k[2 * i] * si;
            for (int h = 0; h < TH; h++) {
                const double *qq = q[t] + h * TDQ + TDN;
                qr[t][h][TDN + i] = l4 * (qq[2 * i] * co - qq[2 * i + 1] * si);
                qr[t][h][TDN + TDR / 2 + i] = l4 * (qq[2 * i + 1] * co + qq[2 * i] * si);
            }
        }
        for (int h = 0; h < TH; h++)
            for (int d = 0; d < TDN; d++) qr[t][h][d] = l4 * q[t][h * TDQ + d];
    }
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < TH; h++)
            for (int64_t i = 0; i < S; i++) {
                double z[MAXS], mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < S; j++) {
                    const double *kn = kvb[b * S + j] + h * (TDN + TDV);
                    double dot = 0;
                    for (int d = 0; d < TDN; d++) dot += qr[b * S + i][h][d] * kn[d];
                    for (int d = 0; d < TDR; d++) dot += qr[b * S + i][h][TDN + d] * kr[b * S + j][d];
                    int ok = j <= i && (!mask || mask[b * S + j]);
                    z[j] = ok ? dot * scale : -INFINITY;
                    mx = z[j] > mx ? z[j] : mx;
                }
                if (mx == -INFINITY)                          /* HF: fully masked → uniform */
                    for (int64_t j = 0; j < S; j++) z[j] = 0, mx = 0;
                for (int64_t j = 0; j < S; j++) sum += (z[j] = exp(z[j] - mx));
                for (int d = 0; d < TDV; d++) {
                    double o = 0;
                    for (int64_t j = 0; j < S; j++) o += z[j] / sum * kvb[b * S + j][h * (TDN + TDV) + TDN + d];
                    attn[b * S + i][h * TDV + d] = o;
                }
            }
    for (int64_t t = 0; t < B * S; t++) naive_linear(attn[t], &w->o_proj, out + t * TD);
}

static double rel_l2(const float *got, const double *want, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) num += (got[i] - want[i]) * (got[i] - want[i]), den += want[i] * want[i];
    return sqrt(num / den);
}

static void mla_against_naive(void **state) {
    (void)state;
    tiny_model m;
    tiny_init(&m);
    const m4_text_config *c = &m.model.config.text;
    enum { B = 2, S = 5 };
    float *x = rnd_array(B * S * TD, 9, 1, 0);
    const int64_t pos[B * S] = {0, 0, 0, 1, 2, /* row 1 crosses L = 4 */ 2, 3, 4, 9, 30};
    const int64_t mask[B * S] = {0, 0, 1, 1, 1, 1, 1, 1, 1, 1};          /* row 0 left-padded by 2 */
    float out[B * S * TD], weights[B * TH * S * S], l4[B * S], qrot[B * TH * S * TDQ];
    double want[B * S * TD];
    m4_mla_trace trace = {.attn_weights = weights, .llama4_scale = l4, .q_rot = qrot};
    m4_error err = {{0}};
    for (int rule = 0; rule < 2; rule++) {
        float scale = m4_ref_mla_softmax_scale(c, rule ? M4_SOFTMAX_SCALE_MSCALE2 : M4_SOFTMAX_SCALE_BASE);
        if (m4_ref_mla(c, &m.layer, x, B, S, pos, mask, scale, out, &trace, &err)) fail_msg("%s", err.msg);
        naive_mla(c, &m.layer, x, B, S, pos, mask, scale, want);
        double e = rel_l2(out, want, B * S * TD);
        if (!(e < 1e-6)) fail_msg("mla rule %d: rel L2 %.3g vs naive", rule, e);
    }
    /* padded query rows (row 0, s = 0, 1) attend uniformly to every key, as HF's eager mask does */
    for (int h = 0; h < TH; h++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < S; j++) assert_true(weights[((0 * TH + h) * S + i) * S + j] == 1.0f / S);
    /* real rows never see padding or the future */
    for (int h = 0; h < TH; h++)
        for (int i = 2; i < S; i++)
            for (int j = 0; j < S; j++)
                if (j < 2 || j > i) assert_true(weights[((0 * TH + h) * S + i) * S + j] == 0.0f);
    assert_true(l4[0] == 1.0f && l4[5] == 1.0f);
    assert_near(l4[7], 1 + 0.1 * log(2.0), 1e-7, "llama4 in mla", 7);
    assert_near(l4[9], 1 + 0.1 * log(8.0), 1e-7, "llama4 in mla", 9);
    /* the temperature scales the nope part too (row 1, s = 4: position 30) */
    float unscaled[B * TH * S * TDQ];
    m4_text_config no_l4 = *c;
    no_l4.rope.has_llama_4_scaling_beta = false;
    trace.q_rot = unscaled, trace.llama4_scale = NULL;
    assert_int_equal(m4_ref_mla(&no_l4, &m.layer, x, B, S, pos, mask, 0.1f, out, &trace, &err), 0);
    const float *a = qrot + ((1 * TH + 1) * S + 4) * TDQ, *bq = unscaled + ((1 * TH + 1) * S + 4) * TDQ;
    for (int d = 0; d < TDQ; d++) assert_true(a[d] == bq[d] * l4[9]);
    /* a wrong weight shape is refused with its name */
    m4_text_layer_weights bad = m.layer;
    bad.kv_b_proj.rows -= 1;
    assert_int_equal(m4_ref_mla(c, &bad, x, B, S, pos, mask, 0.1f, out, NULL, &err), -1);
    m4t_assert_contains(err.msg, "kv_b_proj");
    free(x);
    tiny_free(&m);
}

/* The forward equals its parts, and keep = k returns the last k rows of keep = 0. */
static void text_forward_composition_and_keep(void **state) {
    (void)state;
    tiny_model m;
    tiny_init(&m);
    const m4_text_config *c = &m.model.config.text;
    enum { B = 2, S = 4 };
    const int64_t ids[B * S] = {1, 5, 7, 2, 11 - 1, 3, 3, 9};
    float all[B * S * TV], last[B * 1 * TV];
    m4_error err = {{0}};
    if (m4_ref_text_forward(&m.model, ids, NULL, B, S, NULL, NULL, 0, M4_SOFTMAX_SCALE_BASE, all, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(m4_ref_text_forward(&m.model, ids, NULL, B, S, NULL, NULL, 1, M4_SOFTMAX_SCALE_BASE,
                                         last, &err), 0);
    for (int b = 0; b < B; b++)
        for (int v = 0; v < TV; v++) assert_true(last[b * TV + v] == all[(b * S + S - 1) * TV + v]);

    float h[B * S * TD], logits[B * S * TV];
    const int64_t pos[B * S] = {0, 1, 2, 3, 0, 1, 2, 3};
    assert_int_equal(m4_ref_embed_tokens(&m.model.weights.embed_tokens, ids, B * S, h, &err), 0);
    assert_int_equal(m4_ref_decoder_layer(c, &m.layer, h, B, S, pos, NULL,
                                          m4_ref_mla_softmax_scale(c, M4_SOFTMAX_SCALE_BASE), &err), 0);
    m4_ref_rmsnorm(h, B * S, TD, &m.model.weights.norm, (float)c->rms_norm_eps, h);
    m4_ref_linear(h, B * S, &m.model.weights.lm_head, logits);
    for (int i = 0; i < B * S * TV; i++) assert_true(logits[i] == all[i]);

    assert_int_equal(m4_ref_text_forward(&m.model, ids, NULL, B, S, NULL, NULL, S + 1, M4_SOFTMAX_SCALE_BASE,
                                         all, &err), -1);
    m4t_assert_contains(err.msg, "keep");
    tiny_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(yarn_inv_freq_published),
        cmocka_unit_test(yarn_attention_factor_rules),
        cmocka_unit_test(default_rope_and_bad_dims),
        cmocka_unit_test(rope_cos_sin_and_interleaved_layout),
        cmocka_unit_test(rope_relative_position),
        cmocka_unit_test(llama4_scale_values),
        cmocka_unit_test(softmax_scale_rules),
        cmocka_unit_test(published_fixture_through_config),
        cmocka_unit_test(rmsnorm_hand_vector),
        cmocka_unit_test(softmax_and_masks),
        cmocka_unit_test(activations),
        cmocka_unit_test(linear_dtypes_and_blocking),
        cmocka_unit_test(dot_rows_match_plain_twin),
        cmocka_unit_test(swiglu_hand_case),
        cmocka_unit_test(embed_tokens_rows_and_range),
        cmocka_unit_test(router_ties_and_renormalisation),
        cmocka_unit_test(router_group_limited),
        cmocka_unit_test(router_sigmoid_bias),
        cmocka_unit_test(experts_and_moe_block),
        cmocka_unit_test(mla_against_naive),
        cmocka_unit_test(text_forward_composition_and_keep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
