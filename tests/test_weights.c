/* Binding (loader/weights.c): tiny configs written in the test, a checkpoint holding exactly the
 * tensors m4_weight_specs lists (values a known function of tensor and element), then
 * m4_model_open: every m4_weights field is bound with the right shape, and its rows read back as
 * the written values — float32(x) · scale for FP8 — for F32, BF16 and FP8 checkpoints, both VLM
 * name spellings, single file and sharded. Then one test per kind of bad checkpoint, and the
 * published config's parameter count (MODEL.md §5.4). */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "weights.h"

#define PUBLISHED "tests/fixtures/mistral-small-4-119b-2603.config.json"

/* ------------------------------------------------------------------------------------------------
 * Tiny configurations, written as config.json by the test */

typedef struct {
    bool multimodal, fp8, tied;
    int64_t V, D, I, F, L, H, Rq /* 0 = null */, Rkv, dn, dr, dv, E, K, S, first_dense;
    int64_t Dv, Iv, Lv, Hv, p, C, img, m; /* vision + projector */
} dims;

/* The brief's bare Mistral4ForCausalLM: one dense layer, one MoE layer. */
static const dims BARE = {.V = 16, .D = 8, .I = 6, .F = 4, .L = 2, .H = 2, .Rq = 4, .Rkv = 4,
                          .dn = 2, .dr = 2, .dv = 4, .E = 4, .K = 2, .S = 1, .first_dense = 1};

/* Every dimension distinct (so a swapped pair cannot go unnoticed), q_lora_rank null (plain
 * q_proj), two shared experts, tied embeddings, two MoE layers. */
static const dims ODD = {.V = 20, .D = 10, .I = 9, .F = 3, .L = 3, .H = 3, .Rq = 0, .Rkv = 6,
                         .dn = 4, .dr = 2, .dv = 7, .E = 5, .K = 2, .S = 2, .first_dense = 1,
                         .tied = true};

/* Mistral3ForConditionalGeneration around BARE's text model with a one-layer Pixtral (hidden 12,
 * distinct from the text hidden 8, so linear_1 [D, Dv] cannot be confused with its transpose). */
static dims multimodal(dims d) {
    d.multimodal = true;
    d.Dv = 12, d.Iv = 10, d.Lv = 1, d.Hv = 2, d.p = 2, d.C = 3, d.img = 8, d.m = 2;
    return d;
}

static dims quantized(dims d) {
    d.fp8 = true;
    return d;
}

static void text_fields(const dims *d, char *buf, size_t size) {
    char q_lora[32];
    if (d->Rq) snprintf(q_lora, sizeof q_lora, "%lld", (long long)d->Rq);
    else snprintf(q_lora, sizeof q_lora, "null");
    snprintf(buf, size,
             "\"vocab_size\": %lld, \"hidden_size\": %lld, \"intermediate_size\": %lld, "
             "\"moe_intermediate_size\": %lld, \"num_hidden_layers\": %lld, "
             "\"num_attention_heads\": %lld, \"num_key_value_heads\": %lld, "
             "\"n_shared_experts\": %lld, \"n_routed_experts\": %lld, \"num_experts_per_tok\": %lld, "
             "\"n_group\": 1, \"topk_group\": 1, \"first_k_dense_replace\": %lld, "
             "\"norm_topk_prob\": true, \"routed_scaling_factor\": 1.0, "
             "\"q_lora_rank\": %s, \"kv_lora_rank\": %lld, \"qk_rope_head_dim\": %lld, "
             "\"qk_nope_head_dim\": %lld, \"v_head_dim\": %lld, \"hidden_act\": \"silu\", "
             "\"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-06, \"pad_token_id\": 11, "
             "\"bos_token_id\": 1, \"eos_token_id\": 2, \"tie_word_embeddings\": %s, "
             "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}",
             (long long)d->V, (long long)d->D, (long long)d->I, (long long)d->F, (long long)d->L,
             (long long)d->H, (long long)d->H, (long long)d->S, (long long)d->E, (long long)d->K,
             (long long)d->first_dense, q_lora, (long long)d->Rkv, (long long)d->dr,
             (long long)d->dn, (long long)d->dv, d->tied ? "true" : "false");
}

static const char *QUANT =
    "\"quantization_config\": {\"quant_method\": \"fp8\", \"activation_scheme\": \"static\", "
    "\"weight_block_size\": null, \"modules_to_not_convert\": [\"lm_head\", "
    "\"model.vision_tower\", \"model.multi_modal_projector\"]}, ";

static void write_config(const char *dir, const dims *d) {
    char text[2048], json[4096];
    text_fields(d, text, sizeof text);
    if (!d->multimodal) {
        snprintf(json, sizeof json,
                 "{\"architectures\": [\"Mistral4ForCausalLM\"], \"model_type\": \"mistral4\", "
                 "\"dtype\": \"bfloat16\", %s%s}",
                 d->fp8 ? QUANT : "", text);
    } else {
        snprintf(json, sizeof json,
                 "{\"architectures\": [\"Mistral3ForConditionalGeneration\"], "
                 "\"model_type\": \"mistral3\", \"dtype\": \"bfloat16\", \"image_token_index\": 10, "
                 "\"multimodal_projector_bias\": false, \"projector_hidden_act\": \"gelu\", "
                 "\"spatial_merge_size\": %lld, \"tie_word_embeddings\": %s, "
                 "\"vision_feature_layer\": -1, %s"
                 "\"text_config\": {\"model_type\": \"mistral4\", %s}, "
                 "\"vision_config\": {\"model_type\": \"pixtral\", \"hidden_size\": %lld, "
                 "\"intermediate_size\": %lld, \"num_hidden_layers\": %lld, "
                 "\"num_attention_heads\": %lld, \"head_dim\": %lld, \"num_channels\": %lld, "
                 "\"image_size\": %lld, \"patch_size\": %lld, \"hidden_act\": \"silu\", "
                 "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}}}",
                 (long long)d->m, d->tied ? "true" : "false", d->fp8 ? QUANT : "", text,
                 (long long)d->Dv, (long long)d->Iv, (long long)d->Lv, (long long)d->Hv,
                 (long long)(d->Dv / d->Hv), (long long)d->C, (long long)d->img, (long long)d->p);
    }
    char *path = m4t_join(dir, "config.json");
    m4t_write_text(path, json);
    free(path);
}

