/* cuda_model.cu — the CUDA backend's state: device, stream, cuBLAS, the weights uploaded through
 * the shared loader, and the linear layers every component is made of. */
#include <limits.h>

#include "cuda_model.cuh"

#include "cuda_backend.h"

#define M4_CUBLAS_TRY(call, err)                                                                   \
    do {                                                                                           \
        cublasStatus_t m4_status_ = (call);                                                        \
        if (m4_status_ != CUBLAS_STATUS_SUCCESS)                                                   \
            return m4_fail((err), "%s:%d: %s: %s", __FILE__, __LINE__, #call,                      \
                           cublasGetStatusString(m4_status_));                                     \
    } while (0)

m4_dev_weight m4_dev_weight::expert(int64_t e) const {
    m4_dev_weight w = *this;
    const size_t elem = bf16 ? sizeof(__nv_bfloat16) : sizeof(float);
    w.data = static_cast<char *>(data) + (size_t)(e * rows * cols) * elem;
    w.experts = 1;
    return w;
}

/* ---- weights ------------------------------------------------------------------------------- */

/* Copies `experts` matrices [rows, cols], matrix e's rows produced by row(e, r, dst), to the
 * device as float32 or bf16, one matrix at a time through a host buffer. */
template <typename RowFn>
static int upload_matrices(m4_cuda *st, const void *key, const char *name, int64_t experts,
                           int64_t rows, int64_t cols, bool bf16, RowFn row, m4_error *err) {
    if (st->weights.count(key)) return 0;                  /* tied embedding / lm_head */
    const size_t matrix = (size_t)(rows * cols), elem = bf16 ? sizeof(__nv_bfloat16) : sizeof(float);
    m4_dev_weight dw;
    dw.bf16 = bf16, dw.experts = experts, dw.rows = rows, dw.cols = cols;
    M4_CUDA_TRY(cudaMalloc(&dw.data, matrix * (size_t)experts * elem), err);
    st->weights[key] = dw;                                  /* owned from here: freed at close */
    st->device_bytes += matrix * (size_t)experts * elem;
    std::vector<float> host(matrix);
    std::vector<__nv_bfloat16> host_bf16(bf16 ? matrix : 0);
    for (int64_t e = 0; e < experts; e++) {
        for (int64_t r = 0; r < rows; r++) row(e, r, host.data() + r * cols);
        const void *src = host.data();
        if (bf16) {
            for (size_t i = 0; i < matrix; i++) host_bf16[i] = __float2bfloat16_rn(host[i]);
            src = host_bf16.data();
        }
        cudaError_t status = cudaMemcpy(static_cast<char *>(dw.data) + (size_t)e * matrix * elem, src,
                                        matrix * elem, cudaMemcpyHostToDevice);
        if (status != cudaSuccess)
            return m4_fail(err, "cuda: uploading %s: %s", name, cudaGetErrorString(status));
    }
    return 0;
}

/* A plain weight; `keep_f32` for norms, biases and the router (float32 in both precisions). */
static int upload_weight(m4_cuda *st, const m4_weight &w, bool keep_f32, m4_error *err) {
    if (!w.data) return 0;
    const bool bf16 = !keep_f32 && st->precision == m4_precision::bf16;
    return upload_matrices(st, w.data, w.name, 1, w.rows, w.cols, bf16,
                           [&](int64_t, int64_t r, float *dst) { m4_weight_row_f32(&w, r, dst); }, err);
}

static int upload_stack(m4_cuda *st, const m4_expert_stack &s, m4_error *err) {
    if (!s.data) return 0;
    const bool bf16 = st->precision == m4_precision::bf16;
    return upload_matrices(st, s.data, s.name, s.experts, s.rows, s.cols, bf16,
                           [&](int64_t e, int64_t r, float *dst) {
                               m4_weight w = m4_expert_weight(&s, e);
                               m4_weight_row_f32(&w, r, dst);
                           },
                           err);
}

