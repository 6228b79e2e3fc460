/* weights.c — the tensor list a config implies, and its binding to a checkpoint. */
#define _DEFAULT_SOURCE /* sysconf(_SC_AVPHYS_PAGES) */
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static const char *part_names[M4_PART_COUNT] = {
    [M4_PART_EMBED] = "embeddings",         [M4_PART_ATTENTION] = "attention",
    [M4_PART_NORM] = "norms",               [M4_PART_ROUTER] = "router",
    [M4_PART_SHARED_EXPERT] = "shared expert", [M4_PART_ROUTED_EXPERTS] = "routed experts",
    [M4_PART_DENSE_MLP] = "dense mlp",      [M4_PART_LM_HEAD] = "lm_head",
    [M4_PART_VISION] = "vision",            [M4_PART_PROJECTOR] = "projector",
    [M4_PART_FP8_SCALES] = "fp8 scales",
};

const char *m4_part_name(m4_part part) { return part < M4_PART_COUNT ? part_names[part] : "?"; }

/* ------------------------------------------------------------------------------------------------
 * The enumeration */

typedef struct {
    const m4_config *cfg;
    m4_tensor_spec *specs;
    size_t n, cap;
    int layer;
    m4_error *err;
    int failed;
    m4_tensor_spec discard; /* written to after an allocation failure */
} spec_list;

static m4_tensor_spec *add(spec_list *l, m4_part part, m4_spec_kind kind, int ndim,
                           const int64_t *shape, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;

static m4_tensor_spec *add(spec_list *l, m4_part part, m4_spec_kind kind, int ndim,
                           const int64_t *shape, const char *fmt, ...) {
    if (l->failed) return &l->discard;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 512;
        m4_tensor_spec *grown = realloc(l->specs, cap * sizeof *grown);
        if (!grown) {
            l->failed = m4_fail(l->err, "%s: out of memory listing tensors (%zu bytes)", l->cfg->source,
                                cap * sizeof *grown);
            return &l->discard;
        }
        l->specs = grown;
        l->cap = cap;
    }
    m4_tensor_spec *s = &l->specs[l->n++];
    memset(s, 0, sizeof *s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 1 || shape[d] > M4_MAX_TENSOR_ELEMENTS / numel) {
            l->failed = m4_fail(l->err, "%s: tensor \"%s\" would hold more than %lld elements "
                                        "(M4_MAX_TENSOR_ELEMENTS); the config's sizes are too large",
                                l->cfg->source, s->name, (long long)M4_MAX_TENSOR_ELEMENTS);
            return &l->discard;
        }
        numel *= shape[d];
    }
    s->part = part;
    s->kind = kind;
    s->ndim = ndim;
    for (int d = 0; d < ndim; d++) s->shape[d] = shape[d];
    s->layer = l->layer;
    return s;
}

/* a·b for sizes, saturating at INT64_MAX instead of overflowing (add() then refuses the shape). */
static int64_t dim_mul(int64_t a, int64_t b) {
    int64_t r;
    return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
}

/* HF's FP8 quantizer converts every linear whose name contains none of modules_to_not_convert. */
static bool quantized(const m4_config *cfg, const char *name) {
    if (!cfg->quant.fp8) return false;
    for (int i = 0; i < cfg->quant.n_not_converted; i++)
        if (strstr(name, cfg->quant.not_converted[i])) return false;
    return true;
}

static void add_norm(spec_list *l, m4_part part, m4_weight *dst, int64_t n, const char *name) {
    add(l, part, M4_SPEC_WEIGHT, 1, (int64_t[]){n}, "%s", name)->weight = dst;
}

/* An nn.Linear weight [out, in] (+ its FP8 scale companions when the config quantizes it). */
static void add_linear(spec_list *l, m4_part part, m4_weight *dst, int64_t out, int64_t in,
                       const char *module) {
    m4_tensor_spec *s = add(l, part, M4_SPEC_WEIGHT, 2, (int64_t[]){out, in}, "%s.weight", module);
    s->weight = dst;
    if (!quantized(l->cfg, module)) return;
    s->fp8 = true;
    m4_tensor_spec *c = add(l, M4_PART_FP8_SCALES, M4_SPEC_SCALE, 0, NULL, "%s.weight_scale_inv", module);
    c->weight = dst, c->optional = true;
    c = add(l, M4_PART_FP8_SCALES, M4_SPEC_ACT_SCALE, 0, NULL, "%s.activation_scale", module);
    c->weight = dst, c->optional = true;
}

