"""A Mistral 4 implementation with another module tree, for the torch runner's tests: HF's text
model with q_a_proj and kv_a_proj_with_mqa fused into one `qkv_a_proj`, and the routed experts
stored per expert (`mlp.experts.bank.{e}.{gate,up,down}` nn.Linear) instead of HF's
`gate_up_proj` [E, 2F, D] / `down_proj` [E, D, F] tensors. Its name map says where our rows live in
that tree and how HF's weights become its state dict.

    make(model_dir)        the implementation, correct: every mapped row passes
    make_buggy(model_dir)  the same with a planted layout bug: layer 1's gate and up halves swapped
                           when the experts are split (first divergence text.layers.1.mlp.experts)
"""

import re

import torch
from torch import nn
from transformers import Mistral4ForCausalLM
from transformers.models.mistral4 import modeling_mistral4 as hf

from torchcheck.runner import NameMap, Tap


class FusedLatentAttention(nn.Module):
    """HF's Mistral4Attention with one projection for the q and kv latents: [q_a | kv_a | k_rope]."""

    def __init__(self, attn: hf.Mistral4Attention):
        super().__init__()
        self.config, self.scaling, self.num_key_value_groups = attn.config, attn.scaling, attn.num_key_value_groups
        self.q_lora_rank, self.kv_lora_rank = attn.q_lora_rank, attn.kv_lora_rank
        self.nope, self.rope, self.v_dim = attn.qk_nope_head_dim, attn.qk_rope_head_dim, attn.v_head_dim
        self.qkv_a_proj = nn.Linear(attn.hidden_size, self.q_lora_rank + self.kv_lora_rank + self.rope, bias=False)
        self.q_a_layernorm, self.q_b_proj = attn.q_a_layernorm, attn.q_b_proj
        self.kv_a_layernorm, self.kv_b_proj, self.o_proj = attn.kv_a_layernorm, attn.kv_b_proj, attn.o_proj

    def forward(self, hidden_states, position_embeddings, attention_mask, position_ids, **kwargs):
        B, S = hidden_states.shape[:-1]
        q_a, kv_a = self.qkv_a_proj(hidden_states).split([self.q_lora_rank, self.kv_lora_rank + self.rope], dim=-1)
        q = self.q_b_proj(self.q_a_layernorm(q_a)).view(B, S, -1, self.nope + self.rope).transpose(1, 2)
        q_nope, q_rope = q.split([self.nope, self.rope], dim=-1)
        latent, k_rope = kv_a.split([self.kv_lora_rank, self.rope], dim=-1)
        latent = self.kv_a_layernorm(latent).view(B, 1, S, self.kv_lora_rank)
        k_rope = k_rope.view(B, 1, S, self.rope)
        cos, sin = position_embeddings
        q_rope, k_rope = hf.apply_rotary_pos_emb_interleave(q_rope, k_rope, cos, sin)
        rope = self.config.rope_parameters
        query = torch.cat((q_nope, q_rope), dim=-1) * hf.get_llama_4_attn_scale(
            position_ids, rope.get("llama_4_scaling_beta"), rope.get("original_max_position_embeddings"))
        kv = self.kv_b_proj(latent).view(B, S, -1, self.nope + self.v_dim).transpose(1, 2)
        k_nope, value = kv.split([self.nope, self.v_dim], dim=-1)
        key = torch.cat((k_nope, k_rope.expand(-1, k_nope.shape[1], -1, -1)), dim=-1)
        out, weights = hf.eager_attention_forward(self, query, key, value, attention_mask, scaling=self.scaling,
                                                  dropout=0.0)
        return self.o_proj(out.reshape(B, S, -1)), weights


class Expert(nn.Module):
    def __init__(self, hidden, intermediate):
        super().__init__()
        self.gate = nn.Linear(hidden, intermediate, bias=False)
        self.up = nn.Linear(hidden, intermediate, bias=False)
        self.down = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x):
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x))


class PerExpertMoE(nn.Module):
    """HF's Mistral4Experts with one module per expert: x [N, D], routing [N, K] -> [N, D]."""

    def __init__(self, experts: hf.Mistral4Experts):
        super().__init__()
        self.bank = nn.ModuleList(Expert(experts.hidden_dim, experts.intermediate_dim)
                                  for _ in range(experts.num_experts))

    def forward(self, hidden_states, top_k_index, top_k_weights):
        out = torch.zeros_like(hidden_states)
        for e in top_k_index.unique().tolist():
            token, slot = torch.where(top_k_index == e)
            out.index_add_(0, token, self.bank[e](hidden_states[token]) * top_k_weights[token, slot, None])
        return out


