/* ops.cu — elementwise and normalisation kernels shared by every model part. */
#include "common.cuh"
#include "cuda_backend.h"

extern "C" int m4_cuda_device_count(int *count, m4_error *err) {
    *count = 0;
    cudaError_t status = cudaGetDeviceCount(count);
    if (status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver) {
        cudaGetLastError(); /* clear the sticky-free error so later calls start clean */
        *count = 0;
        return 0;
    }
    M4_CUDA_TRY(status, err);
    return 0;
}

/* One block per row; a block-wide float32 sum of squares, then each thread scales its columns.
 * x, y [rows, n]; w [n]. */
__global__ void rmsnorm_f32_kernel(const float *__restrict__ x, const float *__restrict__ w,
                                   float *__restrict__ y, int n, float eps) {
    const float *xr = x + (size_t)blockIdx.x * n;
    float *yr = y + (size_t)blockIdx.x * n;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) sum += xr[i] * xr[i];
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    __shared__ float warp_sums[32];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) warp_sums[warp] = sum;
    __syncthreads();
    if (warp == 0) {
        sum = lane < (int)(blockDim.x / 32) ? warp_sums[lane] : 0.0f;
        for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
        if (lane == 0) warp_sums[0] = sum;
    }
    __syncthreads();
    float inv_rms = rsqrtf(warp_sums[0] / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = w[i] * (xr[i] * inv_rms);
}

extern "C" int m4_cuda_rmsnorm_f32(const float *d_x, const float *d_w, float *d_y, int rows, int n,
                                   float eps, m4_error *err) {
    if (rows == 0) return 0;
    m4_nvtx_range range("rmsnorm");
    rmsnorm_f32_kernel<<<rows, 256>>>(d_x, d_w, d_y, n, eps);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}
