/* moe.cuh — the mixture of experts around the expert GEMMs (moe.cu): the router's top-K, the
 * token → expert permutation, the row gather and the weighted combine. The expert products
 * themselves are gemv.cuh's (decode) and grouped_gemm.cuh's (prefill). Launcher conventions:
 * common.cuh. */
#ifndef M4_KERNELS_MOE_CUH
#define M4_KERNELS_MOE_CUH

#include <stdint.h>

#include "common.cuh"

extern "C" {
#include "config.h"
}

/* Largest K (num_experts_per_tok) the routing kernels handle (the model has 4). */
#define M4_CUDA_MAX_TOPK 16

/* Router: per token, softmax (or sigmoid + bias) of logits [N, E], group-limited top-K (ties to the
 * lower id), weights renormalised when norm_topk_prob and × routed_scaling_factor. ids [N, K]. */
int m4k_router_topk(const float *logits, const float *bias, int64_t N, const m4_text_config *cfg,
                    int32_t *ids, float *weights, cudaStream_t stream, m4_error *err);

/* Token → expert permutation (deterministic: tokens in order within an expert): counts[E],
 * offsets[E + 1], slot_token[N·K] (the token of each sorted slot), slot_of[N·K] (the sorted slot of
 * routing entry t·K + k). */
int m4k_moe_permute(const int32_t *ids, int64_t N, int64_t K, int64_t E, int32_t *counts,
                    int32_t *offsets, int32_t *slot_token, int32_t *slot_of, cudaStream_t stream,
                    m4_error *err);

/* xs[s, :] = x[rows[s], :] for s < n (D columns). */
int m4k_gather_rows(const float *x, const int32_t *rows, int64_t n, int64_t D, float *xs,
                    cudaStream_t stream, m4_error *err);

/* Weighted un-permute: out[t] = Σ over the token's K slots in ascending expert id of
 * y[slot_of[t·K + k]] · weights[t·K + k] (each product rounded, then added, from zero), then
 * + shared[t] when shared is non-NULL. y [N·K, D]; slot_of NULL: y is in routing order. */
int m4k_moe_combine(const float *y, const int32_t *slot_of, const int32_t *ids, const float *weights,
                    const float *shared, int64_t N, int64_t K, int64_t D, float *out,
                    cudaStream_t stream, m4_error *err);

#endif
