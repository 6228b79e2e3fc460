/* weights.h — every tensor of the model, bound by its Hugging Face name to a typed view.
 *
 * One enumeration, m4_weight_specs(), lists every tensor a config implies (name, shape, which
 * part of the model it belongs to, whether a quantized checkpoint stores it as FP8). The binder
 * walks it to check a checkpoint, `mistral4 inspect` walks it to print the module tree and count
 * parameters, so the two can never disagree.
 *
 * Names: the canonical (transformers v5) spelling is `model.language_model.…`,
 * `model.vision_tower.…`, `model.multi_modal_projector.…`, `lm_head.…`; a bare Mistral4ForCausalLM
 * uses `model.…` and `lm_head.…`. The legacy VLM spelling (`language_model.model.…`,
 * `language_model.lm_head.…`, `vision_tower.…`, `multi_modal_projector.…`) is accepted too. */
#ifndef M4_WEIGHTS_H
#define M4_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "dtype.h"
#include "m4_error.h"
#include "safetensors.h"

/* Most elements one tensor of the model may have (2^40; the published model's largest, an expert
 * stack, has 2^31). m4_weight_specs fails on a config implying a larger one, so a tensor's element
 * count, and the sum over all of a model's tensors, always fit in int64_t. */
#define M4_MAX_TENSOR_ELEMENTS (INT64_C(1) << 40)

/* A weight as a 2-D row-major view [rows, cols] (nn.Linear: [out, in]; a 1-D norm weight is
 * [1, n]; the 4-D patch convolution [C_out, C_in·kh·kw]). Dequantised value = float32(x) · scale,
 * the product in float32. */
typedef struct {
    const char *name;            /* name on disk, for messages; NULL when not bound */
    m4_dtype dtype;
    int64_t rows, cols;
    const uint8_t *data;
    float scale;                 /* weight_scale_inv for FP8, else 1 */
    float activation_scale;      /* static FP8 input scale (activation_scale), else 0 */
} m4_weight;

/* Fused routed experts: [E, rows, cols] with one dequantisation scale per expert
 * (`*_scale_inv` [E,1,1]). gate_up_proj is [E, 2F, D] (gate rows first), down_proj [E, D, F]. */
typedef struct {
    const char *name;
    m4_dtype dtype;
    int64_t experts, rows, cols;
    const uint8_t *data;
    float *scales;               /* [E], owned; NULL means all 1 */
    float *activation_scales;    /* [E], owned; NULL when absent */
} m4_expert_stack;

typedef struct {
    m4_weight input_layernorm;            /* [D] */
    /* self_attn (MLA) */
    m4_weight q_proj;                     /* [H·dq, D], only when q_lora_rank == 0 */
    m4_weight q_a_proj;                   /* [Rq, D] */
    m4_weight q_a_layernorm;              /* [Rq] */
    m4_weight q_b_proj;                   /* [H·dq, Rq] */
    m4_weight kv_a_proj_with_mqa;         /* [Rkv + dr, D] */
    m4_weight kv_a_layernorm;             /* [Rkv] */
    m4_weight kv_b_proj;                  /* [H·(dn + dv), Rkv] */
    m4_weight o_proj;                     /* [D, H·dv] */
    m4_weight post_attention_layernorm;   /* [D] */
    /* mlp: a MoE block, or a dense SwiGLU MLP for layers < first_k_dense_replace */
    bool moe;
    m4_weight router;                     /* mlp.gate.weight [E, D] */
    m4_weight router_bias;                /* mlp.gate.e_score_correction_bias [E] (sigmoid routers) */
    m4_expert_stack experts_gate_up;      /* [E, 2F, D] */
    m4_expert_stack experts_down;         /* [E, D, F] */
    m4_weight shared_gate_proj;           /* [F·n_shared, D] */
    m4_weight shared_up_proj;             /* [F·n_shared, D] */
    m4_weight shared_down_proj;           /* [D, F·n_shared] */
    m4_weight gate_proj, up_proj;         /* dense: [I, D] */
    m4_weight down_proj;                  /* dense: [D, I] */
} m4_text_layer_weights;

typedef struct {
    m4_weight attention_norm;             /* [Dv] */
    m4_weight q_proj, k_proj, v_proj, o_proj; /* [Dv, Dv] */
    m4_weight ffn_norm;                   /* [Dv] */
    m4_weight gate_proj, up_proj;         /* [Iv, Dv] */
    m4_weight down_proj;                  /* [Dv, Iv] */
} m4_vision_layer_weights;

