#!/usr/bin/env python3
"""Rehearses scripts/gpu-check on the CPU (no GPU): a fake bundle whose binaries act out a GPU run
(nvidia-smi, compute-sanitizer, mistral4 conform, m4_gpu_bench, two GPU tests) with a planted bug
that only the `grouped` fast path triggers, on one case in bf16. Checks the argument parsing, the
both-ways run, the bisect naming exactly `grouped`, every other path's verdict, the result file's
schema (mistral4-gpu-check/2), the output folder's limits (at most 8 files of at most 16 MiB),
bench-compare on the result, a run cut short by the time budget, and scripts/gpu-bundle --check
on a complete and an incomplete bundle. Standard library only."""
import json
import os
import pathlib
import re
import stat
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
GPU_CHECK = ROOT / "scripts" / "gpu-check"
FAILS = 0

NVIDIA_SMI = """#!/bin/sh
case "$*" in
  -L) echo "GPU 0: Rehearsal GPU (UUID: GPU-0)" ;;
  *name,driver*) echo "Rehearsal GPU, 000.00, 1024 MiB, 1000 MHz" ;;
  *compute_cap*) echo "9.0" ;;
  *name*) echo "Rehearsal GPU" ;;
esac
"""
SANITIZER = """#!/bin/sh
# compute-sanitizer --tool T --error-exitcode N CMD...: runs CMD
shift 4
exec "$@"
"""
# mistral4 conform --case C --backend B --quiet [--report R]: a report; the planted bug fails
# routing_variants on cuda-bf16 whenever `grouped` is on; with the cudnn path on it fails to open, as
# where libcudnn is missing (gpu-check must keep cudnn off when it found no cuDNN)
MISTRAL4 = """#!/usr/bin/env python3
import json, os, sys
a = sys.argv[1:]
case = os.path.basename(a[a.index("--case") + 1]); backend = a[a.index("--backend") + 1]
on = os.environ.get("M4_CUDA_ENABLE", "")
if (on == "all" or "cudnn" in on.split(",")) and "cudnn" not in os.environ.get("M4_CUDA_DISABLE", "").split(","):
    sys.exit("cuda-bf16: the cudnn path is on (M4_CUDA_ENABLE): libcudnn.so.9 cannot be opened")   # as without cuDNN
bug = case == "routing_variants" and backend == "cuda-bf16" and ("grouped" in on.split(",") or on == "all")
row = {"component": "text.layers.0.mlp.experts", "status": "FAIL" if bug else "PASS",
       "rel_l2": 0.5 if bug else 1e-3, "cosine": 0.9 if bug else 1.0}
rep = {"summary": {"passed": 0 if bug else 1, "failed": 1 if bug else 0, "errors": 0}, "results": [row],
       "backend_paths": on or "none"}
if "--report" in a:
    json.dump(rep, open(a[a.index("--report") + 1], "w"))
print(f"rehearsal conform {case} {backend} paths={on or 'defaults'}: {'FAIL' if bug else 'PASS'}")
sys.exit(1 if bug else 0)
"""
BENCH = """#!/usr/bin/env python3
import json, sys
out = sys.argv[sys.argv.index("--out") + 1]
json.dump({"schema": "mistral4-gpu-bench/1", "device": "Rehearsal GPU", "commit": "rehearsal",
           "rows": [{"name": "cuda-bf16/decode/lm_head", "ms": 0.25, "bytes": 1.0e9, "flops": 2.0e9,
                     "GBps": 4000.0, "TFLOPs": 8.0, "pct_of_ceiling": 93.0}]}, open(out, "w"))
"""


def check(what, cond, detail=""):
    global FAILS
    print(f"{'ok  ' if cond else 'FAIL'} {what}")
    if not cond:
        FAILS += 1
        if detail:
            print("     " + detail.replace("\n", "\n     ")[-3000:])


