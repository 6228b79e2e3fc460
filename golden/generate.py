#!/usr/bin/env python3
"""Golden-activation generator for mistral4.c (golden/generate.py).

Builds tiny random-weight Mistral 4 models from configs, saves them with
`save_pretrained`, runs them with Hugging Face Transformers on the CPU in float32
(eager attention, eager experts, no hub kernels) and writes every component's
inputs, outputs and intermediates to one HDF5 file per case.  The layout is
documented in golden/README.md; the C harness reads these files with the HDF5 C API.

Run it through scripts/make-golden, which creates the pinned venv
(golden/requirements.txt) and sets the environment:

    scripts/make-golden                       # regenerate golden/cases/* + golden/MANIFEST.json
    scripts/make-golden --config C.json --out DIR [--images IMG...] [--positions START]
"""

import os

# Must be set before transformers is imported: never fetch kernels or files from the hub.
os.environ["USE_HUB_KERNELS"] = "0"  # forced: goldens never use hub kernels
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # forced: goldens are CPU-only

import argparse
import contextlib
import copy
import hashlib
import importlib.util
import io
import json
import math
import re
import shutil
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import PIL
import safetensors
import safetensors.torch
import torch
import torchvision
import transformers
from PIL import Image, ImageDraw
from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
from transformers import (
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    Mistral4Config,
    Mistral4ForCausalLM,
    PixtralImageProcessor,
    PixtralProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.mistral4 import modeling_mistral4 as hf_m4
from transformers.models.pixtral import modeling_pixtral as hf_px

GOLDEN_DIR = Path(__file__).resolve().parent
CASES_DIR = GOLDEN_DIR / "cases"
MANIFEST = GOLDEN_DIR / "MANIFEST.json"
GENERATOR = "golden/generate.py"
H5_LIBVER = ("v110", "v110")  # readable by HDF5 >= 1.10 (Debian 12 ships 1.10.8)
GZIP_MIN_BYTES = 4096
MAX_USER_PARAMS = 200_000_000  # refuse user configs whose float32 weights exceed ~800 MB

# Special token ids of the Tekken vocabulary (MODEL.md §6.3); ordinary token ids are >= 20.
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                  "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
                  "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                  "[TOOL_CONTENT]"]
BOS, PAD, IMG, IMG_BREAK, IMG_END, FIRST_WORD = 1, 11, 10, 12, 13, 20
NEW_TOKENS = 4  # greedy tokens generated per case

# Linears stored as FP8 E4M3 in the published checkpoint (MODEL.md §5.2, §5.4).
FP8_LINEARS = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj",
               "shared_experts.gate_proj", "shared_experts.up_proj", "shared_experts.down_proj")
FP8_EXPERTS = ("gate_up_proj", "down_proj")
FP8_MAX = 448.0
FP8_DEQUANT_RULE = ("W_f32 = float32(W_f8_e4m3) * weight_scale_inv (scalar, product in float32); experts: "
                    "W_f32[e] = float32(W_f8[e]) * <name>_scale_inv[e,0,0]; quantised as scale = amax(|W|)/448 "
                    "(per tensor; per expert for fused experts), W_f8 = float8_e4m3fn(clamp(W / scale, -448, 448)) "
                    "(round to nearest even); every non-FP8 tensor is stored BF16 and run as float32(bf16)")


class GoldenError(Exception):
    """Bad input or an unexpected Transformers behaviour; printed without a traceback."""


# --------------------------------------------------------------------------------------------
# Configs of the committed cases
# --------------------------------------------------------------------------------------------

def tiny_text_config(**overrides):
    """The text_tiny Mistral4Config: tiny dims, the real structure (MLA, YaRN, Llama-4 scale, MoE)."""
    cfg = dict(
        vocab_size=512, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=16,
        n_routed_experts=16, num_experts_per_tok=4, n_shared_experts=1,
        n_group=1, topk_group=1, first_k_dense_replace=0, norm_topk_prob=True, routed_scaling_factor=1.0,
        hidden_act="silu", rms_norm_eps=1e-5, max_position_embeddings=256,
        rope_interleave=True, tie_word_embeddings=False,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=2,
        rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                             original_max_position_embeddings=64, max_position_embeddings=256,
                             beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0,
                             llama_4_scaling_beta=0.1),
    )
    cfg.update(overrides)
    return cfg


def tiny_vision_config():
    """A tiny PixtralVisionConfig: hidden 32, 2 layers, 2 heads (head_dim 16), patch 4, max grid 8x8."""
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_channels=3, image_size=32, patch_size=4, hidden_act="silu",
                rope_parameters=dict(rope_type="default", rope_theta=10000.0))


def tiny_vlm_config():
    return dict(model_type="mistral3", architectures=["Mistral3ForConditionalGeneration"],
                text_config=dict(model_type="mistral4", **tiny_text_config()),
                vision_config=dict(model_type="pixtral", **tiny_vision_config()),
                image_token_index=IMG, spatial_merge_size=2, projector_hidden_act="gelu",
                vision_feature_layer=-1, multimodal_projector_bias=False, tie_word_embeddings=False)


def config_from_dict(d):
    """Mistral3Config (text mistral4 + vision pixtral) or bare Mistral4Config from a config.json dict."""
    d = copy.deepcopy(d)
    mt = d.get("model_type")
    for k in ("transformers_version", "architectures", "quantization_config", "dtype", "torch_dtype"):
        d.pop(k, None)
    if mt == "mistral4":
        d.pop("model_type")
        return Mistral4Config(**d)
    if mt == "mistral3":
        d.pop("model_type")
        tc, vc = d.get("text_config"), d.get("vision_config")
        if not isinstance(tc, dict) or tc.get("model_type") != "mistral4":
            raise GoldenError("mistral3 config: text_config.model_type must be 'mistral4'")
        if not isinstance(vc, dict) or vc.get("model_type") != "pixtral":
            raise GoldenError("mistral3 config: vision_config.model_type must be 'pixtral'")
        return Mistral3Config(**d)
    raise GoldenError(f"config model_type must be 'mistral3' or 'mistral4', got {mt!r}")


def model_class(config):
    return Mistral3ForConditionalGeneration if config.model_type == "mistral3" else Mistral4ForCausalLM


def text_config_of(config):
    return config.text_config if config.model_type == "mistral3" else config


# --------------------------------------------------------------------------------------------
# Weights: deterministic random init, save, reload
# --------------------------------------------------------------------------------------------