/* A fused expert tensor [E, rows, cols] (no `.weight` suffix) + per-expert scale companions. */
static void add_experts(spec_list *l, m4_expert_stack *dst, int64_t rows, int64_t cols,
                        const char *name) {
    int64_t E = l->cfg->text.n_routed_experts;
    m4_tensor_spec *s = add(l, M4_PART_ROUTED_EXPERTS, M4_SPEC_EXPERTS, 3, (int64_t[]){E, rows, cols},
                            "%s", name);
    s->experts = dst;
    if (!quantized(l->cfg, name)) return;
    s->fp8 = true;
    m4_tensor_spec *c = add(l, M4_PART_FP8_SCALES, M4_SPEC_SCALE, 3, (int64_t[]){E, 1, 1},
                            "%s_scale_inv", name);
    c->experts = dst, c->optional = true;
    c = add(l, M4_PART_FP8_SCALES, M4_SPEC_ACT_SCALE, 1, (int64_t[]){E}, "%s_activation_scale", name);
    c->experts = dst, c->optional = true;
}

static void add_text_layer(spec_list *l, const char *prefix, int i, m4_text_layer_weights *w) {
    const m4_text_config *t = &l->cfg->text;
    int64_t D = t->hidden_size, H = t->num_attention_heads, dq = t->qk_head_dim;
    int64_t dn = t->qk_nope_head_dim, dr = t->qk_rope_head_dim, dv = t->v_head_dim;
    char p[192];
    snprintf(p, sizeof p, "%slayers.%d.", prefix, i);
    char name[256];
#define NAME(suffix) (snprintf(name, sizeof name, "%s%s", p, suffix), name)
    l->layer = i;
    add_norm(l, M4_PART_NORM, &w->input_layernorm, D, NAME("input_layernorm.weight"));
    if (t->q_lora_rank > 0) {
        add_linear(l, M4_PART_ATTENTION, &w->q_a_proj, t->q_lora_rank, D, NAME("self_attn.q_a_proj"));
        add_norm(l, M4_PART_ATTENTION, &w->q_a_layernorm, t->q_lora_rank,
                 NAME("self_attn.q_a_layernorm.weight"));
        add_linear(l, M4_PART_ATTENTION, &w->q_b_proj, dim_mul(H, dq), t->q_lora_rank, NAME("self_attn.q_b_proj"));
    } else {
        add_linear(l, M4_PART_ATTENTION, &w->q_proj, dim_mul(H, dq), D, NAME("self_attn.q_proj"));
    }
    add_linear(l, M4_PART_ATTENTION, &w->kv_a_proj_with_mqa, t->kv_lora_rank + dr, D,
               NAME("self_attn.kv_a_proj_with_mqa"));
    add_norm(l, M4_PART_ATTENTION, &w->kv_a_layernorm, t->kv_lora_rank,
             NAME("self_attn.kv_a_layernorm.weight"));
    add_linear(l, M4_PART_ATTENTION, &w->kv_b_proj, dim_mul(H, dn + dv), t->kv_lora_rank,
               NAME("self_attn.kv_b_proj"));
    add_linear(l, M4_PART_ATTENTION, &w->o_proj, D, dim_mul(H, dv), NAME("self_attn.o_proj"));
    add_norm(l, M4_PART_NORM, &w->post_attention_layernorm, D, NAME("post_attention_layernorm.weight"));
    w->moe = i >= t->first_k_dense_replace;
    if (w->moe) {
        int64_t E = t->n_routed_experts, F = t->moe_intermediate_size;
        add(l, M4_PART_ROUTER, M4_SPEC_WEIGHT, 2, (int64_t[]){E, D}, "%s", NAME("mlp.gate.weight"))
            ->weight = &w->router;
        if (t->scoring_func == M4_ROUTER_SIGMOID) /* DeepSeek-style; Mistral 4 has no bias */
            add(l, M4_PART_ROUTER, M4_SPEC_WEIGHT, 1, (int64_t[]){E}, "%s",
                NAME("mlp.gate.e_score_correction_bias"))->weight = &w->router_bias;
        add_experts(l, &w->experts_gate_up, dim_mul(2, F), D, NAME("mlp.experts.gate_up_proj"));
        add_experts(l, &w->experts_down, D, F, NAME("mlp.experts.down_proj"));
        if (t->n_shared_experts > 0) {
            int64_t Fs = dim_mul(F, t->n_shared_experts);
            add_linear(l, M4_PART_SHARED_EXPERT, &w->shared_gate_proj, Fs, D, NAME("mlp.shared_experts.gate_proj"));
            add_linear(l, M4_PART_SHARED_EXPERT, &w->shared_up_proj, Fs, D, NAME("mlp.shared_experts.up_proj"));
            add_linear(l, M4_PART_SHARED_EXPERT, &w->shared_down_proj, D, Fs, NAME("mlp.shared_experts.down_proj"));
        }
    } else {
        int64_t I = t->intermediate_size;
        add_linear(l, M4_PART_DENSE_MLP, &w->gate_proj, I, D, NAME("mlp.gate_proj"));
        add_linear(l, M4_PART_DENSE_MLP, &w->up_proj, I, D, NAME("mlp.up_proj"));
        add_linear(l, M4_PART_DENSE_MLP, &w->down_proj, D, I, NAME("mlp.down_proj"));
    }
#undef NAME
    l->layer = -1;
}

