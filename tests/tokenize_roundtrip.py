#!/usr/bin/env python3
"""tokenize_roundtrip.py MISTRAL4 CORPUS.json -- `mistral4 tokenize` on the tokenizer's fixture
corpora (tests/fixtures/tokenizer/corpus.json, written by make_corpus.py there with mistral-common):
every string's ids must be the ones mistral-common gave it, and `--decode` of those ids must give
the string back, byte for byte; the corpus's byte strings that are not UTF-8 must be refused.

Two corpora: "cases" (about 1,500 strings) with tekken_240911.json, and "v15_synthetic" with the
v15-shaped tekken_v15_synthetic.json. Strings go to the command as TEXT arguments, many per run
(one JSON line each comes back), after '--' so a string starting with '-' stays a string; a string
holding NUL, which no argument can, goes through --file. Run by CTest (cli_tests.cmake).
"""
import json
import os
import subprocess
import sys
import tempfile

BATCH_BYTES = 96 * 1024     # of arguments per run (a single argument may have up to 128 KiB)


def run(exe, args, n_results):
    p = subprocess.run([exe, "tokenize", *args], capture_output=True)
    if p.returncode != 0:
        sys.exit(f"mistral4 tokenize failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
    # split at b"\n" only (JSON escapes it in strings; str.splitlines would also cut at U+2028)
    results = [json.loads(line) for line in p.stdout.split(b"\n") if line]
    if len(results) != n_results:
        sys.exit(f"mistral4 tokenize gave {len(results)} results for {n_results} inputs")
    return results


def batches(items, size):
    """items: (key, bytes) → lists whose bytes add up to at most `size` (one item at least)."""
    out, used = [], 0
    for item in items:
        if out and used + len(item[1]) > size:
            yield out
            out, used = [], 0
        out.append(item)
        used += len(item[1]) + 1
    if out:
        yield out


def check_corpus(exe, tekken, cases, name):
    failures = []
    texts = [(i, t.encode("utf-8")) for i, (t, _) in enumerate(cases)]
    plain = [(i, b) for i, b in texts if b"\0" not in b]
    got_ids = {}
    for batch in batches(plain, BATCH_BYTES):
        results = run(exe, ["--tokenizer", tekken, "--json", "--", *[b for _, b in batch]], len(batch))
        for (i, _), r in zip(batch, results):
            got_ids[i] = r["ids"]
    with tempfile.TemporaryDirectory() as d:
        for i, b in texts:
            if b"\0" in b:
                path = os.path.join(d, "text")
                with open(path, "wb") as f:
                    f.write(b)
                got_ids[i] = run(exe, ["--tokenizer", tekken, "--json", "--file", path], 1)[0]["ids"]
    for i, (text, want) in enumerate(cases):
        if got_ids[i] != want:
            failures.append(f"{name}[{i}] {text[:40]!r}: ids {got_ids[i][:12]}…, mistral-common {want[:12]}…")

    lists = [(i, ",".join(map(str, want)).encode()) for i, (_, want) in enumerate(cases) if want]
    for batch in batches(lists, BATCH_BYTES):
        results = run(exe, ["--tokenizer", tekken, "--decode", "--json", *[b for _, b in batch]], len(batch))
        for (i, _), r in zip(batch, results):
            if r["text"] != cases[i][0]:
                failures.append(f"{name}[{i}] {cases[i][0][:40]!r}: decodes to {r['text'][:40]!r}")
    return failures


def check_refused(exe, tekken, corpus):
    """The byte strings that are not UTF-8 (invalid_utf8, and the lone surrogates' WTF-8 bytes): each
    refused, exit status 1, with the message our encoder gives."""
    failures = []
    inputs = [h for h, _ in corpus["invalid_utf8"]] + [h for h, _, _ in corpus["lone_surrogates"]]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "text")
        for h in inputs:
            with open(path, "wb") as f:
                f.write(bytes.fromhex(h))
            p = subprocess.run([exe, "tokenize", "--tokenizer", tekken, "--file", path], capture_output=True)
            if p.returncode != 1 or b"not valid UTF-8" not in p.stderr:
                failures.append(f"bytes {h}: exit {p.returncode}, {p.stderr[:200]!r}")
    return failures, len(inputs)


def main():
    exe, corpus_path = sys.argv[1], sys.argv[2]
    folder = os.path.dirname(os.path.abspath(corpus_path))
    with open(corpus_path, encoding="utf-8") as f:
        corpus = json.load(f)
    synthetic = corpus["v15_synthetic"]
    corpora = [("cases", os.path.join(folder, corpus["tekken"]), corpus["cases"]),
               ("v15_synthetic", os.path.join(folder, synthetic["file"]), synthetic["cases"])]
    failures = []
    for name, tekken, cases in corpora:
        failures += check_corpus(exe, tekken, cases, name)
        print(f"{name}: {len(cases)} strings through `mistral4 tokenize` and --decode")
    refused, n_refused = check_refused(exe, corpora[0][1], corpus)
    failures += refused
    print(f"invalid UTF-8: {n_refused} byte strings refused")
    for line in failures[:20]:
        print(line)
    if failures:
        sys.exit(f"{len(failures)} mismatches")
    print("every string gives mistral-common's ids and decodes back to itself")


if __name__ == "__main__":
    main()
