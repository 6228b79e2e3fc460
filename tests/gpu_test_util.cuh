/* gpu_test_util.cuh — what the CUDA kernel tests (test_gpu_*.cu) share: the skip without a GPU,
 * bf16 rounding on the host, the activations in float64 (the host references' ACT2FN), the
 * uneven expert counts of a 2048-slot MoE batch at the published widths, and the check of a
 * grouped expert GEMM's output. Include after testutil.h (CMocka's assertions). */
#ifndef M4_GPU_TEST_UTIL_CUH
#define M4_GPU_TEST_UTIL_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <vector>

extern "C" {
#include "config.h"
#include "m4_error.h"
}

/* Whether a CUDA device is present; without one, says so on stderr: the test then exits 77
 * (skipped). */
static inline bool gpu_present(const char *test) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) return true;
    fprintf(stderr, "%s: no CUDA device, skipped\n", test);
    return false;
}

/* Device copies and host copies of vectors (a 1-element allocation for an empty one). */
template <typename T> inline T *to_device(const std::vector<T> &v) {
    T *d = nullptr;
    assert_int_equal(cudaMalloc(&d, sizeof(T) * (v.size() ? v.size() : 1)), cudaSuccess);
    assert_int_equal(cudaMemcpy(d, v.data(), sizeof(T) * v.size(), cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}

template <typename T> inline std::vector<T> to_host(const T *d, size_t n) {
    std::vector<T> v(n);
    assert_int_equal(cudaMemcpy(v.data(), d, sizeof(T) * n, cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
}

/* A device buffer of n floats filled with NaN bits (0xff bytes): an unwritten value shows. */
static inline float *nan_filled(size_t n) {
    float *d = nullptr;
    assert_int_equal(cudaMalloc(&d, sizeof(float) * n), cudaSuccess);
    assert_int_equal(cudaMemset(d, 0xff, sizeof(float) * n), cudaSuccess);
    return d;
}

/* x rounded to the nearest bf16 (ties to even), back in float32: what the kernels round to. */
static inline float bf16_round(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

/* ACT2FN[act] in float64. */
static inline double act_ref(double x, m4_activation act) {
    switch (act) {
    case M4_ACT_SILU: return x / (1.0 + exp(-x));
    case M4_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case M4_ACT_GELU_TANH: return 0.5 * x * (1.0 + tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x)));
    case M4_ACT_RELU: return x > 0 ? x : 0;
    }
    return x;
}

/* Slots per expert of 2048 slots over the published 128 experts, uneven and fixed: expert 5
 * holds 300 (several slot tiles), every expert e with e % 9 == 4 none, the rest drawn. */
static inline std::vector<int32_t> published_counts() {
    const int E = 128, M = 2048;
    std::vector<int32_t> counts((size_t)E, 0);
    counts[5] = 300;
    unsigned s = 4242u;
    for (int i = 0; i < M - 300; i++) {
        int e;
        do {
            s = s * 1664525u + 1013904223u;
            e = (int)((s >> 8) % (unsigned)E);
        } while (e % 9 == 4 || e == 5);
        counts[(size_t)e]++;
    }
    return counts;
}

/* Runs launch(err) — it enqueues on `stream` and returns 0 or −1 — either eagerly or captured in a
 * CUDA graph (global capture mode: a host synchronisation inside would fail it) and replayed, then
 * waits for the stream. */
template <typename Launch>
static void launch_on(cudaStream_t stream, bool graph, const char *name, Launch launch) {
    m4_error err = m4_error{};
    cudaGraph_t captured;
    cudaGraphExec_t exec;
    if (graph) assert_int_equal(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
    const int rc = launch(&err);
    if (graph) assert_int_equal(cudaStreamEndCapture(stream, &captured), cudaSuccess);
    if (rc) fprintf(stderr, "%s: %s\n", name, err.msg);
    assert_int_equal(rc, 0);
    if (graph) {
        assert_int_equal(cudaGraphInstantiate(&exec, captured, 0), cudaSuccess);
        assert_int_equal(cudaGraphLaunch(exec, stream), cudaSuccess);
    }
    assert_int_equal(cudaStreamSynchronize(stream), cudaSuccess);
    if (graph) cudaGraphExecDestroy(exec), cudaGraphDestroy(captured);
}

/* The output Y of m4k_grouped_gemm on activations x [M, cols], expert e owning slots
 * [offsets[e], offsets[e + 1]), Y prefilled with 0xff bytes and longer than the owned slots:
 * every owned value must be finite, every value past them untouched, and the checked columns
 * (all of them, or with `sample` every 37th plus the tile edges and the last 9) within relative
 * L2 1e-3, and 1e-3·rms per value, of float64 on the bf16-rounded activations and the weights
 * weight_row(e, r, dst) gives (row r of expert e, cols floats, already bf16-exact). swiglu: rows
 * f and F + f of each expert pair up (out_cols = F). */
template <typename WeightRow>
static void check_grouped_output(const char *name, const std::vector<float> &y, const std::vector<float> &x,
                                 const std::vector<int32_t> &offsets, int64_t cols, int64_t out_cols, bool swiglu,
                                 m4_activation act, bool sample, WeightRow weight_row) {
    const int64_t E = (int64_t)offsets.size() - 1, owned = offsets[(size_t)E], F = out_cols;
    int64_t unwritten = 0, touched = 0;
    for (int64_t i = 0; i < owned * out_cols; i++) unwritten += !isfinite(y[(size_t)i]);
    for (size_t i = (size_t)(owned * out_cols); i < y.size(); i++) {
        uint32_t bits;
        memcpy(&bits, &y[i], sizeof bits);
        touched += bits != 0xffffffffu;
    }
    if (unwritten || touched)
        fprintf(stderr, "%s: %lld owned outputs not finite, %lld values past the owned slots written\n", name,
                (long long)unwritten, (long long)touched);
    assert_int_equal(unwritten, 0);
    assert_int_equal(touched, 0);
    std::vector<int64_t> check;
    for (int64_t j = 0; j < out_cols; j++) {
        const bool tile_edge = j < 200 && (j % 64 >= 56 || j % 64 < 8);   /* the 64-feature / 128-row tile edges */
        if (!sample || tile_edge || j % 37 == 0 || j >= out_cols - 9) check.push_back(j);
    }
    std::vector<float> xr((size_t)(owned * cols));
    for (int64_t i = 0; i < owned * cols; i++) xr[(size_t)i] = bf16_round(x[(size_t)i]);
    const int64_t per_col = swiglu ? 2 : 1;
    std::vector<float> w((size_t)((int64_t)check.size() * per_col * cols));   /* the checked rows of one expert */
    double num = 0, den = 0, worst = 0;
    for (int64_t e = 0; e < E; e++) {
        if (offsets[(size_t)e + 1] == offsets[(size_t)e]) continue;
        for (size_t q = 0; q < check.size(); q++)
            for (int64_t p = 0; p < per_col; p++) weight_row(e, check[q] + p * F, w.data() + ((int64_t)q * per_col + p) * cols);
        for (int64_t m = offsets[(size_t)e]; m < offsets[(size_t)e + 1]; m++)
            for (size_t q = 0; q < check.size(); q++) {
                double dot[2] = {0, 0};
                for (int64_t p = 0; p < per_col; p++) {
                    const float *wr = w.data() + ((int64_t)q * per_col + p) * cols, *xm = xr.data() + m * cols;
                    for (int64_t k = 0; k < cols; k++) dot[p] += (double)wr[k] * xm[k];
                }
                const double want = swiglu ? act_ref(dot[0], act) * dot[1] : dot[0];
                const double got = y[(size_t)(m * out_cols + check[q])];
                num += (got - want) * (got - want), den += want * want, worst = fmax(worst, fabs(got - want));
            }
    }
    const int64_t checked = owned * (int64_t)check.size();
    const double rel = den > 0 ? sqrt(num / den) : sqrt(num), rms = sqrt(den / (double)(checked > 0 ? checked : 1));
    fprintf(stderr, "%-52s E %3lld, %lld slots, %zu of %lld columns checked: rel L2 %.2e, max |err| %.2e (rms %.3f)\n",
            name, (long long)E, (long long)owned, check.size(), (long long)out_cols, rel, worst, rms);
    assert_true(owned == 0 || den > 0);
    assert_true(rel <= 1e-3);
    assert_true(worst <= 1e-3 * rms);
}

#endif
