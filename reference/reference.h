/* reference.h — the plain-C float32 reference of Mistral 4, one function per Hugging Face module.
 *
 * Read it like the math (docs/MODEL.md): every function's first comment line names the HF module
 * and the component's one dotted name, with the shapes. Activations are float32 row-major;
 * weights are loader views (m4_weight), dequantised a row at a time, so a checkpoint larger than
 * RAM still runs. Notation: N tokens (= B·S), D hidden, H heads, dn/dr/dq = nope/rope/q head
 * dims, dv value head dim, Rq/Rkv the q/kv LoRA ranks, E routed experts, K experts per token,
 * F expert hidden, V vocabulary. */
#ifndef M4_REFERENCE_H
#define M4_REFERENCE_H

#include <stdint.h>

#include "config.h"
#include "m4_error.h"
#include "weights.h"

/* ---- ops.c: the building blocks ---------------------------------------------------------- */

/* Dot product of n floats with 16 independent partial sums (lane j % 16), combined pairwise:
 * deterministic and vectorisable under strict IEEE rules (dot.h: the one summation order of every
 * reference dot product). */
float m4_ref_dot(const float *a, const float *b, int64_t n);

/* nn.Linear without bias: y[n, out] = x[n, in] · Wᵀ, W = w [out, in]. BF16, F32 and FP8 weights
 * are read in place, 8 rows at a time (dot.c); others are dequantised a 512-element chunk at a
 * time on the stack (never a whole matrix). Output rows are spread over OpenMP threads. Cannot
 * fail: the caller guarantees the shapes. */
void m4_ref_linear(const float *x, int64_t n, const m4_weight *w, float *y);

/* RMSNorm (LlamaRMSNorm / PixtralRMSNorm / Mistral4RMSNorm): for each of n rows of width dim,
 * y = w ⊙ (x · rsqrt(mean(x²) + eps)); statistics in float32, weight multiplied after. */
void m4_ref_rmsnorm(const float *x, int64_t n, int64_t dim, const m4_weight *w, float eps, float *y);

/* silu(x) = x · sigmoid(x) (computed as x / (1 + exp(-x)), like torch), in place over n values. */
void m4_ref_silu(float *x, int64_t n);

/* Exact (erf) GELU, in place over n values. */
void m4_ref_gelu(float *x, int64_t n);

/* ACT2FN[act] in place over n values (silu, exact gelu, gelu_pytorch_tanh, relu). */
void m4_ref_activation(float *x, int64_t n, m4_activation act);

/* Softmax over n values in place, float32, max-subtracted. */
void m4_ref_softmax(float *x, int64_t n);

/* Mistral4MLP / Qwen2MoeMLP (SwiGLU): y[n, D] = down( act(x·gateᵀ) ⊙ (x·upᵀ) ), x [n, D].
 * Used by text.layers.{i}.mlp (dense layers), text.layers.{i}.mlp.shared_experts and
 * vision.layers.{j}.feed_forward. */
int m4_ref_swiglu_mlp(const float *x, int64_t n, const m4_weight *gate, const m4_weight *up,
                      const m4_weight *down, m4_activation act, float *y, m4_error *err);

/* ---- text.embed_tokens ------------------------------------------------------------------- */

/* nn.Embedding: out[n, D] = embed_tokens[ids[n], :]. Fails on an id outside [0, V). */
int m4_ref_embed_tokens(const m4_weight *embed_tokens, const int64_t *ids, int64_t n, float *out,
                        m4_error *err);

/* ---- rope.c: text rotary embedding (YaRN) and the Llama-4 query temperature -------------- */

/* Mistral4RotaryEmbedding init (_compute_yarn_parameters / default): inv_freq[dr/2] and the
 * attention_factor that scales cos and sin (MODEL.md §2.4). */
int m4_ref_rope_inv_freq(const m4_text_config *cfg, float *inv_freq, float *attention_factor,
                         m4_error *err);

