/* kernels.cuh — the CUDA kernels of the optimized backend, behind host launch functions.
 *
 * Conventions: activations are float32 on the device in both precisions; weights are float32
 * (precision fp32) or bf16 (precision bf16), or on the bf16 path FP8 e4m3 codes with block scales
 * (__nv_fp8_e4m3 + m4k_fp8_scales, fp8_blocks.h), hence the templates over the weight type W. Every
 * launcher enqueues on `stream`, checks the launch, and returns 0 or -1 with `err` set. Shapes in
 * the comments use reference.h's notation (N tokens, D hidden, H heads, dq/dn/dr/dv head dims,
 * E experts, K experts per token, F expert hidden). */
#ifndef M4_CUDA_KERNELS_CUH
#define M4_CUDA_KERNELS_CUH

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <stdint.h>

#include "common.cuh"
#include "fp8_blocks.h"
#include "paths.h"

extern "C" {
#include "config.h"
}

/* Largest K (num_experts_per_tok) the routing kernels handle (the model has 4). */
#define M4_CUDA_MAX_TOPK 16
/* Most tokens one GEMV launch serves; larger batches go through cuBLAS. */
#define M4_CUDA_GEMV_MAX_TOKENS 8

/* RMSNorm over rows of width dim: y[r] = w ⊙ (x[r] · rsqrt(mean(x[r]²) + eps)), rows x_stride /
 * y_stride floats apart. With `delta` non-NULL the residual add comes first, fused:
 * x[r] = x[r] + delta[r] is written back (x must then be writable), and that sum is normalised. */
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

/* The scales of an FP8 weight stack W [E, rows, cols] (fp8_blocks.h): scale [E, ⌈rows /
 * block_rows⌉, ⌈cols / block_cols⌉] on the device, element (e, r, c) = float(W[e, r, c]) ·
 * scale[e][r / block_rows][c / block_cols] in float32. Per-tensor FP8: block = the whole matrix. */
struct m4k_fp8_scales {
    const float *scale = nullptr;
    int64_t block_rows = 0, block_cols = 0;
};

/* Matrix-vector products for up to M4_CUDA_GEMV_MAX_TOKENS tokens, one warp per output row, the
 * weight read once with 16-byte loads. `groups` independent problems (grid.y): group g multiplies
 * matrix (expert ? expert[g] : 0) of the stack W [*, rows, cols] with the `ntok` input rows
 * starting at x row (g / x_div)·ntok, writing y rows g·ntok…; y [groups·ntok, rows].
 * swiglu: the matrix is a gate_up pair [2F, cols]; row f of y is act(gate_f·x) · (up_f·x) and
 * y has F = rows/2 columns. Needs cols a multiple of 8.
 * FP8 (W = __nv_fp8_e4m3, `scales` required): a 16-byte load is 16 codes, converted exactly
 * (e4m3 → half → float, the hardware conversion on sm_89+) and multiplied by their block's scale
 * in float32 — the reference's dequantised weight, bit for bit — before the float32 dot product.
 * Needs cols a multiple of 16 and block_cols the whole width or a power of two ≥ 16
 * (m4_fp8_col_shift); any block_rows. */
/* Launch configuration of m4k_gemv, defaults measured on an H200 (bench/results); m4_gpu_bench's
 * tune/ rows try the others. blocks_per_sm: blocks per multiprocessor over all groups (the grid
 * loops over rows); unroll: 16-byte loads per row a lane issues before using them (2, 4 or 8);
 * x_in_shared: stage the input rows in shared memory when they fit in 32 KiB. */
struct m4k_gemv_tuning {
    int blocks_per_sm = 4;   /* H200: lm_head at batch 1 100% of the copy ceiling, experts 46% (2: 82%, 35%) */
    int unroll = 4;
    bool x_in_shared = true;
};
extern m4k_gemv_tuning m4k_gemv_config;

/* The fast paths with a simpler twin, their switches and their proof: paths.h. */

