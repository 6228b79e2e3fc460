/* latent_attention.cu — MLA over the latent cache in the absorbed form (latent_attention.cuh,
 * MODEL.md §6.1): the keys' nope half and the values never leave the Rkv-wide latent space; kv_b
 * is folded into the queries before attention and into the outputs after it. */
#include <cuda_pipeline.h>
#include <mma.h>

#include <algorithm>
#include <type_traits>

#include "attention.cuh"   /* m4k_shared_memory_optin */
#include "device.cuh"
#include "latent_attention.cuh"
#include "paths.h"

namespace {

constexpr int kThreads = 256;

template <typename W>
__global__ void cache_append_kernel(const float *__restrict__ ckv, const float *__restrict__ k_rope, int64_t S,
                                    const int64_t *__restrict__ d_past, int64_t capacity, int64_t Rkv, int64_t dr,
                                    W *__restrict__ c_cache, W *__restrict__ r_cache) {
    const int64_t t = blockIdx.x, b = t / S, s = t % S, slot = b * capacity + *d_past + s;
    for (int64_t i = threadIdx.x; i < Rkv + dr; i += blockDim.x) {
        if (i < Rkv) c_cache[slot * Rkv + i] = from_float<W>(ckv[t * Rkv + i]);
        else r_cache[slot * dr + i - Rkv] = from_float<W>(k_rope[t * dr + i - Rkv]);
    }
}

__global__ void cache_advance_kernel(int64_t *length, int64_t by) { *length += by; }

/* grid (query rows, Rkv / 64): a block owns 64 latent columns; its 4 thread groups each sum a
 * quarter of the dn key rows of the query's head, then the quarters are added in order. The
 * rotated part is copied by the first column block. */
constexpr int kAbsorbColumns = 64, kAbsorbGroups = 4;
template <typename W>
__global__ void absorb_q_kernel(const float *__restrict__ Q, const W *__restrict__ kv_b, int64_t H, int64_t S,
                                int64_t dn, int64_t dr, int64_t dv, int64_t Rkv, float *__restrict__ QL) {
    __shared__ float partial[kAbsorbGroups][kAbsorbColumns];
    const int64_t q = blockIdx.x, h = (q / S) % H, dq = dn + dr;
    const int64_t col = threadIdx.x % kAbsorbColumns, group = threadIdx.x / kAbsorbColumns;
    const int64_t r = (int64_t)blockIdx.y * kAbsorbColumns + col;
    const W *rows = kv_b + h * (dn + dv) * Rkv;
    float acc = 0.0f;
    if (r < Rkv) {
        const float *q_nope = Q + q * dq;
#pragma unroll 8
        for (int64_t d = group; d < dn; d += kAbsorbGroups) acc += q_nope[d] * to_float(rows[d * Rkv + r]);
    }
    partial[group][col] = acc;
    __syncthreads();
    if (group == 0 && r < Rkv)
        QL[q * (Rkv + dr) + r] = (partial[0][col] + partial[1][col]) + (partial[2][col] + partial[3][col]);
    if (blockIdx.y == 0)
        for (int64_t d = threadIdx.x; d < dr; d += blockDim.x) QL[q * (Rkv + dr) + Rkv + d] = Q[q * dq + dn + d];
}

/* grid (query rows, splits): the T = past + S keys (past read on the device) in `splits` equal
 * chunks; scores of this split's causally visible keys in shared memory, then its local max, sum
 * and unnormalised output, merged by combine_kernel (a split past the query's causal end has
 * none: m = −∞, l = 0, o = 0). Shared memory holds ⌈capacity / splits⌉ ≥ chunk scores. */
template <typename W>
__global__ void latent_attention_kernel(const float *__restrict__ QL, const W *__restrict__ c_cache,
                                        const W *__restrict__ r_cache, int64_t capacity, int64_t H, int64_t S,
                                        const int64_t *__restrict__ d_past, int64_t Rkv, int64_t dr, float scale,
                                        const int64_t *__restrict__ mask, int64_t mask_stride,
                                        float *__restrict__ part_m, float *__restrict__ part_l,
                                        float *__restrict__ part_o) {
    extern __shared__ float shm[];
    __shared__ float scratch[32];
    const int64_t q = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
    const int64_t past = *d_past, b = q / (H * S), i = q % S, width = Rkv + dr;
    const int64_t chunk = (past + S + splits - 1) / splits;
    float *ql = shm, *z = shm + width;         /* [Rkv + dr], [chunk] */
    for (int64_t d = threadIdx.x; d < width; d += blockDim.x) ql[d] = QL[q * width + d];
    __syncthreads();
    const int64_t end = past + i + 1;          /* keys [0, end) are causally visible */
    const int64_t j0 = split * chunk, j1 = j0 + chunk < end ? j0 + chunk : end;
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, warps = blockDim.x / kWarp;
    const W *c_row = c_cache + b * capacity * Rkv, *r_row = r_cache + b * capacity * dr;
    for (int64_t j = j0 + warp; j < j1; j += warps) {
        float dot = 0.0f;
        for (int64_t d = lane; d < Rkv; d += kWarp) dot += ql[d] * to_float(c_row[j * Rkv + d]);
        for (int64_t d = lane; d < dr; d += kWarp) dot += ql[Rkv + d] * to_float(r_row[j * dr + d]);
        dot = warp_sum(dot);
        if (lane == 0) {
            z[j - j0] = dot * scale + (!mask || mask[b * mask_stride + j] != 0 ? 0.0f : -FLT_MAX);
        }
    }
    __syncthreads();
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < j1 - j0; j += blockDim.x) m = fmaxf(m, z[j]);
    m = block_reduce<true>(m, scratch);
    float l = 0.0f;
    for (int64_t j = threadIdx.x; j < j1 - j0; j += blockDim.x) {
        z[j] = expf(z[j] - m);
        l += z[j];
    }
    l = block_reduce<false>(l, scratch);
    __syncthreads();
    float *o = part_o + (q * splits + split) * Rkv;
    for (int64_t r = threadIdx.x; r < Rkv; r += blockDim.x) {
        float acc = 0.0f;
#pragma unroll 8
        for (int64_t j = j0; j < j1; j++) acc += z[j - j0] * to_float(c_row[j * Rkv + r]);
        o[r] = acc;
    }
    if (threadIdx.x == 0) part_m[q * splits + split] = j1 > j0 ? m : -INFINITY, part_l[q * splits + split] = l;
}

