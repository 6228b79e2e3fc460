/* flash_attention.cu — prefill softmax attention on the tensor cores, FlashAttention-2 style
 * (flash_attention.cuh, m4k_flash_attention): the math and arguments of m4k_attention, with Q, K and V
 * rounded to bf16 as they are staged into shared memory and the probabilities rounded to bf16
 * before P·V; scores, the softmax statistics and the output accumulate in float32. */
#include <limits.h>
#include <mma.h>

#include "device.cuh"
#include "flash_attention.cuh"

namespace {

namespace wmma = nvcuda::wmma;

/* A block owns kQueries queries of one (b, h) and streams the keys in tiles of kKeys. Each warp
 * owns one 16-row slab of the queries (warp % kRowWarps) and up to kMaxOFrags 16-column
 * fragments of the value dims (warp / kRowWarps): dv ≤ 128 takes 4 warps, dv ≤ 256 takes 8 (the
 * two warps of a slab then both compute its scores; only dv > 128 pays that). */
constexpr int kFrag = 16, kQueries = 64, kKeys = 64;
constexpr int kRowWarps = kQueries / kFrag;
constexpr int kMaxOFrags = 8, kColumnsPerWarp = kMaxOFrags * kFrag;
constexpr int kMaxHeadDim = 256;
constexpr int kMaxThreads = kWarp * kRowWarps * (kMaxHeadDim / kColumnsPerWarp);
/* Rows staged in one batch of loads per lane (loads issued before the conversions). */
constexpr int kStageBatch = 4;
/* Shared-memory rows padded by 16 bytes (bank spread for the fragment loads); every pitch stays a
 * multiple of 16 bytes, so 16-row fragment bases stay 32-byte aligned. */
constexpr int kPadHalf = 8, kPadFloat = 4;
constexpr int kScorePitch = kKeys + kPadFloat, kProbPitch = kKeys + kPadHalf;

using frag_acc = wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float>;

/* The shared-memory plan, in bytes from the dynamic base (each region 128-byte aligned):
 * Q [kQueries, dq], K [kKeys, dq], V [kKeys, dv] in bf16; per warp its scores [16, kKeys] float32
 * (reused for the rescale and 1/l broadcast tiles and the output staging) and probabilities
 * [16, kKeys] bf16; each query's key range [lo, hi) as two int arrays. */
struct flash_layout {
    int q_pitch, v_pitch, warps;
    size_t q_at, k_at, v_at, score_at, prob_at, lo_at, hi_at, total;
    __host__ __device__ static size_t up(size_t x) { return (x + 127) / 128 * 128; }
    __host__ __device__ flash_layout(int dq, int dv) {
        q_pitch = dq + kPadHalf, v_pitch = dv + kPadHalf;
        warps = kRowWarps * ((dv + kColumnsPerWarp - 1) / kColumnsPerWarp);
        q_at = 0;
        k_at = up(q_at + sizeof(__nv_bfloat16) * (size_t)(kQueries * q_pitch));
        v_at = up(k_at + sizeof(__nv_bfloat16) * (size_t)(kKeys * q_pitch));
        score_at = up(v_at + sizeof(__nv_bfloat16) * (size_t)(kKeys * v_pitch));
        prob_at = up(score_at + sizeof(float) * (size_t)(warps * kFrag * kScorePitch));
        lo_at = up(prob_at + sizeof(__nv_bfloat16) * (size_t)(warps * kFrag * kProbPitch));
        hi_at = lo_at + sizeof(int) * kQueries;
        total = hi_at + sizeof(int) * kQueries;
    }
};

/* rows [0, rows_total) of a tile into shared memory as bf16, dst rows `pitch` apart: row r < valid
 * is src + r·stride (width floats), the others zeros. One warp per row, lanes across the row;
 * with `vec` (src and stride 16-byte aligned) 16-byte loads, kStageBatch rows' loads in flight
 * before any conversion. width ≤ kMaxHeadDim. */
__device__ __forceinline__ void stage_rows(__nv_bfloat16 *dst, int pitch, const float *__restrict__ src,
                                           int64_t stride, int valid, int rows_total, int width, bool vec) {
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, warps = blockDim.x / kWarp;
    if (vec) {
        const int w4 = width / 4;                       /* ≤ 64: two float4 per lane at most */
        for (int r0 = warp; r0 < rows_total; r0 += warps * kStageBatch) {
            float4 v[kStageBatch][2];
#pragma unroll
            for (int u = 0; u < kStageBatch; u++) {
                const int r = r0 + u * warps;
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    const int c4 = lane + c * kWarp;
                    v[u][c] = r < valid && c4 < w4 ? __ldg(reinterpret_cast<const float4 *>(src + r * stride) + c4)
                                                   : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                }
            }
#pragma unroll
            for (int u = 0; u < kStageBatch; u++) {
                const int r = r0 + u * warps;
                if (r >= rows_total) break;
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    const int c4 = lane + c * kWarp;
                    if (c4 >= w4) break;
                    __nv_bfloat162 lo2 = __floats2bfloat162_rn(v[u][c].x, v[u][c].y);
                    __nv_bfloat162 hi2 = __floats2bfloat162_rn(v[u][c].z, v[u][c].w);
                    uint2 packed;
                    packed.x = *reinterpret_cast<uint32_t *>(&lo2), packed.y = *reinterpret_cast<uint32_t *>(&hi2);
                    *reinterpret_cast<uint2 *>(dst + r * pitch + 4 * c4) = packed;
                }
            }
        }
    } else {
        for (int r = warp; r < rows_total; r += warps)
            for (int d = lane; d < width; d += kWarp)
                dst[r * pitch + d] = __float2bfloat16_rn(r < valid ? src[r * stride + d] : 0.0f);
    }
}