static void add_vision(spec_list *l, m4_weights *w) {
    const m4_vision_config *v = &l->cfg->vision;
    int64_t Dv = v->hidden_size, Iv = v->intermediate_size, p = v->patch_size;
    char name[256];
    add(l, M4_PART_VISION, M4_SPEC_WEIGHT, 4, (int64_t[]){Dv, v->num_channels, p, p},
        "model.vision_tower.patch_conv.weight")->weight = &w->patch_conv;
    add_norm(l, M4_PART_VISION, &w->ln_pre, Dv, "model.vision_tower.ln_pre.weight");
    for (int j = 0; j < v->num_hidden_layers; j++) {
        m4_vision_layer_weights *L = &w->vision_layers[j];
#define NAME(suffix) (snprintf(name, sizeof name, "model.vision_tower.transformer.layers.%d.%s", j, suffix), name)
        l->layer = j;
        add_norm(l, M4_PART_VISION, &L->attention_norm, Dv, NAME("attention_norm.weight"));
        add_linear(l, M4_PART_VISION, &L->q_proj, Dv, Dv, NAME("attention.q_proj"));
        add_linear(l, M4_PART_VISION, &L->k_proj, Dv, Dv, NAME("attention.k_proj"));
        add_linear(l, M4_PART_VISION, &L->v_proj, Dv, Dv, NAME("attention.v_proj"));
        add_linear(l, M4_PART_VISION, &L->o_proj, Dv, Dv, NAME("attention.o_proj"));
        add_norm(l, M4_PART_VISION, &L->ffn_norm, Dv, NAME("ffn_norm.weight"));
        add_linear(l, M4_PART_VISION, &L->gate_proj, Iv, Dv, NAME("feed_forward.gate_proj"));
        add_linear(l, M4_PART_VISION, &L->up_proj, Iv, Dv, NAME("feed_forward.up_proj"));
        add_linear(l, M4_PART_VISION, &L->down_proj, Dv, Iv, NAME("feed_forward.down_proj"));
#undef NAME
    }
    l->layer = -1;
    int64_t D = l->cfg->text.hidden_size, m = l->cfg->spatial_merge_size;
    const char *P = "model.multi_modal_projector.";
#define NAME(suffix) (snprintf(name, sizeof name, "%s%s", P, suffix), name)
    add_norm(l, M4_PART_PROJECTOR, &w->projector_norm, Dv, NAME("norm.weight"));
    add_linear(l, M4_PART_PROJECTOR, &w->patch_merger, Dv, dim_mul(Dv, dim_mul(m, m)), NAME("patch_merger.merging_layer"));
    add_linear(l, M4_PART_PROJECTOR, &w->linear_1, D, Dv, NAME("linear_1"));
    add_linear(l, M4_PART_PROJECTOR, &w->linear_2, D, D, NAME("linear_2"));
    if (l->cfg->multimodal_projector_bias) {
        add_norm(l, M4_PART_PROJECTOR, &w->linear_1_bias, D, NAME("linear_1.bias"));
        add_norm(l, M4_PART_PROJECTOR, &w->linear_2_bias, D, NAME("linear_2.bias"));
    }
#undef NAME
}

