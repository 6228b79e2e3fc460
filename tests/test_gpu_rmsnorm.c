/* The first CUDA kernel against the float32 formula of MODEL.md §2.2 (RMSNorm). Skips (exit 77)
 * on a machine without a GPU, as every test_gpu_* does. */
#include "testutil.h"

#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda_backend.h"

static void rmsnorm_matches_float32_formula(void **state) {
    (void)state;
    enum { ROWS = 5, N = 4096 };
    float *x = malloc(sizeof(float) * ROWS * N), *w = malloc(sizeof(float) * N);
    float *y = malloc(sizeof(float) * ROWS * N);
    for (int i = 0; i < ROWS * N; i++) x[i] = sinf(0.37f * (float)i) * (1 + i % 7);
    for (int i = 0; i < N; i++) w[i] = 0.5f + 0.001f * (float)(i % 100);
    float *d_x, *d_w, *d_y;
    assert_int_equal(cudaMalloc((void **)&d_x, sizeof(float) * ROWS * N), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d_w, sizeof(float) * N), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&d_y, sizeof(float) * ROWS * N), cudaSuccess);
    cudaMemcpy(d_x, x, sizeof(float) * ROWS * N, cudaMemcpyHostToDevice);
    cudaMemcpy(d_w, w, sizeof(float) * N, cudaMemcpyHostToDevice);
    m4_error err = {{0}};
    assert_int_equal(m4_cuda_rmsnorm_f32(d_x, d_w, d_y, ROWS, N, 1e-6f, &err), 0);
    assert_int_equal(cudaMemcpy(y, d_y, sizeof(float) * ROWS * N, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int r = 0; r < ROWS; r++) {
        double ss = 0;
        for (int i = 0; i < N; i++) ss += (double)x[r * N + i] * x[r * N + i];
        double inv = 1.0 / sqrt(ss / N + 1e-6);
        for (int i = 0; i < N; i++) {
            double want = w[i] * (x[r * N + i] * inv);
            assert_true(fabs(y[r * N + i] - want) <= 1e-5 * fabs(want) + 1e-6);
        }
    }
    cudaFree(d_x), cudaFree(d_w), cudaFree(d_y);
    free(x), free(w), free(y);
}

int main(void) {
    int devices = 0;
    m4_error err;
    if (m4_cuda_device_count(&devices, &err) != 0 || devices == 0) {
        fprintf(stderr, "test_gpu_rmsnorm: no CUDA device, skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(rmsnorm_matches_float32_formula)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
