/* text.cu — the Mistral 4 text components on the device: MLA attention, the MoE (router,
 * permutation, experts, combine with the shared expert), the decoder layer and the forward.
 * Each follows its reference function (reference/mla.c, moe.c, text.c) step by step. */
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "cuda_model.cuh"
#include "kernels/gemv.cuh"
#include "kernels/grouped_gemm.cuh"
#include "kernels/latent_attention.cuh"
#include "kernels/moe.cuh"
#include "kernels/norm.cuh"
#include "kernels/rope.cuh"
#include "paths.h"

#define WEIGHT(field, what) m4_cuda_weight(st, (field).data, what, err)

/* Copies n device floats to a host trace field (skipped when the field is NULL). */
static int download(m4_cuda *st, float *host, const float *d, int64_t n, m4_error *err) {
    if (!host || n <= 0) return 0;
    M4_CUDA_TRY(cudaMemcpyAsync(host, d, sizeof(float) * (size_t)n, cudaMemcpyDeviceToHost, st->stream), err);
    return 0;
}

/* The same for `rows` rows of `cols` floats, `pitch` floats apart on the device. */
static int download_rows(m4_cuda *st, float *host, const float *d, int64_t rows, int64_t cols, int64_t pitch,
                         m4_error *err) {
    if (!host || rows * cols <= 0) return 0;
    M4_CUDA_TRY(cudaMemcpy2DAsync(host, sizeof(float) * (size_t)cols, d, sizeof(float) * (size_t)pitch,
                                  sizeof(float) * (size_t)cols, (size_t)rows, cudaMemcpyDeviceToHost, st->stream), err);
    return 0;
}

/* The part of Mistral4Attention shared by the cached and uncached forms (m4_ref_mla_cached steps
 * 1–4 and 6): the queries, rotated and Llama-4 scaled, Q [B, H, S, dq]; the compressed kv [N, Rkv
 * + dr], its normalised latent c_kv [N, Rkv] and the rotated shared key k_rope [N, dr]. The RoPE
 * and Llama-4 tables are computed on the device from the positions (m4k_rope_tables). q_a_proj
 * and kv_a_proj_with_mqa read the same input: uploaded side by side (m4_cuda_weight_pair) they run
 * as one GEMV/GEMM, and qa [N, Rq] and kva [N, Rkv + dr] are then column ranges of its output,
 * rows qa_stride / kva_stride apart. Buffers live in `arena`. */
struct mla_projections {
    float *qa = nullptr, *q = nullptr, *Q = nullptr, *kva = nullptr, *ckv = nullptr, *k_rope = nullptr;
    float *l4 = nullptr;
    int64_t qa_stride = 0, kva_stride = 0;
    const m4_dev_weight *kv_b = nullptr, *o_proj = nullptr;   /* the weights after the projections */
};