int m4_weight_specs(const m4_config *cfg, m4_weights *w, m4_tensor_spec **specs, size_t *n,
                    m4_error *err) {
    *specs = NULL;
    *n = 0;
    const m4_text_config *t = &cfg->text;
    if (t->attention_bias)
        return m4_fail(err, "%s: attention_bias = true is not supported (no Mistral 4 checkpoint "
                            "has attention biases)", cfg->source);
    m4_weights scratch;
    bool bind = w != NULL;
    if (!bind) w = &scratch;
    memset(w, 0, sizeof *w);
    w->layers = calloc((size_t)t->num_hidden_layers, sizeof *w->layers);
    if (cfg->multimodal)
        w->vision_layers = calloc((size_t)cfg->vision.num_hidden_layers, sizeof *w->vision_layers);
    if (!w->layers || (cfg->multimodal && !w->vision_layers)) {
        free(w->layers), free(w->vision_layers);
        return m4_fail(err, "%s: out of memory (%zu bytes for the layer tables)", cfg->source,
                       (size_t)t->num_hidden_layers * sizeof *w->layers +
                           (cfg->multimodal ? (size_t)cfg->vision.num_hidden_layers * sizeof *w->vision_layers : 0));
    }
    spec_list l = {.cfg = cfg, .layer = -1, .err = err};
    const char *prefix = cfg->multimodal ? "model.language_model." : "model.";
    char name[256];
    snprintf(name, sizeof name, "%sembed_tokens.weight", prefix);
    add(&l, M4_PART_EMBED, M4_SPEC_WEIGHT, 2, (int64_t[]){t->vocab_size, t->hidden_size}, "%s", name)
        ->weight = &w->embed_tokens;
    for (int i = 0; i < t->num_hidden_layers; i++) add_text_layer(&l, prefix, i, &w->layers[i]);
    snprintf(name, sizeof name, "%snorm.weight", prefix);
    add_norm(&l, M4_PART_NORM, &w->norm, t->hidden_size, name);
    if (!cfg->tie_word_embeddings)
        add_linear(&l, M4_PART_LM_HEAD, &w->lm_head, t->vocab_size, t->hidden_size, "lm_head");
    if (cfg->multimodal) add_vision(&l, w);
    if (!bind || l.failed) {
        free(w->layers), free(w->vision_layers);
        w->layers = NULL, w->vision_layers = NULL;
        /* Specs must not point into a scratch struct that is about to go away. */
        for (size_t i = 0; i < l.n; i++) l.specs[i].weight = NULL, l.specs[i].experts = NULL;
    }
    if (l.failed) {
        free(l.specs);
        return -1;
    }
    *specs = l.specs;
    *n = l.n;
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Binding */

/* The on-disk name under the legacy VLM spelling (language_model.model.… etc.), or NULL. */
static const char *legacy_name(const char *canonical, char *buf, size_t size) {
    static const struct { const char *from, *to; } map[] = {
        {"model.language_model.", "language_model.model."},
        {"lm_head.", "language_model.lm_head."},
        {"model.vision_tower.", "vision_tower."},
        {"model.multi_modal_projector.", "multi_modal_projector."},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
        size_t n = strlen(map[i].from);
        if (strncmp(canonical, map[i].from, n) == 0) {
            snprintf(buf, size, "%s%s", map[i].to, canonical + n);
            return buf;
        }
    }
    return NULL;
}

const m4_tensor *m4_find_spec_tensor(const m4_checkpoint *ckpt, const m4_config *cfg,
                                     const m4_tensor_spec *spec, bool *legacy) {
    char alt[256];
    const m4_tensor *t = m4_checkpoint_find(ckpt, spec->name);
    bool used_legacy = false;
    if (!t && cfg->multimodal && legacy_name(spec->name, alt, sizeof alt)) {
        t = m4_checkpoint_find(ckpt, alt);
        used_legacy = t != NULL;
    }
    if (legacy) *legacy = used_legacy;
    return t;
}

static void format_shape(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t len = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && len < size; d++)
        len += (size_t)snprintf(buf + len, size - len, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (len < size) snprintf(buf + len, size - len, "]");
}

static bool shape_matches(const m4_tensor_spec *s, const m4_tensor *t) {
    if (s->kind == M4_SPEC_SCALE && s->ndim == 0) return t->numel == 1; /* [] or [1] */
    if (t->ndim != s->ndim) return false;
    for (int d = 0; d < s->ndim; d++)
        if (t->shape[d] != s->shape[d]) return false;
    return true;
}

/* Reads a small float tensor (scales) into dst[n]. */
static int read_floats(const m4_tensor *t, float *dst, int64_t n, m4_error *err) {
    if (!m4_dtype_is_float(t->dtype) || t->dtype == M4_DTYPE_F8_E4M3 || t->numel != n)
        return m4_fail(err, "%s: tensor \"%s\": a scale must be F32/BF16/F16 with %lld elements",
                       t->file, t->name, (long long)n);
    m4_convert_to_f32(t->dtype, t->data, (size_t)n, 1.0f, dst);
    return 0;
}

static int bind_one(const m4_config *cfg, const m4_tensor_spec *s, const m4_tensor *t, m4_error *err) {
    char want[96], got[96];
    if (!shape_matches(s, t)) {
        format_shape(want, sizeof want, s->ndim, s->shape);
        format_shape(got, sizeof got, t->ndim, t->shape);
        return m4_fail(err, "%s: tensor \"%s\" has shape %s but %s implies %s", t->file, t->name, got,
                       cfg->source, want);
    }
    switch (s->kind) {
    case M4_SPEC_WEIGHT:
        if (!m4_dtype_is_float(t->dtype))
            return m4_fail(err, "%s: tensor \"%s\" is %s, not a floating-point type", t->file, t->name,
                           m4_dtype_name(t->dtype));
        if (t->dtype == M4_DTYPE_F8_E4M3 && !s->fp8)
            return m4_fail(err, "%s: tensor \"%s\" is stored F8_E4M3 but %s does not quantize it "
                                "(quantization_config)", t->file, t->name, cfg->source);
        *s->weight = (m4_weight){.name = t->name, .dtype = t->dtype, .rows = s->ndim >= 2 ? s->shape[0] : 1,
                                 .cols = s->ndim >= 2 ? t->numel / s->shape[0] : t->numel,
                                 .data = t->data, .scale = 1.0f};
        return 0;
    case M4_SPEC_EXPERTS:
        if (!m4_dtype_is_float(t->dtype) || (t->dtype == M4_DTYPE_F8_E4M3 && !s->fp8))
            return m4_fail(err, "%s: tensor \"%s\" is %s, which %s does not allow for it", t->file,
                           t->name, m4_dtype_name(t->dtype), cfg->source);
        s->experts->name = t->name;
        s->experts->dtype = t->dtype;
        s->experts->experts = s->shape[0];
        s->experts->rows = s->shape[1];
        s->experts->cols = s->shape[2];
        s->experts->data = t->data;
        return 0;
    case M4_SPEC_SCALE:
    case M4_SPEC_ACT_SCALE:
        if (s->weight) {
            float v;
            if (read_floats(t, &v, 1, err) != 0) return -1;
            if (s->kind == M4_SPEC_SCALE) s->weight->scale = v;
            else s->weight->activation_scale = v;
            return 0;
        } else {
            float **dst = s->kind == M4_SPEC_SCALE ? &s->experts->scales : &s->experts->activation_scales;
            int64_t E = s->shape[0];
            if (!(*dst = malloc((size_t)E * sizeof **dst)))
                return m4_fail(err, "%s: out of memory (%zu bytes)", t->file, (size_t)E * sizeof **dst);
            return read_floats(t, *dst, E, err);
        }
    }
    return 0;
}

int m4_model_bind(m4_model *model, const m4_config *cfg, m4_checkpoint *ckpt, m4_error *err) {
    memset(model, 0, sizeof *model);
    model->config = *cfg;
    model->checkpoint = ckpt;
    m4_tensor_spec *specs;
    size_t n;
    if (m4_weight_specs(&model->config, &model->weights, &specs, &n, err) != 0) {
        m4_model_close(model);
        return -1;
    }
    size_t n_tensors = m4_checkpoint_tensor_count(ckpt);
    bool *claimed = calloc(n_tensors ? n_tensors : 1, sizeof *claimed);
    bool *found = calloc(n ? n : 1, sizeof *found);
    int rc = (claimed && found) ? 0
                                : m4_fail(err, "%s: out of memory (%zu bytes)", m4_checkpoint_path(ckpt),
                                          (n_tensors + n) * sizeof(bool));
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const m4_tensor_spec *s = &specs[i];
        bool legacy;
        const m4_tensor *t = m4_find_spec_tensor(ckpt, &model->config, s, &legacy);
        if (legacy) model->legacy_names = true;
        if (!t) {
            if (!s->optional)
                rc = m4_fail(err, "%s: tensor \"%s\" is missing (required by %s)",
                             m4_checkpoint_path(ckpt), s->name, model->config.source);
            continue;
        }
        found[i] = true;
        claimed[t - m4_checkpoint_tensor(ckpt, 0)] = true;
        rc = bind_one(&model->config, s, t, err);
    }
    /* An FP8 tensor must come with its dequantisation scale, or it would be read 1×. */
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const m4_tensor_spec *s = &specs[i];
        if (s->kind != M4_SPEC_SCALE || found[i]) continue;
        const char *name = s->weight ? s->weight->name : s->experts->name;
        m4_dtype dtype = s->weight ? s->weight->dtype : s->experts->dtype;
        if (name && dtype == M4_DTYPE_F8_E4M3)
            rc = m4_fail(err, "%s: FP8 tensor \"%s\" has no \"%s\" scale", m4_checkpoint_path(ckpt),
                         name, s->name);
    }
    for (size_t i = 0; rc == 0 && i < n_tensors; i++) {
        if (!claimed[i]) {
            const m4_tensor *t = m4_checkpoint_tensor(ckpt, i);
            rc = m4_fail(err, "%s: tensor \"%s\" is not part of the model %s describes", t->file,
                         t->name, model->config.source);
        }
    }
    if (rc == 0 && model->config.tie_word_embeddings) model->weights.lm_head = model->weights.embed_tokens;
    free(claimed);
    free(found);
    free(specs);
    if (rc != 0) {
        model->checkpoint = ckpt; /* closed by m4_model_close */
        m4_model_close(model);
    }
    return rc;
}

