/* session.cu — text generation on the GPU behind cuda_backend.h's C interface: one m4_cuda
 * state (weights on the device) and one device MLA cache. */
#include <stdio.h>

#include <vector>

#include "cuda_backend.h"
#include "cuda_model.cuh"
#include "kernels/gemv.cuh"   /* M4_CUDA_GEMV_MAX_TOKENS */
#include "paths.h"

/* The one-token decode step is captured once in a CUDA graph and replayed: its ~30 launches per
 * layer go to the GPU as one, and the kernels read the cache length and the positions from the
 * device, so one capture serves every step. It runs on fixed device buffers: the embeddings
 * d_h [B, D], positions d_pos [B], the mask d_mask [B, capacity] (rows capacity apart) and the
 * logits d_logits [B, V]. Prompts (S > 1) and batches past the GEMV (B > 8, where a step may
 * synchronise with the host) run eagerly. */
struct m4_cuda_session {
    m4_cuda *st = nullptr;
    m4_cuda_cache cache;
    bool use_graphs = true;
    cudaGraphExec_t step = nullptr;           /* the captured decode step, for step_rule */
    m4_softmax_scale_rule step_rule = M4_SOFTMAX_SCALE_BASE;
    float *d_h = nullptr, *d_logits = nullptr;
    int64_t *d_pos = nullptr, *d_mask = nullptr;
};

int m4_cuda_session_open(const m4_model *model, bool bf16, int64_t batch, int64_t capacity,
                         const m4_progress *upload_progress, m4_cuda_session **out, m4_error *err) {
    m4_cuda_session *s = new m4_cuda_session;
    *out = nullptr;
    if (m4_cuda_open(model, bf16 ? M4_PRECISION_BF16 : M4_PRECISION_FP32, &s->st, err, upload_progress) ||
        m4_cuda_cache_init(s->st, &s->cache, batch, capacity, err)) {
        m4_cuda_session_close(s);
        return -1;
    }
    s->use_graphs = m4_cuda_path_on(M4_PATH_GRAPHS);
    *out = s;
    return 0;
}

void m4_cuda_session_use_graphs(m4_cuda_session *s, bool on) {
    s->use_graphs = on;
    if (!on && s->step) cudaGraphExecDestroy(s->step), s->step = nullptr;
}

/* Captures the decode step (m4_cuda_text_forward on the fixed buffers) into s->step. Capturing
 * runs the host side once without the GPU: the host length it advances is put back, since the
 * replay that follows advances it. */
static int capture_step(m4_cuda_session *s, m4_softmax_scale_rule rule, m4_error *err) {
    m4_cuda *st = s->st;
    const int64_t B = s->cache.batch, D = st->model->config.text.hidden_size, V = st->model->weights.lm_head.rows;
    if (!s->d_h) {
        M4_CUDA_TRY(cudaMalloc(&s->d_h, sizeof(float) * (size_t)(B * D)), err);
        M4_CUDA_TRY(cudaMalloc(&s->d_logits, sizeof(float) * (size_t)(B * V)), err);
        M4_CUDA_TRY(cudaMalloc(&s->d_pos, sizeof(int64_t) * (size_t)B), err);
        M4_CUDA_TRY(cudaMalloc(&s->d_mask, sizeof(int64_t) * (size_t)(B * s->cache.capacity)), err);
    }
    if (s->step) cudaGraphExecDestroy(s->step), s->step = nullptr;
    m4_cuda_positions where;
    where.d_pos = s->d_pos, where.d_mask = s->d_mask, where.mask_stride = s->cache.capacity;
    const int64_t length = s->cache.length;
    M4_CUDA_TRY(cudaStreamBeginCapture(st->stream, cudaStreamCaptureModeThreadLocal), err);
    const int rc = m4_cuda_text_forward(st, &s->cache, s->d_h, B, 1, where, rule, s->d_logits, err);
    s->cache.length = length;
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(st->stream, &graph);
    if (rc || ended != cudaSuccess) {
        if (graph) cudaGraphDestroy(graph);
        if (!rc) m4_fail(err, "cuda: cudaStreamEndCapture: %s", cudaGetErrorString(ended));
        m4_fail_context(err, "cuda session: capturing the decode step in a CUDA graph (M4_CUDA_DISABLE=graphs runs "
                             "it without one)");
        return -1;
    }
    const cudaError_t made = cudaGraphInstantiate(&s->step, graph, 0);
    cudaGraphDestroy(graph);
    M4_CUDA_TRY(made, err);
    s->step_rule = rule;
    return 0;
}

/* One decode step (S = 1) through the captured graph: the token's embedding, its position and
 * the mask go into the fixed buffers, then the replay; the logits land in d_logits. */
