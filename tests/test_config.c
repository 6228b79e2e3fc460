/* test_config.c — config.json parsing (loader/config.c): the published config, HF's defaults,
 * the legacy spellings, and one test per kind of bad input (each checks that the message names
 * the file and the field). */
#include "config.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PUBLISHED "tests/fixtures/mistral-small-4-119b-2603.config.json"

static void parse_ok(const char *json, m4_config *cfg) {
    m4_error err = {{0}};
    if (m4_config_parse(json, "inline.json", cfg, &err) != 0)
        fail_msg("expected success, got: %s", err.msg);
}

static void assert_close(double got, double want) {
    if (fabs(got - want) > 1e-12 * fmax(1.0, fabs(want)))
        fail_msg("got %.17g, want %.17g", got, want);
}

/* ---- the published checkpoint's config ------------------------------------------------------ */

static void test_published_config(void **state) {
    (void)state;
    char *path = m4t_source_path(PUBLISHED);
    m4_config cfg;
    m4_error err = {{0}};
    if (m4_config_load(path, &cfg, &err) != 0) fail_msg("%s", err.msg);
    assert_string_equal(cfg.source, path);

    assert_true(cfg.multimodal);
    assert_string_equal(cfg.architecture, "Mistral3ForConditionalGeneration");
    assert_string_equal(cfg.dtype, "bfloat16");
    assert_int_equal(cfg.image_token_index, 10);
    assert_int_equal(cfg.spatial_merge_size, 2);
    assert_int_equal(cfg.vision_feature_layer, -1);
    assert_int_equal(cfg.projector_hidden_act, M4_ACT_GELU);
    assert_false(cfg.multimodal_projector_bias);
    assert_false(cfg.tie_word_embeddings);

    assert_true(cfg.quant.fp8);
    assert_true(cfg.quant.activation_scheme_static);
    assert_int_equal(cfg.quant.n_not_converted, 3);
    assert_string_equal(cfg.quant.not_converted[0], "lm_head");
    assert_string_equal(cfg.quant.not_converted[1], "model.vision_tower");
    assert_string_equal(cfg.quant.not_converted[2], "model.multi_modal_projector");

    const m4_text_config *t = &cfg.text;
    assert_int_equal(t->vocab_size, 131072);
    assert_int_equal(t->hidden_size, 4096);
    assert_int_equal(t->intermediate_size, 12288);
    assert_int_equal(t->moe_intermediate_size, 2048);
    assert_int_equal(t->num_hidden_layers, 36);
    assert_int_equal(t->num_attention_heads, 32);
    assert_int_equal(t->num_key_value_heads, 32);
    assert_int_equal(t->n_shared_experts, 1);
    assert_int_equal(t->n_routed_experts, 128);
    assert_int_equal(t->num_experts_per_tok, 4);
    assert_int_equal(t->n_group, 1);
    assert_int_equal(t->topk_group, 1);
    assert_int_equal(t->first_k_dense_replace, 0);
    assert_true(t->norm_topk_prob);
    assert_close(t->routed_scaling_factor, 1.0);
    assert_int_equal(t->scoring_func, M4_ROUTER_SOFTMAX);
    assert_int_equal(t->q_lora_rank, 1024);
    assert_int_equal(t->kv_lora_rank, 256);
    assert_int_equal(t->qk_rope_head_dim, 64);
    assert_int_equal(t->qk_nope_head_dim, 64);
    assert_int_equal(t->v_head_dim, 128);
    assert_int_equal(t->qk_head_dim, 128);
    assert_int_equal(t->hidden_act, M4_ACT_SILU);
    assert_int_equal(t->max_position_embeddings, 1048576);
    assert_close(t->rms_norm_eps, 1e-6);
    assert_int_equal(t->pad_token_id, 11);
    assert_int_equal(t->bos_token_id, 1);
    assert_int_equal(t->n_eos_token_ids, 1);
    assert_int_equal(t->eos_token_ids[0], 2);
    assert_false(t->tie_word_embeddings);
    assert_true(t->rope_interleave);
    assert_false(t->attention_bias);

    const m4_rope_config *r = &t->rope;
    assert_int_equal(r->type, M4_ROPE_YARN);
    assert_close(r->theta, 10000.0);
    assert_close(r->factor, 128.0);
    assert_true(r->has_original_max_position_embeddings);
    assert_int_equal(r->original_max_position_embeddings, 8192);
    assert_close(r->beta_fast, 32.0);
    assert_close(r->beta_slow, 1.0);
    assert_true(r->has_mscale);
    assert_close(r->mscale, 1.0);
    assert_true(r->has_mscale_all_dim);
    assert_close(r->mscale_all_dim, 1.0);
    assert_false(r->has_attention_factor);
    assert_true(r->truncate);
    assert_close(r->partial_rotary_factor, 0.5);
    assert_true(r->has_llama_4_scaling_beta);
    assert_close(r->llama_4_scaling_beta, 0.1);

    const m4_vision_config *v = &cfg.vision;
    assert_int_equal(v->hidden_size, 1024);
    assert_int_equal(v->intermediate_size, 4096);
    assert_int_equal(v->num_hidden_layers, 24);
    assert_int_equal(v->num_attention_heads, 16);
    assert_int_equal(v->head_dim, 64);
    assert_int_equal(v->num_channels, 3);
    assert_int_equal(v->image_size, 1540);
    assert_int_equal(v->patch_size, 14);
    assert_int_equal(v->hidden_act, M4_ACT_SILU); /* the trap: PixtralVisionConfig says gelu */
    assert_close(v->rope_theta, 10000.0);
    free(path);
}

