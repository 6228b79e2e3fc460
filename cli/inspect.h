/* inspect.h — the accounting behind `mistral4 inspect`: what a model holds and what one token
 * costs, computed from the loader's tensor-spec list (m4_weight_specs), never from hard-coded
 * figures. Nothing here prints; cmd_inspect.c renders these numbers as text or JSON, and
 * tests/test_inspect.c checks them directly.
 *
 * Definitions used throughout:
 *   params            elements of a tensor (FP8 scale scalars count as parameters too, as in the
 *                     published total 119,401,317,952).
 *   active per token  the parameters one text token's forward pass reads: every attention, norm,
 *                     router, shared-expert, dense-MLP and lm_head weight; k/E of each routed
 *                     expert stack (k = num_experts_per_tok of E experts) and of its FP8 scales;
 *                     one row (hidden_size values) of the embedding. The vision tower and the
 *                     projector run per image patch, not per text token, and are kept apart.
 *   FLOPs             2 per active weight element (one multiply-add); a norm weight is counted
 *                     the same way. The embedding is a row gather (0 FLOPs). Attention adds the
 *                     context-dependent terms below. Elementwise work (activations, softmax,
 *                     RoPE, the norm statistics) is not counted.
 *   attention (HF)    Hugging Face's compressed cache keeps the T latents c_kv and re-expands all
 *                     of them through kv_b_proj every step: 2·T·numel(kv_b) FLOPs (this replaces
 *                     the 2·numel(kv_b) of the current token alone), plus 2·H·(dq + dv)·T for the
 *                     scores and the probability-weighted sum of values. T = context length, the
 *                     keys one new token attends to (the past plus itself).
 *   attention (absorbed MLA, for comparison only) folds kv_b into q and o: 2·numel(kv_b) once,
 *                     plus 2·H·T·(Rkv + dr) for the scores and 2·H·T·Rkv for the values.
 *   bytes             active params × the byte size of their dtype (FP8 1, BF16 2, F32 4…),
 *                     scales included; the latent KV cache read (T·(Rkv + dr) values per layer in
 *                     the activation dtype) is reported apart from the weights. */
#ifndef M4_CLI_INSPECT_H
#define M4_CLI_INSPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "dtype.h"
#include "m4_error.h"
#include "weights.h"

/* ---- what was opened ------------------------------------------------------------------------ */

typedef struct {
    const char *path;            /* as given */
    bool from_checkpoint;        /* config.json + safetensors, bound with m4_model_open */
    m4_model model;              /* valid when from_checkpoint */
    m4_config config;            /* the config (a copy of model.config for a checkpoint) */
    m4_tensor_spec *specs;       /* the tensors present: on disk, or all the config implies */
    m4_dtype *dtypes;            /* [n]: the dtype on disk, or the inferred one */
    size_t n;
    m4_dtype dense_dtype;        /* from the config's `dtype` (F32 when absent or unknown) */
    bool dense_dtype_known;      /* false: the config had no recognisable `dtype` */
    /* checkpoint only */
    size_t n_shards, n_disk_tensors;
    uint64_t disk_bytes;
} inspect_input;

/* Opens `path`: a checkpoint folder (config.json and *.safetensors or an index), a folder with
 * only config.json, or a config.json file. On failure err names the path. */
int inspect_open(const char *path, inspect_input *in, m4_error *err);
void inspect_close(inspect_input *in);

/* ---- single tensors --------------------------------------------------------------------------- */

/* Elements of a spec (a scalar, ndim 0, has 1). */
int64_t inspect_numel(const m4_tensor_spec *s);

/* true for a routed expert stack or its per-expert FP8 scales: only k of E experts are read. */
bool inspect_is_routed(const m4_tensor_spec *s);

/* "bfloat16" → BF16, "float16" → F16, "float32" → F32 (and the short torch spellings).
 * Returns -1 when the name is absent or unknown. */
int inspect_dtype_from_config_name(const char *name, m4_dtype *out);

/* The dtype a spec is stored in when only the config is known: F8_E4M3 where spec.fp8, F32 for
 * FP8 scales, else `dense`. */
m4_dtype inspect_inferred_dtype(const m4_tensor_spec *s, m4_dtype dense);

/* ---- parameter counts ------------------------------------------------------------------------- */

