/* grouped_gemm.cu — the routed experts of a large batch in one launch per projection
 * (grouped_gemm.cuh, m4k_grouped_gemm): every expert's slots times that expert's bf16 matrix, on the
 * tensor cores (mma.sync m16n8k16, bf16 operands, float32 accumulation), with the expert
 * boundaries read on the device so that the MoE step needs no host round trip.
 *
 * Tiles. A block computes a kBM × kBN tile of Y (64 slots × 128 output rows of W) over the whole
 * K = cols, in kBK = 32 column steps. 8 warps as 2 (slots) × 4 (outputs), a 32 × 32 warp tile:
 * 2 × 4 accumulator fragments of 16 × 8.
 *
 * Scheduling. grid = (output tiles, an upper bound on the slot tiles): blockIdx.y is the index j
 * of a slot tile in the concatenation over experts of each expert's ⌈count_e / kBM⌉ tiles. The
 * bound Σ_e ⌈count_e / kBM⌉ ≤ ⌊(M + E·(kBM − 1)) / kBM⌋ needs no offsets on the host; the
 * first warp of each block turns j into (expert, tile) with a running warp prefix sum over the
 * device offsets (E / 32 steps), and blocks past the last tile return at once. Neighbouring
 * blocks (blockIdx.x) share their slot tile, so the activations come from L2 after the first.
 *
 * Pipeline. kStages = 4 shared-memory stages filled with cp.async (16 bytes, .cg: L2 only),
 * kStages − 1 steps in flight while one is multiplied. Activations are staged as float32 and
 * rounded to bf16 (round to nearest even) as the A fragments are built from shared memory, so no
 * conversion kernel runs before; weights go through ldmatrix. Staged rows are padded (activations
 * 40 floats, weights 40 bf16) so that the fragment loads are free of bank conflicts. Slots past
 * the expert's count, weight rows past the matrix and columns past cols are zero-filled by
 * cp.async (source size 0: nothing is read), never stored; warps whose slots are all past the
 * count skip their multiplies.
 *
 * SwiGLU. The block's 128 weight rows are 64 gate rows [f0, f0 + 64) and the matching up rows
 * [F + f0, F + f0 + 64), interleaved so that each warp's 32 columns are 16 gate features and the
 * same 16 up features: accumulator fragments 0–1 (gate) and 2–3 (up) of a thread hold the same
 * (slot, feature) pairs, and the epilogue writes act(gate) · up straight from registers.
 *
 * FP8 weights (W = __nv_fp8_e4m3 with block scales). The codes are staged as bytes: each stage
 * holds the tile's 128 rows × 32 codes (4 KiB, half the bf16 stage) and one float32 scale per row
 * (a 32-column k-tile lies in one column block), both filled by cp.async — 8-byte copies, so cols
 * need only be a multiple of 8 as for bf16 (rows of a multiple of 8 but not 16 codes are not
 * 16-byte aligned), 4 bytes for the scale. One step ahead of the multiplies, every thread turns
 * its 16 staged codes (row tid % 128, columns 16·(tid / 128) …) into bf16_rn(float(code) · scale)
 * and stores them into a bf16 tile laid out exactly as a bf16 stage (double-buffered), from
 * which the unchanged ldmatrix/mma loop reads. Converting once per block rather than per warp
 * fragment halves the conversion work (each weight feeds the two warps of its output column) and
 * keeps the fragment code identical to the bf16 kernel's — the results are the bf16 kernel's on
 * m4k_fp8_to_bf16's output, bit for bit. Pipeline: the k loop waits for stage kt + 1 (not kt), so
 * two stages stay in flight instead of three; still one barrier per step: the conversion of
 * stage kt + 1 writes the tile the multiplies of step kt − 1 read, which every warp left before
 * step kt's barrier, and step kt + 1's barrier publishes it. The raw stage's two 16-code halves
 * are swapped on rows 4–7 of every 8 (an XOR swizzle), so that the conversion's 16-byte reads
 * are free of bank conflicts; the bf16 tile's 80-byte rows make its 16-byte stores free of them.
 * Shared memory 78 KiB (bf16: 80 KiB), two blocks per SM on sm_80 and sm_90. */
#include <limits.h>
#include <stdint.h>

#include <type_traits>

