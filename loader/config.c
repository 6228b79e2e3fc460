/* config.c — reads a Hugging Face config.json into m4_config (MODEL.md §1).
 *
 * Absent fields take the defaults of the HF config class they belong to (Mistral3Config,
 * Mistral4Config, PixtralVisionConfig, FineGrainedFP8Config), including the places where HF's
 * default is not the published model's value. Every error names the file and the field, with its
 * path inside the JSON ("text_config.rope_parameters.factor"). */
#include "config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "m4_file.h"
#include "m4_json.h"

/* Largest accepted size or count: products of two such values still fit in int64_t. */
#define DIM_MAX M4_CONFIG_MAX_DIM

/* ------------------------------------------------------------------------------------------------
 * Where a field lives, for messages: the file name and the path of the enclosing object. */
typedef struct {
    const char *src;    /* the file (or the caller's name for the text) */
    char at[96];        /* "" at the top level, else e.g. "text_config." */
    m4_error *err;
} where;

static where within(const where *w, const char *key) {
    where inner = *w;
    size_t n = strlen(w->at), k = strlen(key);
    if (n + k + 2 <= sizeof inner.at) { /* the paths used here are short; never truncated */
        memcpy(inner.at + n, key, k);
        inner.at[n + k] = '.';
        inner.at[n + k + 1] = '\0';
    }
    return inner;
}

static int fail_type(const where *w, const char *key, const char *wanted, const json_t *v) {
    return m4_fail(w->err, "%s: %s%s must be %s, not %s", w->src, w->at, key, wanted, m4_json_kind(v));
}

static bool is_absent(const json_t *v) { return v == NULL || json_is_null(v); }

/* ------------------------------------------------------------------------------------------------
 * Typed field readers. Each returns 0, or -1 with a message naming the field. */

static int int_value(const where *w, const char *key, const json_t *v, int64_t lo, int64_t hi,
                     int64_t *out) {
    if (!json_is_integer(v)) return fail_type(w, key, "an integer", v);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        if (lo == 1 && x <= 0)
            return m4_fail(w->err, "%s: %s%s must be positive, not %lld", w->src, w->at, key,
                           (long long)x);
        return m4_fail(w->err, "%s: %s%s = %lld is out of range [%lld, %lld]", w->src, w->at, key,
                       (long long)x, (long long)lo, (long long)hi);
    }
    *out = (int64_t)x;
    return 0;
}

/* An integer in [lo, hi]; absent → def. JSON null is an error (use get_nullable_int). */
static int get_int(const where *w, const json_t *o, const char *key, int64_t def, int64_t lo,
                   int64_t hi, int64_t *out) {
    const json_t *v = json_object_get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    return int_value(w, key, v, lo, hi, out);
}

/* A size or count: a positive integer. */
static int get_dim(const where *w, const json_t *o, const char *key, int64_t def, int64_t *out) {
    return get_int(w, o, key, def, 1, DIM_MAX, out);
}

/* Absent → def; null → null_value; else an integer in [lo, hi]. */
static int get_nullable_int(const where *w, const json_t *o, const char *key, int64_t def,
                            int64_t null_value, int64_t lo, int64_t hi, int64_t *out) {
    const json_t *v = json_object_get(o, key);
    if (v && json_is_null(v)) {
        *out = null_value;
        return 0;
    }
    return get_int(w, o, key, def, lo, hi, out);
}

/* An integer field that HF also accepts under a second name (attribute_map). */
static int get_aliased_int(const where *w, const json_t *o, const char *key, const char *alias,
                           int64_t def, int64_t lo, int64_t hi, int64_t *out) {
    const json_t *a = json_object_get(o, key), *b = json_object_get(o, alias);
    if (a && b) {
        int64_t va, vb;
        if (int_value(w, key, a, lo, hi, &va) || int_value(w, alias, b, lo, hi, &vb)) return -1;
        if (va != vb)
            return m4_fail(w->err, "%s: %s%s (%lld) and its alias %s%s (%lld) disagree", w->src,
                           w->at, key, (long long)va, w->at, alias, (long long)vb);
        *out = va;
        return 0;
    }
    if (b) return int_value(w, alias, b, lo, hi, out);
    return get_int(w, o, key, def, lo, hi, out);
}

/* A JSON number (integer or real); absent → def. */
static int get_number(const where *w, const json_t *o, const char *key, double def, double *out) {
    const json_t *v = json_object_get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v)) return fail_type(w, key, "a number", v);
    *out = json_number_value(v);
    return 0;
}

static int get_positive_number(const where *w, const json_t *o, const char *key, double def,
                               double *out) {
    if (get_number(w, o, key, def, out)) return -1;
    if (!(*out > 0))
        return m4_fail(w->err, "%s: %s%s must be positive, not %g", w->src, w->at, key, *out);
    return 0;
}

