/* The bf16 path's flash attention (kernels/flash_attention.cu, m4k_flash_attention) against the
 * float32 attention kernel (m4k_attention, itself checked against Hugging Face through the golden
 * cases) on the same bf16-representable inputs, over the shapes its two callers give it:
 *   (a) causal MLA prefill at the published head dims (dq 128 = 64 nope + 64 rope, dv 128; and
 *       DeepSeek-V3's dq 192 = 128 + 64, which the kernel serves too), V
 *       read in place out of kv_b's rows as m4_cuda_mla does, B = 2 with row 1 left-padded (its
 *       first queries see only masked keys: the reference's uniform average), lengths that leave
 *       partial query and key tiles; one peaky softmax (large scale);
 *   (b) causal with a cached past (T = past + S, queries offset by the past);
 *   (c) Pixtral's block-diagonal vision attention (B = 1, dq = dv = 64, three images of 16, 100
 *       and 257 patches through block_lo/block_hi, not causal);
 *   (d) the tiny golden models' dims (text dq 16 = 8 + 8, dv 16; vision head_dim 16);
 *   (e) unaligned V (the scalar staging path), dv 48; dv > 128 (two warps per query slab);
 *       a non-causal mask with a fully masked row.
 * Budget: relative L2 ≤ 1e-2 over each output and ≤ 2e-2 on every (b, i, h) output row (P is
 * rounded to bf16 on the flash path: ~1e-3 expected), every output finite (both outputs are
 * pre-filled with NaN). Also: the launcher refuses probs and unsupported head dims. Skips (exit 77)
 * without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string>
#include <vector>

extern "C" {
#include "testutil.h"
}
#include "attention_problems.cuh"
#include "kernels/flash_attention.cuh"


/* p through m4k_attention (the float32 kernel, checked against HF by the golden cases) and
 * m4k_flash_attention on the same inputs; flash checked against the float32 kernel's output. */
static void run(const problem &p, unsigned seed) {
    const problem_inputs in(p, seed);
    m4k_attention_args a = device_args(p, in);
    const size_t n_out = (size_t)(p.B * p.S * p.H * p.dv);
    float *d_want = nullptr, *d_got = nullptr;
    assert_int_equal(cudaMalloc(&d_want, sizeof(float) * n_out), cudaSuccess);
    assert_int_equal(cudaMalloc(&d_got, sizeof(float) * n_out), cudaSuccess);
    cudaMemset(d_want, 0xff, sizeof(float) * n_out);   /* NaN: every output must be written */
    cudaMemset(d_got, 0xff, sizeof(float) * n_out);
    m4_error err = {{0}};
    a.O = d_want;
    if (m4k_attention(&a, 0, &err)) fail_msg("%s: m4k_attention: %s", p.name.c_str(), err.msg);
    a.O = d_got;
    assert_true(m4k_flash_attention_fits(&a));
    if (m4k_flash_attention(&a, 0, &err)) fail_msg("%s: m4k_flash_attention: %s", p.name.c_str(), err.msg);
    const cudaError_t sync = cudaDeviceSynchronize();
    if (sync != cudaSuccess) fail_msg("%s: %s", p.name.c_str(), cudaGetErrorString(sync));
    std::vector<float> want(n_out), got(n_out);
    cudaMemcpy(want.data(), d_want, sizeof(float) * n_out, cudaMemcpyDeviceToHost);
    cudaMemcpy(got.data(), d_got, sizeof(float) * n_out, cudaMemcpyDeviceToHost);
    check_rows(p, "flash", got, want);
    free_args(p, a), cudaFree(d_want), cudaFree(d_got);
}

/* (a) causal MLA prefill at the published dims (Mistral-Small-4-119B-2603: qk_nope 64, qk_rope 64,
 * v 128), then at DeepSeek-V3's (qk_nope 128) */
static void mla_prefill(void **state) {
    (void)state;
    unsigned seed = 1;
    for (int64_t T : {1, 17, 64, 130, 1000}) run(mla("mla 128/128", 4, 64, 64, 128, T, T, 1.0f / sqrtf(128.0f), true), seed++);
    const float scale = 1.0f / sqrtf(192.0f);
    for (int64_t T : {17, 130}) run(mla("mla 192/128", 4, 128, 64, 128, T, T, scale, true), seed++);
    run(mla("mla 192/128 peaky (scale 0.5)", 4, 128, 64, 128, 130, 130, 0.5f, true), seed++);
}

