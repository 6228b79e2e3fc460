#!/usr/bin/env python3
"""Puts a PyTorch/HF baseline into a C benchmark result (bench/merge_baseline.py).

    python3 bench/merge_baseline.py RESULT.json BASELINE.json [-o OUT.json]

RESULT.json is m4_bench's Google Benchmark JSON (scripts/bench), BASELINE.json what
bench/torch_baseline.py wrote. Every C row "ref/<component>/<phase>/<variant>/threads:<n>…" whose
component and phase the baseline timed gains
    hf_name, hf_real_time (ns), hf_dtype, hf_device,
    ratio_to_hf = our real_time / HF's real_time  (below 1: ours is faster)
against the baseline row with the same thread count (a CUDA baseline has none: its one row is
used). The baseline itself is kept whole under the top-level key "hf_baseline" (its context and
rows), and context.m4_hf_baseline summarises it. Both fp8 and bf16 C rows are compared with the
same HF row (HF runs its one dtype, bf16 by default): the label of the match says so.
Writes OUT.json (default: RESULT.json in place) and prints the ratio table. Standard library only.
"""

import argparse
import json
import re
import sys

UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
NAME = re.compile(r"^(?P<impl>[^/]+)/(?P<component>[^/]+)/(?P<phase>[^/]+)/(?P<variant>[^/]+)/"
                  r"(?:threads:(?P<threads>\d+)|cuda)(?:/real_time)?(?:_(?P<agg>\w+))?$")


def load(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"merge_baseline: {what} {path}: {e}")
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        sys.exit(f"merge_baseline: {what} {path}: no \"benchmarks\" list")
    return data


def time_ns(row):
    return float(row["real_time"]) * UNIT_NS.get(row.get("time_unit", "ns"), 1.0)


def main():
    ap = argparse.ArgumentParser(description="Adds ours/HF ratios to a C benchmark result.")
    ap.add_argument("result")
    ap.add_argument("baseline")
    ap.add_argument("-o", "--out")
    args = ap.parse_args()
    result = load(args.result, "result")
    base = load(args.baseline, "baseline")

    hf = {}  # (component, phase) → {threads: row}
    for row in base["benchmarks"]:
        if row.get("error_occurred") or "real_time" not in row:
            continue
        m = NAME.match(row.get("name", ""))
        if not m:
            continue
        threads = int(m["threads"]) if m["threads"] else 0
        hf.setdefault((m["component"], m["phase"]), {})[threads] = row

    matched = []
    for row in result["benchmarks"]:
        for k in ("hf_name", "hf_real_time", "hf_dtype", "hf_device", "ratio_to_hf"):
            row.pop(k, None)
        if row.get("error_occurred") or "real_time" not in row:
            continue
        if row.get("run_type") == "aggregate" and row.get("aggregate_unit", "time") != "time":
            continue
        if row.get("aggregate_name") in ("stddev", "cv"):
            continue
        m = NAME.match(row.get("name", ""))
        if not m or m["impl"] != "ref":
            continue
        rows = hf.get((m["component"], m["phase"]))
        if not rows:
            continue
        threads = int(m["threads"]) if m["threads"] else 0
        h = rows.get(threads) or (rows.get(0) if 0 in rows else None)
        if h is None:
            continue
        ours, theirs = time_ns(row), time_ns(h)
        row.update(hf_name=h["name"], hf_real_time=theirs, hf_dtype=h.get("dtype", "?"),
                   hf_device=h.get("device", "?"), ratio_to_hf=ours / theirs if theirs > 0 else None)
        if row.get("run_type") != "aggregate" or row.get("aggregate_name") == "median":
            matched.append((row["name"], ours, theirs, row["ratio_to_hf"], h.get("dtype", "?")))

    ctx = base.get("context", {})
    result.setdefault("context", {})["m4_hf_baseline"] = {
        "file": args.baseline,
        **{k: ctx.get(k) for k in ("date", "torch", "transformers", "device", "device_name", "dtype",
                                   "torch_threads", "implementation", "text_impl_detail",
                                   "vision_implementation", "load_avg", "timing")},
        "ratio": "ratio_to_hf = our real_time / the HF row's real_time (same component, phase and thread "
                 "count; below 1: ours faster)",
    }
    result["hf_baseline"] = base
    out = args.out or args.result
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")

    if matched:
        width = max(len(n) for n, *_ in matched)
        print(f"{'benchmark':<{width}}  {'ours':>11}  {'HF':>11}  {'ours/HF':>8}")
        for name, ours, theirs, r, dtype in matched:
            print(f"{name:<{width}}  {ours / 1e6:8.3f} ms  {theirs / 1e6:8.3f} ms  {r:8.3f}  (HF {dtype})")
    print(f"merge_baseline: {len(matched)} rows compared; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
