/* bench_vision.c — the plain-C reference's vision path at the published widths: Pixtral's patch
 * convolution and one transformer layer (Dv 1024, 16 heads × 64, Iv 4096, SiLU) and the Mistral3
 * projector (RMSNorm, 2×2 patch merger, linear_1 1024 → 4096, GELU, linear_2 4096 → 4096), on
 * one 224 × 224 image: P = 16 × 16 = 256 patches, M = 64 merged tokens. The checkpoint keeps the
 * vision tower and the projector in BF16 (quantization_config.modules_to_not_convert), so one
 * variant: BF16 weights, float32 math. Vision only ever runs on a whole image, so there is no
 * decode: the phase is "prefill:<P>" (P patches), at every processor.
 *
 *   ref/vision.patch_conv/prefill:256/bf16/…            m4_ref_patch_conv, pixels [1, 3, 224, 224]
 *   ref/vision.layers.0.attention_norm/prefill:256/…    m4_ref_rmsnorm (ffn_norm is the same op)
 *   ref/vision.layers.0.attention/prefill:256/…         m4_ref_vision_attention (one image block)
 *   ref/vision.layers.0.feed_forward/prefill:256/…      m4_ref_vision_feed_forward
 *   ref/vision.layers.0/prefill:256/…                   m4_ref_vision_layer
 *   ref/projector/prefill:256/…                         m4_ref_projector (P patches → M tokens)
 *
 * Bytes and FLOPs are the registry's cost formulas (harness/registry.c) for n = P patches,
 * context T = P, weights 2 bytes. One copy of the weights (≈ 34 MB for the layer, 50 MB for the
 * projector): with 256 patches each weight row is reused by 32 passes of 8 patches within one
 * iteration, so these are compute-bound and caching across iterations changes little. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "config.h"
#include "m4bench.h"
#include "registry.h"
#include "vision.h"

#ifndef M4BENCH_CONFIG
#define M4BENCH_CONFIG "tests/fixtures/mistral-small-4-119b-2603.config.json"
#endif

#define IMAGE_SIDE 224        /* pixels: 16 × 16 patches of 14 */
#define SMOKE_IMAGE_SIDE 56   /* 4 × 4 patches */

typedef enum { V_PATCH_CONV, V_NORM, V_ATTN, V_FFN, V_LAYER, V_PROJECTOR, V_COUNT } vcase_kind;

typedef struct {
    m4_model model;            /* config + weights (no checkpoint): what m4_ref_projector reads */
    int config_ok;
    char config_error[1600];
    uint8_t *mem;
    m4_vision_layer_weights layer;
    m4_patch_grid grid;
    int64_t side, patches, merged;
    float *pixels;             /* [1, 3, side, side] */
    int64_t image_sizes[2];
    m4_pixel_batch px;
    float *x;                  /* [P, Dv] input hidden states */
    float *h, *out;            /* [P, max(Dv, D)] scratch */
} vision_fixture;

typedef struct {
    vision_fixture *f;
    vcase_kind kind;
    int threads;
} vision_case;

static vision_fixture vf;
static vision_case vcases[V_COUNT];

static int64_t image_side(void) { return m4bench_smoke() ? SMOKE_IMAGE_SIDE : IMAGE_SIDE; }

static void carve(m4_weight *w, uint8_t *base, size_t *offset, int64_t rows, int64_t cols) {
    *offset = (*offset + 63) & ~(size_t)63;
    *w = (m4_weight){.dtype = M4_DTYPE_BF16, .rows = rows, .cols = cols,
                     .data = base ? base + *offset : NULL, .scale = 1.0f};
    *offset += (size_t)(rows * cols) * 2;
}

/* Lays every weight out in base (NULL: sizes only); returns the bytes. */
static size_t carve_all(vision_fixture *f, uint8_t *base) {
    const m4_config *cfg = &f->model.config;
    const int64_t Dv = cfg->vision.hidden_size, Iv = cfg->vision.intermediate_size, D = cfg->text.hidden_size;
    const int64_t m = cfg->spatial_merge_size, p = cfg->vision.patch_size, C = cfg->vision.num_channels;
    m4_weights *w = &f->model.weights;
    size_t off = 0;
    carve(&w->patch_conv, base, &off, Dv, C * p * p);
    carve(&f->layer.attention_norm, base, &off, 1, Dv);
    carve(&f->layer.q_proj, base, &off, Dv, Dv);
    carve(&f->layer.k_proj, base, &off, Dv, Dv);
    carve(&f->layer.v_proj, base, &off, Dv, Dv);
    carve(&f->layer.o_proj, base, &off, Dv, Dv);
    carve(&f->layer.ffn_norm, base, &off, 1, Dv);
    carve(&f->layer.gate_proj, base, &off, Iv, Dv);
    carve(&f->layer.up_proj, base, &off, Iv, Dv);
    carve(&f->layer.down_proj, base, &off, Dv, Iv);
    carve(&w->projector_norm, base, &off, 1, Dv);
    carve(&w->patch_merger, base, &off, Dv, Dv * m * m);
    carve(&w->linear_1, base, &off, D, Dv);
    carve(&w->linear_2, base, &off, D, D);
    return off;
}