template <typename W>
int m4k_gemv(const W *Wt, int64_t rows, int64_t cols, const int32_t *expert, int64_t groups,
             const float *x, int64_t x_div, int ntok, float *y, bool swiglu, m4_activation act,
             cudaStream_t stream, m4_error *err, const m4k_fp8_scales *scales = nullptr);

/* Dequantises rows [row0, row0 + n_rows) of one FP8 matrix W [rows, cols] (scales: that matrix's
 * [⌈rows / block_rows⌉, ⌈cols / block_cols⌉], any block sizes) to bf16:
 * out[(r − row0)·cols + c] = bf16_rn(float(W[r, c]) · scale[r / block_rows][c / block_cols]) —
 * bit for bit the bf16 rounding of m4_weight_row_f32, i.e. what the bf16 upload used to store. */
int m4k_fp8_to_bf16(const __nv_fp8_e4m3 *W, const m4k_fp8_scales &scales, int64_t rows, int64_t cols,
                    int64_t row0, int64_t n_rows, __nv_bfloat16 *out, cudaStream_t stream, m4_error *err);

/* Grouped GEMM over an expert stack, one launch (grouped_gemm.cu), for batches past the GEMV:
 * the M slots of X [M, cols] are sorted by expert, expert e owning slots [offsets[e],
 * offsets[e + 1]) (offsets [E + 1] on the device, non-decreasing, offsets[E] ≤ M; slots past
 * offsets[E] are neither read nor written), and Y[s, :] = X[s, :] · W[e]ᵀ for W [E, rows, cols]
 * bf16; X is rounded to bf16, sums in float32 (tensor cores). swiglu: W[e] is a gate_up pair
 * [2F, cols] and Y [M, F] = act(x·gate_fᵀ) · (x·up_fᵀ), as m4k_gemv's. No host synchronisation
 * (CUDA-graph capturable). Needs cols a multiple of 8 and W, X 16-byte aligned.
 * FP8 (W = __nv_fp8_e4m3, `scales` required): the codes are staged as bytes with cp.async and
 * dequantised in shared memory to bf16_rn(float(code) · scale) — m4k_fp8_to_bf16's values — ahead
 * of the same tensor-core loop, so the result equals the bf16 kernel's on m4k_fp8_to_bf16's output
 * bit for bit. Needs block_cols the whole width or a power of two ≥ 32 (m4_fp8_col_shift); any
 * block_rows. */
template <typename W>
int m4k_grouped_gemm(const W *Wt, int64_t E, int64_t rows, int64_t cols, const int32_t *offsets,
                     const float *X, int64_t M, float *Y, bool swiglu, m4_activation act, cudaStream_t stream,
                     m4_error *err, const m4k_fp8_scales *scales = nullptr);

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

/* The same attention on the tensor cores, FlashAttention-2 style (flash_attention.cu): a block per
 * 64 queries of one (b, h) streams 64-key tiles with an online softmax, causally masked tiles and
 * tiles outside every query's [lo, hi) skipped. Q, K, V and P are rounded to bf16 (float32
 * scores, softmax statistics and accumulation): the bf16 path's kernel. Same results as
 * m4k_attention within bf16 rounding, every-key-masked rows included (the uniform average over
 * the query's keys). Applies when m4k_flash_attention_fits: no probs (m4k_attention keeps
 * serving traces), dq and dv multiples of 16 up to 256, T < 2^31, B·H ≤ 65535; otherwise fails. */
bool m4k_flash_attention_fits(const m4k_attention_args *a);
int m4k_flash_attention(const m4k_attention_args *a, cudaStream_t stream, m4_error *err);

/* Router: per token, softmax (or sigmoid + bias) of logits [N, E], group-limited top-K (ties to the
 * lower id), weights renormalised when norm_topk_prob and × routed_scaling_factor. ids [N, K]. */
int m4k_router_topk(const float *logits, const float *bias, int64_t N, const m4_text_config *cfg,
                    int32_t *ids, float *weights, cudaStream_t stream, m4_error *err);