static void load_config(const char *dir, m4_config *cfg) {
    char *path = m4t_join(dir, "config.json");
    m4_error err = {{0}};
    if (m4_config_load(path, cfg, &err) != 0) fail_msg("config: %s", err.msg);
    free(path);
}

/* ------------------------------------------------------------------------------------------------
 * Generated checkpoints */

typedef enum { MODE_F32, MODE_BF16, MODE_FP8 } store_mode;

typedef struct {
    char name[200];
    char dtype[16];
    int ndim;
    int64_t shape[4];
    int64_t numel;
    uint8_t *data;
    size_t nbytes;
} gen_tensor;

typedef struct {
    gen_tensor *t;
    size_t n;
} gen_set;

/* Values written: exactly representable in bfloat16, different for every tensor index. */
static float gen_value(size_t ti, int64_t e) {
    return (float)((int)((ti * 131 + (size_t)e * 17) % 97) - 48) / 16.0f;
}

/* FP8 codes: all 256 patterns occur, except the two NaNs. */
static uint8_t gen_code(size_t ti, int64_t e) {
    unsigned c = (unsigned)(ti * 37 + (size_t)e * 11 + 5) & 0xFFu;
    if ((c & 0x7Fu) == 0x7Fu) c ^= 1u;
    return (uint8_t)c;
}

/* Scales with full float32 significands (never 1, so a scale left unapplied shows). */
static float gen_scale(size_t ti, int64_t e) { return 0.3f + 0.0137f * (float)((ti * 5 + (size_t)e * 3) % 11); }
static float gen_act_scale(size_t ti, int64_t e) { return 0.01f * (float)(ti + 1) + 0.001f * (float)e; }

/* OCP E4M3 by its definition, independent of loader/dtype.h. */
static float fp8_value(uint8_t code) {
    int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
    double v = e == 0 ? ldexp(m, -9) : ldexp(8 + m, e - 10);
    return (float)(s ? -v : v);
}

/* The legacy VLM spelling of a canonical name (as NeMo's adapter and older checkpoints use). */
static void legacy_spelling(const char *canonical, char *out, size_t size) {
    static const char *map[][2] = {
        {"model.language_model.", "language_model.model."},
        {"lm_head.", "language_model.lm_head."},
        {"model.vision_tower.", "vision_tower."},
        {"model.multi_modal_projector.", "multi_modal_projector."},
    };
    for (size_t i = 0; i < 4; i++) {
        size_t n = strlen(map[i][0]);
        if (strncmp(canonical, map[i][0], n) == 0) {
            snprintf(out, size, "%s%s", map[i][1], canonical + n);
            return;
        }
    }
    fail_msg("no legacy spelling for %s", canonical);
}

static void gen_fill(gen_tensor *g, size_t ti, const char *dtype) {
    snprintf(g->dtype, sizeof g->dtype, "%s", dtype);
    g->numel = 1;
    for (int d = 0; d < g->ndim; d++) g->numel *= g->shape[d];
    size_t elem = !strcmp(dtype, "F32") ? 4 : !strcmp(dtype, "BF16") ? 2 : 1;
    g->nbytes = (size_t)g->numel * elem;
    free(g->data);
    g->data = malloc(g->nbytes ? g->nbytes : 1);
    assert_non_null(g->data);
    for (int64_t e = 0; e < g->numel; e++) {
        if (elem == 4) {
            float v = gen_value(ti, e);
            memcpy(g->data + 4 * e, &v, 4);
        } else if (elem == 2) {
            uint16_t h = m4t_f32_to_bf16(gen_value(ti, e));
            memcpy(g->data + 2 * e, &h, 2);
        } else {
            g->data[e] = gen_code(ti, e);
        }
    }
}

/* One generated tensor per spec of `cfg`: weights in `mode`'s dtype (FP8 where the spec says a
 * quantized checkpoint stores it so, BF16 for the rest of an FP8 checkpoint), scales F32. */
static gen_set gen_checkpoint(const m4_config *cfg, store_mode mode, bool legacy) {
    m4_tensor_spec *specs;
    size_t n;
    m4_error err = {{0}};
    if (m4_weight_specs(cfg, NULL, &specs, &n, &err) != 0) fail_msg("specs: %s", err.msg);
    gen_set s = {calloc(n + 8, sizeof(gen_tensor)), n}; /* room for tests that add tensors */
    assert_non_null(s.t);
    for (size_t i = 0; i < n; i++) {
        gen_tensor *g = &s.t[i];
        assert_null(specs[i].weight); /* w == NULL: nothing to point into */
        if (legacy) legacy_spelling(specs[i].name, g->name, sizeof g->name);
        else snprintf(g->name, sizeof g->name, "%s", specs[i].name);
        g->ndim = specs[i].ndim;
        memcpy(g->shape, specs[i].shape, sizeof g->shape);
        if (specs[i].kind == M4_SPEC_SCALE || specs[i].kind == M4_SPEC_ACT_SCALE) {
            gen_fill(g, i, "F32");
            for (int64_t e = 0; e < g->numel; e++) {
                float v = specs[i].kind == M4_SPEC_SCALE ? gen_scale(i, e) : gen_act_scale(i, e);
                memcpy(g->data + 4 * e, &v, 4);
            }
        } else if (mode == MODE_FP8 && specs[i].fp8) {
            gen_fill(g, i, "F8_E4M3");
        } else {
            gen_fill(g, i, mode == MODE_F32 ? "F32" : "BF16");
        }
    }
    free(specs);
    return s;
}