static int mla_project(m4_cuda *st, int layer, const float *d_x, int64_t B, int64_t S, const m4_cuda_positions &where,
                       m4_arena &arena, mla_projections *p, m4_error *err) {
    const m4_text_config *cfg = &st->model->config.text;
    const m4_text_layer_weights *w = &st->model->weights.layers[layer];
    const int64_t N = B * S, H = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim;
    const int64_t dr = cfg->qk_rope_head_dim, dq = cfg->qk_head_dim, Rq = cfg->q_lora_rank;
    const int64_t Rkv = cfg->kv_lora_rank, half = dr / 2, kva_w = Rkv + dr;
    if (B <= 0 || S <= 0) return m4_fail(err, "self_attn: empty input (B %lld, S %lld)", (long long)B, (long long)S);
    if (dq != dn + dr || dr % 2 || cfg->num_key_value_heads != H)
        return m4_fail(err, "self_attn: unsupported head dims (nope %lld + rope %lld vs %lld, kv heads %lld)",
                       (long long)dn, (long long)dr, (long long)dq, (long long)cfg->num_key_value_heads);
    const m4_dev_weight *kv_a = WEIGHT(w->kv_a_proj_with_mqa, "kv_a_proj_with_mqa");
    const m4_dev_weight *kv_norm = kv_a ? WEIGHT(w->kv_a_layernorm, "kv_a_layernorm") : nullptr;
    p->kv_b = kv_norm ? WEIGHT(w->kv_b_proj, "kv_b_proj") : nullptr;
    p->o_proj = p->kv_b ? WEIGHT(w->o_proj, "o_proj") : nullptr;
    if (!p->o_proj) return -1;
    const m4_dev_weight *q_a = Rq > 0 ? WEIGHT(w->q_a_proj, "q_a_proj") : nullptr;
    if (Rq > 0 && !q_a) return -1;
    m4_dev_weight both;                                                   /* [Rq + Rkv + dr, D] */
    const bool paired = Rq > 0 && m4_cuda_weight_pair(*q_a, *kv_a, &both);
    if (paired) {
        p->qa = arena.get<float>(N * (Rq + kva_w), err);                  /* [N, Rq | Rkv + dr] */
        p->kva = p->qa ? p->qa + Rq : nullptr;
        p->qa_stride = p->kva_stride = Rq + kva_w;
    } else {
        p->qa = Rq > 0 ? arena.get<float>(N * Rq, err) : nullptr;         /* [N, Rq] */
        p->kva = arena.get<float>(N * kva_w, err);                        /* [N, Rkv + dr] */
        p->qa_stride = Rq, p->kva_stride = kva_w;
    }
    float *qa_norm = Rq > 0 ? arena.get<float>(N * Rq, err) : nullptr;    /* [N, Rq] */
    p->q = arena.get<float>(N * H * dq, err);                             /* [N, H·dq] */
    p->Q = arena.get<float>(N * H * dq, err);                             /* [B, H, S, dq] */
    p->ckv = arena.get<float>(N * Rkv, err);                              /* [N, Rkv] */
    p->k_rope = arena.get<float>(N * dr, err);                            /* [N, dr] */
    float *d_cos = arena.get<float>(N * half, err), *d_sin = arena.get<float>(N * half, err);
    p->l4 = arena.get<float>(N, err);
    if (!p->q || !p->Q || !p->kva || !p->ckv || !p->k_rope || !d_cos || !d_sin || !p->l4 || (Rq > 0 && (!p->qa || !qa_norm)))
        return -1;
    const m4_rope_config *r = &cfg->rope;
    if (m4k_rope_tables(where.d_pos, N, st->d_rope_inv_freq, half, st->rope_attention_factor, r->has_llama_4_scaling_beta,
                        (float)r->llama_4_scaling_beta, r->original_max_position_embeddings, d_cos, d_sin, p->l4,
                        st->stream, err))
        return -1;
    /* 1–2. the input's down-projections: q_a_proj(x) and kv_a_proj_with_mqa(x), paired or not */
    if (paired ? m4_cuda_linear(st, d_x, N, both, p->qa, err)
               : (Rq > 0 && m4_cuda_linear(st, d_x, N, *q_a, p->qa, err)) || m4_cuda_linear(st, d_x, N, *kv_a, p->kva, err))
        return -1;
    /* 1. queries: q_b_proj(q_a_layernorm(q_a)) or q_proj(x) */
    if (Rq > 0) {
        const m4_dev_weight *q_norm = WEIGHT(w->q_a_layernorm, "q_a_layernorm");
        const m4_dev_weight *q_b = q_norm ? WEIGHT(w->q_b_proj, "q_b_proj") : nullptr;
        if (!q_b || m4k_rmsnorm(p->qa, p->qa_stride, nullptr, nullptr, q_norm->f32(), qa_norm, Rq, N, Rq, M4_MLA_NORM_EPS, st->stream, err) ||
            m4_cuda_linear(st, qa_norm, N, *q_b, p->q, err))
            return -1;
    } else {
        const m4_dev_weight *q_proj = WEIGHT(w->q_proj, "q_proj");
        if (!q_proj || m4_cuda_linear(st, d_x, N, *q_proj, p->q, err)) return -1;
    }
    /* 3–4. the compressed kv's norm, the rotated shared key; 6. query = [q_nope | rope(q_rope)] · l4 */
    return m4k_rmsnorm(p->kva, p->kva_stride, nullptr, nullptr, kv_norm->f32(), p->ckv, Rkv, N, Rkv, M4_MLA_NORM_EPS, st->stream, err) ||
           m4k_rope(p->kva + Rkv, p->kva_stride, 0, 1, N, 1, 0, dr, d_cos, d_sin, nullptr, cfg->rope_interleave, p->k_rope,
                    st->stream, err) ||
           m4k_rope(p->q, H * dq, dq, B, S, H, dn, dr, d_cos, d_sin, p->l4, cfg->rope_interleave, p->Q, st->stream, err);
}

/* Steps 5 and 7–8 of the HF form over S positions with no past: kv_b_proj expands every key's
 * latent to [k_nope | v] per head, key = [k_nope | k_rope], causal softmax attention over the S
 * keys with the values read from kv_b's output in place (m4_cuda_attention: the flash kernel on
 * the bf16 path unless probs are wanted). kvb [N, H·(dn+dv)], K [B, H, S, dq], attn [N, H·dv],
 * probs [B, H, S, S] or NULL. */
/* The causal attention of the expanded form over S positions (B rows): Q [B, H, S, dq], K [B, H,
 * S, dq] (mla_keys), V in kv_b's output rows [N, H·(dn+dv)] at column dn of each head. */
static m4k_attention_args expanded_attention_args(const m4_text_config *cfg, const float *Q, const float *K,
                                                  const float *kvb, int64_t B, int64_t S, const int64_t *d_mask,
                                                  float softmax_scale, float *attn, float *probs) {
    const int64_t H = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim, dv = cfg->v_head_dim;
    m4k_attention_args a = {};
    a.Q = Q, a.K = K, a.V = kvb ? kvb + dn : nullptr;
    a.B = B, a.H = H, a.S = S, a.T = S, a.dq = cfg->qk_head_dim, a.dv = dv;
    a.v_row_stride = H * (dn + dv), a.v_head_stride = dn + dv;
    a.scale = softmax_scale, a.causal = true, a.causal_past = 0, a.mask = d_mask;
    a.O = attn, a.probs = probs;
    return a;
}

