/* backend_cuda.cu — the CUDA implementation behind the backend interface, in two precisions:
 * "cuda-fp32" (float32 weights and arithmetic, no TF32: the reference's bounds) and "cuda-bf16"
 * (bf16 weights and GEMM operands, float32 accumulation and activations). Each entry copies its
 * inputs to the device, runs the component between two CUDA events (the device time the harness
 * reports) inside an NVTX range named after the component, and copies the outputs back.
 * Nothing falls back to the CPU. */
#include <stdio.h>
#include <string.h>

#include <initializer_list>
#include <vector>

#include "cuda_model.cuh"
#include "kernels/norm.cuh"
#include "kernels/rope.cuh"
#include "paths.h"

#include "cuda_backend.h"

namespace {

m4_cuda *cuda_of(void *state) { return static_cast<m4_cuda *>(state); }

/* A device output to bring back: n floats at dev → host. */
struct output {
    float *host;
    const float *dev;
    int64_t n;
};

int begin(m4_cuda *st, m4_error *err) {
    M4_CUDA_TRY(cudaEventRecord(st->start, st->stream), err);
    return 0;
}

/* Stops the clock, copies the outputs back and waits for all of it. */
int finish(m4_cuda *st, std::initializer_list<output> outs, m4_error *err) {
    M4_CUDA_TRY(cudaEventRecord(st->stop, st->stream), err);
    for (const output &o : outs)
        if (o.host && o.n > 0)
            M4_CUDA_TRY(cudaMemcpyAsync(o.host, o.dev, sizeof(float) * (size_t)o.n, cudaMemcpyDeviceToHost, st->stream), err);
    M4_CUDA_TRY(cudaStreamSynchronize(st->stream), err);
    float ms = 0;
    M4_CUDA_TRY(cudaEventElapsedTime(&ms, st->start, st->stop), err);
    st->last_device_ms = ms;
    return 0;
}

int open_with(const m4_model *model, m4_precision precision, void **state, m4_error *err) {
    m4_cuda *st = nullptr;
    if (m4_cuda_open(model, precision, &st, err)) {
        m4_cuda_close(st);
        return -1;
    }
    *state = st;
    return 0;
}
int open_fp32(const m4_model *model, void **state, m4_error *err) { return open_with(model, M4_PRECISION_FP32, state, err); }
int open_bf16(const m4_model *model, void **state, m4_error *err) { return open_with(model, M4_PRECISION_BF16, state, err); }
void close_state(void *state) { m4_cuda_close(cuda_of(state)); }
void name_calls(void *state, const char *component) {
    snprintf(cuda_of(state)->component, sizeof cuda_of(state)->component, "%s", component ? component : "");
}
/* An entry's NVTX range name: the row the runner named, else the entry's own (called outside it). */
const char *range(const m4_cuda *st, const char *entry) { return st->component[0] ? st->component : entry; }
double device_ms(void *state) { return cuda_of(state)->last_device_ms; }

int64_t patches_of(const m4_patch_grid *grids, int64_t n_images) {
    int64_t P = 0;
    for (int64_t n = 0; n < n_images; n++) P += grids[n].rows * grids[n].cols;
    return P;
}

/* ---- text --------------------------------------------------------------------------------- */

int embed_tokens(void *state, const int64_t *ids, int64_t n, float *out, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "text.embed_tokens"));
    m4_arena arena(st->stream);
    float *d_out = arena.get<float>(n * st->model->config.text.hidden_size, err);
    return !d_out || begin(st, err) || m4_cuda_embed(st, ids, n, d_out, err) ||
           finish(st, {{out, d_out, n * st->model->config.text.hidden_size}}, err);
}

int rmsnorm(void *state, const m4_weight *w, const float *x, int64_t n, int64_t dim, float eps, float *y,
            m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "rmsnorm"));
    const m4_dev_weight *dw = m4_cuda_weight(st, w->data, w->name, err);
    if (!dw) return -1;
    if (dw->cols != dim) return m4_fail(err, "rmsnorm: weight [%lld] for rows of %lld", (long long)dw->cols, (long long)dim);
    m4_arena arena(st->stream);
    float *d_x = arena.upload(x, n * dim, err), *d_y = arena.get<float>(n * dim, err);
    return !d_x || !d_y || begin(st, err) ||
           m4k_rmsnorm(d_x, dim, nullptr, nullptr, dw->f32(), d_y, dim, n, dim, eps, st->stream, err) ||
           finish(st, {{y, d_y, n * dim}}, err);
}

