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
#include "cudnn_attention.cuh"
#include "gpu_test_util.cuh"

static m4_cudnn *cudnn;

/* One attention problem. V lives inside rows of H·(dn + dv) floats (V = buffer + dn, per head
 * dn + dv apart): m4_cuda_mla's kv_b layout for dn > 0, the vision layout [P, H·dv] for dn = 0. */
struct problem {
    std::string name;
    int64_t B = 1, H = 1, S = 1, T = 1, dq = 16, dv = 16, dn = 0;
    bool causal = false;
    int64_t past = 0;
    float scale = 0.1f, amplitude = 2.0f;        /* Q and K uniform in ±amplitude, V in ±1 */
    std::vector<int32_t> lo, hi;                 /* [S], empty: none */
};

template <typename T> static T *upload(const std::vector<T> &host) {
    if (host.empty()) return nullptr;
    T *d = nullptr;
    assert_int_equal(cudaMalloc(&d, sizeof(T) * host.size()), cudaSuccess);
    assert_int_equal(cudaMemcpy(d, host.data(), sizeof(T) * host.size(), cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}

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

/* Runs p through m4_cudnn_attention `calls` times (the same output each time) and checks it. */
static void run(const problem &p, unsigned seed, int calls = 1) {
    auto uniform = [&]() { seed = seed * 1664525u + 1013904223u; return ((float)(seed >> 8) / (float)(1 << 24) - 0.5f) * 2.0f; };
    const int64_t B = p.B, H = p.H, S = p.S, T = p.T, dq = p.dq, dv = p.dv, width = H * (p.dn + dv);
    std::vector<float> Q((size_t)(B * H * S * dq)), K((size_t)(B * H * T * dq)), V((size_t)(B * T * width));
    for (auto &x : Q) x = bf16_round(uniform() * p.amplitude);
    for (auto &x : K) x = bf16_round(uniform() * p.amplitude);
    for (auto &x : V) x = bf16_round(uniform());
    float *d_Q = upload(Q), *d_K = upload(K), *d_V = upload(V);
    int32_t *d_lo = upload(p.lo), *d_hi = upload(p.hi);
    const size_t n_out = (size_t)(B * S * H * dv);
    float *d_out = nullptr;
    assert_int_equal(cudaMalloc(&d_out, sizeof(float) * n_out), cudaSuccess);

    m4k_attention_args a = {};
    a.Q = d_Q, a.K = d_K, a.V = d_V + p.dn;
    a.B = B, a.H = H, a.S = S, a.T = T, a.dq = dq, a.dv = dv;
    a.v_row_stride = width, a.v_head_stride = p.dn + dv;
    a.scale = p.scale, a.causal = p.causal, a.causal_past = p.past;
    a.block_lo = d_lo, a.block_hi = d_hi, a.O = d_out;
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

    const std::vector<double> want = reference(p, Q, K, V);
    double num = 0, den = 0, worst_row = 0;
    int64_t worst_at = -1, bad_rows = 0;
    for (int64_t row = 0; row < B * S * H; row++) {            /* output row (b·S + i)·H + h */
        double rn = 0, rd = 0;
        for (int64_t e = 0; e < dv; e++) {
            const size_t k = (size_t)(row * dv + e);
            if (!isfinite(got[k]))
                fail_msg("%s: output row %lld (b %lld, i %lld, h %lld) col %lld not finite: %g", p.name.c_str(),
                         (long long)row, (long long)(row / H / S), (long long)(row / H % S), (long long)(row % H),
                         (long long)e, got[k]);
            rn += (got[k] - want[k]) * (got[k] - want[k]), rd += want[k] * want[k];
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
    cudaFree(d_Q), cudaFree(d_K), cudaFree(d_V), cudaFree(d_lo), cudaFree(d_hi), cudaFree(d_out);
}

/* MLA: B = 2, S queries over T = past + S keys, causal. */
static problem mla(const char *tag, int64_t H, int64_t dn, int64_t dr, int64_t dv, int64_t T, int64_t S, float scale) {
    problem p;
    p.name = std::string(tag) + " T=" + std::to_string(T) + " S=" + std::to_string(S);
    p.B = 2, p.H = H, p.S = S, p.T = T, p.dq = dn + dr, p.dv = dv, p.dn = dn;
    p.causal = true, p.past = T - S, p.scale = scale;
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

/* (a) the MLA prompt at the published dims, top-left causal */
static void mla_prompt(void **state) {
    (void)state;
    const float scale = 1.0f / sqrtf(128.0f);
    unsigned seed = 1;
    for (int64_t T : {1, 17, 64, 130, 1000}) run(mla("mla 128/128", 4, 64, 64, 128, T, T, scale), seed++);
    run(mla("mla 128/128 peaky (scale 0.5)", 4, 64, 64, 128, 130, 130, 0.5f), seed++);
}

/* (b) causal with a cached past: the bottom-right diagonal */
static void mla_with_past(void **state) {
    (void)state;
    const float scale = 1.0f / sqrtf(128.0f);
    unsigned seed = 100;
    /* {T, S}: few new tokens over a long past; a partial second query tile; one token (no mask) */
    const int64_t cases[][2] = {{300, 3}, {700, 129}, {80, 64}, {300, 1}};
    for (const auto &c : cases) run(mla("mla 128/128 past", 4, 64, 64, 128, c[0], c[1], scale), seed++);
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
    for (int64_t T : {1, 7, 70}) run(mla("tiny mla 16/16", 4, 8, 8, 16, T, T, 0.25f), seed++);
    run(mla("tiny mla 16/16 past", 4, 8, 8, 16, 20, 5, 0.25f), seed++);
    run(vision("tiny vision 16", 2, 16, {4, 9, 30}), seed++);
}

/* (e) the cached plans: a second and third call of each shape give the first call's output */
static void cached_plans(void **state) {
    (void)state;
    run(mla("mla 128/128 again", 4, 64, 64, 128, 130, 130, 1.0f / sqrtf(128.0f)), 400, 3);
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
