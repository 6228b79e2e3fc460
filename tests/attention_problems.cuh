/* attention_problems.cuh — what the prefill-attention GPU tests share (test_gpu_flash_attention,
 * test_gpu_cudnn_attention): one problem (m4k_attention_args' shapes and masks), its bf16-exact
 * random inputs on the device, the MLA and Pixtral problem makers, and the per-row check. */
#ifndef M4_TEST_ATTENTION_PROBLEMS_CUH
#define M4_TEST_ATTENTION_PROBLEMS_CUH

#include <math.h>
#include <stdio.h>

#include <string>
#include <vector>

#include "gpu_test_util.cuh"
#include "kernels/attention.cuh"

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

/* A device copy, or NULL for an empty vector (an absent mask or block range). */
template <typename T> static T *upload(const std::vector<T> &host) { return host.empty() ? nullptr : to_device(host); }

/* MLA: B = 2, S queries over T = past + S keys, causal; row 1 left-padded by a third of the keys
 * (rounded up) when `padded`. */
static problem mla(const char *tag, int64_t H, int64_t dn, int64_t dr, int64_t dv, int64_t T, int64_t S, float scale,
                   bool padded) {
    problem p;
    p.name = std::string(tag) + " T=" + std::to_string(T) + " S=" + std::to_string(S);
    p.B = 2, p.H = H, p.S = S, p.T = T, p.dq = dn + dr, p.dv = dv, p.dn = dn;
    p.causal = true, p.past = T - S, p.scale = scale;
    if (padded) p.mask = left_padded(p.B, T, 1, (T + 2) / 3);
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

/* The problem's inputs, bf16-exact (so bf16 paths see exactly what the reference sees): Q [B, H, S,
 * dq], K [B, H, T, dq], V rows [B, T, H·(dn + dv)], from a seeded LCG. */
struct problem_inputs {
    std::vector<float> Q, K, V;
    problem_inputs(const problem &p, unsigned seed) {
        auto uniform = [&]() { seed = seed * 1664525u + 1013904223u; return ((float)(seed >> 8) / (float)(1 << 24) - 0.5f) * 2.0f; };
        Q.resize((size_t)(p.B * p.H * p.S * p.dq)), K.resize((size_t)(p.B * p.H * p.T * p.dq));
        V.resize((size_t)(p.B * p.T * p.H * (p.dn + p.dv)));
        for (auto &x : Q) x = bf16_round(uniform() * p.amplitude);
        for (auto &x : K) x = bf16_round(uniform() * p.amplitude);
        for (auto &x : V) x = bf16_round(uniform());
    }
};

/* m4k_attention_args of p over device copies of its inputs (the caller sets O and frees with
 * free_args). */
static m4k_attention_args device_args(const problem &p, const problem_inputs &in) {
    m4k_attention_args a = {};
    float *d_V = upload(in.V);
    a.Q = upload(in.Q), a.K = upload(in.K), a.V = d_V + p.dn;
    a.B = p.B, a.H = p.H, a.S = p.S, a.T = p.T, a.dq = p.dq, a.dv = p.dv;
    a.v_row_stride = p.H * (p.dn + p.dv), a.v_head_stride = p.dn + p.dv;
    a.scale = p.scale, a.causal = p.causal, a.causal_past = p.past;
    a.mask = upload(p.mask), a.block_lo = upload(p.lo), a.block_hi = upload(p.hi);
    return a;
}
static void free_args(const problem &p, m4k_attention_args &a) {
    cudaFree(const_cast<float *>(a.Q)), cudaFree(const_cast<float *>(a.K)), cudaFree(const_cast<float *>(a.V - p.dn));
    cudaFree(const_cast<int64_t *>(a.mask)), cudaFree(const_cast<int32_t *>(a.block_lo));
    cudaFree(const_cast<int32_t *>(a.block_hi));
}

/* got against want, both [B, S, H, dv]: every value finite, relative L2 ≤ 1e-2 over the output and
 * ≤ 2e-2 on every (b, i, h) row (each test's header says why). `path` names got in messages. */
template <typename W>
static void check_rows(const problem &p, const char *path, const std::vector<float> &got, const std::vector<W> &want) {
    const int64_t H = p.H, S = p.S, dv = p.dv;
    double num = 0, den = 0, worst_row = 0;
    int64_t worst_at = -1, bad_rows = 0;
    for (int64_t row = 0; row < p.B * S * H; row++) {          /* output row (b·S + i)·H + h */
        double rn = 0, rd = 0;
        for (int64_t e = 0; e < dv; e++) {
            const size_t k = (size_t)(row * dv + e);
            if (!isfinite((double)want[k]) || !isfinite(got[k]))
                fail_msg("%s: output row %lld (b %lld, i %lld, h %lld) col %lld not finite: %s %g, reference %g",
                         p.name.c_str(), (long long)row, (long long)(row / H / S), (long long)(row / H % S),
                         (long long)(row % H), (long long)e, path, got[k], (double)want[k]);
            rn += ((double)got[k] - want[k]) * ((double)got[k] - want[k]), rd += (double)want[k] * want[k];
        }
        num += rn, den += rd;
        const double rel = sqrt(rn) / (sqrt(rd) + 1e-4);
        if (rel > worst_row) worst_row = rel, worst_at = row;
        if (rel > 2e-2) bad_rows++;
    }
    const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    fprintf(stderr, "%-44s %s rel L2 %.2e, worst row %.2e (row %lld: b %lld, i %lld, h %lld), rows over 2e-2: %lld\n",
            p.name.c_str(), path, rel, worst_row, (long long)worst_at, (long long)(worst_at / H / S),
            (long long)(worst_at / H % S), (long long)(worst_at % H), (long long)bad_rows);
    assert_true(rel <= 1e-2);
    assert_int_equal(bad_rows, 0);
}

#endif
