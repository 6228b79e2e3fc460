/* norm.cu — normalisation and elementwise kernels (norm.cuh says what each computes). */
#include "device.cuh"
#include "norm.cuh"

namespace {

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

constexpr int kThreads = 256;

int grid_stride_blocks(int64_t n) {
    const int64_t blocks = (n + kThreads - 1) / kThreads;
    return (int)(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

} // namespace

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