/* text.layers.{i}.self_attn.rope: the table m4_cuda_mla builds on the device (m4k_rope_tables:
 * YaRN frequencies from the host, the attention factor, positions on the device). */
int rope(void *state, const int64_t *positions, int64_t n, float *cos, float *sin, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "text.layers.self_attn.rope"));
    const m4_text_config *cfg = &st->model->config.text;
    const m4_rope_config *r = &cfg->rope;
    const int64_t half = cfg->qk_rope_head_dim / 2;
    m4_arena arena(st->stream);
    const int64_t *d_pos = arena.upload(positions, n, err);
    float *d_cos = arena.get<float>(n * half, err), *d_sin = arena.get<float>(n * half, err), *d_l4 = arena.get<float>(n, err);
    return !d_pos || !d_cos || !d_sin || !d_l4 || begin(st, err) ||
           m4k_rope_tables(d_pos, n, st->d_rope_inv_freq, half, st->rope_attention_factor, r->has_llama_4_scaling_beta,
                           (float)r->llama_4_scaling_beta, r->original_max_position_embeddings, d_cos, d_sin, d_l4,
                           st->stream, err) ||
           finish(st, {{cos, d_cos, n * half}, {sin, d_sin, n * half}}, err);
}

int self_attn(void *state, int layer, const float *x, int64_t B, int64_t S, const int64_t *position_ids,
              const int64_t *attention_mask, float softmax_scale, float *out, m4_mla_trace *trace, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "text.layers.self_attn"));
    const int64_t D = st->model->config.text.hidden_size;
    m4_arena arena(st->stream);
    m4_cuda_positions where;
    float *d_x = arena.upload(x, B * S * D, err), *d_out = arena.get<float>(B * S * D, err);
    if (!d_x || !d_out || m4_cuda_upload_positions(st, arena, position_ids, attention_mask, B, S, 0, &where, err) ||
        begin(st, err) || m4_cuda_mla(st, layer, d_x, B, S, where, softmax_scale, d_out, nullptr, err) ||
        finish(st, {{out, d_out, B * S * D}}, err))
        return -1;
    /* The stage rows: a second run that also brings the intermediates back (untimed). */
    return trace ? m4_cuda_mla(st, layer, d_x, B, S, where, softmax_scale, d_out, trace, err) : 0;
}

int router(void *state, int layer, const float *x, int64_t n, float *logits, int64_t *topk_ids,
           float *topk_weights, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "text.layers.mlp.gate"));
    const m4_text_config *cfg = &st->model->config.text;
    const int64_t D = cfg->hidden_size, E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    m4_arena arena(st->stream);
    float *d_x = arena.upload(x, n * D, err), *d_logits = arena.get<float>(n * E, err);
    int32_t *d_ids = arena.get<int32_t>(n * K, err);
    float *d_w = arena.get<float>(n * K, err);
    if (!d_x || !d_logits || !d_ids || !d_w || begin(st, err) ||
        m4_cuda_router(st, layer, d_x, n, d_logits, d_ids, d_w, err) ||
        finish(st, {{logits, d_logits, n * E}, {topk_weights, d_w, n * K}}, err))
        return -1;
    std::vector<int32_t> ids((size_t)(n * K));
    M4_CUDA_TRY(cudaMemcpy(ids.data(), d_ids, sizeof(int32_t) * (size_t)(n * K), cudaMemcpyDeviceToHost), err);
    for (int64_t i = 0; i < n * K; i++) topk_ids[i] = ids[(size_t)i];
    return 0;
}

int experts(void *state, int layer, const float *x, int64_t n, const int64_t *topk_ids,
            const float *topk_weights, float *out, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "text.layers.mlp.experts"));
    const m4_text_config *cfg = &st->model->config.text;
    const int64_t D = cfg->hidden_size, E = cfg->n_routed_experts, K = cfg->num_experts_per_tok;
    std::vector<int32_t> ids((size_t)(n * K));
    for (int64_t i = 0; i < n * K; i++) {
        if (topk_ids[i] < 0 || topk_ids[i] >= E)
            return m4_fail(err, "mlp.experts: expert id %lld outside [0, %lld)", (long long)topk_ids[i], (long long)E);
        ids[(size_t)i] = (int32_t)topk_ids[i];
    }
    m4_arena arena(st->stream);
    float *d_x = arena.upload(x, n * D, err), *d_w = arena.upload(topk_weights, n * K, err);
    int32_t *d_ids = arena.upload(ids.data(), n * K, err);
    float *d_out = arena.get<float>(n * D, err);
    return !d_x || !d_w || !d_ids || !d_out || begin(st, err) ||
           m4_cuda_experts(st, layer, d_x, n, d_ids, d_w, nullptr, d_out, err) ||
           finish(st, {{out, d_out, n * D}}, err);
}