static void gen_free(gen_set *s) {
    for (size_t i = 0; i < s->n; i++) free(s->t[i].data);
    free(s->t);
    s->t = NULL, s->n = 0;
}

static gen_tensor *gen_find(const gen_set *s, const char *name) {
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return &s->t[i];
    return NULL;
}

static gen_tensor *gen_get(const gen_set *s, const char *name) {
    gen_tensor *g = gen_find(s, name);
    if (!g) {
        fail_msg("test bug: no generated tensor %s", name);
        abort(); /* not reached; tells the compiler g is non-NULL below */
    }
    return g;
}

static void gen_remove(gen_set *s, const char *name) {
    gen_tensor *g = gen_get(s, name);
    free(g->data);
    *g = s->t[--s->n];
}

static size_t dtype_rank(const char *dtype) {
    return !strcmp(dtype, "F32") || !strcmp(dtype, "I32") ? 0 : !strcmp(dtype, "BF16") ? 1 : 2;
}

/* Writes `s` as `shards` files (+ an index when shards > 1). Within a file, wider elements come
 * first so that every data offset is aligned. */
static void gen_write(const char *dir, const gen_set *s, int shards) {
    m4t_tensor *t = calloc(s->n ? s->n : 1, sizeof *t);
    assert_non_null(t);
    size_t index_cap = 1024 + s->n * 320, index_len = 0;
    char *index = malloc(index_cap);
    assert_non_null(index);
    index_len += (size_t)snprintf(index, index_cap,
                                  "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    bool first = true;
    for (int k = 0; k < shards; k++) {
        char file[64];
        if (shards == 1) snprintf(file, sizeof file, "model.safetensors");
        else snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", k + 1, shards);
        size_t n = 0;
        for (size_t rank = 0; rank < 3; rank++)
            for (size_t i = (size_t)k; i < s->n; i += (size_t)shards) {
                const gen_tensor *g = &s->t[i];
                if (dtype_rank(g->dtype) != rank) continue;
                t[n++] = (m4t_tensor){g->name, g->dtype, g->ndim,
                                      {g->shape[0], g->shape[1], g->shape[2], g->shape[3]},
                                      g->data, g->nbytes};
                index_len += (size_t)snprintf(index + index_len, index_cap - index_len,
                                              "%s\"%s\": \"%s\"", first ? "" : ", ", g->name, file);
                first = false;
                assert_true(index_len < index_cap - 16);
            }
        char *path = m4t_join(dir, file);
        m4t_write_safetensors(path, t, n);
        free(path);
    }
    snprintf(index + index_len, index_cap - index_len, "}}");
    if (shards > 1) {
        char *path = m4t_join(dir, "model.safetensors.index.json");
        m4t_write_text(path, index);
        free(path);
    }
    free(index);
    free(t);
}

/* Element e of generated tensor g, decoded by the test's own formulas. */
static float gen_decoded(const gen_tensor *g, int64_t e) {
    if (!strcmp(g->dtype, "F32")) {
        float v;
        memcpy(&v, g->data + 4 * e, 4);
        return v;
    }
    if (!strcmp(g->dtype, "BF16")) {
        uint16_t h;
        memcpy(&h, g->data + 2 * e, 2);
        uint32_t u = (uint32_t)h << 16;
        float v;
        memcpy(&v, &u, 4);
        return v;
    }
    assert_string_equal(g->dtype, "F8_E4M3");
    return fp8_value(g->data[e]);
}

static float gen_scalar(const gen_set *s, const char *name, int64_t e) {
    const gen_tensor *g = gen_get(s, name);
    assert_string_equal(g->dtype, "F32");
    assert_true(e < g->numel);
    float v;
    memcpy(&v, g->data + 4 * e, 4);
    return v;
}

/* ------------------------------------------------------------------------------------------------
 * The m4_weights fields a config must bind, listed by hand (independently of m4_weight_specs) */

typedef struct {
    const m4_weight *w;
    char name[200];        /* canonical */
    int64_t rows, cols;
} expect_weight;

typedef struct {
    const m4_expert_stack *s;
    char name[200];
    int64_t experts, rows, cols;
} expect_stack;

typedef struct {
    expect_weight w[512];
    size_t nw;
    expect_stack s[64];
    size_t ns;
} expectations;

static void want(expectations *x, const m4_weight *w, int64_t rows, int64_t cols, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
static void want(expectations *x, const m4_weight *w, int64_t rows, int64_t cols, const char *fmt, ...) {
    assert_true(x->nw < sizeof x->w / sizeof x->w[0]);
    expect_weight *e = &x->w[x->nw++];
    e->w = w, e->rows = rows, e->cols = cols;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->name, sizeof e->name, fmt, ap);
    va_end(ap);
}

static void unbound(const m4_weight *w, const char *what) {
    if (w->name || w->data) fail_msg("%s should not be bound but is %s", what, w->name);
}

static void expected_fields(const m4_model *m, const dims *d, expectations *x) {
    const m4_weights *W = &m->weights;
    const char *P = d->multimodal ? "model.language_model." : "model.";
    memset(x, 0, sizeof *x);
    assert_non_null(W->layers);
    want(x, &W->embed_tokens, d->V, d->D, "%sembed_tokens.weight", P);
    int64_t dq = d->dn + d->dr;
    for (int64_t i = 0; i < d->L; i++) {
        const m4_text_layer_weights *L = &W->layers[i];
        char p[128];
        snprintf(p, sizeof p, "%slayers.%lld.", P, (long long)i);
        want(x, &L->input_layernorm, 1, d->D, "%sinput_layernorm.weight", p);
        if (d->Rq) {
            want(x, &L->q_a_proj, d->Rq, d->D, "%sself_attn.q_a_proj.weight", p);
            want(x, &L->q_a_layernorm, 1, d->Rq, "%sself_attn.q_a_layernorm.weight", p);
            want(x, &L->q_b_proj, d->H * dq, d->Rq, "%sself_attn.q_b_proj.weight", p);
            unbound(&L->q_proj, "q_proj");
        } else {
            want(x, &L->q_proj, d->H * dq, d->D, "%sself_attn.q_proj.weight", p);
            unbound(&L->q_a_proj, "q_a_proj");
            unbound(&L->q_b_proj, "q_b_proj");
        }
        want(x, &L->kv_a_proj_with_mqa, d->Rkv + d->dr, d->D, "%sself_attn.kv_a_proj_with_mqa.weight", p);
        want(x, &L->kv_a_layernorm, 1, d->Rkv, "%sself_attn.kv_a_layernorm.weight", p);
        want(x, &L->kv_b_proj, d->H * (d->dn + d->dv), d->Rkv, "%sself_attn.kv_b_proj.weight", p);
        want(x, &L->o_proj, d->D, d->H * d->dv, "%sself_attn.o_proj.weight", p);
        want(x, &L->post_attention_layernorm, 1, d->D, "%spost_attention_layernorm.weight", p);
        if (i >= d->first_dense) {
            assert_true(L->moe);
            want(x, &L->router, d->E, d->D, "%smlp.gate.weight", p);
            unbound(&L->router_bias, "router_bias");
            expect_stack *s = &x->s[x->ns++];
            *s = (expect_stack){&L->experts_gate_up, "", d->E, 2 * d->F, d->D};
            snprintf(s->name, sizeof s->name, "%smlp.experts.gate_up_proj", p);
            s = &x->s[x->ns++];
            *s = (expect_stack){&L->experts_down, "", d->E, d->D, d->F};
            snprintf(s->name, sizeof s->name, "%smlp.experts.down_proj", p);
            want(x, &L->shared_gate_proj, d->F * d->S, d->D, "%smlp.shared_experts.gate_proj.weight", p);
            want(x, &L->shared_up_proj, d->F * d->S, d->D, "%smlp.shared_experts.up_proj.weight", p);
            want(x, &L->shared_down_proj, d->D, d->F * d->S, "%smlp.shared_experts.down_proj.weight", p);
            unbound(&L->gate_proj, "gate_proj of a MoE layer");
        } else {
            assert_false(L->moe);
            want(x, &L->gate_proj, d->I, d->D, "%smlp.gate_proj.weight", p);
            want(x, &L->up_proj, d->I, d->D, "%smlp.up_proj.weight", p);
            want(x, &L->down_proj, d->D, d->I, "%smlp.down_proj.weight", p);
            unbound(&L->router, "router of a dense layer");
            assert_null(L->experts_gate_up.data);
        }
    }
    want(x, &W->norm, 1, d->D, "%snorm.weight", P);
    if (!d->tied) want(x, &W->lm_head, d->V, d->D, "lm_head.weight");
    if (d->multimodal) {
        assert_non_null(W->vision_layers);
        const char *V = "model.vision_tower.";
        want(x, &W->patch_conv, d->Dv, d->C * d->p * d->p, "%spatch_conv.weight", V);
        want(x, &W->ln_pre, 1, d->Dv, "%sln_pre.weight", V);
        for (int64_t j = 0; j < d->Lv; j++) {
            const m4_vision_layer_weights *L = &W->vision_layers[j];
            char p[128];
            snprintf(p, sizeof p, "%stransformer.layers.%lld.", V, (long long)j);
            want(x, &L->attention_norm, 1, d->Dv, "%sattention_norm.weight", p);
            want(x, &L->q_proj, d->Dv, d->Dv, "%sattention.q_proj.weight", p);
            want(x, &L->k_proj, d->Dv, d->Dv, "%sattention.k_proj.weight", p);
            want(x, &L->v_proj, d->Dv, d->Dv, "%sattention.v_proj.weight", p);
            want(x, &L->o_proj, d->Dv, d->Dv, "%sattention.o_proj.weight", p);
            want(x, &L->ffn_norm, 1, d->Dv, "%sffn_norm.weight", p);
            want(x, &L->gate_proj, d->Iv, d->Dv, "%sfeed_forward.gate_proj.weight", p);
            want(x, &L->up_proj, d->Iv, d->Dv, "%sfeed_forward.up_proj.weight", p);
            want(x, &L->down_proj, d->Dv, d->Iv, "%sfeed_forward.down_proj.weight", p);
        }
        const char *M = "model.multi_modal_projector.";
        want(x, &W->projector_norm, 1, d->Dv, "%snorm.weight", M);
        want(x, &W->patch_merger, d->Dv, d->Dv * d->m * d->m, "%spatch_merger.merging_layer.weight", M);
        want(x, &W->linear_1, d->D, d->Dv, "%slinear_1.weight", M);
        want(x, &W->linear_2, d->D, d->D, "%slinear_2.weight", M);
        unbound(&W->linear_1_bias, "linear_1.bias");
    } else {
        assert_null(W->vision_layers);
        unbound(&W->patch_conv, "patch_conv");
        unbound(&W->linear_1, "linear_1");
    }
}

/* Replaces a trailing `from` of `name` with `to`. */
static void swap_suffix(const char *name, const char *from, const char *to, char *out, size_t size) {
    size_t n = strlen(name), k = strlen(from);
    assert_true(n >= k && !strcmp(name + n - k, from));
    snprintf(out, size, "%.*s%s", (int)(n - k), name, to);
}

static void check_rows(const m4_weight *w, const gen_tensor *g, float scale, int64_t offset) {
    float *row = malloc(sizeof(float) * (size_t)w->cols);
    assert_non_null(row);
    for (int64_t r = 0; r < w->rows; r++) {
        m4_weight_row_f32(w, r, row);
        for (int64_t c = 0; c < w->cols; c++) {
            float want_v = gen_decoded(g, offset + r * w->cols + c) * scale;
            if (!(row[c] == want_v || (isnan(row[c]) && isnan(want_v))))
                fail_msg("%s row %lld col %lld: got %a, want %a", w->name, (long long)r,
                         (long long)c, (double)row[c], (double)want_v);
        }
        /* A chunk from the middle of the row reads the same elements. */
        if (w->cols >= 3) {
            float chunk[2];
            m4_weight_row_chunk_f32(w, r, 1, 2, chunk);
            assert_true(chunk[0] == row[1] && chunk[1] == row[2]);
        }
    }
    free(row);
}

/* Checks every field of a bound model against the generated checkpoint. */
static void check_bound(const m4_model *m, const dims *d, const gen_set *s, bool legacy) {
    expectations *x = malloc(sizeof *x);
    assert_non_null(x);
    expected_fields(m, d, x);
    assert_int_equal(m->legacy_names, legacy);
    char disk[200], aux[220];

    /* The hand-written field list and m4_weight_specs agree one to one. */
    m4_tensor_spec *specs;
    size_t n_specs, n_main = 0;
    m4_error err = {{0}};
    assert_int_equal(m4_weight_specs(&m->config, NULL, &specs, &n_specs, &err), 0);
    for (size_t i = 0; i < n_specs; i++) {
        if (specs[i].kind != M4_SPEC_WEIGHT && specs[i].kind != M4_SPEC_EXPERTS) continue;
        n_main++;
        bool listed = false;
        for (size_t k = 0; k < x->nw && !listed; k++) listed = !strcmp(x->w[k].name, specs[i].name);
        for (size_t k = 0; k < x->ns && !listed; k++) listed = !strcmp(x->s[k].name, specs[i].name);
        if (!listed) fail_msg("spec %s is not a field the test expects", specs[i].name);
    }
    free(specs);
    assert_int_equal(n_main, x->nw + x->ns);

    for (size_t k = 0; k < x->nw; k++) {
        const expect_weight *e = &x->w[k];
        const m4_weight *w = e->w;
        if (legacy) legacy_spelling(e->name, disk, sizeof disk);
        else snprintf(disk, sizeof disk, "%s", e->name);
        if (!w->name) fail_msg("%s is not bound", e->name);
        assert_string_equal(w->name, disk);
        assert_non_null(w->data);
        if (w->rows != e->rows || w->cols != e->cols)
            fail_msg("%s: bound as [%lld, %lld], want [%lld, %lld]", e->name, (long long)w->rows,
                     (long long)w->cols, (long long)e->rows, (long long)e->cols);
        const gen_tensor *g = gen_get(s, disk);
        m4_dtype dt;
        assert_int_equal(m4_dtype_parse(g->dtype, &dt), 0);
        assert_int_equal(w->dtype, dt);
        float scale = 1.0f, act = 0.0f;
        if (w->dtype == M4_DTYPE_F8_E4M3) {
            swap_suffix(disk, ".weight", ".weight_scale_inv", aux, sizeof aux);
            scale = gen_scalar(s, aux, 0);
            swap_suffix(disk, ".weight", ".activation_scale", aux, sizeof aux);
            act = gen_scalar(s, aux, 0);
            assert_true(scale != 1.0f); /* a scale that was not applied would go unnoticed */
        }
        assert_true(w->scale == scale);
        assert_true(w->activation_scale == act);
        check_rows(w, g, scale, 0);
    }
    if (d->tied) {
        const m4_weight *head = &m->weights.lm_head, *emb = &m->weights.embed_tokens;
        assert_non_null(head->name);
        assert_string_equal(head->name, emb->name);
        assert_ptr_equal(head->data, emb->data);
        assert_int_equal(head->rows, d->V);
        assert_int_equal(head->cols, d->D);
    }

    for (size_t k = 0; k < x->ns; k++) {
        const expect_stack *e = &x->s[k];
        const m4_expert_stack *st = e->s;
        if (legacy) legacy_spelling(e->name, disk, sizeof disk);
        else snprintf(disk, sizeof disk, "%s", e->name);
        if (!st->name) fail_msg("%s is not bound", e->name);
        assert_string_equal(st->name, disk);
        assert_int_equal(st->experts, e->experts);
        assert_int_equal(st->rows, e->rows);
        assert_int_equal(st->cols, e->cols);
        const gen_tensor *g = gen_get(s, disk);
        bool fp8 = st->dtype == M4_DTYPE_F8_E4M3;
        assert_int_equal(fp8, !strcmp(g->dtype, "F8_E4M3"));
        if (fp8) {
            assert_non_null(st->scales);
            assert_non_null(st->activation_scales);
        }
        for (int64_t ex = 0; ex < st->experts; ex++) {
            m4_weight w = m4_expert_weight(st, ex);
            assert_int_equal(w.rows, e->rows);
            assert_int_equal(w.cols, e->cols);
            assert_int_equal(w.dtype, st->dtype);
            float scale = 1.0f, act = 0.0f;
            if (fp8) {
                snprintf(aux, sizeof aux, "%s_scale_inv", disk);
                scale = gen_scalar(s, aux, ex);
                snprintf(aux, sizeof aux, "%s_activation_scale", disk);
                act = gen_scalar(s, aux, ex);
            }
            assert_true(w.scale == scale);
            assert_true(w.activation_scale == act);
            check_rows(&w, g, scale, ex * e->rows * e->cols);
        }
    }
    free(x);
}

/* ------------------------------------------------------------------------------------------------
 * Round trips */

typedef m4t_dir_fixture fixture; /* one fresh temporary folder per test */

static void round_trip(const char *dir, dims d, store_mode mode, bool legacy, int shards) {
    write_config(dir, &d);
    m4_config cfg;
    load_config(dir, &cfg);
    gen_set s = gen_checkpoint(&cfg, mode, legacy);
    gen_write(dir, &s, shards);
    m4_model m;
    m4_error err = {{0}};
    if (m4_model_open(dir, &m, &err) != 0) fail_msg("m4_model_open: %s", err.msg);
    assert_non_null(m.checkpoint);
    assert_int_equal(m4_checkpoint_tensor_count(m.checkpoint), s.n);
    assert_int_equal(m.config.multimodal, d.multimodal);
    assert_int_equal(m.config.quant.fp8, d.fp8);
    check_bound(&m, &d, &s, legacy);
    m4_model_close(&m);
    assert_null(m.checkpoint);
    gen_free(&s);
}

static void bare_f32(void **state) { round_trip(((fixture *)*state)->dir, BARE, MODE_F32, false, 1); }
static void bare_bf16(void **state) { round_trip(((fixture *)*state)->dir, BARE, MODE_BF16, false, 1); }
static void bare_fp8(void **state) {
    round_trip(((fixture *)*state)->dir, quantized(BARE), MODE_FP8, false, 1);
}
static void bare_odd_dims_tied_bf16(void **state) {
    round_trip(((fixture *)*state)->dir, ODD, MODE_BF16, false, 1);
}
static void bare_odd_dims_fp8_sharded(void **state) {
    round_trip(((fixture *)*state)->dir, quantized(ODD), MODE_FP8, false, 3);
}
static void multimodal_canonical_f32(void **state) {
    round_trip(((fixture *)*state)->dir, multimodal(BARE), MODE_F32, false, 1);
}
static void multimodal_legacy_bf16(void **state) {
    round_trip(((fixture *)*state)->dir, multimodal(BARE), MODE_BF16, true, 1);
}
static void multimodal_canonical_fp8(void **state) {
    round_trip(((fixture *)*state)->dir, quantized(multimodal(BARE)), MODE_FP8, false, 1);
}
static void multimodal_legacy_fp8(void **state) {
    round_trip(((fixture *)*state)->dir, quantized(multimodal(BARE)), MODE_FP8, true, 1);
}
static void multimodal_canonical_fp8_sharded(void **state) {
    round_trip(((fixture *)*state)->dir, quantized(multimodal(BARE)), MODE_FP8, false, 2);
}
static void multimodal_legacy_fp8_sharded(void **state) {
    round_trip(((fixture *)*state)->dir, quantized(multimodal(BARE)), MODE_FP8, true, 4);
}

/* An FP8 config whose checkpoint holds every weight in BF16 (no companions) still binds: the
 * scales are optional next to a non-FP8 tensor, and then the scale is 1. */
static void fp8_config_bf16_checkpoint(void **state) {
    fixture *f = *state;
    dims d = quantized(BARE);
    write_config(f->dir, &d);
    m4_config cfg;
    load_config(f->dir, &cfg);
    gen_set s = gen_checkpoint(&cfg, MODE_BF16, false);
    for (size_t i = 0; i < s.n;) {
        if (strstr(s.t[i].name, "_scale_inv") || strstr(s.t[i].name, "activation_scale"))
            gen_remove(&s, s.t[i].name);
        else
            i++;
    }
    gen_write(f->dir, &s, 1);
    m4_model m;
    m4_error err = {{0}};
    if (m4_model_open(f->dir, &m, &err) != 0) fail_msg("%s", err.msg);
    assert_true(m.weights.layers[0].q_a_proj.scale == 1.0f);
    assert_null(m.weights.layers[1].experts_gate_up.scales);
    m4_weight e = m4_expert_weight(&m.weights.layers[1].experts_gate_up, 2);
    assert_true(e.scale == 1.0f && e.activation_scale == 0.0f);
    m4_model_close(&m);
    gen_free(&s);
}

/* m4_model_bind with a config and a checkpoint opened separately. */
static void bind_separately(void **state) {
    fixture *f = *state;
    dims d = quantized(multimodal(BARE));
    write_config(f->dir, &d);
    m4_config cfg;
    load_config(f->dir, &cfg);
    gen_set s = gen_checkpoint(&cfg, MODE_FP8, false);
    gen_write(f->dir, &s, 1);
    m4_checkpoint *c;
    m4_error err = {{0}};
    char *file = m4t_join(f->dir, "model.safetensors");
    if (m4_checkpoint_open(file, &c, &err) != 0) fail_msg("%s", err.msg);
    m4_model m;
    if (m4_model_bind(&m, &cfg, c, &err) != 0) fail_msg("%s", err.msg);
    check_bound(&m, &d, &s, false);
    m4_model_close(&m);
    free(file);
    gen_free(&s);
}

/* ------------------------------------------------------------------------------------------------
 * Bad checkpoints: each fails with one message naming the tensor and the problem */

static void expect_bind_fails(const char *dir, ...) {
    m4_model m;
    m4_error err = {{0}};
    int rc = m4_model_open(dir, &m, &err);
    if (rc == 0) {
        m4_model_close(&m);
        fail_msg("m4_model_open(%s) succeeded; expected a failure", dir);
    }
    assert_int_equal(rc, -1);
    assert_null(m.checkpoint);
    assert_null(m.weights.layers);
    if (getenv("M4T_SHOW_ERRORS")) print_message("%s\n", err.msg);
    va_list ap;
    va_start(ap, dir);
    for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;)
        m4t_assert_contains(err.msg, needle);
    va_end(ap);
}

