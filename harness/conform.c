/* conform.c — runs a backend's components against a golden file (teacher-forced: each
 * component's inputs are HF's own, so an error cannot hide behind an earlier one) and end to end. */
#include "conform.h"

#include <fnmatch.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "golden.h"
#include "registry.h"

const char *m4_result_status_name(m4_result_status s) {
    switch (s) {
    case M4_RESULT_PASS: return "PASS";
    case M4_RESULT_FAIL: return "FAIL";
    case M4_RESULT_ERROR: return "ERROR";
    case M4_RESULT_NOT_IMPLEMENTED: return "NOT-IMPL";
    }
    return "?";
}

/* The attention of one layer, run once with its trace and shared by the stage rows. */
typedef struct {
    int layer;              /* -1 when empty */
    int rc;
    char error[1100];
    double time_ms;
    float *out;
    m4_mla_trace trace;
} attention_run;

/* The vision attention of one layer, run once with its trace and shared by its stage rows. */
typedef struct {
    int layer;              /* -1 when empty */
    int rc;
    char error[1100];
    double time_ms;
    float *out;
    m4_vision_attn_trace trace;
} vision_attention_run;

typedef struct {
    const m4_conform_options *opt;
    const m4_model *model;
    const m4_golden *golden;
    const m4_backend *backend;
    void *state;
    m4_report *report;
    m4_softmax_scale_rule rule;
    float softmax_scale;
    m4_array ids, positions, mask; /* /inputs */
    int64_t B, S;
    bool multimodal_inputs;
    attention_run attn;
    /* the images of a multimodal case (/inputs/pixel_values, /inputs/image_sizes) */
    m4_array pixels, image_sizes;
    m4_pixel_batch px;
    m4_patch_grid *grids;   /* [px.n] */
    int64_t patches;        /* P: all images' patches, one sequence */
    vision_attention_run vattn;
} run_ctx;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static m4_result *new_result(run_ctx *c, const m4_component *comp, const char *name, m4_error *err) {
    m4_report *r = c->report;
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 64;
        m4_result *grown = realloc(r->results, cap * sizeof *grown);
        if (!grown) {
            m4_fail(err, "out of memory for the report's rows (%zu rows)", cap);
            return NULL;
        }
        r->results = grown;
        r->cap = cap;
    }
    m4_result *res = &r->results[r->n++];
    memset(res, 0, sizeof *res);
    snprintf(res->name, sizeof res->name, "%s", name);
    snprintf(res->hf_module, sizeof res->hf_module, "%s", comp->hf_module);
    res->tolerance = c->opt->bf16_budgets ? comp->tolerance_bf16 : comp->tolerance_fp32;
    res->min_cosine = c->opt->bf16_budgets ? M4_BF16_MIN_COSINE : 0.0;
    res->topk_mismatches = -1;
    return res;
}

/* The shape a golden dataset must have: what the config and the case's inputs imply for it
 * (golden/README.md). Buffers a backend writes are sized from these, so a dataset of any other
 * shape is an error, never an overflow. */
typedef struct {
    int ndim;
    int64_t dims[M4_GOLDEN_MAX_DIMS];
} dataset_shape;

/* SHAPE(B, S, D) */
#define SHAPE(...) \
    ((dataset_shape){.ndim = (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), .dims = {__VA_ARGS__}})

/* 0 when `a` (dataset `path`) has shape `want`; else -1 with a message naming the file, the
 * dataset and both shapes. */
static int check_shape(const run_ctx *c, const char *path, const m4_array *a, dataset_shape want, m4_error *err) {
    bool same = a->ndim == want.ndim;
    for (int d = 0; same && d < want.ndim; d++) same = a->dims[d] == want.dims[d];
    if (same) return 0;
    m4_array implied = {.ndim = want.ndim};
    memcpy(implied.dims, want.dims, sizeof implied.dims);
    char found[200], expected[200];
    m4_array_shape_string(a, found, sizeof found);
    m4_array_shape_string(&implied, expected, sizeof expected);
    return m4_fail(err, "%s: dataset \"%s\" has shape %s but the config and inputs imply %s",
                   m4_golden_path(c->golden), path, found, expected);
}

/* Reads "<group>/<dataset>", which must have shape `want`, or returns -1 with err set. */
static int read_golden(run_ctx *c, const char *group, const char *dataset, bool as_int, dataset_shape want,
                       m4_array *a, m4_error *err) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", group, dataset);
    if (m4_golden_read(c->golden, path, as_int, a, err)) return -1;
    if (check_shape(c, path, a, want, err) == 0) return 0;
    m4_array_free(a);
    return -1;
}

/* M: the merged image tokens of the case's images (the projector's output rows). */
static int64_t merged_tokens(const run_ctx *c) {
    return m4_ref_merged_tokens(c->grids, c->px.n, c->model->config.spatial_merge_size);
}

static void compare(m4_result *res, const float *got, const m4_array *want) {
    m4_array_shape_string(want, res->shape, sizeof res->shape);
    res->cmp = m4_compare_f32(got, want->f32, want->numel, res->tolerance);
    res->status = res->cmp.pass && res->cmp.cosine >= res->min_cosine ? M4_RESULT_PASS : M4_RESULT_FAIL;
    if (res->cmp.pass && res->cmp.cosine < res->min_cosine)
        snprintf(res->message, sizeof res->message, "cosine %.6f below the bf16 budget's %.3f",
                 res->cmp.cosine, res->min_cosine);
    if (res->cmp.nonfinite_mismatch)
        snprintf(res->message, sizeof res->message, "%lld NaN/Inf mismatches",
                 (long long)res->cmp.nonfinite_mismatch);
}

static void record_error(m4_result *res, const char *what, const m4_error *e) {
    res->status = M4_RESULT_ERROR;
    snprintf(res->message, sizeof res->message, "%s: %s", what, e->msg);
}

static bool not_implemented(m4_result *res, const void *entry, const char *backend) {
    if (entry) return false;
    res->status = M4_RESULT_NOT_IMPLEMENTED;
    snprintf(res->message, sizeof res->message, "backend \"%s\" has no implementation", backend);
    return true;
}

/* ---- buffers ----------------------------------------------------------------------------------- */

/* Elements of `shape` in int64 arithmetic checked for overflow: -1 when the product exceeds
 * INT64_MAX (or a dimension is negative). */
static int64_t shape_elements(dataset_shape shape) {
    for (int d = 0; d < shape.ndim; d++)
        if (shape.dims[d] == 0) return 0;
    int64_t n = 1;
    for (int d = 0; d < shape.ndim; d++) {
        if (shape.dims[d] < 0 || n > INT64_MAX / shape.dims[d]) return -1;
        n *= shape.dims[d];
    }
    return n;
}

static dataset_shape shape_of(const m4_array *a) {
    dataset_shape s = {.ndim = a->ndim};
    memcpy(s.dims, a->dims, sizeof s.dims);
    return s;
}

/* A buffer for dataset "<group>/<dataset>" (what a backend writes to compare with it, or the
 * runner's own copy of it) of `shape`, the shape the config and the case's inputs imply, in
 * elements of `size` bytes named `unit`. NULL with err set, and nothing allocated, when that shape
 * holds more than M4_GOLDEN_MAX_ELEMENTS elements (counted with overflow checks: the inputs' B, S
 * and patches P multiply, e.g. B·H·S·S attention weights; no dataset that large can be read to
 * compare with) or when malloc fails. The caller then records an ERROR row and runs no backend. */
