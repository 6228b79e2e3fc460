/* `mistral4 inspect`'s accounting (cli/inspect.c) checked as numbers, not text: the published
 * parameter count of Mistral-Small-4-119B-2603 (MODEL.md §5.4) and its split by part, the active
 * parameters per text token, the per-token FLOPs and bytes, and the opening of a checkpoint
 * (dtypes read from disk, legacy tensor names, absent optional FP8 companions).
 *
 * test_tiny_checkpoint also leaves a small checkpoint in the build tree
 * (tests/inspect-tiny-checkpoint) for the command-line tests in cli_tests.cmake. */
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "inspect.h"
#include "weights.h"

#define FIXTURE "tests/fixtures/mistral-small-4-119b-2603.config.json"

/* The published model, MODEL.md §5.2: per text layer. */
#define LAYERS 36
#define ATTN_PER_LAYER (1024LL * 4096 + 1024 + 4096LL * 1024 + 320LL * 4096 + 256 + 6144LL * 256 + 4096LL * 4096)
#define KV_B_PER_LAYER (6144LL * 256)
#define NORMS_PER_LAYER (2LL * 4096)
#define ROUTER_PER_LAYER (128LL * 4096)
#define SHARED_PER_LAYER (3LL * 2048 * 4096)
#define ROUTED_PER_LAYER (128LL * 4096 * 4096 + 128LL * 4096 * 2048)
#define EMBED (131072LL * 4096)
/* 8 FP8 linears × (weight_scale_inv + activation_scale) + 2 expert stacks × ([E,1,1] + [E]) */
#define SCALES_PER_LAYER (8LL * 2 + 2LL * (128 + 128))

typedef struct {
    m4_config cfg;
    m4_tensor_spec *specs;
    size_t n;
} fixture;

static int fixture_setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    char *path = m4t_source_path(FIXTURE);
    m4_error err = {{0}};
    if (m4_config_load(path, &f->cfg, &err) != 0) fail_msg("%s", err.msg);
    if (m4_weight_specs(&f->cfg, NULL, &f->specs, &f->n, &err) != 0) fail_msg("%s", err.msg);
    free(path);
    *state = f;
    return 0;
}

static int fixture_teardown(void **state) {
    fixture *f = *state;
    free(f->specs);
    free(f);
    return 0;
}

static void test_published_params(void **state) {
    const fixture *f = *state;
    inspect_params p;
    inspect_count_params(f->specs, f->n, &p);
    assert_int_equal(p.total, 119401317952LL);
    assert_int_equal(p.text, 118972826624LL);
    assert_int_equal(p.vision, 403305472LL);
    assert_int_equal(p.projector, 25166848LL);
    assert_int_equal(p.fp8_scales, 19008LL);
    assert_int_equal(p.text + p.vision + p.projector + p.fp8_scales, p.total);

    assert_int_equal(p.by_part[M4_PART_EMBED], EMBED);
    assert_int_equal(p.by_part[M4_PART_ATTENTION], LAYERS * ATTN_PER_LAYER);
    assert_int_equal(p.by_part[M4_PART_NORM], LAYERS * NORMS_PER_LAYER + 4096);
    assert_int_equal(p.by_part[M4_PART_ROUTER], LAYERS * ROUTER_PER_LAYER);
    assert_int_equal(p.by_part[M4_PART_SHARED_EXPERT], LAYERS * SHARED_PER_LAYER);
    assert_int_equal(p.by_part[M4_PART_ROUTED_EXPERTS], LAYERS * ROUTED_PER_LAYER);
    assert_int_equal(p.by_part[M4_PART_DENSE_MLP], 0);
    assert_int_equal(p.by_part[M4_PART_LM_HEAD], EMBED);
    assert_int_equal(p.by_part[M4_PART_FP8_SCALES], LAYERS * SCALES_PER_LAYER);
}

static void test_published_active(void **state) {
    const fixture *f = *state;
    inspect_params p;
    inspect_active a;
    m4_error err = {{0}};
    inspect_count_params(f->specs, f->n, &p);
    if (inspect_active_params(&f->cfg, f->specs, f->n, &a, &err) != 0) fail_msg("%s", err.msg);

    assert_int_equal(a.experts_per_token, 4);
    assert_int_equal(a.routed_experts, 128);
    assert_int_equal(a.routed_total, p.by_part[M4_PART_ROUTED_EXPERTS]);
    assert_int_equal(a.by_part[M4_PART_EMBED], 4096); /* one row */
    assert_int_equal(a.by_part[M4_PART_ATTENTION], p.by_part[M4_PART_ATTENTION]);
    assert_int_equal(a.by_part[M4_PART_NORM], p.by_part[M4_PART_NORM]);
    assert_int_equal(a.by_part[M4_PART_ROUTER], p.by_part[M4_PART_ROUTER]);
    assert_int_equal(a.by_part[M4_PART_SHARED_EXPERT], p.by_part[M4_PART_SHARED_EXPERT]);
    assert_int_equal(a.by_part[M4_PART_ROUTED_EXPERTS], p.by_part[M4_PART_ROUTED_EXPERTS] * 4 / 128);
    assert_int_equal(a.by_part[M4_PART_ROUTED_EXPERTS], 3623878656LL);
    assert_int_equal(a.by_part[M4_PART_LM_HEAD], EMBED);
    /* all 8 per-tensor linears' scalars, 4/128 of the per-expert ones */
    assert_int_equal(a.by_part[M4_PART_FP8_SCALES], LAYERS * (8 * 2 + 2 * (128 + 128) * 4 / 128));
    assert_int_equal(a.by_part[M4_PART_VISION], 0);
    assert_int_equal(a.by_part[M4_PART_PROJECTOR], 0);
    assert_int_equal(a.vision_per_patch, 403305472LL);
    assert_int_equal(a.projector_per_patch, 25166848LL);

    int64_t sum = 0;
    for (int part = 0; part < M4_PART_COUNT; part++) sum += a.by_part[part];
    assert_int_equal(a.total, sum);
    assert_int_equal(a.total, 6095722624LL);
}