int shared_experts(void *state, int layer, const float *x, int64_t n, float *out, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "text.layers.mlp.shared_experts"));
    const m4_text_config *cfg = &st->model->config.text;
    const m4_text_layer_weights *w = &st->model->weights.layers[layer];
    const int64_t D = cfg->hidden_size;
    m4_arena arena(st->stream);
    float *d_x = arena.upload(x, n * D, err), *d_out = arena.get<float>(n * D, err);
    return !d_x || !d_out || begin(st, err) ||
           m4_cuda_swiglu_mlp(st, d_x, n, &w->shared_gate_proj, &w->shared_up_proj, &w->shared_down_proj,
                              cfg->hidden_act, d_out, err) ||
           finish(st, {{out, d_out, n * D}}, err);
}

int mlp(void *state, int layer, const float *x, int64_t n, float *out, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "text.layers.mlp"));
    const int64_t D = st->model->config.text.hidden_size;
    m4_arena arena(st->stream);
    float *d_x = arena.upload(x, n * D, err), *d_out = arena.get<float>(n * D, err);
    return !d_x || !d_out || begin(st, err) || m4_cuda_mlp(st, layer, d_x, n, d_out, err) ||
           finish(st, {{out, d_out, n * D}}, err);
}

int decoder_layer(void *state, int layer, const float *h, int64_t B, int64_t S, const int64_t *position_ids,
                  const int64_t *attention_mask, float softmax_scale, float *out, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "text.layers"));
    const int64_t N = B * S * st->model->config.text.hidden_size;
    m4_arena arena(st->stream);
    m4_cuda_positions where;
    float *d_h = arena.upload(h, N, err);
    return !d_h || m4_cuda_upload_positions(st, arena, position_ids, attention_mask, B, S, 0, &where, err) ||
           begin(st, err) || m4_cuda_decoder_layer(st, layer, nullptr, d_h, B, S, where, softmax_scale, err) ||
           finish(st, {{out, d_h, N}}, err);
}

int lm_head(void *state, const float *x, int64_t n, float *logits, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "text.lm_head"));
    const m4_weight *w = &st->model->weights.lm_head;
    const m4_dev_weight *dw = m4_cuda_weight(st, w->data, "lm_head", err);
    if (!dw) return -1;
    m4_arena arena(st->stream);
    float *d_x = arena.upload(x, n * dw->cols, err), *d_y = arena.get<float>(n * dw->rows, err);
    return !d_x || !d_y || begin(st, err) || m4_cuda_linear(st, d_x, n, *dw, d_y, err) ||
           finish(st, {{logits, d_y, n * dw->rows}}, err);
}

int forward(void *state, const int64_t *ids, const float *inputs_embeds, int64_t B, int64_t S,
            const int64_t *position_ids, const int64_t *attention_mask, m4_softmax_scale_rule rule,
            float *logits, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "model"));
    const m4_text_config *cfg = &st->model->config.text;
    const int64_t N = B * S, D = cfg->hidden_size, V = st->model->weights.lm_head.rows;
    if (B <= 0 || S <= 0) return m4_fail(err, "text forward: empty input (B %lld, S %lld)", (long long)B, (long long)S);
    if (!ids && !inputs_embeds) return m4_fail(err, "text forward: neither ids nor inputs_embeds given");
    m4_arena arena(st->stream);
    float *d_h = inputs_embeds ? arena.upload(inputs_embeds, N * D, err) : arena.get<float>(N * D, err);
    float *d_logits = arena.get<float>(N * V, err);
    m4_cuda_positions where;
    return !d_h || !d_logits || m4_cuda_upload_positions(st, arena, position_ids, attention_mask, B, S, 0, &where, err) ||
           begin(st, err) || (!inputs_embeds && m4_cuda_embed(st, ids, N, d_h, err)) ||
           m4_cuda_text_forward(st, nullptr, d_h, B, S, where, rule, d_logits, err) ||
           finish(st, {{logits, d_logits, N * V}}, err);
}