/* Every head of one query position (b, i) against one split of the keys, on the tensor cores
 * (FlashMLA's shape: the cache is read once for all heads). The split's keys stream through
 * shared memory in tiles of M4_CUDA_KEY_TILE positions, `stages` tiles in flight (cp.async), and
 * per tile: S = QL · [c_kv | k_rope]ᵀ (16×16×16 bf16 fragments, float32 accumulation), an online
 * softmax per head (running max m and sum l), O = O · exp(m_old − m_new) + P · c_kv with the
 * float32 O [H, Rkv] in shared memory. Tiles past the query's causal end are not read; the keys
 * of a tile past T or past that end get probability 0. The cache rows past T are finite
 * (m4_cuda_cache), so whole tiles are always safe to read. Partials are indexed like
 * latent_attention_kernel's, by query row (b·H + h)·S + i. */
namespace wmma = nvcuda::wmma;
constexpr int kTile = 16, kKeys = M4_CUDA_KEY_TILE;
/* Shared-memory rows are padded by 16 bytes (bank spread for the fragment loads); the row pitch
 * stays a multiple of 16 bytes and every 16-row fragment base 32-byte aligned. */
constexpr int kPadHalf = 8, kPadFloat = 4;

/* The shared-memory plan of latent_attention_tc_kernel, in bytes from the dynamic base. */
struct latent_tc_layout {
    int64_t key_pitch, ql_pitch, score_pitch, prob_pitch, o_pitch;   /* elements per row */
    size_t stage_bytes, ql_at, score_at, prob_at, o_at, stats_at, total;
    __host__ __device__ latent_tc_layout(int64_t H, int64_t Rkv, int64_t dr, int stages) {
        key_pitch = Rkv + dr + kPadHalf, ql_pitch = Rkv + dr + kPadHalf;
        score_pitch = kKeys + kPadFloat, prob_pitch = kKeys + kPadHalf, o_pitch = Rkv + kPadFloat;
        stage_bytes = sizeof(__nv_bfloat16) * (size_t)(kKeys * key_pitch);
        ql_at = stage_bytes * (size_t)stages;
        score_at = ql_at + sizeof(__nv_bfloat16) * (size_t)(H * ql_pitch);
        prob_at = score_at + sizeof(float) * (size_t)(H * score_pitch);
        o_at = prob_at + sizeof(__nv_bfloat16) * (size_t)(H * prob_pitch);
        stats_at = o_at + sizeof(float) * (size_t)(H * o_pitch);
        total = stats_at + sizeof(float) * (size_t)(3 * H);           /* m, l, alpha per head */
    }
};