def init_weights(model, seed):
    """Overwrite every parameter with seeded values that keep activations O(1) and softmaxes non-flat.

    1-D parameters (all norm weights; the models have no biases) ~ 1 + 0.1 N(0,1); token embeddings
    ~ N(0,1); router weights ~ N(0, (2/sqrt(in))^2) so router logits have std ~2; every other matrix
    ~ N(0, 1/in) with `in` its fan-in (last dim; all input dims for the patch conv).
    """
    gen = torch.Generator().manual_seed(seed)
    norms = {f"{path}.weight" for path, m in model.named_modules() if type(m).__name__.endswith("RMSNorm")}
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.ndim == 1:
                if name not in norms:
                    raise GoldenError(f"unexpected 1-D parameter {name} (bias?)")
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
            elif "embed_tokens" in name:
                v = torch.randn(p.shape, generator=gen)
            else:
                fan_in = math.prod(p.shape[1:]) if p.ndim == 4 else p.shape[-1]
                std = (2.0 if name.endswith("mlp.gate.weight") else 1.0) / math.sqrt(fan_in)
                v = std * torch.randn(p.shape, generator=gen)
            p.copy_(v.to(p.dtype))


def build_random_model(config, seed):
    torch.manual_seed(seed)
    model = model_class(config)(config).to(torch.float32).eval()
    init_weights(model, seed)
    return model


def load_eager(model_dir, cls):
    """from_pretrained in float32 on the CPU, eager attention, eager experts, no kernels."""
    model = cls.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager",
                                experts_implementation="eager", use_kernels=False, device_map=None).eval()
    tc = text_config_of(model.config)
    impls = {"attn": tc._attn_implementation, "experts": tc._experts_implementation}
    if model.config.model_type == "mistral3":
        impls["vision_attn"] = model.config.vision_config._attn_implementation
    if set(impls.values()) != {"eager"}:
        raise GoldenError(f"could not force eager implementations: {impls}")
    for p in model.parameters():
        if p.dtype != torch.float32 or p.device.type != "cpu":
            raise GoldenError("model did not load as float32 on the CPU")
    return model


def mla_scale_rule(model):
    """Detect the MLA softmax-scale rule from the instantiated attention module (MODEL.md §0.1)."""
    tc = text_config_of(model.config)
    attn = next(m for m in model.modules() if isinstance(m, hf_m4.Mistral4Attention))
    base = tc.qk_head_dim ** -0.5
    rp = tc.rope_parameters
    m = hf_m4.yarn_get_mscale(rp.get("factor", 1.0), rp.get("mscale_all_dim") or 0.0)
    if attn.scaling == base:
        rule = "base"
    elif math.isclose(attn.scaling, base * m * m, rel_tol=1e-12):
        rule = "mscale2"
    else:
        raise GoldenError(f"MLA scaling {attn.scaling!r} is neither base {base!r} nor base*mscale^2")
    if m == 1.0:  # the rules coincide (default rope, factor <= 1 or mscale_all_dim 0)
        rule = "base" if attn.scaling == base else rule
    return rule, float(attn.scaling)


# --------------------------------------------------------------------------------------------
# Capture: module hooks + wrapped HF functions
# --------------------------------------------------------------------------------------------

def component_name(path, vlm):
    """HF module path -> the project's dotted component name (docs/ARCHITECTURE.md)."""
    rules = [("model.language_model.", "text.")] if vlm else [("model.", "text.")]
    rules += [("lm_head", "text.lm_head"),
              ("model.vision_tower.transformer.layers.", "vision.layers."),
              ("model.vision_tower.patch_positional_embedding", "vision.rope"),
              ("model.vision_tower.", "vision."),
              ("model.multi_modal_projector", "projector")]
    for old, new in rules:
        if path.startswith(old):
            return new + path[len(old):]
    return None


# Components captured by module hooks (matched against the component name).
_L = r"layers\.\d+"
HOOKED = [r"text\.embed_tokens", rf"text\.{_L}", rf"text\.{_L}\.(input_layernorm|post_attention_layernorm)",
          rf"text\.{_L}\.self_attn", rf"text\.{_L}\.self_attn\.(q_proj|q_a_proj|q_a_layernorm|q_b_proj|"
          rf"kv_a_proj_with_mqa|kv_a_layernorm|kv_b_proj|o_proj)",
          rf"text\.{_L}\.mlp", rf"text\.{_L}\.mlp\.(gate|experts|shared_experts)", r"text\.norm", r"text\.lm_head",
          r"vision\.patch_conv", r"vision\.ln_pre", r"vision\.rope", rf"vision\.{_L}",
          rf"vision\.{_L}\.(attention_norm|attention|ffn_norm|feed_forward)",
          r"projector", r"projector\.(norm|patch_merger|linear_1|act|linear_2)"]

# Submodule outputs that self_attn also exposes under a short name (HDF5 soft links).
ATTN_ALIASES = {"q_a_proj": ("out", "q_a"), "q_a_layernorm": ("out", "q_a_norm"), "q_b_proj": ("out", "q"),
                "q_proj": ("out", "q"), "kv_a_proj_with_mqa": ("out", "kv_a"), "kv_a_layernorm": ("out", "c_kv"),
                "kv_b_proj": ("out", "kv_b"), "o_proj": ("in", "attn_output")}


def _arg(args, kwargs, i, name):
    if len(args) > i:
        return args[i]
    if name in kwargs:
        return kwargs[name]
    raise GoldenError(f"hook: argument {name} not found")


def _first(x):
    return x if isinstance(x, torch.Tensor) else x[0]