/* ---- vision ------------------------------------------------------------------------------- */

int patch_conv(void *state, const m4_pixel_batch *px, float *out, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "vision.patch_conv"));
    const m4_vision_config *v = &st->model->config.vision;
    const int64_t n = px->n * v->hidden_size * (px->height / v->patch_size) * (px->width / v->patch_size);
    m4_arena arena(st->stream);
    float *d_out = arena.get<float>(n, err);
    return !d_out || begin(st, err) || m4_cuda_patch_conv(st, px, d_out, err) || finish(st, {{out, d_out, n}}, err);
}

int vision_attention(void *state, int layer, const float *x, const m4_patch_grid *grids, int64_t n_images,
                     float *out, m4_vision_attn_trace *trace, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "vision.layers.attention"));
    const int64_t n = patches_of(grids, n_images) * st->model->config.vision.hidden_size;
    m4_arena arena(st->stream);
    float *d_x = arena.upload(x, n, err), *d_out = arena.get<float>(n, err);
    if (!d_x || !d_out || begin(st, err) ||
        m4_cuda_vision_attention(st, layer, d_x, grids, n_images, d_out, nullptr, err) ||
        finish(st, {{out, d_out, n}}, err))
        return -1;
    return trace ? m4_cuda_vision_attention(st, layer, d_x, grids, n_images, d_out, trace, err) : 0;
}

int vision_feed_forward(void *state, int layer, const float *x, int64_t n, float *out, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "vision.layers.feed_forward"));
    const m4_vision_config *v = &st->model->config.vision;
    const m4_vision_layer_weights *w = &st->model->weights.vision_layers[layer];
    m4_arena arena(st->stream);
    float *d_x = arena.upload(x, n * v->hidden_size, err), *d_out = arena.get<float>(n * v->hidden_size, err);
    return !d_x || !d_out || begin(st, err) ||
           m4_cuda_swiglu_mlp(st, d_x, n, &w->gate_proj, &w->up_proj, &w->down_proj, v->hidden_act, d_out, err) ||
           finish(st, {{out, d_out, n * v->hidden_size}}, err);
}

int vision_layer(void *state, int layer, const float *h, const m4_patch_grid *grids, int64_t n_images,
                 float *out, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "vision.layers"));
    const int64_t n = patches_of(grids, n_images) * st->model->config.vision.hidden_size;
    m4_arena arena(st->stream);
    float *d_h = arena.upload(h, n, err);
    return !d_h || begin(st, err) || m4_cuda_vision_layer(st, layer, d_h, grids, n_images, err) ||
           finish(st, {{out, d_h, n}}, err);
}

int vision_tower(void *state, const m4_pixel_batch *px, float *features, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "vision"));
    std::vector<m4_patch_grid> grids((size_t)(px->n > 0 ? px->n : 1));
    int64_t P;
    if (m4_ref_patch_grids(&st->model->config.vision, px, grids.data(), &P, err)) return -1;
    const int64_t n = P * st->model->config.vision.hidden_size;
    m4_arena arena(st->stream);
    float *d_f = arena.get<float>(n, err);
    return !d_f || begin(st, err) || m4_cuda_vision_tower(st, px, d_f, err) || finish(st, {{features, d_f, n}}, err);
}

int patch_merger(void *state, const float *x, const m4_patch_grid *grids, int64_t n_images, float *out,
                 m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "projector.patch_merger"));
    const m4_config *cfg = &st->model->config;
    const int64_t Dv = cfg->vision.hidden_size;
    const int64_t M = m4_ref_merged_tokens(grids, n_images, cfg->spatial_merge_size > 0 ? cfg->spatial_merge_size : 1);
    m4_arena arena(st->stream);
    float *d_x = arena.upload(x, patches_of(grids, n_images) * Dv, err), *d_out = arena.get<float>(M * Dv, err);
    return !d_x || !d_out || begin(st, err) || m4_cuda_patch_merger(st, d_x, grids, n_images, d_out, err) ||
           finish(st, {{out, d_out, M * Dv}}, err);
}