static int mla_attend_expanded(m4_cuda *st, const mla_projections &p, int64_t B, int64_t S,
                               const m4_cuda_positions &where, float softmax_scale, float *kvb, float *K, float *attn,
                               float *probs, m4_error *err) {
    const m4_text_config *cfg = &st->model->config.text;
    const int64_t N = B * S, H = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim;
    const int64_t dr = cfg->qk_rope_head_dim, dv = cfg->v_head_dim;
    if (m4_cuda_linear(st, p.ckv, N, *p.kv_b, kvb, err) ||
        m4k_mla_keys(kvb, p.k_rope, S, B, S, H, dn, dr, dv, K, st->stream, err))
        return -1;
    const m4k_attention_args a = expanded_attention_args(cfg, p.Q, K, kvb, B, S, where.d_mask, softmax_scale, attn, probs);
    return m4_cuda_attention(st, &a, err);
}

/* text.layers.{i}.self_attn — Mistral4Attention.forward (eager, no cache), as m4_ref_mla: the
 * projections, kv_b expanding every key's latent to [k_nope | v] per head, causal attention, o_proj. */
int m4_cuda_mla(m4_cuda *st, int layer, const float *d_x, int64_t B, int64_t S,
                const m4_cuda_positions &where, float softmax_scale, float *d_out, m4_mla_trace *trace,
                m4_error *err) {
    const m4_text_config *cfg = &st->model->config.text;
    const int64_t N = B * S, H = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim;
    const int64_t dr = cfg->qk_rope_head_dim, dq = cfg->qk_head_dim, dv = cfg->v_head_dim;
    const int64_t Rq = cfg->q_lora_rank, Rkv = cfg->kv_lora_rank;
    m4_arena arena(st->stream);
    mla_projections p;
    if (mla_project(st, layer, d_x, B, S, where, arena, &p, err)) return -1;
    float *kvb = arena.get<float>(N * H * (dn + dv), err);                 /* [N, H·(dn+dv)] */
    float *K = arena.get<float>(N * H * dq, err);                          /* [B, H, S, dq] */
    float *attn = arena.get<float>(N * H * dv, err);                       /* [N, H·dv] */
    float *probs = trace && trace->attn_weights ? arena.get<float>(B * H * S * S, err) : nullptr;
    if (!kvb || !K || !attn || (trace && trace->attn_weights && !probs)) return -1;
    /* 5, 7–8, then 9. o_proj */
    if (mla_attend_expanded(st, p, B, S, where, softmax_scale, kvb, K, attn, probs, err) ||
        m4_cuda_linear(st, attn, N, *p.o_proj, d_out, err))
        return -1;
    if (!trace) return 0;
    if (download_rows(st, Rq > 0 ? trace->q_a : nullptr, p.qa, N, Rq, p.qa_stride, err) ||
        download(st, trace->q, p.q, N * H * dq, err) || download_rows(st, trace->kv_a, p.kva, N, Rkv + dr, p.kva_stride, err) || download(st, trace->c_kv, p.ckv, N * Rkv, err) ||
        download(st, trace->kv_b, kvb, N * H * (dn + dv), err) || download(st, trace->q_rot, p.Q, N * H * dq, err) ||
        download(st, trace->k_rot, K, N * H * dq, err) || download(st, trace->llama4_scale, p.l4, N, err) ||
        download(st, trace->attn_weights, probs, B * H * S * S, err) ||
        download(st, trace->attn_output, attn, N * H * dv, err))
        return -1;
    if (trace->v) {                                   /* [B, H, T, dv] out of kv_b's rows */
        std::vector<float> host((size_t)(N * H * (dn + dv)));
        if (download(st, host.data(), kvb, N * H * (dn + dv), err)) return -1;
        M4_CUDA_TRY(cudaStreamSynchronize(st->stream), err);
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t j = 0; j < S; j++)
                    memcpy(trace->v + ((b * H + h) * S + j) * dv, host.data() + (b * S + j) * H * (dn + dv) + h * (dn + dv) + dn,
                           sizeof(float) * (size_t)dv);
    }
    M4_CUDA_TRY(cudaStreamSynchronize(st->stream), err);
    return 0;
}

/* text.layers.{i}.self_attn with the device cache — m4_ref_mla_cached's math in the absorbed
 * form: the S new latents are appended, kv_b's key half is folded into the queries, attention
 * runs over the T = past + S cached latents [c_kv | k_rope] (FlashMLA's layout), and kv_b's value
 * half is applied to the attended latent. A prompt (S > 1 into an empty cache) takes the HF form
 * instead, as DeepSeek's and FlashMLA's serving do: kv_b expands its own S latents and the flash
 * kernel attends (fewer FLOPs where the step is compute-bound; path `prompt_expand`, paths.h).
 * attention_mask [B, T] (NULL: all tokens). */
