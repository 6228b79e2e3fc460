/* bench_common.h — helpers shared by the C benchmark files: big aligned buffers, thread counts. */
#ifndef M4BENCH_COMMON_H
#define M4BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>

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

#endif
