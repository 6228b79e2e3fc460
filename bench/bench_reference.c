/* bench_reference.c — the plain-C reference's text components on a real-width layer: a decode
 * step (1 token) and a prefill (PREFILL_TOKENS tokens), per component and for the whole layer.
 *
 * The config is the published Mistral-Small-4-119B-2603's (tests/fixtures/…config.json, or
 * $M4BENCH_CONFIG) with text.num_hidden_layers = 1: D 4096, 32 heads, q_lora 1024, kv_lora 256,
 * nope 64, rope 64, v 128, 128 experts, top-4, F 2048, one shared expert, V 131072. One layer of
 * random weights is built in memory, in two variants, each a fixture (only one alive at a time):
 *
 *   fp8   as the checkpoint stores it: every projection F8_E4M3 with a per-tensor (per-expert)
 *         scale; router (mlp.gate) and the RMSNorm weights BF16. ≈ 3.3 GB, experts dominating.
 *   bf16  every tensor BF16. ≈ 6.6 GB.
 *
 * and a third fixture holds the lm_head alone (BF16 [V, D], 1 GiB, as the checkpoint keeps it).
 *
 * Phases (the middle part of each name):
 *   decode               one token, B = S = 1, context T = 1 (no cached context: the S = 1 eager
 *                        forward), at 1 thread and at every processor;
 *   prefill:<N>          N = PREFILL_TOKENS (128) tokens, B = 1, S = T = N, causal, at every
 *                        processor only (a 1-thread prefill would double the run for little);
 *   decode:ctx<T>        self_attn only: one token after T = CONTEXT_POSITIONS (4096) cached
 *                        positions (m4_ref_mla_cached over a kv cache of random latents), at 1
 *                        thread and at every processor: what long-context generation pays per
 *                        layer and token.
 *
 *   ref/text.layers.0.input_layernorm/…      m4_ref_rmsnorm (post_attention_layernorm is the same op)
 *   ref/text.layers.0.self_attn/…            m4_ref_mla
 *   ref/text.layers.0.mlp.gate/…             m4_ref_router
 *   ref/text.layers.0.mlp.experts/…          m4_ref_experts with a given routing (not the
 *                                            router's): token t of iteration i uses experts
 *                                            (K·(i+t) + k) mod E, k < K — decode walks through the
 *                                            experts 4 at a time, prefill:128 gives each of the 128
 *                                            experts exactly 4 tokens (torch_baseline.py routes
 *                                            the same way)
 *   ref/text.layers.0.mlp.shared_experts/…   m4_ref_swiglu_mlp on the shared expert
 *   ref/text.layers.0.mlp/…                  m4_ref_mlp (router, the experts it picks, shared)
 *   ref/text.layers.0/…                      m4_ref_decoder_layer (norms, attention, MoE)
 *   ref/text.lm_head/decode/bf16/…           m4_ref_linear over the vocabulary (a prefill's lm_head
 *                                            is the same: generation keeps only the last logits)
 *
 * (the reference parallelises m4_ref_linear's output rows; omp_set_num_threads in each case's
 * setup).
 *
 * Bytes and FLOPs per iteration are the component registry's cost formulas (harness/registry.c)
 * for tokens = N, context = N, at each tensor's stored width:
 *   input_layernorm 4·N·D FLOPs; D · 2 weight bytes
 *   self_attn       (Rq·D + H·dq·Rq + (Rkv+dr)·D + H·(dn+dv)·Rkv + D·H·dv) · wb   (≈ 28.0 M params)
 *                   FLOPs 2·N·params + 2·N·H·(dq+dv)·T (the full T², though causal)
 *   mlp.gate        E·D · 2                                                      (BF16 always)
 *   mlp.experts     min(N·K, E) · 3·F·D · wb  (the experts touched), FLOPs 2·N·K·3·F·D
 *   shared_experts  3·F·D · wb
 *   mlp             gate + experts + shared_experts
 *   layer           2 · input_layernorm + self_attn + mlp
 *   lm_head         V·D · 2
 * plus the float32 activations in and out (2 · 4·N·D bytes: 0.03–1 % at decode). So at decode
 * bytes_per_second is, to within that, the achieved bandwidth of WEIGHT bytes read; at prefill
 * the figures to read are FLOP/s and pct_of_flops_ceiling. Not counted: the q_a/kv_a RMSNorm
 * weights (1280 BF16 values).
 *
 * Cache honesty: FP8 attention (28 MB) and shared-expert (25 MB) weights and the router (1 MB)
 * would sit in a 32 MB L3 between iterations, which a real 36-layer decode step never sees. So
 * each non-expert weight group is allocated in as many copies as it takes to span 4 × L3
 * (≥ 128 MiB; the router 128 copies, attention ≈ 5–10) and iteration i uses copy i mod copies;
 * the whole-layer and MoE cases also cycle through 32 inputs, so the router picks different
 * experts. The labels say how many copies rotate. */
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