class Recorder:
    """Collects tensors per component group while `active`; refuses to record a dataset twice."""

    def __init__(self):
        self.groups = {}   # group -> {dataset: tensor | ("link", group, dataset)}
        self.attrs = {}    # group -> {attr: str}
        self.active = False
        self.current = {}  # "text"/"vision" -> component name of the attention module now running
        self.handles = []

    def put(self, group, name, value):
        if not self.active:
            return
        g = self.groups.setdefault(group, {})
        if name in g:
            raise GoldenError(f"{group}/{name} captured twice (a module ran twice in one forward?)")
        g[name] = value.detach().clone() if isinstance(value, torch.Tensor) else value

    def link(self, group, name, target_group, target_name):
        self.put(group, name, ("link", target_group, target_name))

    def attr(self, group, key, value):
        if self.active:
            self.attrs.setdefault(group, {})[key] = str(value)

    # ---- hooks -------------------------------------------------------------------------
    def attach(self, model):
        vlm = model.config.model_type == "mistral3"
        patterns = [re.compile(p + "$") for p in HOOKED]
        for path, mod in model.named_modules():
            if isinstance(mod, hf_m4.Mistral4RotaryEmbedding):  # the text rotary table (one per model)
                self.inv_freq, self.attention_scaling = mod.inv_freq, mod.attention_scaling
            name = component_name(path, vlm)
            if name is None or not any(p.match(name) for p in patterns):
                continue
            self._hook(name, path, mod)
        if vlm:
            lm = model.model.language_model
            self.handles.append(lm.register_forward_pre_hook(self._merge_pre, with_kwargs=True))

    def detach(self):
        for h in self.handles:
            h.remove()
        self.handles = []

    def _hook(self, name, path, mod):
        kind = type(mod)
        reg = lambda pre, post: self.handles.extend(  # noqa: E731
            ([mod.register_forward_pre_hook(pre, with_kwargs=True)] if pre else [])
            + [mod.register_forward_hook(post, with_kwargs=True)])
        post = {hf_m4.Mistral4TopkRouter: self._router, hf_m4.Mistral4Experts: self._experts,
                hf_px.PixtralVisionRotaryEmbedding: self._vision_rope}.get(kind)
        if kind is hf_m4.Mistral4Attention:
            reg(self._enter("text", name), self._leave("text", name, self._io))
        elif kind is hf_px.PixtralAttention:
            reg(self._enter("vision", name), self._leave("vision", name, self._io))
        else:
            reg(None, lambda m, a, k, o: (post or self._io)(name, m, a, k, o))
        self._attr_module(name, path, mod)

    def _attr_module(self, name, path, mod):
        self.attrs.setdefault(name, {}).update(hf_module=path, hf_class=type(mod).__name__)

    def _io(self, name, mod, args, kwargs, out):
        first_in = {"Conv2d": "input", "Embedding": "input", "Linear": "input"}.get(type(mod).__name__,
                                                                                    "hidden_states")
        self.put(name, "in", _arg(args, kwargs, 0, first_in))
        self.put(name, "out", _first(out))
        if isinstance(mod, (hf_m4.Mistral4RMSNorm, hf_px.PixtralRMSNorm)):
            self.attr(name, "eps", repr(float(mod.variance_epsilon)))
        if type(mod).__name__ == "Mistral3PatchMerger":
            self.put(name, "image_sizes", torch.as_tensor(_arg(args, kwargs, 1, "image_sizes")))
        parent, _, leaf = name.rpartition(".")
        if leaf in ATTN_ALIASES and parent.endswith("self_attn"):
            which, alias = ATTN_ALIASES[leaf]
            self.link(parent, alias, name, which)

    def _enter(self, side, name):
        def pre(mod, args, kwargs):
            self.current[side] = name
            cos, sin = kwargs["position_embeddings"]
            mask = kwargs.get("attention_mask")
            if mask is not None:
                self.put(name, "attention_mask", mask)
            if side == "text":
                rope = name + ".rope"
                self.put(rope, "cos", cos)
                self.put(rope, "sin", sin)
                self.put(rope, "inv_freq", self.inv_freq)
                self.put(rope, "position_ids", kwargs["position_ids"])
                self.attr(rope, "attention_scaling", repr(float(self.attention_scaling)))
                self.link(name, "cos", rope, "cos")
                self.link(name, "sin", rope, "sin")
                self.put(name, "position_ids", kwargs["position_ids"])
                self.attr(name, "scaling", repr(float(mod.scaling)))
            else:  # the same tensors vision.rope returned
                self.link(name, "cos", "vision.rope", "cos")
                self.link(name, "sin", "vision.rope", "sin")
                self.attr(name, "scaling", repr(float(mod.scaling)))
        return pre

    def _leave(self, side, name, post):
        def hook(mod, args, kwargs, out):
            post(name, mod, args, kwargs, out)
            self.current[side] = None
        return hook

    def _router(self, name, mod, args, kwargs, out):
        logits, weights, ids = out
        self.put(name, "in", args[0])
        self.put(name, "logits", logits)
        # HF computes scores = router_logits.softmax(-1) inside forward without returning it; the same
        # op on the same tensor is recomputed here (bit-identical on the CPU).
        self.put(name, "scores", logits.softmax(-1))
        self.put(name, "topk_ids", ids)
        self.put(name, "topk_weights", weights)
        for k in ("top_k", "num_group", "topk_group", "norm_topk_prob", "routed_scaling_factor"):
            self.attr(name, k, repr(getattr(mod, k)))
        self.attr(name, "score_function", "softmax")

    def _experts(self, name, mod, args, kwargs, out):
        self.put(name, "in", _arg(args, kwargs, 0, "hidden_states"))
        self.put(name, "topk_ids", _arg(args, kwargs, 1, "top_k_index"))
        self.put(name, "topk_weights", _arg(args, kwargs, 2, "top_k_weights"))
        self.put(name, "out", out)

    def _vision_rope(self, name, mod, args, kwargs, out):
        self.put(name, "position_ids", _arg(args, kwargs, 1, "position_ids"))
        self.put(name, "cos", out[0])
        self.put(name, "sin", out[1])
        self.put(name, "inv_freq", mod.inv_freq)

    def _merge_pre(self, mod, args, kwargs):
        if kwargs.get("inputs_embeds") is not None and "projector" in self.groups:
            self.put("multimodal.merge", "out", kwargs["inputs_embeds"])
            self.link("multimodal.merge", "in", "text.embed_tokens", "out")
            self.link("multimodal.merge", "image_features", "projector", "out")
            self.link("multimodal.merge", "input_ids", "text.embed_tokens", "in")

    # ---- wrapped HF functions (looked up by name at call time in the modeling modules) ----
    @contextlib.contextmanager
    def wrapped_functions(self):
        originals = {}

        def wrap(module, fname, make):
            originals[(module, fname)] = getattr(module, fname)
            setattr(module, fname, make(getattr(module, fname)))

        def text_rope(fn):
            def f(q, k, cos, sin, *a, **kw):
                q2, k2 = fn(q, k, cos, sin, *a, **kw)
                g = self.current.get("text")
                if g:
                    self.put(g, "q_rope_pre", q)
                    self.put(g, "k_rope_pre", k)
                    self.put(g, "q_rope_rot", q2)
                    self.put(g, "k_rope_rot", k2)
                return q2, k2
            return f

        def vision_rope(fn):
            def f(q, k, cos, sin, *a, **kw):
                q2, k2 = fn(q, k, cos, sin, *a, **kw)
                g = self.current.get("vision")
                if g:
                    self.put(g, "q", q)
                    self.put(g, "k", k)
                    self.put(g, "q_rot", q2)
                    self.put(g, "k_rot", k2)
                return q2, k2
            return f

        def llama4(fn):
            def f(position_ids, beta, max_pos):
                s = fn(position_ids, beta, max_pos)
                g = self.current.get("text")
                if g:
                    self.attr(g + ".llama4_scale", "hf_function", f"{fn.__module__}.{fn.__name__}")
                    self.put(g + ".llama4_scale", "position_ids", position_ids)
                    self.put(g + ".llama4_scale", "out", s)
                    self.attr(g + ".llama4_scale", "beta", repr(float(beta)))
                    self.attr(g + ".llama4_scale", "original_max_position_embeddings", repr(max_pos))
                    self.link(g, "llama4_scale", g + ".llama4_scale", "out")
                return s
            return f

        def eager(side):
            def make(fn):
                def f(module, query, key, value, attention_mask, *a, **kw):
                    out, weights = fn(module, query, key, value, attention_mask, *a, **kw)
                    g = self.current.get(side)
                    if g:
                        if side == "text":
                            self.put(g, "q_rot", query)
                            self.put(g, "k_rot", key)
                        self.put(g, "v", value)
                        self.put(g, "attn_weights", weights)
                    return out, weights
                return f
            return make

        wrap(hf_m4, "apply_rotary_pos_emb_interleave", text_rope)
        wrap(hf_m4, "apply_rotary_pos_emb", text_rope)
        wrap(hf_m4, "get_llama_4_attn_scale", llama4)
        wrap(hf_m4, "eager_attention_forward", eager("text"))
        wrap(hf_px, "apply_rotary_pos_emb", vision_rope)
        wrap(hf_px, "eager_attention_forward", eager("vision"))
        try:
            yield
        finally:
            for (module, fname), fn in originals.items():
                setattr(module, fname, fn)