typedef struct {
    int64_t total;
    int64_t by_part[M4_PART_COUNT];
    int64_t text;                /* embeddings … lm_head (dense MLP included), without scales */
    int64_t vision, projector, fp8_scales;
} inspect_params;

void inspect_count_params(const m4_tensor_spec *specs, size_t n, inspect_params *out);

/* ---- active parameters per text token ------------------------------------------------------- */

typedef struct {
    int64_t total;                   /* per text token, FP8 scales included */
    int64_t by_part[M4_PART_COUNT];  /* VISION and PROJECTOR are 0 here: see below */
    int64_t experts_per_token, routed_experts; /* k and E */
    int64_t routed_total;            /* all routed-expert params, for the k/E line */
    int64_t vision_per_patch;        /* every vision weight is read for each image patch */
    int64_t projector_per_patch;     /* idem for the projector (merger per 2×2 block) */
} inspect_active;

int inspect_active_params(const m4_config *cfg, const m4_tensor_spec *specs, size_t n,
                          inspect_active *out, m4_error *err);

/* ---- FLOPs and bytes for one decode token ------------------------------------------------- */

typedef enum {
    INSPECT_COST_EMBED,
    INSPECT_COST_ATTN_PROJ,      /* q_a/q_b (or q), kv_a, o and the q_a/kv_a norms */
    INSPECT_COST_ATTN_KV_B,      /* kv_b_proj over the T cached latents (HF) */
    INSPECT_COST_ATTN_SCORES,    /* q·kᵀ and P·v over T keys */
    INSPECT_COST_KV_CACHE,       /* reading the T cached latents + rope keys */
    INSPECT_COST_NORMS,
    INSPECT_COST_ROUTER,
    INSPECT_COST_SHARED,
    INSPECT_COST_ROUTED,
    INSPECT_COST_DENSE_MLP,
    INSPECT_COST_LM_HEAD,
    INSPECT_COST_FP8_SCALES,
    INSPECT_COST_COUNT
} inspect_cost_component;

typedef struct {
    int64_t flops, weight_bytes, cache_bytes;
} inspect_cost_row;

typedef struct {
    int64_t context;                           /* T */
    m4_dtype cache_dtype;
    inspect_cost_row rows[INSPECT_COST_COUNT];
    int64_t total_flops, total_weight_bytes, total_cache_bytes, total_bytes;
    int64_t attention_flops;                   /* the three attention rows (HF-style) */
    int64_t attention_flops_absorbed;          /* the same attention, absorbed MLA */
} inspect_cost;

/* The component's name in output ("attention.kv_b_expansion", …). */
const char *inspect_cost_name(inspect_cost_component c);

/* Costs of one decode token at context length `context` (≥ 1). dtypes[i] is the storage dtype
 * of specs[i]; the cache is counted in `cache_dtype`. */
int inspect_per_token(const m4_config *cfg, const m4_tensor_spec *specs, const m4_dtype *dtypes,
                      size_t n, int64_t context, m4_dtype cache_dtype, inspect_cost *out,
                      m4_error *err);

/* ---- softmax scale of MLA (MODEL.md §0) ------------------------------------------------------ */

typedef struct {
    double base;                 /* qk_head_dim^-0.5 */
    bool has_mscale_rule;        /* yarn with a nonzero mscale_all_dim */
    double mscale;               /* m = 0.1·mscale_all_dim·ln(factor) + 1 */
    double with_mscale;          /* base · m² (HF after PR #47435) */
} inspect_softmax_scale;

void inspect_softmax(const m4_config *cfg, inspect_softmax_scale *out);

/* ---- expert parallelism over N GPUs (docs/SCALING.md) ------------------------------------------
 *
 * The plan: the routed experts are split across N GPUs (expert parallel) in contiguous blocks, the
 * same block in every MoE layer: GPU r holds experts [r·q + min(r, m), … + q + (r < m)) with
 * q = E / N and m = E mod N, so GPUs 0 .. m−1 hold one expert more than the rest and GPU 0 always
 * holds the largest share. Everything else is replicated on every GPU: embeddings, attention (MLA)
 * with the whole latent cache, norms, router, shared expert, dense MLP, lm_head, the vision tower
 * and the projector. Bytes are storage bytes (weights as stored, or all bf16) plus the latent
 * cache at context T for batch 1; activations, workspaces and the CUDA context are not counted. */