static void test_published_per_token(void **state) {
    const fixture *f = *state;
    m4_dtype *dtypes = calloc(f->n, sizeof *dtypes);
    assert_non_null(dtypes);
    for (size_t i = 0; i < f->n; i++) dtypes[i] = inspect_inferred_dtype(&f->specs[i], M4_DTYPE_BF16);
    inspect_cost c;
    m4_error err = {{0}};
    const int64_t T = 4096;
    if (inspect_per_token(&f->cfg, f->specs, dtypes, f->n, T, M4_DTYPE_BF16, &c, &err) != 0) fail_msg("%s", err.msg);

    const inspect_cost_row *r = c.rows;
    assert_int_equal(r[INSPECT_COST_EMBED].flops, 0);
    assert_int_equal(r[INSPECT_COST_EMBED].weight_bytes, 4096 * 2);
    /* projections: every attention weight but kv_b, 2 FLOPs each, FP8 except the two norms */
    int64_t proj = ATTN_PER_LAYER - KV_B_PER_LAYER, proj_norms = 1024 + 256;
    assert_int_equal(r[INSPECT_COST_ATTN_PROJ].flops, LAYERS * 2 * proj);
    assert_int_equal(r[INSPECT_COST_ATTN_PROJ].weight_bytes, LAYERS * ((proj - proj_norms) * 1 + proj_norms * 2));
    /* HF re-expands the T cached latents: 2·T·Rkv·H·(dn+dv) per layer */
    assert_int_equal(r[INSPECT_COST_ATTN_KV_B].flops, LAYERS * 2 * T * 256 * 32 * (64 + 128));
    assert_int_equal(r[INSPECT_COST_ATTN_KV_B].weight_bytes, LAYERS * KV_B_PER_LAYER);
    assert_int_equal(r[INSPECT_COST_ATTN_SCORES].flops, LAYERS * 2 * 32 * (128 + 128) * T);
    assert_int_equal(r[INSPECT_COST_KV_CACHE].cache_bytes, LAYERS * T * (256 + 64) * 2);
    assert_int_equal(r[INSPECT_COST_ROUTED].flops, 2 * 3623878656LL);
    assert_int_equal(r[INSPECT_COST_ROUTED].weight_bytes, 3623878656LL); /* FP8: 1 byte */
    assert_int_equal(r[INSPECT_COST_SHARED].weight_bytes, LAYERS * SHARED_PER_LAYER);
    assert_int_equal(r[INSPECT_COST_ROUTER].weight_bytes, LAYERS * ROUTER_PER_LAYER * 2);
    assert_int_equal(r[INSPECT_COST_LM_HEAD].flops, 2 * EMBED);
    assert_int_equal(r[INSPECT_COST_LM_HEAD].weight_bytes, 2 * EMBED);
    assert_int_equal(r[INSPECT_COST_DENSE_MLP].flops, 0);
    assert_int_equal(r[INSPECT_COST_FP8_SCALES].weight_bytes, 4 * LAYERS * (8 * 2 + 2 * (128 + 128) * 4 / 128));

    int64_t flops = 0, wbytes = 0, cbytes = 0;
    for (int i = 0; i < INSPECT_COST_COUNT; i++) {
        flops += r[i].flops, wbytes += r[i].weight_bytes, cbytes += r[i].cache_bytes;
        assert_non_null(inspect_cost_name((inspect_cost_component)i));
    }
    assert_int_equal(c.total_flops, flops);
    assert_int_equal(c.total_weight_bytes, wbytes);
    assert_int_equal(c.total_cache_bytes, cbytes);
    assert_int_equal(c.total_bytes, wbytes + cbytes);
    assert_int_equal(c.attention_flops, r[INSPECT_COST_ATTN_PROJ].flops + r[INSPECT_COST_ATTN_KV_B].flops +
                                            r[INSPECT_COST_ATTN_SCORES].flops);
    /* absorbed: kv_b once (folded into q and o), scores over Rkv + dr, values over Rkv */
    assert_int_equal(c.attention_flops_absorbed,
                     LAYERS * (2 * proj + 2 * KV_B_PER_LAYER + 2 * 32 * T * (256 + 64) + 2 * 32 * T * 256));

    /* the context only changes the attention rows */
    inspect_cost c1;
    if (inspect_per_token(&f->cfg, f->specs, dtypes, f->n, 1, M4_DTYPE_BF16, &c1, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(c1.rows[INSPECT_COST_ATTN_KV_B].flops, 2 * LAYERS * KV_B_PER_LAYER);
    assert_int_equal(c1.rows[INSPECT_COST_ROUTED].flops, r[INSPECT_COST_ROUTED].flops);
    assert_int_equal(inspect_per_token(&f->cfg, f->specs, dtypes, f->n, 0, M4_DTYPE_BF16, &c1, &err), -1);
    free(dtypes);
}

/* Issue #18: `inspect --gpus N`, the expert-parallel plan of the published config, against bytes
 * worked out by hand from the config's fields (dtypes as the config implies them: FP8 linears
 * F8_E4M3 codes with F32 weight_scale_inv and activation_scale scalars, per-expert scales [E]
 * and [E,1,1], the rest bf16 since "dtype" is bfloat16 and lm_head, vision tower and projector
 * are in modules_to_not_convert):
 *   D = hidden_size 4096, V = vocab_size 131072, L = 36 layers, all MoE (first_k_dense_replace 0),
 *   E = 128 routed experts, F = moe_intermediate_size 2048, 1 shared expert, Rq = 1024,
 *   Rkv = 256, dr = qk_rope 64, dn = qk_nope 64, dv = 128, H = 32 heads.
 *
 * Weights as stored, replicated on every GPU, per text layer:
 *   FP8 q_a Rq·D 4,194,304 + q_b H·(dn+dr)·Rq 4,194,304 + kv_a (Rkv+dr)·D 1,310,720
 *       + kv_b H·(dn+dv)·Rkv 1,572,864 + o D·H·dv 16,777,216                       28,049,408
 *   bf16 q_a and kv_a norms (Rq + Rkv)·2                                                 2,560
 *   bf16 input and post-attention norms 2·D·2                                           16,384
 *   bf16 router E·D·2                                                                1,048,576
 *   FP8 shared expert gate, up, down 3·F·D                                          25,165,824
 *   F32 scalars of those 8 FP8 linears, 8 × (scale_inv + activation_scale) × 4              64
 *                                                                             sum   54,282,816
 *   × 36 layers = 1,954,181,376; + final norm D·2 8,192 + embed V·D·2 1,073,741,824
 *   + lm_head V·D·2 1,073,741,824                                       text = 4,101,673,216
 *   vision tower bf16: patch conv 1024·3·14·14 602,112 + ln_pre 1024 + 24 layers × (2·1024
 *     norms + 4·1024² attention + 3·4096·1024 MLP = 16,779,264) = 403,305,472 × 2 = 806,610,944
 *   projector bf16: norm 1024 + merger 1024·(1024·2²) + linear_1 4096·1024 + linear_2 4096²
 *     = 25,166,848 × 2 = 50,333,696
 *   replicated = 4,101,673,216 + 806,610,944 + 50,333,696 = 4,958,617,856
 * One routed expert, per layer: FP8 gate_up 2F·D 16,777,216 + down D·F 8,388,608, F32 scale_inv
 *   and activation_scale of both stacks 4 × 4 = 16 → 25,165,840; × 36 = 905,970,240
 *   (all 128: 115,964,190,720; with the replicated 120,922,808,576 ≈ the published 121 GB)
 * In bf16 (2 bytes a weight, no scales): 119,401,317,952 params − 19,008 scales = 119,401,298,944
 *   → 238,802,597,888 bytes; one expert 25,165,824 × 2 × 36 = 1,811,939,328, all 128
 *   231,928,233,984; replicated = 238,802,597,888 − 231,928,233,984 = 6,874,363,904, of which
 *   vision 806,610,944 and projector 50,333,696 as above, text 6,017,419,264
 * Latent cache at T = 4096, bf16: L·T·(Rkv + dr)·2 = 36 · 4096 · 320 · 2 = 94,371,840
 * Usable: H100 78 GiB = 83,751,862,272; H200 139 GiB = 149,250,113,536.
 * Shares (largest GPU = ceil(E/N) experts):
 *   N=1 as stored 4,958,617,856 + 128 · 905,970,240 + 94,371,840 = 121,017,180,416: H200 only
 *   N=2 as stored + 64 experts = 63,035,085,056: fits an H100
 *   N=3 bf16, 43 experts: 6,874,363,904 + 43 · 1,811,939,328 + 94,371,840 = 84,882,126,848 >
 *       83,751,862,272, while the 42-expert GPU 2 would fit (83,070,187,520): no H100
 *   N=4 bf16, 32: 64,950,794,240 fits an H100; N=2 bf16, 64: 122,932,852,736 fits an H200;
 *   N=1 bf16 238,896,969,728 fits neither.
 * All-reduce: one per MoE layer of D · 2 = 8,192 bytes per token; 36 layers = 294,912 bytes; each
 *   GPU's ring traffic 2(N−1)/N of it: N=2 294,912, N=4 442,368, N=5 471,859.2. */
#define PLAN_REPLICATED 4958617856LL
#define PLAN_PER_EXPERT 905970240LL
#define PLAN_BF16_REPLICATED 6874363904LL
#define PLAN_BF16_PER_EXPERT 1811939328LL
#define PLAN_CACHE 94371840LL
#define H100_USABLE 83751862272LL
#define H200_USABLE 149250113536LL

static void test_published_gpu_plan(void **state) {
    const fixture *f = *state;
    m4_dtype *dtypes = calloc(f->n, sizeof *dtypes);
    assert_non_null(dtypes);
    for (size_t i = 0; i < f->n; i++) dtypes[i] = inspect_inferred_dtype(&f->specs[i], M4_DTYPE_BF16);
    m4_error err = {{0}};

    /* the cache is the one the per-token cost counts */
    inspect_cost c;
    if (inspect_per_token(&f->cfg, f->specs, dtypes, f->n, 4096, M4_DTYPE_BF16, &c, &err) != 0) fail_msg("%s", err.msg);
    const int64_t cache = c.rows[INSPECT_COST_KV_CACHE].cache_bytes;
    assert_int_equal(cache, PLAN_CACHE);

    /* by hand above: text, vision, projector, replicated, one expert, all weights */
    const inspect_weight_split want[INSPECT_STORAGE_COUNT] = {
        [INSPECT_STORAGE_AS_STORED] = {4101673216LL, 806610944LL, 50333696LL, PLAN_REPLICATED, PLAN_PER_EXPERT, 128},
        [INSPECT_STORAGE_BF16] = {6017419264LL, 806610944LL, 50333696LL, PLAN_BF16_REPLICATED, PLAN_BF16_PER_EXPERT,
                                  128},
    };
    const int64_t all_weights[INSPECT_STORAGE_COUNT] = {120922808576LL, 238802597888LL};
    inspect_weight_split split[INSPECT_STORAGE_COUNT];
    for (int s = 0; s < INSPECT_STORAGE_COUNT; s++) {
        inspect_weight_split *got = &split[s];
        if (inspect_split_weights(&f->cfg, f->specs, dtypes, f->n, (inspect_storage)s, got, &err) != 0)
            fail_msg("%s", err.msg);
        assert_int_equal(got->replicated_text, want[s].replicated_text);
        assert_int_equal(got->replicated_vision, want[s].replicated_vision);
        assert_int_equal(got->replicated_projector, want[s].replicated_projector);
        assert_int_equal(got->replicated, want[s].replicated);
        assert_int_equal(got->per_expert, want[s].per_expert);
        assert_int_equal(got->experts, want[s].experts);
        assert_int_equal(got->replicated + 128 * got->per_expert, all_weights[s]);
    }
    const inspect_weight_split *w = &split[INSPECT_STORAGE_AS_STORED], *b = &split[INSPECT_STORAGE_BF16];

    const struct {
        const inspect_weight_split *w;
        int64_t gpus, rank, first, experts, total;
        bool h100, h200;
    } shares[] = {
        {w, 1, 0, 0, 128, 121017180416LL, false, true},
        {w, 2, 0, 0, 64, 63035085056LL, true, true},
        {w, 2, 1, 64, 64, 63035085056LL, true, true},
        {b, 1, 0, 0, 128, 238896969728LL, false, false},
        {b, 2, 1, 64, 64, 122932852736LL, false, true},
        {b, 3, 0, 0, 43, 84882126848LL, false, true},  /* the largest share decides: no H100 */
        {b, 3, 1, 43, 43, 84882126848LL, false, true},
        {b, 3, 2, 86, 42, 83070187520LL, true, true},  /* the smallest alone would fit */
        {b, 4, 3, 96, 32, 64950794240LL, true, true},
        /* 128 = 5·25 + 3: GPUs 0..2 hold 26, GPUs 3..4 hold 25 */
        {w, 5, 2, 52, 26, PLAN_REPLICATED + 26 * PLAN_PER_EXPERT + PLAN_CACHE, true, true},
        {w, 5, 3, 78, 25, PLAN_REPLICATED + 25 * PLAN_PER_EXPERT + PLAN_CACHE, true, true},
        {w, 5, 4, 103, 25, PLAN_REPLICATED + 25 * PLAN_PER_EXPERT + PLAN_CACHE, true, true},
        /* 128 = 6·21 + 2 and 7·18 + 2 */
        {w, 6, 1, 22, 22, PLAN_REPLICATED + 22 * PLAN_PER_EXPERT + PLAN_CACHE, true, true},
        {w, 6, 2, 44, 21, PLAN_REPLICATED + 21 * PLAN_PER_EXPERT + PLAN_CACHE, true, true},
        {b, 7, 6, 110, 18, PLAN_BF16_REPLICATED + 18 * PLAN_BF16_PER_EXPERT + PLAN_CACHE, true, true},
        {w, 128, 127, 127, 1, PLAN_REPLICATED + PLAN_PER_EXPERT + PLAN_CACHE, true, true},
    };
    for (size_t i = 0; i < sizeof shares / sizeof shares[0]; i++) {
        inspect_gpu_share g;
        if (inspect_gpu_share_of(shares[i].w, cache, shares[i].gpus, shares[i].rank, &g, &err) != 0)
            fail_msg("%s", err.msg);
        assert_int_equal(g.first_expert, shares[i].first);
        assert_int_equal(g.experts, shares[i].experts);
        assert_int_equal(g.cache_bytes, PLAN_CACHE);
        assert_int_equal(g.weight_bytes + g.cache_bytes, g.total_bytes);
        assert_int_equal(g.total_bytes, shares[i].total);
        assert_int_equal(g.total_bytes <= H100_USABLE, shares[i].h100);
        assert_int_equal(g.total_bytes <= H200_USABLE, shares[i].h200);
    }

    assert_string_equal(inspect_gpu_cards[0].name, "H100");
    assert_int_equal(inspect_gpu_cards[0].usable_bytes, H100_USABLE);
    assert_string_equal(inspect_gpu_cards[1].name, "H200");
    assert_int_equal(inspect_gpu_cards[1].usable_bytes, H200_USABLE);
    assert_int_equal(inspect_fewest_gpus(w, cache, H100_USABLE), 2);
    assert_int_equal(inspect_fewest_gpus(w, cache, H200_USABLE), 1);
    assert_int_equal(inspect_fewest_gpus(b, cache, H100_USABLE), 4);
    assert_int_equal(inspect_fewest_gpus(b, cache, H200_USABLE), 2);
    assert_int_equal(inspect_fewest_gpus(w, cache, PLAN_REPLICATED), 0); /* not even one expert each */

    inspect_expert_comm m;
    inspect_expert_comm_of(&f->cfg, f->specs, f->n, 2, &m);
    assert_int_equal(m.moe_layers, 36);
    assert_int_equal(m.hidden_size, 4096);
    assert_int_equal(m.message_bytes_per_layer, 8192);
    assert_int_equal(m.message_bytes, 294912);
    assert_float_equal(m.bus_bytes_per_gpu, 294912.0, 0.0);
    inspect_expert_comm_of(&f->cfg, f->specs, f->n, 4, &m);
    assert_float_equal(m.bus_bytes_per_gpu, 442368.0, 0.0);
    inspect_expert_comm_of(&f->cfg, f->specs, f->n, 5, &m);
    assert_float_equal(m.bus_bytes_per_gpu, 471859.2, 1e-6);
    inspect_expert_comm_of(&f->cfg, f->specs, f->n, 1, &m);
    assert_float_equal(m.bus_bytes_per_gpu, 0.0, 0.0);
    free(dtypes);
}

/* N outside 1 .. E and a rank outside 0 .. N−1 are refused with the reason. */
static void test_gpu_share_errors(void **state) {
    (void)state;
    const inspect_weight_split w = {.replicated = 10, .per_expert = 3, .experts = 128};
    inspect_gpu_share g;
    m4_error err = {{0}};
    assert_int_equal(inspect_gpu_share_of(&w, 0, 0, 0, &g, &err), -1);
    m4t_assert_contains(err.msg, "0 GPUs");
    assert_int_equal(inspect_gpu_share_of(&w, 0, 129, 0, &g, &err), -1);
    m4t_assert_contains(err.msg, "129 GPUs: expert parallelism gives each GPU at least one of the 128 routed experts");
    assert_int_equal(inspect_gpu_share_of(&w, 0, 4, 4, &g, &err), -1);
    m4t_assert_contains(err.msg, "GPU 4 of 4");
    const inspect_weight_split huge = {.replicated = INT64_MAX - 8, .per_expert = 3, .experts = 4};
    assert_int_equal(inspect_gpu_share_of(&huge, 0, 1, 0, &g, &err), -1);
    m4t_assert_contains(err.msg, "exceed 2^63 - 1");
    assert_int_equal(g.total_bytes, 0);
}

static void test_softmax_scale(void **state) {
    const fixture *f = *state;
    inspect_softmax_scale s;
    inspect_softmax(&f->cfg, &s);
    assert_float_equal(s.base, 0.08838834764831845, 1e-15);
    assert_true(s.has_mscale_rule);
    assert_float_equal(s.mscale, 1.4852030263919618, 1e-12);
    assert_float_equal(s.with_mscale, 0.19496949473302969, 1e-12);
}

static void test_dtype_names(void **state) {
    (void)state;
    m4_dtype t;
    assert_int_equal(inspect_dtype_from_config_name("bfloat16", &t), 0);
    assert_int_equal(t, M4_DTYPE_BF16);
    assert_int_equal(inspect_dtype_from_config_name("torch.float16", &t), 0);
    assert_int_equal(t, M4_DTYPE_F16);
    assert_int_equal(inspect_dtype_from_config_name("float32", &t), 0);
    assert_int_equal(t, M4_DTYPE_F32);
    assert_int_equal(inspect_dtype_from_config_name("", &t), -1);
    assert_int_equal(inspect_dtype_from_config_name("int4", &t), -1);
    assert_int_equal(inspect_dtype_from_config_name(NULL, &t), -1);

    m4_tensor_spec s = {.kind = M4_SPEC_WEIGHT, .fp8 = true};
    assert_int_equal(inspect_inferred_dtype(&s, M4_DTYPE_BF16), M4_DTYPE_F8_E4M3);
    s.fp8 = false;
    assert_int_equal(inspect_inferred_dtype(&s, M4_DTYPE_BF16), M4_DTYPE_BF16);
    s.kind = M4_SPEC_SCALE;
    assert_int_equal(inspect_inferred_dtype(&s, M4_DTYPE_BF16), M4_DTYPE_F32);
}

/* ---- a tiny checkpoint on disk ---------------------------------------------------------------- */

/* Multimodal, FP8, one dense layer then one MoE layer, two vision layers. */
static const char *tiny_config =
    "{\"architectures\": [\"Mistral3ForConditionalGeneration\"], \"model_type\": \"mistral3\",\n"
    " \"dtype\": \"bfloat16\", \"image_token_index\": 10, \"multimodal_projector_bias\": false,\n"
    " \"projector_hidden_act\": \"gelu\", \"spatial_merge_size\": 2, \"tie_word_embeddings\": false,\n"
    " \"vision_feature_layer\": -1,\n"
    " \"quantization_config\": {\"quant_method\": \"fp8\", \"activation_scheme\": \"static\",\n"
    "   \"weight_block_size\": null,\n"
    "   \"modules_to_not_convert\": [\"lm_head\", \"model.vision_tower\", \"model.multi_modal_projector\"]},\n"
    " \"text_config\": {\"model_type\": \"mistral4\", \"vocab_size\": 64, \"hidden_size\": 32,\n"
    "   \"intermediate_size\": 48, \"moe_intermediate_size\": 16, \"num_hidden_layers\": 3,\n"
    "   \"num_attention_heads\": 2, \"num_key_value_heads\": 2, \"n_shared_experts\": 1,\n"
    "   \"n_routed_experts\": 4, \"num_experts_per_tok\": 2, \"kv_lora_rank\": 16, \"q_lora_rank\": 24,\n"
    "   \"qk_rope_head_dim\": 8, \"qk_nope_head_dim\": 8, \"v_head_dim\": 16, \"n_group\": 1,\n"
    "   \"topk_group\": 1, \"first_k_dense_replace\": 1, \"norm_topk_prob\": true, \"hidden_act\": \"silu\",\n"
    "   \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-05, \"tie_word_embeddings\": false,\n"
    "   \"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 10000.0, \"factor\": 4.0,\n"
    "     \"original_max_position_embeddings\": 1024, \"beta_fast\": 32.0, \"beta_slow\": 1.0,\n"
    "     \"mscale\": 1.0, \"mscale_all_dim\": 1.0, \"llama_4_scaling_beta\": 0.1}},\n"
    " \"vision_config\": {\"model_type\": \"pixtral\", \"hidden_size\": 16, \"intermediate_size\": 32,\n"
    "   \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"head_dim\": 8, \"num_channels\": 3,\n"
    "   \"image_size\": 56, \"patch_size\": 14, \"hidden_act\": \"silu\",\n"
    "   \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}}}\n";

/* The legacy VLM spelling of a canonical name (weights.h), so the test also covers that path. */
static void legacy_name(const char *canonical, char *out, size_t size) {
    static const char *map[][2] = {
        {"model.language_model.", "language_model.model."},
        {"lm_head.", "language_model.lm_head."},
        {"model.vision_tower.", "vision_tower."},
        {"model.multi_modal_projector.", "multi_modal_projector."},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        size_t n = strlen(map[i][0]);
        if (strncmp(canonical, map[i][0], n) == 0) {
            snprintf(out, size, "%s%s", map[i][1], canonical + n);
            return;
        }
    }
    snprintf(out, size, "%s", canonical);
}

static bool is_norm(const char *name) { return strstr(name, "norm.weight") != NULL; }

/* Writes config.json + model.safetensors into dir: norms stored F32 (not the config's BF16),
 * FP8 weights F8_E4M3 with their weight_scale_inv, activation scales left out. Returns the
 * number of tensors written. */
static size_t write_tiny_checkpoint(const char *dir, const m4_config *cfg) {
    char *config_path = m4t_join(dir, "config.json");
    m4t_write_text(config_path, tiny_config);
    free(config_path);

    m4_tensor_spec *specs;
    size_t n, written = 0;
    m4_error err = {{0}};
    if (m4_weight_specs(cfg, NULL, &specs, &n, &err) != 0) fail_msg("%s", err.msg);
    m4t_tensor *t = calloc(n, sizeof *t);
    char(*names)[192] = calloc(n, sizeof *names);
    assert_non_null(t);
    assert_non_null(names);
    for (size_t i = 0; i < n; i++) {
        const m4_tensor_spec *s = &specs[i];
        if (s->kind == M4_SPEC_ACT_SCALE) continue;
        m4t_tensor *w = &t[written++];
        legacy_name(s->name, names[i], sizeof names[i]);
        w->name = names[i];
        w->dtype = s->kind == M4_SPEC_SCALE || is_norm(s->name) ? "F32" : s->fp8 ? "F8_E4M3" : "BF16";
        w->ndim = s->ndim;
        memcpy(w->shape, s->shape, sizeof w->shape);
        size_t elem = strcmp(w->dtype, "F32") == 0 ? 4 : strcmp(w->dtype, "BF16") == 0 ? 2 : 1;
        w->nbytes = (size_t)inspect_numel(s) * elem;
        float *data = calloc(w->nbytes ? w->nbytes : 1, 1);
        assert_non_null(data);
        if (s->kind == M4_SPEC_SCALE)
            for (int64_t k = 0; k < inspect_numel(s); k++) data[k] = 1.0f;
        w->data = data;
    }
    char *st_path = m4t_join(dir, "model.safetensors");
    m4t_write_safetensors(st_path, t, written);
    free(st_path);
    for (size_t i = 0; i < written; i++) free((void *)t[i].data);
    free(t);
    free(names);
    free(specs);
    return written;
}

static void make_dir(const char *path) {
    if (mkdir(path, 0777) != 0 && errno != EEXIST) fail_msg("cannot create %s: %s", path, strerror(errno));
}

static void test_tiny_checkpoint(void **state) {
    (void)state;
    m4_config cfg;
    m4_error err = {{0}};
    if (m4_config_parse(tiny_config, "tiny config", &cfg, &err) != 0) fail_msg("%s", err.msg);

    /* Left in the build tree for cli_tests.cmake (fixture m4_inspect_tiny_checkpoint). */
    char *tests_dir = m4t_join(M4_BINARY_DIR, "tests");
    char *dir = m4t_join(tests_dir, "inspect-tiny-checkpoint");
    make_dir(tests_dir);
    make_dir(dir);
    size_t written = write_tiny_checkpoint(dir, &cfg);

    inspect_input ck, fromcfg;
    if (inspect_open(dir, &ck, &err) != 0) fail_msg("%s", err.msg);
    char *config_path = m4t_join(dir, "config.json");
    if (inspect_open(config_path, &fromcfg, &err) != 0) fail_msg("%s", err.msg);

    assert_true(ck.from_checkpoint);
    assert_true(ck.model.legacy_names);
    assert_int_equal(ck.n_shards, 1);
    assert_int_equal(ck.n_disk_tensors, written);
    assert_int_equal(ck.n, written);
    assert_false(fromcfg.from_checkpoint);
    assert_true(fromcfg.dense_dtype_known);
    assert_int_equal(fromcfg.dense_dtype, M4_DTYPE_BF16);

    /* Same tensors, minus the activation scales the checkpoint does not hold; dtypes from disk. */
    size_t act_scales = 0;
    for (size_t i = 0, j = 0; i < fromcfg.n; i++) {
        const m4_tensor_spec *s = &fromcfg.specs[i];
        if (s->kind == M4_SPEC_ACT_SCALE) {
            act_scales++;
            continue;
        }
        assert_true(j < ck.n);
        assert_string_equal(ck.specs[j].name, s->name);
        m4_dtype want = is_norm(s->name) ? M4_DTYPE_F32 : fromcfg.dtypes[i];
        if (ck.dtypes[j] != want)
            fail_msg("%s: dtype %s on disk, %s expected", s->name, m4_dtype_name(ck.dtypes[j]), m4_dtype_name(want));
        if (is_norm(s->name)) assert_int_equal(fromcfg.dtypes[i], M4_DTYPE_BF16);
        j++;
    }
    assert_int_equal(ck.n + act_scales, fromcfg.n);
    assert_true(act_scales > 0);

    inspect_params pc, pf;
    inspect_count_params(ck.specs, ck.n, &pc);
    inspect_count_params(fromcfg.specs, fromcfg.n, &pf);
    assert_int_equal(pc.text, pf.text);
    assert_int_equal(pc.vision, pf.vision);
    assert_int_equal(pc.projector, pf.projector);
    assert_true(pc.fp8_scales < pf.fp8_scales);
    assert_true(pc.by_part[M4_PART_DENSE_MLP] > 0); /* layer 0 is dense */

    /* one dense layer + two MoE layers with 2 of 4 experts active */
    inspect_active a;
    if (inspect_active_params(&ck.config, ck.specs, ck.n, &a, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(a.by_part[M4_PART_ROUTED_EXPERTS], pc.by_part[M4_PART_ROUTED_EXPERTS] / 2);
    assert_int_equal(a.by_part[M4_PART_DENSE_MLP], pc.by_part[M4_PART_DENSE_MLP]);
    assert_int_equal(a.by_part[M4_PART_EMBED], 32);

    /* norms were stored F32: 4 bytes each in the per-token bytes */
    inspect_cost c;
    if (inspect_per_token(&ck.config, ck.specs, ck.dtypes, ck.n, 16, M4_DTYPE_BF16, &c, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(c.rows[INSPECT_COST_NORMS].weight_bytes, 4 * a.by_part[M4_PART_NORM]);

    /* the --gpus plan: one expert's bytes come from the dtypes on disk (per MoE layer: FP8
     * gate_up 2F·D = 2·16·32 = 1024 and down D·F = 512, each stack's F32 scale_inv, no
     * activation scales on disk), and layer 0 is dense: 2 MoE layers, 2 all-reduces of D·2 */
    inspect_weight_split w;
    if (inspect_split_weights(&ck.config, ck.specs, ck.dtypes, ck.n, INSPECT_STORAGE_AS_STORED, &w, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(w.experts, 4);
    assert_int_equal(w.per_expert, 2 * (1024 + 512 + 2 * 4));
    inspect_expert_comm m;
    inspect_expert_comm_of(&ck.config, ck.specs, ck.n, 4, &m);
    assert_int_equal(m.moe_layers, 2);
    assert_int_equal(m.message_bytes_per_layer, 32 * 2);

    inspect_close(&ck);
    inspect_close(&fromcfg);
    free(config_path);
    free(dir);
    free(tests_dir);
}

static void test_open_errors(void **state) {
    (void)state;
    inspect_input in;
    m4_error err = {{0}};
    assert_int_equal(inspect_open("/nonexistent/mistral4-inspect-test", &in, &err), -1);
    m4t_assert_contains(err.msg, "/nonexistent/mistral4-inspect-test");
    inspect_close(&in);

    char *dir = m4t_tempdir();
    assert_int_equal(inspect_open(dir, &in, &err), -1);
    m4t_assert_contains(err.msg, dir);
    m4t_assert_contains(err.msg, "config.json");
    inspect_close(&in);

    char *bad = m4t_join(dir, "config.json");
    m4t_write_text(bad, "{\"model_type\": ");
    assert_int_equal(inspect_open(bad, &in, &err), -1);
    m4t_assert_contains(err.msg, "config.json");
    inspect_close(&in);

    m4t_rmtree(dir);
    free(bad);
    free(dir);
}

/* Issue #9: a config at the loader's limits — 1024 layers (M4_CONFIG_MAX_LAYERS) whose kv_b_proj
 * holds 2^40 elements (M4_MAX_TENSOR_ELEMENTS: H·(dn + dv) = 2^20 rows of Rkv = 2^20) — made the
 * per-token cost overflow int64_t (2·T·numel(kv_b) summed over the layers is 2^63 at the default
 * context 4096; UBSan: signed integer overflow). The counts still fit; the costs are exact up to
 * 2^63 - 1 and an error beyond, never undefined behaviour. */
static void test_costs_at_the_loader_limits(void **state) {
    (void)state;
    static const char json[] =
        "{\"model_type\": \"mistral4\", \"vocab_size\": 512, \"hidden_size\": 64, "
        "\"intermediate_size\": 96, \"moe_intermediate_size\": 32, \"num_hidden_layers\": 1024, "
        "\"num_attention_heads\": 1024, \"num_key_value_heads\": 1024, \"n_routed_experts\": 16, "
        "\"num_experts_per_tok\": 4, \"n_shared_experts\": 1, \"q_lora_rank\": 64, "
        "\"kv_lora_rank\": 1048576, \"qk_rope_head_dim\": 64, \"qk_nope_head_dim\": 512, "
        "\"v_head_dim\": 512, \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}}";
    m4_config cfg;
    m4_error err = {{0}};
    if (m4_config_parse(json, "limits.json", &cfg, &err) != 0) fail_msg("%s", err.msg);
    m4_tensor_spec *specs;
    size_t n;
    if (m4_weight_specs(&cfg, NULL, &specs, &n, &err) != 0) fail_msg("%s", err.msg);
    m4_dtype *dtypes = calloc(n, sizeof *dtypes);
    assert_non_null(dtypes);
    for (size_t i = 0; i < n; i++) dtypes[i] = inspect_inferred_dtype(&specs[i], M4_DTYPE_F32);

    const int64_t kv_b = (int64_t)1 << 40, layers = 1024;
    inspect_params p;
    inspect_count_params(specs, n, &p);
    assert_true(p.by_part[M4_PART_ATTENTION] > layers * kv_b);
    inspect_active a;
    if (inspect_active_params(&cfg, specs, n, &a, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(a.by_part[M4_PART_ATTENTION], p.by_part[M4_PART_ATTENTION]);

    inspect_cost c;
    if (inspect_per_token(&cfg, specs, dtypes, n, 1, M4_DTYPE_F32, &c, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(c.rows[INSPECT_COST_ATTN_KV_B].flops, layers * 2 * kv_b);
    assert_int_equal(c.rows[INSPECT_COST_ATTN_KV_B].weight_bytes, layers * kv_b * 4);
    /* the largest context whose kv_b expansion, layers · 2 · T · 2^40, still fits: T = 2047 */
    if (inspect_per_token(&cfg, specs, dtypes, n, 2047, M4_DTYPE_F32, &c, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(c.rows[INSPECT_COST_ATTN_KV_B].flops, layers * 2 * 2047 * kv_b);
    const int64_t too_long[] = {4096, (int64_t)1 << 32}; /* the default, and --context's maximum */
    for (size_t i = 0; i < sizeof too_long / sizeof too_long[0]; i++) {
        err.msg[0] = 0;
        assert_int_equal(inspect_per_token(&cfg, specs, dtypes, n, too_long[i], M4_DTYPE_F32, &c, &err), -1);
        m4t_assert_contains(err.msg, "exceed 2^63 - 1");
        assert_int_equal(c.total_flops, 0);
    }
    free(dtypes);
    free(specs);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_published_params, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_published_active, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_published_per_token, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_published_gpu_plan, fixture_setup, fixture_teardown),
        cmocka_unit_test(test_gpu_share_errors),
        cmocka_unit_test_setup_teardown(test_softmax_scale, fixture_setup, fixture_teardown),
        cmocka_unit_test(test_dtype_names),
        cmocka_unit_test(test_tiny_checkpoint),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_costs_at_the_loader_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
