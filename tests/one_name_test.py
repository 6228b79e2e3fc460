#!/usr/bin/env python3
"""One name per component (docs/ARCHITECTURE.md): the benchmark rows spell each component as the
report does — the registry's dotted name with its layer index. Lists the registry's rows from
`mistral4 conform --list-datasets`, then every component name the GPU benchmark writes
(bench/bench_gpu.cu's row-name literals) and the CPU benchmark's (bench/bench_reference.c names
them through the registry, m4_component_instance: checked to stay so), and fails on a name that is
no row instance and is not a named part of one (`text.layers.0.mlp.experts.gate_up`: a kernel of
the experts row). The NVTX ranges take the runner's name for each call (test_conform's
calls_are_named_by_their_rows). Standard library only.

    one_name_test.py MISTRAL4 SOURCE_DIR"""
import re
import subprocess
import sys

mistral4, root = sys.argv[1], sys.argv[2]
table = subprocess.run([mistral4, "conform", "--list-datasets"], capture_output=True, text=True, check=True).stdout
patterns = sorted({m for m in re.findall(r"^\| `([^`]+)` \|", table, re.M)})
rows = [re.compile("^" + re.escape(p).replace(r"\{i\}", "[0-9]+").replace(r"\{j\}", "[0-9]+") + "$") for p in patterns]
fails = 0

def is_row(name):
    return any(r.match(name) for r in rows)

def check(name, where):
    global fails
    parts = name.split(".")
    # the name itself, or a part of a row (a kernel of it): some prefix of it is a row instance
    if not any(is_row(".".join(parts[:k])) for k in range(len(parts), 0, -1)):
        print(f"FAIL {where}: '{name}' is no component of the registry (rows: `mistral4 conform --list-datasets`)")
        fails += 1
    elif re.search(r"layers\.([^0-9.]|$)", name):
        print(f"FAIL {where}: '{name}' has no layer index")
        fails += 1

gpu = open(f"{root}/bench/bench_gpu.cu").read()
names = set(re.findall(r'"(?:tune/)?(?:cuda|cudnn)-[a-z0-9]+/((?:text|vision|projector)[a-z_.0-9+]*)', gpu))
names |= set(re.findall(r'"((?:text|vision|projector)\.[a-z_.0-9+]*)"', gpu))
if len(names) < 8:
    print(f"FAIL bench_gpu.cu: found only {len(names)} component names; has the naming moved?")
    fails += 1
for n in sorted(names):
    for piece in n.split("+"):          # paired weights: q_a_proj+kv_a_proj_with_mqa
        check(piece if "." in piece else n.rsplit(".", 1)[0] + "." + piece, "bench_gpu.cu")
cpu = open(f"{root}/bench/bench_reference.c").read()
if "m4_component_instance(pattern, 0" not in cpu:
    print("FAIL bench_reference.c: its rows are no longer named through the registry (m4_component_instance)")
    fails += 1
print(f"{len(patterns)} registry rows, {len(names)} GPU benchmark names checked; {fails} failed")
sys.exit(1 if fails else 0)
