/* FP8 weights kept as FP8 on the device (issue #7): e4m3 codes + float32 block scales
 * (optimized/fp8_blocks.h), against host references built from the loader's own dequantisation
 * (m4_weight_row_chunk_f32: float32(code) · scale, the reference's value, one m4_weight view per
 * scale block). Codes are a hash of the element index (the same on host and device, NaN codes
 * excluded except in the dequantisation test, which covers all 256); scales are random 24-bit
 * mantissas over 2^-12 … 2^-4, so that products need rounding. Block layouts: 128 × 128 blocks
 * on shapes that are not multiples of 128 (rows 200, cols 272 / 264: partial blocks on both
 * axes, SwiGLU's up rows starting inside a row block), odd blocks, and the per-tensor layout the
 * loader produces (block = the matrix, the published checkpoint).
 *
 *  (a) m4k_gemv<fp8>, plain and SwiGLU, n = 1, 3, 8 tokens, with expert ids and x_div, small
 *      shapes and the real widths (4 of 128 experts, gate_up [4096, 4096], down [4096, 2048]),
 *      against float64 on the exactly dequantised weights. The kernel multiplies exact codes by
 *      the scale in float32 (the reference's weight, bit for bit) and accumulates in float32, so
 *      every output must lie within the rigorous summation bound γ_h · Σ|w·x| (h = 16·⌈cols/512⌉
 *      + 8: the additions on any term's path in a lane's chain plus the 5-level warp tree; u = 2^-24;
 *      SwiGLU: the bound carried through act and the product), and the relative L2 over all
 *      outputs ≤ 1e-5: the expected float32 rounding of these sums is ~1e-7–1e-6, while a wrong
 *      code, scale block or row is an O(1) error. The FP8 GEMV needs cols % 16 == 0 (16 codes per
 *      16-byte load), so its shapes take cols 272 (2 · 128 + 16); cols 264 must be refused by it
 *      and take m4_cuda_linear's other path. m4_cuda_linear on FP8 weights the same way at
 *      n ≤ 8 (GEMV), and past 8 or where the GEMV does not fit (cols % 16 ≠ 0): dequantisation
 *      in row chunks (forced small: several chunks, a partial last one) + cuBLAS bf16, against
 *      float64 on bf16-rounded weights and inputs: the products are exact, cuBLAS's float32
 *      tensor-core accumulation may truncate (not round) and align within k-blocks, so the per
 *      output bound uses u = 2^-20 and the relative L2 budget is 1e-4 (the bias of truncation
 *      alone can reach ~1e-5 at these widths).
 *  (b) m4k_grouped_gemm<fp8> with uneven expert counts (empty experts first, inside and last,
 *      several 64-slot tiles), plain and SwiGLU, K tails, cols 264 (rows not 16-byte aligned:
 *      the 8-byte staging), one case from a CUDA graph, and the published widths (128 experts,
 *      2048 slots, sampled columns): bit for bit equal to m4k_grouped_gemm<bf16> on
 *      m4k_fp8_to_bf16's output (the same tiles and mma order on the same bf16 values), and
 *      against float64 on bf16-rounded weights and activations within relative L2 1e-3 and
 *      1e-3 · rms per value (test_gpu_grouped_gemm's budget: float32 accumulation gives ~1e-6).
 *  (c) m4k_fp8_to_bf16 bit for bit against the host's m4_weight_row_chunk_f32 rounded to bf16
 *      (__float2bfloat16_rn), all 256 codes (NaN codes must give NaN), subnormal products, row
 *      ranges not starting at 0, odd block sizes.
 *  (d) m4_cuda_moe_experts on FP8 stacks: the decode GEMV path (n = 1, 3, 8) within 1e-5 of
 *      float64 (two float32 GEMVs and the combine), the grouped path (n = 9, 40) within 1e-3 of
 *      float64 on bf16-rounded operands (the kernel's rounding mirrored).
 *  (e) The golden FP8 checkpoint opened with precision bf16: every FP8 GEMM weight is on the
 *      device as FP8 (codes and scales bit-identical to the checkpoint's), kv_b_proj, norms,
 *      router, embeddings and lm_head keep their bf16 / float32 forms, device_bytes adds up, and
 *      every FP8 weight fits the FP8 GEMV (stacks: and the FP8 grouped GEMM), so that conform
 *      --backend cuda-bf16 on golden/cases/fp8 runs the FP8 kernels end to end; with precision
 *      fp32 nothing is FP8 — no silent fallback either way.
 * Outputs are prefilled with NaN bits (cudaMemset 0xff): every output must be written and
 * finite, guard regions past the outputs untouched. Argument errors fail cleanly. Skips (exit 77)
 * without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "testutil.h"
}
#include "cuda_model.cuh"
#include "gpu_test_util.cuh"
#include "kernels/gemv.cuh"
#include "kernels/grouped_gemm.cuh"
#include "paths.h"

/* ---- data --------------------------------------------------------------------------------------- */

__host__ __device__ static inline uint32_t mix(uint64_t i, uint32_t seed) {
    uint32_t h = (uint32_t)i * 2654435761u ^ (uint32_t)(i >> 32) * 2246822519u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    return h;
}

/* Code of element i: uniform over the 256 codes, the NaN codes (0x7F, 0xFF) moved to ±448 unless
 * with_nan. */
__host__ __device__ static inline uint8_t code_at(uint64_t i, uint32_t seed, bool with_nan) {
    uint8_t c = (uint8_t)(mix(i, seed) >> 24);
    if (!with_nan && (c & 0x7F) == 0x7F) c = (uint8_t)(c - 1);
    return c;
}

__global__ void fill_codes(uint8_t *w, uint64_t n, uint32_t seed, bool with_nan) {
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
        w[i] = code_at(i, seed, with_nan);
}

static unsigned g_rng = 20240607u;
static uint32_t next_u32() { return g_rng = g_rng * 1664525u + 1013904223u; }
static float uniform_pm1() { return ((float)(next_u32() >> 8) / (float)(1 << 24) - 0.5f) * 2.0f; }

/* A scale 2^k · (1 + m), k in [−12, −4], m a random 23-bit fraction. */
static float random_scale() {
    const int k = -12 + (int)(next_u32() % 9u);
    const float m = 1.0f + (float)(next_u32() >> 9) / (float)(1 << 23);
    return ldexpf(m, k);
}