__global__ void __launch_bounds__(kThreads)
latent_attention_tc_kernel(const float *__restrict__ QL, const __nv_bfloat16 *__restrict__ c_cache,
                           const __nv_bfloat16 *__restrict__ r_cache, int64_t capacity, int64_t H, int64_t S,
                           const int64_t *__restrict__ d_past, int64_t Rkv, int64_t dr, float scale,
                           const int64_t *__restrict__ mask, int64_t mask_stride, int stages,
                           float *__restrict__ part_m, float *__restrict__ part_l, float *__restrict__ part_o) {
    extern __shared__ __align__(128) unsigned char shm_raw[];
    const latent_tc_layout L(H, Rkv, dr, stages);
    const int64_t past = *d_past, width = Rkv + dr, b = blockIdx.x / S, i = blockIdx.x % S;
    const int64_t split = blockIdx.y, splits = gridDim.y, end = past + i + 1;   /* keys [0, end) are visible */
    const m4k_tile_range tiles = m4k_latent_split_tiles(past, S, i, split, splits);
    const int64_t t0 = tiles.first, t1 = tiles.last;
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, warps = blockDim.x / kWarp;
    auto q_row = [&](int64_t h) { return (b * H + h) * S + i; };
    if (t0 >= t1) {                              /* no visible key in this split: an empty partial */
        for (int64_t h = warp; h < H; h += warps) {
            for (int64_t r = lane; r < Rkv; r += kWarp) part_o[(q_row(h) * splits + split) * Rkv + r] = 0.0f;
            if (lane == 0) part_m[q_row(h) * splits + split] = -INFINITY, part_l[q_row(h) * splits + split] = 0.0f;
        }
        return;
    }
    auto stage = [&](int64_t t) { return reinterpret_cast<__nv_bfloat16 *>(shm_raw + L.stage_bytes * (size_t)(t % stages)); };
    __nv_bfloat16 *qlb = reinterpret_cast<__nv_bfloat16 *>(shm_raw + L.ql_at);       /* [H, width] */
    float *scores = reinterpret_cast<float *>(shm_raw + L.score_at);                  /* [H, kKeys] */
    __nv_bfloat16 *probs = reinterpret_cast<__nv_bfloat16 *>(shm_raw + L.prob_at);   /* [H, kKeys] */
    float *O = reinterpret_cast<float *>(shm_raw + L.o_at);                           /* [H, Rkv] */
    float *m_run = reinterpret_cast<float *>(shm_raw + L.stats_at), *l_run = m_run + H, *alpha = l_run + H;
    const __nv_bfloat16 *c_row = c_cache + b * capacity * Rkv, *r_row = r_cache + b * capacity * dr;
    /* tile t's kKeys rows [c_kv | k_rope] into its stage, 16 bytes per copy */
    auto load_tile = [&](int64_t t) {
        if (t < t1) {
            __nv_bfloat16 *dst = stage(t);
            const int c_chunks = (int)Rkv / 8, row_chunks = (int)width / 8;
            for (int e = threadIdx.x; e < kKeys * row_chunks; e += blockDim.x) {
                const int r = e / row_chunks, c = e % row_chunks;
                const int64_t j = t * kKeys + r;
                const __nv_bfloat16 *src = c < c_chunks ? c_row + j * Rkv + c * 8 : r_row + j * dr + (c - c_chunks) * 8;
                __pipeline_memcpy_async(dst + r * L.key_pitch + c * 8, src, 16);
            }
        }
        __pipeline_commit();                     /* an empty group past t1 keeps the counting uniform */
    };
    for (int s = 0; s < stages - 1; s++) load_tile(t0 + s);
    for (int64_t h = warp; h < H; h += warps) {
        for (int64_t d = lane; d < width; d += kWarp) qlb[h * L.ql_pitch + d] = __float2bfloat16_rn(QL[q_row(h) * width + d]);
        for (int64_t r = lane; r < Rkv; r += kWarp) O[h * L.o_pitch + r] = 0.0f;
        if (lane == 0) m_run[h] = -INFINITY, l_run[h] = 0.0f;
    }
    const int64_t head_tiles = H / kTile, key_tiles = kKeys / kTile, latent_tiles = Rkv / kTile;
    for (int64_t t = t0; t < t1; t++) {
        load_tile(t + stages - 1);
        __pipeline_wait_prior(stages - 1);       /* tile t's group has landed (this thread's copies) */
        __syncthreads();                         /* … and every thread's; QL, O and stats are written */
        const __nv_bfloat16 *keys = stage(t);
        /* S = QL · Kᵀ: one (head tile, key tile) per warp */
        for (int64_t f = warp; f < head_tiles * key_tiles; f += warps) {
            const int64_t hr = f / key_tiles, kt = f % key_tiles;
            wmma::fragment<wmma::accumulator, kTile, kTile, kTile, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int64_t d = 0; d < width; d += kTile) {
                wmma::fragment<wmma::matrix_a, kTile, kTile, kTile, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, kTile, kTile, kTile, __nv_bfloat16, wmma::col_major> k;
                wmma::load_matrix_sync(a, qlb + hr * kTile * L.ql_pitch + d, (unsigned)L.ql_pitch);
                wmma::load_matrix_sync(k, keys + kt * kTile * L.key_pitch + d, (unsigned)L.key_pitch);
                wmma::mma_sync(acc, a, k, acc);
            }
            wmma::store_matrix_sync(scores + hr * kTile * L.score_pitch + kt * kTile, acc, (unsigned)L.score_pitch,
                                    wmma::mem_row_major);
        }
        __syncthreads();
        /* online softmax per head: masked, scaled scores; probabilities in bf16, counted as rounded */
        for (int64_t h = warp; h < H; h += warps) {
            float z[kKeys / kWarp], tile_max = -INFINITY;
#pragma unroll
            for (int u = 0; u < kKeys / kWarp; u++) {
                const int64_t key = t * kKeys + u * kWarp + lane;
                const bool allowed = key < end && (!mask || mask[b * mask_stride + key] != 0);
                z[u] = scores[h * L.score_pitch + u * kWarp + lane] * scale + (allowed ? 0.0f : -FLT_MAX);
                if (key < end) tile_max = fmaxf(tile_max, z[u]);
            }
            const float m_old = m_run[h], m_new = fmaxf(m_old, warp_max(tile_max));
            float sum = 0.0f;
#pragma unroll
            for (int u = 0; u < kKeys / kWarp; u++) {
                const int64_t key = t * kKeys + u * kWarp + lane;
                const __nv_bfloat16 p = __float2bfloat16_rn(key < end ? expf(z[u] - m_new) : 0.0f);
                probs[h * L.prob_pitch + u * kWarp + lane] = p;
                sum += __bfloat162float(p);
            }
            sum = warp_sum(sum);
            if (lane == 0) {
                const float a = expf(m_old - m_new);   /* 0 on the first tile (m_old = −∞, m_new finite) */
                alpha[h] = a, m_run[h] = m_new, l_run[h] = l_run[h] * a + sum;
            }
        }
        __syncthreads();
        /* O = O · alpha + P · c_kv: one (head tile, latent tile) per warp, rescaled by that warp */
        for (int64_t f = warp; f < head_tiles * latent_tiles; f += warps) {
            const int64_t hr = f / latent_tiles, dt = f % latent_tiles;
            float *o_tile = O + hr * kTile * L.o_pitch + dt * kTile;
#pragma unroll
            for (int u = 0; u < kTile * kTile / kWarp; u++) {
                const int row = (u * kWarp + lane) / kTile, col = (u * kWarp + lane) % kTile;
                o_tile[row * L.o_pitch + col] *= alpha[hr * kTile + row];
            }
            __syncwarp();
            wmma::fragment<wmma::accumulator, kTile, kTile, kTile, float> acc;
            wmma::load_matrix_sync(acc, o_tile, (unsigned)L.o_pitch, wmma::mem_row_major);
            for (int64_t kt = 0; kt < key_tiles; kt++) {
                wmma::fragment<wmma::matrix_a, kTile, kTile, kTile, __nv_bfloat16, wmma::row_major> p;
                wmma::fragment<wmma::matrix_b, kTile, kTile, kTile, __nv_bfloat16, wmma::row_major> v;
                wmma::load_matrix_sync(p, probs + hr * kTile * L.prob_pitch + kt * kTile, (unsigned)L.prob_pitch);
                wmma::load_matrix_sync(v, keys + kt * kTile * L.key_pitch + dt * kTile, (unsigned)L.key_pitch);
                wmma::mma_sync(acc, p, v, acc);
            }
            wmma::store_matrix_sync(o_tile, acc, (unsigned)L.o_pitch, wmma::mem_row_major);
        }
        __syncthreads();                         /* the stage is refilled by the next iteration's load */
    }
    __pipeline_wait_prior(0);
    __syncthreads();
    for (int64_t h = warp; h < H; h += warps) {
        for (int64_t r = lane; r < Rkv; r += kWarp) part_o[(q_row(h) * splits + split) * Rkv + r] = O[h * L.o_pitch + r];
        if (lane == 0) part_m[q_row(h) * splits + split] = m_run[h], part_l[q_row(h) * splits + split] = l_run[h];
    }
}