int m4_cuda_mla_cached(m4_cuda *st, int layer, m4_cuda_cache *cache, const float *d_x, int64_t B, int64_t S,
                       const m4_cuda_positions &where, float softmax_scale, float *d_out, m4_error *err) {
    const m4_text_config *cfg = &st->model->config.text;
    const int64_t H = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim, dr = cfg->qk_rope_head_dim;
    const int64_t dv = cfg->v_head_dim, Rkv = cfg->kv_lora_rank, past = cache->length, T = past + S;
    if (cache->batch != B) return m4_fail(err, "self_attn: the kv cache has %lld rows, the input %lld", (long long)cache->batch, (long long)B);
    if (T > cache->capacity)
        return m4_fail(err, "self_attn: the kv cache is full: %lld cached + %lld new positions > capacity %lld",
                       (long long)past, (long long)S, (long long)cache->capacity);
    m4_arena arena(st->stream);
    mla_projections p;
    if (mla_project(st, layer, d_x, B, S, where, arena, &p, err)) return -1;
    const m4_dev_weight *kv_b = p.kv_b, *o_proj = p.o_proj;
    if (kv_b->bf16 != cache->bf16) return m4_fail(err, "self_attn: cache and weights differ in precision");
    const int64_t N = B * S, dq = cfg->qk_head_dim;
    /* the HF form for a prompt into an empty cache (switch prompt_expand), when the attention
     * kernel in effect serves its length (the absorbed form serves any) */
    const m4k_attention_args shape = expanded_attention_args(cfg, nullptr, nullptr, nullptr, B, S, nullptr, softmax_scale,
                                                             nullptr, nullptr);
    const bool prompt = m4_cuda_path_on(M4_PATH_PROMPT_EXPAND) && past == 0 && S > 1 &&
                        (!where.d_mask || where.mask_stride == S) && m4_cuda_attention_fits(st, &shape);
    float *attn = arena.get<float>(N * H * dv, err);                                       /* [N, H·dv] */
    float *QL = prompt ? nullptr : arena.get<float>(N * H * (Rkv + dr), err);              /* [B, H, S, Rkv + dr] */
    float *O_lat = prompt ? nullptr : arena.get<float>(N * H * Rkv, err);                  /* [B, H, S, Rkv] */
    float *kvb = prompt ? arena.get<float>(N * H * (dn + dv), err) : nullptr;              /* [N, H·(dn+dv)] */
    float *K = prompt ? arena.get<float>(N * H * dq, err) : nullptr;                       /* [B, H, S, dq] */
    if (!attn || (prompt ? !kvb || !K : !QL || !O_lat)) return -1;
    const size_t elem = cache->bf16 ? sizeof(__nv_bfloat16) : sizeof(float);
    char *c_layer = static_cast<char *>(cache->c_kv) + (size_t)(layer * B * cache->stride * Rkv) * elem;
    char *r_layer = static_cast<char *>(cache->k_rope) + (size_t)(layer * B * cache->stride * dr) * elem;
    int rc;
    if (prompt) {
        /* the HF form over the prompt's own latents (m4_cuda_mla's steps 5, 7–8); the latents are
         * appended for the steps that follow */
        rc = (cache->bf16 ? m4k_cache_append(p.ckv, p.k_rope, B, S, cache->d_length, cache->stride, Rkv, dr,
                                             reinterpret_cast<__nv_bfloat16 *>(c_layer),
                                             reinterpret_cast<__nv_bfloat16 *>(r_layer), st->stream, err)
                          : m4k_cache_append(p.ckv, p.k_rope, B, S, cache->d_length, cache->stride, Rkv, dr,
                                             reinterpret_cast<float *>(c_layer), reinterpret_cast<float *>(r_layer),
                                             st->stream, err)) ||
             mla_attend_expanded(st, p, B, S, where, softmax_scale, kvb, K, attn, nullptr, err);
    } else if (cache->bf16) {
        auto *c = reinterpret_cast<__nv_bfloat16 *>(c_layer), *r = reinterpret_cast<__nv_bfloat16 *>(r_layer);
        rc = m4k_cache_append(p.ckv, p.k_rope, B, S, cache->d_length, cache->stride, Rkv, dr, c, r, st->stream, err) ||
             m4k_mla_absorb_q(p.Q, kv_b->b16(), B * H * S, H, S, dn, dr, dv, Rkv, QL, st->stream, err) ||
             m4k_mla_latent_attention<__nv_bfloat16>(QL, c, r, cache->stride, B, H, S, cache->d_length, Rkv, dr,
                                                     softmax_scale, where.d_mask, where.mask_stride, O_lat, st->stream,
                                                     err) ||
             m4k_mla_unabsorb_v(O_lat, kv_b->b16(), B, H, S, dn, dv, Rkv, attn, st->stream, err);
    } else {
        auto *c = reinterpret_cast<float *>(c_layer), *r = reinterpret_cast<float *>(r_layer);
        rc = m4k_cache_append(p.ckv, p.k_rope, B, S, cache->d_length, cache->stride, Rkv, dr, c, r, st->stream, err) ||
             m4k_mla_absorb_q(p.Q, kv_b->f32(), B * H * S, H, S, dn, dr, dv, Rkv, QL, st->stream, err) ||
             m4k_mla_latent_attention<float>(QL, c, r, cache->stride, B, H, S, cache->d_length, Rkv, dr, softmax_scale,
                                             where.d_mask, where.mask_stride, O_lat, st->stream, err) ||
             m4k_mla_unabsorb_v(O_lat, kv_b->f32(), B, H, S, dn, dv, Rkv, attn, st->stream, err);
    }
    return rc || m4_cuda_linear(st, attn, B * S, *o_proj, d_out, err);
}

