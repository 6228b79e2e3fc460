/* conform.c — runs a backend's components against a golden file (teacher-forced: each
 * component's inputs are HF's own, so an error cannot hide behind an earlier one) and end to end.
 * Every registry row runs the same way (run_call): read its golden inputs and expected outputs,
 * allocate what its backend call writes (calls.c), time the call, compare. With a candidate file
 * instead of a backend (docs/CANDIDATE-LAYOUT.md), the row's outputs are read from that file. */
#include "conform.h"

#include <fnmatch.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "calls.h"
#include "config_compare.h"
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

/* The last call of a row (calls.h): what it wrote, kept for the next rows of its group when
 * the call is shared (the attention of one layer and its stages). */
typedef struct {
    const m4_row_call *call;  /* NULL when empty */
    char group[128];
    bool ran;                 /* the backend was called (its time and work are known) */
    int rc;
    char error[1100];
    double time_ms;
    m4_call_work work;
    void *out[M4_MAX_OUTPUTS];
} call_run;

typedef struct {
    const m4_conform_options *opt;
    const m4_golden *golden;
    const m4_golden *candidate; /* NULL when a backend runs */
    m4_report *report;
    m4_case cs;             /* what the calls see of the case */
    m4_array ids, positions, mask; /* /inputs */
    bool multimodal_inputs;
    /* the images of a multimodal case (/inputs/pixel_values, /inputs/image_sizes) */
    m4_array pixels, image_sizes;
    m4_pixel_batch px;
    m4_patch_grid *grids;   /* [px.n] */
    size_t rows;            /* rows the case runs (count_row), for progress */
    call_run last;
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
            m4_fail(err, "out of memory for the report's rows (%zu rows, %zu bytes)", cap, cap * sizeof *grown);
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

/* Datasets are checked against the shape the config and the case's inputs imply (the registry's
 * m4_dataset.shape; golden/README.md). Buffers a backend writes are sized from these, so a dataset
 * of any other shape is an error, never an overflow. */
#define SHAPE M4_SHAPE

/* 0 when `a` (dataset `path`) has shape `want`; else -1 with a message naming the file, the
 * dataset and both shapes. */
static int check_shape(const m4_golden *file, const char *path, const m4_array *a, m4_shape want, m4_error *err) {
    bool same = a->ndim == want.ndim;
    for (int d = 0; same && d < want.ndim; d++) same = a->dims[d] == want.dims[d];
    if (same) return 0;
    m4_array implied = {.ndim = want.ndim};
    memcpy(implied.dims, want.dims, sizeof implied.dims);
    char found[200], expected[200];
    m4_array_shape_string(a, found, sizeof found);
    m4_array_shape_string(&implied, expected, sizeof expected);
    return m4_fail(err, "%s: dataset \"%s\" has shape %s but the config and inputs imply %s",
                   m4_golden_path(file), path, found, expected);
}

/* Reads "<group>/<dataset>", which must have shape `want`, or returns -1 with err set. */
static int read_golden(run_ctx *c, const char *group, const char *dataset, bool as_int, m4_shape want,
                       m4_array *a, m4_error *err) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", group, dataset);
    if (m4_golden_read(c->golden, path, as_int, a, err)) return -1;
    if (check_shape(c->golden, path, a, want, err) == 0) return 0;
    m4_array_free(a);
    return -1;
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

static void record_error(m4_result *res, const char *message) {
    res->status = M4_RESULT_ERROR;
    snprintf(res->message, sizeof res->message, "%s", message);
}

/* Elements of `shape` in int64 arithmetic checked for overflow: -1 when the product exceeds
 * INT64_MAX (or a dimension is negative). */
static int64_t shape_elements(m4_shape shape) {
    for (int d = 0; d < shape.ndim; d++)
        if (shape.dims[d] == 0) return 0;
    int64_t n = 1;
    for (int d = 0; d < shape.ndim; d++) {
        if (shape.dims[d] < 0 || n > INT64_MAX / shape.dims[d]) return -1;
        n *= shape.dims[d];
    }
    return n;
}

/* A buffer for dataset "<group>/<dataset>" (what a backend writes to compare with it, or the
 * runner's own copy of it) of `shape`, the shape the config and the case's inputs imply, in
 * elements of `size` bytes named `unit`. NULL with err set, and nothing allocated, when that shape
 * holds more than M4_GOLDEN_MAX_ELEMENTS elements (counted with overflow checks: the inputs' B, S
 * and patches P multiply, e.g. B·H·S·S attention weights; no dataset that large can be read to
 * compare with) or when malloc fails. The caller then records an ERROR row and runs no backend. */
static void *alloc_buffer(const run_ctx *c, const char *group, const char *dataset, m4_shape shape,
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
    if (!p)
        m4_fail(err, "out of memory for dataset \"%s/%s\" (%lld %s, %zu bytes)", group, dataset, (long long)n, unit,
                (size_t)(n > 0 ? n : 1) * size);
    return p;
}

/* ---- one row: read, call, compare --------------------------------------------------------- */

/* The group of dataset `ds` of a row whose own group is `group` (instance already substituted). */
static void dataset_group(const m4_dataset *ds, const char *group, int layer, char *buf, size_t size) {
    if (ds->group) m4_component_instance(ds->group, layer, buf, size);
    else snprintf(buf, size, "%s", group);
}

static bool golden_holds(const run_ctx *c, const char *group, const char *dataset) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", group, dataset);
    return m4_golden_has(c->golden, path);
}