static void vision_teardown(void *user) {
    vision_fixture *f = user;
    m4bench_free(f->mem), f->mem = NULL;
    free(f->pixels), free(f->x), free(f->h), free(f->out);
    f->pixels = f->x = f->h = f->out = NULL;
}

static int vision_setup(void *user, char *err, size_t errsize) {
    vision_fixture *f = user;
    if (!f->config_ok) {
        snprintf(err, errsize, "%s", f->config_error);
        return -1;
    }
    const m4_config *cfg = &f->model.config;
    const int64_t Dv = cfg->vision.hidden_size, D = cfg->text.hidden_size, C = cfg->vision.num_channels;
    const int64_t p = cfg->vision.patch_size, m = cfg->spatial_merge_size;
    f->side = image_side();
    f->grid = (m4_patch_grid){f->side / p, f->side / p};
    f->patches = f->grid.rows * f->grid.cols;
    f->merged = (f->grid.rows / m) * (f->grid.cols / m);
    const int64_t width = Dv > D ? Dv : D;
    const size_t bytes = carve_all(f, NULL);
    f->mem = m4bench_alloc(bytes);
    f->pixels = malloc(sizeof(float) * (size_t)(C * f->side * f->side));
    f->x = malloc(sizeof(float) * (size_t)(f->patches * Dv));
    f->h = malloc(sizeof(float) * (size_t)(f->patches * width));
    f->out = malloc(sizeof(float) * (size_t)(f->patches * width));
    if (!f->mem || !f->pixels || !f->x || !f->h || !f->out) {
        vision_teardown(f);
        snprintf(err, errsize, "out of memory for the vision weights (%.2f GB)", (double)bytes / 1e9);
        return -1;
    }
    carve_all(f, f->mem);
    const m4_weight *all[] = {&f->model.weights.patch_conv, &f->layer.attention_norm, &f->layer.q_proj,
                              &f->layer.k_proj, &f->layer.v_proj, &f->layer.o_proj, &f->layer.ffn_norm,
                              &f->layer.gate_proj, &f->layer.up_proj, &f->layer.down_proj,
                              &f->model.weights.projector_norm, &f->model.weights.patch_merger,
                              &f->model.weights.linear_1, &f->model.weights.linear_2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        m4bench_fill(all[i], (uint64_t)(0x51 + i) << 48, all[i]->rows == 1);
    m4bench_fill_floats(f->pixels, (size_t)(C * f->side * f->side), 0x9191ull);
    m4bench_fill_floats(f->x, (size_t)(f->patches * Dv), 0x7777ull);
    f->image_sizes[0] = f->image_sizes[1] = f->side;
    f->px = (m4_pixel_batch){.n = 1, .height = f->side, .width = f->side, .pixel_values = f->pixels,
                             .image_sizes = f->image_sizes};
    f->model.weights.vision_layers = &f->layer;
    return 0;
}

static int vcase_setup(void *user, char *err, size_t errsize) {
    const vision_case *c = user;
    m4bench_set_threads(c->threads);
    char text[64];
    snprintf(text, sizeof text, "P=%lld M=%lld", (long long)c->f->patches, (long long)c->f->merged);
    m4bench_label(text);
    return 0;
}

static int vcase_run(void *user, int64_t iteration, char *errbuf, size_t errsize) {
    const vision_case *c = user;
    vision_fixture *f = c->f;
    const m4_vision_config *vc = &f->model.config.vision;
    const int64_t Dv = vc->hidden_size, P = f->patches;
    m4_error err;
    int rc = 0;
    switch (c->kind) {
    case V_PATCH_CONV: rc = m4_ref_patch_conv(vc, &f->model.weights.patch_conv, &f->px, f->out, &err); break;
    case V_NORM: m4_ref_rmsnorm(f->x, P, Dv, &f->layer.attention_norm, 1e-5f, f->out); break;
    case V_ATTN: rc = m4_ref_vision_attention(vc, &f->layer, f->x, &f->grid, 1, f->out, NULL, &err); break;
    case V_FFN: rc = m4_ref_vision_feed_forward(vc, &f->layer, f->x, P, f->out, &err); break;
    case V_LAYER:
        memcpy(f->h, f->x, sizeof(float) * (size_t)(P * Dv));
        rc = m4_ref_vision_layer(vc, &f->layer, f->h, &f->grid, 1, &err);
        break;
    case V_PROJECTOR: rc = m4_ref_projector(&f->model, f->x, &f->grid, 1, f->out, &err); break;
    case V_COUNT: break;
    }
    if (rc) {
        snprintf(errbuf, errsize, "%s", err.msg);
        return -1;
    }
    m4bench_keep(c->kind == V_LAYER ? f->h : f->out);
    return 0;
}

static void vcase_teardown(void *user) {
    const vision_case *c = user;
    const vision_fixture *f = c->f;
    const int64_t Dv = f->model.config.vision.hidden_size, D = f->model.config.text.hidden_size;
    const float *y = c->kind == V_LAYER ? f->h : f->out;
    const int64_t n = c->kind == V_PROJECTOR ? f->merged * D : f->patches * Dv;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(y[i])) {
            m4bench_label("WARNING: non-finite output");
            return;
        }
}

