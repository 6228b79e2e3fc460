/* ops.cu — the plain C entry points of cuda_backend.h (device discovery, RMSNorm on device
 * pointers) for callers that are not CUDA C++. */
#include "cuda_backend.h"
#include "kernels/norm.cuh"

extern "C" int m4_cuda_device_count(int *count, m4_error *err) {
    *count = 0;
    cudaError_t status = cudaGetDeviceCount(count);
    if (status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver) {
        cudaGetLastError(); /* clear the error so later calls start clean */
        *count = 0;
        return 0;
    }
    M4_CUDA_TRY(status, err);
    return 0;
}

extern "C" int m4_cuda_rmsnorm_f32(const float *d_x, const float *d_w, float *d_y, int rows, int n,
                                   float eps, m4_error *err) {
    m4_nvtx_range range("rmsnorm");
    return m4k_rmsnorm(d_x, n, nullptr, nullptr, d_w, d_y, n, rows, n, eps, 0, err);
}
