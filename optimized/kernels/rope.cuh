/* rope.cuh — rotary position embeddings on the device (rope.cu): the rotation into head-major
 * layout, the text RoPE tables, the MLA keys. Launcher conventions: common.cuh. */
#ifndef M4_KERNELS_ROPE_CUH
#define M4_KERNELS_ROPE_CUH

#include <stdint.h>

#include "common.cuh"

/* Text RoPE + Llama-4 scale into head-major layout: for token t = b·S + s and head h,
 * out[(b·H + h)·S + s, :dq] = [x_nope | rope(x_rope)] · (l4 ? l4[t] : 1), where the head's input
 * is x + t·x_stride + h·x_head_stride (dn nope values, then dr rotary ones; interleaved pairing or
 * rotate_half), cos/sin [N, dr/2]. The vision path uses it with dn = 0 and no l4. */
int m4k_rope(const float *x, int64_t x_stride, int64_t x_head_stride, int64_t B, int64_t S,
             int64_t H, int64_t dn, int64_t dr, const float *cos_t, const float *sin_t,
             const float *l4, int interleave, float *out, cudaStream_t stream, m4_error *err);

/* The text RoPE tables of N positions (m4_ref_rope_cos_sin and m4_ref_llama4_scale on the
 * device): cos/sin[t, i] = cos/sin(float(pos[t]) · inv_freq[i]) · attention_factor, i < half;
 * l4[t] = 1 + beta · ln(1 + floor(float(pos[t]) / L)), or 1 when has_beta is false. */
int m4k_rope_tables(const int64_t *pos, int64_t N, const float *inv_freq, int64_t half,
                    float attention_factor, bool has_beta, float beta, int64_t L, float *cos_t,
                    float *sin_t, float *l4, cudaStream_t stream, m4_error *err);

/* MLA keys: K[(b·H + h)·T + j] = [kvb[b·T + j, h·(dn+dv) : +dn] | k_rope[b·rope_stride + j]], dq = dn + dr. */
int m4k_mla_keys(const float *kvb, const float *k_rope, int64_t rope_row_stride, int64_t B,
                 int64_t T, int64_t H, int64_t dn, int64_t dr, int64_t dv, float *K,
                 cudaStream_t stream, m4_error *err);

#endif
