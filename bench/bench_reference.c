/* bench_reference.c — one decode step of the plain-C reference on a real-width text layer.
 *
 * The config is the published Mistral-Small-4-119B-2603's (tests/fixtures/…config.json, or
 * $M4BENCH_CONFIG) with text.num_hidden_layers = 1: D 4096, 32 heads, q_lora 1024, kv_lora 256,
 * nope 64, rope 64, v 128, 128 experts, top-4, F 2048, one shared expert. One layer of random
 * weights is built in memory, in two variants, each a fixture (only one alive at a time):
 *
 *   fp8   as the checkpoint stores it: every projection F8_E4M3 with a per-tensor (per-expert)
 *         scale; router (mlp.gate) and the RMSNorm weights BF16. ≈ 3.3 GB, experts dominating.
 *   bf16  every tensor BF16. ≈ 6.6 GB.
 *
 * Decode = one token, B = S = 1, context T = 1 (the reference has no KV cache yet, so the
 * attention is the S = 1 eager forward; a cached-context variant waits for the cache).
 *
 *   ref/text.layers.0.self_attn/decode/…          m4_ref_mla
 *   ref/text.layers.0.mlp.gate/decode/…           m4_ref_router
 *   ref/text.layers.0.mlp.experts/decode/…        m4_ref_experts, 4 experts given (not routed):
 *                                                 iteration i uses experts 4i … 4i+3 (mod 128)
 *   ref/text.layers.0.mlp.shared_experts/decode/… m4_ref_swiglu_mlp on the shared expert
 *   ref/text.layers.0/decode/…                    m4_ref_decoder_layer (norms, attention, router,
 *                                                 the 4 routed experts the router picks, shared)
 *
 * each at 1 thread and at every processor (omp_set_num_threads in the case's setup; the
 * reference parallelises m4_ref_linear's output rows).
 *
 * Bytes and FLOPs per iteration are the component registry's cost formulas (harness/registry.c)
 * for tokens = 1, context = 1, at each tensor's stored width:
 *   self_attn       (Rq·D + H·dq·Rq + (Rkv+dr)·D + H·(dn+dv)·Rkv + D·H·dv) · wb   (≈ 28.0 M params)
 *   mlp.gate        E·D · 2                                                      (BF16 always)
 *   mlp.experts     K · 3·F·D · wb       (the 4 experts touched by one token)
 *   shared_experts  3·F·D · wb
 *   layer           2 · D · 2 (norms) + the four above
 * plus the float32 activations in and out (2 · 4·D bytes, 0.03–1 % of these). So bytes_per_second
 * is, to within that, the achieved bandwidth of WEIGHT bytes read. FLOPs = 2 · params touched
 * (+ the attention's 2·H·(dq+dv)·T). Not counted: the q_a/kv_a RMSNorm weights (1280 BF16
 * values).
 *
 * Cache honesty: FP8 attention (28 MB) and shared-expert (25 MB) weights and the router (1 MB)
 * would sit in a 32 MB L3 between iterations, which a real 36-layer decode step never sees. So
 * each non-expert weight group is allocated in as many copies as it takes to span 4 × L3
 * (≥ 128 MiB; the router 128 copies, attention ≈ 5–10) and iteration i uses copy i mod copies;
 * the whole-layer case also cycles through 32 inputs, so the router picks different experts.
 * The labels say how many copies rotate. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "config.h"
#include "m4bench.h"
#include "reference.h"
#include "registry.h"
#include "weights.h"

#ifndef M4BENCH_CONFIG
#define M4BENCH_CONFIG "tests/fixtures/mistral-small-4-119b-2603.config.json"
#endif

#define N_INPUTS 32            /* distinct hidden states the cases cycle through */
#define MAX_COPIES 256
#define FP8_SCALE (1.0f / 64)  /* per-tensor dequantisation scale: values ≈ ±[0.002, 0.03] */

typedef enum { GROUP_ATTN, GROUP_ROUTER, GROUP_SHARED, GROUP_COUNT } weight_group;

