/* common.cuh — what every CUDA file of the optimized backend shares: error checks that turn a
 * failing CUDA call into an m4_error (never an abort), and NVTX ranges named after components.
 *
 * The kernels live by component in kernels/ (norm, gemv, rope, attention, flash_attention,
 * latent_attention, moe, grouped_gemm, vision), each .cu with one .cuh declaring its host launch
 * functions. Their conventions: activations are float32 on the device in both precisions;
 * weights are float32 (precision fp32) or bf16 (precision bf16), or on the bf16 path FP8 e4m3
 * codes with block scales (__nv_fp8_e4m3 + m4k_fp8_scales, gemv.cuh), hence the templates over the
 * weight type W. Every launcher enqueues on `stream`, checks the launch, and returns 0 or -1 with
 * `err` set. Shapes in the comments use reference.h's notation (N tokens, D hidden, H heads,
 * dq/dn/dr/dv head dims, E experts, K experts per token, F expert hidden). Device-side helpers
 * the kernel files share: kernels/device.cuh. */
#ifndef M4_CUDA_COMMON_CUH
#define M4_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

extern "C" {
#include "m4_error.h"
}

/* Evaluates a CUDA runtime call; on failure fills `err` and returns -1 from the caller. */
#define M4_CUDA_TRY(call, err)                                                                     \
    do {                                                                                           \
        cudaError_t m4_status_ = (call);                                                           \
        if (m4_status_ != cudaSuccess)                                                             \
            return m4_fail((err), "%s:%d: %s: %s", __FILE__, __LINE__, #call,                      \
                           cudaGetErrorString(m4_status_));                                        \
    } while (0)

/* Checks a kernel launch (configuration errors show up at once, not at the next sync). */
#define M4_CUDA_TRY_LAUNCH(err) M4_CUDA_TRY(cudaGetLastError(), err)

/* An NVTX range for the lifetime of a scope, named by the component's one dotted name. */
struct m4_nvtx_range {
    explicit m4_nvtx_range(const char *name) { nvtxRangePushA(name); }
    ~m4_nvtx_range() { nvtxRangePop(); }
};

#endif
