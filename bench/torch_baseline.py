#!/usr/bin/env python3
"""PyTorch / Hugging Face baseline for mistral4.c's component benchmarks (bench/torch_baseline.py).

Times the components that bench/bench_reference.c and bench/bench_vision.c time, at the same
shapes, through Hugging Face transformers' own modules (Mistral4Attention, Mistral4TopkRouter,
Mistral4Experts, Mistral4MLP, Mistral4MoE, Mistral4DecoderLayer, lm_head; PixtralAttention,
PixtralMLP, PixtralAttentionLayer, the patch Conv2d; Mistral3MultiModalProjector), on a
real-width layer built from the published config (tests/fixtures/mistral-small-4-119b-2603
.config.json, one text layer, random weights):

    text, decode        1 token, no cached context (T = 1)            threads: 1 and all (CPU)
    text, prefill:128   128 tokens, causal                            threads: all
    text.lm_head        decode (1 token, V = 131072)                  threads: 1 and all (CPU)
    vision, prefill:256 one 224 x 224 image = 256 patches (projector: 64 merged tokens)

The experts get the C benchmark's routing (token t of iteration i → experts (4(i+t)+k) mod 128),
and small weight groups rotate through copies spanning 4 x the last-level cache, as the C side
does, so that a decode step streams its weights from memory rather than from cache.

Device and dtype: CUDA with bfloat16 when torch.cuda.is_available() (timed with CUDA events),
else the CPU (bfloat16 by default; --dtype float32 for the reference's arithmetic). transformers'
defaults are kept (sdpa attention, its default experts implementation) unless --attn / --experts
say otherwise.

Where the installed transformers has no Mistral4 (it arrived in 5.2x), the text components are
timed through a plain-PyTorch transcription of the same math (MLA with interleaved RoPE and the
Llama-4 query scale, softmax top-4 router, eager expert loop, SwiGLU) and the JSON says so
("implementation": "plain-torch"). The vision components need Pixtral / Mistral3 (transformers
>= 4.50).

Output: JSON shaped like Google Benchmark's (a "context" and "benchmarks" rows with name,
real_time in ns, iterations, bytes, flops, bytes_per_second, FLOP/s, label), names
"hf/<component>/<phase>/<dtype>/threads:<n>" (or ".../cuda"), so scripts/bench-compare and
scripts/plot-bench read it, and bench/merge_baseline.py puts ours/HF ratios into a C result.
Bytes and FLOPs use the component registry's formulas (harness/registry.c) at the torch weight
width.

    golden/.venv/bin/python bench/torch_baseline.py --out bench/results/X-torch.json
    python3 bench/torch_baseline.py --device cuda --only 'text.layers.0/' --min-time 1
"""

import os

os.environ.setdefault("USE_HUB_KERNELS", "0")  # never fetch kernels from the hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse
import copy
import datetime
import gc
import json
import math
import platform
import re
import socket
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "tests" / "fixtures" / "mistral-small-4-119b-2603.config.json"
N_INPUTS = 32          # distinct decode inputs cycled through (as the C side)
CACHE_SPAN_MIN = 128 << 20
MAX_COPIES = 128


def fail(msg):
    print(f"torch_baseline: {msg}", file=sys.stderr)
    sys.exit(2)


try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the machine
    fail(f"PyTorch is not importable ({e}); run it under golden/.venv/bin/python or install torch")

try:
    import transformers
except ImportError as e:  # pragma: no cover
    fail(f"transformers is not importable ({e}); run it under golden/.venv/bin/python or install transformers")


# ---------------------------------------------------------------------------------------------
# The registry's cost formulas (harness/registry.c), n tokens, context T, weights of wb bytes
# ---------------------------------------------------------------------------------------------

def act_bytes(n, width):
    return 4.0 * n * width


def attention_params(t):
    D, H = t["hidden_size"], t["num_attention_heads"]
    dq = t["qk_nope_head_dim"] + t["qk_rope_head_dim"]
    q = t["q_lora_rank"] * D + H * dq * t["q_lora_rank"] if t.get("q_lora_rank") else H * dq * D
    return (q + (t["kv_lora_rank"] + t["qk_rope_head_dim"]) * D
            + H * (t["qk_nope_head_dim"] + t["v_head_dim"]) * t["kv_lora_rank"] + D * H * t["v_head_dim"])


