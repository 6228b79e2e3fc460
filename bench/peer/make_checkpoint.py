#!/usr/bin/env python3
"""The synthetic real-width one-layer Mistral 4 text checkpoint of the peer benchmark
(scripts/bench-peer), written twice from the same weights:

    make_checkpoint.py OUT_DIR [--seed N]

    OUT_DIR/bf16/  config.json + model.safetensors: every tensor bfloat16 (about 8.7 GB)
    OUT_DIR/fp8/   the published quantization of the same weights: the 8 linears of the layer and
                   the expert stacks as F8_E4M3 codes with per-tensor (per-expert) float32
                   weight_scale_inv = max|W| / 448 and activation_scale 1; embeddings, norms, router
                   and lm_head stay bfloat16 (about 5.5 GB)

Widths are the published ones (tests/fixtures/mistral-small-4-119b-2603.config.json, its
text_config) with num_hidden_layers 1, as a bare Mistral4ForCausalLM config (architectures,
model_type mistral4). Weights: uniform, standard deviation 0.02 (initializer_range), norms 1.
No tokenizer: generation and `mistral4 bench` need token ids only.

Needs torch (for bfloat16 and float8_e4m3fn); tensors are written one at a time, so the peak
memory is the largest non-expert tensor (lm_head, 2 GB as float32).
"""

import argparse
import json
import struct
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "tests/fixtures/mistral-small-4-119b-2603.config.json"
STD = 0.02
FP8_MAX = 448.0


def text_config():
    t = dict(json.loads(PUBLISHED.read_text())["text_config"])
    t.update(num_hidden_layers=1, architectures=["Mistral4ForCausalLM"], model_type="mistral4",
             dtype="bfloat16")
    return t


def tensors(t):
    """[(name, shape, kind)] in file order; kind: 'norm', 'bf16' (never quantized), 'fp8' (a
    linear quantized in the FP8 checkpoint), 'experts' (an FP8 stack [E, rows, cols])."""
    D, H = t["hidden_size"], t["num_attention_heads"]
    dq, dn, dr, dv = t["qk_nope_head_dim"] + t["qk_rope_head_dim"], t["qk_nope_head_dim"], \
        t["qk_rope_head_dim"], t["v_head_dim"]
    E, F, R, Q = t["n_routed_experts"], t["moe_intermediate_size"], t["kv_lora_rank"], t["q_lora_rank"]
    p = "model.layers.0."
    return [
        ("model.embed_tokens.weight", [t["vocab_size"], D], "bf16"),
        (p + "input_layernorm.weight", [D], "norm"),
        (p + "self_attn.q_a_proj.weight", [Q, D], "fp8"),
        (p + "self_attn.q_a_layernorm.weight", [Q], "norm"),
        (p + "self_attn.q_b_proj.weight", [H * dq, Q], "fp8"),
        (p + "self_attn.kv_a_proj_with_mqa.weight", [R + dr, D], "fp8"),
        (p + "self_attn.kv_a_layernorm.weight", [R], "norm"),
        (p + "self_attn.kv_b_proj.weight", [H * (dn + dv), R], "fp8"),
        (p + "self_attn.o_proj.weight", [D, H * dv], "fp8"),
        (p + "post_attention_layernorm.weight", [D], "norm"),
        (p + "mlp.gate.weight", [E, D], "bf16"),
        (p + "mlp.experts.gate_up_proj", [E, 2 * F, D], "experts"),
        (p + "mlp.experts.down_proj", [E, D, F], "experts"),
        (p + "mlp.shared_experts.gate_proj.weight", [F, D], "fp8"),
        (p + "mlp.shared_experts.up_proj.weight", [F, D], "fp8"),
        (p + "mlp.shared_experts.down_proj.weight", [D, F], "fp8"),
        ("model.norm.weight", [D], "norm"),
        ("lm_head.weight", [t["vocab_size"], D], "bf16"),
    ]


