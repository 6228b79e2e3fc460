/* moe.cu — the MoE around the expert GEMMs: router, token → expert permutation, row gather and
 * the weighted combine (moe.cuh says what each computes). */
#include <float.h>

#include "device.cuh"
#include "moe.cuh"

namespace {

/* Index of the largest v[i] (i < n) with !taken[i]; ties to the lower index. Single thread. */
__device__ int argmax_free(const float *v, const bool *taken, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (!taken[i] && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

/* One block per token. Shared: scores [E], choice [E], taken [E], group scores [G]. The selection
 * runs on one thread: it is K passes over E = 128 values, not worth a parallel sort. */
__global__ void router_kernel(const float *__restrict__ logits, const float *__restrict__ bias, int E,
                              int K, int G, int topk_group, bool sigmoid, bool norm_topk,
                              float routed_scale, int32_t *__restrict__ ids, float *__restrict__ weights) {
    extern __shared__ float shm[];
    float *scores = shm, *choice = shm + E, *group_scores = shm + 2 * E;
    bool *taken = reinterpret_cast<bool *>(shm + 2 * E + G);
    __shared__ float scratch[32];
    const float *l = logits + (int64_t)blockIdx.x * E;
    float m = -FLT_MAX;
    for (int e = threadIdx.x; e < E; e += blockDim.x) m = fmaxf(m, l[e]);
    m = block_reduce<true>(m, scratch);
    float sum = 0.0f;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        if (sigmoid) {
            scores[e] = 1.0f / (1.0f + expf(-l[e]));
            choice[e] = scores[e] + bias[e];
        } else {
            scores[e] = expf(l[e] - m);
            sum += scores[e];
        }
    }
    if (!sigmoid) {
        sum = block_reduce<false>(sum, scratch);
        for (int e = threadIdx.x; e < E; e += blockDim.x) choice[e] = scores[e] = scores[e] / sum;
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    const int per_group = E / G;
    if (G > 1) {
        for (int g = 0; g < G; g++) {
            const float *c = choice + g * per_group;
            for (int e = 0; e < per_group; e++) taken[e] = false;
            int first = argmax_free(c, taken, per_group);
            taken[first] = true;
            int second = argmax_free(c, taken, per_group);
            group_scores[g] = c[first] + c[second];
        }
        for (int g = 0; g < G; g++) taken[g] = false;
        for (int k = 0; k < topk_group; k++) taken[argmax_free(group_scores, taken, G)] = true;
        for (int g = 0; g < G; g++)
            if (!taken[g])
                for (int e = 0; e < per_group; e++) choice[g * per_group + e] = 0.0f;
    }
    for (int e = 0; e < E; e++) taken[e] = false;
    int32_t *id = ids + (int64_t)blockIdx.x * K;
    float *wt = weights + (int64_t)blockIdx.x * K;
    for (int k = 0; k < K; k++) {
        id[k] = argmax_free(choice, taken, E);
        taken[id[k]] = true;
        wt[k] = scores[id[k]];
    }
    if (norm_topk) {
        float denominator = 0.0f;
        for (int k = 0; k < K; k++) denominator += wt[k];
        denominator = denominator + 1e-20f;
        for (int k = 0; k < K; k++) wt[k] = wt[k] / denominator;
    }
    for (int k = 0; k < K; k++) wt[k] = wt[k] * routed_scale;
}

/* One thread per expert, each scanning the routing in token order (deterministic, O(E·N·K) reads
 * spread over E threads). Pass 1 counts, one thread scans, pass 2 places. */
__global__ void moe_permute_kernel(const int32_t *__restrict__ ids, int64_t NK, int64_t K, int E,
                                   int32_t *counts, int32_t *offsets, int32_t *slot_token, int32_t *slot_of) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int32_t c = 0;
        for (int64_t i = 0; i < NK; i++) c += ids[i] == e;
        counts[e] = c;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        offsets[0] = 0;
        for (int e = 0; e < E; e++) offsets[e + 1] = offsets[e] + counts[e];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int32_t slot = offsets[e];
        for (int64_t i = 0; i < NK; i++)
            if (ids[i] == e) {
                slot_token[slot] = (int32_t)(i / K);
                slot_of[i] = slot++;
            }
    }
}

__global__ void gather_rows_kernel(const float *__restrict__ x, const int32_t *__restrict__ rows, int64_t D,
                                   float *__restrict__ xs) {
    const float *src = x + (int64_t)rows[blockIdx.x] * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) xs[blockIdx.x * D + d] = src[d];
}