static void *alloc_buffer(const run_ctx *c, const char *group, const char *dataset, dataset_shape shape,
                          size_t size, const char *unit, m4_error *err) {
    int64_t n = shape_elements(shape);
    if (n < 0 || n > M4_GOLDEN_MAX_ELEMENTS) {
        m4_array a = {.ndim = shape.ndim};
        memcpy(a.dims, shape.dims, sizeof a.dims);
        char dims[200], count[64];
        m4_array_shape_string(&a, dims, sizeof dims);
        if (n < 0) snprintf(count, sizeof count, "more than 2^63 - 1");
        else snprintf(count, sizeof count, "%lld", (long long)n);
        m4_fail(err, "%s: dataset \"%s/%s\": the config and inputs imply shape %s (%s elements), more than "
                     "the %lld-element limit (M4_GOLDEN_MAX_ELEMENTS)",
                m4_golden_path(c->golden), group, dataset, dims, count, (long long)M4_GOLDEN_MAX_ELEMENTS);
        return NULL;
    }
    void *p = malloc((size_t)(n > 0 ? n : 1) * size); /* n ≤ 2^27: no size_t overflow */
    if (!p) m4_fail(err, "out of memory for dataset \"%s/%s\" (%lld %s)", group, dataset, (long long)n, unit);
    return p;
}

static float *alloc_f32(const run_ctx *c, const char *group, const char *dataset, dataset_shape shape,
                        m4_error *err) {
    return alloc_buffer(c, group, dataset, shape, sizeof(float), "floats", err);
}

/* Records a failed alloc_buffer: the row is an ERROR with its message. */
static void record_alloc_error(m4_result *res, const m4_error *e) {
    res->status = M4_RESULT_ERROR;
    snprintf(res->message, sizeof res->message, "%s", e->msg);
}

static void set_cost(run_ctx *c, m4_result *res, const m4_component *comp, int64_t tokens) {
    m4_cost cost = comp->cost(&c->model->config, tokens, c->S, 4);
    res->flops = cost.flops;
    res->bytes = cost.bytes;
}

/* The vision rows: tokens are patches (or merged tokens), the context is the patch sequence. */
static void set_vision_cost(run_ctx *c, m4_result *res, const m4_component *comp, int64_t tokens) {
    m4_cost cost = comp->cost(&c->model->config, tokens, c->patches, 4);
    res->flops = cost.flops;
    res->bytes = cost.bytes;
}

static const m4_weight *norm_weight(const m4_model *m, m4_component_kind kind, int layer) {
    switch (kind) {
    case M4_COMP_INPUT_NORM: return &m->weights.layers[layer].input_layernorm;
    case M4_COMP_POST_NORM: return &m->weights.layers[layer].post_attention_layernorm;
    case M4_COMP_LN_PRE: return &m->weights.ln_pre;
    case M4_COMP_VISION_ATTN_NORM: return &m->weights.vision_layers[layer].attention_norm;
    case M4_COMP_VISION_FFN_NORM: return &m->weights.vision_layers[layer].ffn_norm;
    case M4_COMP_PROJECTOR_NORM: return &m->weights.projector_norm;
    default: return &m->weights.norm;
    }
}

/* Width and epsilon of a norm row: Pixtral's norms are 1e-5 hard-coded (PixtralRMSNorm(eps=1e-5));
 * the projector norm uses the text rms_norm_eps over the vision width (MODEL.md §2.2). */
static void norm_shape(const m4_config *cfg, m4_component_kind kind, int64_t *dim, float *eps) {
    switch (kind) {
    case M4_COMP_LN_PRE:
    case M4_COMP_VISION_ATTN_NORM:
    case M4_COMP_VISION_FFN_NORM: *dim = cfg->vision.hidden_size, *eps = 1e-5f; break;
    case M4_COMP_PROJECTOR_NORM: *dim = cfg->vision.hidden_size, *eps = (float)cfg->text.rms_norm_eps; break;
    default: *dim = cfg->text.hidden_size, *eps = (float)cfg->text.rms_norm_eps; break;
    }
}

/* `in` and `out` of a norm row: text [B, S, D], vision tower [1, P, Dv], projector [P, Dv]. */
static dataset_shape norm_io_shape(const run_ctx *c, m4_component_kind kind) {
    const m4_config *cfg = &c->model->config;
    switch (kind) {
    case M4_COMP_LN_PRE:
    case M4_COMP_VISION_ATTN_NORM:
    case M4_COMP_VISION_FFN_NORM: return SHAPE(1, c->patches, cfg->vision.hidden_size);
    case M4_COMP_PROJECTOR_NORM: return SHAPE(c->patches, cfg->vision.hidden_size);
    default: return SHAPE(c->B, c->S, cfg->text.hidden_size);
    }
}

/* ---- one function per kind of component ------------------------------------------------------ */

static void run_embed(run_ctx *c, const m4_component *comp, const char *group, m4_result *res) {
    m4_error e = {{0}};
    m4_array in = {0}, want = {0};
    float *got = NULL;
    if (not_implemented(res, (const void *)c->backend->embed_tokens, c->backend->name)) return;
    if (read_golden(c, group, "in", true, SHAPE(c->B, c->S), &in, &e) ||
        read_golden(c, group, "out", false, SHAPE(c->B, c->S, c->model->config.text.hidden_size), &want, &e)) {
        record_error(res, "golden", &e);
    } else if (!(got = alloc_f32(c, group, "out", shape_of(&want), &e))) {
        record_alloc_error(res, &e);
    } else {
        double t0 = now_ms();
        int rc = c->backend->embed_tokens(c->state, in.i64, in.numel, got, &e);
        res->time_ms = now_ms() - t0;
        set_cost(c, res, comp, in.numel);
        if (rc) record_error(res, "backend", &e);
        else compare(res, got, &want);
    }
    free(got);
    m4_array_free(&in), m4_array_free(&want);
}

static void run_norm(run_ctx *c, const m4_component *comp, const char *group, int layer, m4_result *res) {
    m4_error e = {{0}};
    m4_array in = {0}, want = {0};
    float *got = NULL;
    if (not_implemented(res, (const void *)c->backend->rmsnorm, c->backend->name)) return;
    dataset_shape io = norm_io_shape(c, comp->kind);
    if (read_golden(c, group, "in", false, io, &in, &e) || read_golden(c, group, "out", false, io, &want, &e)) {
        record_error(res, "golden", &e);
    } else if (!(got = alloc_f32(c, group, "out", io, &e))) {
        record_alloc_error(res, &e);
    } else {
        int64_t D;
        float eps;
        norm_shape(&c->model->config, comp->kind, &D, &eps);
        int64_t n = in.numel / D;
        double t0 = now_ms();
        int rc = c->backend->rmsnorm(c->state, norm_weight(c->model, comp->kind, layer), in.f32, n, D,
                                     eps, got, &e);
        res->time_ms = now_ms() - t0;
        if (m4_component_is_vision(comp)) set_vision_cost(c, res, comp, n);
        else set_cost(c, res, comp, n);
        if (rc) record_error(res, "backend", &e);
        else compare(res, got, &want);
    }
    free(got);
    m4_array_free(&in), m4_array_free(&want);
}

/* HF's rotary tables are cat(φ, φ) [rows, 2·half] of ours [rows, half]: widens ours into
 * cos_full/sin_full and compares both with HF's, reporting the worse of the two. */
static void compare_rope_tables(m4_result *res, const float *cos_half, const float *sin_half, int64_t rows,
                                int64_t half, float *cos_full, float *sin_full, const m4_array *want_cos,
                                const m4_array *want_sin) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < 2 * half; j++) {
            cos_full[r * 2 * half + j] = cos_half[r * half + j % half];
            sin_full[r * 2 * half + j] = sin_half[r * half + j % half];
        }
    compare(res, cos_full, want_cos);
    m4_comparison s = m4_compare_f32(sin_full, want_sin->f32, want_sin->numel, res->tolerance);
    if (!s.pass || s.rel_l2 > res->cmp.rel_l2) res->cmp = s;
    if (!s.pass) res->status = M4_RESULT_FAIL;
}