def cost(cfg, component, n, T, wb):
    """(flops, bytes) of one call, as harness/registry.c computes them."""
    t, v = cfg["text_config"], cfg.get("vision_config", {})
    D = t["hidden_size"]
    if component == "text.layers.0.input_layernorm":
        return 4.0 * n * D, D * wb + 2 * act_bytes(n, D)
    if component == "text.layers.0.self_attn":
        W, H = attention_params(t), t["num_attention_heads"]
        dq = t["qk_nope_head_dim"] + t["qk_rope_head_dim"]
        return 2.0 * n * W + 2.0 * n * H * (dq + t["v_head_dim"]) * T, W * wb + 2 * act_bytes(n, D)
    if component == "text.layers.0.mlp.gate":
        E = t["n_routed_experts"]
        return 2.0 * n * E * D, E * D * wb + act_bytes(n, D)
    if component == "text.layers.0.mlp.experts":
        per = 3.0 * t["moe_intermediate_size"] * D
        K, E = t["num_experts_per_tok"], t["n_routed_experts"]
        return 2.0 * n * K * per, min(n * K, E) * per * wb + 2 * act_bytes(n, D)
    if component == "text.layers.0.mlp.shared_experts":
        W = 3.0 * t["moe_intermediate_size"] * t["n_shared_experts"] * D
        return 2.0 * n * W, W * wb + 2 * act_bytes(n, D)
    if component == "text.layers.0.mlp":
        parts = [cost(cfg, f"text.layers.0.mlp.{p}", n, T, wb) for p in ("gate", "experts", "shared_experts")]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)
    if component == "text.layers.0":
        norm = cost(cfg, "text.layers.0.input_layernorm", n, T, wb)
        attn = cost(cfg, "text.layers.0.self_attn", n, T, wb)
        mlp = cost(cfg, "text.layers.0.mlp", n, T, wb)
        return 2 * norm[0] + attn[0] + mlp[0], 2 * norm[1] + attn[1] + mlp[1]
    if component == "text.lm_head":
        V = t["vocab_size"]
        return 2.0 * n * V * D, V * D * wb + act_bytes(n, V)
    Dv = v.get("hidden_size", 0)
    if component == "vision.patch_conv":
        K = v["num_channels"] * v["patch_size"] ** 2
        W = Dv * K
        return 2.0 * n * W, W * wb + act_bytes(n, K) + act_bytes(n, Dv)
    if component == "vision.layers.0.attention_norm":
        return 4.0 * n * Dv, Dv * wb + 2 * act_bytes(n, Dv)
    if component == "vision.layers.0.attention":
        W = 4.0 * Dv * Dv
        return 2.0 * n * W + 4.0 * n * Dv * T, W * wb + 2 * act_bytes(n, Dv)
    if component == "vision.layers.0.feed_forward":
        W = 3.0 * Dv * v["intermediate_size"]
        return 2.0 * n * W, W * wb + 2 * act_bytes(n, Dv)
    if component == "vision.layers.0":
        parts = [cost(cfg, c, n, T, wb) for c in ("vision.layers.0.attention_norm", "vision.layers.0.attention_norm",
                                                 "vision.layers.0.attention", "vision.layers.0.feed_forward")]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)
    if component == "projector":
        m = cfg.get("spatial_merge_size", 2)
        M = n // (m * m)
        f_norm, b_norm = cost(cfg, "vision.layers.0.attention_norm", n, T, wb)
        Wm = Dv * Dv * m * m
        merger = (2.0 * M * Wm, Wm * wb + act_bytes(n, Dv) + act_bytes(M, Dv))
        W1 = D * Dv
        lin1 = (2.0 * M * W1, W1 * wb + act_bytes(M, Dv) + act_bytes(M, D))
        act = (1.0 * M * D, 2 * act_bytes(M, D))
        W2 = D * D
        lin2 = (2.0 * M * W2, W2 * wb + 2 * act_bytes(M, D))
        parts = [(f_norm, b_norm), merger, lin1, act, lin2]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)
    raise KeyError(component)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------

def machine_busy_seconds():
    """CPU seconds the whole machine has been busy (/proc/stat), -1 where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return -1.0


def own_cpu_seconds():
    t = os.times()
    return t.user + t.system


def others_pct(busy0, own0, seconds):
    """Share (%) of the machine's CPU time that other processes used since (busy0, own0)."""
    busy1, own1 = machine_busy_seconds(), own_cpu_seconds()
    if busy0 < 0 or busy1 < 0 or seconds <= 0:
        return None
    return 100.0 * max(0.0, (busy1 - busy0) - (own1 - own0)) / (seconds * (os.cpu_count() or 1))


def wait_quiet(limit_pct, max_wait=120.0):
    """Waits until other processes use < limit_pct % of the CPUs (sampled over 0.25 s), at most
    max_wait seconds; returns the seconds waited (the C shim's M4BENCH_QUIET_PCT)."""
    if not limit_pct:
        return 0.0
    start = time.monotonic()
    while True:
        b0, o0 = machine_busy_seconds(), own_cpu_seconds()
        time.sleep(0.25)
        pct = others_pct(b0, o0, 0.25)
        waited = time.monotonic() - start
        if pct is None or pct < limit_pct or waited >= max_wait:
            return waited - 0.25
        time.sleep(1.0)


