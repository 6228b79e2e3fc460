/* kernels/norm.cu's RMSNorm (m4k_rmsnorm) against the float32 formula of MODEL.md §2.2, in
 * float64: plain rows, strided rows, and the fused residual (x += delta written back, then the sum
 * normalised). Budget: 1e-5 relative + 1e-6 absolute per value (float32 statistics over 4096
 * values). Skips (exit 77) without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <vector>

extern "C" {
#include "testutil.h"
}
#include "gpu_test_util.cuh"
#include "kernels/norm.cuh"

/* rows of width n, `stride` floats apart; with_delta: the fused residual (stride = n) */
static void check_rmsnorm(int64_t rows, int64_t n, int64_t stride, bool with_delta) {
    std::vector<float> x((size_t)(rows * stride)), w((size_t)n), delta((size_t)(rows * stride));
    for (size_t i = 0; i < x.size(); i++) x[i] = sinf(0.37f * (float)i) * (float)(1 + i % 7), delta[i] = cosf(0.11f * (float)i);
    for (int64_t i = 0; i < n; i++) w[(size_t)i] = 0.5f + 0.001f * (float)(i % 100);
    float *d_x = to_device(x), *d_w = to_device(w), *d_delta = with_delta ? to_device(delta) : nullptr;
    float *d_y = nan_filled((size_t)(rows * stride));
    m4_error err = {{0}};
    /* the fused residual writes x + delta back over x (x_sum = x, as the decoder layer calls it);
     * delta rows are dense, n apart */
    if (m4k_rmsnorm(d_x, stride, with_delta ? d_x : nullptr, d_delta, d_w, d_y, stride, rows, n, 1e-6f, 0, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> y = to_host(d_y, (size_t)(rows * stride)), x_after = to_host(d_x, x.size());
    for (int64_t r = 0; r < rows; r++) {
        std::vector<double> u((size_t)n);
        double ss = 0;
        for (int64_t i = 0; i < n; i++) {
            const size_t k = (size_t)(r * stride + i);
            u[(size_t)i] = with_delta ? (double)(x[k] + delta[k]) : (double)x[k];   /* the float32 sum, as HF adds */
            ss += u[(size_t)i] * u[(size_t)i];
            if (with_delta && x_after[k] != x[k] + delta[k])
                fail_msg("row %lld col %lld: the residual sum written back is %g, want %g", (long long)r, (long long)i,
                         x_after[k], x[k] + delta[k]);
        }
        const double inv = 1.0 / sqrt(ss / (double)n + 1e-6);
        for (int64_t i = 0; i < n; i++) {
            const double want = w[(size_t)i] * (u[(size_t)i] * inv), got = y[(size_t)(r * stride + i)];
            if (!(fabs(got - want) <= 1e-5 * fabs(want) + 1e-6))
                fail_msg("rows %lld × %lld (stride %lld%s): row %lld col %lld: %g, want %g", (long long)rows, (long long)n,
                         (long long)stride, with_delta ? ", fused residual" : "", (long long)r, (long long)i, got, want);
        }
    }
    cudaFree(d_x), cudaFree(d_w), cudaFree(d_delta), cudaFree(d_y);
}

static void rmsnorm_matches_float32_formula(void **state) {
    (void)state;
    check_rmsnorm(5, 4096, 4096, false);    /* the published hidden size */
    check_rmsnorm(7, 1024, 1344, false);    /* q_a's rows inside the paired q_a|kv_a output */
    check_rmsnorm(3, 4096, 4096, true);     /* post_attention_layernorm after the residual */
    check_rmsnorm(1, 16, 16, false);        /* the tiny goldens' width */
}

int main(void) {
    if (!gpu_present("test_gpu_norm")) return 77;
    const struct CMUnitTest tests[] = {cmocka_unit_test(rmsnorm_matches_float32_formula)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
