/* bench_memory.c — the CPU's measured memory-bandwidth ceilings, against which the reference's
 * weight streaming is reported (docs/ARCHITECTURE.md, "Performance reporting").
 *
 *   memory/read/threads:N   sum of a 1 GiB uint64 buffer (well beyond any cache) with 16
 *                           independent accumulators, so the loop is bound by loads, not by the
 *                           add chain. bytes = buffer size. Publishes ceiling "cpu_read/threads:N".
 *   memory/copy/threads:N   memcpy of a 512 MiB buffer into another. bytes = 2 × size (read +
 *                           write, STREAM's convention; glibc's large memcpy uses non-temporal
 *                           stores, so there is no write-allocate read to count).
 *                           Publishes "cpu_copy/threads:N".
 *
 *   memory/read_llc/threads:N  the same sum over half the last-level cache (16 MiB of a 32 MiB
 *                           L3): what "streaming" reaches when the data is cache-resident — not a
 *                           DRAM ceiling, but it tells which of the two a figure is near.
 *                           Publishes "cpu_read_llc/threads:N".
 *
 * N = 1 and N = every processor (OpenMP; each thread takes one contiguous slice). Under
 * --m4_smoke the buffers are 8 MiB (read) and 2 × 4 MiB (copy): cache-resident, so the
 * figures mean nothing — the smoke run only proves the harness works. Buffers live in a fixture
 * each, are 2 MiB aligned with huge-page advice, and are written once in setup (an untouched
 * buffer would read the shared zero page, from cache). */
#include <stdio.h>
#include <string.h>

#include "bench_common.h"
#include "m4bench.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define READ_BYTES ((size_t)1 << 30)
#define COPY_BYTES ((size_t)512 << 20)
#define SMOKE_READ_BYTES ((size_t)8 << 20)
#define SMOKE_COPY_BYTES ((size_t)4 << 20)
#define LANES 16

typedef enum { K_READ, K_COPY, K_READ_LLC, K_COUNT } kind;
static const char *const kind_names[K_COUNT] = {"read", "copy", "read_llc"};

typedef struct {
    kind k;
    size_t bytes;        /* per buffer */
    uint64_t *src, *dst; /* dst: copy only */
} buffers;

typedef struct {
    buffers *buf;
    int threads;
} mem_case;

/* The program's cases and fixtures (static storage: m4bench keeps pointers to them). */
static buffers bufs[K_COUNT] = {{.k = K_READ}, {.k = K_COPY}, {.k = K_READ_LLC}};
static mem_case cases[K_COUNT][2];  /* [kind][1 thread, all] */

static size_t buffer_bytes(kind k) {
    if (m4bench_smoke()) return k == K_COPY ? SMOKE_COPY_BYTES : SMOKE_READ_BYTES;
    return k == K_READ ? READ_BYTES : k == K_COPY ? COPY_BYTES : m4bench_llc_bytes() / 2;
}

static int buffers_setup(void *user, char *err, size_t errsize) {
    buffers *b = user;
    const int copy = b->k == K_COPY;
    b->bytes = buffer_bytes(b->k);
    b->src = m4bench_alloc(b->bytes);
    b->dst = copy ? m4bench_alloc(b->bytes) : NULL;
    if (!b->src || (copy && !b->dst)) {
        m4bench_free(b->src), m4bench_free(b->dst);
        b->src = b->dst = NULL;
        snprintf(err, errsize, "out of memory for %zu MiB", (copy ? 2 : 1) * b->bytes >> 20);
        return -1;
    }
    const int64_t words = (int64_t)(b->bytes / sizeof(uint64_t));
#pragma omp parallel for schedule(static) num_threads(m4bench_all_threads())
    for (int64_t i = 0; i < words; i++) b->src[i] = (uint64_t)i;
    if (b->dst) memset(b->dst, 0, b->bytes);
    return 0;
}

