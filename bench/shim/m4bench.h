/* m4bench.h — a small C interface to Google Benchmark, so benchmark files stay C11.
 *
 * A benchmark file registers cases from its suite function (listed in M4BENCH_SUITES below;
 * main() in m4bench.cc calls each one — no static-initialiser tricks in C):
 *
 *     static int run_read(void *user, int64_t iteration, char *err, size_t errsize) { ... }
 *     void m4bench_suite_memory(void) {
 *         m4bench_register(&(m4bench_case){
 *             .name = "memory/read/threads:1", .fixture = &read_buffer,
 *             .run = run_read, .user = &one_thread,
 *             .bytes = 1 << 30, .label = "uint64 sum, 16 accumulators",
 *             .measures_ceiling = "cpu_read/threads:1"});
 *     }
 *
 * What a case reports (Google Benchmark's JSON and console output, names unchanged):
 *   - real (wall-clock) time per iteration — every case runs UseRealTime(), because OpenMP
 *     threads do the work and the main thread's CPU time would not measure them; Google Benchmark
 *     therefore appends "/real_time" to every name;
 *   - bytes_per_second = .bytes × iterations / time (SetBytesProcessed);
 *   - "FLOP/s" = .flops per iteration as a kIsIterationInvariantRate counter (when .flops > 0);
 *   - "bytes" and "flops": the per-iteration work itself, as plain counters;
 *   - "pct_of_ceiling": achieved bytes/s as a percentage of the ceiling named .ceiling, when a case
 *     with that .measures_ceiling ran earlier in the same process (run the ceilings first: they
 *     are registered first). The ceiling case itself reports its GB/s as "ceiling_GB/s";
 *   - "pct_of_flops_ceiling": the same for FLOP/s against the compute ceiling named
 *     .flops_ceiling, published by a case with .measures_flops_ceiling (which reports its own
 *     rate as "ceiling_GFLOP/s");
 *   - "others_cpu_pct": the share of the machine's CPU time that OTHER processes (and hypervisor
 *     steal) used during the timed loop, from /proc/stat minus getrusage — on a shared machine a
 *     figure is only trustworthy when this is near 0;
 *   - "quiet_wait_s": seconds spent before the timed loop waiting for the machine to be quiet
 *     (only with M4BENCH_QUIET_PCT=P in the environment: wait, at most M4BENCH_QUIET_MAX_S = 120
 *     s, until other processes use under P % of the CPUs; scripts/bench --wait-quiet sets it);
 *   - the label: .label, then whatever m4bench_label() added during the run.
 * Console rates print in binary units (bytes_per_second=15.6G/s is GiB/s); the JSON holds
 * plain bytes/s, and ceiling_GB/s is decimal GB/s.
 *
 * Lifetimes. A fixture is expensive shared state (a 1 GiB buffer, a layer of weights): it is set
 * up right before the first timed run of a case that names it and torn down as soon as a case
 * with another fixture (or none) runs, and at exit — so at most one fixture is alive at a time
 * and cases sharing a fixture should be registered together. A case's own setup/teardown run
 * around each of Google Benchmark's timed runs (it makes several while it finds the iteration
 * count): keep them cheap (set the thread count, point at inputs). Nothing is set up for a case
 * that --benchmark_filter leaves out.
 *
 * Flags: Google Benchmark's own (--benchmark_filter, --benchmark_format=json, --benchmark_out=…,
 * --benchmark_min_time=<seconds> in 1.7.1, --benchmark_list_tests …) pass through unchanged.
 * The shim adds --m4_smoke (or M4BENCH_SMOKE=1 in the environment): suites shrink their
 * problem sizes (m4bench_smoke()) so that a CTest smoke run takes well under a second.
 * The run's context (JSON "context", beside Google Benchmark's host_name, num_cpus, caches …)
 * gains m4_commit (git describe at configure time, "-dirty" with uncommitted changes), m4_cpu
 * (model name from /proc/cpuinfo), m4_cores, m4_mem_total, m4_compiler, m4_build_type and
 * m4_smoke; suites add their own with m4bench_context() (m4_openmp_threads,
 * m4_reference_config, m4_prefill_tokens, m4_vision_patches); scripts/bench adds
 * m4_loadavg_before/after, and bench/merge_baseline.py m4_hf_baseline. */
#ifndef M4BENCH_H
#define M4BENCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Shared, expensive state of several cases. Returns 0, or nonzero with a message in err, in
 * which case every case using it reports that message as its error and does not run. */
typedef struct {
    const char *name;                                      /* for messages */
    int (*setup)(void *user, char *err, size_t errsize);
    void (*teardown)(void *user);                          /* after a successful setup only */
    void *user;
} m4bench_fixture;

typedef struct {
    const char *name;              /* the component's dotted name + variant, e.g.
                                    * "ref/text.layers.0.self_attn/decode/fp8/threads:1" (copied) */
    const m4bench_fixture *fixture;/* NULL: none; must outlive the run (static storage) */
    int (*setup)(void *user, char *err, size_t errsize); /* before each timed run; may be NULL */
    int (*run)(void *user, int64_t iteration, char *err, size_t errsize);  /* one iteration; 0 = ok */
    void (*teardown)(void *user);  /* after each timed run whose setup succeeded; may be NULL */
    void *user;                    /* passed to setup/run/teardown; must outlive the run */
    double bytes;                  /* bytes moved per iteration (documented by the case) */
    double flops;                  /* floating-point operations per iteration; 0 = not reported */
    const char *label;             /* free-form: which path ran, dtype, … (copied; may be NULL) */
    const char *measures_ceiling;  /* this case's bytes/s is the named ceiling (copied; may be NULL) */
    const char *ceiling;           /* report pct_of_ceiling against this ceiling (copied; may be NULL) */
    const char *measures_flops_ceiling; /* this case's FLOP/s is the named compute ceiling (copied; may be NULL) */
    const char *flops_ceiling;     /* report pct_of_flops_ceiling against it (copied; may be NULL) */
} m4bench_case;

/* Adds a case (copied, strings included; fixture and user must outlive the run). Call from a
 * suite function. */
void m4bench_register(const m4bench_case *c);

/* Nonzero under --m4_smoke / M4BENCH_SMOKE=1: use small problem sizes. */
int m4bench_smoke(void);

/* Appends free-form text to the current case's label (call from setup or run). */
void m4bench_label(const char *text);

/* Adds a key/value pair to the run's context (call from a suite function, before the run). */
void m4bench_context(const char *key, const char *value);

/* Keeps the compiler from deleting a computation whose result is otherwise unused, and forces
 * the memory it points at to be considered read/written (benchmark::DoNotOptimize +
 * ClobberMemory). */
void m4bench_keep(const void *p);

/* The benchmark files' suite functions, in the order main() calls them (which is the order the
 * cases run in: the memory and compute ceilings first). A new benchmark file adds one X(...) here. */
#define M4BENCH_SUITES(X) X(memory) X(compute) X(reference) X(vision)

#define M4BENCH_DECLARE_SUITE(name) void m4bench_suite_##name(void);
M4BENCH_SUITES(M4BENCH_DECLARE_SUITE)
#undef M4BENCH_DECLARE_SUITE

#ifdef __cplusplus
}
#endif

#endif