/* The rotary table is host-side math shared by every backend: checked once per layer group. */
static void run_rope(run_ctx *c, const m4_component *comp, const char *group, m4_result *res) {
    m4_error e = {{0}};
    m4_array want_cos = {0}, want_sin = {0};
    float *cos_half = NULL, *sin_half = NULL, *cos_full = NULL, *sin_full = NULL;
    const m4_text_config *t = &c->model->config.text;
    int64_t dr = t->qk_rope_head_dim, half = dr / 2, n = c->positions.numel;
    if (read_golden(c, group, "cos", false, SHAPE(c->B, c->S, dr), &want_cos, &e) ||
        read_golden(c, group, "sin", false, SHAPE(c->B, c->S, dr), &want_sin, &e)) {
        record_error(res, "golden", &e);
        goto done;
    }
    float inv_freq[512], attention_factor;
    if (half > 512 || m4_ref_rope_inv_freq(t, inv_freq, &attention_factor, &e) != 0) {
        record_error(res, "rope", &e);
        goto done;
    }
    /* HF's table is cat(θ, θ): [.., dr] (the shape checked above); ours is the first half. */
    if (!(cos_full = alloc_f32(c, group, "cos", SHAPE(c->B, c->S, dr), &e)) ||
        !(sin_full = alloc_f32(c, group, "sin", SHAPE(c->B, c->S, dr), &e)) ||
        !(cos_half = alloc_f32(c, group, "cos", SHAPE(n, half), &e)) ||
        !(sin_half = alloc_f32(c, group, "sin", SHAPE(n, half), &e))) {
        record_alloc_error(res, &e);
        goto done;
    }
    double t0 = now_ms();
    m4_ref_rope_cos_sin(inv_freq, half, attention_factor, c->positions.i64, n, cos_half, sin_half);
    res->time_ms = now_ms() - t0;
    set_cost(c, res, comp, n);
    compare_rope_tables(res, cos_half, sin_half, n, half, cos_full, sin_full, &want_cos, &want_sin);
done:
    free(cos_half), free(sin_half), free(cos_full), free(sin_full);
    m4_array_free(&want_cos), m4_array_free(&want_sin);
}

static void free_attention(attention_run *a) {
    free(a->out);
    free(a->trace.q), free(a->trace.kv_a), free(a->trace.c_kv), free(a->trace.q_rot);
    free(a->trace.k_rot), free(a->trace.llama4_scale), free(a->trace.attn_weights);
    free(a->trace.attn_output);
    memset(a, 0, sizeof *a);
    a->layer = -1;
}

/* The self_attn stage datasets (golden/README.md) and the trace fields that hold them. */
static const struct { const char *name; size_t offset; } trace_fields[] = {
    {"q", offsetof(m4_mla_trace, q)}, {"kv_a", offsetof(m4_mla_trace, kv_a)},
    {"c_kv", offsetof(m4_mla_trace, c_kv)}, {"q_rot", offsetof(m4_mla_trace, q_rot)},
    {"k_rot", offsetof(m4_mla_trace, k_rot)}, {"llama4_scale", offsetof(m4_mla_trace, llama4_scale)},
    {"attn_weights", offsetof(m4_mla_trace, attn_weights)},
    {"attn_output", offsetof(m4_mla_trace, attn_output)},
};

static float **trace_slot(m4_mla_trace *t, const char *dataset) {
    for (size_t i = 0; i < sizeof trace_fields / sizeof *trace_fields; i++)
        if (strcmp(trace_fields[i].name, dataset) == 0) return (float **)((char *)t + trace_fields[i].offset);
    return NULL;
}

/* Shape of a self_attn dataset, as ensure_attention's buffers hold it. */
static dataset_shape attention_shape(const run_ctx *c, const char *dataset) {
    const m4_text_config *t = &c->model->config.text;
    const int64_t B = c->B, S = c->S, H = t->num_attention_heads;
    if (strcmp(dataset, "q") == 0) return SHAPE(B, S, H * t->qk_head_dim);
    if (strcmp(dataset, "kv_a") == 0) return SHAPE(B, S, t->kv_lora_rank + t->qk_rope_head_dim);
    if (strcmp(dataset, "c_kv") == 0) return SHAPE(B, S, t->kv_lora_rank);
    if (strcmp(dataset, "llama4_scale") == 0) return SHAPE(B, 1, S, 1);
    if (strcmp(dataset, "q_rot") == 0 || strcmp(dataset, "k_rot") == 0) return SHAPE(B, H, S, t->qk_head_dim);
    if (strcmp(dataset, "attn_weights") == 0) return SHAPE(B, H, S, S);
    if (strcmp(dataset, "attn_output") == 0) return SHAPE(B, S, H * t->v_head_dim);
    return SHAPE(B, S, t->hidden_size); /* out */
}

/* Runs layer `layer`'s attention once on the golden input, keeping its trace. */
static void ensure_attention(run_ctx *c, int layer, const char *group, const m4_component *comp) {
    attention_run *a = &c->attn;
    if (a->layer == layer) return;
    free_attention(a);
    a->layer = layer;
    m4_error e = {{0}};
    m4_array in = {0};
    if (!c->backend->self_attn) {
        a->rc = -1;
        snprintf(a->error, sizeof a->error, "not implemented");
        return;
    }
    if (read_golden(c, group, "in", false, SHAPE(c->B, c->S, c->model->config.text.hidden_size), &in, &e)) {
        a->rc = -1;
        snprintf(a->error, sizeof a->error, "golden: %s", e.msg);
        return;
    }
    /* The output, and the trace fields of the stage datasets this golden holds: the backends skip
     * NULL fields, so a case without attn_weights needs no B·H·S·S buffer. */
    bool ok = (a->out = alloc_f32(c, group, "out", attention_shape(c, "out"), &e)) != NULL;
    for (size_t i = 0; ok && i < sizeof trace_fields / sizeof *trace_fields; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", group, trace_fields[i].name);
        if (!m4_golden_has(c->golden, path)) continue;
        const char *name = trace_fields[i].name;
        float **slot = trace_slot(&a->trace, name);
        ok = (*slot = alloc_f32(c, group, name, attention_shape(c, name), &e)) != NULL;
    }
    if (!ok) { /* a buffer over the limit or out of memory: the backend does not run */
        a->rc = -1;
        snprintf(a->error, sizeof a->error, "%s", e.msg);
        m4_array_free(&in);
        return;
    }
    const int64_t B = c->B, S = c->S;
    double t0 = now_ms();
    a->rc = c->backend->self_attn(c->state, layer, in.f32, B, S, c->positions.i64, c->mask.i64,
                                  c->softmax_scale, a->out, &a->trace, &e);
    a->time_ms = now_ms() - t0;
    if (a->rc) snprintf(a->error, sizeof a->error, "backend: %s", e.msg);
    m4_array_free(&in);
}

static void run_attention_row(run_ctx *c, const m4_component *comp, const char *group, int layer,
                              m4_result *res) {
    m4_error e = {{0}};
    m4_array want = {0};
    if (not_implemented(res, (const void *)c->backend->self_attn, c->backend->name)) return;
    ensure_attention(c, layer, group, comp);
    attention_run *a = &c->attn;
    if (a->rc) {
        res->status = M4_RESULT_ERROR;
        snprintf(res->message, sizeof res->message, "%s", a->error);
        return;
    }
    float **slot = comp->kind == M4_COMP_SELF_ATTN ? &a->out : trace_slot(&a->trace, comp->dataset);
    const float *got = slot ? *slot : NULL;
    if (!got) { /* not a dataset ensure_attention kept */
        res->status = M4_RESULT_ERROR;
        snprintf(res->message, sizeof res->message, "no trace of \"%s/%s\"", group, comp->dataset);
        return;
    }
    if (read_golden(c, group, comp->dataset, false, attention_shape(c, comp->dataset), &want, &e)) {
        record_error(res, "golden", &e);
        return;
    }
    if (comp->kind == M4_COMP_SELF_ATTN) {
        res->time_ms = a->time_ms;
        set_cost(c, res, comp, c->B * c->S);
    } else {
        snprintf(res->message, sizeof res->message, "stage of the self_attn call");
    }
    compare(res, got, &want);
    m4_array_free(&want);
}

