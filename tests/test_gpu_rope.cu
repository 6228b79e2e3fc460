/* The RoPE kernels (optimized/kernels/rope.cu) with the reference (reference/rope.c) as the CPU
 * truth. m4k_rope_tables against m4_ref_rope_cos_sin and m4_ref_llama4_scale, on the frequencies
 * m4_ref_rope_inv_freq gives (as the backend uploads them) for: the published YaRN parameters
 * (factor 128 over 8192 positions, mscale = mscale_all_dim = 1, Llama-4 beta 0.1), YaRN without
 * mscale (attention_factor 0.1·ln 128 + 1) and untruncated, an explicit attention_factor, and the
 * default RoPE without the Llama-4 scale (l4 = 1) — at positions 0 … 1,048,575 including both
 * sides of every Llama-4 block edge used. m4k_rope against m4_ref_apply_rope on the same tables:
 * interleaved and rotate_half pairing, with and without l4, strided heads, the vision path's dn = 0
 * and the shared key's one head; m4k_mla_keys against its definition.
 * Budgets: cos/sin within 6·2⁻²⁴ · max(attention_factor, 1) of the reference (the same float32
 * angle on both sides; CUDA's cosf/sinf are within 2 ulps, glibc's within 1, then one rounding
 * each of the product), l4 within 4 ulps of [1, 2) (2⁻²¹; logf within 1 ulp on both sides); the rotation, the scale and the keys bit for bit (the kernel keeps the products apart
 * with __fmul_rn as the reference's -ffp-contract=off does); unwritten outputs (NaN-filled) fail.
 * A wrong frequency, position, pairing or block index moves a value by far more (≥ 1e-3).
 * Cost: a few hundred rows, well under a second on an H100. Skips (exit 77) without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

extern "C" {
#include "reference.h"
#include "testutil.h"
}
#include "gpu_test_util.cuh"
#include "kernels/rope.cuh"

static bool same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* The published text config's RoPE (MODEL.md §2.4): dr = 64 of dq = 128, YaRN, Llama-4 beta 0.1. */
static m4_text_config published_rope(void) {
    m4_text_config c = m4_text_config{};
    c.qk_head_dim = 128, c.qk_rope_head_dim = 64, c.qk_nope_head_dim = 64;
    m4_rope_config &r = c.rope;
    r.type = M4_ROPE_YARN, r.theta = 10000.0, r.factor = 128.0;
    r.original_max_position_embeddings = 8192, r.has_original_max_position_embeddings = true;
    r.beta_fast = 32.0, r.beta_slow = 1.0, r.truncate = true, r.partial_rotary_factor = 0.5;
    r.has_mscale = r.has_mscale_all_dim = true, r.mscale = r.mscale_all_dim = 1.0;
    r.has_llama_4_scaling_beta = true, r.llama_4_scaling_beta = 0.1;
    return c;
}