/* An optional number: absent or null → *has = false. */
static int get_optional_number(const where *w, const json_t *o, const char *key, bool *has,
                               double *out) {
    const json_t *v = json_object_get(o, key);
    *has = false;
    if (is_absent(v)) return 0;
    if (!json_is_number(v)) return fail_type(w, key, "a number", v);
    *has = true;
    *out = json_number_value(v);
    return 0;
}

/* true/false; absent → def. `null_is_false` for HF's `bool | None` fields, which are only ever
 * tested for truth. */
static int get_bool(const where *w, const json_t *o, const char *key, bool def, bool null_is_false,
                    bool *out) {
    const json_t *v = json_object_get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (null_is_false && json_is_null(v)) {
        *out = false;
        return 0;
    }
    if (!json_is_boolean(v)) return fail_type(w, key, "true or false", v);
    *out = json_is_true(v);
    return 0;
}

/* A string; absent → def (which may be NULL). */
static int get_string(const where *w, const json_t *o, const char *key, const char *def,
                      const char **out) {
    const json_t *v = json_object_get(o, key);
    *out = def;
    if (!v) return 0;
    if (!json_is_string(v)) return fail_type(w, key, "a string", v);
    *out = json_string_value(v);
    return 0;
}

/* Copies a string into a fixed buffer, or fails when it does not fit. */
static int copy_string(const where *w, const char *key, const char *s, char *dst, size_t cap) {
    size_t n = strlen(s);
    if (n >= cap)
        return m4_fail(w->err, "%s: %s%s \"%s\" is too long (at most %zu characters)", w->src,
                       w->at, key, s, cap - 1);
    memcpy(dst, s, n + 1);
    return 0;
}

static bool same_ignoring_case(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char ca = (*a >= 'A' && *a <= 'Z') ? (char)(*a - 'A' + 'a') : *a;
        char cb = (*b >= 'A' && *b <= 'Z') ? (char)(*b - 'A' + 'a') : *b;
        if (ca != cb) return false;
    }
    return *a == *b;
}

/* HF ACT2FN names this project implements. */
static int parse_activation(const char *name, m4_activation *out) {
    if (!strcmp(name, "silu") || !strcmp(name, "swish")) *out = M4_ACT_SILU;
    else if (!strcmp(name, "gelu")) *out = M4_ACT_GELU;
    else if (!strcmp(name, "gelu_pytorch_tanh") || !strcmp(name, "gelu_new")) *out = M4_ACT_GELU_TANH;
    else if (!strcmp(name, "relu")) *out = M4_ACT_RELU;
    else return -1;
    return 0;
}

static int get_activation(const where *w, const json_t *o, const char *key, const char *def,
                          m4_activation *out) {
    const char *name;
    if (get_string(w, o, key, def, &name)) return -1;
    if (parse_activation(name, out))
        return m4_fail(w->err,
                       "%s: %s%s \"%s\" is not a supported activation (silu, swish, gelu, "
                       "gelu_pytorch_tanh, gelu_new, relu)",
                       w->src, w->at, key, name);
    return 0;
}

const char *m4_activation_name(m4_activation act) {
    switch (act) {
    case M4_ACT_SILU: return "silu";
    case M4_ACT_GELU: return "gelu";
    case M4_ACT_GELU_TANH: return "gelu_pytorch_tanh";
    case M4_ACT_RELU: return "relu";
    }
    return "unknown";
}

/* ------------------------------------------------------------------------------------------------
 * Text RoPE: rope_parameters, or the legacy rope_scaling dict + top-level rope_theta.
 *
 * HF (Mistral4Config + RotaryEmbeddingConfigMixin): a non-empty rope_scaling dict replaces
 * rope_parameters; with neither, Mistral4Config's default YaRN dict is used (and a top-level
 * rope_theta is then ignored: the default dict already has rope_theta 10000). A dict's missing
 * rope_theta comes from the top-level rope_theta, else 10000; `type` is the legacy spelling of
 * `rope_type`. Needs t->max_position_embeddings and the head dims. */