/* The same text parsed from memory agrees with the file (and names the caller's source). */
static void test_parse_matches_load(void **state) {
    (void)state;
    char *path = m4t_source_path(PUBLISHED);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char text[16384];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    m4_config a, b;
    m4_error err = {{0}};
    assert_int_equal(m4_config_load(path, &a, &err), 0);
    assert_int_equal(m4_config_parse(text, "memory", &b, &err), 0);
    assert_string_equal(b.source, "memory");
    memcpy(b.source, a.source, sizeof a.source);
    assert_memory_equal(&a, &b, sizeof a);
    free(path);
}

/* ---- defaults ------------------------------------------------------------------------------- */

static void test_bare_mistral4_defaults(void **state) {
    (void)state;
    m4_config cfg;
    parse_ok("{\"model_type\": \"mistral4\"}", &cfg);
    assert_false(cfg.multimodal);
    assert_string_equal(cfg.architecture, "Mistral4ForCausalLM");
    assert_string_equal(cfg.dtype, "");
    assert_false(cfg.quant.fp8);
    assert_false(cfg.tie_word_embeddings);

    const m4_text_config *t = &cfg.text;
    assert_int_equal(t->vocab_size, 131072);
    assert_int_equal(t->hidden_size, 4096);
    assert_int_equal(t->intermediate_size, 12288);
    assert_int_equal(t->moe_intermediate_size, 2048);
    assert_int_equal(t->num_hidden_layers, 36);
    assert_int_equal(t->num_attention_heads, 32);
    assert_int_equal(t->num_key_value_heads, 32);
    assert_int_equal(t->n_shared_experts, 1);
    assert_int_equal(t->n_routed_experts, 128);
    assert_close(t->routed_scaling_factor, 1.0);
    assert_int_equal(t->kv_lora_rank, 256);
    assert_int_equal(t->q_lora_rank, 1024);
    assert_int_equal(t->qk_rope_head_dim, 64);
    assert_int_equal(t->qk_nope_head_dim, 64);
    assert_int_equal(t->v_head_dim, 128);
    assert_int_equal(t->qk_head_dim, 128);
    assert_int_equal(t->n_group, 1);
    assert_int_equal(t->topk_group, 1);
    assert_int_equal(t->num_experts_per_tok, 4);
    assert_int_equal(t->first_k_dense_replace, 0);
    assert_true(t->norm_topk_prob);
    assert_int_equal(t->scoring_func, M4_ROUTER_SOFTMAX);
    assert_int_equal(t->hidden_act, M4_ACT_SILU);
    assert_int_equal(t->max_position_embeddings, 1048576);
    assert_close(t->rms_norm_eps, 1e-6);
    assert_int_equal(t->pad_token_id, 11);
    assert_int_equal(t->bos_token_id, 1);
    assert_int_equal(t->n_eos_token_ids, 1);
    assert_int_equal(t->eos_token_ids[0], 2);
    assert_false(t->tie_word_embeddings);
    assert_true(t->rope_interleave);
    assert_false(t->attention_bias);

    const m4_rope_config *r = &t->rope;
    assert_int_equal(r->type, M4_ROPE_YARN);
    assert_close(r->theta, 10000.0);
    assert_close(r->factor, 128.0);
    assert_true(r->has_original_max_position_embeddings);
    assert_int_equal(r->original_max_position_embeddings, 8192);
    assert_close(r->beta_fast, 32.0);
    assert_close(r->beta_slow, 1.0);
    assert_true(r->has_mscale && r->has_mscale_all_dim);
    assert_close(r->mscale, 1.0);
    assert_close(r->mscale_all_dim, 1.0);
    assert_false(r->has_attention_factor);
    assert_true(r->truncate);
    assert_close(r->partial_rotary_factor, 0.5);
    assert_true(r->has_llama_4_scaling_beta);
    assert_close(r->llama_4_scaling_beta, 0.1);
}

/* Defaults that depend on other fields: kv heads null → heads, partial rotary factor from the
 * head dims, the YaRN factor HF uses from max_position_embeddings. */
static void test_derived_defaults(void **state) {
    (void)state;
    m4_config cfg;
    parse_ok("{\"model_type\": \"mistral4\", \"num_attention_heads\": 4, \"num_key_value_heads\": "
             "null, \"qk_rope_head_dim\": 32, \"qk_nope_head_dim\": 96, \"max_position_embeddings\": "
             "65536, \"n_routed_experts\": 8, \"num_experts_per_tok\": 2}",
             &cfg);
    assert_int_equal(cfg.text.num_key_value_heads, 4);
    assert_int_equal(cfg.text.qk_head_dim, 128);
    assert_close(cfg.text.rope.partial_rotary_factor, 0.25);
    assert_close(cfg.text.rope.factor, 128.0);
}