/* text.layers.{i}.mlp.gate — Mistral4TopkRouter: float32 logits (the router weight stays float32
 * in both precisions), then softmax + group-limited top-K + renormalisation in one kernel. */
int m4_cuda_router(m4_cuda *st, int layer, const float *d_x, int64_t n, float *d_logits,
                   int32_t *d_ids, float *d_weights, m4_error *err) {
    const m4_text_config *cfg = &st->model->config.text;
    const m4_text_layer_weights *w = &st->model->weights.layers[layer];
    const int64_t E = cfg->n_routed_experts, G = cfg->n_group;
    if (G <= 0 || E % G != 0 || cfg->topk_group <= 0 || cfg->topk_group > G ||
        cfg->num_experts_per_tok > (E / G) * cfg->topk_group || (G > 1 && E / G < 2))
        return m4_fail(err, "mlp.gate: n_group %lld / topk_group %lld / top-%lld do not fit %lld experts",
                       (long long)G, (long long)cfg->topk_group, (long long)cfg->num_experts_per_tok, (long long)E);
    const m4_dev_weight *router = WEIGHT(w->router, "mlp.gate");
    if (!router) return -1;
    if (router->rows != E) return m4_fail(err, "mlp.gate: router has %lld rows, %lld experts", (long long)router->rows, (long long)E);
    const m4_dev_weight *bias = nullptr;
    if (cfg->scoring_func == M4_ROUTER_SIGMOID && !(bias = WEIGHT(w->router_bias, "e_score_correction_bias")))
        return -1;
    m4_arena arena(st->stream);
    float *logits = d_logits ? d_logits : arena.get<float>(n * E, err);
    if (!logits) return -1;
    return m4_cuda_linear(st, d_x, n, *router, logits, err) ||
           m4k_router_topk(logits, bias ? bias->f32() : nullptr, n, cfg, d_ids, d_weights, st->stream, err);
}

/* text.layers.{i}.mlp.experts — Mistral4Experts under the given routing, on explicit expert
 * stacks gu [E, 2F, D] and dn [E, D, F]. Decode-sized batches (N ≤ M4_CUDA_GEMV_MAX_TOKENS) run
 * two GEMV launches over the N·K (token, expert) slots, SwiGLU fused into the gate_up one, no host
 * round trip. Larger batches are permuted by expert (slots sorted by expert, offsets [E + 1] on
 * the device) and gathered; with bf16 or FP8 weights two grouped GEMM launches follow
 * (m4k_grouped_gemm: gate_up with SwiGLU fused, then down; FP8 codes dequantised in shared
 * memory), still no host round trip, so the step stays CUDA-graph capturable; with float32
 * weights (the pedantic precision path that proves the logic at tight bounds) the offsets are
 * copied to the host and each expert's slots go through cuBLAS. The GEMV and grouped GEMM take
 * every weight form (m4_cuda_gemv, m4_cuda_grouped_gemm); a shape they do not fit takes the host
 * loop (m4_cuda_linear: FP8 dequantised per expert). All end in the weighted un-permute (+ shared
 * expert). */