static int upload_model(m4_cuda *st, m4_error *err) {
    const m4_config *cfg = &st->model->config;
    const m4_weights *w = &st->model->weights;
    int rc = upload_weight(st, w->embed_tokens, false, err) || upload_weight(st, w->norm, true, err) ||
             upload_weight(st, w->lm_head, false, err);
    for (int64_t l = 0; !rc && l < cfg->text.num_hidden_layers; l++) {
        const m4_text_layer_weights *L = &w->layers[l];
        const m4_weight *f32[] = {&L->input_layernorm, &L->q_a_layernorm, &L->kv_a_layernorm,
                                  &L->post_attention_layernorm, &L->router, &L->router_bias};
        const m4_weight *dense[] = {&L->q_proj, &L->q_a_proj, &L->q_b_proj, &L->kv_a_proj_with_mqa,
                                    &L->kv_b_proj, &L->o_proj, &L->shared_gate_proj, &L->shared_up_proj,
                                    &L->shared_down_proj, &L->gate_proj, &L->up_proj, &L->down_proj};
        for (const m4_weight *x : f32) rc = rc || upload_weight(st, *x, true, err);
        for (const m4_weight *x : dense) rc = rc || upload_weight(st, *x, false, err);
        rc = rc || upload_stack(st, L->experts_gate_up, err) || upload_stack(st, L->experts_down, err);
        if (rc) m4_fail_context(err, "text.layers.%lld", (long long)l);
    }
    if (rc || !cfg->multimodal) return rc;
    rc = upload_weight(st, w->patch_conv, false, err) || upload_weight(st, w->ln_pre, true, err) ||
         upload_weight(st, w->projector_norm, true, err) || upload_weight(st, w->patch_merger, false, err) ||
         upload_weight(st, w->linear_1, false, err) || upload_weight(st, w->linear_2, false, err) ||
         upload_weight(st, w->linear_1_bias, true, err) || upload_weight(st, w->linear_2_bias, true, err);
    for (int64_t l = 0; !rc && l < cfg->vision.num_hidden_layers; l++) {
        const m4_vision_layer_weights *L = &w->vision_layers[l];
        const m4_weight *dense[] = {&L->q_proj, &L->k_proj, &L->v_proj, &L->o_proj,
                                    &L->gate_proj, &L->up_proj, &L->down_proj};
        rc = upload_weight(st, L->attention_norm, true, err) || upload_weight(st, L->ffn_norm, true, err);
        for (const m4_weight *x : dense) rc = rc || upload_weight(st, *x, false, err);
        if (rc) m4_fail_context(err, "vision.layers.%lld", (long long)l);
    }
    return rc;
}

int m4_cuda_open(const m4_model *model, m4_precision precision, m4_cuda **out, m4_error *err) {
    int devices = 0;
    if (m4_cuda_device_count(&devices, err)) return -1;
    if (devices == 0) return m4_fail(err, "cuda: no CUDA device on this machine");
    m4_cuda *st = new m4_cuda;
    st->model = model, st->precision = precision;
    *out = st;
    /* Keep freed stream-ordered memory in the pool: per-call scratch then costs no cudaMalloc. */
    cudaMemPool_t pool;
    uint64_t keep = UINT64_MAX;
    M4_CUDA_TRY(cudaDeviceGetDefaultMemPool(&pool, 0), err);
    M4_CUDA_TRY(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), err);
    M4_CUDA_TRY(cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking), err);
    M4_CUDA_TRY(cudaEventCreate(&st->start), err);
    M4_CUDA_TRY(cudaEventCreate(&st->stop), err);
    M4_CUBLAS_TRY(cublasCreate(&st->cublas), err);
    M4_CUBLAS_TRY(cublasSetStream(st->cublas, st->stream), err);
    /* fp32 proves the logic at the reference's bounds: no TF32 or reduced-precision reductions. */
    M4_CUBLAS_TRY(cublasSetMathMode(st->cublas, precision == m4_precision::fp32 ? CUBLAS_PEDANTIC_MATH
                                                                                : CUBLAS_DEFAULT_MATH),
                  err);
    return m4_cuda_init_rope(st, err) || upload_model(st, err);
}

int m4_cuda_init_rope(m4_cuda *st, m4_error *err) {
    const int64_t half = st->model->config.text.qk_rope_head_dim / 2;
    std::vector<float> inv_freq((size_t)(half > 0 ? half : 1));
    if (m4_ref_rope_inv_freq(&st->model->config.text, inv_freq.data(), &st->rope_attention_factor, err)) return -1;
    M4_CUDA_TRY(cudaMalloc(&st->d_rope_inv_freq, sizeof(float) * inv_freq.size()), err);
    M4_CUDA_TRY(cudaMemcpy(st->d_rope_inv_freq, inv_freq.data(), sizeof(float) * inv_freq.size(), cudaMemcpyHostToDevice), err);
    return 0;
}

void m4_cuda_close(m4_cuda *st) {
    if (!st) return;
    if (st->stream) cudaStreamSynchronize(st->stream);
    for (auto &kv : st->weights) cudaFree(kv.second.data);
    cudaFree(st->d_rope_inv_freq);
    if (st->cublas) cublasDestroy(st->cublas);
    if (st->start) cudaEventDestroy(st->start);
    if (st->stop) cudaEventDestroy(st->stop);
    if (st->stream) cudaStreamDestroy(st->stream);
    delete st;
}

