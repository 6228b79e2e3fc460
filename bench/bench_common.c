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