/* One layer variant: its weights (non-expert groups in several copies), inputs and scratch. */
typedef struct {
    const char *variant;       /* "fp8" or "bf16" */
    m4_dtype linear_dtype;     /* projections and experts */
    m4_config cfg;
    int config_ok;
    char config_error[1600];
    float softmax_scale;
    uint8_t *group_mem[GROUP_COUNT];
    size_t group_bytes[GROUP_COUNT]; /* one copy */
    int copies[GROUP_COUNT];
    int n_layers;              /* max(copies): layers[c] uses copy c mod copies[g] of group g */
    m4_text_layer_weights *layers;
    uint8_t *experts_mem;
    float *expert_scales[2];   /* [E] gate_up, down (fp8 only) */
    float *inputs;             /* [N_INPUTS, D] */
    float *out, *h, *logits, *topk_weights; /* scratch */
    int64_t *topk_ids;
} layer_variant;

typedef enum { C_ATTN, C_ROUTER, C_EXPERTS, C_SHARED, C_LAYER, C_COUNT } case_kind;

typedef struct {
    layer_variant *v;
    case_kind kind;
    int threads;
} ref_case;

/* Static storage: m4bench keeps pointers to the fixtures and cases for the whole run. */
static layer_variant variants[2] = {{.variant = "fp8", .linear_dtype = M4_DTYPE_F8_E4M3},
                                    {.variant = "bf16", .linear_dtype = M4_DTYPE_BF16}};
static ref_case cases[2][C_COUNT][2];

/* ---- building the weights ------------------------------------------------------------------ */

/* Lays a [rows, cols] tensor of `dtype` at *offset (64-byte aligned) of base (NULL: only sizes). */
static void carve(m4_weight *w, uint8_t *base, size_t *offset, m4_dtype dtype, int64_t rows,
                  int64_t cols) {
    *offset = (*offset + 63) & ~(size_t)63;
    *w = (m4_weight){.name = NULL, .dtype = dtype, .rows = rows, .cols = cols,
                     .data = base ? base + *offset : NULL,
                     .scale = dtype == M4_DTYPE_F8_E4M3 ? FP8_SCALE : 1.0f};
    *offset += (size_t)rows * (size_t)cols * m4_dtype_size(dtype);
}

/* Carves group g of one layer copy into base (NULL: sizes only); returns its bytes. */
static size_t carve_group(const layer_variant *v, weight_group g, m4_text_layer_weights *w, uint8_t *base) {
    const m4_text_config *t = &v->cfg.text;
    const int64_t D = t->hidden_size, H = t->num_attention_heads, dq = t->qk_head_dim;
    const int64_t dn = t->qk_nope_head_dim, dr = t->qk_rope_head_dim, dv = t->v_head_dim;
    const int64_t Rq = t->q_lora_rank, Rkv = t->kv_lora_rank, F = t->moe_intermediate_size * t->n_shared_experts;
    const m4_dtype lin = v->linear_dtype, bf16 = M4_DTYPE_BF16;
    size_t off = 0;
    switch (g) {
    case GROUP_ATTN:  /* with the two decoder-layer norms */
        carve(&w->input_layernorm, base, &off, bf16, 1, D);
        carve(&w->q_a_proj, base, &off, lin, Rq, D);
        carve(&w->q_a_layernorm, base, &off, bf16, 1, Rq);
        carve(&w->q_b_proj, base, &off, lin, H * dq, Rq);
        carve(&w->kv_a_proj_with_mqa, base, &off, lin, Rkv + dr, D);
        carve(&w->kv_a_layernorm, base, &off, bf16, 1, Rkv);
        carve(&w->kv_b_proj, base, &off, lin, H * (dn + dv), Rkv);
        carve(&w->o_proj, base, &off, lin, D, H * dv);
        carve(&w->post_attention_layernorm, base, &off, bf16, 1, D);
        break;
    case GROUP_ROUTER:
        carve(&w->router, base, &off, bf16, t->n_routed_experts, D);
        break;
    case GROUP_SHARED:
        carve(&w->shared_gate_proj, base, &off, lin, F, D);
        carve(&w->shared_up_proj, base, &off, lin, F, D);
        carve(&w->shared_down_proj, base, &off, lin, D, F);
        break;
    case GROUP_COUNT: break;
    }
    return (off + 63) & ~(size_t)63;
}