const m4_dev_weight *m4_cuda_weight(const m4_cuda *st, const void *host_data, const char *what, m4_error *err) {
    auto it = host_data ? st->weights.find(host_data) : st->weights.end();
    if (it == st->weights.end()) {
        m4_fail(err, "cuda: %s is not a weight of the model this backend opened", what ? what : "weight");
        return nullptr;
    }
    return &it->second;
}

/* ---- linear layers -------------------------------------------------------------------------- */

int m4_cuda_linear(m4_cuda *st, const float *d_x, int64_t n, const m4_dev_weight &w, float *d_y, m4_error *err) {
    if (n <= 0) return 0;
    if (n <= M4_CUDA_GEMV_MAX_TOKENS && w.cols % 8 == 0)
        return w.bf16 ? m4k_gemv(w.b16(), w.rows, w.cols, nullptr, 1, d_x, 1, (int)n, d_y, false,
                                 M4_ACT_SILU, st->stream, err)
                      : m4k_gemv(w.f32(), w.rows, w.cols, nullptr, 1, d_x, 1, (int)n, d_y, false,
                                 M4_ACT_SILU, st->stream, err);
    if (n > INT_MAX || w.rows > INT_MAX || w.cols > INT_MAX)
        return m4_fail(err, "cuda linear: [%lld, %lld] x [%lld, %lld] exceeds cuBLAS's int dimensions",
                       (long long)n, (long long)w.cols, (long long)w.rows, (long long)w.cols);
    const float one = 1.0f, zero = 0.0f;
    const int m = (int)w.rows, nn = (int)n, k = (int)w.cols;
    /* row-major y[n, out] = x[n, in] · Wᵀ is column-major yᵀ = W · xᵀ with W [in, out] transposed */
    if (!w.bf16) {
        M4_CUBLAS_TRY(cublasSgemm(st->cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, w.f32(), k, d_x,
                                  k, &zero, d_y, m), err);
        return 0;
    }
    m4_arena arena(st->stream);
    __nv_bfloat16 *xb = arena.get<__nv_bfloat16>(n * w.cols, err);
    if (!xb || m4k_to_bf16(d_x, xb, n * w.cols, st->stream, err)) return -1;
    M4_CUBLAS_TRY(cublasGemmEx(st->cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, w.data, CUDA_R_16BF,
                               k, xb, CUDA_R_16BF, k, &zero, d_y, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT), err);
    return 0;
}

int m4_cuda_linear_bias(m4_cuda *st, const float *d_x, int64_t n, const m4_dev_weight &w,
                        const m4_dev_weight *bias, float *d_y, m4_error *err) {
    if (m4_cuda_linear(st, d_x, n, w, d_y, err)) return -1;
    return bias ? m4k_add_bias(d_y, bias->f32(), n, w.rows, st->stream, err) : 0;
}

int m4_cuda_attention(m4_cuda *st, const m4k_attention_args *a, m4_error *err) {
    if (st->precision == m4_precision::bf16 && m4k_flash_attention_fits(a))   /* fits: probs NULL too */
        return m4k_flash_attention(a, st->stream, err);
    return m4k_attention(a, st->stream, err);
}

int m4_cuda_swiglu_mlp(m4_cuda *st, const float *d_x, int64_t n, const m4_weight *gate,
                       const m4_weight *up, const m4_weight *down, m4_activation act, float *d_y,
                       m4_error *err) {
    const m4_dev_weight *g = m4_cuda_weight(st, gate->data, gate->name, err);
    const m4_dev_weight *u = g ? m4_cuda_weight(st, up->data, up->name, err) : nullptr;
    const m4_dev_weight *d = u ? m4_cuda_weight(st, down->data, down->name, err) : nullptr;
    if (!d) return -1;
    const int64_t F = g->rows;
    if (u->rows != F || u->cols != g->cols || d->cols != F)
        return m4_fail(err, "swiglu mlp: inconsistent shapes gate [%lld, %lld], up [%lld, %lld], down "
                            "[%lld, %lld]", (long long)g->rows, (long long)g->cols, (long long)u->rows,
                       (long long)u->cols, (long long)d->rows, (long long)d->cols);
    m4_arena arena(st->stream);
    float *hg = arena.get<float>(n * F, err), *hu = hg ? arena.get<float>(n * F, err) : nullptr;
    if (!hu) return -1;
    return m4_cuda_linear(st, d_x, n, *g, hg, err) || m4_cuda_linear(st, d_x, n, *u, hu, err) ||
           m4k_swiglu(hg, F, hu, F, hg, n, F, act, st->stream, err) ||
           m4_cuda_linear(st, hg, n, *d, d_y, err);
}