/* An FP8 stack [E, rows, cols] on the device: codes from the hash, scales [E, nbr, nbc] random. */
struct fp8_stack {
    int64_t E, rows, cols, br, bc, nbr, nbc;
    uint32_t seed;
    bool with_nan;
    uint8_t *d_codes = nullptr;
    float *d_scales = nullptr;
    std::vector<float> scales;
    fp8_stack(int64_t E_, int64_t rows_, int64_t cols_, int64_t br_, int64_t bc_, uint32_t seed_, bool nan = false)
        : E(E_), rows(rows_), cols(cols_), br(br_), bc(bc_), nbr(m4_fp8_blocks(rows_, br_)), nbc(m4_fp8_blocks(cols_, bc_)),
          seed(seed_), with_nan(nan) {
        const uint64_t n = (uint64_t)(E * rows * cols);
        assert_int_equal(cudaMalloc(&d_codes, n), cudaSuccess);
        fill_codes<<<1024, 256>>>(d_codes, n, seed, with_nan);
        assert_int_equal(cudaGetLastError(), cudaSuccess);
        scales.resize((size_t)(E * nbr * nbc));
        for (float &s : scales) s = random_scale();
        assert_int_equal(cudaMalloc(&d_scales, sizeof(float) * scales.size()), cudaSuccess);
        assert_int_equal(cudaMemcpy(d_scales, scales.data(), sizeof(float) * scales.size(), cudaMemcpyHostToDevice),
                         cudaSuccess);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    }
    ~fp8_stack() { cudaFree(d_codes), cudaFree(d_scales); }
    fp8_stack(const fp8_stack &) = delete;
    fp8_stack &operator=(const fp8_stack &) = delete;
    const __nv_fp8_e4m3 *codes() const { return reinterpret_cast<const __nv_fp8_e4m3 *>(d_codes); }
    m4k_fp8_scales dev_scales() const { return {d_scales, br, bc}; }
    m4_dev_weight dev_weight() const {
        m4_dev_weight w;
        w.data = d_codes, w.fp8 = true, w.scales = d_scales, w.block_rows = br, w.block_cols = bc;
        w.experts = E, w.rows = rows, w.cols = cols;
        return w;
    }
    /* Row r of expert e dequantised by the reference's function: one m4_weight view per scale
     * block (its scale is the block's), m4_weight_row_chunk_f32 over the block's columns. */
    void dequant_row(int64_t e, int64_t r, float *dst) const {
        std::vector<uint8_t> codes((size_t)cols);
        for (int64_t c = 0; c < cols; c++) codes[(size_t)c] = code_at((uint64_t)((e * rows + r) * cols + c), seed, with_nan);
        for (int64_t cb = 0; cb < nbc; cb++) {
            m4_weight w = {};
            w.name = "test", w.dtype = M4_DTYPE_F8_E4M3, w.rows = 1, w.cols = cols, w.data = codes.data();
            w.scale = scales[(size_t)m4_fp8_scale_index(e, r, cb * bc, rows, cols, br, bc)];
            const int64_t c0 = cb * bc;
            m4_weight_row_chunk_f32(&w, 0, c0, std::min(bc, cols - c0), dst + c0);
        }
    }
    std::vector<float> dequant(int64_t e) const {
        std::vector<float> out((size_t)(rows * cols));
        for (int64_t r = 0; r < rows; r++) dequant_row(e, r, out.data() + r * cols);
        return out;
    }
};

/* ---- checking ----------------------------------------------------------------------------------- */


/* γ_h = h·u / (1 − h·u) */
static double gamma_of(double h, double u) { return h * u / (1.0 - h * u); }

/* The FP8 GEMV's γ: a lane sums at most 16·⌈cols / 512⌉ products (16 codes per load, 32 lanes),
 * then 5 warp-shuffle levels; + 1 for the product and slack for the grouping inside a load. */
static double gemv_gamma(int64_t cols) { return gamma_of(16.0 * (double)((cols + 511) / 512) + 8.0, 0x1p-24); }

/* A float64 dot product and Σ|w·x| (for the rounding bound). */
struct dot {
    double v = 0, abs = 0;
};
static dot dot_of(const float *w, const float *x, int64_t n) {
    dot d;
    for (int64_t k = 0; k < n; k++) {
        const double p = (double)w[k] * (double)x[k];
        d.v += p, d.abs += fabs(p);
    }
    return d;
}

/* One output's expected value and its allowed deviation. */
struct expect {
    double want, bound;
};

/* The float32 result of a SwiGLU pair from its two dot products, each within gamma·abs: the
 * bound carried through act (Lipschitz: silu 1.10, gelu and gelu_tanh 1.13, relu 1; 1.15 used),
 * act's own float32 evaluation (expf/erff/tanhf ≤ 2 ulp, the division and the addition: ≤ 8 ulp
 * of the result; erff/tanhf's absolute error where 1 + erf cancels stays far under the Lipschitz
 * term, γ ≥ 1.4e-6 against 0.5 · 2^-22) and the product. */
static expect swiglu_expect(const dot &g, const dot &u, double gamma, m4_activation act) {
    const double eg = gamma * g.abs + 1e-12 * g.abs, eu = gamma * u.abs + 1e-12 * u.abs;
    const double a = act_ref(g.v, act), want = a * u.v;
    const double bound = 1.15 * eg * (fabs(u.v) + eu) + fabs(a) * eu + 9.0 * 0x1p-24 * fabs(want) + 1e-30;
    return {want, bound};
}

/* Compares got (the first n of the buffer) with the expectations: finite, each within its bound
 * (bounds may be 0 to skip), relative L2 ≤ rel_budget; and the guard values past n still hold the
 * NaN fill's bits. */
static void check(const char *name, const std::vector<float> &buf, const std::vector<expect> &want, double rel_budget) {
    const size_t n = want.size();
    assert_true(buf.size() >= n);
    double num = 0, den = 0, worst_ratio = 0;
    int64_t not_finite = 0, over = 0, guard = 0;
    for (size_t i = 0; i < n; i++) {
        const double g = buf[i], w = want[i].want;
        if (!isfinite(g)) {
            not_finite++;
            continue;
        }
        num += (g - w) * (g - w), den += w * w;
        if (want[i].bound > 0) {
            const double ratio = fabs(g - w) / want[i].bound;
            worst_ratio = fmax(worst_ratio, ratio);
            over += ratio > 1.0;
        }
    }
    for (size_t i = n; i < buf.size(); i++) {
        uint32_t bits;
        memcpy(&bits, &buf[i], sizeof bits);
        guard += bits != 0xffffffffu;
    }
    const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    fprintf(stderr, "%-60s %7zu values: rel L2 %.2e (budget %.0e), worst |err| / bound %.3f, %lld over, %lld not finite, "
                    "%lld guard values written\n",
            name, n, rel, rel_budget, worst_ratio, (long long)over, (long long)not_finite, (long long)guard);
    assert_int_equal(not_finite, 0);
    assert_int_equal(guard, 0);
    assert_int_equal(over, 0);
    assert_true(den > 0);
    assert_true(rel <= rel_budget);
}

static constexpr int64_t kGuard = 257;   /* floats past every output, which must keep the NaN fill */

