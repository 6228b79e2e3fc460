/* session.cu — text generation on the GPU behind cuda_backend.h's C interface: one m4_cuda
 * state (weights on the device) and one device MLA cache. */
#include "cuda_backend.h"
#include "cuda_model.cuh"

struct m4_cuda_session {
    m4_cuda *st = nullptr;
    m4_cuda_cache cache;
};

int m4_cuda_session_open(const m4_model *model, bool bf16, int64_t batch, int64_t capacity,
                         m4_cuda_session **out, m4_error *err) {
    m4_cuda_session *s = new m4_cuda_session;
    *out = nullptr;
    if (m4_cuda_open(model, bf16 ? m4_precision::bf16 : m4_precision::fp32, &s->st, err) ||
        m4_cuda_cache_init(s->st, &s->cache, batch, capacity, err)) {
        m4_cuda_session_close(s);
        return -1;
    }
    *out = s;
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
    m4_arena arena(st->stream);
    float *d_h = inputs_embeds ? arena.upload(inputs_embeds, B * S * D, err) : arena.get<float>(B * S * D, err);
    float *d_logits = arena.get<float>(B * V, err);
    m4_cuda_positions where;
    if (!d_h || !d_logits ||
        m4_cuda_upload_positions(st, arena, position_ids, attention_mask, B, S, s->cache.length, &where, err))
        return -1;
    M4_CUDA_TRY(cudaEventRecord(st->start, st->stream), err);
    if ((!inputs_embeds && m4_cuda_embed(st, ids, B * S, d_h, err)) ||
        m4_cuda_text_forward(st, &s->cache, d_h, B, S, where, rule, d_logits, err))
        return -1;
    M4_CUDA_TRY(cudaEventRecord(st->stop, st->stream), err);
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

int64_t m4_cuda_session_length(const m4_cuda_session *s) { return s->cache.length; }

double m4_cuda_session_device_ms(const m4_cuda_session *s) { return s->st ? s->st->last_device_ms : 0; }

void m4_cuda_session_close(m4_cuda_session *s) {
    if (!s) return;
    if (s->st) {
        cudaStreamSynchronize(s->st->stream);
        m4_cuda_cache_free(&s->cache);
    }
    m4_cuda_close(s->st);
    delete s;
}
