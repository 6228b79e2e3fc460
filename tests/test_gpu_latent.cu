/* The two kernels of MLA attention over the latent cache (kernels/latent_attention.cu) on the published
 * model's head shape (32 heads, Rkv 256, dr 64), which the tiny golden models don't have: the
 * tensor-core kernel (bf16 cache, every head of a position in one block) against the float32
 * kernel (one block per head and split) on the same bf16-representable data, across context
 * lengths that leave partial key tiles and single-tile splits, with left padding in the mask and
 * several new positions (causal within them), up to a whole prompt whose first queries on the
 * padded row see only masked keys (both kernels then average the visible keys). Budget: relative
 * L2 1e-2 (QL and the probabilities are rounded to bf16 on the tensor-core path). Skips (exit
 * 77) without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

extern "C" {
#include "testutil.h"
}
#include "gpu_test_util.cuh"
#include "kernels/latent_attention.cuh"
#include "paths.h"


static void tensor_cores_match_float32(void **state) {
    (void)state;
    const int64_t H = 32, Rkv = 256, dr = 64, B = 2;
    /* {T, S, spare capacity}: decode lengths with partial and single-tile splits; new positions
     * with a past; a whole prompt (causal tiles skipped per query); short contexts in a long cache
     * (launch shapes follow the capacity, the work the length read on the device: most splits empty) */
    const int64_t cases[][3] = {{1, 1, 0},    {70, 1, 0},    {1000, 1, 0},  {5000, 1, 0}, {300, 3, 0},
                                {700, 129, 0}, {200, 200, 0}, {70, 1, 8192}, {5, 3, 100000}};
    unsigned seed = 12345;
    auto uniform = [&]() { seed = seed * 1664525u + 1013904223u; return ((float)(seed >> 8) / (float)(1 << 24) - 0.5f) * 2.0f; };
    for (const auto &c : cases) {
        const int64_t T = c[0], S = c[1], past = T - S;
        const int64_t capacity = (T + c[2] + M4_CUDA_KEY_TILE - 1) / M4_CUDA_KEY_TILE * M4_CUDA_KEY_TILE;
        std::vector<float> ql((size_t)(B * H * S * (Rkv + dr))), ckv((size_t)(B * capacity * Rkv), 0.0f),
            kr((size_t)(B * capacity * dr), 0.0f);
        std::vector<__nv_bfloat16> ckv16(ckv.size(), __float2bfloat16_rn(0.0f)), kr16(kr.size(), __float2bfloat16_rn(0.0f));
        for (auto &x : ql) x = uniform();
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = 0; j < T; j++) {
                for (int64_t d = 0; d < Rkv; d++) {
                    const size_t at = (size_t)((b * capacity + j) * Rkv + d);
                    ckv[at] = bf16_round(uniform()), ckv16[at] = __float2bfloat16_rn(ckv[at]);
                }
                for (int64_t d = 0; d < dr; d++) {
                    const size_t at = (size_t)((b * capacity + j) * dr + d);
                    kr[at] = bf16_round(uniform()), kr16[at] = __float2bfloat16_rn(kr[at]);
                }
            }
        std::vector<int64_t> mask((size_t)(B * T), 1);
        for (int64_t j = 0; j < T / 3; j++) mask[(size_t)(T + j)] = 0;       /* row 1: left padding */
        float *d_ql, *d_ckv, *d_kr, *d_out32, *d_out16;
        __nv_bfloat16 *d_ckv16, *d_kr16;
        int64_t *d_mask;
        assert_int_equal(cudaMalloc(&d_ql, sizeof(float) * ql.size()), cudaSuccess);
        assert_int_equal(cudaMalloc(&d_ckv, sizeof(float) * ckv.size()), cudaSuccess);
        assert_int_equal(cudaMalloc(&d_kr, sizeof(float) * kr.size()), cudaSuccess);
        assert_int_equal(cudaMalloc(&d_ckv16, sizeof(__nv_bfloat16) * ckv16.size()), cudaSuccess);
        assert_int_equal(cudaMalloc(&d_kr16, sizeof(__nv_bfloat16) * kr16.size()), cudaSuccess);
        assert_int_equal(cudaMalloc(&d_mask, sizeof(int64_t) * mask.size()), cudaSuccess);
        assert_int_equal(cudaMalloc(&d_out32, sizeof(float) * (size_t)(B * H * S * Rkv)), cudaSuccess);
        assert_int_equal(cudaMalloc(&d_out16, sizeof(float) * (size_t)(B * H * S * Rkv)), cudaSuccess);
        cudaMemcpy(d_ql, ql.data(), sizeof(float) * ql.size(), cudaMemcpyHostToDevice);
        cudaMemcpy(d_ckv, ckv.data(), sizeof(float) * ckv.size(), cudaMemcpyHostToDevice);
        cudaMemcpy(d_kr, kr.data(), sizeof(float) * kr.size(), cudaMemcpyHostToDevice);
        cudaMemcpy(d_ckv16, ckv16.data(), sizeof(__nv_bfloat16) * ckv16.size(), cudaMemcpyHostToDevice);
        cudaMemcpy(d_kr16, kr16.data(), sizeof(__nv_bfloat16) * kr16.size(), cudaMemcpyHostToDevice);
        cudaMemcpy(d_mask, mask.data(), sizeof(int64_t) * mask.size(), cudaMemcpyHostToDevice);
        cudaMemset(d_out32, 0xff, sizeof(float) * (size_t)(B * H * S * Rkv));   /* NaN: every output must be written */
        cudaMemset(d_out16, 0xff, sizeof(float) * (size_t)(B * H * S * Rkv));
        int64_t *d_past;
        assert_int_equal(cudaMalloc(&d_past, sizeof(int64_t)), cudaSuccess);
        cudaMemcpy(d_past, &past, sizeof past, cudaMemcpyHostToDevice);
        m4_error err = {{0}};
        const float scale = 0.0589f;
        m4_cuda_path_switches.on[M4_PATH_LATENT_TC] = true;   /* the kernel under test, whatever the defaults */
        assert_int_equal(m4k_mla_latent_attention<float>(d_ql, d_ckv, d_kr, capacity, B, H, S, d_past, Rkv, dr, scale,
                                                         d_mask, T, d_out32, 0, &err), 0);
        assert_int_equal(m4k_mla_latent_attention<__nv_bfloat16>(d_ql, d_ckv16, d_kr16, capacity, B, H, S, d_past, Rkv,
                                                                 dr, scale, d_mask, T, d_out16, 0, &err), 0);
        assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
        std::vector<float> want((size_t)(B * H * S * Rkv)), got(want.size());
        cudaMemcpy(want.data(), d_out32, sizeof(float) * want.size(), cudaMemcpyDeviceToHost);
        cudaMemcpy(got.data(), d_out16, sizeof(float) * got.size(), cudaMemcpyDeviceToHost);
        double num = 0, den = 0;
        for (size_t k = 0; k < got.size(); k++) {
            assert_true(isfinite(got[k]) && isfinite(want[k]));
            num += ((double)got[k] - want[k]) * ((double)got[k] - want[k]);
            den += (double)want[k] * want[k];
        }
        const double rel = sqrt(num / den);
        fprintf(stderr, "T=%lld S=%lld: tensor-core vs float32 latent attention rel L2 %.2e\n", (long long)T, (long long)S, rel);
        assert_true(rel <= 1e-2);
        cudaFree(d_ql), cudaFree(d_ckv), cudaFree(d_kr), cudaFree(d_ckv16), cudaFree(d_kr16), cudaFree(d_mask);
        cudaFree(d_out32), cudaFree(d_out16), cudaFree(d_past);
    }
}

int main(void) {
    if (!gpu_present("test_gpu_latent")) return 77;
    const struct CMUnitTest tests[] = {cmocka_unit_test(tensor_cores_match_float32)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
