/* kernels.cu — the CUDA kernels of the optimized backend (kernels.cuh says what each computes). */
#include <float.h>
#include <string.h>

#include <algorithm>

#include "device.cuh"
#include "kernels.cuh"

namespace {

/* ---- normalisation, elementwise ---------------------------------------------------------- */

/* x, x_sum and y may alias (in-place residual add and normalisation): no __restrict__ on them. */
__global__ void rmsnorm_kernel(const float *x, int64_t x_stride, float *x_sum,
                               const float *__restrict__ delta, const float *__restrict__ w, float *y,
                               int64_t y_stride, int64_t dim, float eps) {
    __shared__ float scratch[32];
    const int64_t r = blockIdx.x;
    const float *xr = x + r * x_stride;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = xr[i];
        if (delta) {
            v = v + delta[r * dim + i];
            x_sum[r * x_stride + i] = v;
        }
        ss += v * v;
    }
    const float inv_rms = 1.0f / sqrtf(block_reduce<false>(ss, scratch) / (float)dim + eps);
    const float *src = delta ? x_sum + r * x_stride : xr;   /* each thread rereads its own writes */
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) y[r * y_stride + i] = w[i] * (src[i] * inv_rms);
}

template <typename W>
__global__ void embed_kernel(const W *__restrict__ table, const int64_t *__restrict__ ids, int64_t D,
                             float *__restrict__ out) {
    const W *row = table + ids[blockIdx.x] * D;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) out[blockIdx.x * D + i] = to_float(row[i]);
}

__global__ void to_bf16_kernel(const float *__restrict__ x, __nv_bfloat16 *__restrict__ y, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void add_kernel(float *__restrict__ y, const float *__restrict__ x, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = y[i] + x[i];
}

__global__ void add_bias_kernel(float *__restrict__ y, const float *__restrict__ b, int64_t rows, int64_t cols) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * cols; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = y[i] + b[i % cols];
}

__global__ void activation_kernel(float *__restrict__ x, int64_t n, m4_activation act) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = activate(x[i], act);
}

__global__ void swiglu_kernel(const float *gate, int64_t g_stride, const float *__restrict__ up,
                              int64_t u_stride, float *out, int64_t rows, int64_t F,
                              m4_activation act) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * F; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / F, f = i % F;
        out[i] = activate(gate[r * g_stride + f], act) * up[r * u_stride + f];
    }
}

/* ---- GEMV: one warp per output row, 16-byte weight loads ---------------------------------- */

/* 16 bytes of weights: 8 bf16, 4 float32 or 16 FP8 codes, loaded raw and widened at use; FP8
 * values are then multiplied by their block's scale (kScaled). */
template <typename W> struct vec16;
template <> struct vec16<__nv_bfloat16> {
    static constexpr int n = 8;
    static constexpr bool kScaled = false;
    __device__ static void widen(const uint4 &raw, float *out) {
        const __nv_bfloat162 *pairs = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 f = __bfloat1622float2(pairs[i]);
            out[2 * i] = f.x, out[2 * i + 1] = f.y;
        }
    }
};
template <> struct vec16<float> {
    static constexpr int n = 4;
    static constexpr bool kScaled = false;
    __device__ static void widen(const uint4 &raw, float *out) {
        out[0] = __uint_as_float(raw.x), out[1] = __uint_as_float(raw.y);
        out[2] = __uint_as_float(raw.z), out[3] = __uint_as_float(raw.w);
    }
};
template <> struct vec16<__nv_fp8_e4m3> {
    static constexpr int n = 16;
    static constexpr bool kScaled = true;
    __device__ static void widen(const uint4 &raw, float *out) {
        e4m3x4_to_float(raw.x, out), e4m3x4_to_float(raw.y, out + 4);
        e4m3x4_to_float(raw.z, out + 8), e4m3x4_to_float(raw.w, out + 12);
    }
};