# Datasets every component of that kind must have once a forward ran (a guard against HF changes).
REQUIRED = [
    (r"text\.layers\.\d+\.self_attn", ["in", "out", "position_ids", "attention_mask", "cos", "sin", "q",
                                      "kv_a", "c_kv", "kv_b", "q_rope_pre", "k_rope_pre", "q_rope_rot",
                                      "k_rope_rot", "q_rot", "k_rot", "v", "llama4_scale", "attn_weights",
                                      "attn_output"]),
    (r"text\.layers\.\d+\.self_attn\.rope", ["cos", "sin", "inv_freq", "position_ids"]),
    (r"text\.layers\.\d+\.mlp\.gate", ["in", "logits", "scores", "topk_ids", "topk_weights"]),
    (r"text\.layers\.\d+\.mlp\.experts", ["in", "topk_ids", "topk_weights", "out"]),
    (r"vision\.layers\.\d+\.attention", ["in", "out", "cos", "sin", "attention_mask", "q", "k", "q_rot",
                                        "k_rot", "v", "attn_weights"]),
    (r"vision\.rope", ["position_ids", "cos", "sin"]),
    (r"multimodal\.merge", ["in", "out", "image_features"]),
]


def check_complete(groups, config):
    for pat, names in REQUIRED:
        for g, ds in groups.items():
            if re.fullmatch(pat, g):
                missing = [n for n in names if n not in ds]
                if missing:
                    raise GoldenError(f"{g}: datasets not captured: {missing} (HF module structure changed?)")
    tc = text_config_of(config)
    for i in range(tc.num_hidden_layers):
        for leaf in ("", ".input_layernorm", ".self_attn", ".post_attention_layernorm", ".mlp"):
            if f"text.layers.{i}{leaf}" not in groups:
                raise GoldenError(f"component text.layers.{i}{leaf} not captured")


# --------------------------------------------------------------------------------------------
# HDF5 writing
# --------------------------------------------------------------------------------------------

def set_str_attr(obj, key, value):
    """Fixed-length, NUL-terminated ASCII string attribute (C: H5LTget_attribute_string)."""
    data = str(value).encode("ascii")
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(len(data) + 1)
    tid.set_strpad(h5py.h5t.STR_NULLTERM)
    tid.set_cset(h5py.h5t.CSET_ASCII)
    if key in obj.attrs:
        del obj.attrs[key]
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    attr = h5py.h5a.create(obj.id, key.encode("ascii"), tid, space)
    attr.write(np.array(data + b"\0", dtype=f"S{len(data) + 1}"), mtype=tid)


def to_numpy(t):
    if isinstance(t, np.ndarray):
        a = t
    elif isinstance(t, torch.Tensor):
        t = t.detach().cpu().contiguous()
        if t.dtype.is_floating_point and t.dtype != torch.float32:
            raise GoldenError(f"refusing to record a {t.dtype} tensor: only float32 activations are stored")
        a = t.numpy()
    else:
        a = np.asarray(t)
    if a.dtype == np.bool_:
        a = a.astype(np.int64)
    elif a.dtype.kind in "iu" and a.dtype != np.uint8:
        a = a.astype(np.int64)
    elif a.dtype.kind == "f" and a.dtype != np.float32:
        raise GoldenError(f"refusing to record {a.dtype} data")
    return np.ascontiguousarray(a) if a.ndim else a


class D:
    """A dataset value with its own (string) attributes."""

    def __init__(self, value, attrs):
        self.value, self.attrs = value, attrs


def write_dataset(group, name, value):
    attrs = {}
    if isinstance(value, D):
        value, attrs = value.value, value.attrs
    a = to_numpy(value)
    kw = {}
    if a.nbytes > GZIP_MIN_BYTES and a.ndim > 0:
        kw = dict(compression="gzip", compression_opts=6, shuffle=True, chunks=True)
    ds = group.create_dataset(name, data=a, track_times=False, **kw)
    for k, v in attrs.items():
        set_str_attr(ds, k, v)


def write_h5(path, root_attrs, sections):
    """sections: ordered {group path: ({dataset: tensor | array | D | ("link", g, d)}, {attr: str} | None)}."""
    with h5py.File(path, "w", libver=H5_LIBVER, track_order=False) as f:
        for k, v in root_attrs.items():
            set_str_attr(f, k, v)
        links = []
        for gname, (datasets, attrs) in sections.items():
            g = f.require_group(gname)
            for k, v in (attrs or {}).items():
                set_str_attr(g, k, v)
            for dname, v in datasets.items():
                if isinstance(v, tuple) and v and v[0] == "link":
                    links.append((g, dname, f"/{v[1]}/{v[2]}"))
                else:
                    write_dataset(g, dname, v)
        for g, dname, target in links:
            if target not in f:
                raise GoldenError(f"soft link {g.name}/{dname} -> {target}: target missing")
            g[dname] = h5py.SoftLink(target)


def h5_inventory(path):
    """{group: {dataset: "dtype[shape]" or "-> /soft/link/target"}} for MANIFEST.json."""
    inv = {}

    def walk(g):
        for name in g:
            link = g.get(name, getlink=True)
            if isinstance(link, h5py.SoftLink):
                inv.setdefault(g.name, {})[name] = "-> " + link.path
            elif isinstance(g[name], h5py.Group):
                walk(g[name])
            else:
                ds = g[name]
                inv.setdefault(g.name, {})[name] = f"{ds.dtype.name}{list(ds.shape)}"

    with h5py.File(path, "r") as f:
        walk(f)
    return inv


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def generator_sha256():
    return sha256_file(Path(__file__).resolve())