/* Merges the splits of every query row: O_lat[q] = Σ_s exp(m_s − M) · o_s / Σ_s exp(m_s − M) · l_s.
 * grid (query rows, Rkv / 32): a block owns 32 latent columns; its 8 warps each sum every 8th split
 * (lane = column), then the eight partial sums are added in order. Splits with no keys have
 * m = −∞, l = 0, o = 0. Shared: the splits' weights [splits]. */
constexpr int kCombineColumns = 32, kCombineGroups = kThreads / kCombineColumns;
__global__ void __launch_bounds__(kThreads)
combine_kernel(const float *__restrict__ part_m, const float *__restrict__ part_l, const float *__restrict__ part_o,
               int64_t splits, int64_t Rkv, float *__restrict__ O_lat) {
    extern __shared__ float weight[];            /* [splits] */
    __shared__ float partial[kCombineGroups][kCombineColumns];
    __shared__ float scratch[32];
    const int64_t q = blockIdx.x, r = (int64_t)blockIdx.y * kCombineColumns + threadIdx.x % kCombineColumns;
    const int group = threadIdx.x / kCombineColumns;
    float M = -INFINITY;
    for (int64_t s = threadIdx.x; s < splits; s += blockDim.x) M = fmaxf(M, part_m[q * splits + s]);
    M = block_reduce<true>(M, scratch);
    float L = 0.0f;
    for (int64_t s = threadIdx.x; s < splits; s += blockDim.x) {
        weight[s] = expf(part_m[q * splits + s] - M);
        L += part_l[q * splits + s] * weight[s];
    }
    L = block_reduce<false>(L, scratch);          /* its leading __syncthreads publishes weight[] */
    float acc = 0.0f;
    if (r < Rkv)
#pragma unroll 4
        for (int64_t s = group; s < splits; s += kCombineGroups) acc += part_o[(q * splits + s) * Rkv + r] * weight[s];
    partial[group][threadIdx.x % kCombineColumns] = acc;
    __syncthreads();
    if (group == 0 && r < Rkv) {
        float sum = 0.0f;
        for (int g = 0; g < kCombineGroups; g++) sum += partial[g][threadIdx.x];
        O_lat[q * Rkv + r] = sum / L;
    }
}