/* Sorts each token's (id, weight) pairs by id so two routers' outputs compare position-wise. */
static void sort_routing(int64_t *ids, float *weights, int64_t n, int64_t k) {
    for (int64_t t = 0; t < n; t++) {
        int64_t *I = ids + t * k;
        float *W = weights + t * k;
        for (int64_t a = 1; a < k; a++)
            for (int64_t b = a; b > 0 && I[b - 1] > I[b]; b--) {
                int64_t ti = I[b]; I[b] = I[b - 1]; I[b - 1] = ti;
                float tw = W[b]; W[b] = W[b - 1]; W[b - 1] = tw;
            }
    }
}

static void run_router(run_ctx *c, const m4_component *comp, const char *group, int layer, m4_result *res) {
    m4_error e = {{0}};
    m4_array in = {0}, logits = {0}, ids = {0}, weights = {0};
    float *got_logits = NULL, *got_w = NULL;
    int64_t *got_ids = NULL;
    if (not_implemented(res, (const void *)c->backend->router, c->backend->name)) return;
    const m4_text_config *t = &c->model->config.text;
    const int64_t N = c->B * c->S, K = t->num_experts_per_tok;
    if (read_golden(c, group, "in", false, SHAPE(c->B, c->S, t->hidden_size), &in, &e) ||
        read_golden(c, group, "logits", false, SHAPE(N, t->n_routed_experts), &logits, &e) ||
        read_golden(c, group, "topk_ids", true, SHAPE(N, K), &ids, &e) ||
        read_golden(c, group, "topk_weights", false, SHAPE(N, K), &weights, &e)) {
        record_error(res, "golden", &e);
        goto done;
    }
    int64_t n = in.numel / t->hidden_size;
    if (!(got_logits = alloc_f32(c, group, "logits", shape_of(&logits), &e)) ||
        !(got_w = alloc_f32(c, group, "topk_weights", shape_of(&weights), &e)) ||
        !(got_ids = alloc_buffer(c, group, "topk_ids", shape_of(&ids), sizeof *got_ids, "int64 values", &e))) {
        record_alloc_error(res, &e);
        goto done;
    }
    double t0 = now_ms();
    int rc = c->backend->router(c->state, layer, in.f32, n, got_logits, got_ids, got_w, &e);
    res->time_ms = now_ms() - t0;
    set_cost(c, res, comp, n);
    if (rc) {
        record_error(res, "backend", &e);
    } else {
        compare(res, got_logits, &logits);
        res->topk_mismatches = m4_topk_set_mismatches(got_ids, ids.i64, n, K);
        sort_routing(got_ids, got_w, n, K);
        sort_routing(ids.i64, weights.f32, n, K);
        m4_comparison w = m4_compare_f32(got_w, weights.f32, n * K, res->tolerance);
        if (res->topk_mismatches || !w.pass) res->status = M4_RESULT_FAIL;
        snprintf(res->message, sizeof res->message, "top-%lld sets differ on %lld of %lld tokens; "
                 "weights rel L2 %.2e", (long long)K, (long long)res->topk_mismatches, (long long)n, w.rel_l2);
    }
done:
    free(got_logits), free(got_w), free(got_ids);
    m4_array_free(&in), m4_array_free(&logits), m4_array_free(&ids), m4_array_free(&weights);
}

static void run_experts(run_ctx *c, const m4_component *comp, const char *group, int layer, m4_result *res) {
    m4_error e = {{0}};
    m4_array in = {0}, ids = {0}, weights = {0}, want = {0};
    float *got = NULL;
    if (not_implemented(res, (const void *)c->backend->experts, c->backend->name)) return;
    const m4_text_config *t = &c->model->config.text;
    const int64_t N = c->B * c->S;
    if (read_golden(c, group, "in", false, SHAPE(N, t->hidden_size), &in, &e) ||
        read_golden(c, group, "topk_ids", true, SHAPE(N, t->num_experts_per_tok), &ids, &e) ||
        read_golden(c, group, "topk_weights", false, SHAPE(N, t->num_experts_per_tok), &weights, &e) ||
        read_golden(c, group, "out", false, SHAPE(N, t->hidden_size), &want, &e)) {
        record_error(res, "golden", &e);
    } else if (!(got = alloc_f32(c, group, "out", shape_of(&want), &e))) {
        record_alloc_error(res, &e);
    } else {
        int64_t n = in.numel / t->hidden_size;
        double t0 = now_ms();
        int rc = c->backend->experts(c->state, layer, in.f32, n, ids.i64, weights.f32, got, &e);
        res->time_ms = now_ms() - t0;
        set_cost(c, res, comp, n);
        if (rc) record_error(res, "backend", &e);
        else compare(res, got, &want);
        snprintf(res->message + strlen(res->message), sizeof res->message - strlen(res->message),
                 "%sHF's routing", res->message[0] ? "; " : "");
    }
    free(got);
    m4_array_free(&in), m4_array_free(&ids), m4_array_free(&weights), m4_array_free(&want);
}

/* Components of signature x [n, D] → out [n, D] for one layer. */
typedef int (*token_fn)(void *state, int layer, const float *x, int64_t n, float *out, m4_error *err);

static void run_token_fn(run_ctx *c, const m4_component *comp, const char *group, int layer,
                         token_fn fn, m4_result *res) {
    m4_error e = {{0}};
    m4_array in = {0}, want = {0};
    if (not_implemented(res, (const void *)fn, c->backend->name)) return;
    dataset_shape io = SHAPE(c->B, c->S, c->model->config.text.hidden_size);
    float *got = NULL;
    if (read_golden(c, group, "in", false, io, &in, &e) || read_golden(c, group, "out", false, io, &want, &e)) {
        record_error(res, "golden", &e);
    } else if (!(got = alloc_f32(c, group, "out", io, &e))) {
        record_alloc_error(res, &e);
    } else {
        int64_t n = in.numel / c->model->config.text.hidden_size;
        double t0 = now_ms();
        int rc = fn(c->state, layer, in.f32, n, got, &e);
        res->time_ms = now_ms() - t0;
        set_cost(c, res, comp, n);
        if (rc) record_error(res, "backend", &e);
        else compare(res, got, &want);
    }
    free(got);
    m4_array_free(&in), m4_array_free(&want);
}

static void run_decoder_layer(run_ctx *c, const m4_component *comp, const char *group, int layer,
                              m4_result *res) {
    m4_error e = {{0}};
    m4_array in = {0}, want = {0};
    if (not_implemented(res, (const void *)c->backend->decoder_layer, c->backend->name)) return;
    dataset_shape io = SHAPE(c->B, c->S, c->model->config.text.hidden_size);
    float *got = NULL;
    if (read_golden(c, group, "in", false, io, &in, &e) || read_golden(c, group, "out", false, io, &want, &e)) {
        record_error(res, "golden", &e);
    } else if (!(got = alloc_f32(c, group, "out", io, &e))) {
        record_alloc_error(res, &e);
    } else {
        double t0 = now_ms();
        int rc = c->backend->decoder_layer(c->state, layer, in.f32, c->B, c->S, c->positions.i64,
                                           c->mask.i64, c->softmax_scale, got, &e);
        res->time_ms = now_ms() - t0;
        set_cost(c, res, comp, c->B * c->S);
        if (rc) record_error(res, "backend", &e);
        else compare(res, got, &want);
    }
    free(got);
    m4_array_free(&in), m4_array_free(&want);
}