class Timer:
    def __init__(self, device, min_time, max_iterations, repetitions=1):
        self.device, self.min_time, self.max_iterations = device, min_time, max_iterations
        self.repetitions = max(1, repetitions)
        self.others_cpu_pct = None
        self.samples = []

    def _batch(self, fn, start, n):
        """Seconds per call of fn(i) for i in [start, start + n)."""
        if self.device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            begin.record()
            for i in range(start, start + n):
                fn(i)
            end.record()
            torch.cuda.synchronize()
            return begin.elapsed_time(end) / 1e3 / n
        t0 = time.perf_counter()
        for i in range(start, start + n):
            fn(i)
        return (time.perf_counter() - t0) / n

    def run(self, fn):
        """(seconds per iteration, iterations): one warm-up call, one timed call to size the batch,
        then `repetitions` batches of about min_time each (Google Benchmark's way); the median
        batch's time per call (self.samples holds them all)."""
        with torch.inference_mode():
            fn(0)
            one = self._batch(fn, 1, 1)
            b0, o0, t0 = machine_busy_seconds(), own_cpu_seconds(), time.perf_counter()
            if one >= self.min_time:
                n = 1
                self.samples = [one] + [self._batch(fn, 2 + r, 1) for r in range(self.repetitions - 1)]
            else:
                n = max(1, min(self.max_iterations, math.ceil(self.min_time / max(one, 1e-7) * 1.1)))
                self.samples = [self._batch(fn, 2 + r * n, n) for r in range(self.repetitions)]
            # with a single sizing-call sample no share was measured over the timed work
            measured = time.perf_counter() - t0
            self.others_cpu_pct = others_pct(b0, o0, measured) if measured > 0.05 else None
            return sorted(self.samples)[len(self.samples) // 2], n


# ---------------------------------------------------------------------------------------------
# Building the modules
# ---------------------------------------------------------------------------------------------

def llc_bytes(device):
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20) or (50 << 20))
    try:
        text = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
        unit = {"K": 1 << 10, "M": 1 << 20}.get(text[-1], 1)
        return int(text.rstrip("KM")) * unit
    except (OSError, ValueError):
        return 32 << 20


def module_bytes(module):
    return sum(p.numel() * p.element_size() for p in module.parameters())


def copies_for(module, device):
    span = max(4 * llc_bytes(device), CACHE_SPAN_MIN)
    return max(1, min(MAX_COPIES, math.ceil(span / max(1, module_bytes(module)))))


def rotating(module, device):
    """[module, copy, copy, …] spanning 4 × the last-level cache (deep copies share nothing)."""
    n = copies_for(module, device)
    return [module] + [copy.deepcopy(module) for _ in range(n - 1)]


def has_hf_mistral4():
    try:
        from transformers.models.mistral4 import modeling_mistral4  # noqa: F401
        from transformers import Mistral4Config  # noqa: F401
        return True
    except ImportError:
        return False


# ---- plain-torch transcription of the text layer (for a transformers without Mistral4) --------

class PlainRMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class PlainMLA(nn.Module):
    """Mistral4Attention's math: q LoRA + norm, kv LoRA + norm, interleaved RoPE on the rope
    parts, Llama-4 query scale, expanded keys/values, sdpa (causal for S > 1), o_proj."""

    def __init__(self, t):
        super().__init__()
        D, H = t["hidden_size"], t["num_attention_heads"]
        self.H, self.dn, self.dr, self.dv = H, t["qk_nope_head_dim"], t["qk_rope_head_dim"], t["v_head_dim"]
        self.Rkv = t["kv_lora_rank"]
        dq = self.dn + self.dr
        self.q_a_proj = nn.Linear(D, t["q_lora_rank"], bias=False)
        self.q_a_layernorm = PlainRMSNorm(t["q_lora_rank"], 1e-6)
        self.q_b_proj = nn.Linear(t["q_lora_rank"], H * dq, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(D, self.Rkv + self.dr, bias=False)
        self.kv_a_layernorm = PlainRMSNorm(self.Rkv, 1e-6)
        self.kv_b_proj = nn.Linear(self.Rkv, H * (self.dn + self.dv), bias=False)
        self.o_proj = nn.Linear(H * self.dv, D, bias=False)
        rp = t.get("rope_parameters", {})
        self.beta = rp.get("llama_4_scaling_beta", 0.1)
        self.orig_max = rp.get("original_max_position_embeddings", 8192)
        self.scaling = dq ** -0.5

    def forward(self, hidden_states, position_embeddings, attention_mask=None, position_ids=None, **_):
        B, S, _ = hidden_states.shape
        dq = self.dn + self.dr
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(hidden_states))).view(B, S, self.H, dq).transpose(1, 2)
        q_pass, q_rot = torch.split(q, [self.dn, self.dr], dim=-1)
        kv = self.kv_a_proj_with_mqa(hidden_states)
        k_pass, k_rot = torch.split(kv, [self.Rkv, self.dr], dim=-1)
        k_pass = self.kv_a_layernorm(k_pass).view(B, 1, S, self.Rkv)
        k_rot = k_rot.view(B, 1, S, self.dr)
        cos, sin = position_embeddings
        cos = cos[..., : cos.shape[-1] // 2].unsqueeze(1)
        sin = sin[..., : sin.shape[-1] // 2].unsqueeze(1)

        def rope(x):
            x1, x2 = x[..., 0::2], x[..., 1::2]
            return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

        q_rot, k_rot = rope(q_rot), rope(k_rot)
        query = torch.cat((q_pass, q_rot), dim=-1)
        scale = 1 + self.beta * torch.log(1 + torch.floor(position_ids / self.orig_max))
        query = query * scale[:, None, :, None].to(query.dtype)
        kvb = self.kv_b_proj(k_pass).view(B, S, self.H, self.dn + self.dv).transpose(1, 2)
        k_nope, value = torch.split(kvb, [self.dn, self.dv], dim=-1)
        key = torch.cat((k_nope, k_rot.expand(-1, self.H, -1, -1)), dim=-1)
        out = F.scaled_dot_product_attention(query, key, value, is_causal=S > 1, scale=self.scaling)
        return self.o_proj(out.transpose(1, 2).reshape(B, S, -1)), None


class PlainRouter(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(t["n_routed_experts"], t["hidden_size"]))
        self.top_k = t["num_experts_per_tok"]

    def forward(self, x):
        x = x.view(-1, self.weight.shape[1])
        logits = F.linear(x, self.weight)
        scores = logits.softmax(-1)
        idx = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)[1]
        w = scores.gather(1, idx)
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
        return logits, w, idx


class PlainExperts(nn.Module):
    """HF's eager expert loop over fused [E, 2F, D] / [E, D, F] stacks."""

    def __init__(self, t):
        super().__init__()
        E, F_, D = t["n_routed_experts"], t["moe_intermediate_size"], t["hidden_size"]
        self.E = E
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * F_, D))
        self.down_proj = nn.Parameter(torch.empty(E, D, F_))

    def forward(self, hidden_states, top_k_index, top_k_weights):
        out = torch.zeros_like(hidden_states)
        mask = F.one_hot(top_k_index, num_classes=self.E).permute(2, 1, 0)
        for e in torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero():
            e = e[0]
            pos, tok = torch.where(mask[e])
            gate, up = F.linear(hidden_states[tok], self.gate_up_proj[e]).chunk(2, dim=-1)
            h = F.linear(F.silu(gate) * up, self.down_proj[e]) * top_k_weights[tok, pos, None]
            out.index_add_(0, tok, h.to(out.dtype))
        return out