static void test_mistral3_vision_defaults(void **state) {
    (void)state;
    m4_config cfg;
    /* vision_config given without hidden_act → PixtralVisionConfig's "gelu", image 1024/16. */
    parse_ok("{\"model_type\": \"mistral3\", \"text_config\": {\"model_type\": \"mistral4\"}, "
             "\"vision_config\": {\"model_type\": \"pixtral\"}}",
             &cfg);
    assert_true(cfg.multimodal);
    assert_string_equal(cfg.architecture, "Mistral3ForConditionalGeneration");
    assert_int_equal(cfg.vision.hidden_act, M4_ACT_GELU);
    assert_int_equal(cfg.vision.hidden_size, 1024);
    assert_int_equal(cfg.vision.intermediate_size, 4096);
    assert_int_equal(cfg.vision.num_hidden_layers, 24);
    assert_int_equal(cfg.vision.num_attention_heads, 16);
    assert_int_equal(cfg.vision.head_dim, 64);
    assert_int_equal(cfg.vision.num_channels, 3);
    assert_int_equal(cfg.vision.image_size, 1024);
    assert_int_equal(cfg.vision.patch_size, 16);
    assert_close(cfg.vision.rope_theta, 10000.0);
    assert_int_equal(cfg.image_token_index, 10);
    assert_int_equal(cfg.projector_hidden_act, M4_ACT_GELU);
    assert_int_equal(cfg.vision_feature_layer, -1);
    assert_false(cfg.multimodal_projector_bias);
    assert_int_equal(cfg.spatial_merge_size, 2);
    assert_false(cfg.tie_word_embeddings);

    /* vision_config absent → Mistral3Config's built-in Pixtral (patch 14, image 1540, gelu). */
    parse_ok("{\"model_type\": \"mistral3\", \"text_config\": {\"model_type\": \"mistral4\"}}",
             &cfg);
    assert_int_equal(cfg.vision.image_size, 1540);
    assert_int_equal(cfg.vision.patch_size, 14);
    assert_int_equal(cfg.vision.head_dim, 64);
    assert_int_equal(cfg.vision.hidden_act, M4_ACT_GELU);
}

static void test_vision_rope_theta_spellings(void **state) {
    (void)state;
    m4_config cfg;
    parse_ok("{\"model_type\": \"mistral3\", \"text_config\": {\"model_type\": \"mistral4\"}, "
             "\"vision_config\": {\"rope_theta\": 5000.0}}",
             &cfg);
    assert_close(cfg.vision.rope_theta, 5000.0);
    parse_ok("{\"model_type\": \"mistral3\", \"text_config\": {\"model_type\": \"mistral4\"}, "
             "\"vision_config\": {\"rope_theta\": 5000.0, \"rope_parameters\": {\"rope_type\": "
             "\"default\", \"rope_theta\": 20000}}}",
             &cfg);
    assert_close(cfg.vision.rope_theta, 20000.0);
}

/* ---- legacy and alternative spellings ------------------------------------------------------- */

static void test_legacy_rope_scaling(void **state) {
    (void)state;
    m4_config cfg;
    parse_ok("{\"model_type\": \"mistral4\", \"max_position_embeddings\": 16384, \"rope_theta\": "
             "50000, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4, "
             "\"original_max_position_embeddings\": 4096, \"beta_fast\": 16, \"mscale\": 0.707, "
             "\"mscale_all_dim\": 0.707}}",
             &cfg);
    const m4_rope_config *r = &cfg.text.rope;
    assert_int_equal(r->type, M4_ROPE_YARN);
    assert_close(r->theta, 50000.0);
    assert_close(r->factor, 4.0);
    assert_true(r->has_original_max_position_embeddings);
    assert_int_equal(r->original_max_position_embeddings, 4096);
    assert_close(r->beta_fast, 16.0);
    assert_close(r->beta_slow, 1.0);
    assert_true(r->has_mscale && r->has_mscale_all_dim);
    assert_close(r->mscale, 0.707);
    assert_close(r->mscale_all_dim, 0.707);
    assert_false(r->has_llama_4_scaling_beta);
    assert_false(r->has_attention_factor);
    assert_true(r->truncate);
    assert_close(r->partial_rotary_factor, 0.5);
}

/* rope_scaling, when a non-empty dict, replaces rope_parameters (HF's order). */
static void test_rope_scaling_wins_over_rope_parameters(void **state) {
    (void)state;
    m4_config cfg;
    parse_ok("{\"model_type\": \"mistral4\", \"rope_parameters\": {\"rope_type\": \"default\"}, "
             "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2}}",
             &cfg);
    assert_int_equal(cfg.text.rope.type, M4_ROPE_YARN);
    assert_close(cfg.text.rope.factor, 2.0);
    parse_ok("{\"model_type\": \"mistral4\", \"rope_parameters\": {\"rope_type\": \"default\", "
             "\"rope_theta\": 1e6}, \"rope_scaling\": {}}",
             &cfg);
    assert_int_equal(cfg.text.rope.type, M4_ROPE_DEFAULT);
    assert_close(cfg.text.rope.theta, 1e6);
}

/* A top-level rope_theta with rope_scaling null: HF keeps Mistral4Config's YaRN defaults. */
static void test_legacy_rope_theta_without_scaling(void **state) {
    (void)state;
    m4_config cfg;
    parse_ok("{\"model_type\": \"mistral4\", \"rope_theta\": 10000.0, \"rope_scaling\": null}",
             &cfg);
    assert_int_equal(cfg.text.rope.type, M4_ROPE_YARN);
    assert_close(cfg.text.rope.theta, 10000.0);
    assert_close(cfg.text.rope.factor, 128.0);
}

