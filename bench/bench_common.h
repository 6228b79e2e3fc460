/* bench_common.h — helpers shared by the C benchmark files: big aligned buffers, thread counts. */
#ifndef M4BENCH_COMMON_H
#define M4BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "weights.h"

/* A zero-initialised-on-touch buffer of `bytes`, 2 MiB aligned and advised for transparent huge
 * pages (streaming a multi-GiB buffer through 4 KiB pages costs TLB walks that a ceiling
 * measurement should not pay). Pages are not touched here. NULL when out of memory. */
void *m4bench_alloc(size_t bytes);
void m4bench_free(void *p);

/* Processors OpenMP may use (omp_get_num_procs), 1 without OpenMP. */
int m4bench_all_threads(void);

/* Sets the thread count OpenMP parallel regions of the calling thread use (no-op without). */
void m4bench_set_threads(int threads);

/* Last-level (L3) cache size of cpu0 in bytes (sysfs, else sysconf), 32 MiB when unknown. */
size_t m4bench_llc_bytes(void);

/* splitmix64: a counter-based generator, so parallel fills are deterministic. */
static inline uint64_t m4bench_mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Fills a weight (F8_E4M3 or BF16, as laid by the caller) with random but well-scaled element bits
 * from counter `seed` (deterministic, parallel):
 *   F8_E4M3: sign, exponent field 4…7, any mantissa → ±[0.125, 1.875] (× the weight's scale);
 *   BF16:    sign, exponent 118…121, any 7-bit mantissa → ±[0.002, 0.03];
 *   norm = 1 (a BF16 RMSNorm weight): 1 + a few ulps.
 * Never NaN, Inf or subnormal (subnormals would slow float math and flatter nothing). */
void m4bench_fill(const m4_weight *w, uint64_t seed, int norm);

/* x[i] uniform in [-1, 1) from counter seed ^ i (activations). */
void m4bench_fill_floats(float *x, size_t n, uint64_t seed);

#endif
