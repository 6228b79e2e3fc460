/* cuda_model.cu — the CUDA backend's state: device, stream, cuBLAS, the weights uploaded through
 * the shared loader, and the linear layers every component is made of. */
#include <limits.h>
#include <stdlib.h>

#include <algorithm>

#include "cuda_model.cuh"
#include "kernels/attention.cuh"
#include "kernels/flash_attention.cuh"
#include "kernels/gemv.cuh"
#include "kernels/grouped_gemm.cuh"
#include "kernels/norm.cuh"
#include "paths.h"

#include "cuda_backend.h"
#ifdef M4_HAVE_CUDNN
#include "cudnn_attention.cuh"
#endif

#define M4_CUBLAS_TRY(call, err)                                                                   \
    do {                                                                                           \
        cublasStatus_t m4_status_ = (call);                                                        \
        if (m4_status_ != CUBLAS_STATUS_SUCCESS)                                                   \
            return m4_fail((err), "%s:%d: %s: %s", __FILE__, __LINE__, #call,                      \
                           cublasGetStatusString(m4_status_));                                     \
    } while (0)

m4_dev_weight m4_dev_weight::expert(int64_t e) const {
    m4_dev_weight w = *this;
    w.data = static_cast<char *>(data) + (size_t)(e * rows * cols) * elem_bytes();
    if (fp8) w.scales = scales + e * m4_fp8_blocks(rows, block_rows) * m4_fp8_blocks(cols, block_cols);
    w.experts = 1;
    return w;
}

/* ---- weights ------------------------------------------------------------------------------- */

/* How a weight is kept on the device. */
enum class dev_form { f32, bf16, fp8 };

/* What a weight is used for decides its form: norms, biases and the router stay float32; a `dense`
 * weight takes the precision's type (kv_b_proj: the cached MLA's kernels read it directly, as
 * float32 or bf16; embed_tokens: gathered, never FP8 in a checkpoint); a `gemm` weight — one that
 * only m4_cuda_linear, m4_cuda_gemv and m4_cuda_grouped_gemm read — keeps an FP8 checkpoint's
 * codes as FP8 under precision bf16 (switch `fp8_codes`; off: dequantised to bf16). Precision fp32 dequantises everything to float32 (it proves
 * the logic at the reference's bounds). */
enum class weight_use { f32, dense, gemm };
static dev_form form_of(const m4_cuda *st, m4_dtype dtype, weight_use use) {
    if (use == weight_use::f32 || st->precision == M4_PRECISION_FP32) return dev_form::f32;
    const bool fp8_codes = use == weight_use::gemm && dtype == M4_DTYPE_F8_E4M3 && m4_cuda_path_on(M4_PATH_FP8_CODES);
    return fp8_codes ? dev_form::fp8 : dev_form::bf16;
}

/* Fills the device weight `dw` (allocated, its form set): f32/bf16: matrix e's rows as produced by
 * row(e, r, dst) (dequantised float32), one matrix at a time through a host buffer; fp8: the e4m3
 * codes at `codes` [experts, rows, cols] as they are, one matrix per copy straight from the
 * checkpoint's mapping (no float32 copy), and one float32 scale per matrix, scale(e) (block = the
 * matrix: the loader's FP8 is per tensor, per expert for the stacks). */