static bool implemented(const m4_backend *b, size_t entry) {
    void (*fn)(void);
    memcpy(&fn, (const char *)b + entry, sizeof fn);
    return fn != NULL;
}

static void free_call(call_run *run) {
    for (int k = 0; k < M4_MAX_OUTPUTS; k++) free(run->out[k]);
    memset(run, 0, sizeof *run);
}

/* Reads the golden of out[k] into want[k]. */
static int read_want(run_ctx *c, const m4_component *comp, const char *group, int k, m4_array *want, m4_error *e) {
    const m4_dataset *ds = &comp->out[k];
    return read_golden(c, group, ds->name, ds->ids, ds->shape(&c->cs.model->config, &c->cs.dims), &want[k], e);
}

/* One call serves the rows of its group (calls.h) when a backend runs; a candidate file serves
 * each row its own datasets. */
static bool shared_call(const run_ctx *c, const m4_row_call *call) { return call->shared && !c->candidate; }

/* The row's outputs from the candidate file instead of a backend call (docs/CANDIDATE-LAYOUT.md):
 * the datasets m4_component_candidate_output names, each of the dtype and shape the layout says. */
static int read_candidate(run_ctx *c, const m4_component *comp, int layer, call_run *run, m4_error *err) {
    char group[128];
    m4_component_instance(m4_component_candidate_group(comp), layer, group, sizeof group);
    for (int k = 0; k < M4_MAX_OUTPUTS && comp->out[k].name; k++) {
        const m4_dataset *ds = &comp->out[k];
        if (!m4_component_candidate_output(comp, k)) continue;
        char path[256], dtype[16];
        snprintf(path, sizeof path, "%s/%s", group, ds->name);
        const char *layout_dtype = ds->ids ? "int64" : "float32";
        if (m4_golden_dtype(c->candidate, path, dtype, sizeof dtype, err)) return -1;
        if (strcmp(dtype, layout_dtype) != 0)
            return m4_fail(err, "%s: dataset \"%s\" is %s, the layout says %s (docs/CANDIDATE-LAYOUT.md)",
                           m4_golden_path(c->candidate), path, dtype, layout_dtype);
        m4_array a;
        if (m4_golden_read(c->candidate, path, ds->ids, &a, err)) return -1;
        if (check_shape(c->candidate, path, &a, ds->shape(&c->cs.model->config, &c->cs.dims), err)) {
            m4_array_free(&a);
            return -1;
        }
        run->out[k] = ds->ids ? (void *)a.i64 : (void *)a.f32;
    }
    return 0;
}

/* Runs the row's call on the golden inputs into `run`: its outputs, or the error that stopped it
 * (golden inputs unreadable, an output over the limit, the backend's error); with a candidate
 * file, reads them from it instead. An unshared call's expected outputs are read into want[]
 * first, so a bad golden stops it before the backend runs. */
