/* config_compare.c — m4_config, field by field (config_compare.h).
 *
 * One table lists every field of m4_config with the key config.json gives it and whether the
 * forward pass reads it. After the table, the two structs are compared whole with the listed
 * fields made equal, so a field added to m4_config and forgotten here is still reported. */
#include "config_compare.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Where a field lives in config.json: its section's key prefix. VISION and PROJECTOR (the
 * Mistral3 top-level fields) exist in multimodal configs only. */
typedef enum { TOP, TEXT, ROPE, VISION, PROJECTOR, QUANT } section;

typedef enum {
    I64,        /* int64_t */
    F64,        /* double */
    BOOL,       /* bool, written as `yes` and `no` when given, else true and false */
    ACTIVATION, /* m4_activation */
    ROPE_TYPE,  /* m4_rope_type */
    SCORING,    /* m4_router_scoring */
    TEXT_BUF,   /* char[size] */
    OPT_I64,    /* int64_t at offset, present when the bool at `also` is true */
    OPT_F64,    /* double at offset, the same */
    EOS_IDS,    /* int64_t[size / 8] at offset, the count (int) at `also` */
    MODULES,    /* char[M4_CONFIG_MAX_NOT_CONVERTED][M4_CONFIG_MAX_MODULE_NAME], the count (int) at `also` */
} kind;

typedef struct {
    section in;
    const char *key;      /* as config.json writes it */
    kind kind;
    size_t offset, size;  /* the value's bytes in m4_config */
    size_t also, also_size; /* the presence flag or count, for OPT_*, EOS_IDS, MODULES; else 0 */
    bool forward;         /* read by the forward pass (reference/, optimized/): a difference changes the math */
    const char *yes, *no; /* a BOOL's values as config.json writes them, when not true/false */
} field;

/* the value's bytes and, for OPT_*, EOS_IDS and MODULES, the flag's or count's */
#define VALUE(member) .offset = offsetof(m4_config, member), .size = sizeof(((m4_config *)0)->member)
#define ALSO(member) .also = offsetof(m4_config, member), .also_size = sizeof(((m4_config *)0)->member)
#define PLAIN(in_, key_, kind_, member) {.in = in_, .key = key_, .kind = kind_, VALUE(member), .forward = true}
#define INFO(in_, key_, kind_, member) {.in = in_, .key = key_, .kind = kind_, VALUE(member), .forward = false}
#define OPTIONAL(key_, kind_, member, flag) {.in = ROPE, .key = key_, .kind = kind_, VALUE(member), ALSO(flag), .forward = true}
#define NAMED(in_, key_, member, yes_, no_) \
    {.in = in_, .key = key_, .kind = BOOL, VALUE(member), .forward = true, .yes = yes_, .no = no_}

