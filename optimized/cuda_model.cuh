/* cuda_model.cuh — the CUDA backend's per-model state and its components on device buffers.
 *
 * One function per HF module, like reference.h, but on device pointers (d_*): the backend
 * entries (backend_cuda.cu) copy the harness's host arrays in and out around them. Weights are
 * uploaded once at open, dequantised through the shared loader: float32 for precision fp32,
 * bf16 for precision bf16 (norm weights, biases and the router stay float32 in both) — except
 * that with precision bf16 an FP8 checkpoint's GEMM weights (the projections, the expert stacks,
 * lm_head if FP8) stay FP8: their e4m3 bytes as stored, plus their scales (m4_dev_weight). */
#ifndef M4_CUDA_MODEL_CUH
#define M4_CUDA_MODEL_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <unordered_map>
#include <vector>

#include "common.cuh"
#include "kernels/attention.cuh"   /* m4k_attention_args */
#include "kernels/gemv.cuh"        /* m4k_fp8_scales */

extern "C" {
#include "backend.h" /* the interface, and m4_precision */
}

/* A weight on the device: [experts, rows, cols] (experts = 1 for a plain weight), float32, bf16,
 * or FP8: e4m3 codes with float32 scales [experts, ⌈rows / block_rows⌉, ⌈cols / block_cols⌉]
 * (fp8_blocks.h; the loader's per-tensor scales give block = the whole matrix). An uploaded FP8
 * weight's scales live in the same allocation, after the codes (freed with `data`). Only GEMM
 * weights are FP8 — m4_cuda_linear, m4_cuda_gemv and m4_cuda_grouped_gemm take every form; code
 * that reads b16()/f32() directly (embeddings, kv_b_proj in the cached MLA) gets bf16/float32. */
struct m4_dev_weight {
    void *data = nullptr;
    bool bf16 = false;
    bool fp8 = false;
    const float *scales = nullptr;               /* fp8 only */
    int64_t block_rows = 0, block_cols = 0;      /* fp8 only */
    int64_t experts = 1, rows = 0, cols = 0;
    bool owner = false;                          /* data is an allocation of its own (freed at close) */
    bool paired_with_next = false;               /* the upload stacked the pair's next weight right after
                                                    this one (upload_fused; switch `pairs`) */
    const float *f32() const { return static_cast<const float *>(data); }
    const __nv_bfloat16 *b16() const { return static_cast<const __nv_bfloat16 *>(data); }
    const __nv_fp8_e4m3 *f8() const { return static_cast<const __nv_fp8_e4m3 *>(data); }
    m4k_fp8_scales fp8_scales() const { return {scales, block_rows, block_cols}; }
    /* Bytes of one element of data. */
    size_t elem_bytes() const { return fp8 ? 1 : bf16 ? sizeof(__nv_bfloat16) : sizeof(float); }
    /* Expert e as a plain weight. */
    m4_dev_weight expert(int64_t e) const;
};

struct m4_cuda {
    const m4_model *model = nullptr;
    float *d_rope_inv_freq = nullptr;  /* [dr/2] text RoPE frequencies (m4_ref_rope_inv_freq) */
    float rope_attention_factor = 1;
    m4_precision precision = M4_PRECISION_FP32;
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    cudaEvent_t start = nullptr, stop = nullptr;
    double last_device_ms = 0;
    /* host weight data pointer → its device copy */
    std::unordered_map<const void *, m4_dev_weight> weights;
    size_t device_bytes = 0;
    bool planning = false;             /* the upload only counts device_bytes (m4_cuda_open's check) */
    struct m4_cudnn *cudnn = nullptr;  /* cuDNN's fused attention (switch cudnn, bf16; cudnn_attention.cuh) */
    char component[128] = "";          /* the row the calls serve (m4_backend.name_calls): NVTX ranges' name */
};

/* The MLA cache on the device (reference.h's m4_kv_cache): per layer, row and position the
 * normalised latent c_kv [Rkv] and the rotated shared key k_rope [dr], in the weights' precision
 * (bf16 or float32). c_kv [L, B, stride, Rkv], k_rope [L, B, stride, dr]: rows hold `stride` ≥
 * capacity positions (whole M4_CUDA_KEY_TILE tiles), zero-filled, so that a tile-wide read past
 * the last position stays in bounds and finite. The length lives twice: on the host (checks,
 * bookkeeping) and on the device (d_length, what the kernels read), advanced together by every
 * cached forward — on the device in-stream, so a captured decode step replays at any length. */