static void make_call(run_ctx *c, const m4_component *comp, int layer, const char *group, call_run *run,
                      m4_array *want) {
    free_call(run);
    run->call = comp->call;
    snprintf(run->group, sizeof run->group, "%s", group);
    m4_array in[M4_MAX_INPUTS] = {{0}};
    m4_error e = {{0}};
    const char *what = "golden: ";
    int rc = 0;
    for (int k = 0; rc == 0 && !c->candidate && k < M4_MAX_INPUTS && comp->in[k].name; k++) {
        const m4_dataset *ds = &comp->in[k];
        char ds_group[128];
        dataset_group(ds, group, layer, ds_group, sizeof ds_group);
        rc = read_golden(c, ds_group, ds->name, ds->ids, ds->shape(&c->cs.model->config, &c->cs.dims), &in[k], &e);
    }
    for (int k = 0; rc == 0 && !shared_call(c, comp->call) && k < M4_MAX_OUTPUTS && comp->out[k].name; k++)
        if (!comp->out[k].optional || golden_holds(c, group, comp->out[k].name))
            rc = read_want(c, comp, group, k, want, &e);
    if (rc == 0 && c->candidate) {
        rc = read_candidate(c, comp, layer, run, &e);
        what = "candidate: ";
    }
    for (int k = 0; rc == 0 && !c->candidate && k < M4_MAX_OUTPUTS && comp->out[k].name; k++) {
        const m4_dataset *ds = &comp->out[k];
        if (ds->optional && !golden_holds(c, group, ds->name)) continue; /* backends skip NULL outputs */
        what = "";
        run->out[k] = alloc_buffer(c, group, ds->name, ds->shape(&c->cs.model->config, &c->cs.dims),
                                   ds->ids ? sizeof(int64_t) : sizeof(float), ds->ids ? "int64 values" : "floats", &e);
        rc = run->out[k] ? 0 : -1;
    }
    if (rc == 0 && !c->candidate) {
        /* the call's one name: its row's, or its group's for a call that serves the group's rows */
        const m4_backend *b = c->cs.backend;
        char name[128];
        m4_component_instance(comp->name, layer, name, sizeof name);
        if (b->name_calls) b->name_calls(c->cs.state, shared_call(c, comp->call) ? group : name);
        double t0 = now_ms();
        rc = comp->call->run(&c->cs, comp, layer, in, run->out, &run->work, &e);
        run->time_ms = now_ms() - t0;
        if (b->name_calls) b->name_calls(c->cs.state, NULL);
        run->ran = true;
        what = "backend: ";
    }
    run->rc = rc;
    if (rc) snprintf(run->error, sizeof run->error, "%s%s", what, e.msg);
    for (int k = 0; k < M4_MAX_INPUTS; k++) m4_array_free(&in[k]);
}

/* Whether the row has an implementation: its backend entry, or its dataset in the candidate file;
 * if not, why into `why`. */
static bool row_implemented(const run_ctx *c, const m4_component *comp, int layer, char *why, size_t size) {
    const m4_row_call *call = comp->call;
    const m4_backend *b = c->cs.backend;
    if (c->candidate) {
        char group[128], path[256];
        m4_component_instance(m4_component_candidate_group(comp), layer, group, sizeof group);
        snprintf(path, sizeof path, "%s/%s", group, comp->dataset);
        snprintf(why, size, "the candidate has no \"%s\"", path);
        return m4_golden_has(c->candidate, path);
    }
    snprintf(why, size, "backend \"%s\" has no implementation", b->name);
    return implemented(b, call->entry) &&
           !(c->cs.px && call->entry_with_images && !implemented(b, call->entry_with_images));
}

/* The row's result: the call made (or the shared one reused), the row's dataset compared with
 * its golden, then the call's own checks of its other outputs. */
