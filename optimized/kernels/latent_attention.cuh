/* latent_attention.cuh — MLA decode over the latent cache in the absorbed form (latent_attention.cu,
 * MODEL.md §6.1): the cache writes, the queries' absorption of kv_b, the latent attention
 * (flash-decoding, CUDA cores or tensor cores), the values' un-absorption. Launcher conventions:
 * common.cuh. */
#ifndef M4_KERNELS_LATENT_ATTENTION_CUH
#define M4_KERNELS_LATENT_ATTENTION_CUH

#include <stdint.h>

#include "common.cuh"

/* The cache holds, per layer, row b and position j, the normalised latent c_kv [Rkv] and the
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