/* text.layers.{i}.self_attn.rope — Mistral4RotaryEmbedding.forward: for each of n positions,
 * cos/sin[n, dr/2] of position · inv_freq (float32 product), times attention_factor. */
void m4_ref_rope_cos_sin(const float *inv_freq, int64_t half, float attention_factor,
                         const int64_t *positions, int64_t n, float *cos_out, float *sin_out);

/* apply_rotary_pos_emb_interleave on one vector x[dr] → out[dr] (must not overlap x): pairs
 * (x[2i], x[2i+1]) rotate by angle i and the result is written de-interleaved: out[i] = real
 * part, out[dr/2 + i] = imaginary part. With interleave = false, plain rotate_half pairing
 * (x[i], x[i + dr/2]). cos_row/sin_row hold dr/2 values (m4_ref_rope_cos_sin). */
void m4_ref_apply_rope(const float *x, float *out, int64_t dr, const float *cos_row,
                       const float *sin_row, int interleave);

/* text.layers.{i}.self_attn.llama4_scale — get_llama_4_attn_scale:
 * 1 + beta · ln(1 + floor(position / original_max_position_embeddings)), float32. */
float m4_ref_llama4_scale(int64_t position, float beta, int64_t original_max_position_embeddings);

/* ---- mla.c: text.layers.{i}.self_attn ---------------------------------------------------- */

typedef enum {
    M4_SOFTMAX_SCALE_BASE,    /* qk_head_dim^-0.5: the model's intended math (MODEL.md §0.1) */
    M4_SOFTMAX_SCALE_MSCALE2  /* qk_head_dim^-0.5 · mscale(factor, mscale_all_dim)²: HF ≥ PR #47435 */
} m4_softmax_scale_rule;

/* The epsilon of q_a_layernorm and kv_a_layernorm: HF constructs both without one, so 1e-6 always,
 * whatever rms_norm_eps says (MODEL.md §2.2). */
#define M4_MLA_NORM_EPS 1e-6f

/* The MLA softmax scale under a rule. */
float m4_ref_mla_softmax_scale(const m4_text_config *cfg, m4_softmax_scale_rule rule);

/* Optional views into the attention's intermediates, for conformance checks. Any pointer may be
 * NULL. Shapes follow the HF tensors named in golden/README.md. T = the key positions: S without
 * a cache, cached + S with one (m4_ref_mla_cached). */
typedef struct {
    float *q_a;         /* [N, Rq]     q_a_proj output (q_lora_rank > 0 only) */
    float *q;           /* [N, H·dq]   q_b_proj (or q_proj) output, before RoPE */
    float *kv_a;        /* [N, Rkv+dr] kv_a_proj_with_mqa output */
    float *c_kv;        /* [N, Rkv]    after kv_a_layernorm */
    float *kv_b;        /* [B·T, H·(dn+dv)] kv_b_proj output */
    float *q_rot;       /* [B, H, S, dq] query after RoPE and the Llama-4 scale */
    float *k_rot;       /* [B, H, T, dq] key after RoPE */
    float *v;           /* [B, H, T, dv] value states */
    float *llama4_scale;/* [N] */
    float *attn_weights;/* [B, H, S, T] post-softmax */
    float *attn_output; /* [N, H·dv]   before o_proj */
} m4_mla_trace;

/* ---- kv_cache.c: the MLA key/value cache (MODEL.md §6.1) ----------------------------------- */

/* What HF's cache holds for MLA since the compressed-cache change: per layer, batch row and
 * position, the normalised kv latent c_kv [Rkv] (kv_a_layernorm output, before kv_b_proj) and
 * the ROTATED shared key k_rope [dr] (RoPE at that token's position applied once, when it
 * entered). Rkv + dr floats per token per layer (320 for the published model). HF re-expands
 * every cached latent through kv_b_proj at each forward; m4_ref_mla_cached attends over them in
 * the absorbed form instead (same math, different rounding; no per-step re-expansion).
 *
 * Every row holds the same number of positions, `length` (left padding keeps rows aligned; the
 * 2-D attention mask the caller carries says which positions are padding). A forward with the
 * cache writes its S new positions at [length, length + S) of every layer; the text forward
 * then advances `length` by S. */