/* Whether `bytes` is at most half of the memory available now: Linux's MemAvailable (free memory
 * plus the page cache it can reclaim — the checkpoint's own pages among them), else the free pages. */
static bool fits_in_memory(uint64_t bytes) {
    uint64_t available = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    char line[128];
    unsigned long long kib;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) available = (uint64_t)kib * 1024;
    if (f) fclose(f);
    if (!available) {
        const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        if (pages > 0 && page > 0) available = (uint64_t)pages * (uint64_t)page;
    }
    return bytes <= available / 2;
}

static int open_model(const char *dir, bool try_resident, m4_model *model, bool *resident, m4_error *err) {
    memset(model, 0, sizeof *model);
    if (resident) *resident = false;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    m4_config cfg;
    if (m4_config_load(path, &cfg, err) != 0) return -1;
    m4_checkpoint *ckpt;
    if (m4_checkpoint_open(dir, &ckpt, err) != 0) return -1;
    if (try_resident && fits_in_memory(m4_checkpoint_data_bytes(ckpt))) {
        if (m4_checkpoint_make_resident(ckpt, err) != 0) {
            m4_checkpoint_close(ckpt);
            return -1;
        }
        *resident = true;
    }
    return m4_model_bind(model, &cfg, ckpt, err);
}

int m4_model_open(const char *dir, m4_model *model, m4_error *err) { return open_model(dir, false, model, NULL, err); }

