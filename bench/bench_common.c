/* bench_common.c — see bench_common.h. */
#define _DEFAULT_SOURCE /* madvise, MADV_HUGEPAGE, _SC_LEVEL3_CACHE_SIZE */
#include "bench_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define HUGE_PAGE ((size_t)2 << 20)

void *m4bench_alloc(size_t bytes) {
    size_t rounded = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    void *p = aligned_alloc(HUGE_PAGE, rounded ? rounded : HUGE_PAGE);
#ifdef MADV_HUGEPAGE
    if (p) madvise(p, rounded, MADV_HUGEPAGE); /* advice only: failure is harmless */
#endif
    return p;
}

void m4bench_free(void *p) { free(p); }

int m4bench_all_threads(void) {
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

void m4bench_set_threads(int threads) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
}

/* sysfs first: glibc's sysconf may report the whole package's L3 (8 × 32 MiB on a VM of an
 * EPYC host) rather than what this core shares. */
size_t m4bench_llc_bytes(void) {
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
    if (f) {
        unsigned long long value = 0;
        char unit = 0;
        int got = fscanf(f, "%llu%c", &value, &unit);
        fclose(f);
        if (got >= 1 && value > 0)
            return (size_t)value * (unit == 'K' ? 1024u : unit == 'M' ? 1024u * 1024u : 1u);
    }
    long l3 = -1;
#ifdef _SC_LEVEL3_CACHE_SIZE
    l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    return l3 > 0 ? (size_t)l3 : (size_t)32 << 20;
}

void m4bench_fill(const m4_weight *w, uint64_t seed, int norm) {
    const size_t n = (size_t)(w->rows * w->cols);
    uint8_t *data = (uint8_t *)w->data;
    if (w->dtype == M4_DTYPE_F8_E4M3) {
#pragma omp parallel for schedule(static) num_threads(m4bench_all_threads())
        for (int64_t i = 0; i < (int64_t)((n + 7) / 8); i++) {
            uint64_t r = m4bench_mix(seed + (uint64_t)i);
            for (int b = 0; b < 8 && (size_t)i * 8 + b < n; b++) {
                unsigned x = (unsigned)(r >> (8 * b)) & 0xFFu;
                data[i * 8 + b] = (uint8_t)((x & 0x87u) | ((4u + ((x >> 3) & 3u)) << 3));
            }
        }
    } else { /* BF16 */
        uint16_t *h = (uint16_t *)(void *)data;
#pragma omp parallel for schedule(static) num_threads(m4bench_all_threads())
        for (int64_t i = 0; i < (int64_t)((n + 3) / 4); i++) {
            uint64_t r = m4bench_mix(seed + (uint64_t)i);
            for (int b = 0; b < 4 && (size_t)i * 4 + b < n; b++) {
                unsigned x = (unsigned)(r >> (16 * b)) & 0xFFFFu;
                h[i * 4 + b] = norm ? (uint16_t)(0x3F80u | (x & 7u))
                                    : (uint16_t)((x & 0x807Fu) | ((118u + ((x >> 7) & 3u)) << 7));
            }
        }
    }
}

void m4bench_fill_floats(float *x, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(m4bench_mix((uint64_t)i ^ seed) >> 40) / (float)(1 << 23) - 1.0f;
}