/* grid (query tiles, B·H), the last query tile first (causal: the longest rows start first).
 * Per key tile [j0, j0 + n): every warp computes its slab's scores S = Q·Kᵀ (16×16×16 bf16
 * fragments, float32 accumulation) into its own shared tile; then, per query row, z = S·scale for
 * an allowed key, −FLT_MAX for a masked one (causal or mask, as attention_kernel adds it), −∞ for
 * a key outside the row's [lo, hi) or past the tile (not part of the softmax at all); the running
 * max m and sum l are updated online and P = exp(z − m) rounded to bf16 (l sums the rounded
 * values). The output accumulators stay in registers: rescaled by exp(m_old − m_new) through a
 * 16×16 fragment holding each row's factor (loaded from shared memory: the same opaque layout as
 * the accumulators), then O += P·V. Rows whose keys are all masked see only −FLT_MAX: exp(0) = 1
 * for each, the uniform average attention_kernel produces; as soon as an allowed key appears the
 * factor exp(−FLT_MAX − m) = 0 wipes that. Key tiles past the causal end of the block's last
 * query are skipped — unless some row has then seen no allowed key, in which case a second pass
 * takes the rest of the keys, so that such a row averages over all its keys as the reference does
 * (the other rows get P = 0 there). Rows with an empty key range get 0. */
