#!/usr/bin/env python3
"""Tests of scripts/bench-compare and scripts/plot-bench on small crafted result files
(tests/fixtures/bench/a.json, b.json; peer.json for the peer chart), run by CTest (tests/bench_scripts.cmake):

    python3 tests/bench_scripts_test.py compare   # bench-compare: the table, and its errors
    python3 tests/bench_scripts_test.py plot      # plot-bench: a PNG; exit 77 (skipped) without matplotlib

Prints 'N passed, N failed' and exits non-zero on any failure. Standard library only.
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "bench"
COMPARE = ROOT / "scripts" / "bench-compare"
PLOT = ROOT / "scripts" / "plot-bench"
passed, failed = 0, 0


def run(script, *args):
    p = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def check(what, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}\n{detail}")


def line_of(out, name):
    return next((l for l in out.splitlines() if l.startswith(name + " ")), "")


def test_compare(tmp):
    rc, out, err = run(COMPARE, FIX / "a.json", FIX / "b.json")
    shown = f"--- stdout ---\n{out}\n--- stderr ---\n{err}"
    check("compare: exit 0", rc == 0, shown)
    attn = line_of(out, "ref/text.layers.0.self_attn/decode/fp8/threads:2")
    # A's median aggregate (12 ms, not the 10/14 ms repetitions) against B's 6000 us
    check("compare: median aggregate used, units normalised, B/A = 0.5",
          "12.000 ms" in attn and "6.000 ms" in attn and " 0.500 " in attn and " 2.000 " in attn, shown)
    check("compare: pct_of_ceiling A→B", "8.7→ 17.4" in attn, shown)
    experts = line_of(out, "ref/text.layers.0.mlp.experts/prefill:128/bf16/threads:2")
    check("compare: seconds and ns, B/A = 2", "2.000 s" in experts and "4.000 s" in experts and " 2.000 " in experts,
          shown)
    check("compare: an error row is reported", "error: fixture lm_head: out of memory" in out, shown)
    check("compare: rows only in one file are listed",
          "only in A: compute/fp32_fma/threads:2, ref/only_in_a/decode/fp8/threads:2" in out
          and "only in B: ref/only_in_b/decode/fp8/threads:2" in out, shown)
    check("compare: geometric mean", "3 benchmarks; geometric mean of B/A time: 1.000" in out, shown)
    check("compare: the stddev aggregate is not a row", "stddev" not in out, shown)

    rc, out, err = run(COMPARE, FIX / "a.json", FIX / "b.json", "--filter", "self_attn")
    check("compare --filter", rc == 0 and "self_attn" in out and "experts" not in out, out + err)

    # GPU results: an m4_gpu_bench file against a gpu-check result file holding one; A spells the
    # layer the old way ("layers.N"), B with its index, as the report does: the rows still match
    rc, out, err = run(COMPARE, FIX / "gpu-a.json", FIX / "gpu-b.json")
    shown = f"--- stdout ---\n{out}\n--- stderr ---\n{err}"
    experts = line_of(out, "cuda-bf16/text.layers.0.mlp.experts/decode:1")
    check("compare gpu: exit 0, commits and devices named", rc == 0 and "(aaaaaaa, Crafted GPU" in out
          and "(bbbbbbb, Crafted GPU" in out, shown)
    check("compare gpu: ms → B/A 0.5, GB/s and FLOP/s ×2, % of ceiling",
          "200.000 us" in experts and "100.000 us" in experts and " 0.500 " in experts and " 2.000 " in experts
          and "25.0→ 50.0" in experts, shown)
    check("compare gpu: rows only in A listed", "only in A: cuda-bf16/only_in_a" in out, shown)

    # errors: each names the file and what is wrong, exit 2
    bad_json = tmp / "bad.json"
    bad_json.write_text("{ not json")
    no_list = tmp / "nolist.json"
    no_list.write_text(json.dumps({"context": {}, "rows": []}))
    no_time = tmp / "notime.json"
    no_time.write_text(json.dumps({"benchmarks": [{"name": "x/real_time", "run_type": "iteration"}]}))
    bad_unit = tmp / "badunit.json"
    bad_unit.write_text(json.dumps({"benchmarks": [{"name": "x", "real_time": 1, "time_unit": "fortnight"}]}))
    empty = tmp / "empty.json"
    empty.write_text(json.dumps({"benchmarks": []}))
    gpu_no_bench = tmp / "gpu_no_bench.json"
    gpu_no_bench.write_text(json.dumps({"schema": "mistral4-gpu-check/1", "passed": False}))
    gpu_bad_row = tmp / "gpu_bad_row.json"
    gpu_bad_row.write_text(json.dumps({"schema": "mistral4-gpu-bench/1", "rows": [{"name": "x", "ms": "fast"}]}))
    cases = [
        (tmp / "missing.json", "no such file"),
        (bad_json, "not valid JSON"),
        (no_list, "not a benchmark result"),
        (no_time, "has no \"real_time\""),
        (bad_unit, "unknown time_unit"),
        (empty, "holds no benchmark rows"),
        (gpu_no_bench, "a GPU result without benchmark rows"),
        (gpu_bad_row, "rows[0] has no \"name\" and numeric \"ms\""),
        (tmp, "is a directory"),
    ]
    for path, message in cases:
        rc, out, err = run(COMPARE, FIX / "a.json", path)
        check(f"compare error: {message}", rc == 2 and message in err and str(path) in err,
              f"rc={rc}\n--- stderr ---\n{err}")
    disjoint = tmp / "disjoint.json"
    disjoint.write_text(json.dumps({"benchmarks": [{"name": "nothing/in/common", "real_time": 1.0}]}))
    rc, out, err = run(COMPARE, FIX / "a.json", disjoint)
    check("compare: no common benchmark → exit 1", rc == 1 and "share no benchmark" in err, err)


def test_plot(tmp):
    if importlib.util.find_spec("matplotlib") is None:
        rc, out, err = run(PLOT, FIX / "a.json", "-o", tmp / "x.png")
        check("plot without matplotlib: exit 3 with the install hint", rc == 3 and "matplotlib" in err, err)
        print(f"{passed} passed, {failed} failed, 1 skipped (matplotlib is not installed)")
        sys.exit(77 if failed == 0 else 1)
    png = tmp / "roofline.png"
    rc, out, err = run(PLOT, FIX / "a.json", "-o", png)
    check("plot: exit 0", rc == 0, out + err)
    check("plot: a PNG", png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", out + err)
    check("plot: counts the component rows", "3 benchmarks" in out, out)
    rc, out, err = run(PLOT, tmp / "missing.json", "-o", tmp / "y.png")
    check("plot: missing file → exit 2", rc == 2 and "no such file" in err, err)
    nothing = tmp / "nothing.json"
    nothing.write_text(json.dumps({"benchmarks": [{"name": "memory/read/threads:1/real_time", "real_time": 1.0}]}))
    rc, out, err = run(PLOT, nothing, "-o", tmp / "z.png")
    check("plot: nothing to plot → exit 2", rc == 2 and "no component benchmark" in err, err)
    peer_png = tmp / "peer.png"
    rc, out, err = run(PLOT, FIX / "peer.json", "-o", peer_png)
    check("plot peer result: exit 0, a PNG", rc == 0 and peer_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", out + err)
    check("plot peer result: counts its rows", "4 peer rows" in out, out)


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "compare"
    with tempfile.TemporaryDirectory() as d:
        {"compare": test_compare, "plot": test_plot}[what](Path(d))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