#define N_INPUTS 32            /* distinct hidden states the decode cases cycle through */
#define PREFILL_TOKENS 128     /* tokens of the prefill cases */
#define SMOKE_PREFILL_TOKENS 4
#define CONTEXT_POSITIONS 4096 /* cached positions of the decode:ctx cases */
#define SMOKE_CONTEXT_POSITIONS 64
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
    float *inputs;             /* [max(N_INPUTS, prefill), D] */
    float *out, *h, *logits, *topk_weights; /* scratch, sized for the prefill */
    int64_t *topk_ids;
    m4_kv_cache cache;         /* one row of context_positions() + 1 positions, random latents */
} layer_variant;

/* The lm_head fixture: the [V, D] BF16 weight alone. */
typedef struct {
    m4_config cfg;
    int config_ok;
    char config_error[1600];
    uint8_t *mem;
    m4_weight w;
    float *input, *logits;
} head_fixture;

typedef enum { C_NORM, C_ATTN, C_ROUTER, C_EXPERTS, C_SHARED, C_MLP, C_LAYER, C_LM_HEAD, C_COUNT } case_kind;

typedef struct {
    layer_variant *v;          /* NULL for C_LM_HEAD */
    head_fixture *head;        /* C_LM_HEAD only */
    case_kind kind;
    int64_t tokens;            /* 1 = decode, else a prefill of this many tokens */
    int64_t context;           /* cached positions before the tokens (decode:ctx cases), else 0 */
    int threads;
} ref_case;

enum { PHASE_DECODE, PHASE_PREFILL, PHASE_CONTEXT, PHASE_COUNT };

/* Static storage: m4bench keeps pointers to the fixtures and cases for the whole run. */
static layer_variant variants[2] = {{.variant = "fp8", .linear_dtype = M4_DTYPE_F8_E4M3},
                                    {.variant = "bf16", .linear_dtype = M4_DTYPE_BF16}};
static head_fixture head;
static ref_case cases[2][PHASE_COUNT][C_COUNT][2];
static ref_case head_cases[2];

static int64_t prefill_tokens(void) { return m4bench_smoke() ? SMOKE_PREFILL_TOKENS : PREFILL_TOKENS; }
static int64_t context_positions(void) { return m4bench_smoke() ? SMOKE_CONTEXT_POSITIONS : CONTEXT_POSITIONS; }

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
    for (int i = 0; i < n; i++) m4bench_fill(tensors[i], seed + ((uint64_t)i << 40), tensors[i]->rows == 1);
}