static void run_call(run_ctx *c, const m4_component *comp, int layer, const char *group, m4_result *res) {
    const m4_row_call *call = comp->call;
    char why[300];
    if (!row_implemented(c, comp, layer, why, sizeof why)) {
        res->status = M4_RESULT_NOT_IMPLEMENTED;
        snprintf(res->message, sizeof res->message, "%s", why);
        return;
    }
    const int row = m4_component_compared_output(comp); /* the output this row compares */
    const bool shared = shared_call(c, call);
    res->stage = row > 0;
    m4_array want[M4_MAX_OUTPUTS] = {{0}};
    m4_error e = {{0}};
    call_run *run = &c->last;
    if (!shared || run->call != call || strcmp(run->group, group) != 0)
        make_call(c, comp, layer, group, run, want);
    if (row == 0 && run->ran) { /* a stage of a shared call reports neither time nor work */
        m4_cost cost = comp->cost(&c->cs.model->config, run->work.tokens, comp->vision ? c->cs.dims.P : c->cs.dims.S, 4);
        res->time_ms = run->time_ms;
        res->flops = cost.flops + run->work.extra.flops;
        res->bytes = cost.bytes + run->work.extra.bytes;
    }
    if (run->rc) {
        record_error(res, run->error);
    } else if (!run->out[row]) { /* an optional output the golden lacks */
        snprintf(res->message, sizeof res->message, "no trace of \"%s/%s\"", group, comp->dataset);
        res->status = M4_RESULT_ERROR;
    } else if (shared && read_want(c, comp, group, row, want, &e)) {
        snprintf(res->message, sizeof res->message, "golden: %s", e.msg);
        res->status = M4_RESULT_ERROR;
    } else {
        if (res->stage) snprintf(res->message, sizeof res->message, "stage of the %s call", strrchr(group, '.') + 1);
        compare(res, run->out[row], &want[row]);
        if (call->check) call->check(res, run->out, want);
        if (call->note)
            snprintf(res->message + strlen(res->message), sizeof res->message - strlen(res->message), "%s%s",
                     res->message[0] ? "; " : "", call->note);
    }
    for (int k = 0; k < M4_MAX_OUTPUTS; k++) m4_array_free(&want[k]);
    if (!shared) free_call(run);
}

/* ---- the run ----------------------------------------------------------------------------------- */

static bool selected(const run_ctx *c, const char *name) {
    return !c->opt->only || fnmatch(c->opt->only, name, 0) == 0;
}

/* Whether registry row `comp` runs in this case for one instance (layer = -1 for non-layer rows):
 * selected by --only, held by the golden, and of the case's kind; fills its instance name and group. */
static bool row_in_case(const run_ctx *c, const m4_component *comp, int layer, char name[128], char group[128]) {
    m4_component_instance(comp->name, layer, name, 128);
    m4_component_instance(comp->group, layer, group, 128);
    if (!selected(c, name) || !golden_holds(c, group, comp->dataset)) return false; /* not in this case */
    if (comp->images_only && !c->multimodal_inputs) return false; /* `text` = `model` */
    if (comp->vision && (!c->grids || m4_component_instances(comp, &c->cs.model->config) == 0))
        return false; /* a text-only model, or a case without images */
    return true;
}

/* Counts the rows of the case (the progress callback's total). */
static int count_row(run_ctx *c, const m4_component *comp, int layer, m4_error *err) {
    char name[128], group[128];
    if (row_in_case(c, comp, layer, name, group)) c->rows++;
    return 0;
}

/* Runs registry row `comp` for one instance when it is in the case. */
static int run_row(run_ctx *c, const m4_component *comp, int layer, m4_error *err) {
    char name[128], group[128];
    if (!row_in_case(c, comp, layer, name, group)) return 0;
    m4_result *res = new_result(c, comp, name, err);
    if (!res) return -1;
    run_call(c, comp, layer, group, res);
    const m4_backend *b = c->cs.backend;
    res->device_ms = b && b->last_device_ms && res->status != M4_RESULT_NOT_IMPLEMENTED ? b->last_device_ms(c->cs.state) : -1;
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
    if (c->opt->progress) c->opt->progress(res, r->n, c->rows, c->opt->progress_user);
    return 0;
}

/* The attention mask [B, S] is HF's: 1 for a token, 0 for padding; the attention treats every
 * nonzero value as a token, so any other value would be a silent guess at what the file meant. */
static int check_mask_values(const run_ctx *c, m4_error *err) {
    for (int64_t i = 0; i < c->mask.numel; i++)
        if (c->mask.i64[i] != 0 && c->mask.i64[i] != 1)
            return m4_fail(err, "%s: inputs/attention_mask[%lld, %lld] is %lld: mask values are 0 (padding) or 1 (a token)",
                           m4_golden_path(c->golden), (long long)(i / c->cs.dims.S), (long long)(i % c->cs.dims.S),
                           (long long)c->mask.i64[i]);
    return 0;
}

/* Calls visit on every registry row in model order: a row of layer blocks ({i} text or {j} vision
 * layers) once per layer, the block's rows layer by layer; stops at the first that returns non-zero. */