def versions():
    return {"transformers": transformers.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version, "numpy": np.__version__, "pillow": PIL.__version__,
            "safetensors": safetensors.__version__, "python": sys.version.split()[0]}


def root_attrs(case, seed, config_json, extra=None):
    v = versions()
    a = {"generator": GENERATOR, "generator_sha256": generator_sha256(),
         "transformers_version": v["transformers"], "torch_version": v["torch"],
         "torchvision_version": v["torchvision"], "h5py_version": v["h5py"], "hdf5_version": v["hdf5"],
         "numpy_version": v["numpy"], "pillow_version": v["pillow"], "safetensors_version": v["safetensors"],
         "seed": str(seed), "dtype": "float32", "device": "cpu", "config_json": config_json, "case": case}
    a.update(extra or {})
    return a


# --------------------------------------------------------------------------------------------
# Images, tokenizer, processor
# --------------------------------------------------------------------------------------------

def synth_image(width, height, mode, seed, fmt):
    """A deterministic test picture (gradients, shapes, mild noise) encoded as PNG or JPEG bytes."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1),
                     127.5 + 127.5 * np.sin((x + 2 * y) / max(width, height) * 6.0)], axis=-1)
    base += rs.normal(0, 12, base.shape)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = rs.randint(0, width), rs.randint(0, height)
        x1, y1 = x0 + rs.randint(1, max(2, width // 2)), y0 + rs.randint(1, max(2, height // 2))
        d.rectangle([x0, y0, x1, y1], fill=tuple(int(c) for c in rs.randint(0, 256, 3)))
    if mode == "RGBA":
        alpha = np.clip(255 * (0.2 + 0.8 * x / max(width - 1, 1)) + rs.normal(0, 20, x.shape), 0, 255)
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray(alpha.astype(np.uint8), "L"))
    elif mode == "L":
        img = img.convert("L")
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=90, subsampling=2, optimize=False)
    else:
        img.save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def make_tokenizer(vocab_size):
    """A word-level tokenizer with the Tekken special ids 0..19 and words 'w<id>' for ids >= 20.

    Only there so the real PixtralProcessor can expand [IMG] placeholders; the cases' text is
    written as 'w<id>' words so the ids are exactly what the prompt lists.
    """
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"w{i}": i for i in range(FIRST_WORD, vocab_size)})
    tk = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>")
    tok.add_special_tokens({"additional_special_tokens": ["[IMG]", "[IMG_BREAK]", "[IMG_END]"]})
    ids = tok.convert_tokens_to_ids(["[IMG]", "[IMG_BREAK]", "[IMG_END]", "<s>", "<pad>"])
    if ids != [IMG, IMG_BREAK, IMG_END, BOS, PAD]:
        raise GoldenError(f"tokenizer special ids wrong: {ids}")
    return tok


def make_processor(patch_size, merge, longest_edge, vocab_size):
    ip = PixtralImageProcessor(patch_size={"height": patch_size, "width": patch_size},
                               size={"longest_edge": longest_edge})
    return PixtralProcessor(image_processor=ip, tokenizer=make_tokenizer(vocab_size), patch_size=patch_size,
                            spatial_merge_size=merge)


def processor_attrs(proc):
    ip = proc.image_processor
    return {"image_processor_class": f"{type(ip).__module__}.{type(ip).__name__}",
            "processor_class": f"{type(proc).__module__}.{type(proc).__name__}",
            "processor_patch_size": str(proc.patch_size),
            "processor_spatial_merge_size": str(proc.spatial_merge_size),
            "image_processor_json": json.dumps(ip.to_dict(), sort_keys=True, default=str)}


def words(ids):
    return " ".join("<s>" if i == BOS else f"w{i}" for i in ids)


def multimodal_prompt(proc, image_bytes, rng, vocab_size):
    """'<s> w.. w.. [IMG] w.. [IMG] w..' -> processor (expands each [IMG] as MODEL.md §3.7)."""
    parts = ["<s>"]
    for _ in image_bytes:
        parts += [words(torch.randint(FIRST_WORD, vocab_size, (2,), generator=rng).tolist()), "[IMG]"]
    parts.append(words(torch.randint(FIRST_WORD, vocab_size, (3,), generator=rng).tolist()))
    images = [Image.open(io.BytesIO(b)) for b in image_bytes]
    out = proc(text=[" ".join(parts)], images=images, return_tensors="pt")
    return out


# --------------------------------------------------------------------------------------------
# One model case
# --------------------------------------------------------------------------------------------

def left_padded_positions(attention_mask):
    """position_ids as generate() builds them for a 2-D mask: cumsum(mask)-1, 0 at padding."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


def run_case(case, out_dir, model_dir, seed, inputs, images=(), extra_attrs=None, config_json=None):
    """Load model_dir eagerly, capture one forward, run greedy generate, write <out_dir>/<case>.h5.

    inputs: input_ids, attention_mask, position_ids (+ pixel_values, image_sizes for images).
    images: [(filename, bytes)] stored raw under /inputs/image_files.
    """
    config = config_from_dict(json.loads((model_dir / "config.json").read_text()))
    model = load_eager(model_dir, model_class(config))
    rule, scale = mla_scale_rule(model)
    rec = Recorder()
    rec.attach(model)
    with torch.no_grad(), rec.wrapped_functions():
        rec.active = True
        out = model(**inputs, use_cache=False, logits_to_keep=0, return_dict=True)
        rec.active = False
    rec.detach()
    check_complete(rec.groups, model.config)
    rec.groups.setdefault("model", {})
    rec.groups["model"]["in"] = inputs["input_ids"]
    if not torch.equal(out.logits, rec.groups["text.lm_head"]["out"]):
        raise GoldenError("model logits differ from lm_head output")
    rec.groups["model"]["logits"] = ("link", "text.lm_head", "out")

    with torch.no_grad():
        gen = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1,
                             pad_token_id=PAD, use_cache=True)
    prompt_len = inputs["input_ids"].shape[1]

    sections = {"inputs": (dict(inputs), None)}
    if images:
        sections["inputs/image_files"] = ({str(k): D(np.frombuffer(data, dtype=np.uint8), {"filename": fname})
                                           for k, (fname, data) in enumerate(images)}, None)
    for g, ds in rec.groups.items():
        sections[g] = (ds, rec.attrs.get(g))
    sections["generate"] = ({"ids": gen, "prompt_len": np.int64(prompt_len)},
                            {"max_new_tokens": str(NEW_TOKENS), "do_sample": "False", "use_cache": "True",
                             "method": "transformers generate() greedy, position_ids continue +1"})
    attrs = root_attrs(case, seed, config_json or (model_dir / "config.json").read_text(),
                       {"mla_softmax_scale_rule": rule, "mla_softmax_scale": repr(scale),
                        "attn_implementation": "eager", "experts_implementation": "eager",
                        "use_kernels": "False", "kernels_package_installed":
                            str(importlib.util.find_spec("kernels") is not None)})
    attrs.update(extra_attrs or {})
    h5_path = out_dir / f"{case}.h5"
    write_h5(h5_path, attrs, sections)
    return h5_path