static void run_lm_head(run_ctx *c, const m4_component *comp, const char *group, m4_result *res) {
    m4_error e = {{0}};
    m4_array in = {0}, want = {0};
    float *got = NULL;
    if (not_implemented(res, (const void *)c->backend->lm_head, c->backend->name)) return;
    const m4_text_config *t = &c->model->config.text;
    if (read_golden(c, group, "in", false, SHAPE(c->B, c->S, t->hidden_size), &in, &e) ||
        read_golden(c, group, "out", false, SHAPE(c->B, c->S, t->vocab_size), &want, &e)) {
        record_error(res, "golden", &e);
    } else if (!(got = alloc_f32(c, group, "out", shape_of(&want), &e))) {
        record_alloc_error(res, &e);
    } else {
        int64_t n = in.numel / c->model->config.text.hidden_size;
        double t0 = now_ms();
        int rc = c->backend->lm_head(c->state, in.f32, n, got, &e);
        res->time_ms = now_ms() - t0;
        set_cost(c, res, comp, n);
        if (rc) record_error(res, "backend", &e);
        else compare(res, got, &want);
    }
    free(got);
    m4_array_free(&in), m4_array_free(&want);
}

/* End to end: `model` from ids (and pixels), `text` from HF's merged inputs_embeds, which
 * checks the whole language model of a multimodal case apart from the vision path. */
static void run_model(run_ctx *c, const m4_component *comp, const char *group, m4_result *res) {
    m4_error e = {{0}};
    m4_array want = {0}, embeds = {0};
    bool with_images = comp->kind == M4_COMP_MODEL && c->multimodal_inputs;
    if (with_images) {
        if (not_implemented(res, (const void *)c->backend->forward_multimodal, c->backend->name)) return;
    } else if (not_implemented(res, (const void *)c->backend->forward, c->backend->name)) {
        return;
    }
    const m4_text_config *t = &c->model->config.text;
    if (read_golden(c, group, comp->dataset, false, SHAPE(c->B, c->S, t->vocab_size), &want, &e) ||
        (comp->kind == M4_COMP_TEXT_MODEL &&
         read_golden(c, "multimodal.merge", "out", false, SHAPE(c->B, c->S, t->hidden_size), &embeds, &e))) {
        record_error(res, "golden", &e);
        m4_array_free(&want);
        return;
    }
    float *got = alloc_f32(c, group, comp->dataset, shape_of(&want), &e);
    if (!got) {
        record_alloc_error(res, &e);
        m4_array_free(&want), m4_array_free(&embeds);
        return;
    }
    double t0 = now_ms();
    int rc = with_images
                 ? c->backend->forward_multimodal(c->state, c->ids.i64, c->B, c->S, &c->px, c->positions.i64,
                                                  c->mask.i64, c->rule, got, &e)
                 : c->backend->forward(c->state, c->ids.i64, embeds.f32, c->B, c->S, c->positions.i64,
                                       c->mask.i64, c->rule, got, &e);
    res->time_ms = now_ms() - t0;
    set_cost(c, res, comp, c->B * c->S);
    if (with_images) { /* plus the vision tower and the projector */
        m4_cost vision = m4_vision_path_cost(&c->model->config, c->patches, 4);
        res->flops += vision.flops;
        res->bytes += vision.bytes;
    }
    if (rc) record_error(res, "backend", &e);
    else compare(res, got, &want);
    free(got);
    m4_array_free(&want), m4_array_free(&embeds);
}

/* ---- the vision path -------------------------------------------------------------------------- */

/* vision.patch_conv on the golden pixels (its `in`, the padded batch) with the case's image sizes. */
static void run_patch_conv(run_ctx *c, const m4_component *comp, const char *group, m4_result *res) {
    m4_error e = {{0}};
    m4_array in = {0}, want = {0};
    float *got = NULL;
    if (not_implemented(res, (const void *)c->backend->patch_conv, c->backend->name)) return;
    const m4_vision_config *v = &c->model->config.vision;
    const int64_t H = c->px.height, W = c->px.width, p = v->patch_size;
    if (read_golden(c, group, "in", false, SHAPE(c->px.n, v->num_channels, H, W), &in, &e) ||
        read_golden(c, group, "out", false, SHAPE(c->px.n, v->hidden_size, H / p, W / p), &want, &e)) {
        record_error(res, "golden", &e);
    } else if (!(got = alloc_f32(c, group, "out", shape_of(&want), &e))) {
        record_alloc_error(res, &e);
    } else {
        m4_pixel_batch px = {.pixel_values = in.f32, .image_sizes = c->px.image_sizes,
                             .n = in.dims[0], .height = in.dims[2], .width = in.dims[3]};
        double t0 = now_ms();
        int rc = c->backend->patch_conv(c->state, &px, got, &e);
        res->time_ms = now_ms() - t0;
        set_vision_cost(c, res, comp, want.numel / c->model->config.vision.hidden_size);
        if (rc) record_error(res, "backend", &e);
        else compare(res, got, &want);
    }
    free(got);
    m4_array_free(&in), m4_array_free(&want);
}

/* The 2-D rotary table is host-side math shared by every backend: HF's cos/sin [P, hd] are
 * cat(φ, φ) of ours [P, hd/2]. */
static void run_vision_rope(run_ctx *c, const m4_component *comp, const char *group, m4_result *res) {
    m4_error e = {{0}};
    m4_array want_cos = {0}, want_sin = {0};
    const m4_vision_config *v = &c->model->config.vision;
    const int64_t hd = v->head_dim, half = hd / 2, P = c->patches;
    float *cos_half = NULL, *sin_half = NULL, *cos_full = NULL, *sin_full = NULL, *inv_freq = NULL;
    if (read_golden(c, group, "cos", false, SHAPE(P, hd), &want_cos, &e) ||
        read_golden(c, group, "sin", false, SHAPE(P, hd), &want_sin, &e)) {
        record_error(res, "golden", &e);
        goto done;
    }
    /* HF's cos/sin, ours (half width) and the frequencies (a row of the table) */
    if (!(cos_full = alloc_f32(c, group, "cos", SHAPE(P, hd), &e)) ||
        !(sin_full = alloc_f32(c, group, "sin", SHAPE(P, hd), &e)) ||
        !(cos_half = alloc_f32(c, group, "cos", SHAPE(P, half), &e)) ||
        !(sin_half = alloc_f32(c, group, "sin", SHAPE(P, half), &e)) ||
        !(inv_freq = alloc_f32(c, group, "cos", SHAPE(half), &e))) {
        record_alloc_error(res, &e);
        goto done;
    }
    double t0 = now_ms();
    if (m4_ref_vision_rope_inv_freq(v, inv_freq, &e)) {
        record_error(res, "rope", &e);
        goto done;
    }
    m4_ref_vision_rope_cos_sin(inv_freq, hd, c->grids, c->px.n, cos_half, sin_half);
    res->time_ms = now_ms() - t0;
    set_vision_cost(c, res, comp, P);
    compare_rope_tables(res, cos_half, sin_half, P, half, cos_full, sin_full, &want_cos, &want_sin);
done:
    free(cos_half), free(sin_half), free(cos_full), free(sin_full), free(inv_freq);
    m4_array_free(&want_cos), m4_array_free(&want_sin);
}

static void free_vision_attention(vision_attention_run *a) {
    free(a->out);
    free(a->trace.q_rot), free(a->trace.k_rot), free(a->trace.attn_weights);
    memset(a, 0, sizeof *a);
    a->layer = -1;
}