/* Random but well-scaled element bits from a 64-bit random word:
 *   F8_E4M3: sign, exponent field 4…7, any mantissa → ±[0.125, 1.875], × FP8_SCALE;
 *   BF16:    sign, exponent 118…121, any 7-bit mantissa → ±[0.002, 0.03];
 *   a norm (BF16 [1, n] weight): 1 + a few ulps.
 * Never NaN, Inf or subnormal (subnormals would slow float math and flatter nothing). */
static void fill(const m4_weight *w, uint64_t seed, int norm) {
    const size_t n = (size_t)(w->rows * w->cols);
    uint8_t *data = (uint8_t *)w->data;
    if (w->dtype == M4_DTYPE_F8_E4M3) {
#pragma omp parallel for schedule(static) num_threads(m4bench_all_threads())
        for (int64_t i = 0; i < (int64_t)((n + 7) / 8); i++) {
            uint64_t r = m4bench_mix(seed + (uint64_t)i);
            for (int b = 0; b < 8 && (size_t)i * 8 + b < n; b++) {
                unsigned x = (unsigned)(r >> (8 * b)) & 0xFFu;
                data[i * 8 + b] = (uint8_t)((x & 0x87u) | ((4u + ((x >> 3) & 3u)) << 3));
            }
        }
    } else { /* BF16 */
        uint16_t *h = (uint16_t *)(void *)data;
#pragma omp parallel for schedule(static) num_threads(m4bench_all_threads())
        for (int64_t i = 0; i < (int64_t)((n + 3) / 4); i++) {
            uint64_t r = m4bench_mix(seed + (uint64_t)i);
            for (int b = 0; b < 4 && (size_t)i * 4 + b < n; b++) {
                unsigned x = (unsigned)(r >> (16 * b)) & 0xFFFFu;
                h[i * 4 + b] = norm ? (uint16_t)(0x3F80u | (x & 7u))
                                    : (uint16_t)((x & 0x807Fu) | ((118u + ((x >> 7) & 3u)) << 7));
            }
        }
    }
}

static void fill_group(const m4_text_layer_weights *w, weight_group g, uint64_t seed) {
    const m4_weight *tensors[9];
    int n = 0;
    switch (g) {
    case GROUP_ATTN:
        tensors[n++] = &w->input_layernorm, tensors[n++] = &w->q_a_proj;
        tensors[n++] = &w->q_a_layernorm, tensors[n++] = &w->q_b_proj;
        tensors[n++] = &w->kv_a_proj_with_mqa, tensors[n++] = &w->kv_a_layernorm;
        tensors[n++] = &w->kv_b_proj, tensors[n++] = &w->o_proj;
        tensors[n++] = &w->post_attention_layernorm;
        break;
    case GROUP_ROUTER: tensors[n++] = &w->router; break;
    case GROUP_SHARED:
        tensors[n++] = &w->shared_gate_proj, tensors[n++] = &w->shared_up_proj;
        tensors[n++] = &w->shared_down_proj;
        break;
    case GROUP_COUNT: break;
    }
    for (int i = 0; i < n; i++) fill(tensors[i], seed + ((uint64_t)i << 40), tensors[i]->rows == 1);
}

static void variant_teardown(void *user) {
    layer_variant *v = user;
    for (int g = 0; g < GROUP_COUNT; g++) m4bench_free(v->group_mem[g]), v->group_mem[g] = NULL;
    m4bench_free(v->experts_mem), v->experts_mem = NULL;
    free(v->expert_scales[0]), free(v->expert_scales[1]);
    v->expert_scales[0] = v->expert_scales[1] = NULL;
    free(v->layers), v->layers = NULL;
    free(v->inputs), free(v->out), free(v->h), free(v->logits), free(v->topk_weights), free(v->topk_ids);
    v->inputs = v->out = v->h = v->logits = v->topk_weights = NULL;
    v->topk_ids = NULL;
}