class PlainMLP(nn.Module):
    def __init__(self, D, F_):
        super().__init__()
        self.gate_proj = nn.Linear(D, F_, bias=False)
        self.up_proj = nn.Linear(D, F_, bias=False)
        self.down_proj = nn.Linear(F_, D, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class PlainMoE(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.gate = PlainRouter(t)
        self.experts = PlainExperts(t)
        self.shared_experts = PlainMLP(t["hidden_size"], t["moe_intermediate_size"] * t["n_shared_experts"])

    def forward(self, x):
        shape = x.shape
        _, w, idx = self.gate(x)
        y = self.experts(x.view(-1, shape[-1]), idx, w).view(*shape)
        return y + self.shared_experts(x)


class PlainLayer(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.input_layernorm = PlainRMSNorm(t["hidden_size"], t.get("rms_norm_eps", 1e-6))
        self.self_attn = PlainMLA(t)
        self.post_attention_layernorm = PlainRMSNorm(t["hidden_size"], t.get("rms_norm_eps", 1e-6))
        self.mlp = PlainMoE(t)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, position_embeddings=None, **_):
        h = hidden_states + self.self_attn(self.input_layernorm(hidden_states), position_embeddings,
                                           attention_mask, position_ids)[0]
        return h + self.mlp(self.post_attention_layernorm(h))


def plain_text_model(t, dtype, device):
    with torch.device(device):
        layer = PlainLayer(t).to(dtype)
        lm_head = nn.Linear(t["hidden_size"], t["vocab_size"], bias=False).to(dtype)
        for p in list(layer.parameters()) + list(lm_head.parameters()):
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)
    return layer, lm_head


def plain_rope(t, positions, dtype, device):
    """cos/sin [1, S, dr] of the default RoPE (the values do not matter for timing)."""
    dr = t["qk_rope_head_dim"]
    inv = 1.0 / (t.get("rope_parameters", {}).get("rope_theta", 10000.0)
                 ** (torch.arange(0, dr, 2, dtype=torch.float32, device=device) / dr))
    f = positions[..., None].float() * inv
    emb = torch.cat((f, f), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------

class Runner:
    def __init__(self, args, cfg, device, dtype):
        self.args, self.cfg, self.device, self.dtype = args, cfg, device, dtype
        self.timer = Timer(device, args.min_time, args.max_iterations, args.repetitions)
        self.rows = []
        self.only = re.compile(args.only) if args.only else None
        self.dtype_name = {torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16"}[dtype]
        self.wb = torch.tensor([], dtype=dtype).element_size()

    def thread_counts(self, phase):
        if self.device.type == "cuda":
            return [None]
        all_threads = self.args.threads or os.cpu_count() or 1
        if phase == "decode" and all_threads > 1 and not self.args.no_single_thread:
            return [1, all_threads]
        return [all_threads]

    def wanted(self, component, phase):
        name = f"{component}/{phase}"
        return self.only is None or self.only.search(name)

    def case(self, component, phase, tokens, context, fn, impl, label=""):
        """Times fn(i) at every thread count of the phase; appends one row each."""
        if not self.wanted(component, phase):
            return
        for threads in self.thread_counts(phase):
            if threads is not None:
                torch.set_num_threads(threads)
            suffix = "cuda" if threads is None else f"threads:{threads}"
            name = f"hf/{component}/{phase}/{self.dtype_name}/{suffix}"
            row = {"name": name, "run_name": name, "run_type": "iteration", "component": component,
                   "phase": phase, "tokens": tokens, "context": context, "dtype": self.dtype_name,
                   "device": self.device.type, "threads": threads or 0, "implementation": impl,
                   "time_unit": "ns"}
            waited = wait_quiet(self.args.quiet_pct) if self.device.type == "cpu" else 0.0
            try:
                b0, o0, t0 = machine_busy_seconds(), own_cpu_seconds(), time.perf_counter()
                seconds, iterations = self.timer.run(fn)
                # the share of the whole case (warm-up and sizing call included) when the batch
                # itself was a single call
                share = self.timer.others_cpu_pct
                if share is None:
                    share = others_pct(b0, o0, time.perf_counter() - t0)
            except Exception as e:  # report and go on: one broken module must not hide the rest
                row.update(error_occurred=True, error_message=f"{type(e).__name__}: {e}")
                print(f"  {name}: ERROR {row['error_message']}", file=sys.stderr)
                if self.args.verbose:
                    traceback.print_exc()
                self.rows.append(row)
                continue
            flops, nbytes = cost(self.cfg, component, tokens, context, self.wb)
            row.update(iterations=iterations, real_time=seconds * 1e9, cpu_time=seconds * 1e9,
                       bytes=nbytes, flops=flops, bytes_per_second=nbytes / seconds,
                       **{"FLOP/s": flops / seconds}, label=label)
            if self.timer.repetitions > 1:
                row.update(repetitions=self.timer.repetitions,
                           real_time_samples=[x * 1e9 for x in self.timer.samples],
                           label=label + f" (median of {self.timer.repetitions})")
            if share is not None and self.device.type == "cpu":
                row["others_cpu_pct"] = round(share, 3)
            if waited > 0.5:
                row["quiet_wait_s"] = round(waited, 1)
            print(f"  {name:<66} {seconds * 1e3:10.3f} ms  {nbytes / seconds / 1e9:8.2f} GB/s "
                  f"{flops / seconds / 1e9:8.2f} GFLOP/s  ({iterations} it)", flush=True)
            self.rows.append(row)

    # ---- text -------------------------------------------------------------------------------

    def text(self):
        t = dict(self.cfg["text_config"])
        components = ["text.layers.0.input_layernorm", "text.layers.0.self_attn", "text.layers.0.mlp.gate",
                      "text.layers.0.mlp.experts", "text.layers.0.mlp.shared_experts", "text.layers.0.mlp",
                      "text.layers.0", "text.lm_head"]
        if not any(self.wanted(c, p) for c in components for p in ("decode", f"prefill:{self.args.prefill}")):
            return None
        dev, dtype = self.device, self.dtype
        if has_hf_mistral4() and self.args.impl != "plain":
            from transformers import Mistral4Config, Mistral4ForCausalLM
            from transformers.models.mistral4 import modeling_mistral4 as hf_m4
            tc = {k: v for k, v in t.items() if k != "model_type"}
            tc["num_hidden_layers"] = 1
            config = Mistral4Config(**tc)
            kwargs = {}
            if self.args.attn:
                kwargs["attn_implementation"] = self.args.attn
            if self.args.experts:
                kwargs["experts_implementation"] = self.args.experts
            print(f"building a 1-layer Mistral4ForCausalLM ({self.dtype_name}, {dev}) …", flush=True)
            t0 = time.perf_counter()
            with torch.device(dev):
                model = Mistral4ForCausalLM._from_config(config, dtype=dtype, **kwargs)
            model.eval()
            layer, lm_head = model.model.layers[0], model.lm_head
            rotary = model.model.rotary_emb
            impl = (f"transformers {transformers.__version__} Mistral4 "
                    f"(attn {getattr(config, '_attn_implementation', '?')}, "
                    f"experts {getattr(config, '_experts_implementation', None) or 'eager'})")
            rope = lambda x, pos: rotary(x, pos)  # noqa: E731
            del model.model.embed_tokens  # not timed; 1 GiB less
            model.model.embed_tokens = None
            kind = "transformers"
            _ = hf_m4
        else:
            why = ("--impl plain" if self.args.impl == "plain"
                   else f"transformers {transformers.__version__} has no Mistral4")
            print(f"building a plain-PyTorch Mistral4 layer ({why}) …", flush=True)
            t0 = time.perf_counter()
            layer, lm_head = plain_text_model(t, dtype, dev)
            impl = f"plain PyTorch transcription of Mistral4 ({why}; sdpa, eager expert loop)"
            rope = lambda x, pos: plain_rope(t, pos, dtype, dev)  # noqa: E731
            kind = "plain-torch"
        print(f"  built in {time.perf_counter() - t0:.1f} s", flush=True)

        D, E, K = t["hidden_size"], t["n_routed_experts"], t["num_experts_per_tok"]
        gen = torch.Generator(device="cpu").manual_seed(0)
        n_rows = max(N_INPUTS, self.args.prefill)
        inputs = (torch.rand(n_rows, D, generator=gen) * 2 - 1).to(dev, dtype)

        attn_copies = rotating(layer.self_attn, dev)
        gate_copies = rotating(layer.mlp.gate, dev)
        shared_copies = rotating(layer.mlp.shared_experts, dev)
        norm_copies = [layer.input_layernorm] + [copy.deepcopy(layer.input_layernorm)
                                                 for _ in range(len(attn_copies) - 1)]
        n_views = max(len(attn_copies), len(gate_copies), len(shared_copies))

        def layer_view(i):
            """A shallow copy of the layer whose attention, router and shared expert are copy i
            (the routed experts are shared): the C side's rotating layer copies."""
            v = copy.copy(layer)
            v._modules = dict(layer._modules)
            v.self_attn = attn_copies[i % len(attn_copies)]
            v.input_layernorm = norm_copies[i % len(norm_copies)]
            mlp = copy.copy(layer.mlp)
            mlp._modules = dict(layer.mlp._modules)
            mlp.gate = gate_copies[i % len(gate_copies)]
            mlp.shared_experts = shared_copies[i % len(shared_copies)]
            v.mlp = mlp
            return v

        views = [layer_view(i) for i in range(n_views)]

        def routing(i, n):
            ids = torch.tensor([[((i + tk) * K + k) % E for k in range(K)] for tk in range(n)], device=dev)
            return ids, torch.full((n, K), 1.0 / K, device=dev, dtype=dtype)

        for phase, n in (("decode", 1), (f"prefill:{self.args.prefill}", self.args.prefill)):
            pos = torch.arange(n, device=dev).unsqueeze(0)
            cos_sin = rope(inputs[None, :n], pos)
            mask = None
            if n > 1 and kind == "transformers" and getattr(layer.self_attn.config, "_attn_implementation",
                                                           "eager") == "eager":
                mask = torch.full((n, n), torch.finfo(dtype).min, device=dev, dtype=dtype).triu(1)[None, None]
            xs = [inputs[i:i + 1, None] for i in range(N_INPUTS)] if n == 1 else [inputs[None, :n]]
            routes = [routing(i, n) for i in range(E // K)]
            X = lambda i: xs[i % len(xs)]  # noqa: E731
            lbl = f"N={n} T={n}"

            self.case("text.layers.0.input_layernorm", phase, n, n,
                      lambda i: norm_copies[i % len(norm_copies)](X(i)), impl, lbl)
            self.case("text.layers.0.self_attn", phase, n, n,
                      lambda i: attn_copies[i % len(attn_copies)](hidden_states=X(i), position_embeddings=cos_sin,
                                                                  attention_mask=mask, position_ids=pos),
                      impl, lbl + f" copies={len(attn_copies)}")
            self.case("text.layers.0.mlp.gate", phase, n, n,
                      lambda i: gate_copies[i % len(gate_copies)](X(i).view(-1, D)), impl,
                      lbl + f" copies={len(gate_copies)}")
            self.case("text.layers.0.mlp.experts", phase, n, n,
                      lambda i: layer.mlp.experts(X(i).view(-1, D), *routes[i % len(routes)]), impl,
                      lbl + " experts=(4(i+t)+k) mod E")
            self.case("text.layers.0.mlp.shared_experts", phase, n, n,
                      lambda i: shared_copies[i % len(shared_copies)](X(i)), impl,
                      lbl + f" copies={len(shared_copies)}")
            self.case("text.layers.0.mlp", phase, n, n, lambda i: views[i % n_views].mlp(X(i)), impl,
                      lbl + " router-picked experts")
            self.case("text.layers.0", phase, n, n,
                      lambda i: views[i % n_views](X(i), attention_mask=mask, position_ids=pos,
                                                   position_embeddings=cos_sin), impl, lbl)
            if n == 1:
                self.case("text.lm_head", phase, 1, 1, lambda i: lm_head(X(i)), impl, lbl)
        del views, attn_copies, gate_copies, shared_copies, norm_copies, layer, lm_head
        gc.collect()
        return {"text_implementation": kind, "text_impl_detail": impl}

    # ---- vision -----------------------------------------------------------------------------

    def vision(self):
        phase = f"prefill:{self.args.patches}"
        components = ["vision.patch_conv", "vision.layers.0.attention_norm", "vision.layers.0.attention",
                      "vision.layers.0.feed_forward", "vision.layers.0", "projector"]
        if not any(self.wanted(c, phase) for c in components):
            return None
        try:
            from transformers import Mistral3Config, PixtralVisionConfig
            from transformers.models.mistral3.modeling_mistral3 import Mistral3MultiModalProjector
            from transformers.models.pixtral.modeling_pixtral import PixtralVisionModel
        except ImportError as e:
            print(f"  vision: skipped (transformers {transformers.__version__}: {e})", file=sys.stderr)
            return {"vision_implementation": f"none ({e})"}
        vc = {k: v for k, v in self.cfg["vision_config"].items() if k != "model_type"}
        vc["num_hidden_layers"] = 1
        side = int(round(math.sqrt(self.args.patches))) * vc["patch_size"]
        dev, dtype = self.device, self.dtype
        kwargs = {"attn_implementation": self.args.attn} if self.args.attn else {}
        vconfig = PixtralVisionConfig(**vc)
        with torch.device(dev):
            tower = PixtralVisionModel._from_config(vconfig, dtype=dtype, **kwargs)
            top = {k: v for k, v in self.cfg.items() if k not in ("text_config", "vision_config",
                                                                  "quantization_config", "architectures")}
            # the projector reads only the text hidden size and eps: a plain Mistral text config keeps
            # this working on a transformers without Mistral4
            text_stub = {"model_type": "mistral", "hidden_size": self.cfg["text_config"]["hidden_size"],
                         "rms_norm_eps": self.cfg["text_config"].get("rms_norm_eps", 1e-6), "num_hidden_layers": 1}
            mconfig = Mistral3Config(text_config=text_stub, vision_config=copy.deepcopy(vconfig), **{k: top[k] for k in (
                                         "spatial_merge_size", "projector_hidden_act",
                                         "multimodal_projector_bias", "vision_feature_layer") if k in top})
            projector = Mistral3MultiModalProjector(mconfig).to(dtype)
            for p in projector.parameters():
                if p.dim() >= 2:
                    nn.init.normal_(p, std=0.02)
        tower.eval()
        impl = (f"transformers {transformers.__version__} Pixtral/Mistral3 "
                f"(attn {getattr(vconfig, '_attn_implementation', '?')})")
        gen = torch.Generator(device="cpu").manual_seed(1)
        P = (side // vc["patch_size"]) ** 2
        pixels = (torch.rand(1, vc["num_channels"], side, side, generator=gen) * 2 - 1).to(dev, dtype)
        x = (torch.rand(1, P, vc["hidden_size"], generator=gen) * 2 - 1).to(dev, dtype)
        grid = side // vc["patch_size"]
        rows, cols = torch.meshgrid(torch.arange(grid, device=dev), torch.arange(grid, device=dev), indexing="ij")
        position_ids = torch.stack([rows.flatten(), cols.flatten()], dim=-1)
        with torch.inference_mode():
            cos_sin = tower.patch_positional_embedding(x, position_ids)
        layer = tower.transformer.layers[0]
        image_sizes = torch.tensor([[side, side]], device=dev)
        lbl = f"P={P} one {side}x{side} image"
        self.case("vision.patch_conv", phase, P, P, lambda i: tower.patch_conv(pixels), impl, lbl)
        self.case("vision.layers.0.attention_norm", phase, P, P, lambda i: layer.attention_norm(x), impl, lbl)
        self.case("vision.layers.0.attention", phase, P, P,
                  lambda i: layer.attention(hidden_states=x, attention_mask=None, position_embeddings=cos_sin),
                  impl, lbl)
        self.case("vision.layers.0.feed_forward", phase, P, P, lambda i: layer.feed_forward(x), impl, lbl)
        self.case("vision.layers.0", phase, P, P,
                  lambda i: layer(x, attention_mask=None, position_embeddings=cos_sin), impl, lbl)
        self.case("projector", phase, P, P, lambda i: projector(x[0], image_sizes), impl, lbl)
        del tower, projector
        gc.collect()
        return {"vision_implementation": impl}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="the model's config.json (default: %(default)s)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto: cuda when available, else cpu")
    ap.add_argument("--dtype", choices=["auto", "bf16", "fp32", "fp16"], default="auto",
                    help="weights and activations (auto: bf16)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for the 'all' cases (default: every CPU)")
    ap.add_argument("--no-single-thread", action="store_true", help="CPU: skip the 1-thread decode cases")
    ap.add_argument("--prefill", type=int, default=128, help="prefill tokens (default: %(default)s, as the C side)")
    ap.add_argument("--patches", type=int, default=256,
                    help="vision patches, a square (default: %(default)s = one 224x224 image)")
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per case (default: %(default)s)")
    ap.add_argument("--max-iterations", type=int, default=100000)
    ap.add_argument("--repetitions", type=int, default=1,
                    help="timed batches per case; the median is reported (default: %(default)s)")
    ap.add_argument("--only", help="regular expression over 'component/phase' (e.g. 'self_attn/decode')")
    ap.add_argument("--impl", choices=["auto", "hf", "plain"], default="auto",
                    help="text layer: transformers' Mistral4 (auto: when present) or the plain-torch transcription")
    ap.add_argument("--attn", help="attn_implementation to request (default: transformers' own default)")
    ap.add_argument("--experts", help="experts_implementation to request (default: transformers' own default)")
    ap.add_argument("--quiet-pct", type=float, default=0.0,
                    help="CPU: before each case wait (at most 2 min) until other processes use less than "
                         "this %% of the CPUs (0: do not wait); each row reports others_cpu_pct")
    ap.add_argument("--out", help="JSON file to write (default: stdout summary only)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    try:
        cfg = json.loads(Path(args.config).read_text())
    except (OSError, ValueError) as e:
        fail(f"cannot read config {args.config}: {e}")
    if "text_config" not in cfg:
        fail(f"{args.config}: not a Mistral3 config (no text_config)")
    if args.impl == "hf" and not has_hf_mistral4():
        fail(f"--impl hf: transformers {transformers.__version__} has no Mistral4")
    if math.isqrt(args.patches) ** 2 != args.patches:
        fail(f"--patches {args.patches}: must be a square number")

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            fail("--device cuda: no CUDA device")
    dtype = {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    runner = Runner(args, cfg, device, dtype)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"{runner.dtype_name}", flush=True)
    info = {}
    info.update(runner.text() or {})
    info.update(runner.vision() or {})

    context = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host_name": socket.gethostname(),
        "executable": "bench/torch_baseline.py",
        "num_cpus": os.cpu_count(),
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else [],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch_threads": torch.get_num_threads() if device.type == "cpu" else None,
        "dtype": runner.dtype_name,
        "config": str(args.config),
        "prefill_tokens": args.prefill,
        "vision_patches": args.patches,
        "min_time_s": args.min_time,
        "timing": "CUDA events around a batch of calls" if device.type == "cuda"
                  else "time.perf_counter around a batch of calls (after one warm-up call)",
        "implementation": info.get("text_implementation", "none"),
        **info,
    }
    if device.type == "cpu":
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    context["device_name"] = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    result = {"context": context, "benchmarks": runner.rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"torch_baseline: {len(runner.rows)} rows in {args.out}")
    errors = sum(1 for r in runner.rows if r.get("error_occurred"))
    return 1 if errors and errors == len(runner.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
