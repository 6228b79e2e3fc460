#include "registry.h"

#include "calls.h"

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

/* ---- dataset shapes (golden/README.md), from the config and the case ----------------------- */

/* Each shape function comes with its formula as written (fn##_text, e.g. "d->B, d->S,
 * t->hidden_size"): `mistral4 conform --list-datasets` prints it, so docs/CANDIDATE-LAYOUT.md
 * is the code's own text. */
#define SHAPE_FN(fn, ...)                                                                          \
    static const char fn##_text[] = #__VA_ARGS__;                                                  \
    static m4_shape fn(const m4_config *cfg, const m4_case_dims *d) {                              \
        const m4_text_config *t = &cfg->text;                                                      \
        const m4_vision_config *v = &cfg->vision;                                                  \
        (void)t, (void)v;                                                                          \
        return M4_SHAPE(__VA_ARGS__);                                                              \
    }
SHAPE_FN(ids_BS, d->B, d->S)
SHAPE_FN(hidden_BSD, d->B, d->S, t->hidden_size)
SHAPE_FN(hidden_ND, d->B * d->S, t->hidden_size)
SHAPE_FN(logits_BSV, d->B, d->S, t->vocab_size)
SHAPE_FN(rope_BSdr, d->B, d->S, t->qk_rope_head_dim)
SHAPE_FN(attn_q, d->B, d->S, t->num_attention_heads * t->qk_head_dim)
SHAPE_FN(attn_kv_a, d->B, d->S, t->kv_lora_rank + t->qk_rope_head_dim)
SHAPE_FN(attn_c_kv, d->B, d->S, t->kv_lora_rank)
SHAPE_FN(attn_llama4_scale, d->B, 1, d->S, 1)
SHAPE_FN(attn_rot, d->B, t->num_attention_heads, d->S, t->qk_head_dim)
SHAPE_FN(attn_weights, d->B, t->num_attention_heads, d->S, d->S)
SHAPE_FN(attn_output, d->B, d->S, t->num_attention_heads * t->v_head_dim)
SHAPE_FN(router_logits, d->B * d->S, t->n_routed_experts)
SHAPE_FN(routing_NK, d->B * d->S, t->num_experts_per_tok)
SHAPE_FN(pixels, d->images, v->num_channels, d->height, d->width)
SHAPE_FN(patch_conv_out, d->images, v->hidden_size, d->height / v->patch_size, d->width / v->patch_size)
SHAPE_FN(patches_1PDv, 1, d->P, v->hidden_size)
SHAPE_FN(patches_PDv, d->P, v->hidden_size)
SHAPE_FN(vision_rope_Phd, d->P, v->head_dim)
SHAPE_FN(vattn_rot, 1, v->num_attention_heads, d->P, v->head_dim)
SHAPE_FN(vattn_weights, 1, v->num_attention_heads, d->P, d->P)
SHAPE_FN(merged_MDv, d->M, v->hidden_size)
SHAPE_FN(merged_MD, d->M, t->hidden_size)

/* ---- the registry -------------------------------------------------------------------------- */

/* A dataset of the row's group: name, shape, then .ids / .optional / .group. */
#define DS(nm, shape_fn, ...) {.name = nm, .shape = shape_fn, .shape_text = shape_fn##_text, __VA_ARGS__}
#define IN(shape_fn) {DS("in", shape_fn)}
#define OUT(shape_fn) {DS("out", shape_fn)}
/* The fields every row has; the row adds .in, .out (and .vision). */
#define COMPONENT(nm, hf, k, grp, ds, tol_fp32, tol_bf16, cost_fn, c)                              \
    .name = nm, .hf_module = hf, .kind = k, .group = grp, .dataset = ds, .tolerance_fp32 = tol_fp32, \
    .tolerance_bf16 = tol_bf16, .cost = cost_fn, .call = &c