static void variant_teardown(void *user) {
    layer_variant *v = user;
    for (int g = 0; g < GROUP_COUNT; g++) m4bench_free(v->group_mem[g]), v->group_mem[g] = NULL;
    m4bench_free(v->experts_mem), v->experts_mem = NULL;
    free(v->expert_scales[0]), free(v->expert_scales[1]);
    v->expert_scales[0] = v->expert_scales[1] = NULL;
    free(v->layers), v->layers = NULL;
    m4_kv_cache_free(&v->cache);
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
    const int64_t N = prefill_tokens(), rows = N > N_INPUTS ? N : N_INPUTS;

    v->layers = calloc((size_t)v->n_layers, sizeof *v->layers);
    v->experts_mem = m4bench_alloc(gate_up_bytes + down_bytes);
    v->inputs = malloc(sizeof(float) * (size_t)(rows * D));
    v->out = malloc(sizeof(float) * (size_t)(N * D));
    v->h = malloc(sizeof(float) * (size_t)(N * D));
    v->logits = malloc(sizeof(float) * (size_t)(N * E));
    v->topk_weights = malloc(sizeof(float) * (size_t)(N * K));
    v->topk_ids = malloc(sizeof(int64_t) * (size_t)(N * K));
    m4_error cache_err;
    int ok = v->layers && v->experts_mem && v->inputs && v->out && v->h && v->logits &&
             v->topk_weights && v->topk_ids && m4_kv_cache_init(&v->cache, t, 1, context_positions() + 1, &cache_err) == 0;
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
    m4bench_fill(&whole, (uint64_t)7 << 56, 0);
    for (int l = 0; l < v->n_layers; l++) {
        v->layers[l].moe = true;
        v->layers[l].experts_gate_up = gate_up;
        v->layers[l].experts_down = down;
    }

    /* inputs: hidden states with values in [-1, 1); the cached context's latents likewise */
    m4bench_fill_floats(v->inputs, (size_t)(rows * D), 0xABCDull);
    const size_t cached = (size_t)(context_positions() + 1);
    m4bench_fill_floats(v->cache.c_kv, cached * (size_t)t->kv_lora_rank, 0xC0DEull);
    m4bench_fill_floats(v->cache.k_rope, cached * (size_t)t->qk_rope_head_dim, 0xC0DFull);
    return 0;
}

/* ---- the lm_head ------------------------------------------------------------------------- */

static void head_teardown(void *user) {
    head_fixture *f = user;
    m4bench_free(f->mem), f->mem = NULL;
    free(f->input), free(f->logits);
    f->input = f->logits = NULL;
}

static int head_setup(void *user, char *err, size_t errsize) {
    head_fixture *f = user;
    if (!f->config_ok) {
        snprintf(err, errsize, "%s", f->config_error);
        return -1;
    }
    const int64_t V = f->cfg.text.vocab_size, D = f->cfg.text.hidden_size;
    f->mem = m4bench_alloc((size_t)(V * D) * 2);
    f->input = malloc(sizeof(float) * (size_t)(N_INPUTS * D));
    f->logits = malloc(sizeof(float) * (size_t)V);
    if (!f->mem || !f->input || !f->logits) {
        head_teardown(f);
        snprintf(err, errsize, "out of memory for the lm_head (%.2f GB)", (double)(V * D * 2) / 1e9);
        return -1;
    }
    f->w = (m4_weight){.dtype = M4_DTYPE_BF16, .rows = V, .cols = D, .data = f->mem, .scale = 1.0f};
    m4bench_fill(&f->w, (uint64_t)9 << 56, 0);
    m4bench_fill_floats(f->input, (size_t)(N_INPUTS * D), 0x1234ull);
    return 0;
}

/* ---- the cases ------------------------------------------------------------------------------ */