static int visit_rows(run_ctx *c, int (*visit)(run_ctx *c, const m4_component *comp, int layer, m4_error *err),
                      m4_error *err) {
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < m4_component_count;) {
        char hole = m4_component_layer_placeholder(&m4_components[i]);
        if (!hole) {
            rc = visit(c, &m4_components[i], -1, err);
            i++;
            continue;
        }
        size_t end = i;
        while (end < m4_component_count && m4_component_layer_placeholder(&m4_components[end]) == hole) end++;
        int layers = (int)m4_component_instances(&m4_components[i], &c->cs.model->config);
        for (int layer = 0; rc == 0 && layer < layers; layer++)
            for (size_t j = i; rc == 0 && j < end; j++) rc = visit(c, &m4_components[j], layer, err);
        i = end;
    }
    return rc;
}

static int read_inputs(run_ctx *c, m4_error *err) {
    if (m4_golden_read(c->golden, "inputs/input_ids", true, &c->ids, err)) return -1;
    if (c->ids.ndim != 2) return m4_fail(err, "%s: inputs/input_ids must be [B, S]", m4_golden_path(c->golden));
    m4_case_dims *d = &c->cs.dims;
    const m4_config *cfg = &c->cs.model->config;
    d->B = c->ids.dims[0];
    d->S = c->ids.dims[1];
    if (m4_golden_read(c->golden, "inputs/position_ids", true, &c->positions, err)) return -1;
    /* [B, S], or [1, S] broadcast over the batch */
    bool one_row = d->B > 1 && c->positions.ndim == 2 && c->positions.dims[0] == 1 && c->positions.dims[1] == d->S;
    if (!one_row && check_shape(c->golden, "inputs/position_ids", &c->positions, SHAPE(d->B, d->S), err)) return -1;
    if (one_row) {
        int64_t *full = alloc_buffer(c, "inputs", "position_ids", SHAPE(d->B, d->S), sizeof *full,
                                     "int64 values", err); /* B·S ≤ the limit: input_ids was read */
        if (!full) return -1;
        for (int64_t b = 0; b < d->B; b++) memcpy(full + b * d->S, c->positions.i64, (size_t)d->S * sizeof *full);
        free(c->positions.i64);
        c->positions.i64 = full;
        c->positions.numel = d->B * d->S;
    }
    if (m4_golden_has(c->golden, "inputs/attention_mask") &&
        (read_golden(c, "inputs", "attention_mask", true, SHAPE(d->B, d->S), &c->mask, err) ||
         check_mask_values(c, err)))
        return -1;
    c->multimodal_inputs = m4_golden_has(c->golden, "inputs/pixel_values");
    c->cs.ids = c->ids.i64, c->cs.positions = c->positions.i64, c->cs.mask = c->mask.i64;
    if (!c->multimodal_inputs) return 0;
    if (m4_golden_read(c->golden, "inputs/pixel_values", false, &c->pixels, err)) return -1;
    if (c->pixels.ndim != 4)
        return m4_fail(err, "%s: inputs/pixel_values must be [N_img, C, H, W]", m4_golden_path(c->golden));
    if (read_golden(c, "inputs", "image_sizes", true, SHAPE(c->pixels.dims[0], 2), &c->image_sizes, err))
        return -1;
    c->px = (m4_pixel_batch){.pixel_values = c->pixels.f32, .image_sizes = c->image_sizes.i64,
                             .n = c->pixels.dims[0], .height = c->pixels.dims[2],
                             .width = c->pixels.dims[3]};
    c->cs.px = &c->px;
    d->images = c->px.n, d->height = c->px.height, d->width = c->px.width;
    if (!cfg->multimodal) return 0; /* `model` will say so; no vision rows run */
    if (c->pixels.dims[1] != cfg->vision.num_channels)
        return m4_fail(err, "%s: inputs/pixel_values has %lld channels, the vision tower %lld",
                       m4_golden_path(c->golden), (long long)c->pixels.dims[1],
                       (long long)cfg->vision.num_channels);
    c->grids = malloc(sizeof *c->grids * (size_t)c->px.n); /* n ≤ the limit: pixel_values was read */
    if (!c->grids)
        return m4_fail(err, "out of memory for the patch grids of inputs/pixel_values (%lld images, %zu bytes)",
                       (long long)c->px.n, sizeof *c->grids * (size_t)c->px.n);
    if (m4_ref_patch_grids(&cfg->vision, &c->px, c->grids, &d->P, err))
        return m4_fail_context(err, "%s", m4_golden_path(c->golden));
    c->cs.grids = c->grids;
    d->M = m4_ref_merged_tokens(c->grids, c->px.n, cfg->spatial_merge_size);
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
    if (strcmp(r->scale_rule, "base") == 0) c->cs.rule = M4_SOFTMAX_SCALE_BASE;
    else if (strcmp(r->scale_rule, "mscale2") == 0) c->cs.rule = M4_SOFTMAX_SCALE_MSCALE2;
    else return m4_fail(err, "%s: unknown mla_softmax_scale_rule \"%s\"", r->golden_path, r->scale_rule);
    c->cs.softmax_scale = m4_ref_mla_softmax_scale(&c->cs.model->config.text, c->cs.rule);
    double recorded = strtod(scale, NULL);
    if (fabs(recorded - c->cs.softmax_scale) > 1e-6 * fabs(recorded))
        return m4_fail(err, "%s: the golden's MLA softmax scale %s differs from rule \"%s\" on this "
                            "config (%.9g): golden and checkpoint do not belong together",
                       r->golden_path, scale, r->scale_rule, c->cs.softmax_scale);
    return 0;
}

