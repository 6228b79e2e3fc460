/* cuda_backend.h — the C interface of the CUDA implementation (callable from C11 host code).
 * All pointers named d_* are device pointers. Every function returns 0 or -1 with `err` set. */
#ifndef M4_CUDA_BACKEND_H
#define M4_CUDA_BACKEND_H

#ifdef __cplusplus
extern "C" {
#endif

#include "m4_error.h"

/* Number of usable CUDA devices; 0 (and success) on a machine without a GPU or driver. */
int m4_cuda_device_count(int *count, m4_error *err);

/* text.layers.{i}.input_layernorm (and every RMSNorm): y[r,:] = w ⊙ (x[r,:] · rsqrt(mean(x²) + eps)).
 * d_x, d_y [rows, n] float32; d_w [n] float32. Statistics in float32, weight after. */
int m4_cuda_rmsnorm_f32(const float *d_x, const float *d_w, float *d_y, int rows, int n, float eps,
                        m4_error *err);

#ifdef __cplusplus
}
#endif

#endif