int m4_cuda_moe_experts(m4_cuda *st, const m4_dev_weight &gu, const m4_dev_weight &dn, int64_t K,
                        m4_activation act, const float *d_x, int64_t n, const int32_t *d_ids,
                        const float *d_weights, const float *d_shared, float *d_out, m4_error *err) {
    const int64_t E = gu.experts, F = gu.rows / 2, D = gu.cols;
    if (gu.rows != 2 * F || dn.experts != E || dn.rows != D || dn.cols != F)
        return m4_fail(err, "mlp.experts: stacks [%lld, %lld, %lld] and [%lld, %lld, %lld] do not pair up",
                       (long long)gu.experts, (long long)gu.rows, (long long)gu.cols, (long long)dn.experts,
                       (long long)dn.rows, (long long)dn.cols);
    if (n <= 0) return 0;
    m4_arena arena(st->stream);
    float *hm = arena.get<float>(n * K * F, err);                /* [N·K, F] act(gate) · up */
    float *y = arena.get<float>(n * K * D, err);                 /* [N·K, D] expert outputs */
    if (!hm || !y) return -1;
    if (n <= M4_CUDA_GEMV_MAX_TOKENS && m4_cuda_gemv_fits(gu) && m4_cuda_gemv_fits(dn)) {
        /* slot g = t·K + k: expert ids[g], token g / K */
        if (m4_cuda_gemv(st, gu, d_ids, n * K, d_x, K, 1, hm, true, act, err) ||
            m4_cuda_gemv(st, dn, d_ids, n * K, hm, 1, 1, y, false, act, err))
            return -1;
        return m4k_moe_combine(y, nullptr, d_ids, d_weights, d_shared, n, K, D, d_out, st->stream, err);
    }
    int32_t *counts = arena.get<int32_t>(E, err), *offsets = arena.get<int32_t>(E + 1, err);
    int32_t *slot_token = arena.get<int32_t>(n * K, err), *slot_of = arena.get<int32_t>(n * K, err);
    float *xs = arena.get<float>(n * K * D, err);
    if (!counts || !offsets || !slot_token || !slot_of || !xs) return -1;
    if (m4k_moe_permute(d_ids, n, K, E, counts, offsets, slot_token, slot_of, st->stream, err) ||
        m4k_gather_rows(d_x, slot_token, n * K, D, xs, st->stream, err))
        return -1;
    if (m4_cuda_path_on(M4_PATH_GROUPED) && m4_cuda_grouped_gemm_fits(gu) && m4_cuda_grouped_gemm_fits(dn)) {
        /* bf16 / FP8: one grouped GEMM per projection over every expert's slots, offsets read on the device */
        if (m4_cuda_grouped_gemm(st, gu, offsets, xs, n * K, hm, true, act, err) ||
            m4_cuda_grouped_gemm(st, dn, offsets, hm, n * K, y, false, act, err))
            return -1;
        return m4k_moe_combine(y, slot_of, d_ids, d_weights, d_shared, n, K, D, d_out, st->stream, err);
    }
    float *h = arena.get<float>(n * K * 2 * F, err);
    if (!h) return -1;
    std::vector<int32_t> off((size_t)(E + 1));
    M4_CUDA_TRY(cudaMemcpyAsync(off.data(), offsets, sizeof(int32_t) * (size_t)(E + 1), cudaMemcpyDeviceToHost, st->stream), err);
    M4_CUDA_TRY(cudaStreamSynchronize(st->stream), err);
    for (int64_t e = 0; e < E; e++) {
        const int64_t first = off[(size_t)e], count = off[(size_t)e + 1] - first;
        if (count > 0 && m4_cuda_linear(st, xs + first * D, count, gu.expert(e), h + first * 2 * F, err)) return -1;
    }
    if (m4k_swiglu(h, 2 * F, h + F, 2 * F, hm, n * K, F, act, st->stream, err)) return -1;
    for (int64_t e = 0; e < E; e++) {
        const int64_t first = off[(size_t)e], count = off[(size_t)e + 1] - first;
        if (count > 0 && m4_cuda_linear(st, hm + first * F, count, dn.expert(e), y + first * D, err)) return -1;
    }
    return m4k_moe_combine(y, slot_of, d_ids, d_weights, d_shared, n, K, D, d_out, st->stream, err);
}

/* The same for layer `layer` of the model. */
int m4_cuda_experts(m4_cuda *st, int layer, const float *d_x, int64_t n, const int32_t *d_ids,
                    const float *d_weights, const float *d_shared, float *d_out, m4_error *err) {
    const m4_text_config *cfg = &st->model->config.text;
    const m4_text_layer_weights *w = &st->model->weights.layers[layer];
    const m4_dev_weight *gu = WEIGHT(w->experts_gate_up, "mlp.experts.gate_up_proj");
    const m4_dev_weight *dn = gu ? WEIGHT(w->experts_down, "mlp.experts.down_proj") : nullptr;
    if (!dn) return -1;
    if (gu->experts != cfg->n_routed_experts || gu->rows != 2 * cfg->moe_intermediate_size || gu->cols != cfg->hidden_size)
        return m4_fail(err, "mlp.experts: gate_up_proj is [%lld, %lld, %lld], the config implies [%lld, %lld, %lld]",
                       (long long)gu->experts, (long long)gu->rows, (long long)gu->cols, (long long)cfg->n_routed_experts,
                       (long long)(2 * cfg->moe_intermediate_size), (long long)cfg->hidden_size);
    return m4_cuda_moe_experts(st, *gu, *dn, cfg->num_experts_per_tok, cfg->hidden_act, d_x, n, d_ids,
                               d_weights, d_shared, d_out, err);
}