/* One block per query row; one warp per value dimension e, lanes across the latent. */
template <typename W>
__global__ void unabsorb_v_kernel(const float *__restrict__ O_lat, const W *__restrict__ kv_b, int64_t H, int64_t S,
                                  int64_t dn, int64_t dv, int64_t Rkv, float *__restrict__ O) {
    extern __shared__ float o_lat[];           /* [Rkv] */
    const int64_t q = blockIdx.x, b = q / (H * S), h = (q / S) % H, s = q % S;
    for (int64_t r = threadIdx.x; r < Rkv; r += blockDim.x) o_lat[r] = O_lat[q * Rkv + r];
    __syncthreads();
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, warps = blockDim.x / kWarp;
    for (int64_t e = warp; e < dv; e += warps) {
        const W *row = kv_b + (h * (dn + dv) + dn + e) * Rkv;
        float acc = 0.0f;
        for (int64_t r = lane; r < Rkv; r += kWarp) acc += to_float(row[r]) * o_lat[r];
        acc = warp_sum(acc);
        if (lane == 0) O[(b * S + s) * H * dv + h * dv + e] = acc;
    }
}

/* Largest shared-memory request of one block (opt-in above 48 KiB). */
constexpr size_t kMaxShared = 200 * 1024;

} // namespace