/* One block per token; its K routing entries are visited in ascending (expert id, k) order, each
 * found by a scan so that no run-time-indexed array lands in local memory. */
__global__ void moe_combine_kernel(const float *__restrict__ y, const int32_t *__restrict__ slot_of,
                                   const int32_t *__restrict__ ids, const float *__restrict__ weights,
                                   const float *__restrict__ shared, int64_t K, int64_t D,
                                   float *__restrict__ out) {
    const int64_t t = blockIdx.x;
    const int32_t *id = ids + t * K;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        int64_t k_prev = -1;
        for (int64_t n = 0; n < K; n++) {
            int64_t k_next = -1;                   /* the smallest (id, k) above the previous one */
            for (int64_t k = 0; k < K; k++) {
                const bool after = k_prev < 0 || id[k] > id[k_prev] || (id[k] == id[k_prev] && k > k_prev);
                if (after && (k_next < 0 || id[k] < id[k_next])) k_next = k;
            }
            k_prev = k_next;
            const int64_t entry = t * K + k_next, slot = slot_of ? slot_of[entry] : entry;
            acc += __fmul_rn(y[slot * D + d], weights[entry]);
        }
        out[t * D + d] = shared ? acc + shared[t * D + d] : acc;
    }
}

constexpr int kThreads = 256;

} // namespace

int m4k_router_topk(const float *logits, const float *bias, int64_t N, const m4_text_config *cfg,
                    int32_t *ids, float *weights, cudaStream_t stream, m4_error *err) {
    const int E = (int)cfg->n_routed_experts, K = (int)cfg->num_experts_per_tok, G = (int)cfg->n_group;
    if (N <= 0) return 0;
    if (K > M4_CUDA_MAX_TOPK) return m4_fail(err, "router: num_experts_per_tok %d exceeds %d", K, M4_CUDA_MAX_TOPK);
    const size_t shared = sizeof(float) * (size_t)(2 * E + G) + (size_t)(E > G ? E : G);
    if (shared > 48 * 1024) return m4_fail(err, "router: %d experts need %zu bytes of shared memory", E, shared);
    router_kernel<<<(unsigned)N, 128, shared, stream>>>(logits, bias, E, K, G, (int)cfg->topk_group,
                                                      cfg->scoring_func == M4_ROUTER_SIGMOID,
                                                      cfg->norm_topk_prob, (float)cfg->routed_scaling_factor,
                                                      ids, weights);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

int m4k_moe_permute(const int32_t *ids, int64_t N, int64_t K, int64_t E, int32_t *counts,
                    int32_t *offsets, int32_t *slot_token, int32_t *slot_of, cudaStream_t stream,
                    m4_error *err) {
    moe_permute_kernel<<<1, 1024, 0, stream>>>(ids, N * K, K, (int)E, counts, offsets, slot_token, slot_of);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

int m4k_gather_rows(const float *x, const int32_t *rows, int64_t n, int64_t D, float *xs,
                    cudaStream_t stream, m4_error *err) {
    if (n <= 0) return 0;
    gather_rows_kernel<<<(unsigned)n, kThreads, 0, stream>>>(x, rows, D, xs);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

int m4k_moe_combine(const float *y, const int32_t *slot_of, const int32_t *ids, const float *weights,
                    const float *shared, int64_t N, int64_t K, int64_t D, float *out, cudaStream_t stream,
                    m4_error *err) {
    if (K > M4_CUDA_MAX_TOPK) return m4_fail(err, "moe combine: K = %lld exceeds %d", (long long)K, M4_CUDA_MAX_TOPK);
    if (N <= 0) return 0;
    moe_combine_kernel<<<(unsigned)N, kThreads, 0, stream>>>(y, slot_of, ids, weights, shared, K, D, out);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}
