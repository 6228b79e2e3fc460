#!/usr/bin/env python3
"""The interleaved timing of scripts/peer-llama-cpp: the reference (`mistral4 bench --backend
ref`) and llama.cpp (`llama-bench`) decoding on the same synthetic one-layer checkpoint.

For each variant (bf16: our bf16/ against the bf16 GGUF; fp8: our fp8/ against the q8_0 GGUF;
fp8-bf16-head: our fp8/ against q8_0 with a bf16 lm_head, as the published FP8 checkpoint keeps
it; one variant at a time, so that its two models stay in the page cache), each round and each thread
count it runs ours, then llama.cpp, one after the other. Ours: prompt 1,
--gen GEN+1 (GEN decode steps, cache 1 … GEN), one warm-up run, median ms/token of the timed run;
llama.cpp: `-p 0 -n GEN` (GEN tokens from an empty cache, after its own warm-up). Each row of the
result is the median over the rounds; GB/s is the weights one decode step reads (each
implementation's own bytes: every matrix once, K of E routed experts, one embedding row) over the
median time. ratio_to_peer = our ms/token / llama.cpp's (below 1: ours faster); peer_speed_pct =
100 / ratio_to_peer. The 1-minute load average before every run is kept with it; --wait-quiet L
first waits for it to drop below L before each run on two or more threads.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

SAFETENSORS_SIZE = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1}


def safetensors_read_bytes(folder, experts_read):
    """Bytes of weights one decode step reads from a checkpoint folder (its model.safetensors)."""
    config = json.loads((folder / "config.json").read_text())
    E, K = config["n_routed_experts"], config["num_experts_per_tok"]
    with open(folder / "model.safetensors", "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    total = 0.0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        n = SAFETENSORS_SIZE[t["dtype"]]
        for s in t["shape"]:
            n *= s
        if name.endswith("embed_tokens.weight"):
            n /= t["shape"][0]                                       # one row
        elif ".mlp.experts." in name:
            n *= experts_read(K, E)
        total += n
    return total


def gguf_read_bytes(path, src, experts_read):
    """The same for a GGUF file (gguf-py from the llama.cpp source)."""
    sys.path.insert(0, str(Path(src) / "gguf-py"))
    import gguf
    r = gguf.GGUFReader(path)
    field = next(f for k, f in r.fields.items() if k.endswith(".expert_count"))
    used = next(f for k, f in r.fields.items() if k.endswith(".expert_used_count"))
    E, K = int(field.parts[-1][0]), int(used.parts[-1][0])
    total = 0.0
    for t in r.tensors:
        n = float(t.n_bytes)
        if t.name == "token_embd.weight":
            n /= int(t.shape[-1])                                     # one row (ne1 = rows)
        elif "_exps." in t.name:
            n *= experts_read(K, E)
        total += n
    return total, {"experts": E, "experts_per_token": K,
                   "types": sorted({t.tensor_type.name for t in r.tensors})}


def load1():
    return os.getloadavg()[0]


def wait_quiet(limit, threads):
    """Waits (at most 2 min) for the 1-minute load average to drop below `limit` when a run uses
    more than one thread (two threads on a 2-core machine share it with everyone else)."""
    if limit <= 0 or threads < 2:
        return
    for _ in range(24):
        if load1() < limit:
            return
        time.sleep(5)


def run_ours(mistral4, model, threads, gen):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    p = subprocess.run([mistral4, "bench", "--model", str(model), "--backend", "ref", "--prompt", "1",
                        "--gen", str(gen + 1), "--repeat", "1", "--warmup", "1", "--json"],
                       env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"run_peer: mistral4 bench failed:\n{p.stderr}")
    row = json.loads(p.stdout)["rows"][0]
    return row["ms_per_token"], row["decode_steps"]


def run_llama(llama_bench, gguf_path, threads, gen):
    p = subprocess.run([llama_bench, "-m", str(gguf_path), "-p", "0", "-n", str(gen), "-t", str(threads),
                        "-r", "1", "-o", "json"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"run_peer: llama-bench failed:\n{p.stderr[-3000:]}")
    rows = json.loads(p.stdout)
    return 1e3 / rows[0]["avg_ts"], rows[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mistral4", required=True)
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--llama-src", required=True)
    ap.add_argument("--llama-version", required=True)
    ap.add_argument("--models", required=True, type=Path)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--variants", default="bf16,fp8,fp8-bf16-head")
    ap.add_argument("--baseline-mistral4", metavar="BIN",
                    help="also time this (older) mistral4 binary, as rows ref-baseline/… (before and after in one run)")
    ap.add_argument("--baseline-label", metavar="TEXT", help="what the baseline binary is, for the result and chart")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="L",
                    help="before each run on 2+ threads, wait (at most 2 min) for the 1-minute load average < L")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    # variant: (our checkpoint folder, llama.cpp's GGUF). fp8-bf16-head: the same fp8/ against q8_0
    # with llama.cpp's output matrix kept bf16, as the published FP8 checkpoint keeps its lm_head
    # (the same bytes per token on both sides); fp8: against llama.cpp's own q8_0, lm_head included.
    variants = {"bf16": ("bf16", "model-bf16.gguf"), "fp8": ("fp8", "model-q8_0.gguf"),
                "fp8-bf16-head": ("fp8", "model-q8_0-bf16-head.gguf")}
    chosen = [v for v in args.variants.split(",")]

    def experts_read(K, E):
        return K / E

    ours_bytes = {v: safetensors_read_bytes(args.models / variants[v][0], experts_read) for v in chosen}
    peer_bytes, peer_info = {}, {}
    for v in chosen:
        peer_bytes[v], peer_info[v] = gguf_read_bytes(args.models / variants[v][1], args.llama_src, experts_read)

    samples = {}      # (impl, variant, threads) -> [(ms, load)]
    llama_meta = None
    start_load = os.getloadavg()
    def timed(impl, label, rnd, v, t, run):
        """One interleaved run: waits for quiet if asked, records (ms/token, 1-min load) and says so."""
        wait_quiet(args.wait_quiet, t)
        l0 = load1()
        ms, extra = run()
        samples.setdefault((impl, v, t), []).append((ms, l0))
        print(f"run_peer: round {rnd + 1} threads {t} {v}: {label} {ms:.1f} ms/token (load {l0:.2f})",
              file=sys.stderr, flush=True)
        return extra

    for v in chosen:               # one variant at a time: its two models stay in the page cache
        ours_dir, gguf = args.models / variants[v][0], args.models / variants[v][1]
        for rnd in range(args.rounds):
            for t in threads:
                timed("ref", "ours", rnd, v, t, lambda: run_ours(args.mistral4, ours_dir, t, args.gen))
                if args.baseline_mistral4:
                    timed("ref-baseline", "baseline", rnd, v, t,
                          lambda: run_ours(args.baseline_mistral4, ours_dir, t, args.gen))
                llama_meta = timed("llama.cpp", "llama.cpp", rnd, v, t,
                                   lambda: run_llama(args.llama_bench, gguf, t, args.gen))

    rows = []
    for t in threads:
        for v in chosen:
            med = {}
            for impl in ["llama.cpp", "ref"] + (["ref-baseline"] if args.baseline_mistral4 else []):
                runs = samples[(impl, v, t)]
                ms = statistics.median(m for m, _ in runs)
                med[impl] = ms
                ours = impl != "llama.cpp"
                nbytes = ours_bytes[v] if ours else peer_bytes[v]
                weights = variants[v][0] if ours else variants[v][1].removeprefix("model-").removesuffix(".gguf")
                row = {"name": f"{impl}/decode/{v}/threads:{t}", "impl": impl, "variant": v,
                       "weights": weights, "threads": t, "ms_per_token": ms,
                       "tokens_per_second": 1e3 / ms, "weight_bytes_per_token": nbytes,
                       "GB_per_s": nbytes / (ms * 1e-3) / 1e9,
                       "runs_ms_per_token": [m for m, _ in runs], "runs_load1": [l for _, l in runs]}
                if ours:
                    row["ratio_to_peer"] = ms / med["llama.cpp"]
                    row["peer_speed_pct"] = 100.0 * med["llama.cpp"] / ms
                rows.append(row)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    result = {
        "schema": "mistral4-peer-bench/1",
        "context": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host_name": platform.node(), "cpu": cpu, "num_cpus": os.cpu_count(),
            "m4_commit": commit, "model": str(args.models), "gen": args.gen, "rounds": args.rounds,
            "peer": {"name": "llama.cpp", "version": args.llama_version, "gguf": peer_info,
                     "build": "GGML_NATIVE=ON GGML_OPENMP=ON Release, CPU only",
                     "build_info": {k: llama_meta.get(k) for k in ("build_commit", "build_number", "cpu_info",
                                                                    "backends", "type_k", "flash_attn", "n_batch")}},
            "baseline": args.baseline_label or args.baseline_mistral4,
            "ours": "mistral4 bench --backend ref --prompt 1 --gen GEN+1 --repeat 1 --warmup 1 (OMP_NUM_THREADS)",
            "theirs": "llama-bench -p 0 -n GEN -t THREADS -r 1 (its own warm-up)",
            "interleaving": "for variant, for round, for threads: ours then llama.cpp; rows are medians over rounds",
            "wait_quiet": args.wait_quiet, "load_avg_start": list(start_load), "load_avg_end": list(os.getloadavg()),
            "ratio": "ratio_to_peer = our ms/token / llama.cpp's (same variant and threads; below 1: ours faster); "
                     "peer_speed_pct = our speed as a percentage of llama.cpp's",
        },
        "benchmarks": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'row':34} {'ms/token':>9} {'GB/s':>6} {'ratio':>6}")
    for r in rows:
        print(f"{r['name']:34} {r['ms_per_token']:9.1f} {r['GB_per_s']:6.2f} "
              f"{r.get('ratio_to_peer', float('nan')):6.2f}")


if __name__ == "__main__":
    main()