/* Runs vision layer `layer`'s attention once on the golden input, keeping its trace. */
static void ensure_vision_attention(run_ctx *c, int layer, const char *group) {
    vision_attention_run *a = &c->vattn;
    if (a->layer == layer) return;
    free_vision_attention(a);
    a->layer = layer;
    m4_error e = {{0}};
    m4_array in = {0};
    if (!c->backend->vision_attention) {
        a->rc = -1;
        snprintf(a->error, sizeof a->error, "not implemented");
        return;
    }
    const m4_vision_config *v = &c->model->config.vision;
    const int64_t P = c->patches, hv = v->num_attention_heads;
    if (read_golden(c, group, "in", false, SHAPE(1, P, v->hidden_size), &in, &e)) {
        a->rc = -1;
        snprintf(a->error, sizeof a->error, "golden: %s", e.msg);
        return;
    }
    /* The output, and the trace fields of the stage datasets this golden holds: the backends skip
     * NULL fields, so a case without attn_weights needs no hv·P·P buffer. */
    const struct { const char *name; float **slot; dataset_shape shape; } fields[] = {
        {"out", &a->out, SHAPE(1, P, v->hidden_size)},
        {"q_rot", &a->trace.q_rot, SHAPE(1, hv, P, v->head_dim)},
        {"k_rot", &a->trace.k_rot, SHAPE(1, hv, P, v->head_dim)},
        {"attn_weights", &a->trace.attn_weights, SHAPE(1, hv, P, P)},
    };
    bool ok = true;
    for (size_t i = 0; ok && i < sizeof fields / sizeof *fields; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", group, fields[i].name);
        if (i > 0 && !m4_golden_has(c->golden, path)) continue;
        ok = (*fields[i].slot = alloc_f32(c, group, fields[i].name, fields[i].shape, &e)) != NULL;
    }
    if (!ok) { /* a buffer over the limit or out of memory: the backend does not run */
        a->rc = -1;
        snprintf(a->error, sizeof a->error, "%s", e.msg);
        m4_array_free(&in);
        return;
    }
    double t0 = now_ms();
    a->rc = c->backend->vision_attention(c->state, layer, in.f32, c->grids, c->px.n, a->out,
                                         &a->trace, &e);
    a->time_ms = now_ms() - t0;
    if (a->rc) snprintf(a->error, sizeof a->error, "backend: %s", e.msg);
    m4_array_free(&in);
}

static void run_vision_attention_row(run_ctx *c, const m4_component *comp, const char *group, int layer,
                                     m4_result *res) {
    m4_error e = {{0}};
    m4_array want = {0};
    if (not_implemented(res, (const void *)c->backend->vision_attention, c->backend->name)) return;
    ensure_vision_attention(c, layer, group);
    vision_attention_run *a = &c->vattn;
    if (a->rc) {
        res->status = M4_RESULT_ERROR;
        snprintf(res->message, sizeof res->message, "%s", a->error);
        return;
    }
    const float *got = comp->kind == M4_COMP_VISION_ATTN ? a->out
                       : strcmp(comp->dataset, "q_rot") == 0 ? a->trace.q_rot
                       : strcmp(comp->dataset, "k_rot") == 0 ? a->trace.k_rot
                       : a->trace.attn_weights;
    if (!got) { /* not a dataset ensure_vision_attention kept */
        res->status = M4_RESULT_ERROR;
        snprintf(res->message, sizeof res->message, "no trace of \"%s/%s\"", group, comp->dataset);
        return;
    }
    const m4_vision_config *v = &c->model->config.vision;
    const int64_t P = c->patches, hv = v->num_attention_heads;
    dataset_shape shape = comp->kind == M4_COMP_VISION_ATTN ? SHAPE(1, P, v->hidden_size)
                          : strcmp(comp->dataset, "attn_weights") == 0 ? SHAPE(1, hv, P, P)
                          : SHAPE(1, hv, P, v->head_dim);
    if (read_golden(c, group, comp->dataset, false, shape, &want, &e)) {
        record_error(res, "golden", &e);
        return;
    }
    if (comp->kind == M4_COMP_VISION_ATTN) {
        res->time_ms = a->time_ms;
        set_vision_cost(c, res, comp, c->patches);
    } else {
        snprintf(res->message, sizeof res->message, "stage of the attention call");
    }
    compare(res, got, &want);
    m4_array_free(&want);
}

/* Rows of the vision path whose golden `in` is one tensor and whose `out` is compared. */
static void run_vision_io(run_ctx *c, const m4_component *comp, const char *group, int layer,
                          m4_result *res) {
    m4_error e = {{0}};
    m4_array in = {0}, want = {0};
    const m4_backend *b = c->backend;
    const m4_model *m = c->model;
    const m4_config *cfg = &m->config;
    const void *entry = NULL;
    switch (comp->kind) {
    case M4_COMP_VISION_FFN: entry = (const void *)b->vision_feed_forward; break;
    case M4_COMP_VISION_LAYER: entry = (const void *)b->vision_layer; break;
    case M4_COMP_PATCH_MERGER: entry = (const void *)b->patch_merger; break;
    case M4_COMP_PROJECTOR_LINEAR_1:
    case M4_COMP_PROJECTOR_LINEAR_2: entry = (const void *)b->linear; break;
    case M4_COMP_PROJECTOR_ACT: entry = (const void *)b->activation; break;
    case M4_COMP_PROJECTOR: entry = (const void *)b->projector; break;
    default: break;
    }
    if (not_implemented(res, entry, b->name)) return;
    /* P patches of Dv, M merged tokens of Dv (merger) or D (linears, act, projector) */
    const int64_t Dv = cfg->vision.hidden_size, D = cfg->text.hidden_size, P = c->patches, M = merged_tokens(c);
    dataset_shape in_shape = SHAPE(P, Dv), out_shape = SHAPE(M, D); /* the projector */
    switch (comp->kind) {
    case M4_COMP_VISION_FFN:
    case M4_COMP_VISION_LAYER: in_shape = out_shape = SHAPE(1, P, Dv); break;
    case M4_COMP_PATCH_MERGER: out_shape = SHAPE(M, Dv); break;
    case M4_COMP_PROJECTOR_LINEAR_1: in_shape = SHAPE(M, Dv); break;
    case M4_COMP_PROJECTOR_ACT:
    case M4_COMP_PROJECTOR_LINEAR_2: in_shape = SHAPE(M, D); break;
    default: break;
    }
    if (read_golden(c, group, "in", false, in_shape, &in, &e) ||
        read_golden(c, group, "out", false, out_shape, &want, &e)) {
        record_error(res, "golden", &e);
        goto done;
    }
    float *got = alloc_f32(c, group, "out", out_shape, &e);
    if (!got) {
        record_alloc_error(res, &e);
        goto done;
    }
    int64_t tokens = 0;
    int rc = 0;
    double t0 = now_ms();
    switch (comp->kind) {
    case M4_COMP_VISION_FFN:
        tokens = in.numel / Dv;
        rc = b->vision_feed_forward(c->state, layer, in.f32, tokens, got, &e);
        break;
    case M4_COMP_VISION_LAYER:
        tokens = in.numel / Dv;
        rc = b->vision_layer(c->state, layer, in.f32, c->grids, c->px.n, got, &e);
        break;
    case M4_COMP_PATCH_MERGER:
        tokens = in.numel / Dv;
        rc = b->patch_merger(c->state, in.f32, c->grids, c->px.n, got, &e);
        break;
    case M4_COMP_PROJECTOR_LINEAR_1:
        tokens = in.numel / Dv;
        rc = b->linear(c->state, &m->weights.linear_1, &m->weights.linear_1_bias, in.f32, tokens, got, &e);
        break;
    case M4_COMP_PROJECTOR_LINEAR_2:
        tokens = in.numel / D;
        rc = b->linear(c->state, &m->weights.linear_2, &m->weights.linear_2_bias, in.f32, tokens, got, &e);
        break;
    case M4_COMP_PROJECTOR_ACT:
        tokens = in.numel / D;
        rc = b->activation(c->state, cfg->projector_hidden_act, in.f32, in.numel, got, &e);
        break;
    case M4_COMP_PROJECTOR:
        tokens = in.numel / Dv;
        rc = b->projector(c->state, in.f32, c->grids, c->px.n, got, &e);
        break;
    default: break;
    }
    res->time_ms = now_ms() - t0;
    set_vision_cost(c, res, comp, tokens);
    if (rc) record_error(res, "backend", &e);
    else compare(res, got, &want);
    free(got);
done:
    m4_array_free(&in), m4_array_free(&want);
}