def script(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def fake_bundle(tmp):
    b = tmp / "bundle"
    (b / "bin").mkdir(parents=True)
    (b / "lib").mkdir()
    tools = tmp / "tools"
    tools.mkdir()
    script(tools / "nvidia-smi", NVIDIA_SMI)
    script(tools / "compute-sanitizer", SANITIZER)
    script(b / "bin" / "mistral4", MISTRAL4)
    script(b / "bin" / "m4_gpu_bench", BENCH)
    for t in ("test_gpu_backend", "test_gpu_generate"):
        script(b / "bin" / t, "#!/bin/sh\necho rehearsal test passes\n")
    return b, tools


def gpu_check(tools, *args, env_extra=None):
    env = dict(os.environ, PATH=f"{tools}:{os.environ['PATH']}", M4_CUDNN_LIB_DIR="none", M4_COMMIT="rehearsal")
    env.pop("OUT", None)
    env.update(env_extra or {})
    p = subprocess.run(["bash", str(GPU_CHECK), *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=600)
    return p.returncode, p.stdout, p.stderr


def main():
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        bundle, tools = fake_bundle(tmp)

        rc, out, err = gpu_check(tools, "--frobnicate")
        check("unknown argument: exit 2, named", rc == 2 and "--frobnicate" in err, err)
        rc, out, err = gpu_check(tools, "--help")
        check("--help: exit 0, names the verdicts and the output limits", rc == 0 and "proven" in out and "16 MiB" in out, out)
        rc, out, err = gpu_check(tools, "--prebuilt", tmp / "nowhere")
        check("missing bundle: exit 2, says how to make one", rc == 2 and "scripts/gpu-bundle" in err, err)
        rc, out, err = gpu_check(tools, "--budget", "soon")
        check("bad --budget: exit 2", rc == 2, err)

        outdir = tmp / "out"
        rc, out, err = gpu_check(tools, "--prebuilt", bundle, "--out-dir", outdir)
        check("planted bug: exit 1", rc == 1, out + err)
        files = sorted(outdir.iterdir()) if outdir.exists() else []
        check("at most 8 files, each at most 16 MiB", 0 < len(files) <= 8 and all(f.stat().st_size <= 16 << 20 for f in files),
              str([(f.name, f.stat().st_size) for f in files]))
        results = [f for f in files if f.name.endswith("-Rehearsal-GPU-gpu.json")]
        check("one result file named after the date and GPU", len(results) == 1, str([f.name for f in files]))
        if not results:
            return
        r = json.loads(results[0].read_text())
        check("schema mistral4-gpu-check/2, commit, device, not passed",
              r.get("schema") == "mistral4-gpu-check/2" and r.get("commit") == "rehearsal" and "Rehearsal GPU" in (r.get("device") or "")
              and r.get("passed") is False, json.dumps({k: r.get(k) for k in ("schema", "commit", "device", "passed")}))
        paths = r.get("paths", {})
        table = (ROOT / "optimized" / "paths.c").read_text()
        check("a verdict for every path of optimized/paths.c",
              all(f'"{p}"' in table for p in paths) and len(paths) == len(re.findall(r"^\s+\[M4_PATH_[A-Z0-9_]+\] = \{", table, re.M)),
              str(sorted(paths)))
        check("the bisect names grouped, and only grouped, as failed",
              paths.get("grouped", {}).get("verdict") == "failed" and "routing_variants" in paths["grouped"].get("evidence", "")
              and all(v["verdict"] != "failed" for p, v in paths.items() if p != "grouped"), json.dumps(paths, indent=1))
        check("the other paths proven (each alone passes the failing run), cudnn unrun without libcudnn",
              all(v["verdict"] == "proven" for p, v in paths.items() if p not in ("grouped", "cudnn"))
              and paths.get("cudnn", {}).get("verdict") == "unrun", json.dumps(paths, indent=1))
        runs = r.get("runs", {})
        check("both ways recorded: tests, conformance with rows, sanitizers with every path on",
              set(runs) == {"defaults", "all"} and runs["all"]["tests"].get("test_gpu_generate") == "pass"
              and runs["all"]["conformance"].get("routing_variants-cuda-bf16", {}).get("summary", {}).get("failed") == 1
              and runs["defaults"]["conformance"].get("routing_variants-cuda-bf16", {}).get("summary", {}).get("failed") == 0
              and len(runs["all"]["sanitizer"]) == 6, json.dumps(runs, indent=1)[:3000])
        check("the bench rows kept", r.get("bench", {}).get("rows", [{}])[0].get("name") == "cuda-bf16/decode/lm_head")
        summary = (outdir / "gpu-check-summary.txt").read_text() if (outdir / "gpu-check-summary.txt").exists() else ""
        check("summary: FAIL and the verdict table", "FAIL" in summary and "grouped" in summary and "failed" in summary, summary)
        check("logs archived", (outdir / "gpu-check-logs.tgz").exists())
        p = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench-compare"), str(results[0]), str(results[0])],
                           capture_output=True, text=True)
        check("bench-compare reads the result file", p.returncode == 0 and "lm_head" in p.stdout, p.stdout + p.stderr)

        rc, out, err = gpu_check(tools, "--prebuilt", bundle, "--out-dir", tmp / "short", "--budget", "0")
        short = list((tmp / "short").glob("*-gpu.json"))
        r = json.loads(short[0].read_text()) if short else {}
        check("budget 0: every job skipped, no path proven, exit 1",
              rc == 1 and r.get("skipped") and all(v["verdict"] in ("unproven", "unrun") for v in r.get("paths", {}).values()),
              json.dumps(r.get("paths"), indent=1) + err[-1500:])

        bundle_check = ROOT / "scripts" / "gpu-bundle"
        p = subprocess.run(["bash", str(bundle_check), "--check", str(bundle)], capture_output=True, text=True, cwd=ROOT)
        check("gpu-bundle --check: the fake bundle lacks the real GPU tests", p.returncode != 0 and "test_gpu_" in p.stderr,
              p.stdout + p.stderr)
        build = ROOT / "build"
        if (build / "tests" / "test_gpu_latent").exists():
            full = tmp / "full"
            (full / "bin").mkdir(parents=True)
            for f in [build / "cli" / "mistral4", build / "bench" / "m4_gpu_bench", *sorted((build / "tests").glob("test_gpu_*"))]:
                if f.is_file():
                    os.symlink(f, full / "bin" / f.name)
            (full / "lib").mkdir()
            p = subprocess.run(["bash", str(bundle_check), "--check", str(full)], capture_output=True, text=True, cwd=ROOT)
            check("gpu-bundle --check: the build's binaries make a complete bundle", p.returncode == 0, p.stdout + p.stderr)
    print(f"{FAILS} failed")
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