/* text.layers.{i}.mlp — Mistral4MoE (router → experts, + shared expert) or the dense MLP. */
int m4_cuda_mlp(m4_cuda *st, int layer, const float *d_x, int64_t n, float *d_out, m4_error *err) {
    const m4_text_config *cfg = &st->model->config.text;
    const m4_text_layer_weights *w = &st->model->weights.layers[layer];
    if (!w->moe) {
        if (!w->gate_proj.data || !w->up_proj.data || !w->down_proj.data)
            return m4_fail(err, "mlp: dense MLP weights are missing");
        return m4_cuda_swiglu_mlp(st, d_x, n, &w->gate_proj, &w->up_proj, &w->down_proj, cfg->hidden_act, d_out, err);
    }
    const int64_t K = cfg->num_experts_per_tok, D = cfg->hidden_size;
    m4_arena arena(st->stream);
    int32_t *ids = arena.get<int32_t>(n * K, err);
    float *weights = arena.get<float>(n * K, err);
    float *shared = cfg->n_shared_experts > 0 ? arena.get<float>(n * D, err) : nullptr;
    if (!ids || !weights || (cfg->n_shared_experts > 0 && !shared)) return -1;
    if (m4_cuda_router(st, layer, d_x, n, nullptr, ids, weights, err)) return -1;
    if (shared) {
        if (!w->shared_gate_proj.data || !w->shared_up_proj.data || !w->shared_down_proj.data)
            return m4_fail(err, "mlp.shared_experts: weights are missing");
        if (m4_cuda_swiglu_mlp(st, d_x, n, &w->shared_gate_proj, &w->shared_up_proj, &w->shared_down_proj,
                               cfg->hidden_act, shared, err))
            return -1;
    }
    return m4_cuda_experts(st, layer, d_x, n, ids, weights, shared, d_out, err);
}

/* text.layers.{i} — h += attn(input_layernorm(h)); h += mlp(post_attention_layernorm(h)), the
 * first residual add fused into the second norm. */
int m4_cuda_decoder_layer(m4_cuda *st, int layer, m4_cuda_cache *cache, float *d_h, int64_t B, int64_t S,
                          const m4_cuda_positions &where, float softmax_scale, m4_error *err) {
    const m4_text_config *cfg = &st->model->config.text;
    const m4_text_layer_weights *w = &st->model->weights.layers[layer];
    const int64_t N = B * S, D = cfg->hidden_size;
    const float eps = (float)cfg->rms_norm_eps;
    const m4_dev_weight *in_norm = WEIGHT(w->input_layernorm, "input_layernorm");
    const m4_dev_weight *post_norm = in_norm ? WEIGHT(w->post_attention_layernorm, "post_attention_layernorm") : nullptr;
    if (!post_norm) return -1;
    if (in_norm->cols != D || post_norm->cols != D)
        return m4_fail(err, "decoder layer: norm weights are [%lld] and [%lld], hidden_size is %lld",
                       (long long)in_norm->cols, (long long)post_norm->cols, (long long)D);
    m4_arena arena(st->stream);
    float *normed = arena.get<float>(N * D, err), *delta = arena.get<float>(N * D, err);
    if (!normed || !delta) return -1;
    return m4k_rmsnorm(d_h, D, nullptr, nullptr, in_norm->f32(), normed, D, N, D, eps, st->stream, err) ||
           (cache ? m4_cuda_mla_cached(st, layer, cache, normed, B, S, where, softmax_scale, delta, err)
                  : m4_cuda_mla(st, layer, normed, B, S, where, softmax_scale, delta, nullptr, err)) ||
           m4k_rmsnorm(d_h, D, d_h, delta, post_norm->f32(), normed, D, N, D, eps, st->stream, err) ||
           m4_cuda_mlp(st, layer, normed, N, delta, err) || m4k_add(d_h, delta, N * D, st->stream, err);
}

int m4_cuda_embed(m4_cuda *st, const int64_t *ids, int64_t n, float *d_out, m4_error *err) {
    const m4_weight *table = &st->model->weights.embed_tokens;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= table->rows)
            return m4_fail(err, "text.embed_tokens: token id %lld at position %lld is outside the "
                                "vocabulary [0, %lld)", (long long)ids[i], (long long)i, (long long)table->rows);
    const m4_dev_weight *dw = WEIGHT(*table, "embed_tokens");
    m4_arena arena(st->stream);
    const int64_t *d_ids = dw ? arena.upload(ids, n, err) : nullptr;
    if (!d_ids) return -1;
    return dw->bf16 ? m4k_embed(dw->b16(), d_ids, n, dw->cols, d_out, st->stream, err)
                    : m4k_embed(dw->f32(), d_ids, n, dw->cols, d_out, st->stream, err);
}

/* Mistral4ForCausalLM.forward from inputs_embeds: the layers, text.norm, text.lm_head (every
 * position, or with a cache each row's last one; the cache then holds S more positions). */