template <typename W>
int m4k_cache_append(const float *ckv, const float *k_rope, int64_t B, int64_t S, const int64_t *d_past,
                     int64_t capacity, int64_t Rkv, int64_t dr, W *c_cache, W *r_cache, cudaStream_t stream,
                     m4_error *err) {
    if (B * S <= 0) return 0;
    cache_append_kernel<W><<<(unsigned)(B * S), kThreads, 0, stream>>>(ckv, k_rope, S, d_past, capacity, Rkv, dr,
                                                                        c_cache, r_cache);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

int m4k_cache_advance(int64_t *d_length, int64_t by, cudaStream_t stream, m4_error *err) {
    cache_advance_kernel<<<1, 1, 0, stream>>>(d_length, by);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

template <typename W>
int m4k_mla_absorb_q(const float *Q, const W *kv_b, int64_t BHS, int64_t H, int64_t S, int64_t dn, int64_t dr,
                     int64_t dv, int64_t Rkv, float *QL, cudaStream_t stream, m4_error *err) {
    if (BHS <= 0) return 0;
    static_assert(kAbsorbColumns * kAbsorbGroups == kThreads, "one thread per (column, group)");
    absorb_q_kernel<W><<<dim3((unsigned)BHS, (unsigned)((Rkv + kAbsorbColumns - 1) / kAbsorbColumns)), kThreads, 0,
                         stream>>>(Q, kv_b, H, S, dn, dr, dv, Rkv, QL);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

/* The flash-decoding frame both attention kernels share: `attend(part_m, part_l, part_o)` launches
 * a split kernel that writes BHS × splits partials (max, sum, unnormalised output [Rkv]) and
 * returns its launch status; combine_kernel then merges them into O_lat [BHS, Rkv]. */
template <typename Attend>
static int attend_in_splits(int64_t BHS, int64_t splits, int64_t Rkv, float *O_lat, cudaStream_t stream,
                            m4_error *err, Attend attend) {
    const size_t combine_shared = sizeof(float) * (size_t)splits;
    if (combine_shared > 48 * 1024)
        return m4_fail(err, "mla decode: %lld splits exceed the combine kernel's %d", (long long)splits, 48 * 1024 / 4);
    float *part = nullptr;
    M4_CUDA_TRY(cudaMallocAsync(&part, sizeof(float) * (size_t)(BHS * splits * (Rkv + 2)), stream), err);
    cudaError_t launch = attend(part, part + BHS * splits, part + 2 * BHS * splits);
    if (launch == cudaSuccess) {
        const dim3 grid((unsigned)BHS, (unsigned)((Rkv + kCombineColumns - 1) / kCombineColumns));
        combine_kernel<<<grid, kThreads, combine_shared, stream>>>(part, part + BHS * splits, part + 2 * BHS * splits,
                                                                   splits, Rkv, O_lat);
        launch = cudaGetLastError();
    }
    cudaFreeAsync(part, stream);
    M4_CUDA_TRY(launch, err);
    return 0;
}

/* The tensor-core path: every head of a query position in one block (bf16 cache only). Three
 * tiles in flight when they fit in the device's shared memory, else two (callers check that two
 * fit: latent_tc_fits); as many splits as fill
 * the GPU once, sized from the capacity (the length is on the device: a captured decode step
 * replays for every length), each split taking an equal run of the filled tiles. B·S blocks
 * already fill the GPU at prefill sizes: one split there, no partial merging. */
static bool latent_tc_fits(int64_t H, int64_t Rkv, int64_t dr, size_t shared_max) {
    return H % kTile == 0 && Rkv % kTile == 0 && dr % kTile == 0 && latent_tc_layout(H, Rkv, dr, 2).total <= shared_max;
}

static int latent_attention_tc(const float *QL, const __nv_bfloat16 *c_cache, const __nv_bfloat16 *r_cache,
                               int64_t capacity, int64_t B, int64_t H, int64_t S, const int64_t *d_past,
                               int64_t Rkv, int64_t dr, float scale, const int64_t *mask, int64_t mask_stride,
                               float *O_lat, cudaStream_t stream, m4_error *err) {
    const int64_t BS = B * S, BHS = B * H * S;
    int device = 0, sms = 0, shared_max = 0, per_sm = 0;
    M4_CUDA_TRY(cudaGetDevice(&device), err);
    M4_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), err);
    M4_CUDA_TRY(cudaDeviceGetAttribute(&shared_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), err);
    const int stages = latent_tc_layout(H, Rkv, dr, 3).total <= (size_t)shared_max ? 3 : 2;
    const size_t shared = latent_tc_layout(H, Rkv, dr, stages).total;
    if (shared > (size_t)shared_max)
        return m4_fail(err, "mla decode: %lld heads × %lld latent need %zu bytes of shared memory, the device has %d",
                       (long long)H, (long long)(Rkv + dr), shared, shared_max);
    M4_CUDA_TRY(cudaFuncSetAttribute(latent_attention_tc_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared), err);
    M4_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, latent_attention_tc_kernel, kThreads, shared), err);
    const int64_t max_tiles = capacity / kKeys, wanted = (int64_t)sms * (per_sm > 0 ? per_sm : 1);
    int64_t splits = (wanted + BS - 1) / BS;
    splits = splits < 1 ? 1 : splits > max_tiles ? max_tiles : splits;
    return attend_in_splits(BHS, splits, Rkv, O_lat, stream, err, [&](float *part_m, float *part_l, float *part_o) {
        latent_attention_tc_kernel<<<dim3((unsigned)BS, (unsigned)splits), kThreads, shared, stream>>>(
            QL, c_cache, r_cache, capacity, H, S, d_past, Rkv, dr, scale, mask, mask_stride, stages, part_m, part_l,
            part_o);
        return cudaGetLastError();
    });
}