typedef struct {
    int64_t layers, batch, capacity; /* L, B, positions allocated per row */
    int64_t kv_lora_rank, rope_dim;  /* Rkv, dr */
    int64_t length;                  /* positions filled in every row */
    float *c_kv;                     /* [L, B, capacity, Rkv] */
    float *k_rope;                   /* [L, B, capacity, dr] */
} m4_kv_cache;

/* Bytes m4_kv_cache_init allocates for `batch` rows of `capacity` positions. */
int64_t m4_kv_cache_bytes(const m4_text_config *cfg, int64_t batch, int64_t capacity);

/* An empty cache (length 0) for `batch` rows of at most `capacity` positions. Fails on
 * non-positive sizes or out of memory. (Nothing here limits position ids: HF computes RoPE for
 * any position; callers decide whether max_position_embeddings is a hard limit.) */
int m4_kv_cache_init(m4_kv_cache *cache, const m4_text_config *cfg, int64_t batch,
                     int64_t capacity, m4_error *err);

/* Forgets every position (length = 0); keeps the memory. */
void m4_kv_cache_reset(m4_kv_cache *cache);

void m4_kv_cache_free(m4_kv_cache *cache);

/* The cached latent c_kv [Rkv] / rotated key [dr] of (layer, row b, position t). */
float *m4_kv_cache_c_kv(const m4_kv_cache *cache, int64_t layer, int64_t b, int64_t t);
float *m4_kv_cache_k_rope(const m4_kv_cache *cache, int64_t layer, int64_t b, int64_t t);

/* Mistral4Attention.forward (eager, no cache): x [B, S, D] (already input_layernorm'ed) →
 * out [B, S, D]. position_ids [B, S] (NULL = arange(S) per row) drive RoPE and the Llama-4
 * scale; attention_mask [B, S] (1 = token, 0 = padding; NULL = all tokens) combines with the
 * causal mask (by index) as HF's eager mask does: a disallowed score gets finfo(float32).min
 * added, so a fully masked query row (left padding) softmaxes to uniform weights, like HF.
 * Not modelled: HF with attention_mask=None *and* no cache splits "packed" sequences at
 * position-id jumps; pass an all-ones mask to HF to get what this computes. */
int m4_ref_mla(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *x, int64_t B,
               int64_t S, const int64_t *position_ids, const int64_t *attention_mask,
               float softmax_scale, float *out, m4_mla_trace *trace, m4_error *err);

/* Mistral4Attention.forward with a cache (HF's past_key_values path), in the absorbed form
 * (mla.c): kv_b_proj's key half folded into the queries, its value half applied after the
 * attention, so the attention runs over the cached latents and nothing is re-expanded per step.
 * The same math as m4_ref_mla, grouped differently in float32 (within the reference's budget of
 * it). The keys are the cache's `cache->length` earlier positions of layer `layer` followed by the
 * S new ones, whose c_kv and rotated k_rope this call appends to the cache (at [length, length +
 * S); the caller advances cache->length once every layer has run: m4_ref_text_forward_cached).
 * attention_mask is HF's 2-D mask over all T = length + S positions, [B, T] (NULL = all
 * tokens); new token s sits at index length + s for the causal rule. position_ids [B, S] of the
 * new tokens (NULL = length + arange(S)). cache NULL is m4_ref_mla (the expanded form). */
int m4_ref_mla_cached(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *x,
                      int64_t B, int64_t S, const int64_t *position_ids,
                      const int64_t *attention_mask, float softmax_scale, m4_kv_cache *cache,
                      int64_t layer, float *out, m4_error *err);

/* ---- moe.c: text.layers.{i}.mlp ----------------------------------------------------------- */

/* text.layers.{i}.mlp.gate — Mistral4TopkRouter + route_tokens_to_experts: x [N, D] →
 * logits [N, E], top-K expert ids [N, K] (descending score; ties → lower id) and their weights
 * [N, K] (group-limited selection, renormalised when norm_topk_prob, × routed_scaling_factor). */