struct m4_cuda_cache {
    int64_t layers = 0, batch = 0, capacity = 0, stride = 0, length = 0;
    int64_t *d_length = nullptr;
    bool bf16 = false;
    void *c_kv = nullptr, *k_rope = nullptr;
};

/* Device scratch for one call: stream-ordered allocations freed (stream-ordered) when it goes. */
class m4_arena {
public:
    explicit m4_arena(cudaStream_t stream) : stream_(stream) {}
    ~m4_arena() {
        for (void *p : ptrs_) cudaFreeAsync(p, stream_);
    }
    m4_arena(const m4_arena &) = delete;
    m4_arena &operator=(const m4_arena &) = delete;
    /* n elements of T, or NULL with err set. */
    template <typename T> T *get(int64_t n, m4_error *err) {
        void *p = nullptr;
        cudaError_t status = cudaMallocAsync(&p, sizeof(T) * (size_t)(n > 0 ? n : 1), stream_);
        if (status != cudaSuccess) {
            m4_fail(err, "cuda: out of device memory for %lld x %zu bytes: %s", (long long)n, sizeof(T),
                    cudaGetErrorString(status));
            return nullptr;
        }
        ptrs_.push_back(p);
        return static_cast<T *>(p);
    }
    /* A device copy of n host values, or NULL with err set. */
    template <typename T> T *upload(const T *host, int64_t n, m4_error *err) {
        T *d = get<T>(n, err);
        if (d && n > 0 &&
            cudaMemcpyAsync(d, host, sizeof(T) * (size_t)n, cudaMemcpyHostToDevice, stream_) != cudaSuccess) {
            m4_fail(err, "cuda: upload of %lld values failed", (long long)n);
            return nullptr;
        }
        return d;
    }

private:
    cudaStream_t stream_;
    std::vector<void *> ptrs_;
};

/* Where a batch's tokens sit, on the device: positions [B·S] and the 2-D attention mask [B, T]
 * (T = cached + S; NULL: every position is a token), its rows mask_stride ≥ T apart.
 * Device-resident so that a decode step can be captured in a CUDA graph. */
struct m4_cuda_positions {
    const int64_t *d_pos = nullptr;
    const int64_t *d_mask = nullptr;
    int64_t mask_stride = 0;
};

/* Uploads position_ids [B, S] (NULL: HF's default past + arange(S) per row) and attention_mask
 * [B, past + S] (may be NULL) into `arena`. */
int m4_cuda_upload_positions(m4_cuda *st, m4_arena &arena, const int64_t *position_ids,
                             const int64_t *attention_mask, int64_t B, int64_t S, int64_t past,
                             m4_cuda_positions *out, m4_error *err);

/* ---- cuda_model.cu: state, weights, linear layers --------------------------------------- */

/* Opens the device state and uploads the model's weights (progress, when non-NULL, hears of each
 * text layer uploaded: the published model's 121 GB take a while). */
int m4_cuda_open(const m4_model *model, m4_precision precision, m4_cuda **out, m4_error *err,
                 const m4_progress *progress = nullptr);
/* The text RoPE frequencies on the device (part of m4_cuda_open; st->model set). */
int m4_cuda_init_rope(m4_cuda *st, m4_error *err);
void m4_cuda_close(m4_cuda *st);
/* The device copy of a loader weight; NULL with err set when it was never uploaded. */
const m4_dev_weight *m4_cuda_weight(const m4_cuda *st, const void *host_data, const char *what, m4_error *err);
/* Two weights the upload stacked as a pair (first.paired_with_next, and the second's rows right
 * after the first's, same width and form; not FP8) as one [first.rows + second.rows, cols] weight
 * in *both; false when they are not. Two separate allocations that happen to lie back to back are
 * not a pair: the flag, set only while the switch `pairs` is on, decides. The upload stacks
 * q_a_proj with kv_a_proj_with_mqa and gate_proj with up_proj this way. */
bool m4_cuda_weight_pair(const m4_dev_weight &first, const m4_dev_weight &second, m4_dev_weight *both);

