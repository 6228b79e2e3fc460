#!/bin/sh
# tests/torchcheck_test.sh MISTRAL4 SOURCE_DIR IMPL EXPECT_RC REGEX — a torch implementation through
# the torch runner (torchcheck/runner.py) and `mistral4 conform --candidate` on the text_tiny case:
# exit status EXPECT_RC and a quiet summary line matching REGEX. Needs the generator's pinned
# environment (golden/.venv, made by scripts/make-golden; or TORCHCHECK_PYTHON): without it the test
# is skipped (exit 77), as CI without the ~6 GB venv does.
set -u
exe=$1 src=$2 impl=$3 expect_rc=$4 regex=$5
py=${TORCHCHECK_PYTHON:-$src/golden/.venv/bin/python}
if [ ! -x "$py" ]; then
  echo "SKIP: no pinned Python environment at $py (scripts/make-golden creates golden/.venv)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case=$src/golden/cases/text_tiny
CUDA_VISIBLE_DEVICES="" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=$src \
  "$py" -m torchcheck.runner --case "$case" --impl "$src/torchcheck/$impl" --out "$work/candidate.h5" || exit 1
"$exe" conform --golden "$case/text_tiny.h5" --candidate "$work/candidate.h5" --quiet >"$work/out" 2>&1
rc=$?
cat "$work/out"
[ "$rc" -eq "$expect_rc" ] || { echo "exit status $rc, expected $expect_rc"; exit 1; }
grep -Eq "$regex" "$work/out" || { echo "no line matches: $regex"; exit 1; }