int m4_ref_router(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *x,
                  int64_t N, float *logits, int64_t *topk_ids, float *topk_weights, m4_error *err);

/* text.layers.{i}.mlp.experts — Mistral4Experts (eager): out[N, D] = Σ over the token's K
 * experts, in ascending expert id, of weight · SwiGLU_e(x), accumulated onto zeros. */
int m4_ref_experts(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *x,
                   int64_t N, const int64_t *topk_ids, const float *topk_weights, float *out,
                   m4_error *err);

/* text.layers.{i}.mlp — Mistral4MoE.forward: routed experts + shared expert, x [N, D] → out. For
 * dense layers (i < first_k_dense_replace) the SwiGLU MLP. */
int m4_ref_mlp(const m4_text_config *cfg, const m4_text_layer_weights *w, const float *x,
               int64_t N, float *out, m4_error *err);

/* ---- text.c: the decoder ------------------------------------------------------------------ */

/* text.layers.{i} — Mistral4DecoderLayer: h [B, S, D] in place:
 * h += attn(input_layernorm(h)); h += mlp(post_attention_layernorm(h)). */
int m4_ref_decoder_layer(const m4_text_config *cfg, const m4_text_layer_weights *w, float *h,
                         int64_t B, int64_t S, const int64_t *position_ids,
                         const int64_t *attention_mask, float softmax_scale, m4_error *err);

/* The same with the attention's cache (m4_ref_mla_cached; attention_mask [B, length + S]);
 * cache NULL is m4_ref_decoder_layer. */
int m4_ref_decoder_layer_cached(const m4_text_config *cfg, const m4_text_layer_weights *w, float *h,
                                int64_t B, int64_t S, const int64_t *position_ids,
                                const int64_t *attention_mask, float softmax_scale,
                                m4_kv_cache *cache, int64_t layer, m4_error *err);

/* model (text) — Mistral4ForCausalLM.forward: ids [B, S] → logits [B, keep, V] for the last
 * `keep` positions of each row (keep = 0 or S: all, as HF's logits_to_keep = 0; keep > S is an
 * error). inputs_embeds [B, S, D], when non-NULL, replaces the embedding lookup (the multimodal
 * path; ids may then be NULL). position_ids NULL = arange(S) per row. */
int m4_ref_text_forward(const m4_model *model, const int64_t *ids, const float *inputs_embeds,
                        int64_t B, int64_t S, const int64_t *position_ids,
                        const int64_t *attention_mask, int64_t keep,
                        m4_softmax_scale_rule scale_rule, float *logits, m4_error *err);

/* Watching a long forward (a prefill of the real model takes minutes on a CPU): layer_done is
 * called after each decoder layer. Purely informational. */
typedef struct {
    void (*layer_done)(void *user, int64_t layer, int64_t layers);
    void *user;
} m4_progress;

/* model (text) with a cache — Mistral4ForCausalLM.forward(past_key_values=cache): the S new
 * tokens of each row attend to the cache's `length` earlier positions and to each other; their
 * latents are appended and cache->length grows by S (only on success). attention_mask [B,
 * length + S] covers the cached and the new positions (HF generate() carries it along; NULL = all
 * tokens); position_ids [B, S] (NULL = length + arange(S)) drive RoPE and the Llama-4 scale.
 * logits [B, keep, V] as m4_ref_text_forward. Prefill then one token at a time gives the logits
 * of one uncached forward over the whole sequence. cache NULL is m4_ref_text_forward; progress
 * may be NULL. */
int m4_ref_text_forward_cached(const m4_model *model, const int64_t *ids,
                               const float *inputs_embeds, int64_t B, int64_t S,
                               const int64_t *position_ids, const int64_t *attention_mask,
                               int64_t keep, m4_softmax_scale_rule scale_rule, m4_kv_cache *cache,
                               const m4_progress *progress, float *logits, m4_error *err);

#endif