def fresh_dir(path):
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def save_model(model, model_dir):
    model.save_pretrained(str(model_dir))


def text_inputs(rng, vocab_size, batch, seq, pad_left=(), positions=None):
    """Random word ids >= 20 after a BOS; row b gets pad_left[b] left pads (mask 0, id <pad>)."""
    ids = torch.randint(FIRST_WORD, vocab_size, (batch, seq), generator=rng)
    mask = torch.ones(batch, seq, dtype=torch.long)
    for b in range(batch):
        npad = pad_left[b] if b < len(pad_left) else 0
        ids[b, :npad] = PAD
        mask[b, :npad] = 0
        ids[b, npad] = BOS
    pos = left_padded_positions(mask) if positions is None else positions
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos}


# --------------------------------------------------------------------------------------------
# The committed cases (one function each)
# --------------------------------------------------------------------------------------------

def case_text_tiny(root, seed=1234):
    """Bare Mistral4ForCausalLM, B=2 (row 0 left-padded by 3), S=10."""
    d = root / "text_tiny"
    fresh_dir(d)
    config = Mistral4Config(**tiny_text_config())
    save_model(build_random_model(config, seed), d / "model")
    rng = torch.Generator().manual_seed(seed + 1)
    return run_case("text_tiny", d, d / "model", seed, text_inputs(rng, config.vocab_size, 2, 10, pad_left=(3, 0)))


def case_long_positions(root, seed=1234):
    """text_tiny's model (same seed -> identical weights) at positions far beyond original_max (64).

    Row 0: 197..208 (3*64+5 onwards, llama4 scale 1+0.1 ln 4); row 1: 60..65 then 1000..1005 (crosses
    64 and jumps, scales 1, 1+0.1 ln 2, 1+0.1 ln 16).  An all-ones attention_mask is passed, so HF does
    not treat the jump as a packed-sequence boundary (it would with attention_mask=None).
    """
    d = root / "long_positions"
    fresh_dir(d)
    config = Mistral4Config(**tiny_text_config())
    save_model(build_random_model(config, seed), d / "model")
    orig = config.rope_parameters["original_max_position_embeddings"]
    pos = torch.tensor([list(range(3 * orig + 5, 3 * orig + 17)),
                        list(range(orig - 4, orig + 2)) + list(range(1000, 1006))])
    rng = torch.Generator().manual_seed(seed + 2)
    return run_case("long_positions", d, d / "model", seed,
                    text_inputs(rng, config.vocab_size, 2, 12, positions=pos))


def case_routing_variants(root, seed=3456):
    """Dense first layer, grouped routing (4 groups, top-2 groups), no top-k renorm, routed scale 2.5,
    2 shared experts, 3 layers."""
    d = root / "routing_variants"
    fresh_dir(d)
    config = Mistral4Config(**tiny_text_config(num_hidden_layers=3, first_k_dense_replace=1, n_group=4,
                                               topk_group=2, norm_topk_prob=False, routed_scaling_factor=2.5,
                                               n_shared_experts=2, rms_norm_eps=1e-6))
    save_model(build_random_model(config, seed), d / "model")
    rng = torch.Generator().manual_seed(seed + 1)
    return run_case("routing_variants", d, d / "model", seed, text_inputs(rng, config.vocab_size, 2, 9))


MM_IMAGES = [("image0_rgb_30x19.png", 30, 19, "RGB", "PNG"), ("image1_rgba_22x40.png", 22, 40, "RGBA", "PNG")]


def vlm_inputs(config, d, rng, seed, image_specs):
    """Write the case's images, run them through the real PixtralProcessor, return (inputs, images, attrs)."""
    vc = config.vision_config
    proc = make_processor(vc.patch_size, config.spatial_merge_size, vc.image_size, config.text_config.vocab_size)
    images = []
    for k, (fname, w, h, mode, fmt) in enumerate(image_specs):
        data = synth_image(w, h, mode, seed + 10 + k, fmt)
        (d / fname).write_bytes(data)
        images.append((fname, data))
    enc = multimodal_prompt(proc, [b for _, b in images], rng, config.text_config.vocab_size)
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
              "position_ids": left_padded_positions(enc["attention_mask"]),
              "pixel_values": enc["pixel_values"], "image_sizes": enc["image_sizes"]}
    return inputs, images, processor_attrs(proc)


def case_multimodal(root, seed=2345):
    """Mistral3ForConditionalGeneration (Pixtral + projector + Mistral4), two images (RGB 30x19, RGBA 22x40)."""
    d = root / "multimodal"
    fresh_dir(d)
    config = config_from_dict(tiny_vlm_config())
    save_model(build_random_model(config, seed), d / "model")
    rng = torch.Generator().manual_seed(seed + 1)
    inputs, images, pattrs = vlm_inputs(config, d, rng, seed, MM_IMAGES)
    return run_case("multimodal", d, d / "model", seed, inputs, images, pattrs)


def quantize_fp8(w, per_expert):
    """Per-tensor (or per-expert) FP8 E4M3: scale = amax/448, w8 = e4m3(w/scale). Returns (w8, scale, deq)."""
    if per_expert:
        amax = w.abs().amax(dim=(1, 2), keepdim=True)
    else:
        amax = w.abs().amax()
    scale = (amax / FP8_MAX).to(torch.float32)
    w8 = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    deq = w8.to(torch.float32) * scale
    return w8, scale, deq


