// m4bench.cc — the project's only C++: runs the C cases of m4bench.h under Google Benchmark.
//
// Each registered case becomes one benchmark::RegisterBenchmark with UseRealTime(); its body
// brings the case's fixture alive (tearing down the previous one), runs the case's setup, the
// timed loop calling run(), then teardown, and fills the counters described in m4bench.h.
// main() strips the shim's own flag (--m4_smoke), hands every other flag to Google Benchmark
// unchanged, calls the suites, adds the run's context and runs.
#include "m4bench.h"

#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#ifndef M4BENCH_COMMIT
#define M4BENCH_COMMIT "unknown"
#endif
#ifndef M4BENCH_BUILD_TYPE
#define M4BENCH_BUILD_TYPE "unknown"
#endif

namespace {

struct Entry {
    m4bench_case c;                          // its string pointers are cleared: use the copies
    std::string name, label, measures_ceiling, ceiling, measures_flops_ceiling, flops_ceiling;
};

// The program's state (this file is main's: the house rule on global state is for libraries).
struct Shim {
    std::vector<Entry *> entries;
    const m4bench_fixture *live = nullptr;    // the fixture alive now
    bool live_ok = false;
    std::string live_error;
    std::map<std::string, double> ceilings;   // name → bytes/s measured in this process
    std::map<std::string, double> flops_ceilings; // name → FLOP/s measured in this process
    std::string run_label;                    // m4bench_label() text of the current run
    bool smoke = false;
};
Shim shim;

void kill_fixture() {
    if (shim.live && shim.live_ok && shim.live->teardown) shim.live->teardown(shim.live->user);
    shim.live = nullptr;
    shim.live_ok = false;
    shim.live_error.clear();
}

// Brings `f` alive (f may be NULL: nothing alive). Returns false with shim.live_error set when
// its setup failed; a failed fixture is not retried by the cases after it.
bool use_fixture(const m4bench_fixture *f) {
    if (f == shim.live) return f == nullptr || shim.live_ok;
    kill_fixture();
    if (!f) return true;
    shim.live = f;
    char err[512] = "";
    shim.live_ok = !f->setup || f->setup(f->user, err, sizeof err) == 0;
    if (!shim.live_ok)
        shim.live_error = std::string("fixture ") + (f->name ? f->name : "?") + ": " +
                          (err[0] ? err : "setup failed");
    return shim.live_ok;
}

// CPU seconds the whole machine has been busy (/proc/stat: user nice system irq softirq steal),
// and this process's own (getrusage). Their difference over a run is what others used.
double machine_busy_seconds() {
    std::ifstream in("/proc/stat");
    std::string cpu;
    unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    if (!(in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal) || cpu != "cpu")
        return -1;
    return static_cast<double>(user + nice + system + irq + softirq + steal) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double own_cpu_seconds() {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

// With M4BENCH_QUIET_PCT=P in the environment (scripts/bench --wait-quiet sets it), waits before a
// timed loop until other processes use less than P % of the machine's CPU time, sampled over
// 0.25 s, for at most M4BENCH_QUIET_MAX_S seconds (default 120). Returns the seconds waited.
// On a shared machine this keeps another process's burst from landing in a measurement; the
// others_cpu_pct counter still says whether one did.
double wait_quiet() {
    static const char *limit_env = std::getenv("M4BENCH_QUIET_PCT");
    if (!limit_env || !*limit_env) return 0;
    const double limit = std::atof(limit_env);
    const char *max_env = std::getenv("M4BENCH_QUIET_MAX_S");
    const double max_wait = max_env && *max_env ? std::atof(max_env) : 120.0;
    const double cpus = static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN));
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
        const double busy0 = machine_busy_seconds(), own0 = own_cpu_seconds();
        usleep(250000);
        const double busy1 = machine_busy_seconds(), own1 = own_cpu_seconds();
        const double others = (busy1 - busy0) - (own1 - own0);
        const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (busy0 < 0 || 100.0 * others / (0.25 * cpus) < limit || waited >= max_wait) return waited - 0.25;
        sleep(1);
    }
}