static int case_setup(void *user, char *err, size_t errsize) {
    const ref_case *c = user;
    m4bench_set_threads(c->threads);
    char text[96] = "";
    const layer_variant *v = c->v;
    const int g = c->kind == C_ATTN || c->kind == C_NORM ? GROUP_ATTN : c->kind == C_ROUTER ? GROUP_ROUTER
                : c->kind == C_SHARED ? GROUP_SHARED : -1;
    if (c->kind == C_LM_HEAD)
        snprintf(text, sizeof text, "inputs=%d", N_INPUTS);
    else if (g >= 0)
        snprintf(text, sizeof text, "copies=%d", v->copies[g]);
    else if (c->kind == C_LAYER || c->kind == C_MLP)
        snprintf(text, sizeof text, "copies=%d/%d/%d inputs=%d", v->copies[GROUP_ATTN],
                 v->copies[GROUP_ROUTER], v->copies[GROUP_SHARED], c->tokens == 1 ? N_INPUTS : 1);
    else
        snprintf(text, sizeof text, c->tokens == 1 ? "experts=4i..4i+3" : "experts=(4(i+t)+k) mod E");
    m4bench_label(text);
    return 0;
}

static int case_run(void *user, int64_t iteration, char *errbuf, size_t errsize) {
    const ref_case *c = user;
    m4_error err;
    int rc = 0;
    if (c->kind == C_LM_HEAD) {
        const int64_t D = c->head->cfg.text.hidden_size;
        m4_ref_linear(c->head->input + (iteration % N_INPUTS) * D, 1, &c->head->w, c->head->logits);
        m4bench_keep(c->head->logits);
        return 0;
    }
    layer_variant *v = c->v;
    const m4_text_config *t = &v->cfg.text;
    const int64_t D = t->hidden_size, E = t->n_routed_experts, K = t->num_experts_per_tok;
    const int64_t N = c->tokens;
    const m4_text_layer_weights *w = &v->layers[iteration % v->n_layers];
    const float *x = N == 1 ? v->inputs + (iteration % N_INPUTS) * D : v->inputs;
    switch (c->kind) {
    case C_NORM:
        m4_ref_rmsnorm(x, N, D, &w->input_layernorm, (float)t->rms_norm_eps, v->out);
        break;
    case C_ATTN:
        if (c->context) {     /* the token at position `context`, after that many cached ones */
            v->cache.length = c->context;
            const int64_t position = c->context;
            rc = m4_ref_mla_cached(t, w, x, 1, N, &position, NULL, v->softmax_scale, &v->cache, 0, v->out, &err);
        } else {
            rc = m4_ref_mla(t, w, x, 1, N, NULL, NULL, v->softmax_scale, v->out, NULL, &err);
        }
        break;
    case C_ROUTER:
        rc = m4_ref_router(t, w, x, N, v->logits, v->topk_ids, v->topk_weights, &err);
        break;
    case C_EXPERTS:
        for (int64_t i = 0; i < N; i++)
            for (int64_t k = 0; k < K; k++) {
                v->topk_ids[i * K + k] = ((iteration + i) * K + k) % E;
                v->topk_weights[i * K + k] = 1.0f / (float)K;
            }
        rc = m4_ref_experts(t, w, x, N, v->topk_ids, v->topk_weights, v->out, &err);
        break;
    case C_SHARED:
        rc = m4_ref_swiglu_mlp(x, N, &w->shared_gate_proj, &w->shared_up_proj, &w->shared_down_proj,
                               t->hidden_act, v->out, &err);
        break;
    case C_MLP:
        rc = m4_ref_mlp(t, w, x, N, v->out, &err);
        break;
    case C_LAYER:
        memcpy(v->h, x, sizeof(float) * (size_t)(N * D));
        rc = m4_ref_decoder_layer(t, w, v->h, 1, N, NULL, NULL, v->softmax_scale, &err);
        break;
    case C_LM_HEAD:
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
    const float *y;
    int64_t n;
    if (c->kind == C_LM_HEAD) {
        y = c->head->logits, n = c->head->cfg.text.vocab_size;
    } else {
        const layer_variant *v = c->v;
        y = c->kind == C_LAYER ? v->h : c->kind == C_ROUTER ? v->logits : v->out;
        n = c->tokens * (c->kind == C_ROUTER ? v->cfg.text.n_routed_experts : v->cfg.text.hidden_size);
    }
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(y[i])) {
            m4bench_label("WARNING: non-finite output");
            return;
        }
}