static void check_tables(const char *name, const m4_text_config &cfg) {
    const m4_rope_config &r = cfg.rope;
    const int64_t half = cfg.qk_rope_head_dim / 2, L = r.original_max_position_embeddings;
    std::vector<float> inv_freq((size_t)half);
    float af = 0;
    m4_error err = m4_error{};
    assert_int_equal(m4_ref_rope_inv_freq(&cfg, inv_freq.data(), &af, &err), 0);
    /* positions: the first 64, both sides of the Llama-4 block edges 1–3 and 122, large ones */
    std::vector<int64_t> pos;
    for (int64_t p = 0; p < 64; p++) pos.push_back(p);
    for (int64_t k : {1, 2, 3, 122})
        for (int64_t d : {-1, 0, 1}) pos.push_back(k * L + d);
    for (int64_t p : {(int64_t)100003, (int64_t)524288, (int64_t)999999, (int64_t)1048575}) pos.push_back(p);
    const int64_t N = (int64_t)pos.size();
    std::vector<float> want_cos((size_t)(N * half)), want_sin((size_t)(N * half));
    m4_ref_rope_cos_sin(inv_freq.data(), half, af, pos.data(), N, want_cos.data(), want_sin.data());

    int64_t *d_pos = to_device(pos);
    float *d_inv = to_device(inv_freq), *d_cos = nan_filled((size_t)(N * half)), *d_sin = nan_filled((size_t)(N * half)),
          *d_l4 = nan_filled((size_t)N);
    assert_int_equal(m4k_rope_tables(d_pos, N, d_inv, half, af, r.has_llama_4_scaling_beta, (float)r.llama_4_scaling_beta,
                                     L, d_cos, d_sin, d_l4, 0, &err), 0);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> got_cos = to_host(d_cos, (size_t)(N * half)), got_sin = to_host(d_sin, (size_t)(N * half)),
                             got_l4 = to_host(d_l4, (size_t)N);
    cudaFree(d_pos), cudaFree(d_inv), cudaFree(d_cos), cudaFree(d_sin), cudaFree(d_l4);

    const double trig_budget = 6.0 * ldexp(1.0, -24) * fmax(af, 1.0), l4_budget = ldexp(1.0, -21);
    double worst_trig = 0, worst_l4 = 0;
    int64_t not_finite = 0;
    for (int64_t i = 0; i < N * half; i++) {
        not_finite += !isfinite(got_cos[(size_t)i]) + !isfinite(got_sin[(size_t)i]);
        worst_trig = fmax(worst_trig, fabs((double)got_cos[(size_t)i] - want_cos[(size_t)i]));
        worst_trig = fmax(worst_trig, fabs((double)got_sin[(size_t)i] - want_sin[(size_t)i]));
    }
    for (int64_t t = 0; t < N; t++) {
        const float want = r.has_llama_4_scaling_beta ? m4_ref_llama4_scale(pos[(size_t)t], (float)r.llama_4_scaling_beta, L)
                                                      : 1.0f;
        not_finite += !isfinite(got_l4[(size_t)t]);
        worst_l4 = fmax(worst_l4, fabs((double)got_l4[(size_t)t] - want));
        if (!r.has_llama_4_scaling_beta) assert_true(got_l4[(size_t)t] == 1.0f);
    }
    fprintf(stderr, "%-44s %lld positions × %lld: attention_factor %.6f, max |Δ| cos/sin %.2e (budget %.2e), "
                    "l4 %.2e (budget %.2e)\n",
            name, (long long)N, (long long)half, af, worst_trig, trig_budget, worst_l4, l4_budget);
    assert_int_equal(not_finite, 0);
    assert_true(worst_trig <= trig_budget);
    assert_true(worst_l4 <= l4_budget);
}

static void tables_match_the_reference(void **state) {
    (void)state;
    m4_text_config c = published_rope();
    check_tables("published YaRN + Llama-4 scale", c);
    c.rope.has_mscale = c.rope.has_mscale_all_dim = false, c.rope.truncate = false;
    check_tables("YaRN without mscale, untruncated", c);
    c.rope.has_attention_factor = true, c.rope.attention_factor = 0.75;
    check_tables("YaRN with attention_factor 0.75", c);
    c = published_rope();
    c.rope.type = M4_ROPE_DEFAULT, c.rope.theta = 1000000.0, c.rope.has_llama_4_scaling_beta = false;
    check_tables("default RoPE, no Llama-4 scale", c);
}

/* Deterministic values in [lo, hi): a linear congruential sequence. */
struct lcg {
    unsigned s;
    float next(float lo, float hi) {
        s = s * 1664525u + 1013904223u;
        return lo + (hi - lo) * ((float)(s >> 8) / (float)(1 << 24));
    }
};

struct rope_case {
    const char *name;
    int64_t B, S, H, dn, dr;
    int64_t x_stride, x_head_stride;
    bool l4;
    int interleave;
};