/* A component whose group is its name, compared on `out` at the per-component budgets. */
#define ROW(nm, hf, k, cost_fn, c) COMPONENT(nm, hf, k, nm, "out", 1e-5, 2e-2, cost_fn, c)
/* ... compared on `ds` */
#define ROW_ON(ds, nm, hf, k, cost_fn, c) COMPONENT(nm, hf, k, nm, ds, 1e-5, 2e-2, cost_fn, c)
/* x → out of one shape */
#define SAME(shape_fn) .in = IN(shape_fn), .out = OUT(shape_fn)

/* The attention and its stages: one self_attn call per layer writes `out` and the trace
 * (m4_mla_trace; only the datasets the golden holds), each row compares one of them. */
#define ATTN "text.layers.{i}.self_attn"
#define ATTN_ROW(nm, k, ds, tol, cost_fn)                                                          \
    {COMPONENT(nm, "Mistral4Attention", k, ATTN, ds, tol, 2e-2, cost_fn, m4_call_self_attn),          \
     .in = IN(hidden_BSD),                                                                         \
     .out = {DS("out", hidden_BSD), DS("q", attn_q, .optional = true),                              \
             DS("kv_a", attn_kv_a, .optional = true), DS("c_kv", attn_c_kv, .optional = true),      \
             DS("llama4_scale", attn_llama4_scale, .optional = true),                               \
             DS("q_rot", attn_rot, .optional = true), DS("k_rot", attn_rot, .optional = true),      \
             DS("attn_weights", attn_weights, .optional = true),                                    \
             DS("attn_output", attn_output, .optional = true)}}
#define STAGE(stage, ds, tol) ATTN_ROW(ATTN "." stage, M4_COMP_ATTN_STAGE, ds, tol, cost_none)

/* The vision attention and its stages, the same way (m4_vision_attn_trace). */
#define VATTN "vision.layers.{j}.attention"
#define VATTN_ROW(nm, k, ds, cost_fn)                                                              \
    {COMPONENT(nm, "PixtralAttention", k, VATTN, ds, 1e-5, 2e-2, cost_fn, m4_call_vision_attention),  \
     .vision = true, .in = IN(patches_1PDv),                                    \
     .out = {DS("out", patches_1PDv), DS("q_rot", vattn_rot, .optional = true),                     \
             DS("k_rot", vattn_rot, .optional = true), DS("attn_weights", vattn_weights, .optional = true)}}
#define VSTAGE(stage, ds) VATTN_ROW(VATTN "." stage, M4_COMP_VISION_ATTN_STAGE, ds, cost_none)

/* In model order: the first failing row of a run is the first divergence. The vision path
 * (rows up to multimodal.merge) comes first and applies to multimodal models only. */