/* Token → expert permutation (deterministic: tokens in order within an expert): counts[E],
 * offsets[E + 1], slot_token[N·K] (the token of each sorted slot), slot_of[N·K] (the sorted slot of
 * routing entry t·K + k). */
int m4k_moe_permute(const int32_t *ids, int64_t N, int64_t K, int64_t E, int32_t *counts,
                    int32_t *offsets, int32_t *slot_token, int32_t *slot_of, cudaStream_t stream,
                    m4_error *err);

/* xs[s, :] = x[rows[s], :] for s < n (D columns). */
int m4k_gather_rows(const float *x, const int32_t *rows, int64_t n, int64_t D, float *xs,
                    cudaStream_t stream, m4_error *err);

/* Weighted un-permute: out[t] = Σ over the token's K slots in ascending expert id of
 * y[slot_of[t·K + k]] · weights[t·K + k] (each product rounded, then added, from zero), then
 * + shared[t] when shared is non-NULL. y [N·K, D]; slot_of NULL: y is in routing order. */
int m4k_moe_combine(const float *y, const int32_t *slot_of, const int32_t *ids, const float *weights,
                    const float *shared, int64_t N, int64_t K, int64_t D, float *out,
                    cudaStream_t stream, m4_error *err);

/* Patch im2col: row r of cols [n_rows, C·p·p] is the patch (img[r], pr[r], pc[r]) of pixels
 * [N_img, C, Hpx, Wpx], in the weight's [C, p, p] order. */
int m4k_im2col(const float *pixels, int64_t C, int64_t Hpx, int64_t Wpx, int64_t p,
               const int32_t *img, const int32_t *pr, const int32_t *pc, int64_t n_rows, float *cols,
               cudaStream_t stream, m4_error *err);

/* out[n, d, l] = x[n·L + l, d]: [N_img·L, Dv] → [N_img, Dv, L] (the conv output layout). */
int m4k_to_channels_first(const float *x, int64_t n_img, int64_t L, int64_t Dv, float *out,
                          cudaStream_t stream, m4_error *err);

/* Patch merger unfold: out[r, ch·m² + k] = x[src[r·m² + k], ch], x [P, Dv], r < M. */
int m4k_unfold(const float *x, const int32_t *src, int64_t M, int64_t m2, int64_t Dv, float *out,
               cudaStream_t stream, m4_error *err);

/* out[i] = src[i] ≥ 0 ? features[src[i]] : embeds[i], rows of D floats, i < n. */
int m4k_merge_rows(const float *embeds, const float *features, const int32_t *src, int64_t n,
                   int64_t D, float *out, cudaStream_t stream, m4_error *err);

/* ---- MLA decode over the latent cache (absorbed form, MODEL.md §6.1) --------------------------
 * The cache holds, per layer, row b and position j, the normalised latent c_kv [Rkv] and the
 * rotated shared key k_rope [dr], in the weight type W; rows are `capacity` positions apart
 * (a multiple of M4_CUDA_KEY_TILE, the positions past the filled ones finite). */
#define M4_CUDA_KEY_TILE 64

/* The cache's length is read on the device (d_past: positions already cached), so that a captured
 * decode step replays at every length; launch shapes depend on the capacity only. */

/* Appends the S new tokens' c_kv [B·S, Rkv] and k_rope [B·S, dr] at positions [past, past + S)
 * of every row: c_cache/r_cache point at this layer's [B, capacity, ·]. */
template <typename W>
int m4k_cache_append(const float *ckv, const float *k_rope, int64_t B, int64_t S, const int64_t *d_past,
                     int64_t capacity, int64_t Rkv, int64_t dr, W *c_cache, W *r_cache,
                     cudaStream_t stream, m4_error *err);

/* *d_length += by on the stream (the cache's device-side length after a forward). */
int m4k_cache_advance(int64_t *d_length, int64_t by, cudaStream_t stream, m4_error *err);