/* The config a golden (or candidate) file records in its root attribute config_json, parsed as a
 * config.json is (m4_config_parse): "FILE (config_json): invalid JSON at line 1, column 2: …" when
 * it cannot be. */
static int read_recorded_config(const m4_golden *file, m4_config *cfg, m4_error *err) {
    char *json = malloc(M4_GOLDEN_MAX_ATTR_BYTES + 1);
    if (!json)
        return m4_fail(err, "out of memory for the config_json of %s (%zu bytes)", m4_golden_path(file),
                       (size_t)M4_GOLDEN_MAX_ATTR_BYTES + 1);
    char source[600];
    snprintf(source, sizeof source, "%s (config_json)", m4_golden_path(file));
    int rc = m4_golden_attr(file, "config_json", json, M4_GOLDEN_MAX_ATTR_BYTES + 1, err) ||
                     m4_config_parse(json, source, cfg, err)
                 ? -1 : 0;
    free(json);
    return rc;
}

/* The differences m4_config_compare reports, as text: "F = A, WHO has B; …" for the fields the
 * forward pass reads (math) and for the others (info); a list that does not fit ends "and N more". */
typedef struct {
    const char *who;               /* "the model", "the candidate" */
    char math[640], info[640];
    int n_math, n_info, shown_math, shown_info;
} config_differences;

static void add_difference(const m4_config_difference *d, void *user) {
    config_differences *x = user;
    char *list = d->forward ? x->math : x->info;
    int *n = d->forward ? &x->n_math : &x->n_info, *shown = d->forward ? &x->shown_math : &x->shown_info;
    char item[512];
    snprintf(item, sizeof item, "%s%s = %s, %s has %s", *n ? "; " : "", d->field, d->a, x->who, d->b);
    size_t used = strlen(list);
    if (used + strlen(item) < sizeof x->math - 24) memcpy(list + used, item, strlen(item) + 1), ++*shown;
    ++*n;
}

static void end_list(char *list, size_t size, int n, int shown) {
    size_t used = strlen(list);
    if (shown < n) snprintf(list + used, size - used, "; and %d more", n - shown);
}

/* A golden file records the config it was made with; a model (or a candidate's recorded config)
 * that differs in a field the forward pass reads can only fail row after row (issue #18: 34
 * failing rows, budget% 14090871), so the run is refused before any row, naming every such field
 * with both values. Fields the forward pass does not read (eos ids, dtype, …) only warn, in
 * report->warnings. `who` is "the model" or "the candidate"; `source` where its config was read. */
static int check_same_model(const m4_report *r, const m4_config *golden, const m4_config *other, const char *who,
                            const char *source, char *warnings, size_t warnings_size, m4_error *err) {
    config_differences x = {.who = who};
    m4_config_compare(golden, other, add_difference, &x);
    end_list(x.math, sizeof x.math, x.n_math, x.shown_math);
    end_list(x.info, sizeof x.info, x.n_info, x.shown_info);
    if (x.n_info)
        snprintf(warnings, warnings_size, "golden %s was made with %s (%s: %s; fields the forward pass does not "
                                          "read, so the rows are still compared)",
                 r->golden_path, x.info, who, source);
    if (x.n_math)
        return m4_fail(err, "golden %s was made with %s (%s: %s): no row can match; run it on the model the golden "
                            "was made with",
                       r->golden_path, x.math, who, source);
    return 0;
}

/* A candidate that records the config it ran (root attribute config_json) or its inputs
 * (inputs/input_ids) must have run the golden's. */
