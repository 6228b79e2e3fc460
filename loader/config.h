/* config.h — the model configuration, read from a Hugging Face config.json.
 *
 * Two file shapes are understood (MODEL.md §1):
 *   - Mistral3ForConditionalGeneration (model_type "mistral3"): top-level fields plus a
 *     `text_config` of model_type "mistral4" and a `vision_config` of model_type "pixtral";
 *   - a bare Mistral4ForCausalLM (model_type "mistral4"): the text fields at the top level.
 * Absent fields take Hugging Face's defaults for that config class, which are not always the
 * published model's values (Pixtral's hidden_act defaults to "gelu"; the model uses "silu"). */
#ifndef M4_CONFIG_H
#define M4_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "m4_error.h"

/* ---- limits (docs/INPUTS.md): every config.json value is checked against these, and a value
 * outside them fails with a message naming the field and the bound. */

/* Largest size or count accepted for any dimension (hidden sizes, vocabulary, heads, experts …):
 * the product of two such values still fits in int64_t. */
#define M4_CONFIG_MAX_DIM INT64_C(2147483647)
/* Most decoder layers accepted, text or vision (the published model has 36 and 24): the tensor
 * list holds ~20 entries a layer, so this bounds what a config alone can make the loader
 * allocate. */
#define M4_CONFIG_MAX_LAYERS 1024
/* Largest config.json read (1 MiB; the published one is 2.4 KiB). */
#define M4_CONFIG_MAX_BYTES (1L << 20)
/* eos_token_id may be a list of at most this many ids. */
#define M4_CONFIG_MAX_EOS_IDS 8
/* quantization_config.modules_to_not_convert: at most this many prefixes, each shorter than
 * M4_CONFIG_MAX_MODULE_NAME bytes. */
#define M4_CONFIG_MAX_NOT_CONVERTED 16
#define M4_CONFIG_MAX_MODULE_NAME 128

typedef enum { M4_ACT_SILU, M4_ACT_GELU, M4_ACT_GELU_TANH, M4_ACT_RELU } m4_activation;

typedef enum { M4_ROPE_DEFAULT, M4_ROPE_YARN } m4_rope_type;

typedef enum { M4_ROUTER_SOFTMAX, M4_ROUTER_SIGMOID } m4_router_scoring;

/* rope_parameters (or legacy rope_theta + rope_scaling). Optional YaRN fields that HF treats as
 * "absent → different formula" carry a has_ flag. */
typedef struct {
    m4_rope_type type;
    double theta;
    double factor;                          /* yarn, as written: HF 5.24's inv_freq, attention_factor and
                                             * MLA softmax mscale all use it (a factor that disagrees
                                             * with max/original positions only draws a warning) */
    int64_t original_max_position_embeddings; /* yarn correction range + Llama-4 scale base */
    bool has_original_max_position_embeddings; /* false: absent, HF falls back to max_position_embeddings */
    double beta_fast, beta_slow;            /* yarn, defaults 32 and 1 */
    bool has_mscale, has_mscale_all_dim;    /* HF: `if mscale and mscale_all_dim` */
    double mscale, mscale_all_dim;
    bool has_attention_factor;
    double attention_factor;                /* explicit override of the cos/sin scale */
    bool truncate;                          /* floor/ceil of the correction range, default true */
    double partial_rotary_factor;           /* default qk_rope / (qk_nope + qk_rope) */
    bool has_llama_4_scaling_beta;
    double llama_4_scaling_beta;            /* Llama-4 query temperature; absent → no scaling */
} m4_rope_config;

/* Mistral4Config (model_type "mistral4"). */
typedef struct {
    int64_t vocab_size, hidden_size, intermediate_size, moe_intermediate_size;
    int64_t num_hidden_layers, num_attention_heads, num_key_value_heads;
    int64_t n_shared_experts, n_routed_experts, num_experts_per_tok;
    int64_t n_group, topk_group, first_k_dense_replace;
    bool norm_topk_prob;
    double routed_scaling_factor;
    m4_router_scoring scoring_func;         /* not a Mistral4Config field: DeepSeek-style configs */
    int64_t q_lora_rank;                    /* 0 = null in the JSON: a plain q_proj */
    int64_t kv_lora_rank, qk_rope_head_dim, qk_nope_head_dim, v_head_dim;
    int64_t qk_head_dim;                    /* derived: nope + rope (HF also sets head_dim to it) */
    m4_activation hidden_act;
    int64_t max_position_embeddings;
    double rms_norm_eps;
    int64_t pad_token_id, bos_token_id;     /* -1 = null in the JSON */
    int n_eos_token_ids;                    /* eos_token_id may be an int or a list */
    int64_t eos_token_ids[M4_CONFIG_MAX_EOS_IDS];
    bool tie_word_embeddings, rope_interleave, attention_bias;
    m4_rope_config rope;
} m4_text_config;

/* PixtralVisionConfig (model_type "pixtral"). */
typedef struct {
    int64_t hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, head_dim;
    int64_t num_channels, image_size, patch_size;
    m4_activation hidden_act;
    double rope_theta;
} m4_vision_config;

/* Per-tensor FP8 quantization as published (quant_method "fp8", weight_block_size null). */
typedef struct {
    bool fp8;
    bool activation_scheme_static;
    int n_not_converted;
    char not_converted[M4_CONFIG_MAX_NOT_CONVERTED][M4_CONFIG_MAX_MODULE_NAME]; /* module prefixes kept in the dense dtype */
} m4_quant_config;

typedef struct {
    bool multimodal;                        /* Mistral3ForConditionalGeneration */
    char source[512];                       /* the file it was read from, for messages */
    char architecture[64];
    char dtype[16];                         /* "bfloat16", "float32", … (informational) */
    m4_text_config text;
    m4_vision_config vision;                /* valid when multimodal */
    /* Mistral3Config top level (valid when multimodal) */
    int64_t image_token_index, spatial_merge_size, vision_feature_layer;
    m4_activation projector_hidden_act;
    bool multimodal_projector_bias;
    bool tie_word_embeddings;               /* the effective value for lm_head */
    m4_quant_config quant;
} m4_config;

/* Reads and validates config.json at `path`. Errors name the file and the field. */
int m4_config_load(const char *path, m4_config *cfg, m4_error *err);

/* Same, from JSON text; `source` names it in error messages. */
int m4_config_parse(const char *json_text, const char *source, m4_config *cfg, m4_error *err);

const char *m4_activation_name(m4_activation act);

#endif