/* nn.Linear without bias: y[n, out] = x[n, in] · Wᵀ. GEMV kernel for n ≤ M4_CUDA_GEMV_MAX_TOKENS
 * (when m4_cuda_gemv_fits), else cuBLAS (fp32: pedantic float32, no TF32; bf16: x rounded to
 * bf16, float32 accumulate; FP8: the weight dequantised to bf16 in row chunks of at most
 * m4_cuda_fp8_chunk_elements into stream-ordered scratch, then the bf16 GEMM). */
int m4_cuda_linear(m4_cuda *st, const float *d_x, int64_t n, const m4_dev_weight &w, float *d_y, m4_error *err);
/* Most weight elements one FP8 dequantisation chunk of m4_cuda_linear holds (default 2^25: 64 MB
 * of bf16 scratch; the real model's FP8 projections, ≤ 4096 × 4096, take one chunk). */
extern int64_t m4_cuda_fp8_chunk_elements;
/* m4k_gemv / m4k_grouped_gemm on a device weight of any form (the FP8 scales passed along), and
 * whether that weight's form and shape suit them (else: m4_cuda_linear's cuBLAS path). */
bool m4_cuda_gemv_fits(const m4_dev_weight &w);
int m4_cuda_gemv(m4_cuda *st, const m4_dev_weight &w, const int32_t *expert, int64_t groups, const float *d_x,
                 int64_t x_div, int ntok, float *d_y, bool swiglu, m4_activation act, m4_error *err);
bool m4_cuda_grouped_gemm_fits(const m4_dev_weight &w);
int m4_cuda_grouped_gemm(m4_cuda *st, const m4_dev_weight &w, const int32_t *d_offsets, const float *d_x, int64_t M,
                         float *d_y, bool swiglu, m4_activation act, m4_error *err);
/* The same with an optional bias (NULL: none). */
int m4_cuda_linear_bias(m4_cuda *st, const float *d_x, int64_t n, const m4_dev_weight &w,
                        const m4_dev_weight *bias, float *d_y, m4_error *err);
/* Mistral4MLP / PixtralMLP (SwiGLU): y = down(act(x·gateᵀ) ⊙ (x·upᵀ)), x [n, in]. */
int m4_cuda_swiglu_mlp(m4_cuda *st, const float *d_x, int64_t n, const m4_weight *gate,
                       const m4_weight *up, const m4_weight *down, m4_activation act, float *d_y,
                       m4_error *err);
/* Softmax attention (attention.cuh's m4k_attention_args) on st->stream. For precision bf16 with no
 * probabilities wanted: cuDNN's fused attention where it fits (switch cudnn), else the tensor-core
 * flash kernel where the head dims fit it (switch flash; both round to bf16); otherwise the float32
 * kernel (m4k_attention), which also writes a->probs. With every path on, cuDNN serves what it fits
 * (no padding mask: the causal text prompts of unpadded rows, Pixtral's images) and flash the rest. */
int m4_cuda_attention(m4_cuda *st, const m4k_attention_args *a, m4_error *err);
/* Whether m4_cuda_attention can serve a (shapes only: no pointer is read). */
bool m4_cuda_attention_fits(const m4_cuda *st, const m4k_attention_args *a);

/* ---- text.cu: the text components ------------------------------------------------------- */

/* Host-side trace targets of the MLA (reference.h's m4_mla_trace, any field may be NULL). */
int m4_cuda_mla(m4_cuda *st, int layer, const float *d_x, int64_t B, int64_t S,
                const m4_cuda_positions &where, float softmax_scale, float *d_out, m4_mla_trace *trace,
                m4_error *err);
/* Router: d_logits [N, E] (may be NULL), d_ids [N, K], d_weights [N, K]. */
int m4_cuda_router(m4_cuda *st, int layer, const float *d_x, int64_t n, float *d_logits,
                   int32_t *d_ids, float *d_weights, m4_error *err);
/* Routed experts under a given routing ids/weights [n, K], + d_shared [n, D] when non-NULL, on
 * explicit stacks gu [E, 2F, D] and dn [E, D, F] (the benchmarks' synthetic layers) … */
