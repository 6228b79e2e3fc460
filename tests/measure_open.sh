#!/usr/bin/env bash
# measure_open.sh — open+bind time and resident memory on multi-GB checkpoints (issue #2 note).
# Not part of CTest. Writes sparse checkpoints (real headers, data via truncate) under $TMPDIR:
#   1. the published config cut to 1 text layer, one ~6 GiB model.safetensors;
#   2. the full published layout (119.4B parameters, ~119 GiB of tensor data) in 24 shards + index.
# Usage: tests/measure_open.sh [runs]   (default 3 runs each; prints the figures)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/m4-measure-XXXXXX")
trap 'rm -rf "$work"' EXIT
cc -std=c11 -O2 -D_POSIX_C_SOURCE=200809L -I"$root/loader" \
   "$root/tests/measure_open.c" "$root"/loader/*.c \
   $(pkg-config --cflags --libs jansson) -lm -o "$work/measure_open"
fixture="$root/tests/fixtures/mistral-small-4-119b-2603.config.json"

mkdir "$work/one-layer" "$work/full"
sed 's/"num_hidden_layers": 36/"num_hidden_layers": 1/' "$fixture" > "$work/one-layer.json"
"$work/measure_open" write "$work/one-layer" "$work/one-layer.json" 1
"$work/measure_open" write "$work/full" "$fixture" 24
echo "apparent size: $(du -sh --apparent-size "$work/one-layer" | cut -f1) and $(du -sh --apparent-size "$work/full" | cut -f1);" \
     "on disk: $(du -sh "$work/one-layer" | cut -f1) and $(du -sh "$work/full" | cut -f1)"
for case in one-layer full; do
  echo "== $case"
  for _ in $(seq "$runs"); do "$work/measure_open" open "$work/$case"; done
done