typedef struct {
    /* text */
    m4_weight embed_tokens;               /* [V, D] */
    m4_text_layer_weights *layers;        /* [num_hidden_layers] */
    m4_weight norm;                       /* [D] */
    m4_weight lm_head;                    /* [V, D]; the embedding when tied */
    /* vision tower (multimodal only) */
    m4_weight patch_conv;                 /* [Dv, C·p·p] (stored [Dv, C, p, p]) */
    m4_weight ln_pre;                     /* [Dv] */
    m4_vision_layer_weights *vision_layers;
    /* multi_modal_projector (multimodal only) */
    m4_weight projector_norm;             /* [Dv] */
    m4_weight patch_merger;               /* merging_layer [Dv, Dv·m²] */
    m4_weight linear_1;                   /* [D, Dv] */
    m4_weight linear_2;                   /* [D, D] */
    m4_weight linear_1_bias, linear_2_bias; /* [D] when multimodal_projector_bias */
} m4_weights;

/* Which part of the model a tensor belongs to (the rows of `inspect`'s parameter breakdown). */
typedef enum {
    M4_PART_EMBED,
    M4_PART_ATTENTION,      /* MLA projections and their norms */
    M4_PART_NORM,           /* decoder-layer and final norms */
    M4_PART_ROUTER,
    M4_PART_SHARED_EXPERT,
    M4_PART_ROUTED_EXPERTS,
    M4_PART_DENSE_MLP,
    M4_PART_LM_HEAD,
    M4_PART_VISION,
    M4_PART_PROJECTOR,
    M4_PART_FP8_SCALES,
    M4_PART_COUNT
} m4_part;

const char *m4_part_name(m4_part part);

typedef enum { M4_SPEC_WEIGHT, M4_SPEC_EXPERTS, M4_SPEC_SCALE, M4_SPEC_ACT_SCALE } m4_spec_kind;

typedef struct {
    char name[160];              /* canonical spelling */
    int ndim;
    int64_t shape[4];
    m4_part part;
    m4_spec_kind kind;
    bool fp8;                    /* stored F8_E4M3 in a checkpoint whose config says so */
    bool optional;               /* FP8 companions: present only next to an FP8 tensor */
    int layer;                   /* text or vision layer index, -1 otherwise */
    /* where the binder writes it (in the m4_weights passed to m4_weight_specs) */
    m4_weight *weight;
    m4_expert_stack *experts;
} m4_tensor_spec;

/* Lists every tensor `cfg` implies, FP8 companions included when cfg->quant.fp8. If `w` is
 * non-NULL its layer arrays are allocated and the specs point into it. Caller frees *specs. */
int m4_weight_specs(const m4_config *cfg, m4_weights *w, m4_tensor_spec **specs, size_t *n,
                    m4_error *err);

/* The checkpoint tensor a spec names: its canonical spelling, else (multimodal checkpoints) the
 * legacy one. *legacy (may be NULL) tells which matched. NULL when absent. */
const m4_tensor *m4_find_spec_tensor(const m4_checkpoint *ckpt, const m4_config *cfg,
                                     const m4_tensor_spec *spec, bool *legacy);

/* A whole model: its config, the mapped checkpoint and the bound weights. */
typedef struct {
    m4_config config;
    m4_checkpoint *checkpoint;
    m4_weights weights;
    bool legacy_names;           /* checkpoint used language_model.model.… etc. */
} m4_model;

/* Opens a checkpoint folder (config.json + safetensors), binds and shape-checks every tensor.
 * Fails, naming the tensor, on a missing, misshaped, wrongly typed or unexpected tensor. */
int m4_model_open(const char *dir, m4_model *model, m4_error *err);

/* m4_model_open, with the checkpoint's tensor data first copied into memory backed by huge pages
 * (m4_checkpoint_make_resident) when it takes at most half of the memory available now (Linux's
 * MemAvailable); *resident
 * says whether it was (else the weights stay mapped, as m4_model_open leaves them). For a model
 * read whole at every step: the CPU reference's generation (mistral4 run/bench --backend ref). */
int m4_model_open_resident(const char *dir, m4_model *model, bool *resident, m4_error *err);

/* Binds an already parsed config to an already opened checkpoint (takes ownership of ckpt). */
int m4_model_bind(m4_model *model, const m4_config *cfg, m4_checkpoint *ckpt, m4_error *err);

void m4_model_close(m4_model *model);

/* Row `row` of `w` as float32 (dst holds w->cols floats). */
void m4_weight_row_f32(const m4_weight *w, int64_t row, float *dst);

/* Elements [col0, col0 + n) of row `row` as float32: streams a row in chunks that stay in L1. */
void m4_weight_row_chunk_f32(const m4_weight *w, int64_t row, int64_t col0, int64_t n, float *dst);

/* Expert `e` of a stack as a plain 2-D weight with that expert's scale. */
m4_weight m4_expert_weight(const m4_expert_stack *stack, int64_t e);

#endif
