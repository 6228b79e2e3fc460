#include "registry.h"

#include <stdio.h>
#include <string.h>

/* ---- cost formulas (n tokens, context T, weights of wb bytes an element) ------------------- */

static double attention_weight_params(const m4_text_config *t) {
    double D = (double)t->hidden_size, H = (double)t->num_attention_heads;
    double q = t->q_lora_rank > 0
                   ? (double)t->q_lora_rank * D + H * (double)t->qk_head_dim * (double)t->q_lora_rank
                   : H * (double)t->qk_head_dim * D;
    return q + (double)(t->kv_lora_rank + t->qk_rope_head_dim) * D +
           H * (double)(t->qk_nope_head_dim + t->v_head_dim) * (double)t->kv_lora_rank +
           D * H * (double)t->v_head_dim;
}

static double act_bytes(int64_t n, int64_t width) { return 4.0 * (double)n * (double)width; }

static m4_cost cost_embed(const m4_config *c, int64_t n, int64_t T, int wb) {
    double D = (double)c->text.hidden_size;
    return (m4_cost){0, (double)n * D * wb + act_bytes(n, c->text.hidden_size)};
}

static m4_cost cost_norm(const m4_config *c, int64_t n, int64_t T, int wb) {
    int64_t D = c->text.hidden_size;
    return (m4_cost){4.0 * (double)n * (double)D, (double)D * wb + 2 * act_bytes(n, D)};
}

static m4_cost cost_rope(const m4_config *c, int64_t n, int64_t T, int wb) {
    int64_t half = c->text.qk_rope_head_dim / 2;
    return (m4_cost){(double)n * (double)half, 2 * act_bytes(n, half)};
}

static m4_cost cost_self_attn(const m4_config *c, int64_t n, int64_t T, int wb) {
    const m4_text_config *t = &c->text;
    double W = attention_weight_params(t), H = (double)t->num_attention_heads;
    double scores = 2.0 * (double)n * H * (double)(t->qk_head_dim + t->v_head_dim) * (double)T;
    return (m4_cost){2.0 * (double)n * W + scores, W * wb + 2 * act_bytes(n, t->hidden_size)};
}

static m4_cost cost_router(const m4_config *c, int64_t n, int64_t T, int wb) {
    double E = (double)c->text.n_routed_experts, D = (double)c->text.hidden_size;
    return (m4_cost){2.0 * (double)n * E * D, E * D * wb + act_bytes(n, c->text.hidden_size)};
}

static m4_cost cost_experts(const m4_config *c, int64_t n, int64_t T, int wb) {
    const m4_text_config *t = &c->text;
    double per_expert = 3.0 * (double)t->moe_intermediate_size * (double)t->hidden_size;
    double touched = (double)(n * t->num_experts_per_tok < t->n_routed_experts
                                  ? n * t->num_experts_per_tok : t->n_routed_experts);
    return (m4_cost){2.0 * (double)n * (double)t->num_experts_per_tok * per_expert,
                     touched * per_expert * wb + 2 * act_bytes(n, t->hidden_size)};
}

static m4_cost cost_shared(const m4_config *c, int64_t n, int64_t T, int wb) {
    const m4_text_config *t = &c->text;
    double W = 3.0 * (double)(t->moe_intermediate_size * t->n_shared_experts) * (double)t->hidden_size;
    return (m4_cost){2.0 * (double)n * W, W * wb + 2 * act_bytes(n, t->hidden_size)};
}

static m4_cost add_costs(m4_cost a, m4_cost b) { return (m4_cost){a.flops + b.flops, a.bytes + b.bytes}; }

static m4_cost cost_mlp(const m4_config *c, int64_t n, int64_t T, int wb) {
    /* a MoE layer (the published model has no dense layer) */
    return add_costs(add_costs(cost_router(c, n, T, wb), cost_experts(c, n, T, wb)), cost_shared(c, n, T, wb));
}

static m4_cost cost_layer(const m4_config *c, int64_t n, int64_t T, int wb) {
    m4_cost norms = cost_norm(c, n, T, wb);
    return add_costs(add_costs(norms, norms), add_costs(cost_self_attn(c, n, T, wb), cost_mlp(c, n, T, wb)));
}

static m4_cost cost_lm_head(const m4_config *c, int64_t n, int64_t T, int wb) {
    double V = (double)c->text.vocab_size, D = (double)c->text.hidden_size;
    return (m4_cost){2.0 * (double)n * V * D, V * D * wb + act_bytes(n, c->text.vocab_size)};
}