__global__ void __launch_bounds__(kMaxThreads)
flash_attention_kernel(const m4k_attention_args a, const bool vec) {
    extern __shared__ __align__(128) unsigned char shm[];
    const int dq = (int)a.dq, dv = (int)a.dv, T = (int)a.T;
    const flash_layout L(dq, dv);
    __nv_bfloat16 *Qs = reinterpret_cast<__nv_bfloat16 *>(shm + L.q_at);
    __nv_bfloat16 *Ks = reinterpret_cast<__nv_bfloat16 *>(shm + L.k_at);
    __nv_bfloat16 *Vs = reinterpret_cast<__nv_bfloat16 *>(shm + L.v_at);
    int *row_lo = reinterpret_cast<int *>(shm + L.lo_at), *row_hi = reinterpret_cast<int *>(shm + L.hi_at);
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
    const int wm = warp % kRowWarps, wn = warp / kRowWarps;
    float *Sw = reinterpret_cast<float *>(shm + L.score_at) + warp * kFrag * kScorePitch;
    __nv_bfloat16 *Pw = reinterpret_cast<__nv_bfloat16 *>(shm + L.prob_at) + warp * kFrag * kProbPitch;

    const int64_t bh = blockIdx.y, b = bh / a.H, h = bh % a.H;
    const int64_t i0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * kQueries;
    const int rows = a.S - i0 < kQueries ? (int)(a.S - i0) : kQueries;

    /* each query's key range (empty for the rows past S), and the block's Q tile */
    for (int r = threadIdx.x; r < kQueries; r += blockDim.x) {
        int lo = 0, hi = 0;
        if (r < rows) {
            lo = a.block_lo ? max(a.block_lo[i0 + r], 0) : 0;
            hi = a.block_hi ? min(a.block_hi[i0 + r], T) : T;
        }
        row_lo[r] = lo, row_hi[r] = hi;
    }
    stage_rows(Qs, L.q_pitch, a.Q + (bh * a.S + i0) * dq, dq, rows, kQueries, dq, vec);
    __syncthreads();
    int kv_lo = T, kv_hi = 0;                  /* the union of the rows' ranges */
    for (int r = 0; r < kQueries; r++)
        if (row_lo[r] < row_hi[r]) kv_lo = min(kv_lo, row_lo[r]), kv_hi = max(kv_hi, row_hi[r]);
    int first_end = kv_hi;                     /* keys past the last query's causal end are masked for all */
    if (a.causal) {
        const int64_t end = a.causal_past + i0 + rows;
        first_end = (int)(end < (int64_t)kv_lo ? kv_lo : end < (int64_t)kv_hi ? end : kv_hi);
    }

    /* this lane's rows of the slab: half-warp `half` takes rows {0..3, 8..11} + 4·half, lane c
     * of the half the key columns c + 16k (k < 4); the softmax statistics of those rows */
    const int half = lane / 16, c = lane % 16;
    float m_run[8], l_run[8];
#pragma unroll
    for (int rr = 0; rr < 8; rr++) m_run[rr] = -INFINITY, l_run[rr] = 0.0f;
    const int o_col0 = wn * kColumnsPerWarp;
    const int nf = min(kMaxOFrags, (dv - o_col0) / kFrag);
    frag_acc o_acc[kMaxOFrags];
#pragma unroll
    for (int f = 0; f < kMaxOFrags; f++) wmma::fill_fragment(o_acc[f], 0.0f);

    const float *Kbh = a.K + bh * (int64_t)T * dq;
    const float *Vbh = a.V + b * (int64_t)T * a.v_row_stride + h * a.v_head_stride;
    const int64_t *mask_b = a.mask ? a.mask + b * (int64_t)T : nullptr;
    int j_begin = kv_lo, j_end = first_end;
    for (int pass = 0; pass < 2; pass++) {
        for (int j0 = j_begin; j0 < j_end; j0 += kKeys) {
            const int n = j_end - j0 < kKeys ? j_end - j0 : kKeys;
            __syncthreads();                   /* every warp is done with the previous K and V */
            stage_rows(Ks, L.q_pitch, Kbh + (int64_t)j0 * dq, dq, n, kKeys, dq, vec);
            stage_rows(Vs, L.v_pitch, Vbh + (int64_t)j0 * a.v_row_stride, a.v_row_stride, n, kKeys, dv, vec);
            bool mk[4];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const int col = c + 16 * k;
                mk[k] = !mask_b || (col < n && mask_b[j0 + col] != 0);
            }
            __syncthreads();

            /* S = Q·Kᵀ for the slab's 16 rows × the tile's keys */
            {
                frag_acc s_acc[kKeys / kFrag];
#pragma unroll
                for (int t = 0; t < kKeys / kFrag; t++) wmma::fill_fragment(s_acc[t], 0.0f);
                for (int d = 0; d < dq; d += kFrag) {
                    wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, __nv_bfloat16, wmma::row_major> qa;
                    wmma::load_matrix_sync(qa, Qs + wm * kFrag * L.q_pitch + d, (unsigned)L.q_pitch);
#pragma unroll
                    for (int t = 0; t < kKeys / kFrag; t++) {
                        if (t * kFrag >= n) break;     /* keys past the tile: zeros, masked below */
                        wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, __nv_bfloat16, wmma::col_major> kb;
                        wmma::load_matrix_sync(kb, Ks + t * kFrag * L.q_pitch + d, (unsigned)L.q_pitch);
                        wmma::mma_sync(s_acc[t], qa, kb, s_acc[t]);
                    }
                }
#pragma unroll
                for (int t = 0; t < kKeys / kFrag; t++)
                    wmma::store_matrix_sync(Sw + t * kFrag, s_acc[t], kScorePitch, wmma::mem_row_major);
            }
            __syncwarp();

            /* online softmax, two rows at a time (one per half-warp) */
            float alpha[8];
            bool rescale = false;
#pragma unroll
            for (int rr = 0; rr < 8; rr++) {
                const int r = (rr / 4) * 8 + half * 4 + rr % 4, qi = wm * kFrag + r;
                const int lo = row_lo[qi], hi = row_hi[qi];
                const int64_t last = a.causal ? a.causal_past + i0 + qi : INT64_MAX;   /* allowed: j ≤ last */
                float z[4], mx = -INFINITY;
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const int col = c + 16 * k, j = j0 + col;
                    const bool in_range = col < n && j >= lo && j < hi;
                    const bool allowed = mk[k] && (int64_t)j <= last;
                    z[k] = in_range ? (allowed ? Sw[r * kScorePitch + col] * a.scale : -FLT_MAX) : -INFINITY;
                    mx = fmaxf(mx, z[k]);
                }
#pragma unroll
                for (int off = 8; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
                const float m_new = fmaxf(m_run[rr], mx);
                const float m_use = m_new == -INFINITY ? 0.0f : m_new;   /* nothing in range yet: P = 0 */
                /* a row with nothing in range so far has O = 0 and l = 0: no rescale needed */
                const float al = m_run[rr] == -INFINITY ? 1.0f : __expf(m_run[rr] - m_use);
                float sum = 0.0f;
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const __nv_bfloat16 p = __float2bfloat16_rn(__expf(z[k] - m_use));
                    Pw[r * kProbPitch + c + 16 * k] = p;
                    sum += __bfloat162float(p);
                }
#pragma unroll
                for (int off = 8; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
                l_run[rr] = l_run[rr] * al + sum;
                m_run[rr] = m_new;
                alpha[rr] = al;
                rescale = rescale || al != 1.0f;
            }
            rescale = __any_sync(0xffffffffu, rescale);
            __syncwarp();                      /* scores read, probabilities written */
            if (rescale) {
                /* O ·= alpha per row: a 16×16 tile of each row's factor, loaded as an accumulator */
#pragma unroll
                for (int rr = 0; rr < 8; rr++) Sw[((rr / 4) * 8 + half * 4 + rr % 4) * kScorePitch + c] = alpha[rr];
                __syncwarp();
                frag_acc af;
                wmma::load_matrix_sync(af, Sw, kScorePitch, wmma::mem_row_major);
#pragma unroll
                for (int f = 0; f < kMaxOFrags; f++)
                    if (f < nf)
#pragma unroll
                        for (int e = 0; e < af.num_elements; e++) o_acc[f].x[e] *= af.x[e];
            }
            /* O += P·V */
#pragma unroll
            for (int t = 0; t < kKeys / kFrag; t++) {
                if (t * kFrag >= n) break;
                wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, __nv_bfloat16, wmma::row_major> pa;
                wmma::load_matrix_sync(pa, Pw + t * kFrag, kProbPitch);
#pragma unroll
                for (int f = 0; f < kMaxOFrags; f++) {
                    if (f >= nf) break;
                    wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, __nv_bfloat16, wmma::row_major> vb;
                    wmma::load_matrix_sync(vb, Vs + t * kFrag * L.v_pitch + o_col0 + f * kFrag, (unsigned)L.v_pitch);
                    wmma::mma_sync(o_acc[f], pa, vb, o_acc[f]);
                }
            }
        }
        if (pass == 1) break;
        /* a row that has seen no allowed key (every one masked) averages over all of its keys */
        bool dead = false;
#pragma unroll
        for (int rr = 0; rr < 8; rr++) {
            const int qi = wm * kFrag + (rr / 4) * 8 + half * 4 + rr % 4;
            dead = dead || (row_lo[qi] < row_hi[qi] && !(m_run[rr] > -FLT_MAX));
        }
        if (!__syncthreads_or(j_end < kv_hi && dead)) break;
        j_begin = j_end, j_end = kv_hi;
    }

    /* O / l (0 for an empty range), through the warp's score tile to global memory */
    __syncwarp();