int m4_model_open_resident(const char *dir, m4_model *model, bool *resident, m4_error *err) {
    return open_model(dir, true, model, resident, err);
}

static void free_stack(m4_expert_stack *s) {
    free(s->scales);
    free(s->activation_scales);
}

void m4_model_close(m4_model *model) {
    if (model->weights.layers) {
        for (int64_t i = 0; i < model->config.text.num_hidden_layers; i++) {
            free_stack(&model->weights.layers[i].experts_gate_up);
            free_stack(&model->weights.layers[i].experts_down);
        }
    }
    free(model->weights.layers);
    free(model->weights.vision_layers);
    m4_checkpoint_close(model->checkpoint);
    memset(model, 0, sizeof *model);
}

/* ------------------------------------------------------------------------------------------------
 * Dequantisation on demand */

void m4_weight_row_chunk_f32(const m4_weight *w, int64_t row, int64_t col0, int64_t n, float *dst) {
    size_t elem = m4_dtype_size(w->dtype);
    const uint8_t *src = w->data + ((size_t)row * (size_t)w->cols + (size_t)col0) * elem;
    m4_convert_to_f32(w->dtype, src, (size_t)n, w->scale, dst);
}

void m4_weight_row_f32(const m4_weight *w, int64_t row, float *dst) {
    m4_weight_row_chunk_f32(w, row, 0, w->cols, dst);
}

m4_weight m4_expert_weight(const m4_expert_stack *s, int64_t e) {
    size_t per_expert = (size_t)s->rows * (size_t)s->cols * m4_dtype_size(s->dtype);
    return (m4_weight){.name = s->name, .dtype = s->dtype, .rows = s->rows, .cols = s->cols,
                       .data = s->data + (size_t)e * per_expert,
                       .scale = s->scales ? s->scales[e] : 1.0f,
                       .activation_scale = s->activation_scales ? s->activation_scales[e] : 0.0f};
}