static m4_cost cost_model(const m4_config *c, int64_t n, int64_t T, int wb) {
    m4_cost total = add_costs(cost_embed(c, n, T, wb), cost_norm(c, n, T, wb));
    m4_cost layer = cost_layer(c, n, T, wb);
    double L = (double)c->text.num_hidden_layers;
    total.flops += L * layer.flops;
    total.bytes += L * layer.bytes;
    return add_costs(total, cost_lm_head(c, n, T, wb));
}

static m4_cost cost_none(const m4_config *c, int64_t n, int64_t T, int wb) { return (m4_cost){0, 0}; }

/* The vision path: n patches (P) of one sequence, context T = P (the images' blocks are at most
 * that long), M = n / m² merged tokens; projector.linear_*, act and merge take n = M / tokens. */

static m4_cost cost_patch_conv(const m4_config *c, int64_t n, int64_t T, int wb) {
    const m4_vision_config *v = &c->vision;
    int64_t K = v->num_channels * v->patch_size * v->patch_size;
    double W = (double)v->hidden_size * (double)K;
    return (m4_cost){2.0 * (double)n * W, W * wb + act_bytes(n, K) + act_bytes(n, v->hidden_size)};
}

static m4_cost cost_vision_norm(const m4_config *c, int64_t n, int64_t T, int wb) {
    int64_t Dv = c->vision.hidden_size;
    return (m4_cost){4.0 * (double)n * (double)Dv, (double)Dv * wb + 2 * act_bytes(n, Dv)};
}

static m4_cost cost_vision_rope(const m4_config *c, int64_t n, int64_t T, int wb) {
    int64_t half = c->vision.head_dim / 2;
    return (m4_cost){(double)n * (double)half, 2 * act_bytes(n, half)};
}

static m4_cost cost_vision_attn(const m4_config *c, int64_t n, int64_t T, int wb) {
    double Dv = (double)c->vision.hidden_size, W = 4.0 * Dv * Dv;
    return (m4_cost){2.0 * (double)n * W + 4.0 * (double)n * Dv * (double)T,
                     W * wb + 2 * act_bytes(n, c->vision.hidden_size)};
}

static m4_cost cost_vision_ffn(const m4_config *c, int64_t n, int64_t T, int wb) {
    double W = 3.0 * (double)c->vision.hidden_size * (double)c->vision.intermediate_size;
    return (m4_cost){2.0 * (double)n * W, W * wb + 2 * act_bytes(n, c->vision.hidden_size)};
}

static m4_cost cost_vision_layer(const m4_config *c, int64_t n, int64_t T, int wb) {
    m4_cost norms = cost_vision_norm(c, n, T, wb);
    return add_costs(add_costs(norms, norms), add_costs(cost_vision_attn(c, n, T, wb), cost_vision_ffn(c, n, T, wb)));
}

static m4_cost cost_vision_tower(const m4_config *c, int64_t n, int64_t T, int wb) {
    m4_cost total = add_costs(cost_patch_conv(c, n, T, wb), cost_vision_norm(c, n, T, wb));
    m4_cost layer = cost_vision_layer(c, n, T, wb);
    double L = (double)c->vision.num_hidden_layers;
    total.flops += L * layer.flops;
    total.bytes += L * layer.bytes;
    return total;
}

static int64_t merged(const m4_config *c, int64_t patches) {
    int64_t m = c->spatial_merge_size > 0 ? c->spatial_merge_size : 1;
    return patches / (m * m);
}

static m4_cost cost_patch_merger(const m4_config *c, int64_t n, int64_t T, int wb) {
    int64_t Dv = c->vision.hidden_size, m = c->spatial_merge_size, M = merged(c, n);
    double W = (double)Dv * (double)(Dv * m * m);
    return (m4_cost){2.0 * (double)M * W, W * wb + act_bytes(n, Dv) + act_bytes(M, Dv)};
}

static m4_cost cost_projector_linear_1(const m4_config *c, int64_t n, int64_t T, int wb) {
    double W = (double)c->text.hidden_size * (double)c->vision.hidden_size;
    return (m4_cost){2.0 * (double)n * W,
                     W * wb + act_bytes(n, c->vision.hidden_size) + act_bytes(n, c->text.hidden_size)};
}

static m4_cost cost_projector_act(const m4_config *c, int64_t n, int64_t T, int wb) {
    return (m4_cost){(double)n * (double)c->text.hidden_size, 2 * act_bytes(n, c->text.hidden_size)};
}

static m4_cost cost_projector_linear_2(const m4_config *c, int64_t n, int64_t T, int wb) {
    double W = (double)c->text.hidden_size * (double)c->text.hidden_size;
    return (m4_cost){2.0 * (double)n * W, W * wb + 2 * act_bytes(n, c->text.hidden_size)};
}

