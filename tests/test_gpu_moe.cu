/* The MoE kernels around the expert GEMMs (optimized/kernels/moe.cu) against host versions written
 * here from their definitions (reference/moe.c's m4_ref_router and m4_ref_experts, moe.cuh):
 *   m4k_router_topk — float64 softmax, or sigmoid with the choice scores + e_score_correction_bias,
 *     group-limited selection (a group's score is the sum of its top two; the best topk_group
 *     groups stay), top-K with ties to the lower id, weights = the unbiased scores, renormalised
 *     (Σ + 1e-20) when norm_topk_prob, × routed_scaling_factor. Configs: the published one (E 128,
 *     K 4, one group), DeepSeek-style group-limited softmax (E 64, 8 groups keep 3, K 6, no
 *     renormalisation, scale 2.5), sigmoid + bias (E 64, 8 groups keep 4, K 8), and K at
 *     M4_CUDA_MAX_TOPK. Random tokens are redrawn until every choice wins by ≥ 1e-4 (float32 then
 *     decides as float64 does); crafted tokens tie exactly (all logits equal; two equal maxima)
 *     and must resolve to the lower ids. Budget: ids exact, weights within relative 1e-5 of
 *     float64 (float32 softmax over ≤ 128 experts: ~1e-6).
 *   m4k_moe_permute — counts, offsets, and the deterministic order (within an expert, routing
 *     entries in order) exactly, for uneven and empty experts, a token routed twice to one expert,
 *     and more experts than the kernel's 1024 threads.
 *   m4k_gather_rows — exact copies of the permuted tokens' rows.
 *   m4k_moe_combine — bit for bit the float32 sum in the documented order (per token, its slots in
 *     ascending (expert id, k), each product rounded, added from zero, then the shared expert's
 *     row), and within (K + 1)·2⁻²⁴·Σ|terms| of float64; with the slots permuted (slot_of) or in
 *     routing order, with and without the shared row.
 * Outputs are prefilled with 0xff bytes, so that an unwritten value fails. K above
 * M4_CUDA_MAX_TOPK is refused with a message. Cost: well under a second on an H100. Skips
 * (exit 77) without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "testutil.h"
}
#include "gpu_test_util.cuh"
#include "kernels/moe.cuh"

/* A device buffer of n T filled with 0xff bytes (NaN floats, −1 ints): an unwritten value shows. */
template <typename T> static T *filled(size_t n) {
    T *d = nullptr;
    assert_int_equal(cudaMalloc(&d, sizeof(T) * (n ? n : 1)), cudaSuccess);
    assert_int_equal(cudaMemset(d, 0xff, sizeof(T) * (n ? n : 1)), cudaSuccess);
    return d;
}

/* Deterministic values in [lo, hi): a linear congruential sequence. */
struct lcg {
    unsigned s;
    float next(float lo, float hi) {
        s = s * 1664525u + 1013904223u;
        return lo + (hi - lo) * ((float)(s >> 8) / (float)(1 << 24));
    }
    int below(int n) {
        s = s * 1664525u + 1013904223u;
        return (int)((s >> 8) % (unsigned)n);
    }
};

/* ---- router ------------------------------------------------------------------------------ */

/* Index of the largest v[i] with !taken[i], ties to the lower index; *margin becomes the smallest
 * positive lead of the winner over another free value (exact ties do not count: float32 ties
 * them too). */
static int argmax_free(const std::vector<double> &v, const std::vector<bool> &taken, double *margin) {
    int best = -1;
    for (int i = 0; i < (int)v.size(); i++)
        if (!taken[(size_t)i] && (best < 0 || v[(size_t)i] > v[(size_t)best])) best = i;
    for (int i = 0; i < (int)v.size(); i++) {
        const double lead = v[(size_t)best] - v[(size_t)i];
        if (!taken[(size_t)i] && i != best && lead > 0) *margin = fmin(*margin, lead);
    }
    return best;
}