int m4_cuda_text_forward(m4_cuda *st, m4_cuda_cache *cache, float *d_h, int64_t B, int64_t S,
                         const m4_cuda_positions &where, m4_softmax_scale_rule rule, float *d_logits,
                         m4_error *err) {
    const m4_text_config *cfg = &st->model->config.text;
    const m4_weights *w = &st->model->weights;
    const int64_t D = cfg->hidden_size;
    const float scale = m4_ref_mla_softmax_scale(cfg, rule);
    if (cache && cache->layers != cfg->num_hidden_layers)
        return m4_fail(err, "text forward: the kv cache has %lld layers, the model %lld", (long long)cache->layers,
                       (long long)cfg->num_hidden_layers);
    for (int64_t l = 0; l < cfg->num_hidden_layers; l++)
        if (m4_cuda_decoder_layer(st, (int)l, cache, d_h, B, S, where, scale, err)) {
            m4_fail_context(err, "text.layers.%lld", (long long)l);
            return -1;
        }
    const m4_dev_weight *norm = WEIGHT(w->norm, "norm");
    const m4_dev_weight *lm_head = norm ? WEIGHT(w->lm_head, "lm_head") : nullptr;
    if (!lm_head) return -1;
    if (norm->cols != D || lm_head->cols != D)
        return m4_fail(err, "text forward: norm [%lld] / lm_head [%lld, %lld] do not match hidden_size %lld",
                       (long long)norm->cols, (long long)lm_head->rows, (long long)lm_head->cols, (long long)D);
    /* text.norm is per row: only the rows whose logits are wanted (row b's last: h[b, S − 1]) */
    const int64_t rows = cache ? B : B * S, stride = cache ? S * D : D;
    const float *first = cache ? d_h + (S - 1) * D : d_h;
    m4_arena arena(st->stream);
    float *last = arena.get<float>(rows * D, err);
    if (!last || m4k_rmsnorm(first, stride, nullptr, nullptr, norm->f32(), last, D, rows, D, (float)cfg->rms_norm_eps,
                             st->stream, err) ||
        m4_cuda_linear(st, last, rows, *lm_head, d_logits, err))
        return -1;
    if (!cache) return 0;
    cache->length += S;
    return m4k_cache_advance(cache->d_length, S, st->stream, err);
}

int m4_cuda_upload_positions(m4_cuda *st, m4_arena &arena, const int64_t *position_ids,
                             const int64_t *attention_mask, int64_t B, int64_t S, int64_t past,
                             m4_cuda_positions *out, m4_error *err) {
    std::vector<int64_t> pos((size_t)(B * S));        /* HF's default: past + arange(S) per row */
    for (int64_t t = 0; t < B * S; t++) pos[(size_t)t] = position_ids ? position_ids[t] : past + t % S;
    out->d_pos = arena.upload(pos.data(), B * S, err);
    out->d_mask = attention_mask ? arena.upload(attention_mask, B * (past + S), err) : nullptr;
    out->mask_stride = past + S;
    return !out->d_pos || (attention_mask && !out->d_mask) ? -1 : 0;
}

int m4_cuda_cache_init(m4_cuda *st, m4_cuda_cache *cache, int64_t batch, int64_t capacity, m4_error *err) {
    const m4_text_config *cfg = &st->model->config.text;
    if (batch <= 0 || capacity <= 0)
        return m4_fail(err, "kv cache: %lld rows of %lld positions", (long long)batch, (long long)capacity);
    *cache = m4_cuda_cache();
    cache->layers = cfg->num_hidden_layers, cache->batch = batch, cache->capacity = capacity;
    cache->stride = (capacity + M4_CUDA_KEY_TILE - 1) / M4_CUDA_KEY_TILE * M4_CUDA_KEY_TILE;
    cache->bf16 = st->precision == M4_PRECISION_BF16;
    const size_t elem = cache->bf16 ? sizeof(__nv_bfloat16) : sizeof(float);
    const size_t slots = (size_t)(cache->layers * batch * cache->stride);
    const size_t c_bytes = slots * (size_t)cfg->kv_lora_rank * elem, r_bytes = slots * (size_t)cfg->qk_rope_head_dim * elem;
    M4_CUDA_TRY(cudaMalloc(&cache->d_length, sizeof(int64_t)), err);
    M4_CUDA_TRY(cudaMemset(cache->d_length, 0, sizeof(int64_t)), err);
    M4_CUDA_TRY(cudaMalloc(&cache->c_kv, c_bytes), err);
    M4_CUDA_TRY(cudaMalloc(&cache->k_rope, r_bytes), err);
    M4_CUDA_TRY(cudaMemset(cache->c_kv, 0, c_bytes), err);
    M4_CUDA_TRY(cudaMemset(cache->k_rope, 0, r_bytes), err);
    return 0;
}

int m4_cuda_cache_set_length(m4_cuda *st, m4_cuda_cache *cache, int64_t length, m4_error *err) {
    if (length < 0 || length > cache->capacity)
        return m4_fail(err, "kv cache: length %lld outside [0, %lld]", (long long)length, (long long)cache->capacity);
    M4_CUDA_TRY(cudaMemcpyAsync(cache->d_length, &length, sizeof length, cudaMemcpyHostToDevice, st->stream), err);
    M4_CUDA_TRY(cudaStreamSynchronize(st->stream), err);
    cache->length = length;
    return 0;
}

void m4_cuda_cache_free(m4_cuda_cache *cache) {
    cudaFree(cache->c_kv), cudaFree(cache->k_rope), cudaFree(cache->d_length);
    *cache = m4_cuda_cache();
}
