/* attention.cu — softmax attention in float32, one block per query (attention.cuh). */
#include <float.h>

#include <algorithm>

#include "attention.cuh"
#include "device.cuh"

namespace {

/* One block per query; dynamic shared memory holds the T scores. */
__global__ void attention_kernel(m4k_attention_args a) {
    extern __shared__ float z[];               /* [T] */
    __shared__ float scratch[32];
    const int64_t q_index = blockIdx.x, i = q_index % a.S, bh = q_index / a.S, h = bh % a.H, b = bh / a.H;
    const float *q = a.Q + q_index * a.dq;
    const int64_t lo = a.block_lo ? a.block_lo[i] : 0, hi = a.block_hi ? a.block_hi[i] : a.T;
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, warps = blockDim.x / kWarp;
    /* scores: one warp per key, lanes across the head dims */
    for (int64_t j = lo + warp; j < hi; j += warps) {
        const float *k = a.K + (bh * a.T + j) * a.dq;
        float dot = 0.0f;
        for (int64_t d = lane; d < a.dq; d += kWarp) dot += q[d] * k[d];
        dot = warp_sum(dot);
        if (lane == 0) {
            const bool allowed = (!a.causal || j <= a.causal_past + i) && (!a.mask || a.mask[b * a.T + j] != 0);
            z[j - lo] = dot * a.scale + (allowed ? 0.0f : -FLT_MAX);
        }
    }
    __syncthreads();
    const int64_t len = hi - lo;
    float m = -FLT_MAX;
    for (int64_t j = threadIdx.x; j < len; j += blockDim.x) m = fmaxf(m, z[j]);
    m = block_reduce<true>(m, scratch);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
        z[j] = expf(z[j] - m);
        sum += z[j];
    }
    sum = block_reduce<false>(sum, scratch);
    for (int64_t j = threadIdx.x; j < len; j += blockDim.x) z[j] = z[j] / sum;
    __syncthreads();
    if (a.probs) {
        float *p = a.probs + q_index * a.T;
        for (int64_t j = threadIdx.x; j < a.T; j += blockDim.x) p[j] = j >= lo && j < hi ? z[j - lo] : 0.0f;
    }
    float *o = a.O + (b * a.S + i) * a.H * a.dv + h * a.dv;
    for (int64_t d = threadIdx.x; d < a.dv; d += blockDim.x) {
        float acc = 0.0f;
        for (int64_t j = 0; j < len; j++)
            acc += z[j] * a.V[(b * a.T + lo + j) * a.v_row_stride + h * a.v_head_stride + d];
        o[d] = acc;
    }
}

} // namespace

size_t m4k_shared_memory_optin(void) {
    int device = 0, bytes = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess)
        return 0;
    return (size_t)bytes;
}

/* Scores of one query row live in shared memory: up to 48 KiB without opting in, the device's
 * opt-in limit with (227 KiB on sm_90, 99 KiB on sm_86/89), at most 200 KiB. */
static int64_t attention_max_keys(void) {
    const size_t bytes = std::min(m4k_shared_memory_optin(), (size_t)200 * 1024);
    return (int64_t)(bytes / sizeof(float));
}

bool m4k_attention_fits(const m4k_attention_args *a) { return a->T <= attention_max_keys(); }

int m4k_attention(const m4k_attention_args *a, cudaStream_t stream, m4_error *err) {
    if (a->B * a->H * a->S <= 0) return 0;
    if (!m4k_attention_fits(a))
        return m4_fail(err, "attention: %lld keys exceed this kernel's %lld on this device (its scores live in shared "
                            "memory)", (long long)a->T, (long long)attention_max_keys());
    const size_t shared = sizeof(float) * (size_t)a->T;
    if (shared > 48 * 1024)
        M4_CUDA_TRY(cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)shared), err);
    attention_kernel<<<(unsigned)(a->B * a->H * a->S), 128, shared, stream>>>(*a);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}