/* One token of m4_ref_router in float64: ids[K], w[K]; returns the smallest margin of a choice. */
static double router_ref(const float *logits, const float *bias, const m4_text_config &c, int32_t *ids, double *w) {
    const int E = (int)c.n_routed_experts, K = (int)c.num_experts_per_tok, G = (int)c.n_group, per = E / G;
    std::vector<double> score((size_t)E), choice((size_t)E);
    if (c.scoring_func == M4_ROUTER_SIGMOID) {
        for (int e = 0; e < E; e++) score[(size_t)e] = 1.0 / (1.0 + exp(-(double)logits[e]));
        for (int e = 0; e < E; e++) choice[(size_t)e] = score[(size_t)e] + (double)bias[e];
    } else {
        double m = -INFINITY, sum = 0;
        for (int e = 0; e < E; e++) m = fmax(m, (double)logits[e]);
        for (int e = 0; e < E; e++) sum += score[(size_t)e] = exp((double)logits[e] - m);
        for (int e = 0; e < E; e++) choice[(size_t)e] = score[(size_t)e] = score[(size_t)e] / sum;
    }
    double margin = INFINITY;
    if (G > 1) {
        std::vector<double> group((size_t)G);
        for (int g = 0; g < G; g++) {
            std::vector<double> c_g(choice.begin() + g * per, choice.begin() + (g + 1) * per);
            std::vector<bool> taken((size_t)per, false);
            double ignored = INFINITY;               /* which of the top two wins does not matter */
            const int first = argmax_free(c_g, taken, &ignored);
            taken[(size_t)first] = true;
            group[(size_t)g] = c_g[(size_t)first] + c_g[(size_t)argmax_free(c_g, taken, &ignored)];
        }
        std::vector<bool> kept((size_t)G, false);
        for (int k = 0; k < (int)c.topk_group; k++) kept[(size_t)argmax_free(group, kept, &margin)] = true;
        for (int g = 0; g < G; g++)
            if (!kept[(size_t)g])
                for (int e = 0; e < per; e++) choice[(size_t)(g * per + e)] = 0.0;
    }
    std::vector<bool> taken((size_t)E, false);
    double total = 0;
    for (int k = 0; k < K; k++) {
        ids[k] = argmax_free(choice, taken, &margin);
        taken[(size_t)ids[k]] = true;
        total += w[k] = score[(size_t)ids[k]];
    }
    for (int k = 0; k < K; k++)
        w[k] = (c.norm_topk_prob ? w[k] / (total + 1e-20) : w[k]) * c.routed_scaling_factor;
    return margin;
}

static m4_text_config router_config(int E, int K, int G, int topk_group, m4_router_scoring scoring, bool norm,
                                    double scale) {
    m4_text_config c = m4_text_config{};
    c.n_routed_experts = E, c.num_experts_per_tok = K, c.n_group = G, c.topk_group = topk_group;
    c.scoring_func = scoring, c.norm_topk_prob = norm, c.routed_scaling_factor = scale;
    return c;
}