template <typename RowFn, typename ScaleFn>
static int fill_matrices(const m4_dev_weight &dw, const char *name, const uint8_t *codes, RowFn row, ScaleFn scale,
                         m4_error *err) {
    const size_t matrix = (size_t)(dw.rows * dw.cols), elem = dw.elem_bytes();
    if (dw.fp8) {
        std::vector<float> scales((size_t)dw.experts);
        for (int64_t e = 0; e < dw.experts; e++) scales[(size_t)e] = scale(e);
        cudaError_t status = cudaMemcpy(const_cast<float *>(dw.scales), scales.data(), sizeof(float) * scales.size(),
                                        cudaMemcpyHostToDevice);
        for (int64_t e = 0; status == cudaSuccess && e < dw.experts; e++)
            status = cudaMemcpy(static_cast<char *>(dw.data) + (size_t)e * matrix, codes + (size_t)e * matrix, matrix,
                                cudaMemcpyHostToDevice);
        if (status != cudaSuccess) return m4_fail(err, "cuda: uploading %s: %s", name, cudaGetErrorString(status));
        return 0;
    }
    std::vector<float> host(matrix);
    std::vector<__nv_bfloat16> host_bf16(dw.bf16 ? matrix : 0);
    for (int64_t e = 0; e < dw.experts; e++) {
        for (int64_t r = 0; r < dw.rows; r++) row(e, r, host.data() + r * dw.cols);
        const void *src = host.data();
        if (dw.bf16) {
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

/* Allocates `experts` matrices [rows, cols] in `form` (an FP8 weight's per-matrix scales after its
 * codes, in the same allocation), owned by st: freed at close. While `planning`, only counts the
 * bytes (data stays NULL; nothing is filled). */
static int alloc_weight(m4_cuda *st, dev_form form, int64_t experts, int64_t rows, int64_t cols, m4_dev_weight *dw,
                        m4_error *err) {
    *dw = m4_dev_weight();
    dw->bf16 = form == dev_form::bf16, dw->fp8 = form == dev_form::fp8, dw->experts = experts, dw->rows = rows;
    dw->cols = cols, dw->owner = true;
    const size_t data_bytes = (size_t)(rows * cols) * (size_t)experts * dw->elem_bytes();
    const size_t scale_offset = (data_bytes + 255) / 256 * 256;
    const size_t bytes = dw->fp8 ? scale_offset + sizeof(float) * (size_t)experts : data_bytes;
    st->device_bytes += bytes;
    if (st->planning) return 0;
    M4_CUDA_TRY(cudaMalloc(&dw->data, bytes), err);
    if (dw->fp8) {
        dw->scales = reinterpret_cast<const float *>(static_cast<char *>(dw->data) + scale_offset);
        dw->block_rows = rows, dw->block_cols = cols;
    }
    return 0;
}

/* Copies `experts` matrices [rows, cols] to the device under `key` (the host data pointer), in
 * `form` (fill_matrices says how). */
template <typename RowFn, typename ScaleFn>
static int upload_matrices(m4_cuda *st, const void *key, const char *name, int64_t experts, int64_t rows,
                           int64_t cols, dev_form form, const uint8_t *codes, RowFn row, ScaleFn scale,
                           m4_error *err) {
    if (st->weights.count(key)) return 0;                  /* tied embedding / lm_head */
    m4_dev_weight dw;
    if (alloc_weight(st, form, experts, rows, cols, &dw, err)) return -1;
    st->weights[key] = dw;                                  /* owned from here: freed at close */
    return st->planning ? 0 : fill_matrices(dw, name, codes, row, scale, err);
}

/* A plain weight, in the form its use and the precision give it. */
static int upload_weight(m4_cuda *st, const m4_weight &w, weight_use use, m4_error *err) {
    if (!w.data) return 0;
    return upload_matrices(st, w.data, w.name, 1, w.rows, w.cols, form_of(st, w.dtype, use), w.data,
                           [&](int64_t, int64_t r, float *dst) { m4_weight_row_f32(&w, r, dst); },
                           [&](int64_t) { return w.scale; }, err);
}

/* GEMM weights that read the same input (q_a_proj and kv_a_proj_with_mqa; gate_proj and
 * up_proj), stacked row-wise in one allocation: each registered as its own view, and the
 * consecutive views together one wider weight (m4_cuda_weight_pair), so one GEMV or GEMM serves
 * them all. FP8 weights, and parts that differ in width or form, are uploaded one by one. */
static int upload_fused(m4_cuda *st, const m4_weight *const *parts, int n, m4_error *err) {
    bool fuse = n > 1;
    int64_t rows = 0;
    const dev_form form = form_of(st, parts[0]->dtype, weight_use::gemm);
    for (int i = 0; i < n; i++) {
        const m4_weight *w = parts[i];
        fuse = fuse && w->data && !st->weights.count(w->data) && w->cols == parts[0]->cols &&
               form_of(st, w->dtype, weight_use::gemm) == form;
        rows += w->data ? w->rows : 0;
    }
    if (!fuse || form == dev_form::fp8 || !m4_cuda_path_on(M4_PATH_PAIRS)) {
        for (int i = 0; i < n; i++)
            if (upload_weight(st, *parts[i], weight_use::gemm, err)) return -1;
        return 0;
    }
    m4_dev_weight all;
    if (alloc_weight(st, form, 1, rows, parts[0]->cols, &all, err)) return -1;
    int64_t first = 0;
    for (int i = 0; i < n; first += parts[i]->rows, i++) {
        const m4_weight *w = parts[i];
        m4_dev_weight view = all;
        view.data = all.data ? static_cast<char *>(all.data) + (size_t)(first * w->cols) * all.elem_bytes() : nullptr;
        view.rows = w->rows, view.owner = i == 0;          /* the first view frees the allocation */
        view.paired_with_next = i + 1 < n;
        st->weights[w->data] = view;
        if (!st->planning && fill_matrices(view, w->name, w->data, [&](int64_t, int64_t r, float *dst) { m4_weight_row_f32(w, r, dst); },
                          [&](int64_t) { return w->scale; }, err))
            return -1;
    }
    return 0;
}

/* An expert stack (a GEMM weight: the expert kernels read it). */
static int upload_stack(m4_cuda *st, const m4_expert_stack &s, m4_error *err) {
    if (!s.data) return 0;
    return upload_matrices(st, s.data, s.name, s.experts, s.rows, s.cols, form_of(st, s.dtype, weight_use::gemm), s.data,
                           [&](int64_t e, int64_t r, float *dst) {
                               m4_weight w = m4_expert_weight(&s, e);
                               m4_weight_row_f32(&w, r, dst);
                           },
                           [&](int64_t e) { return m4_expert_weight(&s, e).scale; }, err);
}

static int upload_model(m4_cuda *st, const m4_progress *progress, m4_error *err) {
    const m4_config *cfg = &st->model->config;
    const m4_weights *w = &st->model->weights;
    const weight_use F32 = weight_use::f32, DENSE = weight_use::dense, GEMM = weight_use::gemm;
    int rc = upload_weight(st, w->embed_tokens, DENSE, err) || upload_weight(st, w->norm, F32, err) ||
             upload_weight(st, w->lm_head, GEMM, err);
    for (int64_t l = 0; !rc && l < cfg->text.num_hidden_layers; l++) {
        const m4_text_layer_weights *L = &w->layers[l];
        const m4_weight *f32[] = {&L->input_layernorm, &L->q_a_layernorm, &L->kv_a_layernorm,
                                  &L->post_attention_layernorm, &L->router, &L->router_bias};
        const m4_weight *gemm[] = {&L->q_proj, &L->q_b_proj, &L->o_proj, &L->shared_down_proj, &L->down_proj};
        const m4_weight *qkv_a[] = {&L->q_a_proj, &L->kv_a_proj_with_mqa};
        const m4_weight *shared_gate_up[] = {&L->shared_gate_proj, &L->shared_up_proj};
        const m4_weight *gate_up[] = {&L->gate_proj, &L->up_proj};
        for (const m4_weight *x : f32) rc = rc || upload_weight(st, *x, F32, err);
        for (const m4_weight *x : gemm) rc = rc || upload_weight(st, *x, GEMM, err);
        rc = rc || upload_fused(st, qkv_a, 2, err) || upload_fused(st, shared_gate_up, 2, err) ||
             upload_fused(st, gate_up, 2, err);
        /* kv_b_proj: m4_cuda_mla's linear, but also read directly by the cached MLA's kernels */
        rc = rc || upload_weight(st, L->kv_b_proj, DENSE, err);
        rc = rc || upload_stack(st, L->experts_gate_up, err) || upload_stack(st, L->experts_down, err);
        if (rc) m4_fail_context(err, "text.layers.%lld", (long long)l);
        else if (progress && progress->layer_done) progress->layer_done(progress->user, l, cfg->text.num_hidden_layers);
    }
    if (rc || !cfg->multimodal) return rc;
    rc = upload_weight(st, w->patch_conv, GEMM, err) || upload_weight(st, w->ln_pre, F32, err) ||
         upload_weight(st, w->projector_norm, F32, err) || upload_weight(st, w->patch_merger, GEMM, err) ||
         upload_weight(st, w->linear_1, GEMM, err) || upload_weight(st, w->linear_2, GEMM, err) ||
         upload_weight(st, w->linear_1_bias, F32, err) || upload_weight(st, w->linear_2_bias, F32, err);
    for (int64_t l = 0; !rc && l < cfg->vision.num_hidden_layers; l++) {
        const m4_vision_layer_weights *L = &w->vision_layers[l];
        const m4_weight *dense[] = {&L->q_proj, &L->k_proj, &L->v_proj, &L->o_proj, &L->down_proj};
        const m4_weight *gate_up[] = {&L->gate_proj, &L->up_proj};
        rc = upload_weight(st, L->attention_norm, F32, err) || upload_weight(st, L->ffn_norm, F32, err) ||
             upload_fused(st, gate_up, 2, err);
        for (const m4_weight *x : dense) rc = rc || upload_weight(st, *x, GEMM, err);
        if (rc) m4_fail_context(err, "vision.layers.%lld", (long long)l);
    }
    return rc;
}

/* The weights' device bytes as the upload will keep them, counted before anything is allocated:
 * a model that cannot fit fails at once, with the numbers, not minutes into the upload. */
static int check_device_memory(m4_cuda *st, m4_error *err) {
    st->planning = true;
    const int rc = upload_model(st, nullptr, err);
    st->planning = false;
    const size_t need = st->device_bytes;
    st->weights.clear(), st->device_bytes = 0;
    if (rc) return -1;
    size_t free_bytes = 0, total_bytes = 0;
    M4_CUDA_TRY(cudaMemGetInfo(&free_bytes, &total_bytes), err);
    if (need <= free_bytes) return 0;
    const bool fp32 = st->precision == M4_PRECISION_FP32;
    return m4_fail(err, "cuda-%s: the model's weights take %.2f GB on the device as this backend keeps them, and the "
                        "device has %.2f GB free of %.2f GB%s",
                   fp32 ? "fp32" : "bf16", (double)need / 1e9, (double)free_bytes / 1e9, (double)total_bytes / 1e9,
                   fp32 ? " (cuda-bf16 keeps them in bf16, or FP8 as an FP8 checkpoint stores them)" : "");
}

/* cuDNN, when its path is on for the bf16 path: loaded now, so a missing library fails the open
 * with the reason rather than falling back unseen. */
static int open_cudnn(m4_cuda *st, m4_error *err) {
    if (st->precision != M4_PRECISION_BF16 || !m4_cuda_path_on(M4_PATH_CUDNN)) return 0;
#ifdef M4_HAVE_CUDNN
    if (m4_cudnn_create(&st->cudnn, nullptr, err) == 0) return 0;
    return m4_fail_context(err, "cuda-bf16: the cudnn path is on (M4_CUDA_ENABLE; M4_CUDA_DISABLE=cudnn switches it off)");
#else
    return m4_fail(err, "cuda-bf16: the cudnn path is on (M4_CUDA_ENABLE), but this build found no cuDNN headers "
                        "(M4_HAVE_CUDNN off); M4_CUDA_DISABLE=cudnn switches it off");
#endif
}

int m4_cuda_open(const m4_model *model, m4_precision precision, m4_cuda **out, m4_error *err,
                 const m4_progress *progress) {
    int devices = 0;
    if (m4_cuda_device_count(&devices, err)) return -1;
    if (devices == 0) return m4_fail(err, "cuda: no CUDA device on this machine");
    m4_cuda *st = new m4_cuda;
    st->model = model, st->precision = precision;
    *out = st;
    if (m4_cuda_paths_from_env(&m4_cuda_path_switches, err)) return -1;
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
    M4_CUBLAS_TRY(cublasSetMathMode(st->cublas, precision == M4_PRECISION_FP32 ? CUBLAS_PEDANTIC_MATH
                                                                                : CUBLAS_DEFAULT_MATH),
                  err);
    return open_cudnn(st, err) || m4_cuda_init_rope(st, err) || check_device_memory(st, err) ||
           upload_model(st, progress, err);
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
    for (auto &kv : st->weights)
        if (kv.second.owner) cudaFree(kv.second.data);
    cudaFree(st->d_rope_inv_freq);
#ifdef M4_HAVE_CUDNN
    m4_cudnn_destroy(st->cudnn);
#endif
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

bool m4_cuda_weight_pair(const m4_dev_weight &first, const m4_dev_weight &second, m4_dev_weight *both) {
    if (!first.paired_with_next || first.fp8 || second.fp8 || first.bf16 != second.bf16 || first.experts != 1 || second.experts != 1 ||
        first.cols != second.cols ||
        static_cast<const char *>(first.data) + (size_t)(first.rows * first.cols) * first.elem_bytes() != second.data)
        return false;
    *both = first;
    both->rows = first.rows + second.rows, both->owner = false;
    return true;
}

/* ---- linear layers -------------------------------------------------------------------------- */

bool m4_cuda_gemv_fits(const m4_dev_weight &w) {
    if (!w.fp8) return w.cols % 8 == 0;
    return w.cols % 16 == 0 && w.scales && w.block_rows >= 1 && m4_fp8_col_shift(w.cols, w.block_cols, 16) >= 0;
}

int m4_cuda_gemv(m4_cuda *st, const m4_dev_weight &w, const int32_t *expert, int64_t groups, const float *d_x,
                 int64_t x_div, int ntok, float *d_y, bool swiglu, m4_activation act, m4_error *err) {
    if (w.fp8) {
        const m4k_fp8_scales sc = w.fp8_scales();
        return m4k_gemv(w.f8(), w.rows, w.cols, expert, groups, d_x, x_div, ntok, d_y, swiglu, act, st->stream, err, &sc);
    }
    return w.bf16 ? m4k_gemv(w.b16(), w.rows, w.cols, expert, groups, d_x, x_div, ntok, d_y, swiglu, act, st->stream, err)
                  : m4k_gemv(w.f32(), w.rows, w.cols, expert, groups, d_x, x_div, ntok, d_y, swiglu, act, st->stream, err);
}

bool m4_cuda_grouped_gemm_fits(const m4_dev_weight &w) {
    if (w.fp8) return w.cols % 8 == 0 && w.scales && w.block_rows >= 1 && m4_fp8_col_shift(w.cols, w.block_cols, 32) >= 0;
    return w.bf16 && w.cols % 8 == 0;
}

int m4_cuda_grouped_gemm(m4_cuda *st, const m4_dev_weight &w, const int32_t *d_offsets, const float *d_x, int64_t M,
                         float *d_y, bool swiglu, m4_activation act, m4_error *err) {
    if (w.fp8) {
        const m4k_fp8_scales sc = w.fp8_scales();
        return m4k_grouped_gemm(w.f8(), w.experts, w.rows, w.cols, d_offsets, d_x, M, d_y, swiglu, act, st->stream, err, &sc);
    }
    if (!w.bf16) return m4_fail(err, "grouped gemm: float32 weights are not supported (the fp32 path uses cuBLAS)");
    return m4k_grouped_gemm(w.b16(), w.experts, w.rows, w.cols, d_offsets, d_x, M, d_y, swiglu, act, st->stream, err);
}

int64_t m4_cuda_fp8_chunk_elements = INT64_C(1) << 25;

int m4_cuda_linear(m4_cuda *st, const float *d_x, int64_t n, const m4_dev_weight &w, float *d_y, m4_error *err) {
    if (n <= 0) return 0;
    if (n <= M4_CUDA_GEMV_MAX_TOKENS && m4_cuda_gemv_fits(w))
        return m4_cuda_gemv(st, w, nullptr, 1, d_x, 1, (int)n, d_y, false, M4_ACT_SILU, err);
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
    if (!w.fp8) {
        M4_CUBLAS_TRY(cublasGemmEx(st->cublas, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, w.data, CUDA_R_16BF,
                                   k, xb, CUDA_R_16BF, k, &zero, d_y, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT), err);
        return 0;
    }
    /* FP8 weight, prefill-sized batch: rows dequantised to bf16 (m4k_fp8_to_bf16: exactly the values
     * the bf16 upload used to store), a chunk of rows at a time into one stream-ordered scratch
     * buffer, each chunk a bf16 GEMM into its rows of y (column-major yᵀ: offset r0, ldc = rows).
     * Not cuBLASLt's FP8 GEMM: that takes FP8 for both operands (activations quantised, which is
     * not the reference's math), and 128 × 128 weight-block scales only from cuBLAS 12.9, on sm_90
     * alone (per-tensor scales before) — this keeps the bf16 path's numerics on every GPU. */
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(w.rows, m4_cuda_fp8_chunk_elements / w.cols));
    __nv_bfloat16 *wb = arena.get<__nv_bfloat16>(chunk * w.cols, err);
    if (!wb) return -1;
    const m4k_fp8_scales sc = w.fp8_scales();
    for (int64_t r0 = 0; r0 < w.rows; r0 += chunk) {
        const int64_t mc = std::min(chunk, w.rows - r0);
        if (m4k_fp8_to_bf16(w.f8(), sc, w.rows, w.cols, r0, mc, wb, st->stream, err)) return -1;
        M4_CUBLAS_TRY(cublasGemmEx(st->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)mc, nn, k, &one, wb, CUDA_R_16BF, k, xb,
                                   CUDA_R_16BF, k, &zero, d_y + r0, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT), err);
    }
    return 0;
}

int m4_cuda_linear_bias(m4_cuda *st, const float *d_x, int64_t n, const m4_dev_weight &w,
                        const m4_dev_weight *bias, float *d_y, m4_error *err) {
    if (m4_cuda_linear(st, d_x, n, w, d_y, err)) return -1;
    return bias ? m4k_add_bias(d_y, bias->f32(), n, w.rows, st->stream, err) : 0;
}

/* The bf16 flash kernel serves a (switch `flash`). */
static bool flash_serves(const m4_cuda *st, const m4k_attention_args *a) {
    return st->precision == M4_PRECISION_BF16 && m4_cuda_path_on(M4_PATH_FLASH) && m4k_flash_attention_fits(a);  /* fits: probs NULL too */
}

/* cuDNN serves a (switch cudnn; st->cudnn is open only for bf16 with the switch on). */
static bool cudnn_serves(const m4_cuda *st, const m4k_attention_args *a) {
#ifdef M4_HAVE_CUDNN
    return st->cudnn && m4_cudnn_attention_fits(a);
#else
    (void)st, (void)a;
    return false;
#endif
}

bool m4_cuda_attention_fits(const m4_cuda *st, const m4k_attention_args *a) {
    return cudnn_serves(st, a) || flash_serves(st, a) || m4k_attention_fits(a);
}

int m4_cuda_attention(m4_cuda *st, const m4k_attention_args *a, m4_error *err) {
#ifdef M4_HAVE_CUDNN
    if (cudnn_serves(st, a)) return m4_cudnn_attention(st->cudnn, a, st->stream, err);
#endif
    if (flash_serves(st, a)) return m4k_flash_attention(a, st->stream, err);
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
    m4_dev_weight gu;
    if (m4_cuda_weight_pair(*g, *u, &gu)) {
        /* gate and up in one weight [2F, in]: one GEMV with the SwiGLU fused, or one GEMM */
        float *h = arena.get<float>(n * F, err), *both = nullptr;
        if (!h) return -1;
        if (n <= M4_CUDA_GEMV_MAX_TOKENS && m4_cuda_gemv_fits(gu)) {
            if (m4_cuda_gemv(st, gu, nullptr, 1, d_x, 1, (int)n, h, true, act, err)) return -1;
        } else if (!(both = arena.get<float>(n * 2 * F, err)) || m4_cuda_linear(st, d_x, n, gu, both, err) ||
                   m4k_swiglu(both, 2 * F, both + F, 2 * F, h, n, F, act, st->stream, err)) {
            return -1;
        }
        return m4_cuda_linear(st, h, n, *d, d_y, err);
    }
    float *hg = arena.get<float>(n * F, err), *hu = hg ? arena.get<float>(n * F, err) : nullptr;
    if (!hu) return -1;
    return m4_cuda_linear(st, d_x, n, *g, hg, err) || m4_cuda_linear(st, d_x, n, *u, hu, err) ||
           m4k_swiglu(hg, F, hu, F, hg, n, F, act, st->stream, err) ||
           m4_cuda_linear(st, hg, n, *d, d_y, err);
}