void run_entry(benchmark::State &state, Entry *e) {
    const m4bench_case &c = e->c;
    if (!use_fixture(c.fixture)) {
        state.SkipWithError(shim.live_error.c_str());
        return;
    }
    char err[512] = "";
    shim.run_label.clear();
    if (c.setup && c.setup(c.user, err, sizeof err) != 0) {
        std::string msg = std::string("setup: ") + (err[0] ? err : "failed");
        state.SkipWithError(msg.c_str());
        return;
    }
    const double waited = wait_quiet();
    int64_t iteration = 0;
    bool failed = false;
    const double busy0 = machine_busy_seconds(), own0 = own_cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : state) {
        if (c.run(c.user, iteration++, err, sizeof err) != 0) {
            failed = true;
            break;
        }
    }
    const auto t1 = std::chrono::steady_clock::now();
    const double busy1 = machine_busy_seconds(), own1 = own_cpu_seconds();
    if (c.teardown) c.teardown(c.user);
    if (failed) {
        std::string msg = std::string("run: ") + (err[0] ? err : "failed");
        state.SkipWithError(msg.c_str());
        return;
    }

    // Counters. bytes_per_second and FLOP/s use Google Benchmark's own (real) time; the ceiling
    // percentage uses the same loop timed here, since the reporter's rate is not visible to us.
    state.SetBytesProcessed(static_cast<int64_t>(c.bytes * static_cast<double>(state.iterations())));
    state.counters["bytes"] = benchmark::Counter(c.bytes);
    if (c.flops > 0) {
        state.counters["flops"] = benchmark::Counter(c.flops);
        state.counters["FLOP/s"] = benchmark::Counter(c.flops, benchmark::Counter::kIsIterationInvariantRate);
    }
    const double seconds = std::chrono::duration<double>(t1 - t0).count();
    // Other processes' (and the hypervisor's steal) share of the machine during the timed loop:
    // a shared CI machine's figures are only as good as this is near 0 (/proc/stat ticks are
    // 10 ms, so short runs read coarse).
    if (busy0 >= 0 && busy1 >= 0 && seconds > 0) {
        double others = (busy1 - busy0) - (own1 - own0);
        double pct = 100.0 * (others > 0 ? others : 0) / (seconds * static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN)));
        state.counters["others_cpu_pct"] = benchmark::Counter(pct);
    }
    if (waited > 0.5) state.counters["quiet_wait_s"] = benchmark::Counter(waited);
    const double rate = seconds > 0 ? c.bytes * static_cast<double>(iteration) / seconds : 0.0;
    if (!e->measures_ceiling.empty()) {
        shim.ceilings[e->measures_ceiling] = rate;
        state.counters["ceiling_GB/s"] = benchmark::Counter(rate / 1e9);
    }
    const double flop_rate = seconds > 0 ? c.flops * static_cast<double>(iteration) / seconds : 0.0;
    if (!e->measures_flops_ceiling.empty()) {
        shim.flops_ceilings[e->measures_flops_ceiling] = flop_rate;
        state.counters["ceiling_GFLOP/s"] = benchmark::Counter(flop_rate / 1e9);
    }
    std::string label = e->label;
    auto percent = [&](const std::map<std::string, double> &known, const std::string &name,
                       double achieved, const char *counter) {
        if (name.empty()) return;
        auto it = known.find(name);
        if (it != known.end() && it->second > 0) {
            state.counters[counter] = benchmark::Counter(100.0 * achieved / it->second);
        } else {
            label += label.empty() ? "" : " ";
            label += "(no " + name + " measured in this run)";
        }
    };
    percent(shim.ceilings, e->ceiling, rate, "pct_of_ceiling");
    if (c.flops > 0) percent(shim.flops_ceilings, e->flops_ceiling, flop_rate, "pct_of_flops_ceiling");
    if (!shim.run_label.empty()) label += (label.empty() ? "" : " ") + shim.run_label;
    if (!label.empty()) state.SetLabel(label);
}

std::string first_line_value(const char *path, const char *key) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        if (line.compare(0, std::strlen(key), key) != 0) continue;
        size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        size_t start = line.find_first_not_of(" \t", colon + 1);
        return start == std::string::npos ? "" : line.substr(start);
    }
    return "unknown";
}

void add_context() {
    benchmark::AddCustomContext("m4_commit", M4BENCH_COMMIT);
    benchmark::AddCustomContext("m4_build_type", M4BENCH_BUILD_TYPE);
    benchmark::AddCustomContext("m4_cpu", first_line_value("/proc/cpuinfo", "model name"));
    benchmark::AddCustomContext("m4_cores", std::to_string(sysconf(_SC_NPROCESSORS_ONLN)));
    benchmark::AddCustomContext("m4_mem_total", first_line_value("/proc/meminfo", "MemTotal"));
#ifdef __VERSION__
    benchmark::AddCustomContext("m4_compiler", __VERSION__);
#endif
    benchmark::AddCustomContext("m4_smoke", shim.smoke ? "1" : "0");
}

}  // namespace

extern "C" void m4bench_register(const m4bench_case *c) {
    // The caller's strings may be temporaries: keep copies.
    Entry *e = new Entry{*c, c->name ? c->name : "unnamed", c->label ? c->label : "",
                         c->measures_ceiling ? c->measures_ceiling : "", c->ceiling ? c->ceiling : "",
                         c->measures_flops_ceiling ? c->measures_flops_ceiling : "",
                         c->flops_ceiling ? c->flops_ceiling : ""};
    e->c.name = e->c.label = e->c.measures_ceiling = e->c.ceiling = nullptr;
    e->c.measures_flops_ceiling = e->c.flops_ceiling = nullptr;
    shim.entries.push_back(e);
    benchmark::RegisterBenchmark(e->name.c_str(), [e](benchmark::State &st) { run_entry(st, e); })
        ->UseRealTime();
}

extern "C" int m4bench_smoke(void) { return shim.smoke; }

extern "C" void m4bench_label(const char *text) {
    if (!text || !*text) return;
    if (!shim.run_label.empty()) shim.run_label += ' ';
    shim.run_label += text;
}

extern "C" void m4bench_keep(const void *p) {
    benchmark::DoNotOptimize(p);
    benchmark::ClobberMemory();
}

extern "C" void m4bench_context(const char *key, const char *value) {
    benchmark::AddCustomContext(key, value);
}

int main(int argc, char **argv) {
    const char *env = std::getenv("M4BENCH_SMOKE");
    shim.smoke = env && *env && std::strcmp(env, "0") != 0;
    int kept = 1;
    for (int i = 1; i < argc; i++) {
        if (std::strcmp(argv[i], "--m4_smoke") == 0) shim.smoke = true;
        else argv[kept++] = argv[i];
    }
    argc = kept;
    argv[argc] = nullptr;

    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
#define M4BENCH_CALL_SUITE(name) m4bench_suite_##name();
    M4BENCH_SUITES(M4BENCH_CALL_SUITE)
#undef M4BENCH_CALL_SUITE
    add_context();
    benchmark::RunSpecifiedBenchmarks();
    kill_fixture();
    benchmark::Shutdown();
    for (Entry *e : shim.entries) delete e;
    return 0;
}