static int variant_setup(void *user, char *err, size_t errsize) {
    layer_variant *v = user;
    if (!v->config_ok) {
        snprintf(err, errsize, "%s", v->config_error);
        return -1;
    }
    const m4_text_config *t = &v->cfg.text;
    const int64_t D = t->hidden_size, E = t->n_routed_experts, F = t->moe_intermediate_size;
    const int64_t K = t->num_experts_per_tok;

    /* copies of each non-expert group to span 4 × L3 */
    size_t target = 4 * m4bench_llc_bytes();
    if (target < ((size_t)128 << 20)) target = (size_t)128 << 20;
    m4_text_layer_weights probe;
    v->n_layers = 1;
    for (int g = 0; g < GROUP_COUNT; g++) {
        v->group_bytes[g] = carve_group(v, (weight_group)g, &probe, NULL);
        size_t copies = (target + v->group_bytes[g] - 1) / v->group_bytes[g];
        v->copies[g] = m4bench_smoke() ? 1 : copies > MAX_COPIES ? MAX_COPIES : (int)copies;
        if (v->copies[g] > v->n_layers) v->n_layers = v->copies[g];
    }
    const size_t elem = m4_dtype_size(v->linear_dtype);
    const size_t gate_up_bytes = (size_t)(E * 2 * F * D) * elem, down_bytes = (size_t)(E * D * F) * elem;

    v->layers = calloc((size_t)v->n_layers, sizeof *v->layers);
    v->experts_mem = m4bench_alloc(gate_up_bytes + down_bytes);
    v->inputs = malloc(sizeof(float) * (size_t)(N_INPUTS * D));
    v->out = malloc(sizeof(float) * (size_t)D);
    v->h = malloc(sizeof(float) * (size_t)D);
    v->logits = malloc(sizeof(float) * (size_t)E);
    v->topk_weights = malloc(sizeof(float) * (size_t)K);
    v->topk_ids = malloc(sizeof(int64_t) * (size_t)K);
    int ok = v->layers && v->experts_mem && v->inputs && v->out && v->h && v->logits &&
             v->topk_weights && v->topk_ids;
    for (int g = 0; g < GROUP_COUNT && ok; g++) {
        v->group_mem[g] = m4bench_alloc(v->group_bytes[g] * (size_t)v->copies[g]);
        ok = v->group_mem[g] != NULL;
    }
    if (v->linear_dtype == M4_DTYPE_F8_E4M3 && ok) {
        v->expert_scales[0] = malloc(sizeof(float) * (size_t)E);
        v->expert_scales[1] = malloc(sizeof(float) * (size_t)E);
        ok = v->expert_scales[0] && v->expert_scales[1];
    }
    if (!ok) {
        variant_teardown(v);
        snprintf(err, errsize, "out of memory for the %s layer (%.2f GB of experts)", v->variant,
                 (double)(gate_up_bytes + down_bytes) / 1e9);
        return -1;
    }

    /* the non-expert groups, copy by copy; layers[l] points at copy l mod copies[g] */
    for (int g = 0; g < GROUP_COUNT; g++)
        for (int c = 0; c < v->copies[g]; c++) {
            uint8_t *base = v->group_mem[g] + (size_t)c * v->group_bytes[g];
            carve_group(v, (weight_group)g, &v->layers[c], base);
            fill_group(&v->layers[c], (weight_group)g, ((uint64_t)g << 56) ^ ((uint64_t)c << 48));
            for (int l = c + v->copies[g]; l < v->n_layers; l += v->copies[g])
                carve_group(v, (weight_group)g, &v->layers[l], base);
        }

    /* the routed experts: one stack each, shared by every layer copy */
    for (int s = 0; s < 2; s++) {
        if (v->expert_scales[s])
            for (int64_t e = 0; e < E; e++) v->expert_scales[s][e] = FP8_SCALE;
    }
    m4_expert_stack gate_up = {.name = NULL, .dtype = v->linear_dtype, .experts = E, .rows = 2 * F,
                               .cols = D, .data = v->experts_mem, .scales = v->expert_scales[0]};
    m4_expert_stack down = {.name = NULL, .dtype = v->linear_dtype, .experts = E, .rows = D, .cols = F,
                            .data = v->experts_mem + gate_up_bytes, .scales = v->expert_scales[1]};
    m4_weight whole = {.dtype = v->linear_dtype, .rows = 1, .cols = (int64_t)((gate_up_bytes + down_bytes) / elem),
                       .data = v->experts_mem};
    fill(&whole, (uint64_t)7 << 56, 0);
    for (int l = 0; l < v->n_layers; l++) {
        v->layers[l].moe = true;
        v->layers[l].experts_gate_up = gate_up;
        v->layers[l].experts_down = down;
    }

    /* inputs: hidden states with values in [-1, 1) */
    for (int64_t i = 0; i < N_INPUTS * D; i++)
        v->inputs[i] = (float)(m4bench_mix((uint64_t)i ^ 0xABCDull) >> 40) / (float)(1 << 23) - 1.0f;
    return 0;
}