static void test_rope_type_spelled_type(void **state) {
    (void)state;
    m4_config cfg;
    parse_ok("{\"model_type\": \"mistral4\", \"rope_parameters\": {\"type\": \"yarn\", \"factor\": "
             "8.0, \"rope_theta\": 1000000.0}}",
             &cfg);
    const m4_rope_config *r = &cfg.text.rope;
    assert_int_equal(r->type, M4_ROPE_YARN);
    assert_close(r->theta, 1e6);
    assert_close(r->factor, 8.0);
    /* absent original_max_position_embeddings: HF's YaRN falls back to max_position_embeddings */
    assert_false(r->has_original_max_position_embeddings);
    assert_int_equal(r->original_max_position_embeddings, 1048576);
    assert_false(r->has_mscale);
    assert_false(r->has_mscale_all_dim);
    assert_false(r->has_llama_4_scaling_beta);
    assert_close(r->beta_fast, 32.0);
    assert_close(r->beta_slow, 1.0);

    parse_ok("{\"model_type\": \"mistral4\", \"rope_parameters\": {\"type\": \"default\"}}", &cfg);
    assert_int_equal(cfg.text.rope.type, M4_ROPE_DEFAULT);
    assert_close(cfg.text.rope.theta, 10000.0);
}

static void test_yarn_optional_fields(void **state) {
    (void)state;
    m4_config cfg;
    parse_ok("{\"model_type\": \"mistral4\", \"rope_parameters\": {\"rope_type\": \"yarn\", "
             "\"factor\": 40, \"original_max_position_embeddings\": 4096, \"beta_fast\": 0, "
             "\"beta_slow\": null, \"attention_factor\": 1.25, \"truncate\": false, "
             "\"partial_rotary_factor\": 0.5, \"llama_4_scaling_beta\": 0.2}}",
             &cfg);
    const m4_rope_config *r = &cfg.text.rope;
    assert_close(r->factor, 40.0);
    assert_close(r->beta_fast, 32.0);                     /* HF: `or 32` */
    assert_close(r->beta_slow, 1.0);
    assert_true(r->has_attention_factor);
    assert_close(r->attention_factor, 1.25);
    assert_false(r->truncate);
    assert_true(r->has_llama_4_scaling_beta);
    assert_close(r->llama_4_scaling_beta, 0.2);
}

static void test_q_lora_rank_null(void **state) {
    (void)state;
    m4_config cfg;
    parse_ok("{\"model_type\": \"mistral4\", \"q_lora_rank\": null}", &cfg);
    assert_int_equal(cfg.text.q_lora_rank, 0);
}

static void test_eos_forms(void **state) {
    (void)state;
    m4_config cfg;
    parse_ok("{\"model_type\": \"mistral4\", \"eos_token_id\": [2, 32000, 7]}", &cfg);
    assert_int_equal(cfg.text.n_eos_token_ids, 3);
    assert_int_equal(cfg.text.eos_token_ids[0], 2);
    assert_int_equal(cfg.text.eos_token_ids[1], 32000);
    assert_int_equal(cfg.text.eos_token_ids[2], 7);
    parse_ok("{\"model_type\": \"mistral4\", \"eos_token_id\": 5, \"pad_token_id\": null, "
             "\"bos_token_id\": null}",
             &cfg);
    assert_int_equal(cfg.text.n_eos_token_ids, 1);
    assert_int_equal(cfg.text.eos_token_ids[0], 5);
    assert_int_equal(cfg.text.pad_token_id, -1);
    assert_int_equal(cfg.text.bos_token_id, -1);
    parse_ok("{\"model_type\": \"mistral4\", \"eos_token_id\": null}", &cfg);
    assert_int_equal(cfg.text.n_eos_token_ids, 0);
}

static void test_aliases(void **state) {
    (void)state;
    m4_config cfg;
    parse_ok("{\"model_type\": \"mistral3\", \"image_token_id\": 17, \"text_config\": "
             "{\"model_type\": \"mistral4\", \"num_local_experts\": 16}}",
             &cfg);
    assert_int_equal(cfg.image_token_index, 17);
    assert_int_equal(cfg.text.n_routed_experts, 16);
    parse_ok("{\"model_type\": \"mistral4\", \"num_local_experts\": 16, \"n_routed_experts\": 16}",
             &cfg);
    assert_int_equal(cfg.text.n_routed_experts, 16);
}

static void test_tie_word_embeddings_effective(void **state) {
    (void)state;
    m4_config cfg;
    /* Mistral3 without the top-level key: the text config's value. */
    parse_ok("{\"model_type\": \"mistral3\", \"text_config\": {\"model_type\": \"mistral4\", "
             "\"tie_word_embeddings\": true}}",
             &cfg);
    assert_true(cfg.text.tie_word_embeddings);
    assert_true(cfg.tie_word_embeddings);
    /* The top-level key wins when written. */
    parse_ok("{\"model_type\": \"mistral3\", \"tie_word_embeddings\": false, \"text_config\": "
             "{\"model_type\": \"mistral4\", \"tie_word_embeddings\": true}}",
             &cfg);
    assert_false(cfg.tie_word_embeddings);
    parse_ok("{\"model_type\": \"mistral3\", \"tie_word_embeddings\": true, \"text_config\": "
             "{\"model_type\": \"mistral4\"}}",
             &cfg);
    assert_true(cfg.tie_word_embeddings);
    parse_ok("{\"model_type\": \"mistral4\", \"tie_word_embeddings\": true}", &cfg);
    assert_true(cfg.tie_word_embeddings);
}

