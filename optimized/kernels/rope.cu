/* rope.cu — RoPE on the device: the rotation into head-major layout, the position tables, the
 * MLA keys (rope.cuh says what each computes). */
#include "rope.cuh"

namespace {

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

} // namespace

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