static void check_rope(const rope_case &c) {
    const int64_t N = c.B * c.S, half = c.dr / 2, dq = c.dn + c.dr;
    lcg g = {(unsigned)(c.B * 1000 + c.S * 100 + c.H * 10 + c.dn + c.interleave)};
    const int64_t x_len = (N - 1) * c.x_stride + (c.H - 1) * c.x_head_stride + dq;
    std::vector<float> x((size_t)x_len), cos_t((size_t)(N * half)), sin_t((size_t)(N * half)), l4((size_t)N);
    for (float &v : x) v = g.next(-2.0f, 2.0f);
    /* tables from the reference at scattered positions, and l4 values in [1, 1.5) */
    std::vector<int64_t> pos((size_t)N);
    for (int64_t t = 0; t < N; t++) pos[(size_t)t] = 37 * t + 5;
    std::vector<float> inv_freq((size_t)half);
    for (int64_t i = 0; i < half; i++) inv_freq[(size_t)i] = powf(10000.0f, -(float)(2 * i) / (float)c.dr);
    m4_ref_rope_cos_sin(inv_freq.data(), half, 1.25f, pos.data(), N, cos_t.data(), sin_t.data());
    for (float &v : l4) v = g.next(1.0f, 1.5f);

    float *d_x = to_device(x), *d_cos = to_device(cos_t), *d_sin = to_device(sin_t), *d_l4 = to_device(l4);
    const size_t out_len = (size_t)(N * c.H * dq);
    float *d_out = nan_filled(out_len);
    m4_error err = m4_error{};
    assert_int_equal(m4k_rope(d_x, c.x_stride, c.x_head_stride, c.B, c.S, c.H, c.dn, c.dr, d_cos, d_sin,
                              c.l4 ? d_l4 : nullptr, c.interleave, d_out, 0, &err), 0);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> got = to_host(d_out, out_len);
    cudaFree(d_x), cudaFree(d_cos), cudaFree(d_sin), cudaFree(d_l4), cudaFree(d_out);

    int64_t wrong = 0;
    std::vector<float> rotated((size_t)c.dr);
    for (int64_t b = 0; b < c.B; b++)
        for (int64_t s = 0; s < c.S; s++)
            for (int64_t h = 0; h < c.H; h++) {
                const int64_t t = b * c.S + s;
                const float *xh = x.data() + t * c.x_stride + h * c.x_head_stride;
                m4_ref_apply_rope(xh + c.dn, rotated.data(), c.dr, cos_t.data() + t * half, sin_t.data() + t * half,
                                  c.interleave);
                const float *o = got.data() + ((b * c.H + h) * c.S + s) * dq;
                for (int64_t d = 0; d < dq; d++) {
                    const float v = d < c.dn ? xh[d] : rotated[(size_t)(d - c.dn)];
                    wrong += !same_bits(o[d], c.l4 ? v * l4[(size_t)t] : v);
                }
            }
    fprintf(stderr, "%-44s [%lld, %lld, %lld, %lld + %lld]: %lld of %zu values differ (budget 0)\n", c.name,
            (long long)c.B, (long long)c.S, (long long)c.H, (long long)c.dn, (long long)c.dr, (long long)wrong, out_len);
    assert_int_equal(wrong, 0);
}

static void rotation_matches_the_reference(void **state) {
    (void)state;
    const rope_case cases[] = {
        /* queries: H heads of dq = dn + dr in a row, one padded row per token */
        {"queries, interleaved, l4", 2, 5, 3, 8, 16, 3 * 24 + 5, 24, true, 1},
        {"queries, rotate_half, l4", 2, 5, 3, 8, 16, 3 * 24 + 5, 24, true, 0},
        {"queries, interleaved, no l4", 1, 7, 4, 8, 16, 4 * 24, 24, false, 1},
        {"published head dims, one token", 1, 1, 32, 64, 64, 32 * 128, 128, true, 1},
        /* the shared key: one head inside the kv_a row (stride past it), no nope part */
        {"shared key k_rope (one head, dn 0)", 1, 9, 1, 0, 64, 256 + 64 + 3, 0, false, 1},
        /* the vision path: dn = 0, no l4, heads of dr side by side */
        {"vision (dn 0, no l4)", 1, 6, 2, 0, 32, 2 * 32, 32, false, 0},
    };
    for (const rope_case &c : cases) check_rope(c);
}

static void keys_match_the_definition(void **state) {
    (void)state;
    const int64_t B = 2, T = 5, H = 3, dn = 4, dr = 6, dv = 5, rope_row_stride = 7, dq = dn + dr;
    lcg g = {99u};
    std::vector<float> kvb((size_t)(B * T * H * (dn + dv))), k_rope((size_t)(B * rope_row_stride * dr));
    for (float &v : kvb) v = g.next(-1.0f, 1.0f);
    for (float &v : k_rope) v = g.next(-1.0f, 1.0f);
    float *d_kvb = to_device(kvb), *d_kr = to_device(k_rope);
    const size_t out_len = (size_t)(B * H * T * dq);
    float *d_K = nan_filled(out_len);
    m4_error err = m4_error{};
    assert_int_equal(m4k_mla_keys(d_kvb, d_kr, rope_row_stride, B, T, H, dn, dr, dv, d_K, 0, &err), 0);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> K = to_host(d_K, out_len);
    cudaFree(d_kvb), cudaFree(d_kr), cudaFree(d_K);
    int64_t wrong = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t j = 0; j < T; j++)
                for (int64_t d = 0; d < dq; d++) {
                    const float want = d < dn ? kvb[(size_t)((b * T + j) * H * (dn + dv) + h * (dn + dv) + d)]
                                              : k_rope[(size_t)((b * rope_row_stride + j) * dr + d - dn)];
                    wrong += !same_bits(K[(size_t)(((b * H + h) * T + j) * dq + d)], want);
                }
    fprintf(stderr, "%-44s %lld of %zu values differ (budget 0)\n", "mla_keys", (long long)wrong, out_len);
    assert_int_equal(wrong, 0);
}

int main(void) {
    if (!gpu_present("test_gpu_rope")) return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tables_match_the_reference),
        cmocka_unit_test(rotation_matches_the_reference),
        cmocka_unit_test(keys_match_the_definition),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