/* The registry's cost of the first component of `kind` for n tokens over T key positions, weight
 * width wb. */
static m4_cost registry_cost(const m4_config *cfg, m4_component_kind kind, int64_t n, int64_t T, int wb) {
    for (size_t i = 0; i < m4_component_count; i++)
        if (m4_components[i].kind == kind) return m4_components[i].cost(cfg, n, T, wb);
    return (m4_cost){0, 0};
}

static m4_cost sum(m4_cost a, m4_cost b) { return (m4_cost){a.flops + b.flops, a.bytes + b.bytes}; }

/* Work of one iteration at the variant's widths: projections and experts wb, norms and router
 * BF16 (so mlp and layer are sums, not the registry's one-width mlp/layer rows). */
static m4_cost case_cost(const m4_config *cfg, m4_dtype linear, case_kind kind, int64_t n, int64_t context) {
    const int wb = (int)m4_dtype_size(linear);
    m4_cost attn = registry_cost(cfg, M4_COMP_SELF_ATTN, n, context + n, wb);
    m4_cost router = registry_cost(cfg, M4_COMP_ROUTER, n, n, 2);
    m4_cost experts = registry_cost(cfg, M4_COMP_EXPERTS, n, n, wb);
    m4_cost shared = registry_cost(cfg, M4_COMP_SHARED_EXPERTS, n, n, wb);
    m4_cost norm = registry_cost(cfg, M4_COMP_INPUT_NORM, n, n, 2);
    m4_cost mlp = sum(sum(router, experts), shared);
    switch (kind) {
    case C_NORM: return norm;
    case C_ATTN: return attn;
    case C_ROUTER: return router;
    case C_EXPERTS: return experts;
    case C_SHARED: return shared;
    case C_MLP: return mlp;
    case C_LAYER: return sum(sum(norm, norm), sum(attn, mlp));
    case C_LM_HEAD: return registry_cost(cfg, M4_COMP_LM_HEAD, n, n, 2);
    case C_COUNT: break;
    }
    return (m4_cost){0, 0};
}

static const m4_component_kind comp_kind[C_COUNT] = {
    M4_COMP_INPUT_NORM, M4_COMP_SELF_ATTN, M4_COMP_ROUTER, M4_COMP_EXPERTS, M4_COMP_SHARED_EXPERTS,
    M4_COMP_MLP, M4_COMP_DECODER_LAYER, M4_COMP_LM_HEAD};

/* "text.layers.0.self_attn" etc.: the registry's dotted name of the kind, layer 0. */
static void component_name(case_kind k, char *buf, size_t size) {
    const char *pattern = "?";
    for (size_t i = 0; i < m4_component_count; i++)
        if (m4_components[i].kind == comp_kind[k]) {
            pattern = m4_components[i].name;
            break;
        }
    m4_component_instance(pattern, 0, buf, size);
}

static void register_case(ref_case *c, const m4bench_fixture *fixture, const m4_config *cfg, int config_ok,
                          const char *variant, m4_dtype linear) {
    char component[96], name[192], label[192], ceiling[64], flops_ceiling[64], phase[32];
    component_name(c->kind, component, sizeof component);
    if (c->context) snprintf(phase, sizeof phase, "decode:ctx%lld", (long long)c->context);
    else if (c->tokens == 1) snprintf(phase, sizeof phase, "decode");
    else snprintf(phase, sizeof phase, "prefill:%lld", (long long)c->tokens);
    snprintf(name, sizeof name, "ref/%s/%s/%s/threads:%d", component, phase, variant, c->threads);
    snprintf(ceiling, sizeof ceiling, "cpu_read/threads:%d", c->threads);
    snprintf(flops_ceiling, sizeof flops_ceiling, "cpu_fp32_fma/threads:%d", c->threads);
    const int fp8 = linear == M4_DTYPE_F8_E4M3;
    const char *weights = c->kind == C_ROUTER || c->kind == C_NORM || c->kind == C_LM_HEAD ? "bf16" : variant;
    const char *note = !fp8 ? ""
                     : c->kind == C_ATTN ? " (q_a/kv_a norms bf16)"
                     : c->kind == C_MLP ? " (router bf16)"
                     : c->kind == C_LAYER ? " (norms, router bf16)" : "";
    snprintf(label, sizeof label, "reference fp32; weights %s%s; N=%lld T=%lld", weights, note,
             (long long)c->tokens, (long long)(c->context + c->tokens));
    m4_cost cost = config_ok ? case_cost(cfg, linear, c->kind, c->tokens, c->context) : (m4_cost){0, 0};
    m4bench_register(&(m4bench_case){
        .name = name,
        .fixture = fixture,
        .setup = case_setup,
        .run = case_run,
        .teardown = case_teardown,
        .user = c,
        .bytes = cost.bytes,
        .flops = cost.flops,
        .label = label,
        .ceiling = ceiling,
        .flops_ceiling = flops_ceiling,
    });
}