def fp8_checkpoint(float_dir, out_dir, seed):
    """Rewrite a float32 save_pretrained checkpoint as the published FP8 layout (MODEL.md §5.2).

    Writes out_dir/model.safetensors (+ config.json with the published quantization_config) and
    returns the float32 state dict, in the same on-disk names, that the golden run loads.
    """
    sd = safetensors.torch.load_file(str(float_dir / "model.safetensors"))
    rng = torch.Generator().manual_seed(seed + 7)
    act_scale = lambda shape: (0.002 + 0.018 * torch.rand(shape, generator=rng)).to(torch.float32)  # noqa
    disk, golden = {}, {}
    for name in sorted(sd):
        w = sd[name]
        lin = next((s for s in FP8_LINEARS if name.endswith(f".{s}.weight")), None)
        exp = next((s for s in FP8_EXPERTS if name.endswith(f"mlp.experts.{s}")), None)
        if lin and "vision_tower" not in name and "multi_modal_projector" not in name:
            w8, s, deq = quantize_fp8(w, per_expert=False)
            base = name[: -len(".weight")]
            disk[name], disk[base + ".weight_scale_inv"] = w8, s.reshape(())
            disk[base + ".activation_scale"] = act_scale(())
            golden[name] = deq
        elif exp:
            w8, s, deq = quantize_fp8(w, per_expert=True)
            disk[name], disk[name + "_scale_inv"] = w8, s
            disk[name + "_activation_scale"] = act_scale((w.shape[0],))
            golden[name] = deq
        else:
            disk[name] = w.to(torch.bfloat16)
            golden[name] = disk[name].to(torch.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(disk, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((float_dir / "config.json").read_text())
    cfg["dtype"] = "bfloat16"
    cfg["quantization_config"] = PUBLISHED_QUANTIZATION_CONFIG
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    gen_cfg = float_dir / "generation_config.json"
    if gen_cfg.exists():
        shutil.copy(gen_cfg, out_dir / "generation_config.json")
    return golden


# quantization_config of mistralai/Mistral-Small-4-119B-2603 (shared/fixtures/mistral-small-4-119b-2603.config.json)
PUBLISHED_QUANTIZATION_CONFIG = {"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": None,
                                 "modules_to_not_convert": ["lm_head", "model.vision_tower",
                                                            "model.multi_modal_projector"]}


def case_fp8(root, seed=4567):
    """The multimodal architecture stored as the published FP8 checkpoint; activations from the
    dequantised float32 weights (one image, so vision/projector run from BF16-stored weights)."""
    d = root / "fp8"
    fresh_dir(d)
    config = config_from_dict(tiny_vlm_config())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_model(build_random_model(config, seed), tmp / "float")
        golden_sd = fp8_checkpoint(tmp / "float", d / "model", seed)
        # The golden run loads the dequantised weights through the normal from_pretrained path.
        deq_dir = tmp / "dequantised"
        deq_dir.mkdir()
        safetensors.torch.save_file(golden_sd, str(deq_dir / "model.safetensors"), metadata={"format": "pt"})
        shutil.copy(tmp / "float" / "config.json", deq_dir / "config.json")
        rng = torch.Generator().manual_seed(seed + 1)
        inputs, images, pattrs = vlm_inputs(config, d, rng, seed, MM_IMAGES[:1])
        pattrs["fp8_dequantization_rule"] = FP8_DEQUANT_RULE
        pattrs["fp8_activation_scale_note"] = ("activation_scale tensors are synthetic (seeded uniform "
                                               "0.002..0.02) and unused by the float32 golden run")
        pattrs["golden_weights"] = "dequantised float32 (see fp8_dequantization_rule)"
        return run_case("fp8", d, deq_dir, seed, inputs, images, pattrs,
                        config_json=(d / "model" / "config.json").read_text())


PREPROCESS_IMAGES = [("pre0_rgb_45x31.png", 45, 31, "RGB", "PNG"), ("pre1_rgba_60x90.png", 60, 90, "RGBA", "PNG"),
                     ("pre2_wide_1600x300.jpg", 1600, 300, "RGB", "JPEG"), ("pre3_tiny_5x7.png", 5, 7, "RGB", "PNG"),
                     ("pre4_gray_83x50.jpg", 83, 50, "L", "JPEG")]
PREPROCESS_BATCH = [0, 1, 3]


def case_preprocess(root, seed=5678):
    """Pixtral preprocessing with the real model's settings (patch 14, merge 2, longest edge 1540)."""
    d = root / "preprocess"
    fresh_dir(d)
    proc = make_processor(14, 2, 1540, 131072)
    ip = proc.image_processor
    pattrs = processor_attrs(proc)
    seen = {}
    orig_pre, orig_resize = ip._preprocess, ip.resize

    def spy_pre(images, *a, **kw):  # the RGB uint8 CHW tensors HF decoded (after convert-to-RGB)
        seen.setdefault("decoded", []).extend(images)
        return orig_pre(images, *a, **kw)

    def spy_resize(image, *a, **kw):  # the uint8 bicubic-resized batch
        r = orig_resize(image, *a, **kw)
        seen.setdefault("resized", []).append(r)
        return r

    ip._preprocess, ip.resize = spy_pre, spy_resize  # instance attributes shadow the methods
    sections = {"preprocess": ({}, None)}
    files = []
    for k, (fname, w, h, mode, fmt) in enumerate(PREPROCESS_IMAGES):
        data = synth_image(w, h, mode, seed + k, fmt)
        (d / fname).write_bytes(data)
        files.append(data)
        src = Image.open(io.BytesIO(data))
        seen.clear()
        enc = proc(text=["[IMG]"], images=[src], return_tensors="pt")
        (dec,), (res,) = seen["decoded"], seen["resized"]
        if dec.dtype != torch.uint8 or res.dtype != torch.uint8:
            raise GoldenError(f"preprocess: expected uint8 decode/resize, got {dec.dtype}/{res.dtype}")
        sections[f"preprocess/{k}"] = ({
            "file": np.frombuffer(data, dtype=np.uint8),
            "source_size": np.array([src.height, src.width], dtype=np.int64),
            "decoded": dec.numpy().astype(np.uint8), "resized": res.numpy().astype(np.uint8),
            "pixel_values": enc["pixel_values"], "image_sizes": enc["image_sizes"],
            "input_ids": enc["input_ids"]},
            {"filename": fname, "format": fmt, "mode": src.mode})
    batch_imgs = [Image.open(io.BytesIO(files[k])) for k in PREPROCESS_BATCH]
    enc = proc(text=[" ".join(["[IMG]"] * len(batch_imgs))], images=batch_imgs, return_tensors="pt")
    del ip._preprocess, ip.resize
    sections["preprocess/batch"] = ({"image_index": np.array(PREPROCESS_BATCH, dtype=np.int64),
                                     "pixel_values": enc["pixel_values"], "image_sizes": enc["image_sizes"],
                                     "input_ids": enc["input_ids"]}, None)
    cfg = {"patch_size": 14, "spatial_merge_size": 2, "longest_edge": 1540}
    attrs = root_attrs("preprocess", seed, json.dumps(cfg, sort_keys=True), pattrs)
    path = d / "preprocess.h5"
    write_h5(path, attrs, sections)
    return path


CASES = {"text_tiny": case_text_tiny, "multimodal": case_multimodal, "long_positions": case_long_positions,
         "routing_variants": case_routing_variants, "fp8": case_fp8, "preprocess": case_preprocess}


# --------------------------------------------------------------------------------------------
# User case (--config)
# --------------------------------------------------------------------------------------------

def user_case(args):
    cfg_path = Path(args.config)
    try:
        raw = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise GoldenError(f"--config: no such file: {cfg_path}")
    except json.JSONDecodeError as e:
        raise GoldenError(f"--config: {cfg_path} is not valid JSON: {e}")
    if not isinstance(raw, dict):
        raise GoldenError("--config: the JSON must be an object (a config.json)")
    try:
        config = config_from_dict(raw)
    except GoldenError:
        raise
    except Exception as e:  # config validation errors from transformers
        raise GoldenError(f"--config: transformers rejected the config: {type(e).__name__}: {e}")
    vlm = config.model_type == "mistral3"
    if args.images and not vlm:
        raise GoldenError("--images needs a mistral3 config (vision tower); this config is a bare mistral4")
    if args.positions is not None and args.positions < 0:
        raise GoldenError("--positions must be >= 0")
    with torch.device("meta"):
        n_params = sum(p.numel() for p in model_class(config)(config).parameters())
    if n_params > MAX_USER_PARAMS and not args.force:
        raise GoldenError(f"config has {n_params:,} parameters (> {MAX_USER_PARAMS:,}); golden cases are meant "
                          "to be tiny. Shrink the dims or pass --force")
    images = []
    for p in args.images or ():
        p = Path(p)
        try:
            data = p.read_bytes()
            Image.open(io.BytesIO(data)).load()
        except FileNotFoundError:
            raise GoldenError(f"--images: no such file: {p}")
        except Exception as e:
            raise GoldenError(f"--images: cannot decode {p}: {e}")
        images.append((p.name, data))
    if len({n for n, _ in images}) != len(images):
        raise GoldenError("--images: two images share a file name")
    out = Path(args.out)
    name = args.name or out.name
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise GoldenError(f"case name {name!r}: use letters, digits, '_', '-', '.' only (--name)")
    if out.exists() and any(out.iterdir()) and not (out / "model").is_dir():
        raise GoldenError(f"--out {out} exists and is not empty (and is not a previous case directory)")
    fresh_dir(out)
    seed = args.seed
    save_model(build_random_model(config, seed), out / "model")
    tc = text_config_of(config)
    rng = torch.Generator().manual_seed(seed + 1)
    extra = {"user_config_file": cfg_path.name}
    if images:
        vc = config.vision_config
        proc = make_processor(vc.patch_size, config.spatial_merge_size, vc.image_size, tc.vocab_size)
        for fname, data in images:
            (out / fname).write_bytes(data)
        enc = multimodal_prompt(proc, [b for _, b in images], rng, tc.vocab_size)
        inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                  "pixel_values": enc["pixel_values"], "image_sizes": enc["image_sizes"]}
        extra.update(processor_attrs(proc))
    else:
        inputs = text_inputs(rng, tc.vocab_size, 1, 12)
    start = args.positions or 0
    seq = inputs["input_ids"].shape[1]
    inputs["position_ids"] = (torch.arange(seq) + start).unsqueeze(0).expand(inputs["input_ids"].shape[0], -1)
    inputs["position_ids"] = inputs["position_ids"].contiguous()
    return run_case(name, out, out / "model", seed, inputs, images, extra)


# --------------------------------------------------------------------------------------------
# Manifest + main
# --------------------------------------------------------------------------------------------

def write_manifest(h5_paths):
    cases = {}
    for h5 in h5_paths:
        case_dir = h5.parent
        files = []
        for p in sorted(case_dir.rglob("*")):
            if p.is_file():
                files.append({"path": str(p.relative_to(GOLDEN_DIR)), "sha256": sha256_file(p),
                              "bytes": p.stat().st_size})
        with h5py.File(h5, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}
        cases[case_dir.name] = {
            "h5": str(h5.relative_to(GOLDEN_DIR)), "seed": attrs["seed"],
            "mla_softmax_scale_rule": attrs.get("mla_softmax_scale_rule"),
            "mla_softmax_scale": attrs.get("mla_softmax_scale"),
            "files": files, "datasets": h5_inventory(h5)}
    manifest = {"generator": GENERATOR, "generator_sha256": generator_sha256(),
                "requirements_sha256": sha256_file(GOLDEN_DIR / "requirements.txt"),
                "versions": versions(), "regenerate": "scripts/make-golden", "cases": cases}
    MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="scripts/make-golden",
        description="Generate golden Hugging Face activations (HDF5) for mistral4.c from tiny random-weight "
                    "models. Without arguments: regenerate every committed case into golden/cases/ and "
                    "rewrite golden/MANIFEST.json.",
        epilog="Example: scripts/make-golden --config my_config.json --images a.png b.jpg --positions 9000 "
               "--out /tmp/my_case   (writes /tmp/my_case/model/ and /tmp/my_case/my_case.h5)")
    p.add_argument("--config", metavar="FILE.json",
                   help="HF config.json: a Mistral3Config (text_config mistral4 + vision_config pixtral) or a "
                        "bare Mistral4Config. Weights are random (seeded); quantization_config/dtype are ignored.")
    p.add_argument("--images", nargs="+", metavar="IMG", help="image files for a mistral3 config (PNG/JPEG/...)")
    p.add_argument("--positions", type=int, metavar="START", help="first position id (default 0)")
    p.add_argument("--out", metavar="DIR", help="output directory for --config (required with --config)")
    p.add_argument("--name", help="case name (default: basename of --out)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and token ids with --config (default 0)")
    p.add_argument("--force", action="store_true", help="allow configs above the size guard")
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), metavar="CASE",
                   help=f"regenerate only these committed cases ({', '.join(CASES)}); MANIFEST keeps the others")
    a = p.parse_args(argv)
    if a.config is None:
        for opt in ("images", "positions", "out", "name"):
            if getattr(a, opt) is not None:
                p.error(f"--{opt} only makes sense with --config")
    else:
        if a.out is None:
            p.error("--config needs --out DIR")
        if a.cases:
            p.error("--cases cannot be combined with --config")
    return a


def setup_torch():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    torch.backends.cuda.matmul.allow_tf32 = False
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_torch()
    try:
        if args.config:
            path = user_case(args)
            print(f"wrote {path} (+ {path.parent / 'model'})")
            return 0
        CASES_DIR.mkdir(parents=True, exist_ok=True)
        names = args.cases or list(CASES)
        for name in names:
            print(f"[make-golden] case {name} ...", flush=True)
            CASES[name](CASES_DIR)
        h5s = [CASES_DIR / n / f"{n}.h5" for n in CASES if (CASES_DIR / n / f"{n}.h5").exists()]
        write_manifest(h5s)
        print(f"[make-golden] wrote {len(h5s)} cases and {MANIFEST.relative_to(GOLDEN_DIR.parent)}")
        return 0
    except GoldenError as e:
        print(f"make-golden: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