/* ---- the cases ------------------------------------------------------------------------------ */

static int case_setup(void *user, char *err, size_t errsize) {
    const ref_case *c = user;
    m4bench_set_threads(c->threads);
    char text[96];
    const layer_variant *v = c->v;
    const int g = c->kind == C_ATTN ? GROUP_ATTN : c->kind == C_ROUTER ? GROUP_ROUTER
                : c->kind == C_SHARED ? GROUP_SHARED : -1;
    if (g >= 0)
        snprintf(text, sizeof text, "copies=%d", v->copies[g]);
    else if (c->kind == C_LAYER)
        snprintf(text, sizeof text, "copies=%d/%d/%d inputs=%d", v->copies[GROUP_ATTN],
                 v->copies[GROUP_ROUTER], v->copies[GROUP_SHARED], N_INPUTS);
    else
        snprintf(text, sizeof text, "experts=4i..4i+3");
    m4bench_label(text);
    return 0;
}

static int case_run(void *user, int64_t iteration, char *errbuf, size_t errsize) {
    const ref_case *c = user;
    layer_variant *v = c->v;
    const m4_text_config *t = &v->cfg.text;
    const int64_t D = t->hidden_size, E = t->n_routed_experts, K = t->num_experts_per_tok;
    const m4_text_layer_weights *w = &v->layers[iteration % v->n_layers];
    const float *x = v->inputs + (iteration % N_INPUTS) * D;
    m4_error err;
    int rc = 0;
    switch (c->kind) {
    case C_ATTN:
        rc = m4_ref_mla(t, w, x, 1, 1, NULL, NULL, v->softmax_scale, v->out, NULL, &err);
        break;
    case C_ROUTER:
        rc = m4_ref_router(t, w, x, 1, v->logits, v->topk_ids, v->topk_weights, &err);
        break;
    case C_EXPERTS:
        for (int64_t k = 0; k < K; k++) {
            v->topk_ids[k] = (iteration * K + k) % E;
            v->topk_weights[k] = 1.0f / (float)K;
        }
        rc = m4_ref_experts(t, w, x, 1, v->topk_ids, v->topk_weights, v->out, &err);
        break;
    case C_SHARED:
        rc = m4_ref_swiglu_mlp(x, 1, &w->shared_gate_proj, &w->shared_up_proj, &w->shared_down_proj,
                               t->hidden_act, v->out, &err);
        break;
    case C_LAYER:
        memcpy(v->h, x, sizeof(float) * (size_t)D);
        rc = m4_ref_decoder_layer(t, w, v->h, 1, 1, NULL, NULL, v->softmax_scale, &err);
        break;
    case C_COUNT: break;
    }
    if (rc) {
        snprintf(errbuf, errsize, "%s", err.msg);
        return -1;
    }
    m4bench_keep(c->kind == C_LAYER ? v->h : c->kind == C_ROUTER ? v->logits : v->out);
    return 0;
}

/* After a timed run: flags a non-finite result in the label (random weights must stay tame). */
static void case_teardown(void *user) {
    const ref_case *c = user;
    const layer_variant *v = c->v;
    const float *y = c->kind == C_LAYER ? v->h : c->kind == C_ROUTER ? v->logits : v->out;
    const int64_t n = c->kind == C_ROUTER ? v->cfg.text.n_routed_experts : v->cfg.text.hidden_size;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(y[i])) {
            m4bench_label("WARNING: non-finite output");
            return;
        }
}

/* The registry's cost of the first component of `kind`, at weight width wb. */
static m4_cost registry_cost(const m4_config *cfg, m4_component_kind kind, int wb) {
    for (size_t i = 0; i < m4_component_count; i++)
        if (m4_components[i].kind == kind) return m4_components[i].cost(cfg, 1, 1, wb);
    return (m4_cost){0, 0};
}