/* Writes config + a full generated checkpoint for `d`; returns the set for mutation. */
static gen_set prepare(const char *dir, dims d, store_mode mode, bool legacy, m4_config *cfg) {
    write_config(dir, &d);
    load_config(dir, cfg);
    return gen_checkpoint(cfg, mode, legacy);
}

static void missing_tensor(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, BARE, MODE_BF16, false, &cfg);
    gen_remove(&s, "model.layers.1.self_attn.kv_b_proj.weight");
    gen_write(f->dir, &s, 1);
    expect_bind_fails(f->dir, "\"model.layers.1.self_attn.kv_b_proj.weight\"", "is missing",
                      "config.json", NULL);
    gen_free(&s);
}

static void missing_expert_stack(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, multimodal(BARE), MODE_BF16, true, &cfg);
    gen_remove(&s, "language_model.model.layers.1.mlp.experts.down_proj");
    gen_write(f->dir, &s, 1);
    /* Reported under the canonical spelling. */
    expect_bind_fails(f->dir, "\"model.language_model.layers.1.mlp.experts.down_proj\"", "is missing",
                      NULL);
    gen_free(&s);
}

static void misshaped_tensor(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, BARE, MODE_BF16, false, &cfg);
    gen_tensor *g = gen_get(&s, "model.layers.0.self_attn.q_b_proj.weight");
    g->shape[0] = 4, g->shape[1] = 8; /* [8, 4] transposed: same byte count */
    gen_write(f->dir, &s, 1);
    expect_bind_fails(f->dir, "model.safetensors", "\"model.layers.0.self_attn.q_b_proj.weight\"",
                      "has shape [4, 8]", "implies [8, 4]", NULL);
    gen_free(&s);
}