static void test_activation_names(void **state) {
    (void)state;
    static const struct {
        const char *json_name;
        m4_activation act;
    } cases[] = {{"silu", M4_ACT_SILU}, {"swish", M4_ACT_SILU}, {"gelu", M4_ACT_GELU},
                 {"gelu_pytorch_tanh", M4_ACT_GELU_TANH}, {"gelu_new", M4_ACT_GELU_TANH},
                 {"relu", M4_ACT_RELU}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[256];
        snprintf(json, sizeof json,
                 "{\"model_type\": \"mistral3\", \"projector_hidden_act\": \"%s\", "
                 "\"text_config\": {\"model_type\": \"mistral4\", \"hidden_act\": \"%s\"}, "
                 "\"vision_config\": {\"hidden_act\": \"%s\"}}",
                 cases[i].json_name, cases[i].json_name, cases[i].json_name);
        m4_config cfg;
        parse_ok(json, &cfg);
        assert_int_equal(cfg.text.hidden_act, cases[i].act);
        assert_int_equal(cfg.vision.hidden_act, cases[i].act);
        assert_int_equal(cfg.projector_hidden_act, cases[i].act);
    }
    assert_string_equal(m4_activation_name(M4_ACT_SILU), "silu");
    assert_string_equal(m4_activation_name(M4_ACT_GELU), "gelu");
    assert_string_equal(m4_activation_name(M4_ACT_GELU_TANH), "gelu_pytorch_tanh");
    assert_string_equal(m4_activation_name(M4_ACT_RELU), "relu");
}

static void test_misc_fields(void **state) {
    (void)state;
    m4_config cfg;
    parse_ok("{\"model_type\": \"mistral4\", \"architectures\": [\"Mistral4ForCausalLM\"], "
             "\"torch_dtype\": \"float32\", \"scoring_func\": \"sigmoid\", \"mlp_bias\": false, "
             "\"norm_topk_prob\": null, \"unknown_extra\": {\"nested\": [1, 2]}}",
             &cfg);
    assert_string_equal(cfg.dtype, "float32");
    assert_int_equal(cfg.text.scoring_func, M4_ROUTER_SIGMOID);
    assert_false(cfg.text.norm_topk_prob);
    /* Per-tensor FP8 with the HF defaults (dynamic activations, nothing kept unconverted). */
    parse_ok("{\"model_type\": \"mistral4\", \"quantization_config\": {\"quant_method\": \"fp8\", "
             "\"weight_block_size\": null}}",
             &cfg);
    assert_true(cfg.quant.fp8);
    assert_false(cfg.quant.activation_scheme_static);
    assert_int_equal(cfg.quant.n_not_converted, 0);
    /* dtype from text_config when the top level has none. */
    parse_ok("{\"model_type\": \"mistral3\", \"text_config\": {\"model_type\": \"mistral4\", "
             "\"dtype\": \"float16\"}}",
             &cfg);
    assert_string_equal(cfg.dtype, "float16");
}

/* ---- bad input: each case is its own test ----------------------------------------------------- */

typedef struct {
    const char *name;
    const char *json;
    const char *want[3]; /* substrings the message must hold besides the file name */
} bad_case;

#define M3(text_extra, vision_extra, top_extra)                                                   \
    "{\"model_type\": \"mistral3\", " top_extra "\"text_config\": {\"model_type\": \"mistral4\"" \
    text_extra "}, \"vision_config\": {\"model_type\": \"pixtral\"" vision_extra "}}"
#define M4(extra) "{\"model_type\": \"mistral4\"" extra "}"