def _build(model_dir):
    model = Mistral4ForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager",
                                                experts_implementation="eager", use_kernels=False)
    for layer in model.model.layers:
        layer.self_attn = FusedLatentAttention(layer.self_attn)
        if isinstance(layer.mlp, hf.Mistral4MoE):
            layer.mlp.experts = PerExpertMoE(layer.mlp.experts)
    return model.eval()  # its weights are all set again by the runner, through weights()


def _weights(hf_state, swap_gate_up_layers=()):
    """HF's state dict -> the fused/per-expert one."""
    sd = {}
    for name, value in hf_state.items():
        if m := re.fullmatch(r"(model\.layers\.\d+\.self_attn)\.q_a_proj\.weight", name):
            kv = hf_state[m[1] + ".kv_a_proj_with_mqa.weight"]
            sd[m[1] + ".qkv_a_proj.weight"] = torch.cat((value, kv))
        elif m := re.fullmatch(r"(model\.layers\.(\d+)\.mlp\.experts)\.gate_up_proj", name):
            gate, up = value.chunk(2, dim=1)  # rows [0, F) gate, [F, 2F) up
            if int(m[2]) in swap_gate_up_layers:
                gate, up = up, gate
            down = hf_state[m[1] + ".down_proj"]
            for e in range(value.shape[0]):
                sd[f"{m[1]}.bank.{e}.gate.weight"] = gate[e]
                sd[f"{m[1]}.bank.{e}.up.weight"] = up[e]
                sd[f"{m[1]}.bank.{e}.down.weight"] = down[e]
        elif not re.search(r"\.kv_a_proj_with_mqa\.weight$|\.experts\.down_proj$", name):
            sd[name] = value
    return sd


def _name_map(model, swap_gate_up_layers=()):
    q_lora = model.config.q_lora_rank
    L, A = "model.layers.{i}", "text.layers.{i}.self_attn"
    taps = {
        "text.embed_tokens": Tap("model.embed_tokens"),
        "text.layers.{i}.input_layernorm": Tap(f"{L}.input_layernorm"),
        A: Tap(f"{L}.self_attn"),
        A + ".q_proj": Tap(f"{L}.self_attn.q_b_proj", within=A),
        A + ".kv_a_proj_with_mqa": Tap(f"{L}.self_attn.qkv_a_proj", output=lambda o: o[..., q_lora:], within=A),
        A + ".kv_a_layernorm": Tap(f"{L}.self_attn.kv_a_layernorm", within=A),
        A + ".attn_weights": Tap(f"{L}.self_attn", output=lambda o: o[1], within=A),
        A + ".attn_output": Tap(f"{L}.self_attn.o_proj", take="input", output=lambda x: x, within=A),
        "text.layers.{i}.post_attention_layernorm": Tap(f"{L}.post_attention_layernorm"),
        # HF's router returns (logits, weights, ids); the layout's order is logits, ids, weights
        "text.layers.{i}.mlp.gate": Tap(f"{L}.mlp.gate", output=lambda o: (o[0], o[2], o[1])),
        "text.layers.{i}.mlp.experts": Tap(f"{L}.mlp.experts", feed=("in", "topk_ids", "topk_weights")),
        "text.layers.{i}.mlp.shared_experts": Tap(f"{L}.mlp.shared_experts"),
        "text.layers.{i}.mlp": Tap(f"{L}.mlp"),
        "text.layers.{i}": Tap(L),
        "text.norm": Tap("model.norm"),
        "text.lm_head": Tap("lm_head"),
    }

    def forward(module, inputs):
        return module(**inputs, use_cache=False).logits

    return NameMap(taps=taps, weights=lambda sd: _weights(sd, swap_gate_up_layers), forward=forward)


def make(model_dir):
    model = _build(model_dir)
    return model, _name_map(model)


def make_buggy(model_dir):
    model = _build(model_dir)
    return model, _name_map(model, swap_gate_up_layers=(1,))