static void misshaped_rank(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, BARE, MODE_F32, false, &cfg);
    gen_tensor *g = gen_get(&s, "model.norm.weight");
    g->ndim = 2, g->shape[0] = 1, g->shape[1] = 8; /* [1, 8] where [8] is expected */
    gen_write(f->dir, &s, 1);
    expect_bind_fails(f->dir, "\"model.norm.weight\"", "has shape [1, 8]", "implies [8]", NULL);
    gen_free(&s);
}

static void misshaped_expert_scale(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, quantized(BARE), MODE_FP8, false, &cfg);
    gen_tensor *g = gen_get(&s, "model.layers.1.mlp.experts.gate_up_proj_scale_inv");
    g->ndim = 1; /* [E] instead of [E, 1, 1] */
    gen_write(f->dir, &s, 1);
    expect_bind_fails(f->dir, "\"model.layers.1.mlp.experts.gate_up_proj_scale_inv\"",
                      "has shape [4]", "implies [4, 1, 1]", NULL);
    gen_free(&s);
}

static void unexpected_tensor(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, BARE, MODE_BF16, false, &cfg);
    gen_tensor *g = &s.t[s.n++];
    snprintf(g->name, sizeof g->name, "model.layers.0.mlp.extra.weight");
    g->ndim = 1, g->shape[0] = 3;
    gen_fill(g, 999, "BF16");
    gen_write(f->dir, &s, 1);
    expect_bind_fails(f->dir, "model.safetensors", "\"model.layers.0.mlp.extra.weight\"",
                      "is not part of the model", NULL);
    gen_free(&s);
}