int linear(void *state, const m4_weight *w, const m4_weight *bias, const float *x, int64_t n, float *y,
           m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "linear"));
    const m4_dev_weight *dw = m4_cuda_weight(st, w->data, w->name, err);
    const m4_dev_weight *db = dw && bias && bias->data ? m4_cuda_weight(st, bias->data, bias->name, err) : nullptr;
    if (!dw || (bias && bias->data && !db)) return -1;
    m4_arena arena(st->stream);
    float *d_x = arena.upload(x, n * dw->cols, err), *d_y = arena.get<float>(n * dw->rows, err);
    return !d_x || !d_y || begin(st, err) || m4_cuda_linear_bias(st, d_x, n, *dw, db, d_y, err) ||
           finish(st, {{y, d_y, n * dw->rows}}, err);
}

int activation(void *state, m4_activation act, const float *x, int64_t n, float *y, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "projector.act"));
    m4_arena arena(st->stream);
    float *d_x = arena.upload(x, n, err);
    return !d_x || begin(st, err) || m4k_activation(d_x, n, act, st->stream, err) || finish(st, {{y, d_x, n}}, err);
}

int projector(void *state, const float *x, const m4_patch_grid *grids, int64_t n_images, float *out,
              m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "projector"));
    const m4_config *cfg = &st->model->config;
    const int64_t M = m4_ref_merged_tokens(grids, n_images, cfg->spatial_merge_size > 0 ? cfg->spatial_merge_size : 1);
    const int64_t D = cfg->text.hidden_size;
    m4_arena arena(st->stream);
    float *d_x = arena.upload(x, patches_of(grids, n_images) * cfg->vision.hidden_size, err);
    float *d_out = arena.get<float>(M * D, err);
    return !d_x || !d_out || begin(st, err) || m4_cuda_projector(st, d_x, grids, n_images, d_out, err) ||
           finish(st, {{out, d_out, M * D}}, err);
}

int merge_image_features(void *state, const int64_t *ids, int64_t n, const float *embeds, const float *features,
                         int64_t n_features, float *out, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "multimodal.merge"));
    const int64_t D = st->model->config.text.hidden_size;
    m4_arena arena(st->stream);
    float *d_e = arena.upload(embeds, n * D, err), *d_f = arena.upload(features, n_features * D, err);
    float *d_out = arena.get<float>(n * D, err);
    return !d_e || !d_f || !d_out || begin(st, err) ||
           m4_cuda_merge(st, ids, n, d_e, d_f, n_features, d_out, err) || finish(st, {{out, d_out, n * D}}, err);
}

/* Mistral3ForConditionalGeneration.forward: embeddings, vision tower → projector → merge, text. */
int forward_multimodal(void *state, const int64_t *ids, int64_t B, int64_t S, const m4_pixel_batch *px,
                       const int64_t *position_ids, const int64_t *attention_mask, m4_softmax_scale_rule rule,
                       float *logits, m4_error *err) {
    m4_cuda *st = cuda_of(state);
    m4_nvtx_range nvtx(range(st, "model"));
    const m4_config *cfg = &st->model->config;
    const int64_t N = B * S, D = cfg->text.hidden_size, V = st->model->weights.lm_head.rows;
    m4_arena arena(st->stream);
    float *d_h = arena.get<float>(N * D, err), *d_logits = arena.get<float>(N * V, err);
    m4_cuda_positions where;
    if (!d_h || !d_logits || m4_cuda_upload_positions(st, arena, position_ids, attention_mask, B, S, 0, &where, err) ||
        begin(st, err) || m4_cuda_prompt_embeds(st, ids, B, S, px, d_h, err))
        return -1;
    return m4_cuda_text_forward(st, nullptr, d_h, B, S, where, rule, d_logits, err) ||
           finish(st, {{logits, d_logits, N * V}}, err);
}