const m4_component m4_components[] = {
    {ROW("vision.patch_conv", "nn.Conv2d", M4_COMP_PATCH_CONV, cost_patch_conv, m4_call_patch_conv), .vision = true,
     .in = IN(pixels), .out = OUT(patch_conv_out)},
    {ROW("vision.ln_pre", "PixtralRMSNorm", M4_COMP_LN_PRE, cost_vision_norm, m4_call_rmsnorm), .vision = true,
     SAME(patches_1PDv)},
    /* HF's table is cat(φ, φ) of the backend's: the call widens it, both halves are compared */
    {ROW_ON("cos", "vision.rope", "PixtralVisionRotaryEmbedding", M4_COMP_VISION_ROPE, cost_vision_rope,
            m4_call_vision_rope), .vision = true, .out = {DS("cos", vision_rope_Phd), DS("sin", vision_rope_Phd)}},
    {ROW("vision.layers.{j}.attention_norm", "PixtralRMSNorm", M4_COMP_VISION_ATTN_NORM, cost_vision_norm,
         m4_call_rmsnorm), .vision = true, SAME(patches_1PDv)},
    VSTAGE("q_rot", "q_rot"),
    VSTAGE("k_rot", "k_rot"),
    VSTAGE("attn_weights", "attn_weights"),
    VATTN_ROW(VATTN, M4_COMP_VISION_ATTN, "out", cost_vision_attn),
    {ROW("vision.layers.{j}.ffn_norm", "PixtralRMSNorm", M4_COMP_VISION_FFN_NORM, cost_vision_norm, m4_call_rmsnorm),
     .vision = true, SAME(patches_1PDv)},
    {ROW("vision.layers.{j}.feed_forward", "PixtralMLP", M4_COMP_VISION_FFN, cost_vision_ffn,
         m4_call_vision_feed_forward), .vision = true, SAME(patches_1PDv)},
    {ROW("vision.layers.{j}", "PixtralAttentionLayer", M4_COMP_VISION_LAYER, cost_vision_layer, m4_call_vision_layer),
     .vision = true, SAME(patches_1PDv)},
    /* the tower end to end from the case's pixels, against the features the projector saw */
    {COMPONENT("vision", "PixtralVisionModel", M4_COMP_VISION_TOWER, "projector", "in", 1e-5, 2e-2, cost_vision_tower,
               m4_call_vision_tower), .vision = true, .out = {DS("in", patches_PDv)}},
    {ROW("projector.norm", "Mistral3RMSNorm", M4_COMP_PROJECTOR_NORM, cost_vision_norm, m4_call_rmsnorm),
     .vision = true, SAME(patches_PDv)},
    {ROW("projector.patch_merger", "Mistral3PatchMerger", M4_COMP_PATCH_MERGER, cost_patch_merger,
         m4_call_patch_merger), .vision = true, .in = IN(patches_PDv), .out = OUT(merged_MDv)},
    {ROW("projector.linear_1", "nn.Linear", M4_COMP_PROJECTOR_LINEAR_1, cost_projector_linear_1, m4_call_linear),
     .vision = true, .in = IN(merged_MDv), .out = OUT(merged_MD)},
    {ROW("projector.act", "GELUActivation", M4_COMP_PROJECTOR_ACT, cost_projector_act, m4_call_activation),
     .vision = true, SAME(merged_MD)},
    {ROW("projector.linear_2", "nn.Linear", M4_COMP_PROJECTOR_LINEAR_2, cost_projector_linear_2, m4_call_linear),
     .vision = true, SAME(merged_MD)},
    {ROW("projector", "Mistral3MultiModalProjector", M4_COMP_PROJECTOR, cost_projector, m4_call_projector),
     .vision = true, .in = IN(patches_PDv), .out = OUT(merged_MD)},
    /* HF's embeddings and projector output scattered into the [IMG] rows of the case's ids */
    {ROW("multimodal.merge", "Mistral3Model", M4_COMP_MERGE, cost_merge, m4_call_merge), .vision = true,
     .in = {DS("in", hidden_BSD), DS("image_features", merged_MD)}, .out = OUT(hidden_BSD)},
    {ROW("text.embed_tokens", "nn.Embedding", M4_COMP_EMBED, cost_embed, m4_call_embed_tokens),
     .in = {DS("in", ids_BS, .ids = true)}, .out = OUT(hidden_BSD)},
    {ROW("text.layers.{i}.input_layernorm", "Mistral4RMSNorm", M4_COMP_INPUT_NORM, cost_norm, m4_call_rmsnorm),
     SAME(hidden_BSD)},
    {ROW_ON("cos", ATTN ".rope", "Mistral4RotaryEmbedding", M4_COMP_ROPE, cost_rope, m4_call_rope),
     .out = {DS("cos", rope_BSdr), DS("sin", rope_BSdr)}},
    STAGE("q_proj", "q", 1e-5),
    STAGE("kv_a_proj_with_mqa", "kv_a", 1e-5),
    STAGE("kv_a_layernorm", "c_kv", 1e-5),
    STAGE("llama4_scale", "llama4_scale", 1e-6),
    STAGE("q_rot", "q_rot", 1e-5),
    STAGE("k_rot", "k_rot", 1e-5),
    STAGE("attn_weights", "attn_weights", 1e-5),
    STAGE("attn_output", "attn_output", 1e-5),
    ATTN_ROW(ATTN, M4_COMP_SELF_ATTN, "out", 1e-5, cost_self_attn),
    {ROW("text.layers.{i}.post_attention_layernorm", "Mistral4RMSNorm", M4_COMP_POST_NORM, cost_norm,
         m4_call_rmsnorm), SAME(hidden_BSD)},
    /* the logits, then the top-k sets (identical) and weights */
    {ROW_ON("logits", "text.layers.{i}.mlp.gate", "Mistral4TopkRouter", M4_COMP_ROUTER, cost_router, m4_call_router),
     .in = IN(hidden_BSD),
     .out = {DS("logits", router_logits), DS("topk_ids", routing_NK, .ids = true), DS("topk_weights", routing_NK)}},
    /* with HF's routing */
    {ROW("text.layers.{i}.mlp.experts", "Mistral4NaiveMoe", M4_COMP_EXPERTS, cost_experts, m4_call_experts),
     .in = {DS("in", hidden_ND), DS("topk_ids", routing_NK, .ids = true), DS("topk_weights", routing_NK)},
     .out = OUT(hidden_ND)},
    {ROW("text.layers.{i}.mlp.shared_experts", "Mistral4MLP", M4_COMP_SHARED_EXPERTS, cost_shared,
         m4_call_shared_experts), SAME(hidden_BSD)},
    {ROW("text.layers.{i}.mlp", "Mistral4MoE", M4_COMP_MLP, cost_mlp, m4_call_mlp), SAME(hidden_BSD)},
    {ROW("text.layers.{i}", "Mistral4DecoderLayer", M4_COMP_DECODER_LAYER, cost_layer, m4_call_decoder_layer),
     SAME(hidden_BSD)},
    {ROW("text.norm", "Mistral4RMSNorm", M4_COMP_FINAL_NORM, cost_norm, m4_call_rmsnorm), SAME(hidden_BSD)},
    {ROW("text.lm_head", "nn.Linear", M4_COMP_LM_HEAD, cost_lm_head, m4_call_lm_head), .in = IN(hidden_BSD),
     .out = OUT(logits_BSV)},
    /* the language model from HF's merged inputs_embeds: a case with images only */
    {COMPONENT("text", "Mistral4ForCausalLM", M4_COMP_TEXT_MODEL, "model", "logits", 1e-4, 5e-2, cost_model,
               m4_call_forward_embeds), .images_only = true, .candidate_group = "text",
     .in = {DS("out", hidden_BSD, .group = "multimodal.merge")}, .out = {DS("logits", logits_BSV)}},
    /* ids (and pixels) → logits */
    {COMPONENT("model", "Mistral3ForConditionalGeneration", M4_COMP_MODEL, "model", "logits", 1e-4, 5e-2, cost_model,
               m4_call_forward), .out = {DS("logits", logits_BSV)}},
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

bool m4_component_is_vision(const m4_component *comp) { return comp->vision; }

int m4_component_compared_output(const m4_component *comp) {
    int k = 0;
    while (k < M4_MAX_OUTPUTS - 1 && comp->out[k].name && strcmp(comp->out[k].name, comp->dataset) != 0) k++;
    return k;
}

bool m4_component_candidate_output(const m4_component *comp, int k) {
    return k == m4_component_compared_output(comp) || (!comp->call->shared && !comp->out[k].optional);
}

const char *m4_component_candidate_group(const m4_component *comp) {
    return comp->candidate_group ? comp->candidate_group : comp->group;
}

int64_t m4_component_instances(const m4_component *comp, const m4_config *cfg) {
    if (m4_component_is_vision(comp) && !cfg->multimodal) return 0;
    switch (m4_component_layer_placeholder(comp)) {
    case 'i': return cfg->text.num_hidden_layers;
    case 'j': return cfg->vision.num_hidden_layers;
    default: return 1;
    }
}