/* Legacy names in a bare Mistral4ForCausalLM config are not the model's names. */
static void legacy_names_in_bare_config(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, BARE, MODE_BF16, false, &cfg);
    gen_tensor *g = gen_get(&s, "model.norm.weight");
    snprintf(g->name, sizeof g->name, "language_model.model.norm.weight");
    gen_write(f->dir, &s, 1);
    expect_bind_fails(f->dir, "\"model.norm.weight\"", "is missing", NULL);
    gen_free(&s);
}

static void fp8_without_scale(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, quantized(BARE), MODE_FP8, false, &cfg);
    gen_remove(&s, "model.layers.0.self_attn.q_a_proj.weight_scale_inv");
    gen_write(f->dir, &s, 1);
    expect_bind_fails(f->dir, "FP8 tensor \"model.layers.0.self_attn.q_a_proj.weight\"",
                      "has no \"model.layers.0.self_attn.q_a_proj.weight_scale_inv\" scale", NULL);
    gen_free(&s);
}

static void fp8_experts_without_scale(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, quantized(multimodal(BARE)), MODE_FP8, true, &cfg);
    gen_remove(&s, "language_model.model.layers.1.mlp.experts.down_proj_scale_inv");
    gen_write(f->dir, &s, 1);
    expect_bind_fails(f->dir, "FP8 tensor \"language_model.model.layers.1.mlp.experts.down_proj\"",
                      "down_proj_scale_inv", NULL);
    gen_free(&s);
}

