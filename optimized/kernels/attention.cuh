/* attention.cuh — softmax attention in float32, one block per query (attention.cu): the
 * arguments every prefill attention kernel takes (flash_attention.cuh's too), and the device's
 * opt-in shared memory the attention kernels size from. Launcher conventions: common.cuh. */
#ifndef M4_KERNELS_ATTENTION_CUH
#define M4_KERNELS_ATTENTION_CUH

#include <stddef.h>
#include <stdint.h>

#include "common.cuh"

/* Softmax attention, one block per (b, h, query i) of B·H·S queries over T keys, float32:
 * z_j = (q·k_j)·scale + (allowed ? 0 : −FLT_MAX), P = softmax(z), o = Σ_j P_j v_j.
 * q(b,h,i) = Q + ((b·H + h)·S + i)·dq; k(b,h,j) = K + ((b·H + h)·T + j)·dq;
 * v(b,h,j) = V + (b·T + j)·v_row_stride + h·v_head_stride; o(b,h,i) = O + (b·S + i)·H·dv + h·dv.
 * Allowed keys: j ≤ causal_past + i when causal, mask[b·T + j] ≠ 0 when mask is given; with
 * block_lo/hi (per query i, B = 1) only keys in [lo, hi) take part (the others get P = 0, the
 * block-diagonal vision mask). probs (may be NULL) [B, H, S, T] receives P. */
struct m4k_attention_args {
    const float *Q, *K, *V;
    int64_t B, H, S, T, dq, dv;
    int64_t v_row_stride, v_head_stride;
    float scale;
    bool causal;
    int64_t causal_past;
    const int64_t *mask;
    const int32_t *block_lo, *block_hi;
    float *O, *probs;
};
int m4k_attention(const m4k_attention_args *a, cudaStream_t stream, m4_error *err);
/* Whether m4k_attention serves a: one query row's T scores fit the current device's opt-in shared
 * memory (and at most 200 KiB: 51,200 keys on an H100/H200, about 25,000 on sm_86/sm_89). */
bool m4k_attention_fits(const m4k_attention_args *a);
/* The current device's opt-in shared memory per block, in bytes (0 when it cannot be read). */
size_t m4k_shared_memory_optin(void);

#endif
