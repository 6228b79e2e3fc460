/* gemv.cu — the decode GEMV over float32, bf16 and FP8 weights, and FP8 → bf16 dequantisation
 * (gemv.cuh says what each computes). */
#include "device.cuh"
#include "gemv.cuh"

namespace {

/* 16 bytes of weights: 8 bf16, 4 float32 or 16 FP8 codes, loaded raw and widened at use; FP8
 * values are then multiplied by their block's scale (kScaled). */
template <typename W> struct vec16;
template <> struct vec16<__nv_bfloat16> {
    static constexpr int n = 8;
    static constexpr bool kScaled = false;
    __device__ static void widen(const uint4 &raw, float *out) {
        const __nv_bfloat162 *pairs = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 f = __bfloat1622float2(pairs[i]);
            out[2 * i] = f.x, out[2 * i + 1] = f.y;
        }
    }
};
template <> struct vec16<float> {
    static constexpr int n = 4;
    static constexpr bool kScaled = false;
    __device__ static void widen(const uint4 &raw, float *out) {
        out[0] = __uint_as_float(raw.x), out[1] = __uint_as_float(raw.y);
        out[2] = __uint_as_float(raw.z), out[3] = __uint_as_float(raw.w);
    }
};
template <> struct vec16<__nv_fp8_e4m3> {
    static constexpr int n = 16;
    static constexpr bool kScaled = true;
    __device__ static void widen(const uint4 &raw, float *out) {
        e4m3x4_to_float(raw.x, out), e4m3x4_to_float(raw.y, out + 4);
        e4m3x4_to_float(raw.z, out + 8), e4m3x4_to_float(raw.w, out + 12);
    }
};

/* Dot products of kRows weight rows with up to kTok input rows x [ntok, cols], each summed across
 * the warp. Every lane first issues kUnroll 16-byte loads per row, then does the arithmetic: a
 * decode GEMV is all memory latency. FP8: scale_rows[r] is row r's scales over the column blocks,
 * column c's at c >> col_shift (a 16-code load lies in one block), loaded beside the codes; each
 * widened code is multiplied by it (float32, the reference's dequantised value) before use. */