static const bad_case bad_cases[] = {
    {"bad_json_syntax", "{\"model_type\": \"mistral4\",\n  \"hidden_size\": 4096,,\n}",
     {"invalid JSON", "line 2", "column"}},
    {"bad_json_duplicate_key", "{\"model_type\": \"mistral4\", \"hidden_size\": 1,\n"
                               "\"hidden_size\": 2}",
     {"invalid JSON", "line 2", "duplicate"}},
    {"bad_json_integer_overflow", M4(", \"vocab_size\": 99999999999999999999999"),
     {"invalid JSON", "line 1", "too big integer"}},
    {"bad_top_not_object", "[1, 2]", {"top level", "object"}},
    {"bad_model_type_missing", "{\"hidden_size\": 4096}", {"model_type", "missing"}},
    {"bad_model_type_other", "{\"model_type\": \"llama\"}", {"model_type", "\"llama\"", "mistral3"}},
    {"bad_model_type_not_string", "{\"model_type\": 4}", {"model_type must be a string"}},
    {"bad_text_config_missing", "{\"model_type\": \"mistral3\"}", {"text_config", "missing"}},
    {"bad_text_config_not_object", "{\"model_type\": \"mistral3\", \"text_config\": [1]}",
     {"text_config must be an object"}},
    {"bad_text_model_type_other",
     "{\"model_type\": \"mistral3\", \"text_config\": {\"model_type\": \"mistral\"}}",
     {"text_config.model_type", "\"mistral\"", "mistral4"}},
    {"bad_text_model_type_missing", "{\"model_type\": \"mistral3\", \"text_config\": {}}",
     {"text_config.model_type", "missing"}},
    {"bad_vision_model_type_other",
     "{\"model_type\": \"mistral3\", \"text_config\": {\"model_type\": \"mistral4\"}, "
     "\"vision_config\": {\"model_type\": \"siglip_vision_model\"}}",
     {"vision_config.model_type", "\"siglip_vision_model\""}},
    {"bad_vision_config_not_object",
     "{\"model_type\": \"mistral3\", \"text_config\": {\"model_type\": \"mistral4\"}, "
     "\"vision_config\": 3}",
     {"vision_config must be an object"}},
    {"bad_int_type_string", M3(", \"hidden_size\": \"4096\"", "", ""),
     {"text_config.hidden_size must be an integer", "a string"}},
    {"bad_int_type_real", M4(", \"hidden_size\": 4096.5"), {"hidden_size must be an integer"}},
    {"bad_int_type_bool", M4(", \"num_hidden_layers\": true"),
     {"num_hidden_layers must be an integer"}},
    {"bad_dim_zero", M4(", \"hidden_size\": 0"), {"hidden_size must be positive"}},
    {"bad_dim_negative", M3("", ", \"patch_size\": -14", ""),
     {"vision_config.patch_size must be positive"}},
    {"bad_dim_overflow", M4(", \"moe_intermediate_size\": 9223372036854775807"),
     {"moe_intermediate_size", "out of range"}},
    {"bad_kv_lora_null", M4(", \"kv_lora_rank\": null"), {"kv_lora_rank must be an integer"}},
    {"bad_q_lora_rank_zero", M4(", \"q_lora_rank\": 0"), {"q_lora_rank must be positive"}},
    {"bad_number_type", M4(", \"rms_norm_eps\": \"1e-6\""), {"rms_norm_eps must be a number"}},
    {"bad_rms_norm_eps_zero", M4(", \"rms_norm_eps\": 0"), {"rms_norm_eps must be positive"}},
    {"bad_bool_type", M4(", \"norm_topk_prob\": \"yes\""), {"norm_topk_prob must be true or false"}},
    {"bad_heads_not_multiple_of_kv_heads",
     M3(", \"num_attention_heads\": 32, \"num_key_value_heads\": 5", "", ""),
     {"text_config.num_attention_heads", "num_key_value_heads", "multiple"}},
    {"bad_kv_heads_grouped", M4(", \"num_attention_heads\": 64, \"num_key_value_heads\": 16"),
     {"num_key_value_heads (16) must equal num_attention_heads (64)", "MLA"}},
    {"bad_kv_heads_absent_default", M4(", \"num_attention_heads\": 8"),
     {"num_attention_heads (8)", "num_key_value_heads (32)", "absent: HF's default is 32"}},
    {"bad_experts_per_tok_too_many", M4(", \"n_routed_experts\": 8, \"num_experts_per_tok\": 9"),
     {"num_experts_per_tok (9)", "n_routed_experts (8)"}},
    {"bad_routed_not_multiple_of_group", M4(", \"n_routed_experts\": 10, \"n_group\": 4"),
     {"n_routed_experts (10)", "n_group (4)"}},
    {"bad_group_too_small", M4(", \"n_routed_experts\": 4, \"n_group\": 4, \"topk_group\": 1, "
                               "\"num_experts_per_tok\": 1"),
     {"n_routed_experts / n_group", "top 2"}},
    {"bad_topk_group_too_large", M4(", \"n_group\": 2, \"topk_group\": 3"),
     {"topk_group (3)", "n_group (2)"}},
    {"bad_first_k_dense_too_large", M4(", \"num_hidden_layers\": 2, \"first_k_dense_replace\": 3"),
     {"first_k_dense_replace (3)", "num_hidden_layers (2)"}},
    {"bad_alias_conflict", M4(", \"n_routed_experts\": 128, \"num_local_experts\": 64"),
     {"n_routed_experts", "num_local_experts", "disagree"}},
    {"bad_rope_odd", M4(", \"qk_rope_head_dim\": 63, \"qk_nope_head_dim\": 65, \"rope_parameters\": "
                        "{\"rope_type\": \"default\"}"),
     {"qk_rope_head_dim (63)", "even"}},
    {"bad_pad_token_outside_vocab", M4(", \"vocab_size\": 10"), {"pad_token_id (11)", "vocab_size"}},
    {"bad_eos_type", M4(", \"eos_token_id\": \"</s>\""), {"eos_token_id must be"}},
    {"bad_eos_list_item", M4(", \"eos_token_id\": [2, \"x\"]"), {"eos_token_id[] must be an integer"}},
    {"bad_eos_list_too_long", M4(", \"eos_token_id\": [1,2,3,4,5,6,7,8,9]"),
     {"eos_token_id", "at most 8"}},
    {"bad_text_activation", M3(", \"hidden_act\": \"tanh\"", "", ""),
     {"text_config.hidden_act", "\"tanh\"", "not a supported activation"}},
    {"bad_vision_activation", M3("", ", \"hidden_act\": \"quick_gelu\"", ""),
     {"vision_config.hidden_act", "\"quick_gelu\""}},
    {"bad_projector_activation", M3("", "", "\"projector_hidden_act\": \"gelu_fast\", "),
     {"projector_hidden_act", "\"gelu_fast\""}},
    {"bad_scoring_func", M4(", \"scoring_func\": \"sparsemax\""), {"scoring_func", "\"sparsemax\""}},
    {"bad_rope_type_unknown", M3(", \"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 2}",
                                 "", ""),
     {"text_config.rope_parameters.rope_type", "\"linear\"", "not supported"}},
    {"bad_legacy_type_unknown", M4(", \"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2}"),
     {"rope_scaling.type", "\"dynamic\""}},
    {"bad_rope_parameters_type", M4(", \"rope_parameters\": [1]"),
     {"rope_parameters must be an object"}},
    {"bad_yarn_factor_missing", M4(", \"rope_parameters\": {\"rope_type\": \"yarn\"}"),
     {"rope_parameters.factor", "required"}},
    {"bad_yarn_factor_type", M4(", \"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": "
                                "\"128\"}"),
     {"rope_parameters.factor must be a number"}},
    {"bad_rope_theta_negative", M4(", \"rope_parameters\": {\"rope_type\": \"default\", "
                                   "\"rope_theta\": -1}"),
     {"rope_parameters.rope_theta must be positive"}},
    {"bad_yarn_truncate_type", M4(", \"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 2, "
                                  "\"truncate\": 1}"),
     {"rope_parameters.truncate must be true or false"}},
    {"bad_yarn_original_max_real", M4(", \"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": "
                                      "2, \"original_max_position_embeddings\": 8192.5}"),
     {"rope_parameters.original_max_position_embeddings must be an integer"}},
    {"bad_llama4_beta_without_original_max",
     M4(", \"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 2, "
        "\"llama_4_scaling_beta\": 0.1}"),
     {"rope_parameters.original_max_position_embeddings", "llama_4_scaling_beta"}},
    {"bad_partial_rotary_factor", M4(", \"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": "
                                     "2, \"partial_rotary_factor\": 1.0}"),
     {"partial_rotary_factor", "qk_rope_head_dim is 64"}},
    {"bad_partial_rotary_factor_range", M4(", \"rope_parameters\": {\"rope_type\": \"yarn\", "
                                           "\"factor\": 2, \"partial_rotary_factor\": 1.5}"),
     {"partial_rotary_factor", "(0, 1]"}},
    {"bad_top_level_rope_theta_ignored_by_hf", M4(", \"rope_theta\": 1000000.0"),
     {"rope_theta", "rope_parameters", "ignores"}},
    {"bad_vision_hidden_not_multiple_of_heads", M3("", ", \"hidden_size\": 1000", ""),
     {"vision_config.hidden_size (1000)", "num_attention_heads (16)"}},
    {"bad_vision_head_dim", M3("", ", \"head_dim\": 128", ""),
     {"vision_config.head_dim (128)", "hidden_size / num_attention_heads"}},
    {"bad_image_not_multiple_of_patch", M3("", ", \"image_size\": 1000, \"patch_size\": 14", ""),
     {"vision_config.image_size (1000)", "patch_size (14)"}},
    {"bad_vision_rope_type", M3("", ", \"rope_parameters\": {\"rope_type\": \"yarn\"}", ""),
     {"vision_config.rope_parameters.rope_type", "\"yarn\""}},
    {"bad_vision_feature_layer_list", M3("", "", "\"vision_feature_layer\": [-1, -2], "),
     {"vision_feature_layer", "unsupported"}},
    {"bad_vision_feature_layer_range", M3("", ", \"num_hidden_layers\": 4", "\"vision_feature_layer\""
                                                                           ": 5, "),
     {"vision_feature_layer = 5", "out of range [-5, 4]"}},
    {"bad_image_token_outside_vocab", M3(", \"vocab_size\": 64, \"pad_token_id\": 0", "",
                                         "\"image_token_index\": 64, "),
     {"image_token_index (64)", "vocab_size"}},
    {"bad_tie_type", M3("", "", "\"tie_word_embeddings\": \"no\", "),
     {"tie_word_embeddings must be true or false"}},
    {"bad_dtype_type", M4(", \"dtype\": 16"), {"dtype must be a string"}},
    {"bad_architectures_type", M4(", \"architectures\": \"Mistral4ForCausalLM\""),
     {"architectures must be a list of strings"}},
    {"bad_quant_config_type", M4(", \"quantization_config\": \"fp8\""),
     {"quantization_config must be an object"}},
    {"bad_quant_method_missing", M4(", \"quantization_config\": {\"weight_block_size\": null}"),
     {"quantization_config.quant_method", "missing"}},
    {"bad_quant_method_other", M4(", \"quantization_config\": {\"quant_method\": \"awq\"}"),
     {"quantization_config.quant_method", "\"awq\"", "unsupported"}},
    {"bad_quant_block_wise", M4(", \"quantization_config\": {\"quant_method\": \"fp8\", "
                                "\"weight_block_size\": [128, 128]}"),
     {"quantization_config.weight_block_size", "block-wise FP8 is not supported"}},
    {"bad_quant_block_size_absent", M4(", \"quantization_config\": {\"quant_method\": \"fp8\"}"),
     {"quantization_config.weight_block_size", "[128, 128]", "not supported"}},
    {"bad_quant_activation_scheme", M4(", \"quantization_config\": {\"quant_method\": \"fp8\", "
                                       "\"weight_block_size\": null, \"activation_scheme\": "
                                       "\"per_token\"}"),
     {"quantization_config.activation_scheme", "\"per_token\""}},
    {"bad_quant_modules_type", M4(", \"quantization_config\": {\"quant_method\": \"fp8\", "
                                  "\"weight_block_size\": null, \"modules_to_not_convert\": "
                                  "\"lm_head\"}"),
     {"quantization_config.modules_to_not_convert must be a list of strings"}},
    {"bad_quant_modules_too_many",
     M4(", \"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": null, "
        "\"modules_to_not_convert\": [\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\","
        "\"k\",\"l\",\"m\",\"n\",\"o\",\"p\",\"q\"]}"),
     {"quantization_config.modules_to_not_convert", "at most 16"}},
    {"bad_quant_module_name_too_long",
     M4(", \"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": null, "
        "\"modules_to_not_convert\": [\"model.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]}"),
     {"quantization_config.modules_to_not_convert", "too long"}},
};