static m4_cost case_cost(const layer_variant *v, case_kind kind) {
    const int wb = (int)m4_dtype_size(v->linear_dtype);
    const m4_config *cfg = &v->cfg;
    m4_cost attn = registry_cost(cfg, M4_COMP_SELF_ATTN, wb), router = registry_cost(cfg, M4_COMP_ROUTER, 2);
    m4_cost experts = registry_cost(cfg, M4_COMP_EXPERTS, wb), shared = registry_cost(cfg, M4_COMP_SHARED_EXPERTS, wb);
    m4_cost norm = registry_cost(cfg, M4_COMP_INPUT_NORM, 2);
    switch (kind) {
    case C_ATTN: return attn;
    case C_ROUTER: return router;
    case C_EXPERTS: return experts;
    case C_SHARED: return shared;
    case C_LAYER:
        return (m4_cost){2 * norm.flops + attn.flops + router.flops + experts.flops + shared.flops,
                         2 * norm.bytes + attn.bytes + router.bytes + experts.bytes + shared.bytes};
    case C_COUNT: break;
    }
    return (m4_cost){0, 0};
}

void m4bench_suite_reference(void) {
    static const m4_component_kind comp[C_COUNT] = {M4_COMP_SELF_ATTN, M4_COMP_ROUTER, M4_COMP_EXPERTS,
                                                    M4_COMP_SHARED_EXPERTS, M4_COMP_DECODER_LAYER};
    static const m4bench_fixture fixtures[2] = {
        {"fp8 layer", variant_setup, variant_teardown, &variants[0]},
        {"bf16 layer", variant_setup, variant_teardown, &variants[1]},
    };
    const char *path = getenv("M4BENCH_CONFIG");
    if (!path || !*path) path = M4BENCH_CONFIG;
    const int all = m4bench_all_threads();
    const int thread_counts[2] = {1, all};
    m4bench_context("m4_reference_config", path);

    for (int vi = 0; vi < 2; vi++) {
        layer_variant *v = &variants[vi];
        m4_error err;
        v->config_ok = m4_config_load(path, &v->cfg, &err) == 0;
        if (!v->config_ok) {
            snprintf(v->config_error, sizeof v->config_error, "config %s: %s", path, err.msg);
        } else {
            v->cfg.text.num_hidden_layers = 1;
            v->cfg.text.first_k_dense_replace = 0;
            v->softmax_scale = m4_ref_mla_softmax_scale(&v->cfg.text, M4_SOFTMAX_SCALE_BASE);
        }
        for (int k = 0; k < C_COUNT; k++)
            for (int ti = 0; ti < (all > 1 ? 2 : 1); ti++) {
                ref_case *c = &cases[vi][k][ti];
                *c = (ref_case){v, (case_kind)k, thread_counts[ti]};
                const char *pattern = NULL;
                for (size_t i = 0; i < m4_component_count && !pattern; i++)
                    if (m4_components[i].kind == comp[k]) pattern = m4_components[i].name;
                char component[96], name[160], label[160], ceiling[64];
                m4_component_instance(pattern, 0, component, sizeof component);
                snprintf(name, sizeof name, "ref/%s/decode/%s/threads:%d", component, v->variant, c->threads);
                snprintf(ceiling, sizeof ceiling, "cpu_read/threads:%d", c->threads);
                snprintf(label, sizeof label, "reference fp32; weights %s%s; T=1",
                         k == C_ROUTER ? "bf16" : v->variant,
                         vi != 0 ? "" : k == C_ATTN ? " (q_a/kv_a norms bf16)"
                                      : k == C_LAYER ? " (norms, router bf16)" : "");
                m4_cost cost = v->config_ok ? case_cost(v, (case_kind)k) : (m4_cost){0, 0};
                m4bench_register(&(m4bench_case){
                    .name = name,
                    .fixture = &fixtures[vi],
                    .setup = case_setup,
                    .run = case_run,
                    .teardown = case_teardown,
                    .user = c,
                    .bytes = cost.bytes,
                    .flops = cost.flops,
                    .label = label,
                    .ceiling = ceiling,
                });
            }
    }
}
