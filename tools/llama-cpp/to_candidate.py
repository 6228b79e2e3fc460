#!/usr/bin/env python3
"""llama.cpp's activations (tools/llama-cpp/dump.c) as a candidate file in the golden layout
(docs/CANDIDATE-LAYOUT.md), for `mistral4 conform --candidate` (scripts/check-llama-cpp):

    to_candidate.py sequences GOLDEN.h5 SEQUENCES.txt
    to_candidate.py candidate GOLDEN.h5 DUMP_DIR CANDIDATE.h5 GOLDEN_RUN.h5

`sequences` writes the rows llama.cpp can run, one line each ("id:pos ..."): a golden row's
unpadded tokens (attention_mask 1) with their position ids. In a case with images llama.cpp runs
the text model only (its vision tower is a separate library, mtmd): the line is "embd PATH pos
...", PATH holding HF's merged inputs_embeds (multimodal.merge/out) of that row, and the run
gives our `text` rows (text.layers.*, text.norm, text.lm_head, text/logits), not `model`. llama.cpp has no attention mask, so
the left padding is left out (the padded tokens are not llama.cpp's: see below); and it refuses
a sequence whose positions jump ("sequence positions are not continuous", llama-batch.cpp), so
such a row is not run at all.

`candidate` maps the dumped tensors to our rows and writes CANDIDATE.h5 with the rows run, and
GOLDEN_RUN.h5: the golden restricted to those same batch rows (every dataset sliced on its batch
axis, nothing recomputed; the golden itself when every row ran). The padded tokens of a row
that ran hold the golden's own values in the candidate (HF's values for tokens the model's
function does not define; llama.cpp never computes them), and its attention weights from a real
query to a padded key are 0, as HF's. The map (llama.cpp's callback names, layer i):

    embd                          text.embed_tokens/out
    attn_norm-i                   text.layers.i.input_layernorm/out
    q-i (last, [qk_head_dim, H])  text.layers.i.self_attn/q
    kv_cmpr_pe-i                  text.layers.i.self_attn/kv_a
    kv_cmpr-i (last: after norm)  text.layers.i.self_attn/c_kv
    Qcur_attn_temp_scaled-i / Qcur-i  text.layers.i.self_attn/llama4_scale: the per-token factor
                                  llama.cpp multiplied the query by (its temperature input is a
                                  leaf, which the callback does not see); 1 where its graph has
                                  no such step (no attention temperature in the GGUF)
    q_nope-i, q_pe-i (roped)      text.layers.i.self_attn/q_rot: [nope | rope half de-interleaved]
                                  times that scale (llama.cpp multiplies the absorbed query by it)
    kq_soft_max-i                 text.layers.i.self_attn/attn_weights (first S cache cells)
    kqv_out-i                     text.layers.i.self_attn/attn_output
    the node after kqv_out-i      text.layers.i.self_attn/out: the output projection, which
                                  llama.cpp leaves unnamed ("node_<n>"): the dump's next tensor
    ffn_norm-i                    text.layers.i.post_attention_layernorm/out
    ffn_moe_logits-i              text.layers.i.mlp.gate/logits
    ffn_moe_topk-i                text.layers.i.mlp.gate/topk_ids
    ffn_moe_weights[_norm|_scaled]-i (the last)  text.layers.i.mlp.gate/topk_weights
    ffn_moe_out-i                 text.layers.i.mlp.experts/out
    ffn_shexp-i                   text.layers.i.mlp.shared_experts/out
    ffn_out-i                     text.layers.i.mlp/out
    l_out-i                       text.layers.i/out
    result_norm                   text.norm/out
    result_output                 text.lm_head/out and model/logits (text/logits with images)
Not written (NOT-IMPL): self_attn.rope (llama.cpp rotates inside ggml_rope_ext, no tables) and
k_rot (MLA absorbed: llama.cpp never forms the per-head key).
"""

import json
import sys
from pathlib import Path

import h5py
import numpy as np


def golden_rows(golden):
    """(row, columns, positions) of each golden row llama.cpp can run, and the rows it cannot."""
    ids = golden["inputs/input_ids"][()]
    pos = golden["inputs/position_ids"][()]
    mask = golden["inputs/attention_mask"][()] if "inputs/attention_mask" in golden else np.ones_like(ids)
    runs, skipped = [], []
    for b in range(ids.shape[0]):
        cols = np.flatnonzero(mask[b])
        p = pos[b, cols]
        if np.all(np.diff(p) == 1):
            runs.append((b, cols, p))
        else:
            skipped.append(b)
    return runs, skipped


