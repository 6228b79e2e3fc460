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
#include "gpu_test_util.cuh"
#include "kernels/flash_attention.cuh"


/* One attention problem. V lives inside rows of H·(dn + dv) floats (V = buffer + dn, per head
 * dn + dv apart): m4_cuda_mla's kv_b layout for dn > 0, the vision layout [P, H·dv] for dn = 0. */
struct problem {
    std::string name;
    int64_t B = 1, H = 1, S = 1, T = 1, dq = 16, dv = 16, dn = 0;
    bool causal = false;
    int64_t past = 0;
    float scale = 0.1f, amplitude = 2.0f;        /* Q and K uniform in ±amplitude, V in ±1 */
    std::vector<int64_t> mask;                   /* [B, T], empty: none */
    std::vector<int32_t> lo, hi;                 /* [S], empty: none */
};

/* mask [B, T] of ones with row `row`'s first `pad` keys masked (left padding). */
static std::vector<int64_t> left_padded(int64_t B, int64_t T, int64_t row, int64_t pad) {
    std::vector<int64_t> mask((size_t)(B * T), 1);
    for (int64_t j = 0; j < pad && j < T; j++) mask[(size_t)(row * T + j)] = 0;
    return mask;
}

template <typename T> static T *upload(const std::vector<T> &host) {
    if (host.empty()) return nullptr;
    T *d = nullptr;
    assert_int_equal(cudaMalloc(&d, sizeof(T) * host.size()), cudaSuccess);
    assert_int_equal(cudaMemcpy(d, host.data(), sizeof(T) * host.size(), cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}

static void run(const problem &p, unsigned seed) {
    auto uniform = [&]() { seed = seed * 1664525u + 1013904223u; return ((float)(seed >> 8) / (float)(1 << 24) - 0.5f) * 2.0f; };
    const int64_t B = p.B, H = p.H, S = p.S, T = p.T, dq = p.dq, dv = p.dv, width = H * (p.dn + dv);
    std::vector<float> Q((size_t)(B * H * S * dq)), K((size_t)(B * H * T * dq)), V((size_t)(B * T * width));
    for (auto &x : Q) x = bf16_round(uniform() * p.amplitude);
    for (auto &x : K) x = bf16_round(uniform() * p.amplitude);
    for (auto &x : V) x = bf16_round(uniform());
    float *d_Q = upload(Q), *d_K = upload(K), *d_V = upload(V);
    int64_t *d_mask = upload(p.mask);
    int32_t *d_lo = upload(p.lo), *d_hi = upload(p.hi);
    const size_t n_out = (size_t)(B * S * H * dv);
    float *d_want = nullptr, *d_got = nullptr;
    assert_int_equal(cudaMalloc(&d_want, sizeof(float) * n_out), cudaSuccess);
    assert_int_equal(cudaMalloc(&d_got, sizeof(float) * n_out), cudaSuccess);
    cudaMemset(d_want, 0xff, sizeof(float) * n_out);   /* NaN: every output must be written */
    cudaMemset(d_got, 0xff, sizeof(float) * n_out);

    m4k_attention_args a = {};
    a.Q = d_Q, a.K = d_K, a.V = d_V + p.dn;
    a.B = B, a.H = H, a.S = S, a.T = T, a.dq = dq, a.dv = dv;
    a.v_row_stride = width, a.v_head_stride = p.dn + dv;
    a.scale = p.scale, a.causal = p.causal, a.causal_past = p.past;
    a.mask = d_mask, a.block_lo = d_lo, a.block_hi = d_hi;
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
    double num = 0, den = 0, worst_row = 0;
    int64_t worst_at = -1, bad_rows = 0;
    for (int64_t row = 0; row < B * S * H; row++) {            /* output row (b·S + i)·H + h */
        double rn = 0, rd = 0;
        for (int64_t e = 0; e < dv; e++) {
            const size_t k = (size_t)(row * dv + e);
            if (!isfinite(want[k]) || !isfinite(got[k]))
                fail_msg("%s: output row %lld (b %lld, i %lld, h %lld) col %lld not finite: flash %g, float32 %g",
                         p.name.c_str(), (long long)row, (long long)(row / H / S), (long long)(row / H % S),
                         (long long)(row % H), (long long)e, got[k], want[k]);
            rn += ((double)got[k] - want[k]) * ((double)got[k] - want[k]);
            rd += (double)want[k] * want[k];
        }
        num += rn, den += rd;
        const double rel = sqrt(rn) / (sqrt(rd) + 1e-4);
        if (rel > worst_row) worst_row = rel, worst_at = row;
        if (rel > 2e-2) bad_rows++;
    }
    const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    fprintf(stderr, "%-44s rel L2 %.2e, worst row %.2e (row %lld: b %lld, i %lld, h %lld), rows over 2e-2: %lld\n",
            p.name.c_str(), rel, worst_row, (long long)worst_at, (long long)(worst_at / H / S),
            (long long)(worst_at / H % S), (long long)(worst_at % H), (long long)bad_rows);
    assert_true(rel <= 1e-2);
    assert_int_equal(bad_rows, 0);
    cudaFree(d_Q), cudaFree(d_K), cudaFree(d_V), cudaFree(d_mask), cudaFree(d_lo), cudaFree(d_hi);
    cudaFree(d_want), cudaFree(d_got);
}

/* MLA at the given dims: B = 2, row 1 left-padded by a third of the keys (rounded up). */
static problem mla(const char *tag, int64_t H, int64_t dn, int64_t dr, int64_t dv, int64_t T, int64_t S, float scale) {
    problem p;
    p.name = std::string(tag) + " T=" + std::to_string(T) + " S=" + std::to_string(S);
    p.B = 2, p.H = H, p.S = S, p.T = T, p.dq = dn + dr, p.dv = dv, p.dn = dn;
    p.causal = true, p.past = T - S, p.scale = scale;
    p.mask = left_padded(p.B, T, 1, (T + 2) / 3);
    return p;
}

/* Vision: B = 1, images of the given patch counts, block-diagonal, not causal. */
static problem vision(const char *tag, int64_t H, int64_t hd, std::vector<int64_t> images) {
    problem p;
    int64_t P = 0;
    for (int64_t n : images) P += n;
    p.name = std::string(tag) + " P=" + std::to_string(P);
    p.B = 1, p.H = H, p.S = P, p.T = P, p.dq = hd, p.dv = hd, p.dn = 0;
    p.scale = 1.0f / sqrtf((float)hd);
    for (int64_t n : images)
        for (int64_t t = 0, start = (int64_t)p.lo.size(); t < n; t++)
            p.lo.push_back((int32_t)start), p.hi.push_back((int32_t)(start + n));
    return p;
}

/* (a) causal MLA prefill at the published dims (Mistral-Small-4-119B-2603: qk_nope 64, qk_rope 64,
 * v 128), then at DeepSeek-V3's (qk_nope 128) */
static void mla_prefill(void **state) {
    (void)state;
    unsigned seed = 1;
    for (int64_t T : {1, 17, 64, 130, 1000}) run(mla("mla 128/128", 4, 64, 64, 128, T, T, 1.0f / sqrtf(128.0f)), seed++);
    const float scale = 1.0f / sqrtf(192.0f);
    for (int64_t T : {17, 130}) run(mla("mla 192/128", 4, 128, 64, 128, T, T, scale), seed++);
    run(mla("mla 192/128 peaky (scale 0.5)", 4, 128, 64, 128, 130, 130, 0.5f), seed++);
}

/* (b) causal with a cached past */
static void mla_with_past(void **state) {
    (void)state;
    const float scale = 1.0f / sqrtf(192.0f);
    unsigned seed = 100;
    /* {T, S}: few new tokens over a long past; a partial second query tile; padding longer than
     * the past (row 1's first queries see only masked keys) */
    const int64_t cases[][2] = {{300, 3}, {700, 129}, {80, 64}};
    for (const auto &c : cases) run(mla("mla 128/128 past", 4, 64, 64, 128, c[0], c[1], 1.0f / sqrtf(128.0f)), seed++);
    run(mla("mla 192/128 past", 4, 128, 64, 128, 300, 3, scale), seed++);
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
    for (int64_t T : {1, 7, 70}) run(mla("tiny mla 16/16", 4, 8, 8, 16, T, T, 0.25f), seed++);
    run(mla("tiny mla 16/16 past", 4, 8, 8, 16, 20, 5, 0.25f), seed++);
    run(vision("tiny vision 16", 2, 16, {4, 9, 30}), seed++);
}

/* (e) the other paths of the kernel */
static void other_paths(void **state) {
    (void)state;
    /* V at an odd offset and strides (no 16-byte loads), 3 value fragments */
    problem u = mla("unaligned V dq 32 dv 48", 2, 3, 29, 48, 100, 100, 0.2f);
    run(u, 400);
    /* dv 160 > 128: two warps per query slab, the second with 2 fragments; dq 256 */
    run(mla("wide dq 256 dv 160", 2, 128, 128, 160, 150, 150, 0.06f), 401);
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