/* vision: the tower end to end from the case's pixels, against the features the projector saw. */
static void run_vision_tower(run_ctx *c, const m4_component *comp, const char *group, m4_result *res) {
    m4_error e = {{0}};
    m4_array want = {0};
    if (not_implemented(res, (const void *)c->backend->vision_tower, c->backend->name)) return;
    if (read_golden(c, group, comp->dataset, false, SHAPE(c->patches, c->model->config.vision.hidden_size),
                    &want, &e)) {
        record_error(res, "golden", &e);
        return;
    }
    float *got = alloc_f32(c, group, comp->dataset, shape_of(&want), &e);
    if (!got) {
        record_alloc_error(res, &e);
        m4_array_free(&want);
        return;
    }
    double t0 = now_ms();
    int rc = c->backend->vision_tower(c->state, &c->px, got, &e);
    res->time_ms = now_ms() - t0;
    set_vision_cost(c, res, comp, c->patches);
    if (rc) record_error(res, "backend", &e);
    else compare(res, got, &want);
    free(got);
    m4_array_free(&want);
}

/* multimodal.merge: HF's embeddings (`in`) and projector output (`image_features`) scattered into
 * the [IMG] rows of the case's ids. */
static void run_merge(run_ctx *c, const m4_component *comp, const char *group, m4_result *res) {
    m4_error e = {{0}};
    m4_array in = {0}, features = {0}, want = {0};
    float *got = NULL;
    if (not_implemented(res, (const void *)c->backend->merge_image_features, c->backend->name)) return;
    const int64_t D = c->model->config.text.hidden_size, n = c->B * c->S;
    if (read_golden(c, group, "in", false, SHAPE(c->B, c->S, D), &in, &e) ||
        read_golden(c, group, "image_features", false, SHAPE(merged_tokens(c), D), &features, &e) ||
        read_golden(c, group, "out", false, SHAPE(c->B, c->S, D), &want, &e)) {
        record_error(res, "golden", &e);
    } else if (!(got = alloc_f32(c, group, "out", shape_of(&want), &e))) {
        record_alloc_error(res, &e);
    } else {
        double t0 = now_ms();
        int rc = c->backend->merge_image_features(c->state, c->ids.i64, n, in.f32, features.f32,
                                                  features.numel / D, got, &e);
        res->time_ms = now_ms() - t0;
        set_cost(c, res, comp, n);
        if (rc) record_error(res, "backend", &e);
        else compare(res, got, &want);
    }
    free(got);
    m4_array_free(&in), m4_array_free(&features), m4_array_free(&want);
}

/* ---- the run ----------------------------------------------------------------------------------- */

static bool selected(const run_ctx *c, const char *name) {
    return !c->opt->only || fnmatch(c->opt->only, name, 0) == 0;
}

/* Runs registry row `comp` for one instance (layer = -1 for non-layer rows). */
static int run_row(run_ctx *c, const m4_component *comp, int layer, m4_error *err) {
    char name[128], group[128];
    m4_component_instance(comp->name, layer, name, sizeof name);
    m4_component_instance(comp->group, layer, group, sizeof group);
    char dataset[256];
    snprintf(dataset, sizeof dataset, "%s/%s", group, comp->dataset);
    if (!selected(c, name) || !m4_golden_has(c->golden, dataset)) return 0; /* not in this case */
    if (comp->kind == M4_COMP_TEXT_MODEL && !c->multimodal_inputs) return 0; /* = model */
    if (m4_component_is_vision(comp) && (!c->grids || m4_component_instances(comp, &c->model->config) == 0))
        return 0; /* a text-only model, or a case without images */
    m4_result *res = new_result(c, comp, name, err);
    if (!res) return -1;
    const m4_backend *b = c->backend;
    switch (comp->kind) {
    case M4_COMP_EMBED: run_embed(c, comp, group, res); break;
    case M4_COMP_INPUT_NORM:
    case M4_COMP_POST_NORM:
    case M4_COMP_FINAL_NORM: run_norm(c, comp, group, layer, res); break;
    case M4_COMP_ROPE: run_rope(c, comp, group, res); break;
    case M4_COMP_ATTN_STAGE:
    case M4_COMP_SELF_ATTN: run_attention_row(c, comp, group, layer, res); break;
    case M4_COMP_ROUTER: run_router(c, comp, group, layer, res); break;
    case M4_COMP_EXPERTS: run_experts(c, comp, group, layer, res); break;
    case M4_COMP_SHARED_EXPERTS: run_token_fn(c, comp, group, layer, b->shared_experts, res); break;
    case M4_COMP_MLP: run_token_fn(c, comp, group, layer, b->mlp, res); break;
    case M4_COMP_DECODER_LAYER: run_decoder_layer(c, comp, group, layer, res); break;
    case M4_COMP_LM_HEAD: run_lm_head(c, comp, group, res); break;
    case M4_COMP_TEXT_MODEL:
    case M4_COMP_MODEL: run_model(c, comp, group, res); break;
    case M4_COMP_PATCH_CONV: run_patch_conv(c, comp, group, res); break;
    case M4_COMP_LN_PRE:
    case M4_COMP_VISION_ATTN_NORM:
    case M4_COMP_VISION_FFN_NORM:
    case M4_COMP_PROJECTOR_NORM: run_norm(c, comp, group, layer, res); break;
    case M4_COMP_VISION_ROPE: run_vision_rope(c, comp, group, res); break;
    case M4_COMP_VISION_ATTN_STAGE:
    case M4_COMP_VISION_ATTN: run_vision_attention_row(c, comp, group, layer, res); break;
    case M4_COMP_VISION_FFN:
    case M4_COMP_VISION_LAYER:
    case M4_COMP_PATCH_MERGER:
    case M4_COMP_PROJECTOR_LINEAR_1:
    case M4_COMP_PROJECTOR_ACT:
    case M4_COMP_PROJECTOR_LINEAR_2:
    case M4_COMP_PROJECTOR: run_vision_io(c, comp, group, layer, res); break;
    case M4_COMP_VISION_TOWER: run_vision_tower(c, comp, group, res); break;
    case M4_COMP_MERGE: run_merge(c, comp, group, res); break;
    }
    res->device_ms = c->backend->last_device_ms && res->status != M4_RESULT_NOT_IMPLEMENTED
                         ? c->backend->last_device_ms(c->state)
                         : -1;
    m4_report *r = c->report;
    switch (res->status) {
    case M4_RESULT_PASS: r->n_pass++; break;
    case M4_RESULT_FAIL: r->n_fail++; break;
    case M4_RESULT_ERROR: r->n_error++; break;
    case M4_RESULT_NOT_IMPLEMENTED: r->n_not_implemented++; break;
    }
    if (r->first_divergence < 0 && (res->status == M4_RESULT_FAIL || res->status == M4_RESULT_ERROR))
        r->first_divergence = (int)(r->n - 1);
    r->total_ms += res->time_ms;
    if (c->opt->progress) c->opt->progress(res, r->n, c->opt->progress_user);
    return 0;
}