int m4_cuda_moe_experts(m4_cuda *st, const m4_dev_weight &gu, const m4_dev_weight &dn, int64_t K,
                        m4_activation act, const float *d_x, int64_t n, const int32_t *d_ids,
                        const float *d_weights, const float *d_shared, float *d_out, m4_error *err);
/* … or on layer `layer` of the model. */
int m4_cuda_experts(m4_cuda *st, int layer, const float *d_x, int64_t n, const int32_t *d_ids,
                    const float *d_weights, const float *d_shared, float *d_out, m4_error *err);
int m4_cuda_mlp(m4_cuda *st, int layer, const float *d_x, int64_t n, float *d_out, m4_error *err);
/* The attention with the device cache (absorbed MLA over the latents), appending the S new
 * positions to layer `layer` (the caller advances cache->length); attention_mask [B, length + S]. */
int m4_cuda_mla_cached(m4_cuda *st, int layer, m4_cuda_cache *cache, const float *d_x, int64_t B, int64_t S,
                       const m4_cuda_positions &where, float softmax_scale, float *d_out, m4_error *err);
int m4_cuda_cache_init(m4_cuda *st, m4_cuda_cache *cache, int64_t batch, int64_t capacity, m4_error *err);
/* Declares the first `length` positions filled (host and device), e.g. for a benchmark. */
int m4_cuda_cache_set_length(m4_cuda *st, m4_cuda_cache *cache, int64_t length, m4_error *err);
void m4_cuda_cache_free(m4_cuda_cache *cache);
/* text.layers.{i}, d_h [B, S, D] in place (cache NULL: the uncached HF form). */
int m4_cuda_decoder_layer(m4_cuda *st, int layer, m4_cuda_cache *cache, float *d_h, int64_t B, int64_t S,
                          const m4_cuda_positions &where, float softmax_scale, m4_error *err);
/* Embedding: host ids (checked here) → d_out [n, D]. */
int m4_cuda_embed(m4_cuda *st, const int64_t *ids, int64_t n, float *d_out, m4_error *err);
/* Mistral4ForCausalLM.forward from d_h = inputs_embeds [B, S, D] (overwritten) → d_logits
 * [B, S, V], or with a cache (which then grows by S) only each row's last position, [B, V]. */
int m4_cuda_text_forward(m4_cuda *st, m4_cuda_cache *cache, float *d_h, int64_t B, int64_t S,
                         const m4_cuda_positions &where, m4_softmax_scale_rule rule, float *d_logits,
                         m4_error *err);

/* ---- vision.cu: the vision tower and projector ------------------------------------------ */

/* vision.patch_conv in the conv layout [N_img, Dv, H/p, W/p]. */
int m4_cuda_patch_conv(m4_cuda *st, const m4_pixel_batch *px, float *d_out, m4_error *err);
int m4_cuda_vision_attention(m4_cuda *st, int layer, const float *d_x, const m4_patch_grid *grids,
                             int64_t n_images, float *d_out, m4_vision_attn_trace *trace, m4_error *err);
int m4_cuda_vision_layer(m4_cuda *st, int layer, float *d_h, const m4_patch_grid *grids,
                         int64_t n_images, m4_error *err);
/* Selected vision features [P, Dv] (P from m4_ref_patch_grids). */
int m4_cuda_vision_tower(m4_cuda *st, const m4_pixel_batch *px, float *d_features, m4_error *err);
int m4_cuda_patch_merger(m4_cuda *st, const float *d_x, const m4_patch_grid *grids, int64_t n_images,
                         float *d_out, m4_error *err);
int m4_cuda_projector(m4_cuda *st, const float *d_x, const m4_patch_grid *grids, int64_t n_images,
                      float *d_out, m4_error *err);
/* The prompt's inputs_embeds [B·S, D]: embed_tokens(ids) with the image-token rows replaced by
 * the images' projected features (px NULL or empty: the plain embedding). */
int m4_cuda_prompt_embeds(m4_cuda *st, const int64_t *ids, int64_t B, int64_t S, const m4_pixel_batch *px,
                          float *d_h, m4_error *err);
/* embeds [n, D] with the image-token rows replaced by d_features [n_features, D] (host ids). */
int m4_cuda_merge(m4_cuda *st, const int64_t *ids, int64_t n, const float *d_embeds,
                  const float *d_features, int64_t n_features, float *d_out, m4_error *err);

#endif