static m4_cost cost_projector(const m4_config *c, int64_t n, int64_t T, int wb) {
    int64_t M = merged(c, n);
    m4_cost total = add_costs(cost_vision_norm(c, n, T, wb), cost_patch_merger(c, n, T, wb));
    total = add_costs(total, cost_projector_linear_1(c, M, T, wb));
    return add_costs(total, add_costs(cost_projector_act(c, M, T, wb), cost_projector_linear_2(c, M, T, wb)));
}

static m4_cost cost_merge(const m4_config *c, int64_t n, int64_t T, int wb) {
    return (m4_cost){0, 3 * act_bytes(n, c->text.hidden_size)};
}

m4_cost m4_vision_path_cost(const m4_config *cfg, int64_t patches, int weight_bytes) {
    return add_costs(cost_vision_tower(cfg, patches, patches, weight_bytes),
                     cost_projector(cfg, patches, patches, weight_bytes));
}

/* ---- the registry -------------------------------------------------------------------------- */

#define ATTN "text.layers.{i}.self_attn"
#define STAGE(stage, dataset, tol) \
    {ATTN "." stage, "Mistral4Attention", M4_COMP_ATTN_STAGE, ATTN, dataset, tol, 2e-2, cost_none}

#define VATTN "vision.layers.{j}.attention"
#define VSTAGE(stage, dataset, tol) \
    {VATTN "." stage, "PixtralAttention", M4_COMP_VISION_ATTN_STAGE, VATTN, dataset, tol, 2e-2, cost_none}

/* In model order: the first failing row of a run is the first divergence. The vision path
 * (rows up to multimodal.merge) comes first and applies to multimodal models only. */