static m4_cost vregistry_cost(const m4_config *cfg, m4_component_kind kind, int64_t n) {
    for (size_t i = 0; i < m4_component_count; i++)
        if (m4_components[i].kind == kind) return m4_components[i].cost(cfg, n, n, 2);
    return (m4_cost){0, 0};
}

void m4bench_suite_vision(void) {
    static const m4bench_fixture fixture = {"vision layer + projector", vision_setup, vision_teardown, &vf};
    static const m4_component_kind kinds[V_COUNT] = {M4_COMP_PATCH_CONV, M4_COMP_VISION_ATTN_NORM,
                                                     M4_COMP_VISION_ATTN, M4_COMP_VISION_FFN,
                                                     M4_COMP_VISION_LAYER, M4_COMP_PROJECTOR};
    const char *path = getenv("M4BENCH_CONFIG");
    if (!path || !*path) path = M4BENCH_CONFIG;
    m4_error err;
    vf.config_ok = m4_config_load(path, &vf.model.config, &err) == 0;
    if (!vf.config_ok)
        snprintf(vf.config_error, sizeof vf.config_error, "config %s: %s", path, err.msg);
    else if (!vf.model.config.multimodal)
        vf.config_ok = 0, snprintf(vf.config_error, sizeof vf.config_error, "config %s has no vision tower", path);
    const int all = m4bench_all_threads();
    const int64_t patches = vf.config_ok ? (image_side() / vf.model.config.vision.patch_size) *
                                               (image_side() / vf.model.config.vision.patch_size)
                                         : 0;
    char value[32];
    snprintf(value, sizeof value, "%lld", (long long)patches);
    m4bench_context("m4_vision_patches", value);
    for (int k = 0; k < V_COUNT; k++) {
        vision_case *c = &vcases[k];
        *c = (vision_case){&vf, (vcase_kind)k, all};
        const char *pattern = "?";
        for (size_t i = 0; i < m4_component_count; i++)
            if (m4_components[i].kind == kinds[k]) {
                pattern = m4_components[i].name;
                break;
            }
        char component[96], name[192], label[160], ceiling[64], flops_ceiling[64];
        m4_component_instance(pattern, 0, component, sizeof component);
        snprintf(name, sizeof name, "ref/%s/prefill:%lld/bf16/threads:%d", component, (long long)patches, all);
        snprintf(ceiling, sizeof ceiling, "cpu_read/threads:%d", all);
        snprintf(flops_ceiling, sizeof flops_ceiling, "cpu_fp32_fma/threads:%d", all);
        snprintf(label, sizeof label, "reference fp32; weights bf16; one %lldx%lld image",
                 (long long)image_side(), (long long)image_side());
        m4_cost cost = vf.config_ok ? vregistry_cost(&vf.model.config, kinds[k], patches) : (m4_cost){0, 0};
        m4bench_register(&(m4bench_case){
            .name = name,
            .fixture = &fixture,
            .setup = vcase_setup,
            .run = vcase_run,
            .teardown = vcase_teardown,
            .user = c,
            .bytes = cost.bytes,
            .flops = cost.flops,
            .label = label,
            .ceiling = ceiling,
            .flops_ceiling = flops_ceiling,
        });
    }
}