static void run_bad_case(void **state) {
    const bad_case *c = *state;
    char source[160];
    snprintf(source, sizeof source, "%s.json", c->name);
    m4_config cfg;
    m4_error err = {{0}};
    if (m4_config_parse(c->json, source, &cfg, &err) == 0) fail_msg("%s: accepted a bad config", c->name);
    m4t_assert_contains(err.msg, source);
    for (int i = 0; i < 3 && c->want[i]; i++) m4t_assert_contains(err.msg, c->want[i]);
}

/* Through m4_config_load: the path names the file in every message, including jansson's. */
static void test_load_errors_name_the_path(void **state) {
    (void)state;
    char *dir = m4t_tempdir();
    char *path = m4t_join(dir, "config.json");
    m4_config cfg;
    m4_error err = {{0}};

    m4t_write_text(path, "{\n  \"model_type\": \"mistral4\",\n  \"hidden_size\": }\n");
    assert_int_equal(m4_config_load(path, &cfg, &err), -1);
    m4t_assert_contains(err.msg, path);
    m4t_assert_contains(err.msg, "line 3");
    m4t_assert_contains(err.msg, "column");

    m4t_write_text(path, "{\"model_type\": \"mistral4\", \"num_hidden_layers\": \"36\"}");
    assert_int_equal(m4_config_load(path, &cfg, &err), -1);
    m4t_assert_contains(err.msg, path);
    m4t_assert_contains(err.msg, "num_hidden_layers must be an integer");

    char *missing = m4t_join(dir, "absent.json");
    assert_int_equal(m4_config_load(missing, &cfg, &err), -1);
    m4t_assert_contains(err.msg, missing);

    m4t_write_text(path, "{\"model_type\": \"mistral4\"}");
    assert_int_equal(m4_config_load(path, &cfg, &err), 0);
    assert_string_equal(cfg.source, path);

    free(missing);
    m4t_rmtree(dir);
    free(path);
    free(dir);
}