static int read_inputs(run_ctx *c, m4_error *err) {
    if (m4_golden_read(c->golden, "inputs/input_ids", true, &c->ids, err)) return -1;
    if (c->ids.ndim != 2) return m4_fail(err, "%s: inputs/input_ids must be [B, S]", m4_golden_path(c->golden));
    c->B = c->ids.dims[0];
    c->S = c->ids.dims[1];
    if (m4_golden_read(c->golden, "inputs/position_ids", true, &c->positions, err)) return -1;
    /* [B, S], or [1, S] broadcast over the batch */
    bool one_row = c->B > 1 && c->positions.ndim == 2 && c->positions.dims[0] == 1 && c->positions.dims[1] == c->S;
    if (!one_row && check_shape(c, "inputs/position_ids", &c->positions, SHAPE(c->B, c->S), err)) return -1;
    if (one_row) {
        int64_t *full = alloc_buffer(c, "inputs", "position_ids", SHAPE(c->B, c->S), sizeof *full,
                                     "int64 values", err); /* B·S ≤ the limit: input_ids was read */
        if (!full) return -1;
        for (int64_t b = 0; b < c->B; b++) memcpy(full + b * c->S, c->positions.i64, (size_t)c->S * sizeof *full);
        free(c->positions.i64);
        c->positions.i64 = full;
        c->positions.numel = c->B * c->S;
    }
    if (m4_golden_has(c->golden, "inputs/attention_mask") &&
        read_golden(c, "inputs", "attention_mask", true, SHAPE(c->B, c->S), &c->mask, err))
        return -1;
    c->multimodal_inputs = m4_golden_has(c->golden, "inputs/pixel_values");
    if (!c->multimodal_inputs) return 0;
    if (m4_golden_read(c->golden, "inputs/pixel_values", false, &c->pixels, err)) return -1;
    if (c->pixels.ndim != 4)
        return m4_fail(err, "%s: inputs/pixel_values must be [N_img, C, H, W]", m4_golden_path(c->golden));
    if (read_golden(c, "inputs", "image_sizes", true, SHAPE(c->pixels.dims[0], 2), &c->image_sizes, err))
        return -1;
    c->px = (m4_pixel_batch){.pixel_values = c->pixels.f32, .image_sizes = c->image_sizes.i64,
                             .n = c->pixels.dims[0], .height = c->pixels.dims[2],
                             .width = c->pixels.dims[3]};
    if (!c->model->config.multimodal) return 0; /* `model` will say so; no vision rows run */
    if (c->pixels.dims[1] != c->model->config.vision.num_channels)
        return m4_fail(err, "%s: inputs/pixel_values has %lld channels, the vision tower %lld",
                       m4_golden_path(c->golden), (long long)c->pixels.dims[1],
                       (long long)c->model->config.vision.num_channels);
    c->grids = malloc(sizeof *c->grids * (size_t)c->px.n); /* n ≤ the limit: pixel_values was read */
    if (!c->grids)
        return m4_fail(err, "out of memory for the patch grids of inputs/pixel_values (%lld images)",
                       (long long)c->px.n);
    if (m4_ref_patch_grids(&c->model->config.vision, &c->px, c->grids, &c->patches, err))
        return m4_fail_context(err, "%s", m4_golden_path(c->golden));
    return 0;
}

static int read_provenance(run_ctx *c, m4_error *err) {
    m4_report *r = c->report;
    char scale[64];
    if (m4_golden_attr(c->golden, "case", r->case_name, sizeof r->case_name, err) ||
        m4_golden_attr(c->golden, "mla_softmax_scale_rule", r->scale_rule, sizeof r->scale_rule, err) ||
        m4_golden_attr(c->golden, "mla_softmax_scale", scale, sizeof scale, err) ||
        m4_golden_attr(c->golden, "transformers_version", r->transformers_version,
                       sizeof r->transformers_version, err) ||
        m4_golden_attr(c->golden, "torch_version", r->torch_version, sizeof r->torch_version, err))
        return -1;
    if (strcmp(r->scale_rule, "base") == 0) c->rule = M4_SOFTMAX_SCALE_BASE;
    else if (strcmp(r->scale_rule, "mscale2") == 0) c->rule = M4_SOFTMAX_SCALE_MSCALE2;
    else return m4_fail(err, "%s: unknown mla_softmax_scale_rule \"%s\"", r->golden_path, r->scale_rule);
    c->softmax_scale = m4_ref_mla_softmax_scale(&c->model->config.text, c->rule);
    double recorded = strtod(scale, NULL);
    if (fabs(recorded - c->softmax_scale) > 1e-6 * fabs(recorded))
        return m4_fail(err, "%s: the golden's MLA softmax scale %s differs from rule \"%s\" on this "
                            "config (%.9g): golden and checkpoint do not belong together",
                       r->golden_path, scale, r->scale_rule, c->softmax_scale);
    return 0;
}

int m4_conform_run(const m4_conform_options *opt, m4_report *report, m4_error *err) {
    memset(report, 0, sizeof *report);
    report->first_divergence = -1;
    snprintf(report->golden_path, sizeof report->golden_path, "%s", opt->golden_path);
    snprintf(report->model_path, sizeof report->model_path, "%s", opt->model_dir ? opt->model_dir : "");
    snprintf(report->backend, sizeof report->backend, "%s", opt->backend->name);
    run_ctx c = {.opt = opt, .backend = opt->backend, .report = report, .attn = {.layer = -1},
                 .vattn = {.layer = -1}};
    m4_model owned = {0};
    m4_golden *golden = NULL;
    int rc = -1;
    if (m4_golden_open(opt->golden_path, &golden, err)) return -1;
    c.golden = golden;
    if (opt->model) {
        c.model = opt->model;
    } else if (m4_model_open(opt->model_dir, &owned, err) == 0) {
        c.model = &owned;
    } else {
        goto done;
    }
    if (read_provenance(&c, err) || read_inputs(&c, err)) goto done;
    if (opt->backend->open(c.model, &c.state, err)) goto done;
    if (opt->backend->describe_paths)
        opt->backend->describe_paths(report->backend_paths, sizeof report->backend_paths);
    rc = 0;
    for (size_t i = 0; rc == 0 && i < m4_component_count;) {
        char hole = m4_component_layer_placeholder(&m4_components[i]);
        if (!hole) {
            rc = run_row(&c, &m4_components[i], -1, err);
            i++;
            continue;
        }
        /* the block of per-layer rows ({i} text or {j} vision layers), run layer by layer */
        size_t end = i;
        while (end < m4_component_count && m4_component_layer_placeholder(&m4_components[end]) == hole) end++;
        int layers = (int)m4_component_instances(&m4_components[i], &c.model->config);
        for (int layer = 0; rc == 0 && layer < layers; layer++)
            for (size_t j = i; rc == 0 && j < end; j++) rc = run_row(&c, &m4_components[j], layer, err);
        i = end;
    }
    opt->backend->close(c.state);
done:
    free_attention(&c.attn);
    free_vision_attention(&c.vattn);
    m4_array_free(&c.ids), m4_array_free(&c.positions), m4_array_free(&c.mask);
    m4_array_free(&c.pixels), m4_array_free(&c.image_sizes);
    free(c.grids);
    if (c.model == &owned) m4_model_close(&owned);
    m4_golden_close(golden);
    return rc;
}

void m4_report_free(m4_report *report) {
    free(report->results);
    memset(report, 0, sizeof *report);
}
