/* flash_attention.cuh — m4k_attention's math on the tensor cores, FlashAttention-2 style
 * (flash_attention.cu): the bf16 path's prefill attention. Launcher conventions: common.cuh. */
#ifndef M4_KERNELS_FLASH_ATTENTION_CUH
#define M4_KERNELS_FLASH_ATTENTION_CUH

#include "attention.cuh"   /* m4k_attention_args */
#include "common.cuh"

/* The same attention on the tensor cores: a block per 64 queries of one (b, h) streams 64-key
 * tiles with an online softmax, causally masked tiles and tiles outside every query's [lo, hi)
 * skipped. Q, K, V and P are rounded to bf16 (float32 scores, softmax statistics and
 * accumulation): the bf16 path's kernel. Same results as m4k_attention within bf16 rounding,
 * every-key-masked rows included (the uniform average over the query's keys). Applies when
 * m4k_flash_attention_fits: no probs (m4k_attention keeps serving traces), dq and dv multiples of
 * 16 up to 256, T < 2^31, B·H ≤ 65535; otherwise fails. */
bool m4k_flash_attention_fits(const m4k_attention_args *a);
int m4k_flash_attention(const m4k_attention_args *a, cudaStream_t stream, m4_error *err);

#endif