const m4_component m4_components[] = {
    {"vision.patch_conv", "nn.Conv2d", M4_COMP_PATCH_CONV, "vision.patch_conv", "out", 1e-5, 2e-2,
     cost_patch_conv},
    {"vision.ln_pre", "PixtralRMSNorm", M4_COMP_LN_PRE, "vision.ln_pre", "out", 1e-5, 2e-2, cost_vision_norm},
    {"vision.rope", "PixtralVisionRotaryEmbedding", M4_COMP_VISION_ROPE, "vision.rope", "cos", 1e-5, 2e-2,
     cost_vision_rope},
    {"vision.layers.{j}.attention_norm", "PixtralRMSNorm", M4_COMP_VISION_ATTN_NORM,
     "vision.layers.{j}.attention_norm", "out", 1e-5, 2e-2, cost_vision_norm},
    VSTAGE("q_rot", "q_rot", 1e-5),
    VSTAGE("k_rot", "k_rot", 1e-5),
    VSTAGE("attn_weights", "attn_weights", 1e-5),
    {VATTN, "PixtralAttention", M4_COMP_VISION_ATTN, VATTN, "out", 1e-5, 2e-2, cost_vision_attn},
    {"vision.layers.{j}.ffn_norm", "PixtralRMSNorm", M4_COMP_VISION_FFN_NORM, "vision.layers.{j}.ffn_norm",
     "out", 1e-5, 2e-2, cost_vision_norm},
    {"vision.layers.{j}.feed_forward", "PixtralMLP", M4_COMP_VISION_FFN, "vision.layers.{j}.feed_forward",
     "out", 1e-5, 2e-2, cost_vision_ffn},
    {"vision.layers.{j}", "PixtralAttentionLayer", M4_COMP_VISION_LAYER, "vision.layers.{j}", "out", 1e-5,
     2e-2, cost_vision_layer},
    {"vision", "PixtralVisionModel", M4_COMP_VISION_TOWER, "projector", "in", 1e-5, 2e-2, cost_vision_tower},
    {"projector.norm", "Mistral3RMSNorm", M4_COMP_PROJECTOR_NORM, "projector.norm", "out", 1e-5, 2e-2,
     cost_vision_norm},
    {"projector.patch_merger", "Mistral3PatchMerger", M4_COMP_PATCH_MERGER, "projector.patch_merger", "out",
     1e-5, 2e-2, cost_patch_merger},
    {"projector.linear_1", "nn.Linear", M4_COMP_PROJECTOR_LINEAR_1, "projector.linear_1", "out", 1e-5, 2e-2,
     cost_projector_linear_1},
    {"projector.act", "GELUActivation", M4_COMP_PROJECTOR_ACT, "projector.act", "out", 1e-5, 2e-2,
     cost_projector_act},
    {"projector.linear_2", "nn.Linear", M4_COMP_PROJECTOR_LINEAR_2, "projector.linear_2", "out", 1e-5, 2e-2,
     cost_projector_linear_2},
    {"projector", "Mistral3MultiModalProjector", M4_COMP_PROJECTOR, "projector", "out", 1e-5, 2e-2,
     cost_projector},
    {"multimodal.merge", "Mistral3Model", M4_COMP_MERGE, "multimodal.merge", "out", 1e-5, 2e-2, cost_merge},
    {"text.embed_tokens", "nn.Embedding", M4_COMP_EMBED, "text.embed_tokens", "out", 1e-5, 2e-2, cost_embed},
    {"text.layers.{i}.input_layernorm", "Mistral4RMSNorm", M4_COMP_INPUT_NORM,
     "text.layers.{i}.input_layernorm", "out", 1e-5, 2e-2, cost_norm},
    {ATTN ".rope", "Mistral4RotaryEmbedding", M4_COMP_ROPE, ATTN ".rope", "cos", 1e-5, 2e-2, cost_rope},
    STAGE("q_proj", "q", 1e-5),
    STAGE("kv_a_proj_with_mqa", "kv_a", 1e-5),
    STAGE("kv_a_layernorm", "c_kv", 1e-5),
    STAGE("llama4_scale", "llama4_scale", 1e-6),
    STAGE("q_rot", "q_rot", 1e-5),
    STAGE("k_rot", "k_rot", 1e-5),
    STAGE("attn_weights", "attn_weights", 1e-5),
    STAGE("attn_output", "attn_output", 1e-5),
    {ATTN, "Mistral4Attention", M4_COMP_SELF_ATTN, ATTN, "out", 1e-5, 2e-2, cost_self_attn},
    {"text.layers.{i}.post_attention_layernorm", "Mistral4RMSNorm", M4_COMP_POST_NORM,
     "text.layers.{i}.post_attention_layernorm", "out", 1e-5, 2e-2, cost_norm},
    {"text.layers.{i}.mlp.gate", "Mistral4TopkRouter", M4_COMP_ROUTER, "text.layers.{i}.mlp.gate",
     "logits", 1e-5, 2e-2, cost_router},
    {"text.layers.{i}.mlp.experts", "Mistral4NaiveMoe", M4_COMP_EXPERTS, "text.layers.{i}.mlp.experts",
     "out", 1e-5, 2e-2, cost_experts},
    {"text.layers.{i}.mlp.shared_experts", "Mistral4MLP", M4_COMP_SHARED_EXPERTS,
     "text.layers.{i}.mlp.shared_experts", "out", 1e-5, 2e-2, cost_shared},
    {"text.layers.{i}.mlp", "Mistral4MoE", M4_COMP_MLP, "text.layers.{i}.mlp", "out", 1e-5, 2e-2, cost_mlp},
    {"text.layers.{i}", "Mistral4DecoderLayer", M4_COMP_DECODER_LAYER, "text.layers.{i}", "out", 1e-5,
     2e-2, cost_layer},
    {"text.norm", "Mistral4RMSNorm", M4_COMP_FINAL_NORM, "text.norm", "out", 1e-5, 2e-2, cost_norm},
    {"text.lm_head", "nn.Linear", M4_COMP_LM_HEAD, "text.lm_head", "out", 1e-5, 2e-2, cost_lm_head},
    {"text", "Mistral4ForCausalLM", M4_COMP_TEXT_MODEL, "model", "logits", 1e-4, 5e-2, cost_model},
    {"model", "Mistral3ForConditionalGeneration", M4_COMP_MODEL, "model", "logits", 1e-4, 5e-2, cost_model},
};

const size_t m4_component_count = sizeof m4_components / sizeof m4_components[0];

void m4_component_instance(const char *pattern, int layer, char *buf, size_t size) {
    const char *hole = strstr(pattern, "{i}");
    if (!hole) hole = strstr(pattern, "{j}");
    if (!hole) {
        snprintf(buf, size, "%s", pattern);
        return;
    }
    snprintf(buf, size, "%.*s%d%s", (int)(hole - pattern), pattern, layer, hole + 3);
}

char m4_component_layer_placeholder(const m4_component *comp) {
    if (strstr(comp->name, "{i}")) return 'i';
    if (strstr(comp->name, "{j}")) return 'j';
    return 0;
}

bool m4_component_is_vision(const m4_component *comp) { return comp->kind >= M4_COMP_PATCH_CONV; }

int64_t m4_component_instances(const m4_component *comp, const m4_config *cfg) {
    if (m4_component_is_vision(comp) && !cfg->multimodal) return 0;
    switch (m4_component_layer_placeholder(comp)) {
    case 'i': return cfg->text.num_hidden_layers;
    case 'j': return cfg->vision.num_hidden_layers;
    default: return 1;
    }
}