template <typename W>
int m4k_mla_latent_attention(const float *QL, const W *c_cache, const W *r_cache, int64_t capacity, int64_t B,
                             int64_t H, int64_t S, const int64_t *d_past, int64_t Rkv, int64_t dr, float scale,
                             const int64_t *mask, int64_t mask_stride, float *O_lat, cudaStream_t stream,
                             m4_error *err) {
    const int64_t BHS = B * H * S, width = Rkv + dr;
    if (BHS <= 0) return 0;
    if (capacity <= 0 || capacity % M4_CUDA_KEY_TILE != 0)
        return m4_fail(err, "mla decode: cache rows of %lld positions are not whole %d-position tiles",
                       (long long)capacity, M4_CUDA_KEY_TILE);
    const size_t shared_max = m4k_shared_memory_optin();   /* 227 KiB on sm_90, 99 KiB on sm_86/89 */
    if (shared_max == 0) return m4_fail(err, "mla decode: cannot read the device's shared memory limit");
    if constexpr (std::is_same<W, __nv_bfloat16>::value)
        if (m4_cuda_path_on(M4_PATH_LATENT_TC) && latent_tc_fits(H, Rkv, dr, shared_max))
            return latent_attention_tc(QL, c_cache, r_cache, capacity, B, H, S, d_past, Rkv, dr, scale, mask,
                                       mask_stride, O_lat, stream, err);
    /* enough splits to fill the GPU at decode sizes, chunks of at least 64 keys, and few enough keys
     * per split that their scores fit in the device's shared memory at any length up to the capacity */
    const int64_t max_keys = (int64_t)(std::min(kMaxShared, shared_max) / sizeof(float)) - width;
    int64_t splits = (capacity + 63) / 64;
    const int64_t max_splits = BHS >= 4096 ? 1 : 4096 / BHS;
    if (splits > max_splits) splits = max_splits;
    if (max_keys < 64) return m4_fail(err, "mla decode: a %lld-wide latent leaves no room for scores", (long long)width);
    if ((capacity + splits - 1) / splits > max_keys) splits = (capacity + max_keys - 1) / max_keys;
    const size_t shared = sizeof(float) * (size_t)(width + (capacity + splits - 1) / splits);
    return attend_in_splits(BHS, splits, Rkv, O_lat, stream, err, [&](float *part_m, float *part_l, float *part_o) {
        if (shared > 48 * 1024) {
            cudaError_t status = cudaFuncSetAttribute(latent_attention_kernel<W>,
                                                      cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared);
            if (status != cudaSuccess) return status;
        }
        latent_attention_kernel<W><<<dim3((unsigned)BHS, (unsigned)splits), kThreads, shared, stream>>>(
            QL, c_cache, r_cache, capacity, H, S, d_past, Rkv, dr, scale, mask, mask_stride, part_m, part_l, part_o);
        return cudaGetLastError();
    });
}

