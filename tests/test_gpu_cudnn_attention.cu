/* cuDNN's fused attention path (optimized/cudnn_attention.cu, m4_cudnn_attention) against
 * attention in float64 on the host, on bf16-representable inputs, over the shapes it serves:
 *   (a) the MLA prompt at the published head dims (dq 128 = 64 nope + 64 rope, dv 128), causal
 *       (top-left, past 0), V read in place out of kv_b's rows as m4_cuda_mla does, B = 2, lengths
 *       that leave partial 64-row tiles (1, 17, 64, 130, 1000); one peaky softmax (large scale);
 *   (b) causal with a cached past (T = past + S: the bottom-right diagonal; one new token: no mask);
 *   (c) Pixtral's block-diagonal attention (B = 1, head dim 64, ragged images through
 *       block_lo/block_hi: one execution per image; two images of one length share a plan);
 *   (d) the tiny golden models' dims (text dq = dv = 16; vision head dim 16);
 *   (e) a second call of a shape (the cached plan) gives the same output bit for bit.
 * Budget, the flash kernel's (test_gpu_flash_attention): relative L2 ≤ 1e-2 over each output and
 * ≤ 2e-2 on every (b, i, h) output row, every output finite (pre-filled with NaN). Why: the inputs
 * are bf16-exact, so the error is cuDNN's rounding of the probabilities to bf16 before P·V and of
 * the output to bf16 (each 2^-9 relative, ~1e-3 over a row) plus float32 accumulation: a few
 * 1e-3 expected; a wrong mask, scale or stride gives errors of order 1.
 * Skips (exit 77) without a GPU; fails when libcudnn.so.9 cannot be opened (scripts/gpu-check puts
 * pip's cuDNN in LD_LIBRARY_PATH). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <vector>

extern "C" {
#include "testutil.h"
}
#include "attention_problems.cuh"
#include "cudnn_attention.cuh"

static m4_cudnn *cudnn;

/* m4k_attention's math in float64: out [B, S, H, dv]. */
static std::vector<double> reference(const problem &p, const std::vector<float> &Q, const std::vector<float> &K,
                                     const std::vector<float> &V) {
    const int64_t B = p.B, H = p.H, S = p.S, T = p.T, dq = p.dq, dv = p.dv, width = H * (p.dn + dv);
    std::vector<double> out((size_t)(B * S * H * dv), 0.0), z((size_t)T);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < S; i++) {
                const int64_t lo = p.lo.empty() ? 0 : p.lo[(size_t)i], hi = p.hi.empty() ? T : p.hi[(size_t)i];
                const int64_t end = p.causal ? std::min(hi, p.past + i + 1) : hi;   /* keys [lo, end) */
                double mx = -INFINITY, sum = 0;
                const float *q = Q.data() + ((b * H + h) * S + i) * dq;
                for (int64_t j = lo; j < end; j++) {
                    const float *k = K.data() + ((b * H + h) * T + j) * dq;
                    double dot = 0;
                    for (int64_t d = 0; d < dq; d++) dot += (double)q[d] * k[d];
                    z[(size_t)j] = dot * p.scale, mx = fmax(mx, z[(size_t)j]);
                }
                for (int64_t j = lo; j < end; j++) sum += exp(z[(size_t)j] - mx);
                double *o = out.data() + ((b * S + i) * H + h) * dv;
                for (int64_t j = lo; j < end; j++) {
                    const double w = exp(z[(size_t)j] - mx) / sum;
                    const float *v = V.data() + (b * T + j) * width + h * (p.dn + dv) + p.dn;
                    for (int64_t e = 0; e < dv; e++) o[e] += w * v[e];
                }
            }
    return out;
}

/* Runs p through m4_cudnn_attention `calls` times (the same output each time) and checks it
 * against float64. */