/* (b) causal with a cached past */
static void mla_with_past(void **state) {
    (void)state;
    const float scale = 1.0f / sqrtf(192.0f);
    unsigned seed = 100;
    /* {T, S}: few new tokens over a long past; a partial second query tile; padding longer than
     * the past (row 1's first queries see only masked keys) */
    const int64_t cases[][2] = {{300, 3}, {700, 129}, {80, 64}};
    for (const auto &c : cases) run(mla("mla 128/128 past", 4, 64, 64, 128, c[0], c[1], 1.0f / sqrtf(128.0f), true), seed++);
    run(mla("mla 192/128 past", 4, 128, 64, 128, 300, 3, scale, true), seed++);
}

/* (c) Pixtral block-diagonal attention at the published head dim */
static void vision_blocks(void **state) {
    (void)state;
    run(vision("vision 64", 2, 64, {16, 100, 257}), 200);
    run(vision("vision 64 one image", 2, 64, {300}), 201);
}

/* (d) the tiny golden models' dims (every golden case's model/config.json: qk_nope 8, qk_rope 8,
 * v_head_dim 16, 4 heads; vision head_dim 16, 2 heads) */
static void tiny_dims(void **state) {
    (void)state;
    unsigned seed = 300;
    for (int64_t T : {1, 7, 70}) run(mla("tiny mla 16/16", 4, 8, 8, 16, T, T, 0.25f, true), seed++);
    run(mla("tiny mla 16/16 past", 4, 8, 8, 16, 20, 5, 0.25f, true), seed++);
    run(vision("tiny vision 16", 2, 16, {4, 9, 30}), seed++);
}

/* (e) the other paths of the kernel */
static void other_paths(void **state) {
    (void)state;
    /* V at an odd offset and strides (no 16-byte loads), 3 value fragments */
    problem u = mla("unaligned V dq 32 dv 48", 2, 3, 29, 48, 100, 100, 0.2f, true);
    run(u, 400);
    /* dv 160 > 128: two warps per query slab, the second with 2 fragments; dq 256 */
    run(mla("wide dq 256 dv 160", 2, 128, 128, 160, 150, 150, 0.06f, true), 401);
    /* not causal, mask only: row 0 with holes, row 1 entirely masked (uniform over all keys) */
    problem m;
    m.name = "mask only, a fully masked row", m.B = 2, m.H = 2, m.S = 90, m.T = 90, m.dq = 64, m.dv = 64;
    m.scale = 0.125f, m.mask.assign((size_t)(2 * 90), 1);
    for (int64_t j = 0; j < 90; j++) {
        if (j % 7 == 3) m.mask[(size_t)j] = 0;
        m.mask[(size_t)(90 + j)] = 0;
    }
    run(m, 402);
}

/* The launcher refuses what it cannot do (the caller then keeps the float32 kernel). */
static void refusals(void **state) {
    (void)state;
    m4k_attention_args a = {};
    float dummy = 0.0f;
    a.Q = a.K = a.V = &dummy, a.O = &dummy;
    a.B = 1, a.H = 1, a.S = 1, a.T = 1, a.dq = 192, a.dv = 128, a.v_row_stride = 128, a.v_head_stride = 128;
    assert_true(m4k_flash_attention_fits(&a));
    m4_error err = {{0}};
    a.probs = &dummy;
    assert_false(m4k_flash_attention_fits(&a));
    assert_int_equal(m4k_flash_attention(&a, 0, &err), -1);
    a.probs = nullptr, a.dq = 24;
    assert_false(m4k_flash_attention_fits(&a));
    assert_int_equal(m4k_flash_attention(&a, 0, &err), -1);
    a.dq = 192, a.dv = 272;
    assert_false(m4k_flash_attention_fits(&a));
    assert_int_equal(m4k_flash_attention(&a, 0, &err), -1);
}

int main(void) {
    if (!gpu_present("test_gpu_flash_attention")) return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mla_prefill), cmocka_unit_test(mla_with_past), cmocka_unit_test(vision_blocks),
        cmocka_unit_test(tiny_dims),   cmocka_unit_test(other_paths),   cmocka_unit_test(refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
