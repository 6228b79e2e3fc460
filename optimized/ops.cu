/* ops.cu — the plain C entry point of cuda_backend.h's device discovery, for callers that are not
 * CUDA C++. */
#include "cuda_backend.h"
#include "common.cuh"

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
