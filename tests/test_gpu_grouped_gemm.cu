/* m4k_grouped_gemm (optimized/kernels/grouped_gemm.cu), the routed experts' grouped GEMM, against a host
 * float64 reference on the same inputs: bf16 weights (exactly representable values), float32
 * activations that the reference rounds to bf16 as the kernel must (round to nearest even). Uneven
 * expert counts: empty experts first, in the middle and last, experts of more than one 64-slot
 * tile, counts that are not multiples of 16; outputs and K not multiples of the tiles, an odd
 * output width (scalar stores), K shorter than one step; plain and SwiGLU with each activation;
 * then the published widths (128 experts, gate_up [4096, 4096] with SwiGLU and down [4096, 2048],
 * 2048 slots; sampled output columns, every slot). Budget per output: relative L2 ≤ 1e-3 and
 * every checked value within 1e-3 · rms of the reference (float32 accumulation gives ~1e-6).
 * Y is prefilled with NaN bits (cudaMemset 0xff): every owned value must be written and finite,
 * and the unowned slots past offsets[E] plus a guard region past M must keep the fill bit for bit
 * (an expert's last, partial tile writes nothing past its count); unowned activation rows are NaN
 * (never reach an output). One case runs from a captured CUDA graph (no host sync in the
 * launcher). Argument errors fail cleanly. Skips (exit 77) without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

extern "C" {
#include "testutil.h"
}
#include "gpu_test_util.cuh"
#include "kernels/grouped_gemm.cuh"

/* Weight i of a stack: a hash of i mapped to k / 1024, k in [−128, 127] — exact in bf16, the same
 * on host and device. */
__host__ __device__ static inline float weight_value(uint64_t i, uint32_t seed) {
    uint32_t h = (uint32_t)i * 2654435761u ^ (uint32_t)(i >> 32) * 2246822519u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    return (float)((int)(h >> 24) - 128) * (1.0f / 1024.0f);
}

__global__ void fill_weights(__nv_bfloat16 *w, uint64_t n, uint32_t seed) {
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x)
        w[i] = __float2bfloat16_rn(weight_value(i, seed));
}



struct gcase {
    const char *name;
    int64_t E, rows, cols;
    bool swiglu;
    m4_activation act;
    std::vector<int32_t> counts;
    int64_t tail;          /* unowned slots after offsets[E] (M = offsets[E] + tail) */
    bool sample;           /* check a sample of the output columns (the published widths) */
    bool graph;            /* launch from a captured CUDA graph */
};

static constexpr int64_t kGuardRows = 80;   /* Y rows past M: more than one slot tile */