static void buffers_teardown(void *user) {
    buffers *b = user;
    m4bench_free(b->src), m4bench_free(b->dst);
    b->src = b->dst = NULL;
}

static const m4bench_fixture fixtures[K_COUNT] = {
    {"memory read buffer", buffers_setup, buffers_teardown, &bufs[K_READ]},
    {"memory copy buffers", buffers_setup, buffers_teardown, &bufs[K_COPY]},
    {"memory cache-resident read buffer", buffers_setup, buffers_teardown, &bufs[K_READ_LLC]},
};

/* Σ a[i] over n words with LANES independent partial sums (vectorises; never add-latency bound). */
static uint64_t sum_words(const uint64_t *a, size_t n) {
    uint64_t acc[LANES] = {0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) acc[k] += a[i + k];
    for (; i < n; i++) acc[0] += a[i];
    uint64_t s = 0;
    for (int k = 0; k < LANES; k++) s += acc[k];
    return s;
}

/* Thread t of nt gets words [n·t/nt, n·(t+1)/nt). */
static size_t slice(size_t n, int t, int nt) { return (size_t)((unsigned __int128)n * (unsigned)t / (unsigned)nt); }

static int run_read(void *user, int64_t iteration, char *err, size_t errsize) {
    const mem_case *c = user;
    const size_t n = c->buf->bytes / sizeof(uint64_t);
    uint64_t total = 0;
    if (c->threads == 1) {
        total = sum_words(c->buf->src, n);
    } else {
#pragma omp parallel num_threads(c->threads) reduction(+ : total)
        {
#ifdef _OPENMP
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
            int t = 0, nt = 1;
#endif
            size_t lo = slice(n, t, nt), hi = slice(n, t + 1, nt);
            total += sum_words(c->buf->src + lo, hi - lo);
        }
    }
    m4bench_keep(&total);
    return 0;
}

static int run_copy(void *user, int64_t iteration, char *err, size_t errsize) {
    const mem_case *c = user;
    const size_t n = c->buf->bytes / sizeof(uint64_t);
    if (c->threads == 1) {
        memcpy(c->buf->dst, c->buf->src, c->buf->bytes);
    } else {
#pragma omp parallel num_threads(c->threads)
        {
#ifdef _OPENMP
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
            int t = 0, nt = 1;
#endif
            size_t lo = slice(n, t, nt), hi = slice(n, t + 1, nt);
            memcpy(c->buf->dst + lo, c->buf->src + lo, (hi - lo) * sizeof(uint64_t));
        }
    }
    m4bench_keep(c->buf->dst);
    return 0;
}

void m4bench_suite_memory(void) {
    const int all = m4bench_all_threads();
    const int thread_counts[2] = {1, all};
    char value[32];
    snprintf(value, sizeof value, "%d", all);
    m4bench_context("m4_openmp_threads", value);
    for (int k = 0; k < K_COUNT; k++) {
        const size_t bytes = buffer_bytes((kind)k);
        for (int v = 0; v < (all > 1 ? 2 : 1); v++) {
            mem_case *c = &cases[k][v];
            *c = (mem_case){&bufs[k], thread_counts[v]};
            char name[64], ceiling[64], label[128];
            snprintf(name, sizeof name, "memory/%s/threads:%d", kind_names[k], c->threads);
            snprintf(ceiling, sizeof ceiling, "cpu_%s/threads:%d", kind_names[k], c->threads);
            snprintf(label, sizeof label, k == K_COPY ? "memcpy %zu MiB, bytes = read + write"
                                                      : "uint64 sum of %zu MiB, 16 accumulators",
                     bytes >> 20);
            m4bench_register(&(m4bench_case){
                .name = name,
                .fixture = &fixtures[k],
                .run = k == K_COPY ? run_copy : run_read,
                .user = c,
                .bytes = (double)(k == K_COPY ? 2 * bytes : bytes),
                .label = label,
                .measures_ceiling = ceiling,
            });
        }
    }
}