/* Absorbs kv_b's key half into the queries: QL[q, :Rkv] = Σ_d Q[q, d] · kv_b[h·(dn+dv) + d, :]
 * (d < dn) and QL[q, Rkv:] = Q[q, dn:] (the rotated part), for the B·H·S query rows q of
 * Q [B, H, S, dq] (h = (q / S) % H). QL [B, H, S, Rkv + dr]. */
template <typename W>
int m4k_mla_absorb_q(const float *Q, const W *kv_b, int64_t BHS, int64_t H, int64_t S, int64_t dn,
                     int64_t dr, int64_t dv, int64_t Rkv, float *QL, cudaStream_t stream, m4_error *err);

/* The key tiles [first, last) (of M4_CUDA_KEY_TILE positions) that split `split` of `splits`
 * reads for query i of S after `past` cached positions, in the tensor-core latent attention: the
 * tiles of the T = past + S keys in equal runs, each cut at the query's causal end (key past + i).
 * first ≥ last: the split has nothing to read for that query. */
struct m4k_tile_range {
    int64_t first, last;
};
__host__ __device__ inline m4k_tile_range m4k_latent_split_tiles(int64_t past, int64_t S, int64_t i, int64_t split,
                                                                 int64_t splits) {
    const int64_t per_split = ((past + S + M4_CUDA_KEY_TILE - 1) / M4_CUDA_KEY_TILE + splits - 1) / splits;
    const int64_t first = split * per_split, causal_end = (past + i + 1 + M4_CUDA_KEY_TILE - 1) / M4_CUDA_KEY_TILE;
    return {first, first + per_split < causal_end ? first + per_split : causal_end};
}

/* Softmax attention of the latent queries QL [B, H, S, Rkv + dr] over the cached positions
 * j ≤ past + i (query i's causal end; later keys take no part): z_j = (QL·[c_kv_j | k_rope_j])·scale
 * (+ −FLT_MAX where mask[b·mask_stride + j] = 0, so a query whose visible keys are all masked
 * averages them), O_lat[q] = Σ_j softmax(z)_j c_kv_j.
 *   One difference from the reference (and HF), on purpose: there a key past the causal end gets
 * −FLT_MAX too, so a query whose every key is masked (a left-padding row inside a cached step)
 * averages *all* T keys; here it averages the keys up to its causal end. Only such padding rows
 * differ, and nothing reads them (generation reads each row's last real position, and padded
 * positions are masked as keys for every later query); visiting tiles past the causal end for them
 * would cost every query the skipped tiles. Flash-decoding: the keys are split into
 * chunks that run in parallel, then merged. O_lat [B, H, S, Rkv]. With a bf16 cache and H, Rkv,
 * dr multiples of 16, one block serves every head of a query position on the tensor cores (QL
 * and the probabilities rounded to bf16, float32 accumulation; key tiles staged through shared
 * memory with cp.async, the cache read once for all heads, as FlashMLA does); otherwise one
 * block per head and split, in float32 (also when the device's opt-in shared memory cannot hold
 * two tiles of the tensor-core layout, as on sm_86/sm_89 at large H). */
template <typename W>
int m4k_mla_latent_attention(const float *QL, const W *c_cache, const W *r_cache, int64_t capacity,
                             int64_t B, int64_t H, int64_t S, const int64_t *d_past, int64_t Rkv,
                             int64_t dr, float scale, const int64_t *mask, int64_t mask_stride,
                             float *O_lat, cudaStream_t stream, m4_error *err);

/* Un-absorbs the values: O[b·S + s, h·dv + e] = kv_b[h·(dn+dv) + dn + e, :] · O_lat[b, h, s, :]. */
template <typename W>
int m4k_mla_unabsorb_v(const float *O_lat, const W *kv_b, int64_t B, int64_t H, int64_t S,
                       int64_t dn, int64_t dv, int64_t Rkv, float *O, cudaStream_t stream,
                       m4_error *err);

#endif