static int replay_step(m4_cuda_session *s, const int64_t *ids, const float *inputs_embeds, const int64_t *position_ids,
                       const int64_t *attention_mask, m4_softmax_scale_rule rule, m4_error *err) {
    m4_cuda *st = s->st;
    const int64_t B = s->cache.batch, D = st->model->config.text.hidden_size, T = s->cache.length + 1;
    if (T > s->cache.capacity)
        return m4_fail(err, "self_attn: the kv cache is full: %lld cached + 1 new position > capacity %lld",
                       (long long)s->cache.length, (long long)s->cache.capacity);
    if ((!s->step || s->step_rule != rule) && capture_step(s, rule, err)) return -1;
    if (inputs_embeds)
        M4_CUDA_TRY(cudaMemcpyAsync(s->d_h, inputs_embeds, sizeof(float) * (size_t)(B * D), cudaMemcpyHostToDevice,
                                    st->stream), err);
    else if (m4_cuda_embed(st, ids, B, s->d_h, err))
        return -1;
    std::vector<int64_t> pos((size_t)B), mask;
    for (int64_t b = 0; b < B; b++) pos[(size_t)b] = position_ids ? position_ids[b] : s->cache.length;
    if (!attention_mask) mask.assign((size_t)(B * T), 1);   /* every position a token: the same as no mask */
    M4_CUDA_TRY(cudaMemcpyAsync(s->d_pos, pos.data(), sizeof(int64_t) * (size_t)B, cudaMemcpyHostToDevice, st->stream),
                err);
    M4_CUDA_TRY(cudaMemcpy2DAsync(s->d_mask, sizeof(int64_t) * (size_t)s->cache.capacity,
                                  attention_mask ? attention_mask : mask.data(), sizeof(int64_t) * (size_t)T,
                                  sizeof(int64_t) * (size_t)T, (size_t)B, cudaMemcpyHostToDevice, st->stream), err);
    M4_CUDA_TRY(cudaEventRecord(st->start, st->stream), err);
    M4_CUDA_TRY(cudaGraphLaunch(s->step, st->stream), err);
    M4_CUDA_TRY(cudaEventRecord(st->stop, st->stream), err);
    s->cache.length += 1;                      /* the replay advanced the device length */
    return 0;
}

int m4_cuda_session_forward(m4_cuda_session *s, const int64_t *ids, const float *inputs_embeds, int64_t B,
                            int64_t S, const int64_t *position_ids, const int64_t *attention_mask,
                            m4_softmax_scale_rule rule, float *logits, m4_error *err) {
    m4_cuda *st = s->st;
    const int64_t D = st->model->config.text.hidden_size, V = st->model->weights.lm_head.rows;
    if (B != s->cache.batch || S <= 0)
        return m4_fail(err, "cuda session: %lld rows of %lld tokens for a cache of %lld rows", (long long)B,
                       (long long)S, (long long)s->cache.batch);
    if (!ids && !inputs_embeds) return m4_fail(err, "cuda session: neither ids nor inputs_embeds given");
    m4_nvtx_range nvtx("model (cached)");
    const float *d_logits;
    m4_arena arena(st->stream);
    if (S == 1 && B <= M4_CUDA_GEMV_MAX_TOKENS && s->use_graphs) {
        if (replay_step(s, ids, inputs_embeds, position_ids, attention_mask, rule, err)) return -1;
        d_logits = s->d_logits;
    } else {
        float *d_h = inputs_embeds ? arena.upload(inputs_embeds, B * S * D, err) : arena.get<float>(B * S * D, err);
        float *d_out = arena.get<float>(B * V, err);
        m4_cuda_positions where;
        if (!d_h || !d_out ||
            m4_cuda_upload_positions(st, arena, position_ids, attention_mask, B, S, s->cache.length, &where, err))
            return -1;
        M4_CUDA_TRY(cudaEventRecord(st->start, st->stream), err);
        if ((!inputs_embeds && m4_cuda_embed(st, ids, B * S, d_h, err)) ||
            m4_cuda_text_forward(st, &s->cache, d_h, B, S, where, rule, d_out, err))
            return -1;
        M4_CUDA_TRY(cudaEventRecord(st->stop, st->stream), err);
        d_logits = d_out;
    }
    M4_CUDA_TRY(cudaMemcpyAsync(logits, d_logits, sizeof(float) * (size_t)(B * V), cudaMemcpyDeviceToHost, st->stream), err);
    M4_CUDA_TRY(cudaStreamSynchronize(st->stream), err);
    float ms = 0;
    M4_CUDA_TRY(cudaEventElapsedTime(&ms, st->start, st->stop), err);
    st->last_device_ms = ms;
    return 0;
}

int m4_cuda_session_prompt_embeds(m4_cuda_session *s, const int64_t *ids, int64_t B, int64_t S,
                                  const m4_pixel_batch *px, float *embeds, m4_error *err) {
    m4_cuda *st = s->st;
    const int64_t n = B * S * st->model->config.text.hidden_size;
    m4_nvtx_range nvtx("multimodal.merge (prompt)");
    m4_arena arena(st->stream);
    float *d_h = arena.get<float>(n, err);
    if (!d_h || m4_cuda_prompt_embeds(st, ids, B, S, px, d_h, err)) return -1;
    M4_CUDA_TRY(cudaMemcpyAsync(embeds, d_h, sizeof(float) * (size_t)n, cudaMemcpyDeviceToHost, st->stream), err);
    M4_CUDA_TRY(cudaStreamSynchronize(st->stream), err);
    return 0;
}

int m4_cuda_session_reset(m4_cuda_session *s, m4_error *err) {
    return m4_cuda_cache_set_length(s->st, &s->cache, 0, err);
}

int m4_cuda_device_name(char *buf, size_t n, m4_error *err) {
    int device = 0;
    cudaDeviceProp prop;
    M4_CUDA_TRY(cudaGetDevice(&device), err);
    M4_CUDA_TRY(cudaGetDeviceProperties(&prop, device), err);
    snprintf(buf, n, "%s", prop.name);
    return 0;
}

int64_t m4_cuda_session_length(const m4_cuda_session *s) { return s->cache.length; }

double m4_cuda_session_device_ms(const m4_cuda_session *s) { return s->st ? s->st->last_device_ms : 0; }

void m4_cuda_session_close(m4_cuda_session *s) {
    if (!s) return;
    if (s->st) {
        cudaStreamSynchronize(s->st->stream);
        m4_cuda_cache_free(&s->cache);
    }
    if (s->step) cudaGraphExecDestroy(s->step);
    cudaFree(s->d_h), cudaFree(s->d_logits), cudaFree(s->d_pos), cudaFree(s->d_mask);
    m4_cuda_close(s->st);
    delete s;
}