template <typename W>
int m4k_mla_unabsorb_v(const float *O_lat, const W *kv_b, int64_t B, int64_t H, int64_t S, int64_t dn, int64_t dv,
                       int64_t Rkv, float *O, cudaStream_t stream, m4_error *err) {
    if (B * H * S <= 0) return 0;
    unabsorb_v_kernel<W><<<(unsigned)(B * H * S), kThreads, sizeof(float) * (size_t)Rkv, stream>>>(
        O_lat, kv_b, H, S, dn, dv, Rkv, O);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

#define M4_INSTANTIATE(W)                                                                           \
    template int m4k_cache_append<W>(const float *, const float *, int64_t, int64_t, const int64_t *, int64_t,   \
                                     int64_t, int64_t, W *, W *, cudaStream_t, m4_error *);       \
    template int m4k_mla_absorb_q<W>(const float *, const W *, int64_t, int64_t, int64_t, int64_t, int64_t,     \
                                     int64_t, int64_t, float *, cudaStream_t, m4_error *);        \
    template int m4k_mla_latent_attention<W>(const float *, const W *, const W *, int64_t, int64_t, int64_t,     \
                                             int64_t, const int64_t *, int64_t, int64_t, float, const int64_t *, \
                                             int64_t, float *, cudaStream_t, m4_error *);         \
    template int m4k_mla_unabsorb_v<W>(const float *, const W *, int64_t, int64_t, int64_t, int64_t, int64_t,    \
                                       int64_t, float *, cudaStream_t, m4_error *);
M4_INSTANTIATE(float)
M4_INSTANTIATE(__nv_bfloat16)