static void run(const problem &p, unsigned seed, int calls = 1) {
    const problem_inputs in(p, seed);
    m4k_attention_args a = device_args(p, in);
    const size_t n_out = (size_t)(p.B * p.S * p.H * p.dv);
    float *d_out = nullptr;
    assert_int_equal(cudaMalloc(&d_out, sizeof(float) * n_out), cudaSuccess);
    a.O = d_out;
    assert_true(m4_cudnn_attention_fits(&a));
    std::vector<float> got(n_out), first;
    m4_error err = {{0}};
    for (int call = 0; call < calls; call++) {
        cudaMemset(d_out, 0xff, sizeof(float) * n_out);  /* NaN: every output must be written */
        if (m4_cudnn_attention(cudnn, &a, 0, &err)) fail_msg("%s: m4_cudnn_attention: %s", p.name.c_str(), err.msg);
        const cudaError_t sync = cudaDeviceSynchronize();
        if (sync != cudaSuccess) fail_msg("%s: %s", p.name.c_str(), cudaGetErrorString(sync));
        cudaMemcpy(got.data(), d_out, sizeof(float) * n_out, cudaMemcpyDeviceToHost);
        if (call == 0) first = got;
        else if (memcmp(first.data(), got.data(), sizeof(float) * n_out) != 0)
            fail_msg("%s: call %d (cached plan) differs from the first", p.name.c_str(), call + 1);
    }
    check_rows(p, "cudnn", got, reference(p, in.Q, in.K, in.V));
    free_args(p, a), cudaFree(d_out);
}

/* (a) the MLA prompt at the published dims, top-left causal */
static void mla_prompt(void **state) {
    (void)state;
    const float scale = 1.0f / sqrtf(128.0f);
    unsigned seed = 1;
    for (int64_t T : {1, 17, 64, 130, 1000}) run(mla("mla 128/128", 4, 64, 64, 128, T, T, scale, false), seed++);
    run(mla("mla 128/128 peaky (scale 0.5)", 4, 64, 64, 128, 130, 130, 0.5f, false), seed++);
}

/* (b) causal with a cached past: the bottom-right diagonal */
static void mla_with_past(void **state) {
    (void)state;
    const float scale = 1.0f / sqrtf(128.0f);
    unsigned seed = 100;
    /* {T, S}: few new tokens over a long past; a partial second query tile; one token (no mask) */
    const int64_t cases[][2] = {{300, 3}, {700, 129}, {80, 64}, {300, 1}};
    for (const auto &c : cases) run(mla("mla 128/128 past", 4, 64, 64, 128, c[0], c[1], scale, false), seed++);
}

/* (c) Pixtral block-diagonal attention at the published head dim */
static void vision_blocks(void **state) {
    (void)state;
    run(vision("vision 64", 2, 64, {16, 100, 257}), 200);
    run(vision("vision 64 equal images", 2, 64, {100, 100, 7}), 201);
    run(vision("vision 64 one image", 2, 64, {300}), 202);
}

/* (d) the tiny golden models' dims (qk_nope 8, qk_rope 8, v_head_dim 16, 4 heads; vision head_dim
 * 16, 2 heads) */
static void tiny_dims(void **state) {
    (void)state;
    unsigned seed = 300;
    for (int64_t T : {1, 7, 70}) run(mla("tiny mla 16/16", 4, 8, 8, 16, T, T, 0.25f, false), seed++);
    run(mla("tiny mla 16/16 past", 4, 8, 8, 16, 20, 5, 0.25f, false), seed++);
    run(vision("tiny vision 16", 2, 16, {4, 9, 30}), seed++);
}

/* (e) the cached plans: a second and third call of each shape give the first call's output */
static void cached_plans(void **state) {
    (void)state;
    run(mla("mla 128/128 again", 4, 64, 64, 128, 130, 130, 1.0f / sqrtf(128.0f), false), 400, 3);
    run(vision("vision 64 again", 2, 64, {16, 100, 257}), 401, 3);
}

static int setup(void **state) {
    (void)state;
    m4_error err = {{0}};
    if (m4_cudnn_create(&cudnn, nullptr, &err)) {
        fprintf(stderr, "test_gpu_cudnn_attention: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    m4_cudnn_destroy(cudnn);
    return 0;
}

int main(void) {
    if (!gpu_present("test_gpu_cudnn_attention")) return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mla_prompt), cmocka_unit_test(mla_with_past), cmocka_unit_test(vision_blocks),
        cmocka_unit_test(tiny_dims),  cmocka_unit_test(cached_plans),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