/* How the weights are stored: as the checkpoint (or config) has them (FP8 codes + their float32
 * scales, the rest in its dtype), or every weight in bf16 (a dequantised copy: no scales). */
typedef enum { INSPECT_STORAGE_AS_STORED, INSPECT_STORAGE_BF16, INSPECT_STORAGE_COUNT } inspect_storage;

/* "as_stored", "bf16" (the JSON spelling). */
const char *inspect_storage_name(inspect_storage s);

/* The weight bytes of a model, split into what every GPU holds and what one routed expert adds. */
typedef struct {
    int64_t replicated_text;      /* every text tensor but the routed experts (their scales too) */
    int64_t replicated_vision, replicated_projector;
    int64_t replicated;           /* the three above */
    int64_t per_expert;           /* one routed expert over all MoE layers: its slice of every
                                     expert stack and its per-expert FP8 scales */
    int64_t experts;              /* E = n_routed_experts */
} inspect_weight_split;

/* dtypes[i] is the storage dtype of specs[i] (used for INSPECT_STORAGE_AS_STORED). */
int inspect_split_weights(const m4_config *cfg, const m4_tensor_spec *specs, const m4_dtype *dtypes,
                          size_t n, inspect_storage storage, inspect_weight_split *out, m4_error *err);

/* One GPU's share at N GPUs. */
typedef struct {
    int64_t first_expert, experts;  /* routed experts [first_expert, first_expert + experts) */
    int64_t weight_bytes;           /* replicated + experts × per_expert */
    int64_t cache_bytes;            /* the whole latent cache (attention is replicated) */
    int64_t total_bytes;            /* weight_bytes + cache_bytes: what must fit */
} inspect_gpu_share;

/* GPU `rank`'s share (0 ≤ rank < gpus ≤ E). cache_bytes: the latent cache at the plan's context,
 * inspect_cost.rows[INSPECT_COST_KV_CACHE].cache_bytes (the bytes one decode token reads). */
int inspect_gpu_share_of(const inspect_weight_split *w, int64_t cache_bytes, int64_t gpus, int64_t rank,
                         inspect_gpu_share *out, m4_error *err);

/* A GPU model and the memory a plan may fill on it. */
typedef struct {
    const char *name;             /* "H100" */
    const char *memory;           /* as sold: "80 GB" */
    int64_t usable_bytes;         /* what CUDA leaves to allocate, about: 78 GiB of the H100's 80 GB */
} inspect_gpu_card;

#define INSPECT_GPU_CARD_COUNT 2
extern const inspect_gpu_card inspect_gpu_cards[INSPECT_GPU_CARD_COUNT];

/* The fewest GPUs (1 .. E) whose largest share fits usable_bytes; 0 when even E GPUs do not. */
int64_t inspect_fewest_gpus(const inspect_weight_split *w, int64_t cache_bytes, int64_t usable_bytes);

/* The collective of the plan, per token (batch 1, bf16 activations). Attention is replicated, so
 * every GPU holds every token's hidden state: each GPU runs the router (the same choice
 * everywhere), applies only its own experts to the tokens routed to them, and one all-reduce
 * (sum) per MoE layer combines the partial routed outputs, [tokens, hidden_size] in bf16. A
 * prefill token costs the same bytes as a decoded one; a prompt of P tokens sends them in
 * moe_layers all-reduces of P × message_bytes_per_layer, a decode step in moe_layers all-reduces
 * of one token's. */
typedef struct {
    int64_t gpus;
    int64_t moe_layers;                /* layers holding routed experts: one all-reduce each */
    int64_t hidden_size;               /* the all-reduce's row: one token's hidden state */
    int64_t message_bytes_per_layer;   /* hidden_size × 2 (bf16) */
    int64_t message_bytes;             /* × moe_layers: the all-reduce payload of one token */
    double bus_bytes_per_gpu;          /* ring all-reduce: each GPU sends (and receives)
                                          2·(N−1)/N × message_bytes per token (NCCL's bus bytes) */
} inspect_expert_comm;

void inspect_expert_comm_of(const m4_config *cfg, const m4_tensor_spec *specs, size_t n, int64_t gpus,
                            inspect_expert_comm *out);

#endif