#include "device.cuh"
#include "grouped_gemm.cuh"

namespace {

constexpr int kBM = 64, kBN = 128, kBK = 32, kStages = 4, kGemmThreads = 256;
constexpr int kWarpsN = 4;                                   /* warps along the outputs */
constexpr int kWarpM = kBM / 2, kWarpN = kBN / kWarpsN;      /* 32 × 32 per warp */
constexpr int kLdx = kBK + 8;    /* floats per staged activation row: stride ≡ 8 words mod 32 */
constexpr int kLdw = kBK + 8;    /* bf16 per staged weight row: 80 bytes, 8 rows hit 8 distinct 16-byte bank groups */
constexpr int kXStageBytes = kBM * kLdx * (int)sizeof(float);
constexpr int kWStageBytes = kBN * kLdw * (int)sizeof(__nv_bfloat16);
constexpr size_t kGemmShared = (size_t)kStages * (kXStageBytes + kWStageBytes);
constexpr int kRawStageBytes = kBN * kBK;                    /* FP8: e4m3 codes, 32-byte rows */
constexpr int kScaleStageBytes = kBN * (int)sizeof(float);   /* FP8: one scale per staged row */
constexpr size_t kGemmSharedFp8 = (size_t)kStages * (kXStageBytes + kRawStageBytes + kScaleStageBytes) + 2 * (size_t)kWStageBytes;
static_assert(kBN * kBK / 16 == kGemmThreads, "FP8: 16 codes of one staged row per thread and stage");
static_assert(kGemmSharedFp8 <= kGemmShared, "FP8 staging fits the bf16 kernel's shared memory");
static_assert(kBM * kBK / 4 == 2 * kGemmThreads, "two 16-byte activation chunks per thread and stage");
static_assert(kBN * kBK / 8 == 2 * kGemmThreads, "two 16-byte weight chunks per thread and stage");
static_assert(kWarpM == 32 && kWarpN == 32 && (kBM / kWarpM) * kWarpsN * kWarp == kGemmThreads, "warp layout");

__device__ __forceinline__ uint32_t shared_address(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global → shared, asynchronously; bytes = 0 writes zeros and reads nothing. */
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
/* 8 or 4 bytes global → shared (.ca: the only form for copies under 16 bytes); bytes = 0 zero-fills. */
__device__ __forceinline__ void cp_async8(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async4(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

/* Two float32 → bf16x2 (round to nearest even), lo in the low half: the lower k index. */
__device__ __forceinline__ uint32_t pack_bf16x2(float2 v) {
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(v.y), "f"(v.x));
    return r;
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

/* d += a · b, a 16 × 16 (row), b 16 × 8 (col), bf16 in, float32 accumulation. */
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* Two adjacent outputs (c, c + 1) of a row of width `width`; `pairs`: width is even and the row
 * 8-byte aligned, so one float2 store. */
__device__ __forceinline__ void store2(float *row, int64_t c, int64_t width, bool pairs, float v0, float v1) {
    if (pairs && c + 1 < width) {
        *reinterpret_cast<float2 *>(row + c) = make_float2(v0, v1);
    } else {
        if (c < width) row[c] = v0;
        if (c + 1 < width) row[c + 1] = v1;
    }
}

/* W: __nv_bfloat16, or __nv_fp8_e4m3 with `sc` and col_shift (m4_fp8_col_shift) locating the scales. */
template <typename W, bool kSwiglu>
__global__ void __launch_bounds__(kGemmThreads, 2)
    grouped_gemm_kernel(const W *__restrict__ Wt, int E, int64_t rows, int64_t cols,
                        const int32_t *__restrict__ offsets, const float *__restrict__ X, int64_t M,
                        float *__restrict__ Y, bool pairs, m4_activation act, m4k_fp8_scales sc, int col_shift) {
    constexpr bool kFp8 = std::is_same<W, __nv_fp8_e4m3>::value;
    extern __shared__ __align__(16) unsigned char shm_raw[];
    __shared__ int64_t s_row0;
    __shared__ int s_expert, s_valid;
    const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp;

    /* 1. slot tile j → (expert, tile within the expert): a warp-wide running prefix of the tile counts */
    if (warp == 0) {
        const int j = (int)blockIdx.y;
        int carry = 0, found = -1, tile = 0, count = 0, first = 0;
        for (int base = 0; base < E; base += kWarp) {
            const int e = base + lane;
            int c = 0, f = 0;
            if (e < E) f = offsets[e], c = offsets[e + 1] - f;
            const int tiles = c > 0 ? (c + kBM - 1) / kBM : 0;
            int incl = tiles;
#pragma unroll
            for (int d = 1; d < kWarp; d *= 2) {
                const int v = __shfl_up_sync(0xffffffffu, incl, d);
                if (lane >= d) incl += v;
            }
            const int before = carry + incl - tiles;
            if (tiles > 0 && j >= before && j < before + tiles) found = e, tile = j - before, count = c, first = f;
            carry += __shfl_sync(0xffffffffu, incl, kWarp - 1);
            if (carry > j) break;                              /* uniform over the warp */
        }
        const unsigned hit = __ballot_sync(0xffffffffu, found >= 0);
        const int src = hit ? __ffs((int)hit) - 1 : 0;
        found = __shfl_sync(0xffffffffu, found, src), tile = __shfl_sync(0xffffffffu, tile, src);
        count = __shfl_sync(0xffffffffu, count, src), first = __shfl_sync(0xffffffffu, first, src);
        if (lane == 0) {
            const int64_t row0 = (int64_t)first + (int64_t)tile * kBM;
            int64_t valid = count - (int64_t)tile * kBM;
            if (valid > kBM) valid = kBM;
            if (row0 + valid > M) valid = M - row0;            /* offsets beyond M: never past Y */
            const bool ok = hit != 0 && first >= 0 && valid > 0;
            s_expert = ok ? found : -1, s_row0 = row0, s_valid = ok ? (int)valid : 0;
        }
    }
    __syncthreads();
    if (s_expert < 0) return;                                  /* uniform: past the last tile */
    const int expert = s_expert, valid = s_valid;
    const int64_t row0 = s_row0, F = rows / 2, out_cols = kSwiglu ? F : rows;

    /* 2. this thread's two weight and two activation chunks of every stage (FP8: its 16 codes of one
     * staged row, and that row's scale when it is the row's first thread) */
    unsigned char *x_stages = shm_raw, *w_stages = shm_raw + kStages * kXStageBytes;   /* FP8: raw codes */
    unsigned char *s_stages = w_stages + kStages * kRawStageBytes;                       /* FP8: scales */
    unsigned char *tiles = s_stages + kStages * kScaleStageBytes;                        /* FP8: 2 bf16 tiles */
    const W *w_expert = Wt + (int64_t)expert * rows * cols;
    /* staged weight row j → row of the expert's matrix (SwiGLU: each warp's 32 columns are 16 gate
     * rows and the same 16 up rows); false past the matrix */
    auto weight_row = [&](int j, int64_t &global_row) {
        if (kSwiglu) {
            const int64_t f = (int64_t)blockIdx.x * (kBN / 2) + (j / kWarpN) * (kWarpN / 2) + (j % (kWarpN / 2));
            global_row = (j % kWarpN) < kWarpN / 2 ? f : F + f;
            return f < F;
        }
        global_row = (int64_t)blockIdx.x * kBN + j;
        return global_row < rows;
    };
    const int w_chunk = tid % 4, x_chunk = tid % 8;
    const W *w_src[2];
    const float *x_src[2];
    bool w_ok[2], x_ok[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if constexpr (!kFp8) {
            int64_t global_row;
            w_ok[i] = weight_row(tid / 4 + i * (kBN / 2), global_row);
            w_src[i] = w_ok[i] ? w_expert + global_row * cols + w_chunk * 8 : Wt;
        }
        const int r = tid / 8 + i * (kBM / 2);                 /* staged slot row */
        x_ok[i] = r < valid;
        x_src[i] = x_ok[i] ? X + (row0 + r) * cols + x_chunk * 4 : X;
    }
    const uint32_t x_dst = shared_address(x_stages) + (uint32_t)(((tid / 8) * kLdx + x_chunk * 4) * sizeof(float));
    const uint32_t w_dst = shared_address(w_stages) + (uint32_t)(((tid / 4) * kLdw + w_chunk * 8) * sizeof(__nv_bfloat16));
    /* FP8: staged row f_row, codes [16·f_half, 16·f_half + 16) of each k-tile, at a swizzled offset */
    const int f_row = tid % kBN, f_half = tid / kBN;
    const uint32_t f_raw = (uint32_t)(f_row * kBK + ((f_half ^ ((f_row >> 2) & 1)) * 16));
    const unsigned char *f_src = reinterpret_cast<const unsigned char *>(Wt);
    const float *s_src = sc.scale;
    bool f_ok = false;
    if constexpr (kFp8) {
        int64_t global_row;
        f_ok = weight_row(f_row, global_row);
        if (f_ok) {
            f_src = reinterpret_cast<const unsigned char *>(w_expert) + global_row * cols + f_half * 16;
            s_src = sc.scale + ((int64_t)expert * m4_fp8_blocks(rows, sc.block_rows) + global_row / sc.block_rows) *
                                   m4_fp8_blocks(cols, sc.block_cols);
        }
    }
    auto load_stage = [&](int stage, int kt) {
        const int64_t k0 = (int64_t)kt * kBK;
        const bool w_in = k0 + w_chunk * 8 < cols, x_in = k0 + x_chunk * 4 < cols;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            if constexpr (!kFp8) {
                const bool w_go = w_ok[i] && w_in;
                cp_async16(w_dst + stage * kWStageBytes + i * (kBN / 2) * kLdw * (int)sizeof(__nv_bfloat16),
                           w_go ? (const void *)(w_src[i] + k0) : (const void *)Wt, w_go ? 16 : 0);
            }
            const bool x_go = x_ok[i] && x_in;
            cp_async16(x_dst + stage * kXStageBytes + i * (kBM / 2) * kLdx * (int)sizeof(float),
                       x_go ? (const void *)(x_src[i] + k0) : (const void *)X, x_go ? 16 : 0);
        }
        if constexpr (kFp8) {
            const uint32_t dst = shared_address(w_stages + stage * kRawStageBytes) + f_raw;
#pragma unroll
            for (int q = 0; q < 2; q++) {                      /* 8 + 8 codes: cols % 8 == 0 keeps them aligned */
                const bool go = f_ok && k0 + f_half * 16 + q * 8 < cols;
                cp_async8(dst + q * 8, go ? (const void *)(f_src + k0 + q * 8) : (const void *)Wt, go ? 8 : 0);
            }
            if (f_half == 0)                                   /* the row's scale for this k-tile's column block */
                cp_async4(shared_address(s_stages + stage * kScaleStageBytes) + f_row * (int)sizeof(float),
                          f_ok ? (const void *)(s_src + (k0 >> col_shift)) : (const void *)sc.scale, f_ok ? 4 : 0);
        }
    };
    /* FP8: this thread's 16 staged codes of `stage` → bf16_rn(float(code) · scale) in tile `buf` */
    auto convert = [&](int stage, int buf) {
        const uint4 raw = *reinterpret_cast<const uint4 *>(w_stages + stage * kRawStageBytes + f_raw);
        const float scale = *reinterpret_cast<const float *>(s_stages + stage * kScaleStageBytes + f_row * (int)sizeof(float));
        const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
        uint32_t packed[8];
#pragma unroll
        for (int q = 0; q < 4; q++) {
            float v[4];
            e4m3x4_to_float(words[q], v);
            packed[2 * q] = pack_bf16x2(make_float2(__fmul_rn(v[0], scale), __fmul_rn(v[1], scale)));
            packed[2 * q + 1] = pack_bf16x2(make_float2(__fmul_rn(v[2], scale), __fmul_rn(v[3], scale)));
        }
        uint4 *dst = reinterpret_cast<uint4 *>(tiles + buf * kWStageBytes +
                                               (f_row * kLdw + f_half * 16) * (int)sizeof(__nv_bfloat16));
        dst[0] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
        dst[1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
    };

    /* 3. the K loop: wait for stage kt, refill the stage freed by step kt − 1, multiply stage kt */
    const int wm = warp / kWarpsN, wn = warp % kWarpsN, g = lane / 4, t = lane % 4;
    const int rows_here = valid - wm * kWarpM;                 /* ≤ 0: this warp's slots are all empty */
    /* ldmatrix: lane l addresses row (l % 8) of matrix l / 8 = (outputs +8 if l ≥ 16, k +8 if l / 8 odd) */
    const uint32_t b_lane = (uint32_t)(((wn * kWarpN + (lane / 16) * 8 + lane % 8) * kLdw + ((lane / 8) % 2) * 8) *
                                       (int)sizeof(__nv_bfloat16));
    const int a_lane = (wm * kWarpM + g) * kLdx + 2 * t;       /* float index of a0 in a stage */
    float acc[2][4][4];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int nf = 0; nf < 4; nf++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[mi][nf][q] = 0.0f;

    const int ktiles = (int)((cols + kBK - 1) / kBK);
#pragma unroll
    for (int s = 0; s < kStages - 1; s++) {
        if (s < ktiles) load_stage(s, s);
        cp_async_commit();
    }
    if constexpr (kFp8) {                                      /* tile 0 before the loop */
        cp_async_wait<kStages - 2>();
        __syncthreads();                                       /* every row's scale (its first thread's copy) */
        convert(0, 0);
    }
    for (int kt = 0; kt < ktiles; kt++) {
        /* bf16: stage kt has landed; FP8: stage kt + 1 (converted below, one step ahead) */
        cp_async_wait<kFp8 ? kStages - 3 : kStages - 2>();
        __syncthreads();
        const int next = kt + kStages - 1;
        if (next < ktiles) load_stage(next % kStages, next);
        cp_async_commit();
        if constexpr (kFp8)
            if (kt + 1 < ktiles) convert((kt + 1) % kStages, (kt + 1) % 2);
        if (rows_here <= 0) continue;
        const int stage = kt % kStages;
        const float *xs = reinterpret_cast<const float *>(x_stages + stage * kXStageBytes) + a_lane;
        const uint32_t ws = (kFp8 ? shared_address(tiles + (kt % 2) * kWStageBytes)
                                  : shared_address(w_stages + stage * kWStageBytes)) + b_lane;
#pragma unroll
        for (int kk = 0; kk < kBK; kk += 16) {
            uint32_t b[4][2];
#pragma unroll
            for (int p = 0; p < 2; p++)
                ldmatrix_x4(b[2 * p][0], b[2 * p][1], b[2 * p + 1][0], b[2 * p + 1][1],
                            ws + (uint32_t)((p * 16 * kLdw + kk) * (int)sizeof(__nv_bfloat16)));
#pragma unroll
            for (int mi = 0; mi < 2; mi++) {
                if (mi == 1 && rows_here <= 16) break;
                const float *xr = xs + mi * 16 * kLdx + kk;
                uint32_t a[4];
                a[0] = pack_bf16x2(*reinterpret_cast<const float2 *>(xr));                /* row g,     k 2t */
                a[1] = pack_bf16x2(*reinterpret_cast<const float2 *>(xr + 8 * kLdx));     /* row g + 8, k 2t */
                a[2] = pack_bf16x2(*reinterpret_cast<const float2 *>(xr + 8));            /* row g,     k 2t + 8 */
                a[3] = pack_bf16x2(*reinterpret_cast<const float2 *>(xr + 8 * kLdx + 8)); /* row g + 8, k 2t + 8 */
#pragma unroll
                for (int nf = 0; nf < 4; nf++) mma_bf16_16816(acc[mi][nf], a, b[nf]);
            }
        }
    }
    cp_async_wait<0>();

    /* 4. epilogue: the expert's slots only; accumulator q holds row g (+8 for q ≥ 2), column 2t + q % 2 */
    if (rows_here <= 0) return;
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int local = wm * kWarpM + mi * 16 + half * 8 + g;
            if (local >= valid) continue;
            float *y = Y + (row0 + local) * out_cols;
            if (kSwiglu) {
#pragma unroll
                for (int nf = 0; nf < 2; nf++) {
                    const int64_t f = (int64_t)blockIdx.x * (kBN / 2) + wn * (kWarpN / 2) + nf * 8 + 2 * t;
                    const float v0 = activate(acc[mi][nf][2 * half], act) * acc[mi][nf + 2][2 * half];
                    const float v1 = activate(acc[mi][nf][2 * half + 1], act) * acc[mi][nf + 2][2 * half + 1];
                    store2(y, f, out_cols, pairs, v0, v1);
                }
            } else {
#pragma unroll
                for (int nf = 0; nf < 4; nf++) {
                    const int64_t c = (int64_t)blockIdx.x * kBN + wn * kWarpN + nf * 8 + 2 * t;
                    store2(y, c, out_cols, pairs, acc[mi][nf][2 * half], acc[mi][nf][2 * half + 1]);
                }
            }
        }
}

} // namespace

template <typename W>
int m4k_grouped_gemm(const W *Wt, int64_t E, int64_t rows, int64_t cols, const int32_t *offsets,
                     const float *X, int64_t M, float *Y, bool swiglu, m4_activation act, cudaStream_t stream,
                     m4_error *err, const m4k_fp8_scales *scales) {
    constexpr bool kFp8 = std::is_same<W, __nv_fp8_e4m3>::value;
    if (E <= 0 || E > INT_MAX || rows <= 0 || cols <= 0 || M < 0 || M > INT_MAX || cols % 8 != 0 ||
        (swiglu && rows % 2 != 0))
        return m4_fail(err, "grouped gemm: unsupported shape (%lld experts [%lld, %lld]%s, %lld slots): needs cols "
                            "a multiple of 8%s",
                       (long long)E, (long long)rows, (long long)cols, swiglu ? " gate_up" : "", (long long)M,
                       swiglu ? " and an even number of rows" : "");
    if (!Wt || !offsets || (M > 0 && (!X || !Y)))
        return m4_fail(err, "grouped gemm: missing weight, offsets, input or output");
    if ((uintptr_t)Wt % 16 != 0 || (uintptr_t)X % 16 != 0)
        return m4_fail(err, "grouped gemm: weight and input must be 16-byte aligned");
    m4k_fp8_scales sc;
    int col_shift = 0;
    if (kFp8) {
        if (!scales || !scales->scale || scales->block_rows < 1)
            return m4_fail(err, "grouped gemm: an FP8 weight needs its scales and block size");
        sc = *scales;
        col_shift = m4_fp8_col_shift(cols, sc.block_cols, kBK);
        if (col_shift < 0)
            return m4_fail(err, "grouped gemm: FP8 column blocks of %lld over %lld columns: the kernel needs one block "
                                "over the width or a power of two that is a multiple of %d",
                           (long long)sc.block_cols, (long long)cols, kBK);
    }
    if (M == 0) return 0;
    const int64_t out_cols = swiglu ? rows / 2 : rows;
    const int64_t n_tiles = swiglu ? (out_cols + kBN / 2 - 1) / (kBN / 2) : (rows + kBN - 1) / kBN;
    /* Σ_e ⌈count_e / kBM⌉ ≤ ⌊(Σ_e count_e + E·(kBM − 1)) / kBM⌋ with Σ_e count_e ≤ M */
    const int64_t m_tiles = (M + E * (kBM - 1)) / kBM;
    if (m_tiles > 65535 || n_tiles > INT_MAX)
        return m4_fail(err, "grouped gemm: %lld slots over %lld experts exceed the grid", (long long)M, (long long)E);
    const bool pairs = out_cols % 2 == 0 && (uintptr_t)Y % 8 == 0;
    const dim3 grid((unsigned)n_tiles, (unsigned)m_tiles);
    const size_t shared = kFp8 ? kGemmSharedFp8 : kGemmShared;
    auto kernel = swiglu ? grouped_gemm_kernel<W, true> : grouped_gemm_kernel<W, false>;
    M4_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared), err);
    kernel<<<grid, kGemmThreads, shared, stream>>>(Wt, (int)E, rows, cols, offsets, X, M, Y, pairs, act, sc, col_shift);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}
template int m4k_grouped_gemm<__nv_bfloat16>(const __nv_bfloat16 *, int64_t, int64_t, int64_t, const int32_t *,
                                             const float *, int64_t, float *, bool, m4_activation, cudaStream_t,
                                             m4_error *, const m4k_fp8_scales *);
template int m4k_grouped_gemm<__nv_fp8_e4m3>(const __nv_fp8_e4m3 *, int64_t, int64_t, int64_t, const int32_t *,
                                             const float *, int64_t, float *, bool, m4_activation, cudaStream_t,
                                             m4_error *, const m4k_fp8_scales *);