#pragma unroll
    for (int rr = 0; rr < 8; rr++)
        Sw[((rr / 4) * 8 + half * 4 + rr % 4) * kScorePitch + c] = l_run[rr] > 0.0f ? 1.0f / l_run[rr] : 0.0f;
    __syncwarp();
    frag_acc inv;
    wmma::load_matrix_sync(inv, Sw, kScorePitch, wmma::mem_row_major);
    float *stage = Sw + kFrag;                 /* columns 16..31 of the tile */
    const int out_r = lane / 2, out_c = (lane % 2) * 8;
    const int64_t out_i = i0 + wm * kFrag + out_r;
    float *out = a.O + ((b * a.S + out_i) * a.H + h) * dv + o_col0 + out_c;
#pragma unroll
    for (int f = 0; f < kMaxOFrags; f++) {
        if (f >= nf) break;
#pragma unroll
        for (int e = 0; e < inv.num_elements; e++) o_acc[f].x[e] *= inv.x[e];
        wmma::store_matrix_sync(stage, o_acc[f], kScorePitch, wmma::mem_row_major);
        __syncwarp();
        if (out_i < a.S) {
            const float *src = stage + out_r * kScorePitch + out_c;
            if (vec) {
                reinterpret_cast<float4 *>(out + f * kFrag)[0] = reinterpret_cast<const float4 *>(src)[0];
                reinterpret_cast<float4 *>(out + f * kFrag)[1] = reinterpret_cast<const float4 *>(src)[1];
            } else {
#pragma unroll
                for (int e = 0; e < 8; e++) out[f * kFrag + e] = src[e];
            }
        }
        __syncwarp();
    }
}