static void f8_in_unquantized_config(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, BARE, MODE_BF16, false, &cfg);
    gen_tensor *g = gen_get(&s, "model.layers.0.self_attn.o_proj.weight");
    gen_fill(g, 7, "F8_E4M3");
    gen_write(f->dir, &s, 1);
    expect_bind_fails(f->dir, "\"model.layers.0.self_attn.o_proj.weight\"", "stored F8_E4M3",
                      "does not quantize it", NULL);
    gen_free(&s);
}

static void f8_experts_in_unquantized_config(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, BARE, MODE_BF16, false, &cfg);
    gen_fill(gen_get(&s, "model.layers.1.mlp.experts.gate_up_proj"), 7, "F8_E4M3");
    gen_write(f->dir, &s, 1);
    expect_bind_fails(f->dir, "\"model.layers.1.mlp.experts.gate_up_proj\"", "F8_E4M3", NULL);
    gen_free(&s);
}

/* lm_head is in modules_to_not_convert: an FP8 lm_head is refused even in an FP8 checkpoint. */
static void f8_in_not_converted_module(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, quantized(multimodal(BARE)), MODE_FP8, false, &cfg);
    gen_fill(gen_get(&s, "lm_head.weight"), 3, "F8_E4M3");
    gen_write(f->dir, &s, 1);
    expect_bind_fails(f->dir, "\"lm_head.weight\"", "stored F8_E4M3", "does not quantize it", NULL);
    gen_free(&s);
}

static void wrong_dtype(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, BARE, MODE_F32, false, &cfg);
    gen_tensor *g = gen_get(&s, "model.layers.1.mlp.gate.weight");
    snprintf(g->dtype, sizeof g->dtype, "I32"); /* same 4-byte elements */
    gen_write(f->dir, &s, 1);
    expect_bind_fails(f->dir, "\"model.layers.1.mlp.gate.weight\"", "is I32, not a floating-point type",
                      NULL);
    gen_free(&s);
}