def write_sequences(golden_path, out_path):
    with h5py.File(golden_path, "r") as golden:
        runs, skipped = golden_rows(golden)
        ids = golden["inputs/input_ids"][()]
        merged = golden["multimodal.merge/out"][()] if "multimodal.merge/out" in golden else None
    with open(out_path, "w") as f:
        for b, cols, p in runs:
            if merged is None:
                f.write(" ".join(f"{ids[b, c]}:{q}" for c, q in zip(cols, p)) + "\n")
                continue
            embd = Path(out_path).parent / f"embd-row{b}.f32"      # HF's merged inputs_embeds
            merged[b, cols].astype(np.float32).tofile(embd)
            f.write(f"embd {embd} " + " ".join(str(q) for q in p) + "\n")
    for b in skipped:
        print(f"row {b}: positions jump inside the row; llama.cpp refuses such a sequence, row not run",
              file=sys.stderr)


def load_dump(dump_dir, r):
    """{name: array in ggml's order reversed (numpy shape ne3, ne2, ne1, ne0, squeezed of 1s)}"""
    tensors, previous = {}, None
    for line in open(Path(dump_dir) / "manifest.txt"):
        path, *ne = line.split()
        if not path.startswith(f"r{r}/"):
            continue
        name = path[len(f"r{r}/"):].rsplit(".", 1)[0]
        if previous and previous.startswith("kqv_out-"):      # the output projection, unnamed
            tensors["attn_out_proj-" + previous.split("-")[1]] = (path, np.float32, [int(n) for n in ne])
        previous = name
        dtype = np.float32 if path.endswith(".f32") else np.int32
        ne = [int(n) for n in ne]
        tensors[name] = (path, dtype, ne)
    out = {}
    for name, (path, dtype, ne) in tensors.items():
        data = np.fromfile(Path(dump_dir) / path, dtype=dtype)
        if data.size != np.prod(ne):   # the file holds the last tensor of that name
            continue
        out[name] = data.reshape(ne[::-1])
    return out


def deinterleave(x):
    """llama.cpp's NORM rope keeps rotated pairs adjacent; HF's q_rot holds [evens | odds]."""
    return np.concatenate([x[..., 0::2], x[..., 1::2]], axis=-1)


def slice_rows(golden, out_path, rows):
    """The golden restricted to batch rows `rows`: datasets sliced on their batch axis ([B, ...]
    or [B*S, ...]), others, attributes and soft links (the golden's aliases) copied."""
    B, S = golden["inputs/input_ids"].shape

    def copy(src, dst):
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for name in src.keys():
            link = src.get(name, getlink=True)
            if isinstance(link, h5py.SoftLink):
                dst[name] = h5py.SoftLink(link.path)
                continue
            obj = src[name]
            if isinstance(obj, h5py.Group):
                copy(obj, dst.create_group(name))
                continue
            d = obj[()]
            if d.ndim and d.shape[0] == B:
                d = d[rows]
            elif d.ndim and d.shape[0] == B * S:
                d = d.reshape(B, S, *d.shape[1:])[rows].reshape(len(rows) * S, *d.shape[1:])
            dst.create_dataset(name, data=d)
            for k, v in obj.attrs.items():
                dst[name].attrs[k] = v

    with h5py.File(out_path, "w") as out:
        copy(golden, out)