static int parse_text_rope(const where *w, const json_t *o, m4_text_config *t) {
    m4_rope_config *r = &t->rope;
    const int64_t qk_head_dim = t->qk_nope_head_dim + t->qk_rope_head_dim;
    const double default_partial = (double)t->qk_rope_head_dim / (double)qk_head_dim;

    bool has_top_theta;
    double top_theta = 10000.0;
    if (get_optional_number(w, o, "rope_theta", &has_top_theta, &top_theta)) return -1;
    if (!has_top_theta) top_theta = 10000.0;

    const json_t *dict = NULL;
    const char *dict_key = NULL;
    const json_t *scaling = json_object_get(o, "rope_scaling");
    if (!is_absent(scaling)) {
        if (!json_is_object(scaling)) return fail_type(w, "rope_scaling", "an object", scaling);
        if (json_object_size(scaling) > 0) dict = scaling, dict_key = "rope_scaling";
    }
    const json_t *params = json_object_get(o, "rope_parameters");
    if (!dict && !is_absent(params)) {
        if (!json_is_object(params)) return fail_type(w, "rope_parameters", "an object", params);
        dict = params, dict_key = "rope_parameters";
    }

    r->truncate = true;
    r->beta_fast = 32.0;
    r->beta_slow = 1.0;
    r->partial_rotary_factor = default_partial;

    if (!dict) {
        /* Mistral4Config.__post_init__'s default: what the converter writes for the checkpoint. */
        if (has_top_theta && top_theta != 10000.0)
            return m4_fail(w->err,
                           "%s: %srope_theta = %g is given without rope_parameters or "
                           "rope_scaling; HF's Mistral4Config then uses its default YaRN "
                           "parameters (rope_theta 10000) and ignores it, so write "
                           "rope_parameters instead",
                           w->src, w->at, top_theta);
        r->type = M4_ROPE_YARN;
        r->theta = 10000.0;
        r->factor = 128.0;
        r->original_max_position_embeddings = 8192;
        r->has_original_max_position_embeddings = true;
        r->has_mscale = r->has_mscale_all_dim = true;
        r->mscale = r->mscale_all_dim = 1.0;
        r->has_llama_4_scaling_beta = true;
        r->llama_4_scaling_beta = 0.1;
        return 0;
    }

    where rw = within(w, dict_key);
    const char *type_key = json_object_get(dict, "rope_type") ? "rope_type" : "type";
    const char *type_name;
    if (get_string(&rw, dict, type_key, "default", &type_name)) return -1;
    if (!strcmp(type_name, "default")) r->type = M4_ROPE_DEFAULT;
    else if (!strcmp(type_name, "yarn")) r->type = M4_ROPE_YARN;
    else
        return m4_fail(w->err, "%s: %s%s \"%s\" is not supported (only \"default\" and \"yarn\")",
                       w->src, rw.at, type_key, type_name);

    if (get_positive_number(&rw, dict, "rope_theta", top_theta, &r->theta)) return -1;
    if (get_number(&rw, dict, "partial_rotary_factor", default_partial, &r->partial_rotary_factor))
        return -1;
    if (!(r->partial_rotary_factor > 0 && r->partial_rotary_factor <= 1))
        return m4_fail(w->err, "%s: %spartial_rotary_factor = %g must be in (0, 1]", w->src, rw.at,
                       r->partial_rotary_factor);
    if (get_optional_number(&rw, dict, "llama_4_scaling_beta", &r->has_llama_4_scaling_beta,
                            &r->llama_4_scaling_beta))
        return -1;
    const json_t *orig = json_object_get(dict, "original_max_position_embeddings");
    r->has_original_max_position_embeddings = !is_absent(orig);
    if (r->has_original_max_position_embeddings) {
        if (int_value(&rw, "original_max_position_embeddings", orig, 1, DIM_MAX,
                      &r->original_max_position_embeddings))
            return -1;
    } else {
        r->original_max_position_embeddings = t->max_position_embeddings; /* HF's YaRN fallback */
    }

    if (r->type == M4_ROPE_YARN) {
        const json_t *factor = json_object_get(dict, "factor");
        if (is_absent(factor))
            return m4_fail(w->err, "%s: %sfactor is required when %s is \"yarn\"", w->src, rw.at,
                           type_key);
        if (get_positive_number(&rw, dict, "factor", 0, &r->factor)) return -1;
        /* HF: `rope_parameters.get("beta_fast") or 32`, so null and 0 also mean the default. */
        bool has;
        double x;
        if (get_optional_number(&rw, dict, "beta_fast", &has, &x)) return -1;
        if (has && x != 0) r->beta_fast = x;
        if (get_optional_number(&rw, dict, "beta_slow", &has, &x)) return -1;
        if (has && x != 0) r->beta_slow = x;
        if (get_optional_number(&rw, dict, "mscale", &r->has_mscale, &r->mscale) ||
            get_optional_number(&rw, dict, "mscale_all_dim", &r->has_mscale_all_dim,
                                &r->mscale_all_dim) ||
            get_optional_number(&rw, dict, "attention_factor", &r->has_attention_factor,
                                &r->attention_factor) ||
            get_bool(&rw, dict, "truncate", true, false, &r->truncate))
            return -1;
        /* HF's YaRN rotates int(head_dim · partial_rotary_factor) dims; MLA rotates qk_rope. */
        int64_t rotated = (int64_t)((double)qk_head_dim * r->partial_rotary_factor);
        if (rotated != t->qk_rope_head_dim)
            return m4_fail(w->err,
                           "%s: %spartial_rotary_factor = %g rotates %lld of the %lld query/key "
                           "dims, but qk_rope_head_dim is %lld",
                           w->src, rw.at, r->partial_rotary_factor, (long long)rotated,
                           (long long)qk_head_dim, (long long)t->qk_rope_head_dim);
    } else {
        r->factor = 1.0;
    }

    if (r->has_llama_4_scaling_beta && !r->has_original_max_position_embeddings)
        return m4_fail(w->err,
                       "%s: %soriginal_max_position_embeddings is required with "
                       "llama_4_scaling_beta (it is the base of the Llama-4 query scale)",
                       w->src, rw.at);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Mistral4Config: `o` is text_config, or the top level of a bare Mistral4 config. */
static int parse_text(const where *w, const json_t *o, m4_text_config *t) {
    if (get_dim(w, o, "vocab_size", 131072, &t->vocab_size) ||
        get_dim(w, o, "hidden_size", 4096, &t->hidden_size) ||
        get_dim(w, o, "intermediate_size", 12288, &t->intermediate_size) ||
        get_dim(w, o, "moe_intermediate_size", 2048, &t->moe_intermediate_size) ||
        get_int(w, o, "num_hidden_layers", 36, 1, M4_CONFIG_MAX_LAYERS, &t->num_hidden_layers) ||
        get_dim(w, o, "num_attention_heads", 32, &t->num_attention_heads))
        return -1;
    /* HF: absent → 32 (the dataclass default); null → num_attention_heads. */
    if (get_nullable_int(w, o, "num_key_value_heads", 32, t->num_attention_heads, 1, DIM_MAX,
                         &t->num_key_value_heads))
        return -1;
    if (get_int(w, o, "n_shared_experts", 1, 0, DIM_MAX, &t->n_shared_experts) ||
        get_aliased_int(w, o, "n_routed_experts", "num_local_experts", 128, 1, DIM_MAX,
                        &t->n_routed_experts) ||
        get_dim(w, o, "num_experts_per_tok", 4, &t->num_experts_per_tok) ||
        get_dim(w, o, "n_group", 1, &t->n_group) ||
        get_dim(w, o, "topk_group", 1, &t->topk_group) ||
        get_int(w, o, "first_k_dense_replace", 0, 0, DIM_MAX, &t->first_k_dense_replace) ||
        get_bool(w, o, "norm_topk_prob", true, true, &t->norm_topk_prob) ||
        get_number(w, o, "routed_scaling_factor", 1.0, &t->routed_scaling_factor))
        return -1;

    const char *scoring;
    if (get_string(w, o, "scoring_func", "softmax", &scoring)) return -1;
    if (!strcmp(scoring, "softmax")) t->scoring_func = M4_ROUTER_SOFTMAX;
    else if (!strcmp(scoring, "sigmoid")) t->scoring_func = M4_ROUTER_SIGMOID;
    else
        return m4_fail(w->err, "%s: %sscoring_func \"%s\" is not supported (softmax or sigmoid)",
                       w->src, w->at, scoring);

    /* q_lora_rank null → 0: a plain q_proj instead of q_a_proj/q_a_layernorm/q_b_proj. */
    if (get_nullable_int(w, o, "q_lora_rank", 1024, 0, 1, DIM_MAX, &t->q_lora_rank) ||
        get_dim(w, o, "kv_lora_rank", 256, &t->kv_lora_rank) ||
        get_dim(w, o, "qk_rope_head_dim", 64, &t->qk_rope_head_dim) ||
        get_dim(w, o, "qk_nope_head_dim", 64, &t->qk_nope_head_dim) ||
        get_dim(w, o, "v_head_dim", 128, &t->v_head_dim))
        return -1;
    t->qk_head_dim = t->qk_nope_head_dim + t->qk_rope_head_dim;

    if (get_activation(w, o, "hidden_act", "silu", &t->hidden_act) ||
        get_dim(w, o, "max_position_embeddings", 1048576, &t->max_position_embeddings) ||
        get_positive_number(w, o, "rms_norm_eps", 1e-6, &t->rms_norm_eps) ||
        get_nullable_int(w, o, "pad_token_id", 11, -1, 0, DIM_MAX, &t->pad_token_id) ||
        get_nullable_int(w, o, "bos_token_id", 1, -1, 0, DIM_MAX, &t->bos_token_id))
        return -1;

    const json_t *eos = json_object_get(o, "eos_token_id");
    int max_eos = (int)(sizeof t->eos_token_ids / sizeof t->eos_token_ids[0]);
    if (!eos) {
        t->n_eos_token_ids = 1;
        t->eos_token_ids[0] = 2;
    } else if (json_is_null(eos)) {
        t->n_eos_token_ids = 0;
    } else if (json_is_array(eos)) {
        if (json_array_size(eos) > (size_t)max_eos)
            return m4_fail(w->err, "%s: %seos_token_id lists %zu ids; at most %d are supported",
                           w->src, w->at, json_array_size(eos), max_eos);
        for (size_t i = 0; i < json_array_size(eos); i++)
            if (int_value(w, "eos_token_id[]", json_array_get(eos, i), 0, DIM_MAX,
                          &t->eos_token_ids[i]))
                return -1;
        t->n_eos_token_ids = (int)json_array_size(eos);
    } else if (json_is_integer(eos)) {
        if (int_value(w, "eos_token_id", eos, 0, DIM_MAX, &t->eos_token_ids[0])) return -1;
        t->n_eos_token_ids = 1;
    } else {
        return fail_type(w, "eos_token_id", "an integer or a list of integers", eos);
    }

    if (get_bool(w, o, "tie_word_embeddings", false, false, &t->tie_word_embeddings) ||
        get_bool(w, o, "rope_interleave", true, true, &t->rope_interleave) ||
        get_bool(w, o, "attention_bias", false, false, &t->attention_bias))
        return -1;
    if (parse_text_rope(w, o, t)) return -1;

    /* Cross-field checks: the shapes HF would build must exist. */
    const char *kv_note = json_object_get(o, "num_key_value_heads")
                              ? ""
                              : " (num_key_value_heads is absent: HF's default is 32, not "
                                "num_attention_heads)";
    if (t->num_attention_heads % t->num_key_value_heads != 0)
        return m4_fail(w->err,
                       "%s: %snum_attention_heads (%lld) is not a multiple of "
                       "num_key_value_heads (%lld)%s",
                       w->src, w->at, (long long)t->num_attention_heads,
                       (long long)t->num_key_value_heads, kv_note);
    if (t->num_key_value_heads != t->num_attention_heads)
        return m4_fail(w->err,
                       "%s: %snum_key_value_heads (%lld) must equal num_attention_heads (%lld): MLA "
                       "expands keys and values to every head (kv_b_proj), so HF's grouped "
                       "repeat would not fit%s",
                       w->src, w->at, (long long)t->num_key_value_heads,
                       (long long)t->num_attention_heads, kv_note);
    if (t->num_experts_per_tok > t->n_routed_experts)
        return m4_fail(w->err,
                       "%s: %snum_experts_per_tok (%lld) is larger than n_routed_experts (%lld)",
                       w->src, w->at, (long long)t->num_experts_per_tok,
                       (long long)t->n_routed_experts);
    if (t->n_routed_experts % t->n_group != 0)
        return m4_fail(w->err, "%s: %sn_routed_experts (%lld) is not a multiple of n_group (%lld)",
                       w->src, w->at, (long long)t->n_routed_experts, (long long)t->n_group);
    if (t->n_routed_experts / t->n_group < 2)
        return m4_fail(w->err,
                       "%s: %sn_routed_experts / n_group = %lld; the router scores each group by "
                       "its top 2 experts, so every group needs at least 2",
                       w->src, w->at, (long long)(t->n_routed_experts / t->n_group));
    if (t->topk_group > t->n_group)
        return m4_fail(w->err, "%s: %stopk_group (%lld) is larger than n_group (%lld)", w->src,
                       w->at, (long long)t->topk_group, (long long)t->n_group);
    if (t->first_k_dense_replace > t->num_hidden_layers)
        return m4_fail(w->err,
                       "%s: %sfirst_k_dense_replace (%lld) is larger than num_hidden_layers (%lld)",
                       w->src, w->at, (long long)t->first_k_dense_replace,
                       (long long)t->num_hidden_layers);
    if (t->qk_rope_head_dim % 2 != 0)
        return m4_fail(w->err, "%s: %sqk_rope_head_dim (%lld) must be even (rotated in pairs)",
                       w->src, w->at, (long long)t->qk_rope_head_dim);
    if (t->pad_token_id >= t->vocab_size)
        return m4_fail(w->err, "%s: %spad_token_id (%lld) is not below vocab_size (%lld)", w->src,
                       w->at, (long long)t->pad_token_id, (long long)t->vocab_size);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * PixtralVisionConfig. `o` == NULL: Mistral3Config's built-in vision config (the Pixtral of
 * Mistral Small 3.1: patch 14, image 1540), not PixtralVisionConfig's own defaults. */
static int parse_vision(const where *w, const json_t *o, m4_vision_config *v) {
    if (!o) {
        v->hidden_size = 1024;
        v->intermediate_size = 4096;
        v->num_hidden_layers = 24;
        v->num_attention_heads = 16;
        v->head_dim = 64;
        v->num_channels = 3;
        v->image_size = 1540;
        v->patch_size = 14;
        v->hidden_act = M4_ACT_GELU;
        v->rope_theta = 10000.0;
        return 0;
    }
    const char *model_type;
    if (get_string(w, o, "model_type", "pixtral", &model_type)) return -1;
    if (strcmp(model_type, "pixtral") != 0)
        return m4_fail(w->err, "%s: %smodel_type \"%s\" is not supported (expected \"pixtral\")",
                       w->src, w->at, model_type);
    if (get_dim(w, o, "hidden_size", 1024, &v->hidden_size) ||
        get_dim(w, o, "intermediate_size", 4096, &v->intermediate_size) ||
        get_int(w, o, "num_hidden_layers", 24, 1, M4_CONFIG_MAX_LAYERS, &v->num_hidden_layers) ||
        get_dim(w, o, "num_attention_heads", 16, &v->num_attention_heads) ||
        get_dim(w, o, "num_channels", 3, &v->num_channels) ||
        get_dim(w, o, "image_size", 1024, &v->image_size) ||
        get_dim(w, o, "patch_size", 16, &v->patch_size) ||
        get_activation(w, o, "hidden_act", "gelu", &v->hidden_act))
        return -1;
    if (v->hidden_size % v->num_attention_heads != 0)
        return m4_fail(w->err,
                       "%s: %shidden_size (%lld) is not a multiple of num_attention_heads (%lld)",
                       w->src, w->at, (long long)v->hidden_size, (long long)v->num_attention_heads);
    /* HF's Pixtral attention always uses hidden_size / num_attention_heads. */
    int64_t head_dim = v->hidden_size / v->num_attention_heads;
    if (get_nullable_int(w, o, "head_dim", head_dim, head_dim, 1, DIM_MAX, &v->head_dim)) return -1;
    if (v->head_dim != head_dim)
        return m4_fail(w->err,
                       "%s: %shead_dim (%lld) differs from hidden_size / num_attention_heads (%lld), "
                       "which HF's Pixtral attention uses",
                       w->src, w->at, (long long)v->head_dim, (long long)head_dim);
    if (v->image_size % v->patch_size != 0)
        return m4_fail(w->err, "%s: %simage_size (%lld) is not a multiple of patch_size (%lld)",
                       w->src, w->at, (long long)v->image_size, (long long)v->patch_size);

    /* rope_parameters.rope_theta, else the legacy top-level rope_theta, else 10000. */
    double theta;
    if (get_positive_number(w, o, "rope_theta", 10000.0, &theta)) return -1;
    const json_t *rp = json_object_get(o, "rope_parameters");
    if (!is_absent(rp)) {
        if (!json_is_object(rp)) return fail_type(w, "rope_parameters", "an object", rp);
        where rw = within(w, "rope_parameters");
        const char *type_key = json_object_get(rp, "rope_type") ? "rope_type" : "type";
        const char *type_name;
        if (get_string(&rw, rp, type_key, "default", &type_name)) return -1;
        /* transformers ≥ 5.2x writes "axial" for Pixtral's 2-D RoPE; older files "default". */
        if (strcmp(type_name, "default") != 0 && strcmp(type_name, "axial") != 0)
            return m4_fail(w->err, "%s: %s%s \"%s\" is not supported (Pixtral's 2-D RoPE is "
                           "\"axial\" or \"default\")", w->src, rw.at, type_key, type_name);
        if (get_positive_number(&rw, rp, "rope_theta", theta, &theta)) return -1;
    }
    v->rope_theta = theta;
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * quantization_config: only per-tensor FP8 (FineGrainedFP8Config with weight_block_size null). */
static int parse_quant(const where *top, const json_t *root, m4_quant_config *q) {
    const json_t *qc = json_object_get(root, "quantization_config");
    if (is_absent(qc)) return 0;
    if (!json_is_object(qc)) return fail_type(top, "quantization_config", "an object", qc);
    where w = within(top, "quantization_config");

    const char *method;
    if (get_string(&w, qc, "quant_method", NULL, &method)) return -1;
    if (!method) return m4_fail(w.err, "%s: %squant_method is missing", w.src, w.at);
    if (strcmp(method, "fp8") != 0)
        return m4_fail(w.err, "%s: %squant_method \"%s\" is unsupported (only \"fp8\")", w.src,
                       w.at, method);

    const json_t *block = json_object_get(qc, "weight_block_size");
    if (!block)
        return m4_fail(w.err,
                       "%s: %sweight_block_size is absent, so HF uses block-wise FP8 with its "
                       "default [128, 128] blocks; block-wise FP8 is not supported (only "
                       "per-tensor scales, weight_block_size null)",
                       w.src, w.at);
    if (!json_is_null(block))
        return m4_fail(w.err,
                       "%s: %sweight_block_size is set: block-wise FP8 is not supported (only "
                       "per-tensor scales, weight_block_size null)",
                       w.src, w.at);

    const char *scheme;
    if (get_string(&w, qc, "activation_scheme", "dynamic", &scheme)) return -1;
    if (same_ignoring_case(scheme, "static")) q->activation_scheme_static = true;
    else if (same_ignoring_case(scheme, "dynamic")) q->activation_scheme_static = false;
    else
        return m4_fail(w.err,
                       "%s: %sactivation_scheme \"%s\" is not supported (static or dynamic)", w.src,
                       w.at, scheme);

    /* HF also reads `ignored_layers` when modules_to_not_convert is absent. */
    const char *list_key = "modules_to_not_convert";
    const json_t *list = json_object_get(qc, list_key);
    if (!list && json_object_get(qc, "ignored_layers")) {
        list_key = "ignored_layers";
        list = json_object_get(qc, list_key);
    }
    if (!is_absent(list)) {
        int cap = (int)(sizeof q->not_converted / sizeof q->not_converted[0]);
        if (!json_is_array(list)) return fail_type(&w, list_key, "a list of strings", list);
        if (json_array_size(list) > (size_t)cap)
            return m4_fail(w.err, "%s: %s%s lists %zu modules; at most %d are supported", w.src,
                           w.at, list_key, json_array_size(list), cap);
        for (size_t i = 0; i < json_array_size(list); i++) {
            const json_t *item = json_array_get(list, i);
            if (!json_is_string(item)) return fail_type(&w, list_key, "a list of strings", list);
            if (copy_string(&w, list_key, json_string_value(item), q->not_converted[i],
                            sizeof q->not_converted[i]))
                return -1;
        }
        q->n_not_converted = (int)json_array_size(list);
    }
    q->fp8 = true;
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Mistral3Config's own fields (needs the text config for the vocabulary size). */
static int parse_mistral3_top(const where *w, const json_t *root, m4_config *cfg) {
    if (get_aliased_int(w, root, "image_token_index", "image_token_id", 10, 0, DIM_MAX,
                        &cfg->image_token_index))
        return -1;
    if (cfg->image_token_index >= cfg->text.vocab_size)
        return m4_fail(w->err, "%s: image_token_index (%lld) is not below text_config.vocab_size "
                       "(%lld)", w->src, (long long)cfg->image_token_index,
                       (long long)cfg->text.vocab_size);
    if (get_activation(w, root, "projector_hidden_act", "gelu", &cfg->projector_hidden_act) ||
        get_bool(w, root, "multimodal_projector_bias", false, false,
                 &cfg->multimodal_projector_bias) ||
        get_dim(w, root, "spatial_merge_size", 2, &cfg->spatial_merge_size))
        return -1;

    /* An int indexing the vision tower's hidden states (embeddings + one per layer). */
    const json_t *layer = json_object_get(root, "vision_feature_layer");
    if (layer && json_is_array(layer))
        return m4_fail(w->err,
                       "%s: vision_feature_layer is a list: concatenating several layers' "
                       "features is unsupported (give one integer)",
                       w->src);
    int64_t n = cfg->vision.num_hidden_layers;
    if (get_int(w, root, "vision_feature_layer", -1, -(n + 1), n, &cfg->vision_feature_layer))
        return -1;

    /* The lm_head tie: the top-level key when written, else the text config's value. */
    return get_bool(w, root, "tie_word_embeddings", cfg->text.tie_word_embeddings, false,
                    &cfg->tie_word_embeddings);
}

/* dtype (or the legacy torch_dtype) of `o` into cfg->dtype; absent leaves it alone. */
static int parse_dtype(const where *w, const json_t *o, m4_config *cfg) {
    const char *key = json_object_get(o, "dtype") ? "dtype" : "torch_dtype";
    const json_t *v = json_object_get(o, key);
    if (is_absent(v)) return 0;
    if (!json_is_string(v)) return fail_type(w, key, "a string", v);
    return copy_string(w, key, json_string_value(v), cfg->dtype, sizeof cfg->dtype);
}

static int config_from_json(const json_t *root, const char *source, m4_config *cfg,
                            m4_error *err) {
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->source, sizeof cfg->source, "%s", source);
    where top = {.src = source, .at = "", .err = err};

    if (!json_is_object(root))
        return m4_fail(err, "%s: the top level must be a JSON object, not %s", source,
                       m4_json_kind(root));
    const char *model_type;
    if (get_string(&top, root, "model_type", NULL, &model_type)) return -1;
    if (!model_type)
        return m4_fail(err, "%s: model_type is missing (expected \"mistral3\" or \"mistral4\")",
                       source);

    const char *default_arch;
    if (!strcmp(model_type, "mistral3")) {
        cfg->multimodal = true;
        default_arch = "Mistral3ForConditionalGeneration";
        const json_t *text = json_object_get(root, "text_config");
        if (is_absent(text))
            return m4_fail(err,
                           "%s: text_config is missing (HF would build a Mistral, not Mistral4, "
                           "text model)",
                           source);
        if (!json_is_object(text)) return fail_type(&top, "text_config", "an object", text);
        where tw = within(&top, "text_config");
        const char *text_type;
        if (get_string(&tw, text, "model_type", NULL, &text_type)) return -1;
        if (!text_type)
            return m4_fail(err,
                           "%s: text_config.model_type is missing (HF then assumes \"mistral\"; "
                           "expected \"mistral4\")",
                           source);
        if (strcmp(text_type, "mistral4") != 0)
            return m4_fail(err,
                           "%s: text_config.model_type \"%s\" is not supported (expected "
                           "\"mistral4\")",
                           source, text_type);
        if (parse_text(&tw, text, &cfg->text)) return -1;

        const json_t *vision = json_object_get(root, "vision_config");
        if (!is_absent(vision) && !json_is_object(vision))
            return fail_type(&top, "vision_config", "an object", vision);
        where vw = within(&top, "vision_config");
        if (parse_vision(&vw, is_absent(vision) ? NULL : vision, &cfg->vision)) return -1;
        if (parse_mistral3_top(&top, root, cfg)) return -1;
        if (parse_dtype(&tw, text, cfg)) return -1; /* the top level's dtype wins, below */
    } else if (!strcmp(model_type, "mistral4")) {
        default_arch = "Mistral4ForCausalLM";
        if (parse_text(&top, root, &cfg->text)) return -1;
        cfg->tie_word_embeddings = cfg->text.tie_word_embeddings;
    } else {
        return m4_fail(err,
                       "%s: model_type \"%s\" is not supported (expected \"mistral3\" or "
                       "\"mistral4\")",
                       source, model_type);
    }

    if (parse_dtype(&top, root, cfg)) return -1;

    const json_t *archs = json_object_get(root, "architectures");
    const char *arch = default_arch;
    if (!is_absent(archs)) {
        if (!json_is_array(archs)) return fail_type(&top, "architectures", "a list of strings", archs);
        if (json_array_size(archs) > 0) {
            const json_t *first = json_array_get(archs, 0);
            if (!json_is_string(first))
                return fail_type(&top, "architectures", "a list of strings", archs);
            arch = json_string_value(first);
        }
    }
    if (copy_string(&top, "architectures", arch, cfg->architecture, sizeof cfg->architecture))
        return -1;

    return parse_quant(&top, root, &cfg->quant);
}

static int json_failure(const char *source, const json_error_t *e, m4_error *err) {
    if (e->line >= 1)
        return m4_fail(err, "%s: invalid JSON at line %d, column %d: %s", source, e->line,
                       e->column, e->text);
    return m4_fail(err, "%s: cannot read the config: %s", source, e->text);
}

int m4_config_parse(const char *json_text, const char *source, m4_config *cfg, m4_error *err) {
    if (!source) source = "<config text>";
    if (!json_text || !cfg) return m4_fail(err, "%s: no config text or no config to fill", source);
    json_error_t jerr;
    json_t *root = json_loads(json_text, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return json_failure(source, &jerr, err);
    int rc = config_from_json(root, source, cfg, err);
    json_decref(root);
    return rc;
}

int m4_config_load(const char *path, m4_config *cfg, m4_error *err) {
    if (!path || !cfg) return m4_fail(err, "m4_config_load: no path or no config to fill");
    char *text;
    size_t size;
    if (m4_file_read_all(path, "the config", M4_CONFIG_MAX_BYTES, "M4_CONFIG_MAX_BYTES", &text, &size, err)) return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, size, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) return json_failure(path, &jerr, err);
    int rc = config_from_json(root, path, cfg, err);
    json_decref(root);
    return rc;
}