def weight(shape, gen):
    """bfloat16, uniform with standard deviation STD."""
    a = STD * 3 ** 0.5
    return (torch.rand(shape, generator=gen, dtype=torch.float32) * (2 * a) - a).to(torch.bfloat16)


def fp8(w):
    """(codes F8_E4M3, scale float32 []) with w ≈ float(codes) · scale, scale = max|w| / 448."""
    w32 = w.float()
    scale = w32.abs().max() / FP8_MAX
    return (w32 / scale).to(torch.float8_e4m3fn), scale.reshape([])


class Writer:
    """A safetensors file written tensor by tensor: the header first (shapes and dtypes known in
    advance), then each tensor's bytes in the header's order."""

    SIZE = {"BF16": 2, "F8_E4M3": 1, "F32": 4}

    def __init__(self, path, entries):
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, dtype, shape in entries:
            n = self.SIZE[dtype]
            for s in shape:
                n *= s
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
            offset += n
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self.order = [name for name, _, _ in entries]
        self.f = open(path, "wb")
        self.f.write(struct.pack("<Q", len(blob)) + blob)

    def begin(self, name):
        """The next tensor is written in parts (append), in order."""
        assert self.order.pop(0) == name, name

    def append(self, tensor):
        self.f.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())

    def write(self, name, tensor):
        self.begin(name)
        self.append(tensor)

    def close(self):
        assert not self.order, self.order
        self.f.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    t = text_config()
    specs = tensors(t)
    out = Path(args.out)
    for sub, quant in (("bf16", None), ("fp8", {"quant_method": "fp8", "activation_scheme": "static",
                                                  "weight_block_size": None,
                                                  "modules_to_not_convert": ["lm_head"]})):
        (out / sub).mkdir(parents=True, exist_ok=True)
        config = dict(t)
        if quant:
            config["quantization_config"] = quant
        (out / sub / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    bf16_entries, fp8_entries = [], []
    for name, shape, kind in specs:
        bf16_entries.append((name, "BF16", shape))
        if kind in ("norm", "bf16"):
            fp8_entries.append((name, "BF16", shape))
        elif kind == "fp8":
            fp8_entries += [(name, "F8_E4M3", shape), (name[:-len("weight")] + "weight_scale_inv", "F32", []),
                            (name[:-len("weight")] + "activation_scale", "F32", [])]
        else:
            fp8_entries += [(name, "F8_E4M3", shape), (name + "_scale_inv", "F32", [shape[0], 1, 1]),
                            (name + "_activation_scale", "F32", [shape[0]])]
    wb, wf = Writer(out / "bf16/model.safetensors", bf16_entries), Writer(out / "fp8/model.safetensors", fp8_entries)
    gen = torch.Generator().manual_seed(args.seed)
    for name, shape, kind in specs:
        print(f"make_checkpoint: {name} {shape}", flush=True)
        if kind == "norm":
            w = torch.ones(shape, dtype=torch.bfloat16)
            wb.write(name, w)
            wf.write(name, w)
        elif kind == "experts":
            # one expert [rows, cols] at a time, each with its own FP8 scale
            wb.begin(name)
            wf.begin(name)
            scales = []
            for _ in range(shape[0]):
                w = weight(shape[1:], gen)
                codes, scale = fp8(w)
                wb.append(w)
                wf.append(codes)
                scales.append(scale)
            wf.write(name + "_scale_inv", torch.stack(scales).reshape(shape[0], 1, 1))
            wf.write(name + "_activation_scale", torch.ones(shape[0], dtype=torch.float32))
        else:
            w = weight(shape, gen)
            wb.write(name, w)
            if kind == "bf16":
                wf.write(name, w)
            else:
                codes, scale = fp8(w)
                base = name[:-len("weight")]
                wf.write(name, codes)
                wf.write(base + "weight_scale_inv", scale)
                wf.write(base + "activation_scale", torch.ones([], dtype=torch.float32))
    wb.close()
    wf.close()
    print(f"make_checkpoint: wrote {out}/bf16 and {out}/fp8")


if __name__ == "__main__":
    main()
