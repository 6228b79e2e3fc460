/* bench_compute.c — the CPU's measured float32 compute ceilings, the top of the roofline against
 * which the benchmarks' FLOP/s are reported (pct_of_flops_ceiling), as bench_memory.c measures
 * the bandwidth one.
 *
 *   compute/fp32_fma/threads:N     12 independent vectors of float32, each x = fma(x, a, b) in a
 *                                  loop: the core's peak (AVX2 + FMA where the CPU has them, else
 *                                  SSE2 multiply + add). 2 FLOPs per lane per step. Publishes
 *                                  compute ceiling "cpu_fp32_fma/threads:N" (the one every other
 *                                  case's pct_of_flops_ceiling uses).
 *   compute/fp32_muladd/threads:N  the same with a separate multiply and add (x = x·a + b, two
 *                                  roundings), what strict-IEEE code without fused multiply-adds —
 *                                  the reference — can reach at best. Publishes
 *                                  "cpu_fp32_muladd/threads:N" (a second line of the roofline).
 *
 * Values stay in [b, b / (1 − a)] (a < 1): no overflow, no subnormals. The registers never touch
 * memory inside the loop, so these are pure core figures. N = 1 and every processor (OpenMP, one
 * private set of accumulators per thread). The ISA used is in the label. */
#include <stdio.h>

#include "bench_common.h"
#include "m4bench.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define M4BENCH_X86 1
#endif

#define STEPS 200000       /* loop trips per thread and iteration */
#define SMOKE_STEPS 2000
#define CHAINS 12          /* independent accumulators (latency × pipes, with margin) */

typedef enum { K_FMA, K_MULADD, K_COUNT } kind;
static const char *const kind_names[K_COUNT] = {"fp32_fma", "fp32_muladd"};

typedef struct {
    kind k;
    int threads;
    int lanes;             /* floats per vector of the ISA in use */
} compute_case;

static compute_case cases[K_COUNT][2];

static int steps(void) { return m4bench_smoke() ? SMOKE_STEPS : STEPS; }

#ifdef M4BENCH_X86
/* One thread's work: CHAINS × 8 lanes, `n` steps. Returns a value the caller keeps. */
__attribute__((target("avx2,fma"))) static float chains_avx2_fma(int n) {
    __m256 x[CHAINS];
    const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-3f);
    for (int k = 0; k < CHAINS; k++) x[k] = _mm256_set1_ps((float)k * 1e-3f);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < CHAINS; k++) x[k] = _mm256_fmadd_ps(x[k], a, b);
    __m256 s = x[0];
    for (int k = 1; k < CHAINS; k++) s = _mm256_add_ps(s, x[k]);
    return _mm256_cvtss_f32(s);
}

__attribute__((target("avx2"))) static float chains_avx2_muladd(int n) {
    __m256 x[CHAINS];
    const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-3f);
    for (int k = 0; k < CHAINS; k++) x[k] = _mm256_set1_ps((float)k * 1e-3f);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < CHAINS; k++) x[k] = _mm256_add_ps(_mm256_mul_ps(x[k], a), b);
    __m256 s = x[0];
    for (int k = 1; k < CHAINS; k++) s = _mm256_add_ps(s, x[k]);
    return _mm256_cvtss_f32(s);
}

static float chains_sse2_muladd(int n) {
    __m128 x[CHAINS];
    const __m128 a = _mm_set1_ps(0.999f), b = _mm_set1_ps(1e-3f);
    for (int k = 0; k < CHAINS; k++) x[k] = _mm_set1_ps((float)k * 1e-3f);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < CHAINS; k++) x[k] = _mm_add_ps(_mm_mul_ps(x[k], a), b);
    __m128 s = x[0];
    for (int k = 1; k < CHAINS; k++) s = _mm_add_ps(s, x[k]);
    return _mm_cvtss_f32(s);
}
#endif

#ifndef M4BENCH_X86
/* Portable fallback: 4 lanes of plain C (the compiler may vectorise it). */
static float chains_scalar(int n) {
    float x[CHAINS][4];
    for (int k = 0; k < CHAINS; k++)
        for (int l = 0; l < 4; l++) x[k][l] = (float)k * 1e-3f;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < CHAINS; k++)
            for (int l = 0; l < 4; l++) x[k][l] = x[k][l] * 0.999f + 1e-3f;
    float s = 0;
    for (int k = 0; k < CHAINS; k++) s += x[k][0];
    return s;
}
#endif

static int have_avx2(void) {
#ifdef M4BENCH_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
#else
    return 0;
#endif
}

static int have_fma(void) {
#ifdef M4BENCH_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static float run_chains(kind k, int n) {
#ifdef M4BENCH_X86
    if (k == K_FMA && have_fma()) return chains_avx2_fma(n);
    if (have_avx2()) return chains_avx2_muladd(n);
    return chains_sse2_muladd(n);
#else
    (void)k;
    return chains_scalar(n);
#endif
}

static int lanes_of(kind k) {
#ifdef M4BENCH_X86
    return (k == K_FMA && have_fma()) || have_avx2() ? 8 : 4;
#else
    (void)k;
    return 4;
#endif
}

static const char *isa_of(kind k) {
#ifdef M4BENCH_X86
    if (k == K_FMA) return have_fma() ? "AVX2 FMA (vfmadd, 8 lanes)" : have_avx2() ? "no FMA: AVX2 mul+add (8 lanes)"
                                                                                : "no FMA: SSE2 mul+add (4 lanes)";
    return have_avx2() ? "AVX2 mul+add (8 lanes)" : "SSE2 mul+add (4 lanes)";
#else
    (void)k;
    return "plain C mul+add (4 lanes)";
#endif
}

static int run_compute(void *user, int64_t iteration, char *err, size_t errsize) {
    const compute_case *c = user;
    const int n = steps();
    float total = 0;
    if (c->threads == 1) {
        total = run_chains(c->k, n);
    } else {
#pragma omp parallel num_threads(c->threads) reduction(+ : total)
        total += run_chains(c->k, n);
    }
    m4bench_keep(&total);
    return 0;
}

void m4bench_suite_compute(void) {
    const int all = m4bench_all_threads();
    const int thread_counts[2] = {1, all};
    for (int k = 0; k < K_COUNT; k++)
        for (int v = 0; v < (all > 1 ? 2 : 1); v++) {
            compute_case *c = &cases[k][v];
            *c = (compute_case){(kind)k, thread_counts[v], lanes_of((kind)k)};
            char name[64], ceiling[64], label[128];
            snprintf(name, sizeof name, "compute/%s/threads:%d", kind_names[k], c->threads);
            snprintf(ceiling, sizeof ceiling, "cpu_%s/threads:%d", kind_names[k], c->threads);
            snprintf(label, sizeof label, "%s, %d chains in registers", isa_of((kind)k), CHAINS);
            const double flops = 2.0 * (double)steps() * CHAINS * c->lanes * c->threads;
            m4bench_register(&(m4bench_case){
                .name = name,
                .run = run_compute,
                .user = c,
                .bytes = 0,
                .flops = flops,
                .label = label,
                .measures_flops_ceiling = ceiling,
            });
        }
}