bool aligned16(const void *p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

} // namespace

bool m4k_flash_attention_fits(const m4k_attention_args *a) {
    return !a->probs && a->dq > 0 && a->dv > 0 && a->dq % kFrag == 0 && a->dv % kFrag == 0 &&
           a->dq <= kMaxHeadDim && a->dv <= kMaxHeadDim && a->T <= INT_MAX && a->S <= INT_MAX &&
           a->B * a->H <= 65535;
}

int m4k_flash_attention(const m4k_attention_args *a, cudaStream_t stream, m4_error *err) {
    if (a->probs) return m4_fail(err, "flash attention: probabilities requested (m4k_attention writes them)");
    if (!m4k_flash_attention_fits(a))
        return m4_fail(err, "flash attention: unsupported shape (dq %lld, dv %lld: multiples of %d up to %d; T %lld; "
                            "B·H %lld)", (long long)a->dq, (long long)a->dv, kFrag, kMaxHeadDim, (long long)a->T,
                       (long long)(a->B * a->H));
    if (a->B * a->H * a->S <= 0) return 0;
    const flash_layout L((int)a->dq, (int)a->dv);
    const bool vec = aligned16(a->Q) && aligned16(a->K) && aligned16(a->V) && aligned16(a->O) &&
                     a->v_row_stride % 4 == 0 && a->v_head_stride % 4 == 0;
    if (L.total > 48 * 1024)
        M4_CUDA_TRY(cudaFuncSetAttribute(flash_attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)L.total), err);
    const dim3 grid((unsigned)((a->S + kQueries - 1) / kQueries), (unsigned)(a->B * a->H));
    flash_attention_kernel<<<grid, kWarp * L.warps, L.total, stream>>>(*a, vec);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}
