/* vision.cu — the vision tower's layout kernels: patch im2col, channels-first, the patch merger's
 * unfold, the image-feature merge (vision.cuh says what each computes). */
#include "vision.cuh"

namespace {

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

} // namespace

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