template <typename W, int kTok, int kRows, int kUnroll>
__device__ void warp_rows_dots(const W *const *rows, const float *const *scale_rows, int col_shift,
                               const float *x, int64_t cols, int ntok, float (&acc)[kRows][kTok]) {
    constexpr int V = vec16<W>::n;
    const int lane = threadIdx.x % kWarp;
#pragma unroll
    for (int r = 0; r < kRows; r++)
#pragma unroll
        for (int t = 0; t < kTok; t++) acc[r][t] = 0.0f;
    for (int64_t c0 = (int64_t)lane * V; c0 < cols; c0 += kWarp * V * kUnroll) {
        uint4 raw[kRows][kUnroll];
        float scale[kRows][kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; u++)
#pragma unroll
            for (int r = 0; r < kRows; r++) {
                const int64_t c = c0 + (int64_t)u * kWarp * V;
                raw[r][u] = c < cols ? __ldg(reinterpret_cast<const uint4 *>(rows[r] + c)) : make_uint4(0, 0, 0, 0);
                if constexpr (vec16<W>::kScaled) scale[r][u] = c < cols ? __ldg(scale_rows[r] + (c >> col_shift)) : 0.0f;
            }
#pragma unroll
        for (int u = 0; u < kUnroll; u++) {
            const int64_t c = c0 + (int64_t)u * kWarp * V;
            if (c >= cols) break;
#pragma unroll
            for (int r = 0; r < kRows; r++) {
                float wv[V];
                vec16<W>::widen(raw[r][u], wv);
                if constexpr (vec16<W>::kScaled) {
#pragma unroll
                    for (int i = 0; i < V; i++) wv[i] = __fmul_rn(wv[i], scale[r][u]);
                }
#pragma unroll
                for (int t = 0; t < kTok; t++) {
                    if (t >= ntok) break;
                    const float4 *xv = reinterpret_cast<const float4 *>(x + t * cols + c);
#pragma unroll
                    for (int q = 0; q < V / 4; q++) {
                        const float4 xq = xv[q];
                        acc[r][t] += wv[4 * q] * xq.x + wv[4 * q + 1] * xq.y + wv[4 * q + 2] * xq.z + wv[4 * q + 3] * xq.w;
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < kRows; r++)
#pragma unroll
        for (int t = 0; t < kTok; t++) acc[r][t] = warp_sum(acc[r][t]);
}

/* One warp per output row (or gate/up row pair); the block first copies its input rows to shared
 * memory when they fit (x_in_shared), so the inner loop reads them from there. FP8: `sc` and
 * col_shift locate the scales (unused otherwise). */
template <typename W, bool kSwiglu, int kUnroll>
__global__ void gemv_kernel(const W *__restrict__ Wt, int64_t rows, int64_t cols,
                            const int32_t *__restrict__ expert, const float *__restrict__ x,
                            int64_t x_div, int ntok, float *__restrict__ y, m4_activation act,
                            bool x_in_shared, m4k_fp8_scales sc, int col_shift) {
    extern __shared__ float x_shared[];        /* [ntok, cols] when x_in_shared */
    constexpr int kRows = kSwiglu ? 2 : 1;
    const int64_t g = blockIdx.y;
    const int64_t out_rows = kSwiglu ? rows / 2 : rows;
    const float *xg = x + (g / x_div) * ntok * cols;
    if (x_in_shared) {
        for (int64_t i = threadIdx.x; i < ntok * cols / 4; i += blockDim.x)
            reinterpret_cast<float4 *>(x_shared)[i] = reinterpret_cast<const float4 *>(xg)[i];
        __syncthreads();
        xg = x_shared;
    }
    const int64_t e = expert ? (int64_t)expert[g] : 0;
    const W *m = Wt + e * rows * cols;
    float *yg = y + g * ntok * out_rows;
    int64_t scale_rows = 0, scale_cols = 0;                /* FP8: the scale array's blocks per matrix */
    if constexpr (vec16<W>::kScaled)
        scale_rows = m4_fp8_blocks(rows, sc.block_rows), scale_cols = m4_fp8_blocks(cols, sc.block_cols);
    const int64_t warps = blockDim.x / kWarp;
    /* grid-stride over the rows: a launch of about one wave, each warp streaming several rows */
    for (int64_t r = (int64_t)blockIdx.x * warps + threadIdx.x / kWarp; r < out_rows; r += (int64_t)gridDim.x * warps) {
        const W *row_ptrs[kRows];
        const float *scale_ptrs[kRows];
        row_ptrs[0] = m + r * cols;
        if (kSwiglu) row_ptrs[kRows - 1] = m + (out_rows + r) * cols;
        if constexpr (vec16<W>::kScaled) {
            scale_ptrs[0] = sc.scale + (e * scale_rows + r / sc.block_rows) * scale_cols;
            if (kSwiglu) scale_ptrs[kRows - 1] = sc.scale + (e * scale_rows + (out_rows + r) / sc.block_rows) * scale_cols;
        }
        float acc[kRows][M4_CUDA_GEMV_MAX_TOKENS];
        warp_rows_dots<W, M4_CUDA_GEMV_MAX_TOKENS, kRows, kUnroll>(row_ptrs, scale_ptrs, col_shift, xg, cols, ntok, acc);
        if (threadIdx.x % kWarp != 0) continue;
#pragma unroll
        for (int t = 0; t < M4_CUDA_GEMV_MAX_TOKENS; t++) {
            if (t >= ntok) break;
            yg[t * out_rows + r] = kSwiglu ? activate(acc[0][t], act) * acc[kRows - 1][t] : acc[0][t];
        }
    }
}

/* One block per row of the range: out row (r − row0) = bf16_rn(float(code) · scale) over the row's
 * columns, one code per thread step (coalesced bytes; the scale's column block by a 32-bit
 * division, any block size). The product is rounded once to float32 (no FMA can form: nothing is
 * added), then to bf16 — the host's __float2bfloat16_rn(m4_weight_row_f32(...)) bit for bit. */
__global__ void fp8_to_bf16_kernel(const uint8_t *__restrict__ W, m4k_fp8_scales sc, int64_t rows, int64_t cols,
                                   int64_t row0, __nv_bfloat16 *__restrict__ out) {
    const int64_t r = row0 + blockIdx.x;
    const uint32_t bc = (uint32_t)(sc.block_cols < cols ? sc.block_cols : cols);
    const float *srow = sc.scale + (r / sc.block_rows) * m4_fp8_blocks(cols, sc.block_cols);
    const uint8_t *src = W + r * cols;
    __nv_bfloat16 *dst = out + (int64_t)blockIdx.x * cols;
    for (uint32_t c = threadIdx.x; c < (uint32_t)cols; c += blockDim.x) {
        const float v = __half2float(__half(__nv_cvt_fp8_to_halfraw(src[c], __NV_E4M3)));   /* exact */
        dst[c] = __float2bfloat16_rn(__fmul_rn(v, srow[c / bc]));
    }
}

/* Multiprocessors of the current device (read once). */
int sm_count() {
    static int count = 0;
    if (count == 0) {
        int device = 0;
        if (cudaGetDevice(&device) != cudaSuccess ||
            cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count <= 0)
            count = 1;
    }
    return count;
}

constexpr int kThreads = 256;

} // namespace

m4k_gemv_tuning m4k_gemv_config;

template <typename W>
int m4k_gemv(const W *Wt, int64_t rows, int64_t cols, const int32_t *expert, int64_t groups,
             const float *x, int64_t x_div, int ntok, float *y, bool swiglu, m4_activation act,
             cudaStream_t stream, m4_error *err, const m4k_fp8_scales *scales) {
    constexpr int V = vec16<W>::n;                 /* weights per 16-byte load: cols must be a multiple */
    if (ntok < 1 || ntok > M4_CUDA_GEMV_MAX_TOKENS || cols % (V > 8 ? V : 8) != 0 || (swiglu && rows % 2 != 0))
        return m4_fail(err, "gemv: unsupported shape (%d tokens, [%lld, %lld]%s): needs cols a multiple of %d", ntok,
                       (long long)rows, (long long)cols, swiglu ? ", gate_up" : "", V > 8 ? V : 8);
    m4k_fp8_scales sc;
    int col_shift = 0;
    if constexpr (vec16<W>::kScaled) {
        if (!scales || !scales->scale || scales->block_rows < 1)
            return m4_fail(err, "gemv: an FP8 weight needs its scales and block size");
        sc = *scales;
        col_shift = m4_fp8_col_shift(cols, sc.block_cols, V);
        if (col_shift < 0)
            return m4_fail(err, "gemv: FP8 column blocks of %lld over %lld columns: the kernel needs one block over "
                                "the width or a power of two that is a multiple of %d",
                           (long long)sc.block_cols, (long long)cols, V);
    }
    if (groups <= 0) return 0;
    const int warps = kThreads / kWarp;
    const int64_t out_rows = swiglu ? rows / 2 : rows;
    /* m4k_gemv_config.blocks_per_sm blocks per multiprocessor over all groups, each looping over rows */
    const m4k_gemv_tuning &tune = m4k_gemv_config;
    int64_t blocks = (out_rows + warps - 1) / warps;
    const int64_t wave = ((int64_t)tune.blocks_per_sm * sm_count() + groups - 1) / groups;
    if (blocks > wave) blocks = wave;
    dim3 grid((unsigned)blocks, (unsigned)groups);
    const size_t x_bytes = sizeof(float) * (size_t)(ntok * cols);
    const bool x_in_shared = tune.x_in_shared && x_bytes <= 32 * 1024;   /* leaves room for several blocks per SM */
    const size_t shared = x_in_shared ? x_bytes : 0;
#define M4_GEMV_LAUNCH(SWIGLU, UNROLL)                                                               \
    gemv_kernel<W, SWIGLU, UNROLL><<<grid, kThreads, shared, stream>>>(Wt, rows, cols, expert, x, x_div, ntok, y, \
                                                                       act, x_in_shared, sc, col_shift)
    switch ((swiglu ? 10 : 0) + tune.unroll) {
    case 2: M4_GEMV_LAUNCH(false, 2); break;
    case 8: M4_GEMV_LAUNCH(false, 8); break;
    case 12: M4_GEMV_LAUNCH(true, 2); break;
    case 18: M4_GEMV_LAUNCH(true, 8); break;
    case 14: M4_GEMV_LAUNCH(true, 4); break;
    default: M4_GEMV_LAUNCH(false, 4); break;
    }
#undef M4_GEMV_LAUNCH
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}
template int m4k_gemv<float>(const float *, int64_t, int64_t, const int32_t *, int64_t, const float *,
                             int64_t, int, float *, bool, m4_activation, cudaStream_t, m4_error *,
                             const m4k_fp8_scales *);
template int m4k_gemv<__nv_bfloat16>(const __nv_bfloat16 *, int64_t, int64_t, const int32_t *, int64_t,
                                     const float *, int64_t, int, float *, bool, m4_activation,
                                     cudaStream_t, m4_error *, const m4k_fp8_scales *);
template int m4k_gemv<__nv_fp8_e4m3>(const __nv_fp8_e4m3 *, int64_t, int64_t, const int32_t *, int64_t,
                                     const float *, int64_t, int, float *, bool, m4_activation,
                                     cudaStream_t, m4_error *, const m4k_fp8_scales *);

int m4k_fp8_to_bf16(const __nv_fp8_e4m3 *W, const m4k_fp8_scales &scales, int64_t rows, int64_t cols,
                    int64_t row0, int64_t n_rows, __nv_bfloat16 *out, cudaStream_t stream, m4_error *err) {
    if (!scales.scale || scales.block_rows < 1 || scales.block_cols < 1 || row0 < 0 || n_rows < 0 ||
        row0 + n_rows > rows || cols < 0 || cols > INT32_MAX || n_rows > INT32_MAX)
        return m4_fail(err, "fp8 → bf16: rows [%lld, %lld) of [%lld, %lld] with %lld x %lld blocks", (long long)row0,
                       (long long)(row0 + n_rows), (long long)rows, (long long)cols, (long long)scales.block_rows,
                       (long long)scales.block_cols);
    if (n_rows == 0 || cols == 0) return 0;
    fp8_to_bf16_kernel<<<(unsigned)n_rows, kThreads, 0, stream>>>(reinterpret_cast<const uint8_t *>(W), scales, rows,
                                                                 cols, row0, out);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}
