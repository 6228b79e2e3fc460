#!/bin/sh
# `mistral4 conform` progress on a terminal (util-linux `script` gives it one; stdout goes
# elsewhere, so what comes back is stderr alone): one line rewritten in place ("\r", clear to the
# line's end, "[k/4] NAME"), never a newline, and the line cleared at the end for the table.
# Usage: progress_terminal.sh MISTRAL4 CASE_DIR
set -u
out=$(mktemp)
trap 'rm -f "$out"' EXIT
script -qec "'$1' conform --case '$2' --only 'text.layers.0.mlp*' >/dev/null" /dev/null >"$out"
od -c "$out"
newlines=$(tr -cd '\n' <"$out" | wc -c)
[ "$newlines" -eq 0 ] || { echo "progress wrote $newlines newlines on the terminal"; exit 1; }
want=$(printf '\r\033[K[3/4] text.layers.0.mlp.shared_experts\r\033[K[4/4] text.layers.0.mlp\r\033[K')
[ "$(tail -c ${#want} "$out")" = "$want" ] || { echo "the progress line does not end as expected"; exit 1; }