static int load_config(const char *path, m4_config *cfg, char *error, size_t size) {
    m4_error err;
    if (m4_config_load(path, cfg, &err) != 0) {
        snprintf(error, size, "config %s: %s", path, err.msg);
        return 0;
    }
    cfg->text.num_hidden_layers = 1;
    cfg->text.first_k_dense_replace = 0;
    return 1;
}

void m4bench_suite_reference(void) {
    static const m4bench_fixture fixtures[2] = {
        {"fp8 layer", variant_setup, variant_teardown, &variants[0]},
        {"bf16 layer", variant_setup, variant_teardown, &variants[1]},
    };
    static const m4bench_fixture head_fix = {"lm_head", head_setup, head_teardown, &head};
    const char *path = getenv("M4BENCH_CONFIG");
    if (!path || !*path) path = M4BENCH_CONFIG;
    const int all = m4bench_all_threads();
    const int thread_counts[2] = {1, all};
    const int n_threads = all > 1 ? 2 : 1;
    m4bench_context("m4_reference_config", path);
    char value[32];
    snprintf(value, sizeof value, "%lld", (long long)prefill_tokens());
    m4bench_context("m4_prefill_tokens", value);

    for (int vi = 0; vi < 2; vi++) {
        layer_variant *v = &variants[vi];
        v->config_ok = load_config(path, &v->cfg, v->config_error, sizeof v->config_error);
        if (v->config_ok) v->softmax_scale = m4_ref_mla_softmax_scale(&v->cfg.text, M4_SOFTMAX_SCALE_BASE);
        for (int phase = 0; phase < PHASE_COUNT; phase++)
            for (int k = 0; k < C_COUNT; k++) {
                if (k == C_LM_HEAD || (phase == PHASE_CONTEXT && k != C_ATTN)) continue;
                /* decode (with or without context): 1 thread and all; prefill: all only */
                for (int ti = phase == PHASE_PREFILL ? n_threads - 1 : 0; ti < n_threads; ti++) {
                    ref_case *c = &cases[vi][phase][k][ti];
                    *c = (ref_case){.v = v, .kind = (case_kind)k,
                                    .tokens = phase == PHASE_PREFILL ? prefill_tokens() : 1,
                                    .context = phase == PHASE_CONTEXT ? context_positions() : 0,
                                    .threads = thread_counts[ti]};
                    register_case(c, &fixtures[vi], &v->cfg, v->config_ok, v->variant, v->linear_dtype);
                }
            }
    }
    head.config_ok = load_config(path, &head.cfg, head.config_error, sizeof head.config_error);
    for (int ti = 0; ti < n_threads; ti++) {
        ref_case *c = &head_cases[ti];
        *c = (ref_case){.head = &head, .kind = C_LM_HEAD, .tokens = 1, .threads = thread_counts[ti]};
        register_case(c, &head_fix, &head.cfg, head.config_ok, "bf16", M4_DTYPE_BF16);
    }
}