static float *nan_buffer(size_t n) {
    float *d = nullptr;
    assert_int_equal(cudaMalloc(&d, sizeof(float) * n), cudaSuccess);
    assert_int_equal(cudaMemset(d, 0xff, sizeof(float) * n), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);   /* before work on non-blocking streams */
    return d;
}

static std::vector<float> download(const float *d, size_t n) {
    std::vector<float> h(n);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    assert_int_equal(cudaMemcpy(h.data(), d, sizeof(float) * n, cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
}

template <typename T> static T *upload(const std::vector<T> &h) {
    T *d = nullptr;
    assert_int_equal(cudaMalloc(&d, sizeof(T) * (h.size() ? h.size() : 1)), cudaSuccess);
    if (!h.empty()) assert_int_equal(cudaMemcpy(d, h.data(), sizeof(T) * h.size(), cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);   /* before work on non-blocking streams */
    return d;
}

/* ---- (a) GEMV ------------------------------------------------------------------------------------- */

struct gemv_case {
    const char *name;
    int64_t E, rows, cols, br, bc;
    int ntok;
    int64_t groups, x_div;
    bool swiglu;
    m4_activation act;
};

static void run_gemv(const gemv_case &c) {
    const fp8_stack s(c.E, c.rows, c.cols, c.br, c.bc, (uint32_t)(c.rows * 31 + c.cols * 7 + c.E + c.br));
    const int64_t out_rows = c.swiglu ? c.rows / 2 : c.rows, x_rows = (c.groups + c.x_div - 1) / c.x_div * c.ntok;
    std::vector<int32_t> ids((size_t)c.groups);
    for (int64_t g = 0; g < c.groups; g++) ids[(size_t)g] = (int32_t)((g * 37 + 5 + (g % 3) * (c.E / 2)) % c.E);
    std::vector<float> x((size_t)(x_rows * c.cols));
    for (float &v : x) v = uniform_pm1();
    int32_t *d_ids = upload(ids);
    float *d_x = upload(x);
    const size_t y_n = (size_t)(c.groups * c.ntok * out_rows);
    float *d_y = nan_buffer(y_n + kGuard);
    m4_error err = m4_error{};
    const m4k_fp8_scales sc = s.dev_scales();
    const int rc = m4k_gemv(s.codes(), c.rows, c.cols, d_ids, c.groups, d_x, c.x_div, c.ntok, d_y, c.swiglu, c.act, 0,
                            &err, &sc);
    if (rc) fprintf(stderr, "%s: %s\n", c.name, err.msg);
    assert_int_equal(rc, 0);
    const std::vector<float> y = download(d_y, y_n + kGuard);
    cudaFree(d_ids), cudaFree(d_x), cudaFree(d_y);

    const double gamma = gemv_gamma(c.cols);
    std::vector<expect> want(y_n);
    std::vector<int64_t> experts(ids.begin(), ids.end());
    std::sort(experts.begin(), experts.end());
    experts.erase(std::unique(experts.begin(), experts.end()), experts.end());
    for (int64_t e : experts) {                       /* one dequantised matrix at a time */
        const std::vector<float> w = s.dequant(e);
        for (int64_t g = 0; g < c.groups; g++) {
            if (ids[(size_t)g] != e) continue;
            for (int t = 0; t < c.ntok; t++) {
                const float *xt = x.data() + ((g / c.x_div) * c.ntok + t) * c.cols;
                for (int64_t r = 0; r < out_rows; r++) {
                    const dot a = dot_of(w.data() + r * c.cols, xt, c.cols);
                    expect &o = want[(size_t)((g * c.ntok + t) * out_rows + r)];
                    if (c.swiglu) o = swiglu_expect(a, dot_of(w.data() + (out_rows + r) * c.cols, xt, c.cols), gamma, c.act);
                    else o = {a.v, gamma * a.abs + 1e-12 * a.abs + 1e-30};
                }
            }
        }
    }
    check(c.name, y, want, 1e-5);
}

static void gemv_small_shapes(void **state) {
    (void)state;
    const gemv_case cases[] = {
        /* 128 × 128 blocks over [200, 272]: partial row and column blocks */
        {"gemv fp8 128x128 blocks, n=1", 3, 200, 272, 128, 128, 1, 1, 1, false, M4_ACT_SILU},
        {"gemv fp8 128x128 blocks, n=3, 5 groups", 3, 200, 272, 128, 128, 3, 5, 1, false, M4_ACT_SILU},
        {"gemv fp8 128x128 blocks, n=8, 4 groups / x_div 2", 3, 200, 272, 128, 128, 8, 4, 2, false, M4_ACT_SILU},
        /* SwiGLU: up rows 100..199 start inside row block 0 */
        {"gemv fp8 swiglu silu 128x128, n=1, 6 groups / x_div 3", 3, 200, 272, 128, 128, 1, 6, 3, true, M4_ACT_SILU},
        {"gemv fp8 swiglu gelu 128x128, n=3", 3, 200, 272, 128, 128, 3, 2, 1, true, M4_ACT_GELU},
        {"gemv fp8 swiglu silu 128x128, n=8", 3, 200, 272, 128, 128, 8, 3, 1, true, M4_ACT_SILU},
        /* narrower power-of-two column blocks, odd row blocks */
        {"gemv fp8 16-column blocks, 7-row blocks, n=3", 2, 200, 272, 7, 16, 3, 3, 1, false, M4_ACT_SILU},
        {"gemv fp8 swiglu 64-column blocks, 33-row blocks, n=8", 2, 200, 272, 33, 64, 8, 2, 1, true, M4_ACT_GELU_TANH},
        /* per tensor, as the loader gives it (block = the matrix) */
        {"gemv fp8 per-tensor, n=1", 4, 200, 272, 200, 272, 1, 4, 1, false, M4_ACT_SILU},
        {"gemv fp8 per-tensor swiglu, n=3", 4, 200, 272, 200, 272, 3, 4, 4, true, M4_ACT_SILU},
        {"gemv fp8 per-tensor, n=8", 4, 200, 272, 200, 272, 8, 1, 1, false, M4_ACT_SILU},
    };
    for (const gemv_case &c : cases) run_gemv(c);
}

/* The published widths: 4 of 128 experts per token, n tokens (groups n·4, one x row per token). */
static void gemv_published_widths(void **state) {
    (void)state;
    for (int64_t n : {1, 3, 8}) {
        char name[96];
        snprintf(name, sizeof name, "gemv fp8 published gate_up 128x128, n=%lld", (long long)n);
        run_gemv({name, 128, 4096, 4096, 128, 128, 1, n * 4, 4, true, M4_ACT_SILU});
        snprintf(name, sizeof name, "gemv fp8 published down per-tensor, n=%lld", (long long)n);
        run_gemv({name, 128, 4096, 2048, 4096, 2048, 1, n * 4, 1, false, M4_ACT_SILU});
    }
    run_gemv({"gemv fp8 published gate_up per-tensor, n=1", 128, 4096, 4096, 4096, 4096, 1, 4, 4, true, M4_ACT_SILU});
    run_gemv({"gemv fp8 published down 128x128, n=1", 128, 4096, 2048, 128, 128, 1, 4, 1, false, M4_ACT_SILU});
}

/* m4_cuda_linear on an FP8 weight: GEMV at n ≤ 8 where it fits, else dequantise + cuBLAS. */
struct cuda_state {
    m4_cuda st;
    cuda_state() {
        st.precision = M4_PRECISION_BF16;
        assert_int_equal(cudaStreamCreateWithFlags(&st.stream, cudaStreamNonBlocking), cudaSuccess);
        assert_int_equal(cublasCreate(&st.cublas), CUBLAS_STATUS_SUCCESS);
        assert_int_equal(cublasSetStream(st.cublas, st.stream), CUBLAS_STATUS_SUCCESS);
    }
    ~cuda_state() {
        cudaStreamSynchronize(st.stream);
        cublasDestroy(st.cublas);
        cudaStreamDestroy(st.stream);
    }
};

static void linear_paths(void **state) {
    (void)state;
    cuda_state cs;
    const int64_t saved_chunk = m4_cuda_fp8_chunk_elements;
    struct lcase {
        int64_t rows, cols, br, bc, n;
    } cases[] = {
        {200, 272, 128, 128, 1}, {200, 272, 128, 128, 3}, {200, 272, 128, 128, 8},   /* GEMV */
        {200, 272, 200, 272, 8},                                                        /* GEMV, per tensor */
        {200, 272, 128, 128, 9}, {200, 272, 128, 128, 40},                              /* dequantise + cuBLAS */
        {200, 264, 128, 128, 3}, {200, 264, 200, 264, 40},                              /* cols % 16 ≠ 0: no GEMV */
        {200, 272, 48, 40, 5},                                                          /* odd blocks: no GEMV */
    };
    for (const lcase &c : cases) {
        const fp8_stack s(1, c.rows, c.cols, c.br, c.bc, (uint32_t)(c.rows + 3 * c.cols + c.n));
        const m4_dev_weight w = s.dev_weight();
        const bool gemv = c.n <= M4_CUDA_GEMV_MAX_TOKENS && m4_cuda_gemv_fits(w);
        m4_cuda_fp8_chunk_elements = 64 * c.cols;       /* chunks of 64 rows: 64, 64, 64, 8 */
        std::vector<float> x((size_t)(c.n * c.cols));
        for (float &v : x) v = uniform_pm1();
        float *d_x = upload(x);
        const size_t y_n = (size_t)(c.n * c.rows);
        float *d_y = nan_buffer(y_n + kGuard);
        m4_error err = m4_error{};
        const int rc = m4_cuda_linear(&cs.st, d_x, c.n, w, d_y, &err);
        if (rc) fprintf(stderr, "linear: %s\n", err.msg);
        assert_int_equal(rc, 0);
        assert_int_equal(cudaStreamSynchronize(cs.st.stream), cudaSuccess);
        const std::vector<float> y = download(d_y, y_n + kGuard);
        cudaFree(d_x), cudaFree(d_y);
        std::vector<float> wd = s.dequant(0);
        if (!gemv) {                                    /* what the cuBLAS path multiplies */
            for (float &v : wd) v = bf16_round(v);
            for (float &v : x) v = bf16_round(v);
        }
        const double gamma = gemv ? gemv_gamma(c.cols) : gamma_of((double)(c.cols + 2), 0x1p-20);
        std::vector<expect> want(y_n);
        for (int64_t t = 0; t < c.n; t++)
            for (int64_t r = 0; r < c.rows; r++) {
                const dot d = dot_of(wd.data() + r * c.cols, x.data() + t * c.cols, c.cols);
                want[(size_t)(t * c.rows + r)] = {d.v, gamma * d.abs + 1e-12 * d.abs + 1e-30};
            }
        char name[128];
        snprintf(name, sizeof name, "linear fp8 [%lld, %lld] %lldx%lld blocks, n=%lld (%s)", (long long)c.rows,
                 (long long)c.cols, (long long)c.br, (long long)c.bc, (long long)c.n, gemv ? "gemv" : "dequant + cuBLAS");
        check(name, y, want, gemv ? 1e-5 : 1e-4);
    }
    m4_cuda_fp8_chunk_elements = saved_chunk;
}

/* ---- (b) grouped GEMM ----------------------------------------------------------------------------- */

struct ggcase {
    const char *name;
    int64_t E, rows, cols, br, bc;
    bool swiglu;
    m4_activation act;
    std::vector<int32_t> counts;
    int64_t tail;          /* unowned slots after offsets[E] */
    bool sample;           /* check a sample of the output columns against float64 */
    bool graph;            /* launch the FP8 kernel from a captured CUDA graph */
};

static void run_grouped(const ggcase &c) {
    const int64_t E = c.E, rows = c.rows, cols = c.cols, F = rows / 2, out_cols = c.swiglu ? F : rows;
    assert_int_equal((int64_t)c.counts.size(), E);
    std::vector<int32_t> offsets((size_t)(E + 1), 0);
    for (int64_t e = 0; e < E; e++) offsets[(size_t)e + 1] = offsets[(size_t)e] + c.counts[(size_t)e];
    const int64_t owned = offsets[(size_t)E], M = owned + c.tail;
    const fp8_stack s(E, rows, cols, c.br, c.bc, (uint32_t)(rows * 131 + cols * 7 + E + c.bc));
    std::vector<float> x((size_t)(M * cols));
    for (int64_t i = 0; i < M * cols; i++) x[(size_t)i] = i < owned * cols ? uniform_pm1() : nanf("");
    float *d_x = upload(x);
    int32_t *d_off = upload(offsets);
    const size_t y_n = (size_t)((M + 80) * out_cols);  /* 80 guard rows: more than a slot tile */
    float *d_y = nan_buffer(y_n), *d_y16 = nan_buffer(y_n);

    /* the same stack dequantised by m4k_fp8_to_bf16, for the bf16 kernel */
    __nv_bfloat16 *d_w16 = nullptr;
    assert_int_equal(cudaMalloc(&d_w16, sizeof(__nv_bfloat16) * (size_t)(E * rows * cols)), cudaSuccess);
    m4_error err = m4_error{};
    for (int64_t e = 0; e < E; e++) {
        const m4k_fp8_scales sc = {s.d_scales + e * s.nbr * s.nbc, c.br, c.bc};
        assert_int_equal(m4k_fp8_to_bf16(s.codes() + e * rows * cols, sc, rows, cols, 0, rows, d_w16 + e * rows * cols, 0, &err), 0);
    }
    cudaStream_t stream;
    assert_int_equal(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    const m4k_fp8_scales sc = s.dev_scales();
    launch_on(stream, c.graph, c.name, [&](m4_error *e) {
        return m4k_grouped_gemm(s.codes(), E, rows, cols, d_off, d_x, M, d_y, c.swiglu, c.act, stream, e, &sc);
    });
    assert_int_equal(m4k_grouped_gemm(d_w16, E, rows, cols, d_off, d_x, M, d_y16, c.swiglu, c.act, stream, &err), 0);
    assert_int_equal(cudaStreamSynchronize(stream), cudaSuccess);
    assert_int_equal(cudaStreamDestroy(stream), cudaSuccess);
    const std::vector<float> y = download(d_y, y_n), y16 = download(d_y16, y_n);
    cudaFree(d_x), cudaFree(d_off), cudaFree(d_y), cudaFree(d_y16), cudaFree(d_w16);

    /* 1. bit for bit the bf16 kernel's result on the dequantised stack, guard and unowned rows included */
    int64_t differ = 0;
    for (size_t i = 0; i < y_n; i++) differ += memcmp(&y[i], &y16[i], sizeof(float)) != 0;
    if (differ) fprintf(stderr, "%s: %lld values differ from the bf16 kernel on m4k_fp8_to_bf16's weights\n", c.name, (long long)differ);
    assert_int_equal(differ, 0);

    /* 2. against float64 on bf16-rounded weights and activations (test_gpu_grouped_gemm's check) */
    check_grouped_output(c.name, y, x, offsets, cols, out_cols, c.swiglu, c.act, c.sample, [&](int64_t e, int64_t r, float *dst) {
        s.dequant_row(e, r, dst);
        for (int64_t k = 0; k < cols; k++) dst[k] = bf16_round(dst[k]);
    });
}

static void grouped_small_shapes(void **state) {
    (void)state;
    const ggcase cases[] = {
        {"grouped fp8 plain 128x128: empty experts, 3 tiles", 8, 200, 272, 128, 128, false, M4_ACT_SILU,
         {0, 17, 5, 0, 150, 1, 33, 0}, 0, false, false},
        {"grouped fp8 plain: cols 264 (8-byte staging), tails", 8, 200, 264, 128, 128, false, M4_ACT_SILU,
         {3, 0, 64, 65, 0, 0, 129, 9}, 11, false, false},
        {"grouped fp8 plain per-tensor: K shorter than a step", 8, 128, 24, 128, 24, false, M4_ACT_SILU,
         {5, 60, 0, 0, 0, 0, 0, 33}, 2, false, false},
        {"grouped fp8 swiglu silu 128x128: up rows inside a block", 8, 200, 272, 128, 128, true, M4_ACT_SILU,
         {0, 0, 31, 100, 7, 0, 16, 40}, 5, false, false},
        {"grouped fp8 swiglu gelu 32-column, 5-row blocks", 8, 144, 264, 5, 32, true, M4_ACT_GELU,
         {2, 90, 0, 0, 13, 64, 0, 27}, 0, false, false},
        {"grouped fp8 swiglu per-tensor: odd F", 8, 74, 96, 74, 96, true, M4_ACT_GELU_TANH,
         {1, 0, 0, 0, 0, 0, 0, 70}, 3, false, false},
        {"grouped fp8 swiglu silu from a CUDA graph", 8, 200, 272, 128, 128, true, M4_ACT_SILU,
         {0, 0, 31, 100, 7, 0, 16, 40}, 5, false, true},
        {"grouped fp8 plain from a CUDA graph", 8, 200, 264, 64, 64, false, M4_ACT_SILU,
         {3, 0, 64, 65, 0, 0, 129, 9}, 11, false, true},
    };
    for (const ggcase &c : cases) run_grouped(c);
}


static void grouped_published_widths(void **state) {
    (void)state;
    run_grouped({"grouped fp8 published gate_up per-tensor (swiglu)", 128, 4096, 4096, 4096, 4096, true, M4_ACT_SILU,
                 published_counts(), 0, true, false});
    run_grouped({"grouped fp8 published down 128x128", 128, 4096, 2048, 128, 128, false, M4_ACT_SILU, published_counts(),
                 0, true, false});
}

/* ---- (c) dequantisation ----------------------------------------------------------------------------- */

static void dequant_bit_exact(void **state) {
    (void)state;
    struct dcase {
        int64_t E, rows, cols, br, bc, row0, n_rows;
    } cases[] = {
        {2, 200, 264, 128, 128, 0, 200}, {2, 200, 264, 128, 128, 37, 91}, {2, 200, 264, 200, 264, 0, 200},
        {1, 200, 272, 48, 40, 13, 150},  {1, 61, 37, 7, 5, 0, 61},        {1, 3, 1000, 1, 1000, 1, 2},
    };
    for (const dcase &c : cases) {
        fp8_stack s(c.E, c.rows, c.cols, c.br, c.bc, (uint32_t)(c.rows * 7 + c.cols + c.br), true);   /* NaN codes too */
        /* a subnormal-product scale, a plain 1 and a large one among the random ones */
        s.scales[0] = 0x1.8p-130f;
        if (s.scales.size() > 1) s.scales[1] = 1.0f;
        if (s.scales.size() > 2) s.scales[2] = 0x1.fffffep+110f;
        assert_int_equal(cudaMemcpy(s.d_scales, s.scales.data(), sizeof(float) * s.scales.size(), cudaMemcpyHostToDevice),
                         cudaSuccess);
        /* every code appears: the first 256 codes of each matrix become 0..255 */
        assert_true(c.rows * c.cols >= 256);
        std::vector<uint8_t> all(256);
        for (int i = 0; i < 256; i++) all[(size_t)i] = (uint8_t)i;
        for (int64_t e = 0; e < c.E; e++)
            assert_int_equal(cudaMemcpy(s.d_codes + e * c.rows * c.cols, all.data(), 256, cudaMemcpyHostToDevice), cudaSuccess);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
        for (int64_t e = 0; e < c.E; e++) {
            const size_t n = (size_t)(c.n_rows * c.cols);
            __nv_bfloat16 *d_out = nullptr;
            assert_int_equal(cudaMalloc(&d_out, sizeof(__nv_bfloat16) * (n + 64)), cudaSuccess);
            assert_int_equal(cudaMemset(d_out, 0xff, sizeof(__nv_bfloat16) * (n + 64)), cudaSuccess);
            const m4k_fp8_scales sc = {s.d_scales + e * s.nbr * s.nbc, c.br, c.bc};
            m4_error err = m4_error{};
            const int rc = m4k_fp8_to_bf16(s.codes() + e * c.rows * c.cols, sc, c.rows, c.cols, c.row0, c.n_rows, d_out, 0, &err);
            if (rc) fprintf(stderr, "dequant: %s\n", err.msg);
            assert_int_equal(rc, 0);
            std::vector<uint16_t> got(n + 64);
            assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
            assert_int_equal(cudaMemcpy(got.data(), d_out, sizeof(uint16_t) * got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
            cudaFree(d_out);
            /* the host: the loader's row dequantisation with the first 256 codes replaced likewise */
            std::vector<uint8_t> codes((size_t)(c.rows * c.cols));
            for (int64_t i = 0; i < c.rows * c.cols; i++)
                codes[(size_t)i] = i < 256 ? (uint8_t)i : code_at((uint64_t)(e * c.rows * c.cols + i), s.seed, true);
            int64_t mismatches = 0, nans = 0, guard = 0;
            std::vector<float> row((size_t)c.cols);
            for (int64_t r = c.row0; r < c.row0 + c.n_rows; r++) {
                for (int64_t cb = 0; cb < s.nbc; cb++) {
                    m4_weight w = {};
                    w.name = "test", w.dtype = M4_DTYPE_F8_E4M3, w.rows = c.rows, w.cols = c.cols, w.data = codes.data();
                    w.scale = s.scales[(size_t)m4_fp8_scale_index(e, r, cb * c.bc, c.rows, c.cols, c.br, c.bc)];
                    const int64_t c0 = cb * c.bc;
                    m4_weight_row_chunk_f32(&w, r, c0, std::min(c.bc, c.cols - c0), row.data() + c0);
                }
                for (int64_t k = 0; k < c.cols; k++) {
                    const float ref = row[(size_t)k];
                    const uint16_t g = got[(size_t)((r - c.row0) * c.cols + k)];
                    if (isnan(ref)) {
                        nans++;
                        mismatches += !((g & 0x7F80u) == 0x7F80u && (g & 0x7Fu) != 0);
                    } else {
                        const __nv_bfloat16 want = __float2bfloat16_rn(ref);
                        uint16_t wbits;
                        memcpy(&wbits, &want, sizeof wbits);
                        mismatches += g != wbits;
                    }
                }
            }
            for (size_t i = n; i < got.size(); i++) guard += got[i] != 0xffffu;
            fprintf(stderr, "dequant fp8 → bf16 [%lld, %lld] %lldx%lld blocks rows [%lld, %lld) expert %lld: %lld "
                            "mismatches, %lld NaN codes, %lld guard values written\n",
                    (long long)c.rows, (long long)c.cols, (long long)c.br, (long long)c.bc, (long long)c.row0,
                    (long long)(c.row0 + c.n_rows), (long long)e, (long long)mismatches, (long long)nans, (long long)guard);
            assert_int_equal(mismatches, 0);
            assert_int_equal(guard, 0);
        }
    }
}

/* ---- (d) the MoE block on FP8 stacks ------------------------------------------------------------------ */

static void moe_experts_fp8(void **state) {
    (void)state;
    cuda_state cs;
    const int64_t E = 8, K = 4, D = 272, F = 144;
    for (int layout = 0; layout < 2; layout++) {                /* 128 × 128 blocks, then per tensor */
        const bool blocks = layout == 0;
        const fp8_stack gu(E, 2 * F, D, blocks ? 128 : 2 * F, blocks ? 128 : D, 77u + (uint32_t)layout);
        const fp8_stack dn(E, D, F, blocks ? 128 : D, blocks ? 128 : F, 99u + (uint32_t)layout);
        std::vector<std::vector<float>> wgu, wdn;                 /* exact dequantised weights */
        for (int64_t e = 0; e < E; e++) wgu.push_back(gu.dequant(e)), wdn.push_back(dn.dequant(e));
        for (int64_t n : {1, 3, 8, 9, 40}) {
            const bool decode = n <= M4_CUDA_GEMV_MAX_TOKENS;
            std::vector<float> x((size_t)(n * D)), wts((size_t)(n * K));
            std::vector<int32_t> ids((size_t)(n * K));
            for (float &v : x) v = uniform_pm1();
            for (int64_t t = 0; t < n; t++)                         /* K distinct experts per token (steps 1, 3: odd, E = 8) */
                for (int64_t k = 0; k < K; k++) {
                    ids[(size_t)(t * K + k)] = (int32_t)((t * 3 + (t % 5 == 0 ? 4 : 0) + k * (1 + 2 * (t % 2))) % E);
                    wts[(size_t)(t * K + k)] = 0.1f + 0.8f * (float)(next_u32() >> 8) / (float)(1 << 24);
                }
            float *d_x = upload(x), *d_w = upload(wts);
            int32_t *d_ids = upload(ids);
            float *d_out = nan_buffer((size_t)(n * D) + kGuard);
            m4_error err = m4_error{};
            const int rc = m4_cuda_moe_experts(&cs.st, gu.dev_weight(), dn.dev_weight(), K, M4_ACT_SILU, d_x, n, d_ids, d_w,
                                               nullptr, d_out, &err);
            if (rc) fprintf(stderr, "moe experts: %s\n", err.msg);
            assert_int_equal(rc, 0);
            assert_int_equal(cudaStreamSynchronize(cs.st.stream), cudaSuccess);
            const std::vector<float> out = download(d_out, (size_t)(n * D) + kGuard);
            cudaFree(d_x), cudaFree(d_w), cudaFree(d_ids), cudaFree(d_out);
            /* float64 reference; the grouped path's bf16 roundings mirrored (x, weights, the hidden) */
            std::vector<expect> want((size_t)(n * D), expect{0, 0});
            std::vector<float> h((size_t)F), xt((size_t)D), wrow((size_t)D), hrow((size_t)F);
            for (int64_t t = 0; t < n; t++) {
                for (int64_t d = 0; d < D; d++) xt[(size_t)d] = decode ? x[(size_t)(t * D + d)] : bf16_round(x[(size_t)(t * D + d)]);
                for (int64_t k = 0; k < K; k++) {
                    const int64_t e = ids[(size_t)(t * K + k)];
                    for (int64_t f = 0; f < F; f++) {
                        double g = 0, u = 0;
                        for (int64_t d = 0; d < D; d++) {
                            const float wg = wgu[(size_t)e][(size_t)(f * D + d)], wu = wgu[(size_t)e][(size_t)((F + f) * D + d)];
                            g += (double)(decode ? wg : bf16_round(wg)) * xt[(size_t)d];
                            u += (double)(decode ? wu : bf16_round(wu)) * xt[(size_t)d];
                        }
                        const float hv = (float)(act_ref(g, M4_ACT_SILU) * u);
                        h[(size_t)f] = decode ? hv : bf16_round(hv);
                    }
                    for (int64_t d = 0; d < D; d++) {
                        double y = 0;
                        for (int64_t f = 0; f < F; f++) {
                            const float wv = wdn[(size_t)e][(size_t)(d * F + f)];
                            y += (double)(decode ? wv : bf16_round(wv)) * h[(size_t)f];
                        }
                        want[(size_t)(t * D + d)].want += y * wts[(size_t)(t * K + k)];
                    }
                }
            }
            char name[128];
            snprintf(name, sizeof name, "moe experts fp8 %s, n=%lld (%s)", blocks ? "128x128 blocks" : "per-tensor",
                     (long long)n, decode ? "gemv" : "grouped gemm");
            check(name, out, want, decode ? 1e-5 : 1e-3);
        }
    }
}

/* ---- (e) the golden FP8 checkpoint: what the upload keeps as FP8 ------------------------------------- */

static void golden_upload_forms(void **state) {
    (void)state;
    char *dir = m4t_source_path("golden/cases/fp8/model");
    m4_model model;
    m4_error err = m4_error{};
    if (m4_model_open(dir, &model, &err) != 0) fprintf(stderr, "%s\n", err.msg);
    free(dir);
    assert_true(model.config.quant.fp8);
    for (int precision = 0; precision < 2; precision++) {
        const bool bf16 = precision == 1;
        m4_cuda *st = nullptr;
        if (m4_cuda_open(&model, bf16 ? M4_PRECISION_BF16 : M4_PRECISION_FP32, &st, &err) != 0)
            fprintf(stderr, "open: %s\n", err.msg);
        assert_non_null(st);
        size_t expected_bytes = 0;
        int64_t fp8_weights = 0, fp8_stacks = 0;
        auto dev = [&](const void *data) {
            const m4_dev_weight *d = m4_cuda_weight(st, data, "test", &err);
            assert_non_null(d);
            return d;
        };
        /* the switches in effect (M4_CUDA_ENABLE / M4_CUDA_DISABLE, read by m4_cuda_open): gpu-check runs
         * this test with the defaults and with every path on */
        const bool codes_kept = bf16 && m4_cuda_path_on(M4_PATH_FP8_CODES), paired = m4_cuda_path_on(M4_PATH_PAIRS);
        /* a GEMM weight: FP8 (codes and scale bit-identical) under bf16 when FP8 on disk (switch fp8_codes) */
        auto gemm = [&](const m4_weight &w) {
            if (!w.data) return;
            const m4_dev_weight *d = dev(w.data);
            const bool want_fp8 = codes_kept && w.dtype == M4_DTYPE_F8_E4M3;
            if (d->fp8 != want_fp8 || d->bf16 != (bf16 && !want_fp8))
                fprintf(stderr, "%s: device form fp8 %d bf16 %d, expected fp8 %d\n", w.name, d->fp8, d->bf16, want_fp8);
            assert_int_equal(d->fp8, want_fp8);
            assert_int_equal(d->bf16, bf16 && !want_fp8);
            if (!want_fp8) {
                expected_bytes += (size_t)(w.rows * w.cols) * (bf16 ? 2 : 4);
                return;
            }
            fp8_weights++;
            assert_int_equal(d->block_rows, w.rows);
            assert_int_equal(d->block_cols, w.cols);
            assert_true(m4_cuda_gemv_fits(*d));             /* decode takes the FP8 GEMV, no detour */
            std::vector<uint8_t> codes((size_t)(w.rows * w.cols));
            float scale = 0;
            assert_int_equal(cudaMemcpy(codes.data(), d->data, codes.size(), cudaMemcpyDeviceToHost), cudaSuccess);
            assert_int_equal(cudaMemcpy(&scale, d->scales, sizeof scale, cudaMemcpyDeviceToHost), cudaSuccess);
            assert_memory_equal(codes.data(), w.data, codes.size());
            assert_memory_equal(&scale, &w.scale, sizeof scale);
            expected_bytes += ((size_t)(w.rows * w.cols) + 255) / 256 * 256 + sizeof(float);
        };
        auto other = [&](const m4_weight &w, bool f32) {
            if (!w.data) return;
            const m4_dev_weight *d = dev(w.data);
            assert_false(d->fp8);
            assert_int_equal(d->bf16, bf16 && !f32);
            expected_bytes += (size_t)(w.rows * w.cols) * (bf16 && !f32 ? 2 : 4);
        };
        const m4_weights *W = &model.weights;
        other(W->embed_tokens, false), other(W->norm, true);
        if (W->lm_head.data != W->embed_tokens.data) gemm(W->lm_head);
        for (int64_t l = 0; l < model.config.text.num_hidden_layers; l++) {
            const m4_text_layer_weights *L = &W->layers[l];
            for (const m4_weight *w : {&L->q_proj, &L->q_a_proj, &L->q_b_proj, &L->kv_a_proj_with_mqa, &L->o_proj,
                                       &L->shared_gate_proj, &L->shared_up_proj, &L->shared_down_proj, &L->gate_proj,
                                       &L->up_proj, &L->down_proj})
                gemm(*w);
            other(L->kv_b_proj, false);                       /* read directly by the cached MLA */
            /* weights sharing an input sit side by side (one GEMV/GEMM), unless FP8 or `pairs` is off */
            m4_dev_weight both;
            assert_int_equal(m4_cuda_weight_pair(*dev(L->q_a_proj.data), *dev(L->kv_a_proj_with_mqa.data), &both),
                             paired && !dev(L->q_a_proj.data)->fp8 && !dev(L->kv_a_proj_with_mqa.data)->fp8);
            if (L->shared_gate_proj.data)
                assert_int_equal(m4_cuda_weight_pair(*dev(L->shared_gate_proj.data), *dev(L->shared_up_proj.data), &both),
                                 paired && !dev(L->shared_gate_proj.data)->fp8 && !dev(L->shared_up_proj.data)->fp8);
            for (const m4_weight *w : {&L->input_layernorm, &L->q_a_layernorm, &L->kv_a_layernorm,
                                       &L->post_attention_layernorm, &L->router})
                other(*w, true);
            for (const m4_expert_stack *s : {&L->experts_gate_up, &L->experts_down}) {
                const m4_dev_weight *d = dev(s->data);
                const bool want_fp8 = codes_kept && s->dtype == M4_DTYPE_F8_E4M3;
                assert_int_equal(d->fp8, want_fp8);
                if (!want_fp8) {
                    expected_bytes += (size_t)(s->experts * s->rows * s->cols) * (bf16 ? 2 : 4);
                    continue;
                }
                fp8_stacks++;
                assert_true(m4_cuda_gemv_fits(*d));         /* decode: the FP8 GEMV */
                assert_true(m4_cuda_grouped_gemm_fits(*d)); /* prefill: the FP8 grouped GEMM, no host loop */
                assert_int_equal(d->experts, s->experts);
                assert_int_equal(d->block_rows, s->rows);
                assert_int_equal(d->block_cols, s->cols);
                std::vector<float> scales((size_t)s->experts);
                std::vector<uint8_t> codes((size_t)(s->experts * s->rows * s->cols));
                assert_int_equal(cudaMemcpy(scales.data(), d->scales, sizeof(float) * scales.size(), cudaMemcpyDeviceToHost),
                                 cudaSuccess);
                assert_int_equal(cudaMemcpy(codes.data(), d->data, codes.size(), cudaMemcpyDeviceToHost), cudaSuccess);
                assert_memory_equal(codes.data(), s->data, codes.size());
                for (int64_t e = 0; e < s->experts; e++) {
                    const float want = m4_expert_weight(s, e).scale;
                    assert_memory_equal(&scales[(size_t)e], &want, sizeof want);
                }
                expected_bytes += ((size_t)codes.size() + 255) / 256 * 256 + sizeof(float) * (size_t)s->experts;
            }
        }
        /* the vision tower and projector (bf16 in this checkpoint) */
        if (model.config.multimodal) {
            gemm(W->patch_conv), other(W->ln_pre, true), other(W->projector_norm, true), gemm(W->patch_merger);
            gemm(W->linear_1), gemm(W->linear_2), other(W->linear_1_bias, true), other(W->linear_2_bias, true);
            for (int64_t l = 0; l < model.config.vision.num_hidden_layers; l++) {
                const m4_vision_layer_weights *L = &W->vision_layers[l];
                other(L->attention_norm, true), other(L->ffn_norm, true);
                for (const m4_weight *w : {&L->q_proj, &L->k_proj, &L->v_proj, &L->o_proj, &L->gate_proj, &L->up_proj,
                                           &L->down_proj})
                    gemm(*w);
            }
        }
        fprintf(stderr, "golden fp8 checkpoint, precision %s: %lld FP8 weights and %lld FP8 stacks on the device, "
                        "%zu device bytes (expected %zu)\n",
                bf16 ? "bf16" : "fp32", (long long)fp8_weights, (long long)fp8_stacks, st->device_bytes, expected_bytes);
        if (codes_kept) {
            assert_true(fp8_weights >= 7 * model.config.text.num_hidden_layers);  /* q_a q_b kv_a o shared×3 */
            assert_int_equal(fp8_stacks, 2 * model.config.text.num_hidden_layers);
        } else {
            assert_int_equal(fp8_weights + fp8_stacks, 0);
        }
        assert_int_equal(st->device_bytes, expected_bytes);
        m4_cuda_close(st);
    }
    m4_model_close(&model);
}

/* ---- argument errors ------------------------------------------------------------------------------ */

static void rejects_bad_arguments(void **state) {
    (void)state;
    const fp8_stack s(2, 64, 264, 32, 128, 5u);
    float *d_x = nan_buffer(8 * 272), *d_y = nan_buffer(8 * 272);
    int32_t *d_off = nullptr;
    assert_int_equal(cudaMalloc(&d_off, 64), cudaSuccess);
    assert_int_equal(cudaMemset(d_off, 0, 64), cudaSuccess);
    m4_error err = m4_error{};
    m4k_fp8_scales sc = s.dev_scales();
    /* GEMV: cols % 16, no scales, a column block that is not a power of two */
    assert_int_equal(m4k_gemv(s.codes(), 64, 264, nullptr, 1, d_x, 1, 1, d_y, false, M4_ACT_SILU, 0, &err, &sc), -1);
    m4t_assert_contains(err.msg, "multiple of 16");
    err = m4_error{};
    assert_int_equal(m4k_gemv(s.codes(), 64, 256, nullptr, 1, d_x, 1, 1, d_y, false, M4_ACT_SILU, 0, &err), -1);
    m4t_assert_contains(err.msg, "scales");
    err = m4_error{};
    m4k_fp8_scales odd = {s.d_scales, 32, 96};
    assert_int_equal(m4k_gemv(s.codes(), 64, 256, nullptr, 1, d_x, 1, 1, d_y, false, M4_ACT_SILU, 0, &err, &odd), -1);
    m4t_assert_contains(err.msg, "power of two");
    /* grouped GEMM: 16-column blocks are under its 32-column k-tile; no scales */
    err = m4_error{};
    m4k_fp8_scales narrow = {s.d_scales, 32, 16};
    assert_int_equal(m4k_grouped_gemm(s.codes(), 2, 64, 256, d_off, d_x, 4, d_y, false, M4_ACT_SILU, 0, &err, &narrow), -1);
    m4t_assert_contains(err.msg, "power of two");
    err = m4_error{};
    assert_int_equal(m4k_grouped_gemm(s.codes(), 2, 64, 256, d_off, d_x, 4, d_y, false, M4_ACT_SILU, 0, &err), -1);
    m4t_assert_contains(err.msg, "scales");
    /* dequantisation: a row range past the matrix */
    err = m4_error{};
    __nv_bfloat16 *d_out = nullptr;
    assert_int_equal(cudaMalloc(&d_out, 64 * 264 * 2), cudaSuccess);
    assert_int_equal(m4k_fp8_to_bf16(s.codes(), sc, 64, 264, 60, 5, d_out, 0, &err), -1);
    assert_true(err.msg[0] != 0);
    /* m4_cuda_gemv_fits / m4_cuda_grouped_gemm_fits agree with the kernels' limits */
    m4_dev_weight w = s.dev_weight();
    assert_false(m4_cuda_gemv_fits(w));               /* cols 264 */
    assert_true(m4_cuda_grouped_gemm_fits(w));        /* cols % 8 == 0, 128-column blocks */
    w.cols = 256;
    assert_true(m4_cuda_gemv_fits(w));
    w.block_cols = 96;
    assert_false(m4_cuda_gemv_fits(w));
    assert_false(m4_cuda_grouped_gemm_fits(w));
    w.block_cols = 16;
    assert_true(m4_cuda_gemv_fits(w));
    assert_false(m4_cuda_grouped_gemm_fits(w));
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    cudaFree(d_x), cudaFree(d_y), cudaFree(d_off), cudaFree(d_out);
}

int main(void) {
    if (!gpu_present("test_gpu_fp8")) return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rejects_bad_arguments),
        cmocka_unit_test(dequant_bit_exact),
        cmocka_unit_test(gemv_small_shapes),
        cmocka_unit_test(linear_paths),
        cmocka_unit_test(grouped_small_shapes),
        cmocka_unit_test(moe_experts_fp8),
        cmocka_unit_test(golden_upload_forms),
        cmocka_unit_test(gemv_published_widths),
        cmocka_unit_test(grouped_published_widths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
