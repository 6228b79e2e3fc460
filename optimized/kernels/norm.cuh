/* norm.cuh — normalisation and elementwise kernels (norm.cu): RMSNorm with the fused residual
 * add, the embedding lookup, float32 → bf16, the adds, the activations, SwiGLU's middle.
 * Launcher conventions: common.cuh. */
#ifndef M4_KERNELS_NORM_CUH
#define M4_KERNELS_NORM_CUH

#include <cuda_bf16.h>
#include <stdint.h>

#include "common.cuh"

extern "C" {
#include "config.h"
}

/* RMSNorm over rows of width dim: y[r] = w ⊙ (x[r] · rsqrt(mean(x[r]²) + eps)), rows x_stride /
 * y_stride floats apart. With `delta` non-NULL (rows dim apart) the residual add comes first, fused:
 * x_sum[r] = x[r] + delta[r] is written (x_sum strided as x; x itself when adding in place), and
 * that sum is normalised. */
int m4k_rmsnorm(const float *x, int64_t x_stride, float *x_sum, const float *delta, const float *w,
                float *y, int64_t y_stride, int64_t rows, int64_t dim, float eps, cudaStream_t stream,
                m4_error *err);

/* nn.Embedding: out[t, :] = float(table[ids[t], :]) for t < n, table [V, D]. ids are checked on
 * the host before (m4_ref_embed_tokens's rule). */
template <typename W>
int m4k_embed(const W *table, const int64_t *ids, int64_t n, int64_t D, float *out,
              cudaStream_t stream, m4_error *err);

/* float32 → bf16, n values. */
int m4k_to_bf16(const float *x, __nv_bfloat16 *y, int64_t n, cudaStream_t stream, m4_error *err);

/* y[i] = y[i] + x[i], n values. */
int m4k_add(float *y, const float *x, int64_t n, cudaStream_t stream, m4_error *err);

/* y[r, c] = y[r, c] + b[c] over [rows, cols]. */
int m4k_add_bias(float *y, const float *b, int64_t rows, int64_t cols, cudaStream_t stream, m4_error *err);

/* ACT2FN[act] in place over n values. */
int m4k_activation(float *x, int64_t n, m4_activation act, cudaStream_t stream, m4_error *err);

/* SwiGLU's middle: out[r, f] = act(gate[r, f]) · up[r, f] for r < rows, f < F; gate/up rows
 * g_stride/u_stride apart, out rows F apart. */
int m4k_swiglu(const float *gate, int64_t g_stride, const float *up, int64_t u_stride, float *out,
               int64_t rows, int64_t F, m4_activation act, cudaStream_t stream, m4_error *err);

#endif