static void test_null_arguments(void **state) {
    (void)state;
    m4_config cfg;
    m4_error err = {{0}};
    assert_int_equal(m4_config_parse(NULL, "x.json", &cfg, &err), -1);
    m4t_assert_contains(err.msg, "x.json");
    assert_int_equal(m4_config_parse("{}", "x.json", NULL, &err), -1);
    assert_int_equal(m4_config_load(NULL, &cfg, &err), -1);
    /* err may be NULL: failure is still reported by the return value */
    assert_int_equal(m4_config_parse("{", "x.json", &cfg, NULL), -1);
}

int main(void) {
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_published_config),
        cmocka_unit_test(test_parse_matches_load),
        cmocka_unit_test(test_bare_mistral4_defaults),
        cmocka_unit_test(test_derived_defaults),
        cmocka_unit_test(test_mistral3_vision_defaults),
        cmocka_unit_test(test_vision_rope_theta_spellings),
        cmocka_unit_test(test_legacy_rope_scaling),
        cmocka_unit_test(test_rope_scaling_wins_over_rope_parameters),
        cmocka_unit_test(test_legacy_rope_theta_without_scaling),
        cmocka_unit_test(test_rope_type_spelled_type),
        cmocka_unit_test(test_yarn_optional_fields),
        cmocka_unit_test(test_q_lora_rank_null),
        cmocka_unit_test(test_eos_forms),
        cmocka_unit_test(test_aliases),
        cmocka_unit_test(test_tie_word_embeddings_effective),
        cmocka_unit_test(test_activation_names),
        cmocka_unit_test(test_misc_fields),
        cmocka_unit_test(test_load_errors_name_the_path),
        cmocka_unit_test(test_null_arguments),
    };
    enum {
        n_fixed = sizeof fixed / sizeof fixed[0],
        n_bad = sizeof bad_cases / sizeof bad_cases[0],
    };
    /* One named test per bad input, so a failure report names the case. */
    struct CMUnitTest tests[n_fixed + n_bad];
    memcpy(tests, fixed, sizeof fixed);
    for (size_t i = 0; i < n_bad; i++) {
        struct CMUnitTest t = {.name = bad_cases[i].name,
                               .test_func = run_bad_case,
                               .initial_state = (void *)&bad_cases[i]};
        tests[n_fixed + i] = t;
    }
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