static void wrong_dtype_experts(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, BARE, MODE_F32, false, &cfg);
    snprintf(gen_get(&s, "model.layers.1.mlp.experts.down_proj")->dtype, 16, "I32");
    gen_write(f->dir, &s, 1);
    expect_bind_fails(f->dir, "\"model.layers.1.mlp.experts.down_proj\"", "I32", NULL);
    gen_free(&s);
}

static void wrong_dtype_scale(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, quantized(BARE), MODE_FP8, false, &cfg);
    snprintf(gen_get(&s, "model.layers.0.self_attn.o_proj.weight_scale_inv")->dtype, 16, "I32");
    gen_write(f->dir, &s, 1);
    expect_bind_fails(f->dir, "\"model.layers.0.self_attn.o_proj.weight_scale_inv\"",
                      "a scale must be F32/BF16/F16", NULL);
    gen_free(&s);
}

static void missing_config(void **state) {
    fixture *f = *state;
    m4_config cfg;
    gen_set s = prepare(f->dir, BARE, MODE_BF16, false, &cfg);
    gen_write(f->dir, &s, 1);
    char *path = m4t_join(f->dir, "config.json");
    assert_int_equal(remove(path), 0);
    expect_bind_fails(f->dir, path, NULL);
    free(path);
    gen_free(&s);
}

static void missing_checkpoint(void **state) {
    fixture *f = *state;
    dims d = BARE;
    write_config(f->dir, &d);
    expect_bind_fails(f->dir, f->dir, "no model.safetensors", NULL);
}

/* ------------------------------------------------------------------------------------------------
 * The published config's tensor list (MODEL.md §5.4) */

static int64_t spec_numel(const m4_tensor_spec *s) {
    int64_t n = 1;
    for (int d = 0; d < s->ndim; d++) n *= s->shape[d];
    return n;
}

static void published_parameter_count(void **state) {
    (void)state;
    char *path = m4t_source_path(PUBLISHED);
    m4_config cfg;
    m4_error err = {{0}};
    if (m4_config_load(path, &cfg, &err) != 0) fail_msg("%s", err.msg);
    m4_tensor_spec *specs;
    size_t n;
    if (m4_weight_specs(&cfg, NULL, &specs, &n, &err) != 0) fail_msg("%s", err.msg);
    int64_t total = 0, by_part[M4_PART_COUNT] = {0};
    size_t n_fp8 = 0, n_scalar = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t k = spec_numel(&specs[i]);
        total += k;
        by_part[specs[i].part] += k;
        n_fp8 += specs[i].fp8;
        n_scalar += specs[i].ndim == 0;
        assert_false(specs[i].fp8 && (specs[i].part == M4_PART_VISION ||
                                      specs[i].part == M4_PART_PROJECTOR ||
                                      specs[i].part == M4_PART_LM_HEAD ||
                                      specs[i].part == M4_PART_ROUTER ||
                                      specs[i].part == M4_PART_EMBED ||
                                      specs[i].part == M4_PART_NORM));
    }
    assert_int_equal(total, INT64_C(119401317952));
    assert_int_equal(by_part[M4_PART_VISION], INT64_C(403305472));
    assert_int_equal(by_part[M4_PART_PROJECTOR], INT64_C(25166848));
    assert_int_equal(by_part[M4_PART_FP8_SCALES], 19008);
    int64_t text = total - by_part[M4_PART_VISION] - by_part[M4_PART_PROJECTOR] -
                   by_part[M4_PART_FP8_SCALES];
    assert_int_equal(text, INT64_C(118972826624));
    /* 36 layers × (8 FP8 linears + 2 expert stacks); each linear has 2 scalar companions. */
    assert_int_equal(n_fp8, 36 * 10);
    assert_int_equal(n_scalar, 36 * 8 * 2);
    assert_int_equal(by_part[M4_PART_LM_HEAD], INT64_C(131072) * 4096);
    assert_int_equal(by_part[M4_PART_EMBED], INT64_C(131072) * 4096);
    assert_int_equal(by_part[M4_PART_ROUTED_EXPERTS], INT64_C(36) * 128 * 3 * 2048 * 4096);
    assert_int_equal(by_part[M4_PART_DENSE_MLP], 0);
    /* Names are unique. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (!strcmp(specs[i].name, specs[j].name)) fail_msg("spec %s listed twice", specs[i].name);
    free(specs);
    free(path);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, m4t_dir_setup, m4t_dir_teardown)
    const struct CMUnitTest tests[] = {
        T(bare_f32),
        T(bare_bf16),
        T(bare_fp8),
        T(bare_odd_dims_tied_bf16),
        T(bare_odd_dims_fp8_sharded),
        T(multimodal_canonical_f32),
        T(multimodal_legacy_bf16),
        T(multimodal_canonical_fp8),
        T(multimodal_legacy_fp8),
        T(multimodal_canonical_fp8_sharded),
        T(multimodal_legacy_fp8_sharded),
        T(fp8_config_bf16_checkpoint),
        T(bind_separately),
        T(missing_tensor),
        T(missing_expert_stack),
        T(misshaped_tensor),
        T(misshaped_rank),
        T(misshaped_expert_scale),
        T(unexpected_tensor),
        T(legacy_names_in_bare_config),
        T(fp8_without_scale),
        T(fp8_experts_without_scale),
        T(f8_in_unquantized_config),
        T(f8_experts_in_unquantized_config),
        T(f8_in_not_converted_module),
        T(wrong_dtype),
        T(wrong_dtype_experts),
        T(wrong_dtype_scale),
        T(missing_config),
        T(missing_checkpoint),
        cmocka_unit_test(published_parameter_count),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
