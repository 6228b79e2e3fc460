/* mla_decode.cu — MLA over the latent cache in the absorbed form (kernels.cuh, MODEL.md §6.1):
 * the keys' nope half and the values never leave the Rkv-wide latent space; kv_b is folded into
 * the queries before attention and into the outputs after it. */
#include <mma.h>

#include <type_traits>

#include "device.cuh"
#include "kernels.cuh"

namespace {

constexpr int kThreads = 256;

template <typename W>
__global__ void cache_append_kernel(const float *__restrict__ ckv, const float *__restrict__ k_rope, int64_t S,
                                    int64_t past, int64_t capacity, int64_t Rkv, int64_t dr, W *__restrict__ c_cache,
                                    W *__restrict__ r_cache) {
    const int64_t t = blockIdx.x, b = t / S, s = t % S, slot = b * capacity + past + s;
    for (int64_t i = threadIdx.x; i < Rkv + dr; i += blockDim.x) {
        if (i < Rkv) c_cache[slot * Rkv + i] = from_float<W>(ckv[t * Rkv + i]);
        else r_cache[slot * dr + i - Rkv] = from_float<W>(k_rope[t * dr + i - Rkv]);
    }
}

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

/* grid (query rows, splits): scores of this split's keys in shared memory, then its local max,
 * sum and unnormalised output, merged by combine_kernel. */
template <typename W>
__global__ void latent_attention_kernel(const float *__restrict__ QL, const W *__restrict__ c_cache,
                                        const W *__restrict__ r_cache, int64_t capacity, int64_t H, int64_t S,
                                        int64_t past, int64_t Rkv, int64_t dr, float scale,
                                        const int64_t *__restrict__ mask, int64_t chunk, float *__restrict__ part_m,
                                        float *__restrict__ part_l, float *__restrict__ part_o) {
    extern __shared__ float shm[];
    __shared__ float scratch[32];
    const int64_t q = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
    const int64_t b = q / (H * S), i = q % S, T = past + S, width = Rkv + dr;
    float *ql = shm, *z = shm + width;         /* [Rkv + dr], [chunk] */
    for (int64_t d = threadIdx.x; d < width; d += blockDim.x) ql[d] = QL[q * width + d];
    __syncthreads();
    const int64_t j0 = split * chunk, j1 = j0 + chunk < T ? j0 + chunk : T;
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, warps = blockDim.x / kWarp;
    const W *c_row = c_cache + b * capacity * Rkv, *r_row = r_cache + b * capacity * dr;
    for (int64_t j = j0 + warp; j < j1; j += warps) {
        float dot = 0.0f;
        for (int64_t d = lane; d < Rkv; d += kWarp) dot += ql[d] * to_float(c_row[j * Rkv + d]);
        for (int64_t d = lane; d < dr; d += kWarp) dot += ql[Rkv + d] * to_float(r_row[j * dr + d]);
        dot = warp_sum(dot);
        if (lane == 0) {
            const bool allowed = j <= past + i && (!mask || mask[b * T + j] != 0);
            z[j - j0] = dot * scale + (allowed ? 0.0f : -FLT_MAX);
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

/* Every head of one query position (b, i) against one split of the keys, on the tensor cores:
 * S = QL · [c_kv | k_rope]ᵀ (16×16×16 bf16 tiles, float32 accumulators), the split's softmax
 * statistics per head, then O = P · c_kv. The cache is read straight into the matrix fragments;
 * its rows past T are finite (m4_cuda_cache) and get probability 0. Shared memory: QL in bf16
 * [H, Rkv + dr], scores [H, chunk] float32, probabilities [H, chunk] bf16. Partials are indexed
 * like latent_attention_kernel's, by query row (b·H + h)·S + i. */
namespace wmma = nvcuda::wmma;
constexpr int kTile = 16;

__global__ void latent_attention_tc_kernel(const float *__restrict__ QL, const __nv_bfloat16 *__restrict__ c_cache,
                                           const __nv_bfloat16 *__restrict__ r_cache, int64_t capacity, int64_t H,
                                           int64_t S, int64_t past, int64_t Rkv, int64_t dr, float scale,
                                           const int64_t *__restrict__ mask, int64_t chunk, float *__restrict__ part_m,
                                           float *__restrict__ part_l, float *__restrict__ part_o) {
    extern __shared__ __align__(32) unsigned char shm_raw[];
    const int64_t width = Rkv + dr, b = blockIdx.x / S, i = blockIdx.x % S, split = blockIdx.y, splits = gridDim.y;
    const int64_t T = past + S, j0 = split * chunk, j1 = j0 + chunk < T ? j0 + chunk : T, len = j1 - j0;
    __nv_bfloat16 *qlb = reinterpret_cast<__nv_bfloat16 *>(shm_raw);                  /* [H, width] */
    float *scores = reinterpret_cast<float *>(qlb + H * width);                        /* [H, chunk] */
    __nv_bfloat16 *probs = reinterpret_cast<__nv_bfloat16 *>(scores + H * chunk);     /* [H, chunk] */
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, warps = blockDim.x / kWarp;
    auto q_row = [&](int64_t h) { return (b * H + h) * S + i; };
    for (int64_t e = threadIdx.x; e < H * width; e += blockDim.x)
        qlb[e] = __float2bfloat16_rn(QL[q_row(e / width) * width + e % width]);
    __syncthreads();
    const __nv_bfloat16 *c_row = c_cache + b * capacity * Rkv, *r_row = r_cache + b * capacity * dr;
    const int64_t key_tiles = (len + kTile - 1) / kTile, head_tiles = H / kTile;
    /* S = QL · Kᵀ: tile (head tile, key tile) per warp */
    for (int64_t t = warp; t < head_tiles * key_tiles; t += warps) {
        const int64_t hr = t / key_tiles, kt = t % key_tiles, j = j0 + kt * kTile;
        wmma::fragment<wmma::accumulator, kTile, kTile, kTile, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int64_t d = 0; d < width; d += kTile) {
            wmma::fragment<wmma::matrix_a, kTile, kTile, kTile, __nv_bfloat16, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, kTile, kTile, kTile, __nv_bfloat16, wmma::col_major> k;
            wmma::load_matrix_sync(a, qlb + hr * kTile * width + d, (unsigned)width);
            if (d < Rkv) wmma::load_matrix_sync(k, c_row + j * Rkv + d, (unsigned)Rkv);
            else wmma::load_matrix_sync(k, r_row + j * dr + (d - Rkv), (unsigned)dr);
            wmma::mma_sync(acc, a, k, acc);
        }
        wmma::store_matrix_sync(scores + hr * kTile * chunk + kt * kTile, acc, (unsigned)chunk, wmma::mem_row_major);
    }
    __syncthreads();
    /* per head: masked, scaled scores → the split's max and sum, probabilities in bf16 */
    for (int64_t h = warp; h < H; h += warps) {
        float *z = scores + h * chunk;
        float m = -INFINITY;
        for (int64_t j = lane; j < len; j += kWarp) {
            const int64_t key = j0 + j;
            const bool allowed = key <= past + i && (!mask || mask[b * T + key] != 0);
            z[j] = z[j] * scale + (allowed ? 0.0f : -FLT_MAX);
            m = fmaxf(m, z[j]);
        }
        m = warp_max(m);
        float l = 0.0f;
        for (int64_t j = lane; j < key_tiles * kTile; j += kWarp) {
            const __nv_bfloat16 p = __float2bfloat16_rn(j < len ? expf(z[j] - m) : 0.0f);
            probs[h * chunk + j] = p;
            l += __bfloat162float(p);
        }
        l = warp_sum(l);
        if (lane == 0) part_m[q_row(h) * splits + split] = m, part_l[q_row(h) * splits + split] = l;
    }
    __syncthreads();
    /* O = P · c_kv: tile (head tile, latent tile) per warp, straight into the partials */
    const int64_t latent_tiles = Rkv / kTile;
    for (int64_t t = warp; t < head_tiles * latent_tiles; t += warps) {
        const int64_t hr = t / latent_tiles, dt = t % latent_tiles;
        wmma::fragment<wmma::accumulator, kTile, kTile, kTile, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int64_t kt = 0; kt < key_tiles; kt++) {
            wmma::fragment<wmma::matrix_a, kTile, kTile, kTile, __nv_bfloat16, wmma::row_major> p;
            wmma::fragment<wmma::matrix_b, kTile, kTile, kTile, __nv_bfloat16, wmma::row_major> v;
            wmma::load_matrix_sync(p, probs + hr * kTile * chunk + kt * kTile, (unsigned)chunk);
            wmma::load_matrix_sync(v, c_row + (j0 + kt * kTile) * Rkv + dt * kTile, (unsigned)Rkv);
            wmma::mma_sync(acc, p, v, acc);
        }
        wmma::store_matrix_sync(part_o + (q_row(hr * kTile) * splits + split) * Rkv + dt * kTile, acc,
                                (unsigned)(S * splits * Rkv), wmma::mem_row_major);
    }
}

__global__ void combine_kernel(const float *__restrict__ part_m, const float *__restrict__ part_l,
                               const float *__restrict__ part_o, int64_t splits, int64_t Rkv, float *__restrict__ O_lat) {
    const int64_t q = blockIdx.x;
    float M = -INFINITY;
    for (int64_t s = 0; s < splits; s++) M = fmaxf(M, part_m[q * splits + s]);
    float L = 0.0f;
    for (int64_t s = 0; s < splits; s++) L += part_l[q * splits + s] * expf(part_m[q * splits + s] - M);
    for (int64_t r = threadIdx.x; r < Rkv; r += blockDim.x) {
        float acc = 0.0f;
        for (int64_t s = 0; s < splits; s++) acc += part_o[(q * splits + s) * Rkv + r] * expf(part_m[q * splits + s] - M);
        O_lat[q * Rkv + r] = acc / L;
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
int m4k_cache_append(const float *ckv, const float *k_rope, int64_t B, int64_t S, int64_t past, int64_t capacity,
                     int64_t Rkv, int64_t dr, W *c_cache, W *r_cache, cudaStream_t stream, m4_error *err) {
    if (B * S <= 0) return 0;
    cache_append_kernel<W><<<(unsigned)(B * S), kThreads, 0, stream>>>(ckv, k_rope, S, past, capacity, Rkv, dr, c_cache, r_cache);
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
    float *part = nullptr;
    M4_CUDA_TRY(cudaMallocAsync(&part, sizeof(float) * (size_t)(BHS * splits * (Rkv + 2)), stream), err);
    cudaError_t launch = attend(part, part + BHS * splits, part + 2 * BHS * splits);
    if (launch == cudaSuccess) {
        combine_kernel<<<(unsigned)BHS, kThreads, 0, stream>>>(part, part + BHS * splits, part + 2 * BHS * splits,
                                                               splits, Rkv, O_lat);
        launch = cudaGetLastError();
    }
    cudaFreeAsync(part, stream);
    M4_CUDA_TRY(launch, err);
    return 0;
}

/* The tensor-core path: every head of a query position in one block (bf16 cache only). */
static int latent_attention_tc(const float *QL, const __nv_bfloat16 *c_cache, const __nv_bfloat16 *r_cache,
                               int64_t capacity, int64_t B, int64_t H, int64_t S, int64_t past, int64_t Rkv,
                               int64_t dr, float scale, const int64_t *mask, float *O_lat, cudaStream_t stream,
                               m4_error *err) {
    const int64_t BS = B * S, T = past + S;
    /* chunks of 64–256 keys (whole 64-key tiles), enough of them to give every SM a few blocks */
    const int64_t want_splits = (264 + BS - 1) / BS;
    int64_t chunk = (T + want_splits - 1) / want_splits;
    chunk = (chunk + M4_CUDA_KEY_TILE - 1) / M4_CUDA_KEY_TILE * M4_CUDA_KEY_TILE;
    chunk = chunk < M4_CUDA_KEY_TILE ? M4_CUDA_KEY_TILE : chunk > 256 ? 256 : chunk;
    const int64_t splits = (T + chunk - 1) / chunk, BHS = B * H * S;
    const size_t shared = sizeof(__nv_bfloat16) * (size_t)(H * (Rkv + dr)) + sizeof(float) * (size_t)(H * chunk) +
                          sizeof(__nv_bfloat16) * (size_t)(H * chunk);
    if (shared > kMaxShared)
        return m4_fail(err, "mla decode: %lld heads need %zu bytes of shared memory (limit %zu)", (long long)H, shared, kMaxShared);
    return attend_in_splits(BHS, splits, Rkv, O_lat, stream, err, [&](float *part_m, float *part_l, float *part_o) {
        if (shared > 48 * 1024) {
            cudaError_t status = cudaFuncSetAttribute(latent_attention_tc_kernel,
                                                      cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared);
            if (status != cudaSuccess) return status;
        }
        latent_attention_tc_kernel<<<dim3((unsigned)BS, (unsigned)splits), kThreads, shared, stream>>>(
            QL, c_cache, r_cache, capacity, H, S, past, Rkv, dr, scale, mask, chunk, part_m, part_l, part_o);
        return cudaGetLastError();
    });
}

template <typename W>
int m4k_mla_latent_attention(const float *QL, const W *c_cache, const W *r_cache, int64_t capacity, int64_t B,
                             int64_t H, int64_t S, int64_t past, int64_t Rkv, int64_t dr, float scale,
                             const int64_t *mask, float *O_lat, cudaStream_t stream, m4_error *err) {
    const int64_t BHS = B * H * S, T = past + S;
    if (BHS <= 0) return 0;
    if (capacity % M4_CUDA_KEY_TILE != 0)
        return m4_fail(err, "mla decode: cache rows of %lld positions are not whole %d-position tiles",
                       (long long)capacity, M4_CUDA_KEY_TILE);
    if constexpr (std::is_same<W, __nv_bfloat16>::value)
        if (H % kTile == 0 && Rkv % kTile == 0 && dr % kTile == 0)
            return latent_attention_tc(QL, c_cache, r_cache, capacity, B, H, S, past, Rkv, dr, scale, mask, O_lat,
                                       stream, err);
    /* enough splits to fill the GPU at decode sizes, chunks of at least 64 keys */
    int64_t splits = (T + 63) / 64;
    const int64_t max_splits = BHS >= 4096 ? 1 : 4096 / BHS;
    if (splits > max_splits) splits = max_splits;
    const int64_t chunk = (T + splits - 1) / splits;
    const size_t shared = sizeof(float) * (size_t)(Rkv + dr + chunk);
    if (shared > kMaxShared)
        return m4_fail(err, "mla decode: %lld keys per split need %zu bytes of shared memory (limit %zu)",
                       (long long)chunk, shared, kMaxShared);
    return attend_in_splits(BHS, splits, Rkv, O_lat, stream, err, [&](float *part_m, float *part_l, float *part_o) {
        if (shared > 48 * 1024) {
            cudaError_t status = cudaFuncSetAttribute(latent_attention_kernel<W>,
                                                      cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared);
            if (status != cudaSuccess) return status;
        }
        latent_attention_kernel<W><<<dim3((unsigned)BHS, (unsigned)splits), kThreads, shared, stream>>>(
            QL, c_cache, r_cache, capacity, H, S, past, Rkv, dr, scale, mask, chunk, part_m, part_l, part_o);
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
    template int m4k_cache_append<W>(const float *, const float *, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                     int64_t, W *, W *, cudaStream_t, m4_error *);                \
    template int m4k_mla_absorb_q<W>(const float *, const W *, int64_t, int64_t, int64_t, int64_t, int64_t,     \
                                     int64_t, int64_t, float *, cudaStream_t, m4_error *);        \
    template int m4k_mla_latent_attention<W>(const float *, const W *, const W *, int64_t, int64_t, int64_t,     \
                                             int64_t, int64_t, int64_t, int64_t, float, const int64_t *,         \
                                             float *, cudaStream_t, m4_error *);                  \
    template int m4k_mla_unabsorb_v<W>(const float *, const W *, int64_t, int64_t, int64_t, int64_t, int64_t,    \
                                       int64_t, float *, cudaStream_t, m4_error *);
M4_INSTANTIATE(float)
M4_INSTANTIATE(__nv_bfloat16)