def write_candidate(golden_path, dump_dir, cand_path, golden_run_path):
    golden = h5py.File(golden_path, "r")
    cfg = json.loads(golden.attrs["config_json"])
    cfg = cfg.get("text_config", cfg)
    runs, skipped = golden_rows(golden)
    rows = [b for b, _, _ in runs]
    B, S = golden["inputs/input_ids"].shape
    L, H = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    nope, rope = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"]
    dense = cfg.get("first_k_dense_replace", 0)
    with_images = "multimodal.merge/out" in golden

    if skipped:
        slice_rows(golden, golden_run_path, rows)
    else:
        Path(golden_run_path).unlink(missing_ok=True)
        Path(golden_run_path).symlink_to(Path(golden_path).resolve())

    # Every dataset starts as the golden's (sliced to the rows run), so padded tokens keep HF's
    # values; the tokens llama.cpp ran are overwritten below. token_major: [B*S, ...] layouts.
    datasets = {}

    def golden_of(name, token_major=False):
        d = golden[name][()]
        if token_major:
            return d.reshape(B, S, *d.shape[1:])[rows].copy()
        return d[rows].copy()

    def put(name, r, cols, values, token_major=False, golden_name=None):
        if name not in datasets:
            datasets[name] = (golden_of(golden_name or name, token_major), token_major)
        datasets[name][0][r][cols] = values

    for r, (b, cols, pos) in enumerate(runs):
        t = load_dump(dump_dir, r)
        T = len(cols)

        def tok(name):              # [T, width]
            return t[name].reshape(T, -1)

        if not with_images:
            put("text.embed_tokens/out", r, cols, tok("embd"))
        for i in range(L):
            pre = f"text.layers.{i}"
            put(f"{pre}.input_layernorm/out", r, cols, tok(f"attn_norm-{i}"))
            put(f"{pre}.self_attn/q", r, cols, tok(f"q-{i}"), golden_name=f"{pre}.self_attn.q_b_proj/out")
            put(f"{pre}.self_attn/kv_a", r, cols, tok(f"kv_cmpr_pe-{i}"),
                golden_name=f"{pre}.self_attn.kv_a_proj_with_mqa/out")
            put(f"{pre}.self_attn/c_kv", r, cols, tok(f"kv_cmpr-{i}"),
                golden_name=f"{pre}.self_attn.kv_a_layernorm/out")
            scale = np.ones(T, np.float32)        # what llama.cpp applies without a temperature
            if f"Qcur_attn_temp_scaled-{i}" in t:   # its per-token input is a leaf, not dumped
                plain, scaled = tok(f"Qcur-{i}"), tok(f"Qcur_attn_temp_scaled-{i}")
                scale = ((plain * scaled).sum(1) / (plain * plain).sum(1)).astype(np.float32)
            name = f"{pre}.self_attn/llama4_scale"
            if name not in datasets:
                datasets[name] = (golden_of(f"{pre}.self_attn.llama4_scale/out"), False)
            datasets[name][0][r, 0, cols, 0] = scale
            q_nope = t[f"q_nope-{i}"].reshape(T, H, nope)
            q_pe = deinterleave(t[f"q_pe-{i}"].reshape(T, H, rope))
            q_rot = np.concatenate([q_nope, q_pe], axis=-1) * scale[:, None, None]   # [T, H, qk]
            name = f"{pre}.self_attn/q_rot"
            if name not in datasets:
                datasets[name] = (golden_of(name), False)
            datasets[name][0][r][:, cols] = q_rot.transpose(1, 0, 2)
            soft = t[f"kq_soft_max-{i}"].reshape(H, T, -1)                # [H, T, n_kv]
            name = f"{pre}.self_attn/attn_weights"
            if name not in datasets:
                datasets[name] = (golden_of(name), False)
            w = datasets[name][0][r]                                   # [H, S, S]
            for q_i, c in enumerate(cols):
                w[:, c, :] = 0.0
                w[:, c, cols] = soft[:, q_i, :T]
            put(f"{pre}.self_attn/attn_output", r, cols, tok(f"kqv_out-{i}"),
                golden_name=f"{pre}.self_attn.o_proj/in")
            put(f"{pre}.self_attn/out", r, cols, tok(f"attn_out_proj-{i}"))
            put(f"{pre}.post_attention_layernorm/out", r, cols, tok(f"ffn_norm-{i}"))
            if i >= dense:
                put(f"{pre}.mlp.gate/logits", r, cols, tok(f"ffn_moe_logits-{i}"), token_major=True)
                put(f"{pre}.mlp.gate/topk_ids", r, cols, tok(f"ffn_moe_topk-{i}").astype(np.int64),
                    token_major=True)
                weights = next(f"{n}-{i}" for n in ("ffn_moe_weights_scaled", "ffn_moe_weights_norm",
                                                     "ffn_moe_weights") if f"{n}-{i}" in t)
                put(f"{pre}.mlp.gate/topk_weights", r, cols, tok(weights), token_major=True)
                put(f"{pre}.mlp.experts/out", r, cols, tok(f"ffn_moe_out-{i}"), token_major=True)
                put(f"{pre}.mlp.shared_experts/out", r, cols, tok(f"ffn_shexp-{i}"))
            put(f"{pre}.mlp/out", r, cols, tok(f"ffn_out-{i}"))
            put(f"{pre}/out", r, cols, tok(f"l_out-{i}"))
        put("text.norm/out", r, cols, tok("result_norm"))
        put("text.lm_head/out", r, cols, tok("result_output"))
        put("text/logits" if with_images else "model/logits", r, cols, tok("result_output"),
            golden_name="text.lm_head/out")

    with h5py.File(cand_path, "w") as out:
        out.attrs["config_json"] = golden.attrs["config_json"]
        out.create_dataset("inputs/input_ids", data=golden["inputs/input_ids"][()][rows])
        for name, (d, token_major) in datasets.items():
            if token_major:
                d = d.reshape(len(rows) * S, *d.shape[2:])
            out.create_dataset(name, data=d.astype(np.int64 if d.dtype.kind == "i" else np.float32))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "sequences":
        write_sequences(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 6 and sys.argv[1] == "candidate":
        write_candidate(*sys.argv[2:])
    else:
        sys.exit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main()
