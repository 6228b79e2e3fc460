/* fuzz_models.h — the two tiny configs that fuzz_safetensors binds fuzzed checkpoints against
 * (modes 2 and 3), shared with the seed generator (make_seeds.c) so that the seeds are valid
 * checkpoints of exactly these models.
 *
 *  - FUZZ_CONFIG_FP8: a bare Mistral4ForCausalLM, one dense layer then one MoE layer, per-tensor
 *    FP8 with static activation scales, some modules not converted (exercises the scale binding);
 *  - FUZZ_CONFIG_VLM: a Mistral3ForConditionalGeneration with a one-layer Pixtral tower, the
 *    patch merger and projector biases (exercises the vision/projector binding and legacy names). */
#ifndef M4_FUZZ_MODELS_H
#define M4_FUZZ_MODELS_H

#define FUZZ_TEXT_FIELDS                                                                           \
    "\"vocab_size\": 16, \"hidden_size\": 8, \"intermediate_size\": 8, "                          \
    "\"moe_intermediate_size\": 4, \"num_hidden_layers\": 2, \"first_k_dense_replace\": 1, "       \
    "\"num_attention_heads\": 2, \"num_key_value_heads\": 2, \"n_routed_experts\": 4, "            \
    "\"num_experts_per_tok\": 2, \"n_shared_experts\": 1, \"q_lora_rank\": 4, "                    \
    "\"kv_lora_rank\": 4, \"qk_rope_head_dim\": 2, \"qk_nope_head_dim\": 2, \"v_head_dim\": 2, "   \
    "\"max_position_embeddings\": 64, \"pad_token_id\": 11, "                                      \
    "\"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 10000.0, \"factor\": 4.0, "    \
    "\"original_max_position_embeddings\": 16, \"mscale\": 1.0, \"mscale_all_dim\": 1.0, "         \
    "\"llama_4_scaling_beta\": 0.1}"

static const char FUZZ_CONFIG_FP8[] =
    "{\"model_type\": \"mistral4\", \"architectures\": [\"Mistral4ForCausalLM\"], "
    "\"dtype\": \"bfloat16\", " FUZZ_TEXT_FIELDS ", "
    "\"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": null, "
    "\"activation_scheme\": \"static\", "
    "\"modules_to_not_convert\": [\"mlp.gate\", \"lm_head\", \"embed_tokens\", \"kv_b_proj\"]}}";

static const char FUZZ_CONFIG_VLM[] =
    "{\"model_type\": \"mistral3\", \"architectures\": [\"Mistral3ForConditionalGeneration\"], "
    "\"dtype\": \"float32\", \"image_token_index\": 10, \"spatial_merge_size\": 2, "
    "\"projector_hidden_act\": \"gelu\", \"multimodal_projector_bias\": true, "
    "\"vision_feature_layer\": -1, "
    "\"text_config\": {\"model_type\": \"mistral4\", " FUZZ_TEXT_FIELDS "}, "
    "\"vision_config\": {\"model_type\": \"pixtral\", \"hidden_size\": 8, \"intermediate_size\": 8, "
    "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_channels\": 3, \"image_size\": 8, "
    "\"patch_size\": 2, \"hidden_act\": \"silu\", \"rope_theta\": 10000.0}}";

#endif