/* The generation session (session.cu) behind the interface's session entries. */
int session_open(const m4_model *model, bool bf16, int64_t batch, int64_t capacity, const m4_progress *upload,
                 void **session, m4_error *err) {
    m4_cuda_session *s = nullptr;
    const int rc = m4_cuda_session_open(model, bf16, batch, capacity, upload, &s, err);
    *session = s;
    return rc;
}
int session_open_fp32(const m4_model *model, int64_t batch, int64_t capacity, const m4_progress *upload,
                      void **session, m4_error *err) {
    return session_open(model, false, batch, capacity, upload, session, err);
}
int session_open_bf16(const m4_model *model, int64_t batch, int64_t capacity, const m4_progress *upload,
                      void **session, m4_error *err) {
    return session_open(model, true, batch, capacity, upload, session, err);
}
m4_cuda_session *session_of(void *session) { return static_cast<m4_cuda_session *>(session); }
int session_forward(void *session, const int64_t *ids, const float *inputs_embeds, int64_t B, int64_t S,
                    const int64_t *position_ids, const int64_t *attention_mask, m4_softmax_scale_rule rule,
                    float *logits, m4_error *err) {
    return m4_cuda_session_forward(session_of(session), ids, inputs_embeds, B, S, position_ids, attention_mask,
                                   rule, logits, err);
}
int session_prompt_embeds(void *session, const int64_t *ids, int64_t B, int64_t S, const m4_pixel_batch *px,
                          float *embeds, m4_error *err) {
    return m4_cuda_session_prompt_embeds(session_of(session), ids, B, S, px, embeds, err);
}
int session_reset(void *session, m4_error *err) { return m4_cuda_session_reset(session_of(session), err); }
int session_device_name(void *session, char *buf, size_t size, m4_error *err) {
    return m4_cuda_device_name(buf, size, err);
}
void session_close(void *session) { m4_cuda_session_close(session_of(session)); }

/* The fast paths this process's environment switches on (paths.h; the backend reads the same
 * variables when it opens): one line, or the table. */
void describe_paths(char *buf, size_t size, int table) {
    m4_cuda_paths paths;
    m4_error err = {{0}};
    if (m4_cuda_paths_from_env(&paths, &err)) {
        snprintf(buf, size, "%s", err.msg);
        return;
    }
    if (table) {
        m4_cuda_paths_describe(&paths, buf, size);
        return;
    }
    char on[160], off[160] = "";
    m4_cuda_paths_list_on(&paths, on, sizeof on);
    for (int i = 0; i < M4_PATH_COUNT; i++)
        if (!paths.on[i])
            snprintf(off + strlen(off), sizeof off - strlen(off), "%s%s%s", off[0] ? "," : "", m4_cuda_path_table[i].name,
                     m4_cuda_path_proven((m4_cuda_path)i) ? "" : "*");
    snprintf(buf, size, "fast paths on: %s; off: %s (* unproven: their twins run unless M4_CUDA_ENABLE)", on,
             off[0] ? off : "none");
}

} // namespace

#define M4_CUDA_ENTRIES                                                                            \
    .close = close_state, .last_device_ms = device_ms, .name_calls = name_calls, .embed_tokens = embed_tokens,               \
    .rmsnorm = rmsnorm, .rope = rope, .self_attn = self_attn, .router = router, .experts = experts,              \
    .shared_experts = shared_experts, .mlp = mlp, .decoder_layer = decoder_layer,                  \
    .lm_head = lm_head, .forward = forward, .patch_conv = patch_conv,                              \
    .vision_attention = vision_attention, .vision_feed_forward = vision_feed_forward,              \
    .vision_layer = vision_layer, .vision_tower = vision_tower, .patch_merger = patch_merger,      \
    .linear = linear, .activation = activation, .projector = projector,                            \
    .merge_image_features = merge_image_features, .forward_multimodal = forward_multimodal

#define M4_CUDA_SESSION_ENTRIES                                                                    \
    .session_forward = session_forward, .session_prompt_embeds = session_prompt_embeds,            \
    .session_reset = session_reset, .session_device_name = session_device_name,                    \
    .session_close = session_close

extern "C" const m4_backend m4_backend_cuda_fp32 = {
    .name = "cuda-fp32",
    .description = "CUDA, float32 weights and arithmetic, no TF32 (optimized/)",
    .precision = M4_PRECISION_FP32,
    .describe_paths = describe_paths,
    .open = open_fp32,
    M4_CUDA_ENTRIES,
    .session_open = session_open_fp32,
    M4_CUDA_SESSION_ENTRIES,
};

extern "C" const m4_backend m4_backend_cuda_bf16 = {
    .name = "cuda-bf16",
    .description = "CUDA, bf16 weights and GEMM operands, float32 accumulation (optimized/)",
    .precision = M4_PRECISION_BF16,
    .describe_paths = describe_paths,
    .open = open_bf16,
    M4_CUDA_ENTRIES,
    .session_open = session_open_bf16,
    M4_CUDA_SESSION_ENTRIES,
};