/* Dot products of kRows weight rows with up to kTok input rows x [ntok, cols], each summed across
 * the warp. Every lane first issues kUnroll 16-byte loads per row, then does the arithmetic: a
 * decode GEMV is all memory latency. FP8: scale_rows[r] is row r's scales over the column blocks,
 * column c's at c >> col_shift (a 16-code load lies in one block), loaded beside the codes; each
 * widened code is multiplied by it (float32, the reference's dequantised value) before use. */
template <typename W, int kTok, int kRows, int kUnroll>
__device__ void warp_rows_dots(const W *const *rows, const float *const *scale_rows, int col_shift,
                               const float *x, int64_t cols, int ntok, float (&acc)[kRows][kTok]) {
    constexpr int V = vec16<W>::n;
    const int lane = threadIdx.x % kWarp;
#pragma unroll
    for (int r = 0; r < kRows; r++)
#pragma unroll
        for (int t = 0; t < kTok; t++) acc[r][t] = 0.0f;
    for (int64_t c0 = (int64_t)lane * V; c0 < cols; c0 += kWarp * V * kUnroll) {
        uint4 raw[kRows][kUnroll];
        float scale[kRows][kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; u++)
#pragma unroll
            for (int r = 0; r < kRows; r++) {
                const int64_t c = c0 + (int64_t)u * kWarp * V;
                raw[r][u] = c < cols ? __ldg(reinterpret_cast<const uint4 *>(rows[r] + c)) : make_uint4(0, 0, 0, 0);
                if constexpr (vec16<W>::kScaled) scale[r][u] = c < cols ? __ldg(scale_rows[r] + (c >> col_shift)) : 0.0f;
            }
#pragma unroll
        for (int u = 0; u < kUnroll; u++) {
            const int64_t c = c0 + (int64_t)u * kWarp * V;
            if (c >= cols) break;
#pragma unroll
            for (int r = 0; r < kRows; r++) {
                float wv[V];
                vec16<W>::widen(raw[r][u], wv);
                if constexpr (vec16<W>::kScaled) {
#pragma unroll
                    for (int i = 0; i < V; i++) wv[i] = __fmul_rn(wv[i], scale[r][u]);
                }
#pragma unroll
                for (int t = 0; t < kTok; t++) {
                    if (t >= ntok) break;
                    const float4 *xv = reinterpret_cast<const float4 *>(x + t * cols + c);
#pragma unroll
                    for (int q = 0; q < V / 4; q++) {
                        const float4 xq = xv[q];
                        acc[r][t] += wv[4 * q] * xq.x + wv[4 * q + 1] * xq.y + wv[4 * q + 2] * xq.z + wv[4 * q + 3] * xq.w;
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < kRows; r++)
#pragma unroll
        for (int t = 0; t < kTok; t++) acc[r][t] = warp_sum(acc[r][t]);
}

/* One warp per output row (or gate/up row pair); the block first copies its input rows to shared
 * memory when they fit (x_in_shared), so the inner loop reads them from there. FP8: `sc` and
 * col_shift locate the scales (unused otherwise). */
template <typename W, bool kSwiglu, int kUnroll>
__global__ void gemv_kernel(const W *__restrict__ Wt, int64_t rows, int64_t cols,
                            const int32_t *__restrict__ expert, const float *__restrict__ x,
                            int64_t x_div, int ntok, float *__restrict__ y, m4_activation act,
                            bool x_in_shared, m4k_fp8_scales sc, int col_shift) {
    extern __shared__ float x_shared[];        /* [ntok, cols] when x_in_shared */
    constexpr int kRows = kSwiglu ? 2 : 1;
    const int64_t g = blockIdx.y;
    const int64_t out_rows = kSwiglu ? rows / 2 : rows;
    const float *xg = x + (g / x_div) * ntok * cols;
    if (x_in_shared) {
        for (int64_t i = threadIdx.x; i < ntok * cols / 4; i += blockDim.x)
            reinterpret_cast<float4 *>(x_shared)[i] = reinterpret_cast<const float4 *>(xg)[i];
        __syncthreads();
        xg = x_shared;
    }
    const int64_t e = expert ? (int64_t)expert[g] : 0;
    const W *m = Wt + e * rows * cols;
    float *yg = y + g * ntok * out_rows;
    int64_t scale_rows = 0, scale_cols = 0;                /* FP8: the scale array's blocks per matrix */
    if constexpr (vec16<W>::kScaled)
        scale_rows = m4_fp8_blocks(rows, sc.block_rows), scale_cols = m4_fp8_blocks(cols, sc.block_cols);
    const int64_t warps = blockDim.x / kWarp;
    /* grid-stride over the rows: a launch of about one wave, each warp streaming several rows */
    for (int64_t r = (int64_t)blockIdx.x * warps + threadIdx.x / kWarp; r < out_rows; r += (int64_t)gridDim.x * warps) {
        const W *row_ptrs[kRows];
        const float *scale_ptrs[kRows];
        row_ptrs[0] = m + r * cols;
        if (kSwiglu) row_ptrs[kRows - 1] = m + (out_rows + r) * cols;
        if constexpr (vec16<W>::kScaled) {
            scale_ptrs[0] = sc.scale + (e * scale_rows + r / sc.block_rows) * scale_cols;
            if (kSwiglu) scale_ptrs[kRows - 1] = sc.scale + (e * scale_rows + (out_rows + r) / sc.block_rows) * scale_cols;
        }
        float acc[kRows][M4_CUDA_GEMV_MAX_TOKENS];
        warp_rows_dots<W, M4_CUDA_GEMV_MAX_TOKENS, kRows, kUnroll>(row_ptrs, scale_ptrs, col_shift, xg, cols, ntok, acc);
        if (threadIdx.x % kWarp != 0) continue;
#pragma unroll
        for (int t = 0; t < M4_CUDA_GEMV_MAX_TOKENS; t++) {
            if (t >= ntok) break;
            yg[t * out_rows + r] = kSwiglu ? activate(acc[0][t], act) * acc[kRows - 1][t] : acc[0][t];
        }
    }
}

/* One block per row of the range: out row (r − row0) = bf16_rn(float(code) · scale) over the row's
 * columns, one code per thread step (coalesced bytes; the scale's column block by a 32-bit
 * division, any block size). The product is rounded once to float32 (no FMA can form: nothing is
 * added), then to bf16 — the host's __float2bfloat16_rn(m4_weight_row_f32(...)) bit for bit. */
__global__ void fp8_to_bf16_kernel(const uint8_t *__restrict__ W, m4k_fp8_scales sc, int64_t rows, int64_t cols,
                                   int64_t row0, __nv_bfloat16 *__restrict__ out) {
    const int64_t r = row0 + blockIdx.x;
    const uint32_t bc = (uint32_t)(sc.block_cols < cols ? sc.block_cols : cols);
    const float *srow = sc.scale + (r / sc.block_rows) * m4_fp8_blocks(cols, sc.block_cols);
    const uint8_t *src = W + r * cols;
    __nv_bfloat16 *dst = out + (int64_t)blockIdx.x * cols;
    for (uint32_t c = threadIdx.x; c < (uint32_t)cols; c += blockDim.x) {
        const float v = __half2float(__half(__nv_cvt_fp8_to_halfraw(src[c], __NV_E4M3)));   /* exact */
        dst[c] = __float2bfloat16_rn(__fmul_rn(v, srow[c / bc]));
    }
}

/* Multiprocessors of the current device (read once). */
int sm_count() {
    static int count = 0;
    if (count == 0) {
        int device = 0;
        if (cudaGetDevice(&device) != cudaSuccess ||
            cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count <= 0)
            count = 1;
    }
    return count;
}

/* ---- RoPE, keys, attention ----------------------------------------------------------------- */

__global__ void rope_kernel(const float *__restrict__ x, int64_t x_stride, int64_t x_head_stride,
                            int64_t S, int64_t H, int64_t dn, int64_t dr, const float *__restrict__ cos_t,
                            const float *__restrict__ sin_t, const float *__restrict__ l4, int interleave,
                            float *__restrict__ out) {
    const int64_t t = blockIdx.x, h = blockIdx.y, b = t / S, s = t % S, half = dr / 2, dq = dn + dr;
    const float *xh = x + t * x_stride + h * x_head_stride;
    float *o = out + ((b * H + h) * S + s) * dq;
    const float scale = l4 ? l4[t] : 1.0f;
    for (int64_t d = threadIdx.x; d < dq; d += blockDim.x) {
        float v;
        if (d < dn) {
            v = xh[d];
        } else {
            const int64_t i = (d - dn) % half;
            const float *xr = xh + dn;
            const float a = interleave ? xr[2 * i] : xr[i], bb = interleave ? xr[2 * i + 1] : xr[half + i];
            const float c = cos_t[t * half + i], sn = sin_t[t * half + i];
            /* __fmul_rn keeps the two products rounded apart, as the reference computes them */
            v = d - dn < half ? __fmul_rn(a, c) - __fmul_rn(bb, sn) : __fmul_rn(bb, c) + __fmul_rn(a, sn);
        }
        o[d] = l4 ? v * scale : v;
    }
}

__global__ void rope_tables_kernel(const int64_t *__restrict__ pos, const float *__restrict__ inv_freq, int64_t half,
                                   float attention_factor, bool has_beta, float beta, int64_t L, float *__restrict__ cos_t,
                                   float *__restrict__ sin_t, float *__restrict__ l4) {
    const int64_t t = blockIdx.x;
    const float p = (float)pos[t];
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
        const float theta = p * inv_freq[i];
        cos_t[t * half + i] = cosf(theta) * attention_factor;
        sin_t[t * half + i] = sinf(theta) * attention_factor;
    }
    if (threadIdx.x == 0) l4[t] = has_beta ? 1.0f + beta * logf(1.0f + floorf(p / (float)L)) : 1.0f;
}

__global__ void mla_keys_kernel(const float *__restrict__ kvb, const float *__restrict__ k_rope,
                                int64_t rope_row_stride, int64_t T, int64_t H, int64_t dn, int64_t dr,
                                int64_t dv, float *__restrict__ K) {
    const int64_t bj = blockIdx.x, b = bj / T, j = bj % T, h = blockIdx.y, dq = dn + dr;
    float *k = K + ((b * H + h) * T + j) * dq;
    for (int64_t d = threadIdx.x; d < dq; d += blockDim.x)
        k[d] = d < dn ? kvb[bj * H * (dn + dv) + h * (dn + dv) + d] : k_rope[b * rope_row_stride * dr + j * dr + d - dn];
}

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

/* ---- the MoE: router, permutation, combine ------------------------------------------------ */

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

/* ---- vision: im2col, layouts, unfold, merge ------------------------------------------------ */

__global__ void im2col_kernel(const float *__restrict__ pixels, int64_t C, int64_t Hpx, int64_t Wpx,
                              int64_t p, const int32_t *img, const int32_t *pr, const int32_t *pc,
                              float *__restrict__ cols) {
    const int64_t r = blockIdx.x, K = C * p * p;
    const float *src = pixels + (int64_t)img[r] * C * Hpx * Wpx;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
        const int64_t c = k / (p * p), i = (k / p) % p, j = k % p;
        cols[r * K + k] = src[(c * Hpx + pr[r] * p + i) * Wpx + pc[r] * p + j];
    }
}

__global__ void to_channels_first_kernel(const float *__restrict__ x, int64_t L, int64_t Dv, float *__restrict__ out) {
    const int64_t row = blockIdx.x, n = row / L, l = row % L;
    for (int64_t d = threadIdx.x; d < Dv; d += blockDim.x) out[(n * Dv + d) * L + l] = x[row * Dv + d];
}

__global__ void unfold_kernel(const float *__restrict__ x, const int32_t *__restrict__ src, int64_t m2,
                              int64_t Dv, float *__restrict__ out) {
    const int64_t r = blockIdx.x;
    for (int64_t e = threadIdx.x; e < Dv * m2; e += blockDim.x) {
        const int64_t ch = e / m2, k = e % m2;
        out[r * Dv * m2 + e] = x[(int64_t)src[r * m2 + k] * Dv + ch];
    }
}

/* embeds and out may be the same buffer (the merge runs in place on the embeddings). */
__global__ void merge_rows_kernel(const float *embeds, const float *__restrict__ features,
                                  const int32_t *__restrict__ src, int64_t D, float *out) {
    const int64_t i = blockIdx.x;
    const float *from = src[i] >= 0 ? features + (int64_t)src[i] * D : embeds + i * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) out[i * D + d] = from[d];
}

constexpr int kThreads = 256;
int grid_stride_blocks(int64_t n) {
    const int64_t blocks = (n + kThreads - 1) / kThreads;
    return (int)(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

} // namespace

m4k_gemv_tuning m4k_gemv_config;
/* ---- launchers ------------------------------------------------------------------------------ */

int m4k_rmsnorm(const float *x, int64_t x_stride, float *x_sum, const float *delta, const float *w,
                float *y, int64_t y_stride, int64_t rows, int64_t dim, float eps, cudaStream_t stream,
                m4_error *err) {
    if (rows <= 0) return 0;
    rmsnorm_kernel<<<(unsigned)rows, kThreads, 0, stream>>>(x, x_stride, x_sum, delta, w, y, y_stride, dim, eps);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

template <typename W>
int m4k_embed(const W *table, const int64_t *ids, int64_t n, int64_t D, float *out, cudaStream_t stream,
              m4_error *err) {
    if (n <= 0) return 0;
    embed_kernel<W><<<(unsigned)n, kThreads, 0, stream>>>(table, ids, D, out);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}
template int m4k_embed<float>(const float *, const int64_t *, int64_t, int64_t, float *, cudaStream_t, m4_error *);
template int m4k_embed<__nv_bfloat16>(const __nv_bfloat16 *, const int64_t *, int64_t, int64_t, float *,
                                      cudaStream_t, m4_error *);

int m4k_to_bf16(const float *x, __nv_bfloat16 *y, int64_t n, cudaStream_t stream, m4_error *err) {
    if (n <= 0) return 0;
    to_bf16_kernel<<<grid_stride_blocks(n), kThreads, 0, stream>>>(x, y, n);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

int m4k_add(float *y, const float *x, int64_t n, cudaStream_t stream, m4_error *err) {
    if (n <= 0) return 0;
    add_kernel<<<grid_stride_blocks(n), kThreads, 0, stream>>>(y, x, n);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

int m4k_add_bias(float *y, const float *b, int64_t rows, int64_t cols, cudaStream_t stream, m4_error *err) {
    if (rows * cols <= 0) return 0;
    add_bias_kernel<<<grid_stride_blocks(rows * cols), kThreads, 0, stream>>>(y, b, rows, cols);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

int m4k_activation(float *x, int64_t n, m4_activation act, cudaStream_t stream, m4_error *err) {
    if (n <= 0) return 0;
    activation_kernel<<<grid_stride_blocks(n), kThreads, 0, stream>>>(x, n, act);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

int m4k_swiglu(const float *gate, int64_t g_stride, const float *up, int64_t u_stride, float *out,
               int64_t rows, int64_t F, m4_activation act, cudaStream_t stream, m4_error *err) {
    if (rows * F <= 0) return 0;
    swiglu_kernel<<<grid_stride_blocks(rows * F), kThreads, 0, stream>>>(gate, g_stride, up, u_stride, out, rows, F, act);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

template <typename W>
int m4k_gemv(const W *Wt, int64_t rows, int64_t cols, const int32_t *expert, int64_t groups,
             const float *x, int64_t x_div, int ntok, float *y, bool swiglu, m4_activation act,
             cudaStream_t stream, m4_error *err, const m4k_fp8_scales *scales) {
    constexpr int V = vec16<W>::n;                 /* weights per 16-byte load: cols must be a multiple */
    if (ntok < 1 || ntok > M4_CUDA_GEMV_MAX_TOKENS || cols % (V > 8 ? V : 8) != 0 || (swiglu && rows % 2 != 0))
        return m4_fail(err, "gemv: unsupported shape (%d tokens, [%lld, %lld]%s): needs cols a multiple of %d", ntok,
                       (long long)rows, (long long)cols, swiglu ? ", gate_up" : "", V > 8 ? V : 8);
    m4k_fp8_scales sc;
    int col_shift = 0;
    if constexpr (vec16<W>::kScaled) {
        if (!scales || !scales->scale || scales->block_rows < 1)
            return m4_fail(err, "gemv: an FP8 weight needs its scales and block size");
        sc = *scales;
        col_shift = m4_fp8_col_shift(cols, sc.block_cols, V);
        if (col_shift < 0)
            return m4_fail(err, "gemv: FP8 column blocks of %lld over %lld columns: the kernel needs one block over "
                                "the width or a power of two that is a multiple of %d",
                           (long long)sc.block_cols, (long long)cols, V);
    }
    if (groups <= 0) return 0;
    const int warps = kThreads / kWarp;
    const int64_t out_rows = swiglu ? rows / 2 : rows;
    /* m4k_gemv_config.blocks_per_sm blocks per multiprocessor over all groups, each looping over rows */
    const m4k_gemv_tuning &tune = m4k_gemv_config;
    int64_t blocks = (out_rows + warps - 1) / warps;
    const int64_t wave = ((int64_t)tune.blocks_per_sm * sm_count() + groups - 1) / groups;
    if (blocks > wave) blocks = wave;
    dim3 grid((unsigned)blocks, (unsigned)groups);
    const size_t x_bytes = sizeof(float) * (size_t)(ntok * cols);
    const bool x_in_shared = tune.x_in_shared && x_bytes <= 32 * 1024;   /* leaves room for several blocks per SM */
    const size_t shared = x_in_shared ? x_bytes : 0;
#define M4_GEMV_LAUNCH(SWIGLU, UNROLL)                                                               \
    gemv_kernel<W, SWIGLU, UNROLL><<<grid, kThreads, shared, stream>>>(Wt, rows, cols, expert, x, x_div, ntok, y, \
                                                                       act, x_in_shared, sc, col_shift)
    switch ((swiglu ? 10 : 0) + tune.unroll) {
    case 2: M4_GEMV_LAUNCH(false, 2); break;
    case 8: M4_GEMV_LAUNCH(false, 8); break;
    case 12: M4_GEMV_LAUNCH(true, 2); break;
    case 18: M4_GEMV_LAUNCH(true, 8); break;
    case 14: M4_GEMV_LAUNCH(true, 4); break;
    default: M4_GEMV_LAUNCH(false, 4); break;
    }
#undef M4_GEMV_LAUNCH
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}
template int m4k_gemv<float>(const float *, int64_t, int64_t, const int32_t *, int64_t, const float *,
                             int64_t, int, float *, bool, m4_activation, cudaStream_t, m4_error *,
                             const m4k_fp8_scales *);
template int m4k_gemv<__nv_bfloat16>(const __nv_bfloat16 *, int64_t, int64_t, const int32_t *, int64_t,
                                     const float *, int64_t, int, float *, bool, m4_activation,
                                     cudaStream_t, m4_error *, const m4k_fp8_scales *);
template int m4k_gemv<__nv_fp8_e4m3>(const __nv_fp8_e4m3 *, int64_t, int64_t, const int32_t *, int64_t,
                                     const float *, int64_t, int, float *, bool, m4_activation,
                                     cudaStream_t, m4_error *, const m4k_fp8_scales *);

int m4k_fp8_to_bf16(const __nv_fp8_e4m3 *W, const m4k_fp8_scales &scales, int64_t rows, int64_t cols,
                    int64_t row0, int64_t n_rows, __nv_bfloat16 *out, cudaStream_t stream, m4_error *err) {
    if (!scales.scale || scales.block_rows < 1 || scales.block_cols < 1 || row0 < 0 || n_rows < 0 ||
        row0 + n_rows > rows || cols < 0 || cols > INT32_MAX || n_rows > INT32_MAX)
        return m4_fail(err, "fp8 → bf16: rows [%lld, %lld) of [%lld, %lld] with %lld x %lld blocks", (long long)row0,
                       (long long)(row0 + n_rows), (long long)rows, (long long)cols, (long long)scales.block_rows,
                       (long long)scales.block_cols);
    if (n_rows == 0 || cols == 0) return 0;
    fp8_to_bf16_kernel<<<(unsigned)n_rows, kThreads, 0, stream>>>(reinterpret_cast<const uint8_t *>(W), scales, rows,
                                                                 cols, row0, out);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

int m4k_rope(const float *x, int64_t x_stride, int64_t x_head_stride, int64_t B, int64_t S, int64_t H,
             int64_t dn, int64_t dr, const float *cos_t, const float *sin_t, const float *l4,
             int interleave, float *out, cudaStream_t stream, m4_error *err) {
    if (B * S <= 0) return 0;
    rope_kernel<<<dim3((unsigned)(B * S), (unsigned)H), 64, 0, stream>>>(
        x, x_stride, x_head_stride, S, H, dn, dr, cos_t, sin_t, l4, interleave, out);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

int m4k_rope_tables(const int64_t *pos, int64_t N, const float *inv_freq, int64_t half, float attention_factor,
                    bool has_beta, float beta, int64_t L, float *cos_t, float *sin_t, float *l4, cudaStream_t stream,
                    m4_error *err) {
    if (N <= 0) return 0;
    rope_tables_kernel<<<(unsigned)N, 64, 0, stream>>>(pos, inv_freq, half, attention_factor, has_beta, beta, L, cos_t, sin_t, l4);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

int m4k_mla_keys(const float *kvb, const float *k_rope, int64_t rope_row_stride, int64_t B, int64_t T,
                 int64_t H, int64_t dn, int64_t dr, int64_t dv, float *K, cudaStream_t stream,
                 m4_error *err) {
    if (B * T <= 0) return 0;
    mla_keys_kernel<<<dim3((unsigned)(B * T), (unsigned)H), 64, 0, stream>>>(kvb, k_rope, rope_row_stride,
                                                                          T, H, dn, dr, dv, K);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

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

int m4k_im2col(const float *pixels, int64_t C, int64_t Hpx, int64_t Wpx, int64_t p, const int32_t *img,
               const int32_t *pr, const int32_t *pc, int64_t n_rows, float *cols, cudaStream_t stream,
               m4_error *err) {
    if (n_rows <= 0) return 0;
    im2col_kernel<<<(unsigned)n_rows, kThreads, 0, stream>>>(pixels, C, Hpx, Wpx, p, img, pr, pc, cols);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

int m4k_to_channels_first(const float *x, int64_t n_img, int64_t L, int64_t Dv, float *out,
                          cudaStream_t stream, m4_error *err) {
    if (n_img * L <= 0) return 0;
    to_channels_first_kernel<<<(unsigned)(n_img * L), kThreads, 0, stream>>>(x, L, Dv, out);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

int m4k_unfold(const float *x, const int32_t *src, int64_t M, int64_t m2, int64_t Dv, float *out,
               cudaStream_t stream, m4_error *err) {
    if (M <= 0) return 0;
    unfold_kernel<<<(unsigned)M, kThreads, 0, stream>>>(x, src, m2, Dv, out);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

int m4k_merge_rows(const float *embeds, const float *features, const int32_t *src, int64_t n, int64_t D,
                   float *out, cudaStream_t stream, m4_error *err) {
    if (n <= 0) return 0;
    merge_rows_kernel<<<(unsigned)n, kThreads, 0, stream>>>(embeds, features, src, D, out);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}