static void run_case(const gcase &c) {
    const int64_t E = c.E, rows = c.rows, cols = c.cols, F = rows / 2, out_cols = c.swiglu ? F : rows;
    assert_int_equal((int64_t)c.counts.size(), E);
    std::vector<int32_t> offsets((size_t)(E + 1), 0);
    for (int64_t e = 0; e < E; e++) offsets[(size_t)e + 1] = offsets[(size_t)e] + c.counts[(size_t)e];
    const int64_t owned = offsets[(size_t)E], M = owned + c.tail;
    const uint32_t seed = (uint32_t)(rows * 131 + cols * 7 + E);

    /* activations: uniform [−1, 1) float32, not bf16-representable; unowned rows NaN */
    unsigned s = 987654321u ^ (unsigned)(rows + cols);
    auto uniform = [&]() { s = s * 1664525u + 1013904223u; return ((float)(s >> 8) / (float)(1 << 24) - 0.5f) * 2.0f; };
    std::vector<float> x((size_t)(M * cols));
    for (int64_t i = 0; i < M * cols; i++) x[(size_t)i] = i < owned * cols ? uniform() : nanf("");

    __nv_bfloat16 *d_w = nullptr;
    float *d_x = nullptr, *d_y = nullptr;
    int32_t *d_off = nullptr;
    const uint64_t w_count = (uint64_t)(E * rows * cols);
    const size_t y_count = (size_t)((M + kGuardRows) * out_cols);
    assert_int_equal(cudaMalloc(&d_w, sizeof(__nv_bfloat16) * w_count), cudaSuccess);
    assert_int_equal(cudaMalloc(&d_x, sizeof(float) * (x.size() ? x.size() : 1)), cudaSuccess);
    assert_int_equal(cudaMalloc(&d_y, sizeof(float) * y_count), cudaSuccess);
    assert_int_equal(cudaMalloc(&d_off, sizeof(int32_t) * offsets.size()), cudaSuccess);
    fill_weights<<<1024, 256>>>(d_w, w_count, seed);
    assert_int_equal(cudaGetLastError(), cudaSuccess);
    assert_int_equal(cudaMemcpy(d_x, x.data(), sizeof(float) * x.size(), cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(d_off, offsets.data(), sizeof(int32_t) * offsets.size(), cudaMemcpyHostToDevice),
                     cudaSuccess);
    assert_int_equal(cudaMemset(d_y, 0xff, sizeof(float) * y_count), cudaSuccess);   /* NaN bits */
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);

    cudaStream_t stream;
    assert_int_equal(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    launch_on(stream, c.graph, c.name, [&](m4_error *err) {
        return m4k_grouped_gemm(d_w, E, rows, cols, d_off, d_x, M, d_y, c.swiglu, c.act, stream, err);
    });
    assert_int_equal(cudaStreamDestroy(stream), cudaSuccess);
    std::vector<float> y(y_count);
    assert_int_equal(cudaMemcpy(y.data(), d_y, sizeof(float) * y_count, cudaMemcpyDeviceToHost), cudaSuccess);
    cudaFree(d_w), cudaFree(d_x), cudaFree(d_y), cudaFree(d_off);

    check_grouped_output(c.name, y, x, offsets, cols, out_cols, c.swiglu, c.act, c.sample,
                         [&](int64_t e, int64_t r, float *dst) {
                             for (int64_t k = 0; k < cols; k++) dst[k] = weight_value((uint64_t)((e * rows + r) * cols + k), seed);
                         });
}

static void small_shapes(void **state) {
    (void)state;
    const gcase cases[] = {
        {"plain: empty experts, one of 3 tiles", 8, 48, 64, false, M4_ACT_SILU, {0, 17, 5, 0, 150, 1, 33, 0}, 0, false, false},
        {"plain: N and K tails, unowned tail", 8, 200, 136, false, M4_ACT_SILU, {3, 0, 64, 65, 0, 0, 129, 9}, 11, false, false},
        {"plain: odd output width", 8, 45, 256, false, M4_ACT_SILU, {16, 16, 0, 48, 0, 80, 0, 1}, 0, false, false},
        {"plain: K shorter than one step", 8, 128, 24, false, M4_ACT_SILU, {5, 60, 0, 0, 0, 0, 0, 33}, 2, false, false},
        {"swiglu silu: F tail", 8, 144, 256, true, M4_ACT_SILU, {0, 0, 31, 100, 7, 0, 16, 40}, 5, false, false},
        {"swiglu gelu: N and K tails", 8, 200, 200, true, M4_ACT_GELU, {2, 90, 0, 0, 13, 64, 0, 27}, 0, false, false},
        {"swiglu gelu_tanh: odd F", 8, 74, 96, true, M4_ACT_GELU_TANH, {1, 0, 0, 0, 0, 0, 0, 70}, 3, false, false},
        {"swiglu relu: one expert", 1, 130, 64, true, M4_ACT_RELU, {77}, 0, false, false},
        {"swiglu silu: from a CUDA graph", 8, 144, 256, true, M4_ACT_SILU, {0, 0, 31, 100, 7, 0, 16, 40}, 5, false, true},
        {"plain: from a CUDA graph", 8, 200, 136, false, M4_ACT_SILU, {3, 0, 64, 65, 0, 0, 129, 9}, 11, false, true},
    };
    for (const gcase &c : cases) run_case(c);
    /* one non-empty expert at the start, middle and end, then unowned slots: a partial tile that
     * wrote past its count would hit the sentinel rows deterministically (no other writer) */
    for (int e : {0, 3, 7})
        for (bool swiglu : {false, true}) {
            gcase c = {swiglu ? "swiglu: single expert, partial tile" : "plain: single expert, partial tile", 8, 130, 64,
                       swiglu, M4_ACT_SILU, std::vector<int32_t>(8, 0), 30, false, false};
            c.counts[(size_t)e] = 37;
            run_case(c);
        }
}


static void published_gate_up(void **state) {
    (void)state;
    run_case({"published gate_up (swiglu silu)", 128, 2 * 2048, 4096, true, M4_ACT_SILU, published_counts(), 0, true, false});
}

static void published_down(void **state) {
    (void)state;
    run_case({"published down", 128, 4096, 2048, false, M4_ACT_SILU, published_counts(), 0, true, false});
}

static void rejects_bad_arguments(void **state) {
    (void)state;
    __nv_bfloat16 *d_w;
    float *d_x, *d_y;
    int32_t *d_off;
    assert_int_equal(cudaMalloc(&d_w, 4096), cudaSuccess);
    assert_int_equal(cudaMalloc(&d_x, 4096), cudaSuccess);
    assert_int_equal(cudaMalloc(&d_y, 4096), cudaSuccess);
    assert_int_equal(cudaMalloc(&d_off, 64), cudaSuccess);
    m4_error err = m4_error{};
    assert_int_equal(m4k_grouped_gemm(d_w, 2, 8, 12, d_off, d_x, 4, d_y, false, M4_ACT_SILU, 0, &err), -1);  /* cols % 8 */
    assert_non_null(strstr(err.msg, "multiple of 8"));
    err = m4_error{};
    assert_int_equal(m4k_grouped_gemm(d_w, 2, 7, 16, d_off, d_x, 4, d_y, true, M4_ACT_SILU, 0, &err), -1);   /* odd gate_up */
    assert_true(err.msg[0] != 0);
    err = m4_error{};
    assert_int_equal(m4k_grouped_gemm(d_w, 2, 8, 16, d_off, d_x + 1, 4, d_y, false, M4_ACT_SILU, 0, &err), -1); /* misaligned */
    assert_true(err.msg[0] != 0);
    err = m4_error{};
    assert_int_equal(m4k_grouped_gemm(d_w, 2, 8, 16, d_off, d_x, 0, d_y, false, M4_ACT_SILU, 0, &err), 0);   /* no slots */
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    cudaFree(d_w), cudaFree(d_x), cudaFree(d_y), cudaFree(d_off);
}

int main(void) {
    if (!gpu_present("test_gpu_grouped_gemm")) return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rejects_bad_arguments),
        cmocka_unit_test(small_shapes),
        cmocka_unit_test(published_gate_up),
        cmocka_unit_test(published_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