static const field fields[] = {
    NAMED(TOP, "model_type", multimodal, "\"mistral3\"", "\"mistral4\""),
    INFO(TOP, "architectures", TEXT_BUF, architecture),
    INFO(TOP, "dtype", TEXT_BUF, dtype),
    PLAIN(TEXT, "vocab_size", I64, text.vocab_size),
    PLAIN(TEXT, "hidden_size", I64, text.hidden_size),
    PLAIN(TEXT, "intermediate_size", I64, text.intermediate_size),
    PLAIN(TEXT, "moe_intermediate_size", I64, text.moe_intermediate_size),
    PLAIN(TEXT, "num_hidden_layers", I64, text.num_hidden_layers),
    PLAIN(TEXT, "num_attention_heads", I64, text.num_attention_heads),
    PLAIN(TEXT, "num_key_value_heads", I64, text.num_key_value_heads),
    PLAIN(TEXT, "n_shared_experts", I64, text.n_shared_experts),
    PLAIN(TEXT, "n_routed_experts", I64, text.n_routed_experts),
    PLAIN(TEXT, "num_experts_per_tok", I64, text.num_experts_per_tok),
    PLAIN(TEXT, "n_group", I64, text.n_group),
    PLAIN(TEXT, "topk_group", I64, text.topk_group),
    PLAIN(TEXT, "first_k_dense_replace", I64, text.first_k_dense_replace),
    PLAIN(TEXT, "norm_topk_prob", BOOL, text.norm_topk_prob),
    PLAIN(TEXT, "routed_scaling_factor", F64, text.routed_scaling_factor),
    PLAIN(TEXT, "scoring_func", SCORING, text.scoring_func),
    PLAIN(TEXT, "q_lora_rank", I64, text.q_lora_rank),
    PLAIN(TEXT, "kv_lora_rank", I64, text.kv_lora_rank),
    PLAIN(TEXT, "qk_rope_head_dim", I64, text.qk_rope_head_dim),
    PLAIN(TEXT, "qk_nope_head_dim", I64, text.qk_nope_head_dim),
    PLAIN(TEXT, "v_head_dim", I64, text.v_head_dim),
    PLAIN(TEXT, "qk_head_dim (nope + rope)", I64, text.qk_head_dim),
    PLAIN(TEXT, "hidden_act", ACTIVATION, text.hidden_act),
    PLAIN(TEXT, "max_position_embeddings", I64, text.max_position_embeddings), /* YaRN, Llama-4 scale */
    PLAIN(TEXT, "rms_norm_eps", F64, text.rms_norm_eps),
    INFO(TEXT, "pad_token_id", I64, text.pad_token_id),
    INFO(TEXT, "bos_token_id", I64, text.bos_token_id),
    {.in = TEXT, .key = "eos_token_id", .kind = EOS_IDS, VALUE(text.eos_token_ids), ALSO(text.n_eos_token_ids),
     .forward = false}, /* generation only */
    PLAIN(TEXT, "tie_word_embeddings", BOOL, text.tie_word_embeddings),
    PLAIN(TEXT, "rope_interleave", BOOL, text.rope_interleave),
    PLAIN(TEXT, "attention_bias", BOOL, text.attention_bias),
    PLAIN(ROPE, "rope_type", ROPE_TYPE, text.rope.type),
    PLAIN(ROPE, "rope_theta", F64, text.rope.theta),
    PLAIN(ROPE, "factor", F64, text.rope.factor),
    OPTIONAL("original_max_position_embeddings", OPT_I64, text.rope.original_max_position_embeddings,
             text.rope.has_original_max_position_embeddings),
    PLAIN(ROPE, "beta_fast", F64, text.rope.beta_fast),
    PLAIN(ROPE, "beta_slow", F64, text.rope.beta_slow),
    OPTIONAL("mscale", OPT_F64, text.rope.mscale, text.rope.has_mscale),
    OPTIONAL("mscale_all_dim", OPT_F64, text.rope.mscale_all_dim, text.rope.has_mscale_all_dim),
    OPTIONAL("attention_factor", OPT_F64, text.rope.attention_factor, text.rope.has_attention_factor),
    PLAIN(ROPE, "truncate", BOOL, text.rope.truncate),
    PLAIN(ROPE, "partial_rotary_factor", F64, text.rope.partial_rotary_factor),
    OPTIONAL("llama_4_scaling_beta", OPT_F64, text.rope.llama_4_scaling_beta, text.rope.has_llama_4_scaling_beta),
    PLAIN(VISION, "hidden_size", I64, vision.hidden_size),
    PLAIN(VISION, "intermediate_size", I64, vision.intermediate_size),
    PLAIN(VISION, "num_hidden_layers", I64, vision.num_hidden_layers),
    PLAIN(VISION, "num_attention_heads", I64, vision.num_attention_heads),
    PLAIN(VISION, "head_dim", I64, vision.head_dim),
    PLAIN(VISION, "num_channels", I64, vision.num_channels),
    PLAIN(VISION, "image_size", I64, vision.image_size),
    PLAIN(VISION, "patch_size", I64, vision.patch_size),
    PLAIN(VISION, "hidden_act", ACTIVATION, vision.hidden_act),
    PLAIN(VISION, "rope_theta", F64, vision.rope_theta),
    PLAIN(PROJECTOR, "image_token_index", I64, image_token_index),
    PLAIN(PROJECTOR, "spatial_merge_size", I64, spatial_merge_size),
    PLAIN(PROJECTOR, "vision_feature_layer", I64, vision_feature_layer),
    PLAIN(PROJECTOR, "projector_hidden_act", ACTIVATION, projector_hidden_act),
    PLAIN(PROJECTOR, "multimodal_projector_bias", BOOL, multimodal_projector_bias),
    PLAIN(TOP, "tie_word_embeddings (effective)", BOOL, tie_word_embeddings),
    NAMED(QUANT, "quant_method", quant.fp8, "\"fp8\"", "absent"),
    NAMED(QUANT, "activation_scheme", quant.activation_scheme_static, "\"static\"", "\"dynamic\""),
    {.in = QUANT, .key = "modules_to_not_convert", .kind = MODULES, VALUE(quant.not_converted),
     ALSO(quant.n_not_converted), .forward = true},
};

static const char *prefix(section s, bool multimodal) {
    switch (s) {
    case TOP:
    case PROJECTOR: return "";
    case TEXT: return multimodal ? "text_config." : "";
    case ROPE: return multimodal ? "text_config.rope_parameters." : "rope_parameters.";
    case VISION: return "vision_config.";
    case QUANT: return "quantization_config.";
    }
    return "";
}

static const void *at(const m4_config *c, size_t offset) { return (const char *)c + offset; }

static bool flag(const m4_config *c, const field *f) { return *(const bool *)at(c, f->also); }
static int count(const m4_config *c, const field *f) { return *(const int *)at(c, f->also); }

/* A double as text: 15 significant digits, or 17 when 15 would print two different values alike. */
static void number_text(double v, double other, char *buf, size_t size) {
    char mine[64], theirs[64];
    snprintf(mine, sizeof mine, "%.15g", v);
    snprintf(theirs, sizeof theirs, "%.15g", other);
    snprintf(buf, size, strcmp(mine, theirs) == 0 ? "%.17g" : "%.15g", v);
}