static void check_router(const char *name, const m4_text_config &c, int64_t random_tokens) {
    const int E = (int)c.n_routed_experts, K = (int)c.num_experts_per_tok;
    lcg g = {(unsigned)(E * 31 + K * 7 + (int)c.n_group)};
    /* the correction bias: few distinct values, so that equal logits can tie exactly */
    std::vector<float> bias((size_t)E);
    for (int e = 0; e < E; e++) bias[(size_t)e] = (float)((e * 7) % 5 - 2) * 0.01f;
    std::vector<float> logits;
    std::vector<int32_t> want_ids;
    std::vector<double> want_w;
    std::vector<int32_t> ids((size_t)K);
    std::vector<double> w((size_t)K);
    auto add_token = [&](const std::vector<float> &l) {
        const double margin = router_ref(l.data(), bias.data(), c, ids.data(), w.data());
        if (margin < 1e-4) return false;
        logits.insert(logits.end(), l.begin(), l.end());
        want_ids.insert(want_ids.end(), ids.begin(), ids.end());
        want_w.insert(want_w.end(), w.begin(), w.end());
        return true;
    };
    /* crafted exact ties: every logit equal; two equal maxima (the higher id first in memory) */
    assert_true(add_token(std::vector<float>((size_t)E, 0.5f)));
    const int64_t all_equal = 0;
    std::vector<float> two_max((size_t)E);
    for (int e = 0; e < E; e++) two_max[(size_t)e] = -1.0f - 0.03125f * (float)e;
    two_max[(size_t)(E - 3)] = two_max[3] = 3.0f;
    assert_true(add_token(two_max));
    for (int64_t t = 0; t < random_tokens; t++) {
        std::vector<float> l((size_t)E);
        int tries = 0;
        do {
            for (float &v : l) v = g.next(-4.0f, 4.0f);
            assert_true(++tries < 100);
        } while (!add_token(l));
    }
    const int64_t N = (int64_t)(logits.size() / (size_t)E);

    float *d_logits = to_device(logits), *d_bias = to_device(bias), *d_w = filled<float>((size_t)(N * K));
    int32_t *d_ids = filled<int32_t>((size_t)(N * K));
    m4_error err = m4_error{};
    const int rc = m4k_router_topk(d_logits, c.scoring_func == M4_ROUTER_SIGMOID ? d_bias : nullptr, N, &c, d_ids, d_w,
                                   0, &err);
    if (rc) fprintf(stderr, "%s: %s\n", name, err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<int32_t> got_ids = to_host(d_ids, (size_t)(N * K));
    const std::vector<float> got_w = to_host(d_w, (size_t)(N * K));
    cudaFree(d_logits), cudaFree(d_bias), cudaFree(d_w), cudaFree(d_ids);

    int64_t wrong_ids = 0;
    double worst = 0;
    for (int64_t i = 0; i < N * K; i++) {
        if (got_ids[(size_t)i] != want_ids[(size_t)i]) {
            if (wrong_ids++ < 4)
                fprintf(stderr, "%s: token %lld, k %lld: expert %d, want %d\n", name, (long long)(i / K),
                        (long long)(i % K), got_ids[(size_t)i], want_ids[(size_t)i]);
            continue;
        }
        const double rel = fabs((double)got_w[(size_t)i] - want_w[(size_t)i]) / fabs(want_w[(size_t)i]);
        worst = isnan(rel) ? INFINITY : fmax(worst, rel);
    }
    fprintf(stderr, "%-44s E %3d K %2d groups %d/%d %s: %lld tokens, %lld ids wrong, weights max rel err %.2e "
                    "(budget 1e-5)\n",
            name, E, K, (int)c.topk_group, (int)c.n_group, c.scoring_func == M4_ROUTER_SIGMOID ? "sigmoid" : "softmax",
            (long long)N, (long long)wrong_ids, worst);
    assert_int_equal(wrong_ids, 0);
    assert_true(worst <= 1e-5);
    /* softmax: the all-equal token took the lowest ids the group selection allows, in order */
    if (c.scoring_func == M4_ROUTER_SOFTMAX)
        for (int k = 1; k < K; k++) assert_true(got_ids[(size_t)(all_equal * K + k)] > got_ids[(size_t)(all_equal * K + k - 1)]);
}

static void router_matches_float64(void **state) {
    (void)state;
    check_router("published (one group)", router_config(128, 4, 1, 1, M4_ROUTER_SOFTMAX, true, 1.0), 64);
    check_router("group-limited softmax", router_config(64, 6, 8, 3, M4_ROUTER_SOFTMAX, false, 2.5), 48);
    check_router("sigmoid + correction bias", router_config(64, 8, 8, 4, M4_ROUTER_SIGMOID, true, 2.5), 48);
    check_router("K = M4_CUDA_MAX_TOPK", router_config(32, M4_CUDA_MAX_TOPK, 1, 1, M4_ROUTER_SOFTMAX, true, 1.0), 16);
}

static void router_refuses_too_many_experts_per_token(void **state) {
    (void)state;
    const m4_text_config c = router_config(32, M4_CUDA_MAX_TOPK + 1, 1, 1, M4_ROUTER_SOFTMAX, true, 1.0);
    m4_error err = m4_error{};
    assert_int_equal(m4k_router_topk(nullptr, nullptr, 1, &c, nullptr, nullptr, 0, &err), -1);
    assert_non_null(strstr(err.msg, "num_experts_per_tok"));
}

/* ---- permutation, gather, combine --------------------------------------------------------- */

/* Routing of N tokens to K experts each among E: distinct per token, except token 1 routed twice
 * to one expert (the kernels must still order by (expert, k)); experts e % 5 == 2 left empty. */
static std::vector<int32_t> routing(int64_t N, int64_t K, int64_t E, unsigned seed) {
    lcg g = {seed};
    std::vector<int32_t> ids((size_t)(N * K));
    for (int64_t t = 0; t < N; t++)
        for (int64_t k = 0; k < K; k++) {
            int32_t e;
            bool repeat;
            do {
                e = (int32_t)g.below((int)E);
                repeat = false;
                for (int64_t j = 0; j < k; j++) repeat |= ids[(size_t)(t * K + j)] == e;
            } while (e % 5 == 2 || repeat);
            ids[(size_t)(t * K + k)] = e;
        }
    if (N > 1 && K > 1) ids[(size_t)(K + K - 1)] = ids[(size_t)K];
    return ids;
}

struct permutation {
    std::vector<int32_t> counts, offsets, slot_token, slot_of;
};

/* The definition: slots sorted by expert; within an expert, routing entries t·K + k in order. */
static permutation permute_ref(const std::vector<int32_t> &ids, int64_t K, int64_t E) {
    permutation p;
    p.counts.assign((size_t)E, 0), p.offsets.assign((size_t)E + 1, 0);
    p.slot_token.assign(ids.size(), -1), p.slot_of.assign(ids.size(), -1);
    for (int32_t e : ids) p.counts[(size_t)e]++;
    for (int64_t e = 0; e < E; e++) p.offsets[(size_t)e + 1] = p.offsets[(size_t)e] + p.counts[(size_t)e];
    std::vector<int32_t> next(p.offsets.begin(), p.offsets.end() - 1);
    for (size_t i = 0; i < ids.size(); i++) {
        const int32_t slot = next[(size_t)ids[i]]++;
        p.slot_token[(size_t)slot] = (int32_t)(i / (size_t)K), p.slot_of[i] = slot;
    }
    return p;
}

static permutation permute_on_device(const std::vector<int32_t> &ids, int64_t N, int64_t K, int64_t E) {
    int32_t *d_ids = to_device(ids), *d_counts = filled<int32_t>((size_t)E), *d_offsets = filled<int32_t>((size_t)E + 1),
            *d_slot_token = filled<int32_t>(ids.size()), *d_slot_of = filled<int32_t>(ids.size());
    m4_error err = m4_error{};
    assert_int_equal(m4k_moe_permute(d_ids, N, K, E, d_counts, d_offsets, d_slot_token, d_slot_of, 0, &err), 0);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    permutation p = {to_host(d_counts, (size_t)E), to_host(d_offsets, (size_t)E + 1), to_host(d_slot_token, ids.size()),
                     to_host(d_slot_of, ids.size())};
    cudaFree(d_ids), cudaFree(d_counts), cudaFree(d_offsets), cudaFree(d_slot_token), cudaFree(d_slot_of);
    return p;
}

static void permute_is_deterministic(void **state) {
    (void)state;
    const int64_t cases[][3] = {{1, 4, 128}, {37, 4, 16}, {300, 8, 64}, {20, 4, 1500}};   /* {N, K, E} */
    for (const auto &c : cases) {
        const int64_t N = c[0], K = c[1], E = c[2];
        const std::vector<int32_t> ids = routing(N, K, E, (unsigned)(N * 13 + E));
        const permutation want = permute_ref(ids, K, E), got = permute_on_device(ids, N, K, E);
        fprintf(stderr, "%-44s N %3lld K %lld E %4lld: counts %s, offsets %s, slot_token %s, slot_of %s\n", "moe_permute",
                (long long)N, (long long)K, (long long)E, got.counts == want.counts ? "exact" : "WRONG",
                got.offsets == want.offsets ? "exact" : "WRONG", got.slot_token == want.slot_token ? "exact" : "WRONG",
                got.slot_of == want.slot_of ? "exact" : "WRONG");
        assert_true(got.counts == want.counts);
        assert_true(got.offsets == want.offsets);
        assert_true(got.slot_token == want.slot_token);
        assert_true(got.slot_of == want.slot_of);
    }
}

static void gather_copies_the_rows(void **state) {
    (void)state;
    const int64_t N = 37, K = 4, E = 16, D = 300;
    const std::vector<int32_t> ids = routing(N, K, E, 7u);
    const permutation p = permute_ref(ids, K, E);
    lcg g = {11u};
    std::vector<float> x((size_t)(N * D));
    for (float &v : x) v = g.next(-1.0f, 1.0f);
    float *d_x = to_device(x), *d_xs = filled<float>((size_t)(N * K * D));
    int32_t *d_rows = to_device(p.slot_token);
    m4_error err = m4_error{};
    assert_int_equal(m4k_gather_rows(d_x, d_rows, N * K, D, d_xs, 0, &err), 0);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> xs = to_host(d_xs, (size_t)(N * K * D));
    cudaFree(d_x), cudaFree(d_xs), cudaFree(d_rows);
    int64_t wrong = 0;
    for (int64_t s = 0; s < N * K; s++)
        wrong += memcmp(&xs[(size_t)(s * D)], &x[(size_t)(p.slot_token[(size_t)s] * D)], sizeof(float) * (size_t)D) != 0;
    fprintf(stderr, "%-44s %lld rows of %lld: %lld wrong (budget 0)\n", "gather_rows", (long long)(N * K), (long long)D,
            (long long)wrong);
    assert_int_equal(wrong, 0);
}

static void check_combine(const char *name, bool permuted, bool with_shared) {
    const int64_t N = 37, K = 4, E = 16, D = 130;
    const std::vector<int32_t> ids = routing(N, K, E, 23u);
    const permutation p = permute_ref(ids, K, E);
    lcg g = {(unsigned)(permuted * 2 + with_shared + 1)};
    std::vector<float> y((size_t)(N * K * D)), weights((size_t)(N * K)), shared((size_t)(N * D));
    for (float &v : y) v = g.next(-2.0f, 2.0f);
    for (float &v : weights) v = g.next(0.0f, 1.0f);
    for (float &v : shared) v = g.next(-1.0f, 1.0f);
    float *d_y = to_device(y), *d_w = to_device(weights), *d_shared = to_device(shared),
          *d_out = filled<float>((size_t)(N * D));
    int32_t *d_ids = to_device(ids), *d_slot_of = to_device(p.slot_of);
    m4_error err = m4_error{};
    assert_int_equal(m4k_moe_combine(d_y, permuted ? d_slot_of : nullptr, d_ids, d_w, with_shared ? d_shared : nullptr, N,
                                     K, D, d_out, 0, &err),
                     0);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> out = to_host(d_out, (size_t)(N * D));
    cudaFree(d_y), cudaFree(d_w), cudaFree(d_shared), cudaFree(d_out), cudaFree(d_ids), cudaFree(d_slot_of);

    int64_t not_bitwise = 0;
    double worst = 0;
    for (int64_t t = 0; t < N; t++) {
        std::vector<int64_t> order((size_t)K);               /* the token's entries by (expert id, k) */
        for (int64_t k = 0; k < K; k++) order[(size_t)k] = k;
        std::stable_sort(order.begin(), order.end(),
                         [&](int64_t a, int64_t b) { return ids[(size_t)(t * K + a)] < ids[(size_t)(t * K + b)]; });
        for (int64_t d = 0; d < D; d++) {
            float acc = 0.0f;
            double exact = 0, magnitude = 0;
            for (int64_t k : order) {
                const int64_t entry = t * K + k, slot = permuted ? p.slot_of[(size_t)entry] : entry;
                const float yv = y[(size_t)(slot * D + d)], wv = weights[(size_t)entry];
                volatile float product = yv * wv;            /* rounded before the add, as __fmul_rn */
                acc = acc + product;
                exact += (double)yv * wv, magnitude += fabs((double)yv * wv);
            }
            if (with_shared) {
                const float s = shared[(size_t)(t * D + d)];
                acc = acc + s, exact += s, magnitude += fabs(s);
            }
            const float got = out[(size_t)(t * D + d)];
            not_bitwise += memcmp(&got, &acc, sizeof got) != 0;
            const double err64 = fabs((double)got - exact) / (magnitude > 0 ? magnitude : 1);
            worst = isnan(err64) ? INFINITY : fmax(worst, err64);
        }
    }
    const double budget = (double)(K + 1) * ldexp(1.0, -24);
    fprintf(stderr, "%-44s %lld tokens × %lld: %lld values differ from the ordered float32 sum (budget 0), "
                    "float64 max err %.2e · Σ|terms| (budget %.2e)\n",
            name, (long long)N, (long long)D, (long long)not_bitwise, worst, budget);
    assert_int_equal(not_bitwise, 0);
    assert_true(worst <= budget);
}

static void combine_matches_the_ordered_sum(void **state) {
    (void)state;
    check_combine("moe_combine: permuted slots + shared expert", true, true);
    check_combine("moe_combine: routing order, no shared expert", false, false);
    m4_error err = m4_error{};
    assert_int_equal(m4k_moe_combine(nullptr, nullptr, nullptr, nullptr, nullptr, 1, M4_CUDA_MAX_TOPK + 1, 8, nullptr, 0, &err),
                     -1);
    assert_non_null(strstr(err.msg, "exceeds"));
}

int main(void) {
    if (!gpu_present("test_gpu_moe")) return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(router_refuses_too_many_experts_per_token),
        cmocka_unit_test(router_matches_float64),
        cmocka_unit_test(permute_is_deterministic),
        cmocka_unit_test(gather_copies_the_rows),
        cmocka_unit_test(combine_matches_the_ordered_sum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