static int check_candidate_case(const run_ctx *c, m4_error *err) {
    const char *cand = m4_golden_path(c->candidate), *gold = m4_golden_path(c->golden);
    if (m4_golden_has_attr(c->candidate, "config_json")) {
        m4_config ran;
        char source[600];
        snprintf(source, sizeof source, "%s (config_json)", cand);
        if (read_recorded_config(c->candidate, &ran, err) ||
            check_same_model(c->report, &c->cs.model->config, &ran, "the candidate", source, c->report->warnings,
                             sizeof c->report->warnings, err))
            return -1;
    }
    if (!m4_golden_has(c->candidate, "inputs/input_ids")) return 0;
    m4_array ids;
    if (m4_golden_read(c->candidate, "inputs/input_ids", true, &ids, err)) return -1;
    bool same = ids.numel == c->ids.numel && ids.ndim == c->ids.ndim &&
                memcmp(ids.dims, c->ids.dims, sizeof ids.dims) == 0 &&
                memcmp(ids.i64, c->ids.i64, sizeof *ids.i64 * (size_t)ids.numel) == 0;
    m4_array_free(&ids);
    if (!same)
        return m4_fail(err, "%s: inputs/input_ids differ from the golden's (%s): the candidate ran other inputs",
                       cand, gold);
    return 0;
}

int m4_conform_run(const m4_conform_options *opt, m4_report *report, m4_error *err) {
    memset(report, 0, sizeof *report);
    report->first_divergence = -1;
    snprintf(report->golden_path, sizeof report->golden_path, "%s", opt->golden_path);
    snprintf(report->model_path, sizeof report->model_path, "%s", opt->model_dir ? opt->model_dir : "");
    snprintf(report->backend, sizeof report->backend, "%s", opt->candidate_path ? "candidate" : opt->backend->name);
    if (opt->candidate_path)
        snprintf(report->candidate_path, sizeof report->candidate_path, "%s", opt->candidate_path);
    run_ctx c = {.opt = opt, .report = report, .cs = {.backend = opt->backend}};
    m4_model owned = {0};
    m4_golden *golden = NULL, *candidate = NULL;
    int rc = -1;
    if (m4_golden_open(opt->golden_path, &golden, err)) return -1;
    c.golden = golden;
    /* The config the golden was made with: a candidate run's config (its `model` holds no weights:
     * no backend runs), else what the model's config must match. */
    m4_config *recorded = malloc(sizeof *recorded);
    if (!recorded) {
        m4_fail(err, "out of memory for the config_json of %s (%zu bytes)", opt->golden_path, sizeof *recorded);
        goto done;
    }
    if (read_recorded_config(golden, recorded, err)) goto done;
    if (opt->candidate_path) {
        if (m4_golden_open_candidate(opt->candidate_path, &candidate, err)) {
            m4_fail_context(err, "candidate");
            goto done;
        }
        c.candidate = candidate;
        owned.config = *recorded;
        c.cs.model = &owned;
    } else if (opt->model) {
        c.cs.model = opt->model;
    } else if (m4_model_open(opt->model_dir, &owned, err) == 0) {
        c.cs.model = &owned;
    } else {
        goto done;
    }
    if (!candidate && !opt->model_broken_on_purpose &&
        check_same_model(report, recorded, &c.cs.model->config, "the model", c.cs.model->config.source,
                         report->warnings, sizeof report->warnings, err))
        goto done;
    if (read_provenance(&c, err) || read_inputs(&c, err)) goto done;
    if (candidate ? check_candidate_case(&c, err) : opt->backend->open(c.cs.model, &c.cs.state, err)) goto done;
    if (!candidate && opt->backend->describe_paths)
        opt->backend->describe_paths(report->backend_paths, sizeof report->backend_paths, 0);
    rc = visit_rows(&c, count_row, err) || visit_rows(&c, run_row, err) ? -1 : 0;
    if (!candidate) opt->backend->close(c.cs.state);
done:
    free(recorded);
    free_call(&c.last);
    m4_array_free(&c.ids), m4_array_free(&c.positions), m4_array_free(&c.mask);
    m4_array_free(&c.pixels), m4_array_free(&c.image_sizes);
    free(c.grids);
    if (c.cs.model == &owned) m4_model_close(&owned);
    m4_golden_close(candidate);
    m4_golden_close(golden);
    return rc;
}

void m4_report_free(m4_report *report) {
    free(report->results);
    memset(report, 0, sizeof *report);
}