static void value_text(const m4_config *c, const m4_config *other, const field *f, char *buf, size_t size) {
    const void *v = at(c, f->offset);
    switch (f->kind) {
    case I64: snprintf(buf, size, "%lld", (long long)*(const int64_t *)v); return;
    case F64: number_text(*(const double *)v, *(const double *)at(other, f->offset), buf, size); return;
    case BOOL: snprintf(buf, size, "%s", *(const bool *)v ? (f->yes ? f->yes : "true") : (f->no ? f->no : "false")); return;
    case ACTIVATION: snprintf(buf, size, "%s", m4_activation_name(*(const m4_activation *)v)); return;
    case ROPE_TYPE: snprintf(buf, size, "%s", *(const m4_rope_type *)v == M4_ROPE_YARN ? "yarn" : "default"); return;
    case SCORING:
        snprintf(buf, size, "%s", *(const m4_router_scoring *)v == M4_ROUTER_SIGMOID ? "sigmoid" : "softmax");
        return;
    case TEXT_BUF: snprintf(buf, size, "\"%s\"", (const char *)v); return;
    case OPT_I64:
        if (!flag(c, f)) snprintf(buf, size, "absent");
        else snprintf(buf, size, "%lld", (long long)*(const int64_t *)v);
        return;
    case OPT_F64:
        if (!flag(c, f)) snprintf(buf, size, "absent");
        else number_text(*(const double *)v, flag(other, f) ? *(const double *)at(other, f->offset) : NAN, buf, size);
        return;
    case EOS_IDS:
    case MODULES: {
        size_t used = (size_t)snprintf(buf, size, "[");
        for (int i = 0; i < count(c, f) && used < size; i++) {
            if (f->kind == EOS_IDS)
                used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)((const int64_t *)v)[i]);
            else
                used += (size_t)snprintf(buf + used, size - used, "%s\"%s\"", i ? ", " : "",
                                         (const char *)v + (size_t)i * M4_CONFIG_MAX_MODULE_NAME);
        }
        if (used < size) snprintf(buf + used, size - used, "]");
        return;
    }
    }
}

static bool differs(const m4_config *a, const m4_config *b, const field *f) {
    const void *va = at(a, f->offset), *vb = at(b, f->offset);
    switch (f->kind) {
    case F64: return *(const double *)va != *(const double *)vb;
    case BOOL: return *(const bool *)va != *(const bool *)vb;
    case TEXT_BUF: return strcmp(va, vb) != 0;
    case OPT_I64:
    case OPT_F64:
        if (flag(a, f) != flag(b, f)) return true;
        if (!flag(a, f)) return false;
        return f->kind == OPT_F64 ? *(const double *)va != *(const double *)vb : memcmp(va, vb, f->size) != 0;
    case EOS_IDS:
    case MODULES: {
        if (count(a, f) != count(b, f)) return true;
        size_t item = f->kind == EOS_IDS ? sizeof(int64_t) : M4_CONFIG_MAX_MODULE_NAME;
        for (int i = 0; i < count(a, f); i++) {
            const char *x = (const char *)va + (size_t)i * item, *y = (const char *)vb + (size_t)i * item;
            if (f->kind == EOS_IDS ? memcmp(x, y, item) != 0 : strcmp(x, y) != 0) return true;
        }
        return false;
    }
    default: return memcmp(va, vb, f->size) != 0; /* the integers and enums */
    }
}

int m4_config_compare(const m4_config *a, const m4_config *b, void (*fn)(const m4_config_difference *d, void *user),
                      void *user) {
    char names[sizeof fields / sizeof *fields][96];
    int forward = 0;
    /* the completeness check's copy of b: each listed field (and source) set to a's value */
    m4_config listed_equal = *b;
    memcpy(listed_equal.source, a->source, sizeof a->source);
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        const field *f = &fields[i];
        memcpy((char *)&listed_equal + f->offset, at(a, f->offset), f->size);
        if (f->also_size) memcpy((char *)&listed_equal + f->also, at(a, f->also), f->also_size);
        /* a text-only model against a multimodal one: model_type says it; no vision field to list */
        bool one_multimodal = a->multimodal != b->multimodal;
        if (!differs(a, b, f) || (one_multimodal && (f->in == VISION || f->in == PROJECTOR))) continue;
        m4_config_difference d = {.field = names[i], .forward = f->forward};
        snprintf(names[i], sizeof names[i], "%s%s", prefix(f->in, a->multimodal), f->key);
        value_text(a, b, f, d.a, sizeof d.a);
        value_text(b, a, f, d.b, sizeof d.b);
        forward += f->forward;
        fn(&d, user);
    }
    if (memcmp(a, &listed_equal, sizeof *a) != 0) {
        m4_config_difference d = {.field = "(a field config_compare.c does not list)", .a = "?", .b = "?",
                                  .forward = true};
        forward++;
        fn(&d, user);
    }
    return forward;
}
