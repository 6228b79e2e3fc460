/* cmd_inspect.c — `mistral4 inspect PATH [--json] [--context N] [--all-layers] [--gpus N]`: renders the
 * accounting of inspect.c as text or JSON. All numbers come from inspect.h; this file only
 * formats them. */
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "format.h"
#include "generation.h"
#include "inspect.h"

#define CMD "inspect"
#define DEFAULT_CONTEXT 4096
#define MAX_CONTEXT ((int64_t)1 << 32)
/* --gpus: a bound for parsing only; the plan itself allows 1 .. n_routed_experts GPUs */
#define MAX_GPUS 1024
/* the fit table lists N = 1 .. FIT_TABLE_ROWS (and --gpus N beyond) */
#define FIT_TABLE_ROWS 8

typedef struct {
    const char *path;
    bool json, all_layers;
    int64_t context;
    int64_t gpus;                /* 0: no --gpus plan */
} inspect_options;

/* ---- help -------------------------------------------------------------------------------------- */

static void print_help(void) {
    printf(
        "Usage: mistral4 inspect PATH [--json] [--context N] [--all-layers] [--gpus N]\n"
        "\n"
        "Prints what a Mistral 4 model holds and what one text token costs: the configuration,\n"
        "the module tree (tensor names, shapes, dtypes, parameters), parameter counts by part,\n"
        "active parameters per text token, and FLOPs and bytes of one decode token. Everything is\n"
        "computed from the loader's tensor list, the same list that binds a checkpoint.\n"
        "\n"
        "PATH is one of:\n"
        "  a checkpoint folder   config.json + *.safetensors (or model.safetensors.index.json);\n"
        "                        every tensor is bound and shape-checked, dtypes are those on disk\n"
        "  a config.json file    (or a folder holding only config.json); dtypes are inferred from\n"
        "                        the config: F8_E4M3 for FP8-quantized tensors, F32 for their\n"
        "                        scales, else the config's `dtype` (bfloat16 -> BF16, ...)\n"
        "\n"
        "Options:\n"
        "  --json          print one JSON object instead of text (fields below)\n"
        "  --context N     context length T for the per-token costs (default %d, 1..2^32)\n"
        "  --all-layers    list every layer's tensors instead of one layer per group of identical\n"
        "                  layers (\"x 36 layers\")\n"
        "  --gpus N        add a plan for N GPUs (1..n_routed_experts): the routed experts split\n"
        "                  across them, everything else replicated; bytes per GPU (weights as\n"
        "                  stored and in bf16, + the latent cache at --context), the all-reduce\n"
        "                  bytes per token, and which N fit an H100 and an H200 (docs/SCALING.md)\n"
        "  -h, --help      show this help\n"
        "\n"
        "Definitions:\n"
        "  params          tensor elements; FP8 scale scalars count too (the published total\n"
        "                  119,401,317,952 of Mistral-Small-4-119B-2603 includes them)\n"
        "  active/token    parameters one text token reads: all attention, norm, router,\n"
        "                  shared-expert, dense-MLP and lm_head weights, k/E of each routed-expert\n"
        "                  stack and of its scales (k = num_experts_per_tok of E experts), and one\n"
        "                  embedding row (hidden_size). Vision tower and projector run per image\n"
        "                  patch and are shown apart, not per text token.\n"
        "  FLOPs           2 per active weight (a multiply-add), norms included; the embedding is\n"
        "                  a gather (0). Attention as Hugging Face computes it with its compressed\n"
        "                  cache: kv_b_proj re-expands all T cached latents every step,\n"
        "                  2*T*Rkv*H*(dn+dv), plus scores and values 2*H*(dq+dv)*T per layer;\n"
        "                  T counts the new token. The absorbed-MLA alternative (kv_b folded into\n"
        "                  q and o) is printed beside it for comparison. Elementwise work\n"
        "                  (activations, softmax, RoPE, norm statistics) is not counted.\n"
        "  bytes           weight bytes = active params x bytes of their dtype (scales included);\n"
        "                  cache bytes = the T cached latents + rope keys, T*(Rkv+dr) per layer,\n"
        "                  in the config's dtype. Arithmetic intensity = FLOPs / (weight + cache\n"
        "                  bytes).\n"
        "\n"
        "JSON fields (--json; counts are JSON integers, ratios and config reals are numbers):\n"
        "  path            PATH as given\n"
        "  source          {kind: \"checkpoint\"|\"config\", dtypes: \"on_disk\"|\"inferred\",\n"
        "                   shards, tensors, bytes (checkpoint only)}\n"
        "  config          {architecture, model_type, multimodal, dtype,\n"
        "                   text{vocab_size, hidden_size, num_hidden_layers, num_attention_heads,\n"
        "                        num_key_value_heads, q_lora_rank, kv_lora_rank, qk_nope_head_dim,\n"
        "                        qk_rope_head_dim, v_head_dim, n_routed_experts,\n"
        "                        num_experts_per_tok, n_shared_experts, moe_intermediate_size,\n"
        "                        intermediate_size, first_k_dense_replace, rms_norm_eps,\n"
        "                        max_position_embeddings, tie_word_embeddings,\n"
        "                        rope{type, theta, factor, original_max_position_embeddings,\n"
        "                             mscale, mscale_all_dim, llama_4_scaling_beta, interleave}},\n"
        "                   vision{hidden_size, intermediate_size, num_hidden_layers,\n"
        "                          num_attention_heads, head_dim, patch_size, image_size,\n"
        "                          hidden_act, rope_theta} | null,\n"
        "                   projector{spatial_merge_size, hidden_act, bias} | null,\n"
        "                   fp8, softmax_scale{base, mscale, with_mscale}}\n"
        "  tensors[]       {name, shape[], dtype, params, part} for every tensor, in loader order\n"
        "  params          {total, by_part{<part>: n}, text, vision, projector, fp8_scales}\n"
        "  active          {total, by_part{<part>: n}, experts_per_token, routed_experts,\n"
        "                   vision_per_image_patch, projector_per_image_patch}\n"
        "  per_token       {context, cache_dtype, components[{name, flops, weight_bytes,\n"
        "                   cache_bytes}], total_flops, total_weight_bytes, total_cache_bytes,\n"
        "                   total_bytes, flops_per_byte, attention_flops,\n"
        "                   attention_flops_absorbed}; components with no work are left out\n"
        "  gpu_plan        (--gpus only) {gpus, context, cache_dtype, cache_bytes, cards[{name,\n"
        "                   memory, usable_bytes}], storage[{name: \"as_stored\"|\"bf16\",\n"
        "                   replicated{text, vision, projector, total}, bytes_per_expert,\n"
        "                   largest_gpu_bytes, fits{<card>: bool}, fewest_gpus{<card>: n|null},\n"
        "                   per_gpu[{rank, first_expert, experts, weight_bytes, cache_bytes,\n"
        "                   total_bytes}]}], communication{collective: \"all_reduce\",\n"
        "                   moe_layers, message_bytes_per_layer, message_bytes_per_token,\n"
        "                   bus_bytes_per_gpu_per_decoded_token,\n"
        "                   bus_bytes_per_gpu_per_prefill_token}}\n"
        "  <part> is one of the loader's part names (m4_part_name).\n"
        "\n"
        "Examples:\n"
        "  mistral4 inspect /models/Mistral-Small-4-119B-2603\n"
        "  mistral4 inspect tests/fixtures/mistral-small-4-119b-2603.config.json --context 262144\n"
        "  mistral4 inspect config.json --json | python3 -m json.tool\n"
        "  mistral4 inspect config.json --gpus 2 --context 32768\n"
        "\n"
        "Exit status: 0 success, 1 PATH could not be read or is not a valid model, 2 usage error.\n",
        DEFAULT_CONTEXT);
}

/* ---- arguments --------------------------------------------------------------------------------- */

/* Returns CLI_OK with *opt filled, CLI_USAGE after a message, or -1 when help was printed. */
static int parse_args(int argc, char **argv, inspect_options *opt) {
    *opt = (inspect_options){.context = DEFAULT_CONTEXT};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            print_help();
            return -1;
        } else if (strcmp(a, "--json") == 0) {
            opt->json = true;
        } else if (strcmp(a, "--all-layers") == 0) {
            opt->all_layers = true;
        } else if (strcmp(a, "--context") == 0) {
            if (i + 1 >= argc) return cli_usage_error(CMD, "--context needs a value");
            if (cli_parse_count(CMD, "--context", argv[++i], 1, MAX_CONTEXT, &opt->context) != CLI_OK) return CLI_USAGE;
        } else if (strncmp(a, "--context=", 10) == 0) {
            if (cli_parse_count(CMD, "--context", a + 10, 1, MAX_CONTEXT, &opt->context) != CLI_OK) return CLI_USAGE;
        } else if (strcmp(a, "--gpus") == 0) {
            if (i + 1 >= argc) return cli_usage_error(CMD, "--gpus needs a value");
            if (cli_parse_count(CMD, "--gpus", argv[++i], 1, MAX_GPUS, &opt->gpus) != CLI_OK) return CLI_USAGE;
        } else if (strncmp(a, "--gpus=", 7) == 0) {
            if (cli_parse_count(CMD, "--gpus", a + 7, 1, MAX_GPUS, &opt->gpus) != CLI_OK) return CLI_USAGE;
        } else if (a[0] == '-' && a[1] != '\0') {
            return cli_usage_error(CMD, "unknown option '%s'", a);
        } else if (opt->path) {
            return cli_usage_error(CMD, "one PATH only ('%s' and '%s' given)", opt->path, a);
        } else {
            opt->path = a;
        }
    }
    if (!opt->path) return cli_usage_error(CMD, "missing PATH (a checkpoint folder or a config.json)");
    return CLI_OK;
}

/* ---- text: header ------------------------------------------------------------------------------ */

static const char *yes_no(bool b) { return b ? "yes" : "no"; }

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void field(const char *key, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("  %-16s", key);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
}

static const char *model_type(const m4_config *c) { return c->multimodal ? "mistral3" : "mistral4"; }

static void print_source(const inspect_input *in) {
    char b1[32], b2[32];
    if (in->from_checkpoint) {
        field("weights", "checkpoint: %zu shard%s, %zu tensors, %s bytes (%s); dtypes as stored",
              in->n_shards, in->n_shards == 1 ? "" : "s", in->n_disk_tensors,
              fmt_count((int64_t)in->disk_bytes, b1, sizeof b1), fmt_si((double)in->disk_bytes, "B", b2, sizeof b2));
    } else if (in->dense_dtype_known) {
        field("weights", "none read: dtypes inferred from config (dtype %s -> %s%s)", in->config.dtype,
              m4_dtype_name(in->dense_dtype), in->config.quant.fp8 ? "; FP8 tensors F8_E4M3, scales F32" : "");
    } else {
        field("weights", "none read: dtypes inferred from config (no known `dtype`: assumed F32%s)",
              in->config.quant.fp8 ? "; FP8 tensors F8_E4M3, scales F32" : "");
    }
    const m4_quant_config *q = &in->config.quant;
    if (q->fp8) {
        char kept[512] = "";
        for (int i = 0; i < q->n_not_converted; i++) {
            size_t used = strlen(kept);
            snprintf(kept + used, sizeof kept - used, "%s%s", i ? ", " : "", q->not_converted[i]);
        }
        field("quantization", "FP8 E4M3 per tensor, %s activation scales; kept dense: %s",
              q->activation_scheme_static ? "static" : "dynamic", q->n_not_converted ? kept : "none");
    } else {
        field("quantization", "none");
    }
}

static void print_rope(const m4_text_config *t) {
    const m4_rope_config *r = &t->rope;
    if (r->type != M4_ROPE_YARN) {
        field("rope", "default, theta %g, %s", r->theta, t->rope_interleave ? "interleaved pairs" : "half-split pairs");
        return;
    }
    char extras[160] = "";
    if (r->has_mscale || r->has_mscale_all_dim)
        snprintf(extras, sizeof extras, ", mscale %g / mscale_all_dim %g", r->mscale, r->mscale_all_dim);
    field("rope", "yarn, theta %g, factor %g, original_max_position_embeddings %" PRId64 ", beta %g/%g%s",
          r->theta, r->factor, r->original_max_position_embeddings, r->beta_fast, r->beta_slow, extras);
    field("", "%s pairs, partial_rotary_factor %g%s", t->rope_interleave ? "interleaved" : "half-split",
          r->partial_rotary_factor,
          r->has_llama_4_scaling_beta ? "" : ", no Llama-4 query temperature");
    if (r->has_llama_4_scaling_beta)
        field("", "Llama-4 query temperature: beta %g over %" PRId64 " positions",
              r->llama_4_scaling_beta, r->original_max_position_embeddings);
}

static void print_softmax(const m4_config *c) {
    inspect_softmax_scale s;
    inspect_softmax(c, &s);
    if (s.has_mscale_rule && s.mscale != 1.0) {
        field("softmax scale", "1/sqrt(%" PRId64 ") = %.10g (base; what Mistral, vLLM, SGLang use);",
              c->text.qk_head_dim, s.base);
        field("", "HF after PR #47435 multiplies it by mscale^2 = %.10g -> %.10g.", s.mscale * s.mscale,
              s.with_mscale);
        field("", "The implementations take the rule as a parameter (MODEL.md section 0).");
    } else {
        field("softmax scale", "1/sqrt(%" PRId64 ") = %.10g (no yarn mscale rule applies)", c->text.qk_head_dim,
              s.base);
    }
}

static void print_header(const inspect_input *in) {
    const m4_config *c = &in->config;
    const m4_text_config *t = &c->text;
    char b[32];
    printf("%s\n", in->path);
    field("architecture", "%s", c->architecture[0] ? c->architecture : "(none given)");
    if (c->multimodal)
        field("model_type", "mistral3 (text mistral4, vision pixtral)");
    else
        field("model_type", "%s", model_type(c));
    print_source(in);

    printf("Text model (mistral4)\n");
    field("layers", "%" PRId64 " (first_k_dense_replace %" PRId64 ": %s)", t->num_hidden_layers,
          t->first_k_dense_replace, t->first_k_dense_replace ? "dense MLP layers first, then MoE" : "every layer MoE");
    field("hidden", "%" PRId64 ", vocab %s, rms_norm_eps %g, tie_word_embeddings %s", t->hidden_size,
          fmt_count(t->vocab_size, b, sizeof b), t->rms_norm_eps, yes_no(c->tie_word_embeddings));
    field("attention", "MLA, %" PRId64 " heads (kv %" PRId64 "), q_lora_rank %" PRId64 ", kv_lora_rank %" PRId64,
          t->num_attention_heads, t->num_key_value_heads, t->q_lora_rank, t->kv_lora_rank);
    field("", "head: qk_nope %" PRId64 " + qk_rope %" PRId64 " = %" PRId64 ", v %" PRId64,
          t->qk_nope_head_dim, t->qk_rope_head_dim, t->qk_head_dim, t->v_head_dim);
    field("experts", "E = %" PRId64 " routed, top-k = %" PRId64 ", %" PRId64 " shared; moe_intermediate %" PRId64,
          t->n_routed_experts, t->num_experts_per_tok, t->n_shared_experts, t->moe_intermediate_size);
    field("", "router %s, norm_topk_prob %s, routed_scaling_factor %g, groups %" PRId64 "/%" PRId64,
          t->scoring_func == M4_ROUTER_SOFTMAX ? "softmax" : "sigmoid", yes_no(t->norm_topk_prob),
          t->routed_scaling_factor, t->topk_group, t->n_group);
    if (t->first_k_dense_replace) field("dense MLP", "intermediate %" PRId64, t->intermediate_size);
    field("activation", "%s", m4_activation_name(t->hidden_act));
    print_rope(t);
    print_softmax(c);
    field("positions", "max_position_embeddings %s", fmt_count(t->max_position_embeddings, b, sizeof b));

    if (!c->multimodal) return;
    const m4_vision_config *v = &c->vision;
    printf("Vision tower (pixtral)\n");
    field("layers", "%" PRId64 ", hidden %" PRId64 ", intermediate %" PRId64 ", %" PRId64 " heads x %" PRId64,
          v->num_hidden_layers, v->hidden_size, v->intermediate_size, v->num_attention_heads, v->head_dim);
    field("patches", "%" PRId64 " px, image_size %" PRId64 " (%" PRId64 " patches per side), %" PRId64 " channels",
          v->patch_size, v->image_size, v->patch_size ? v->image_size / v->patch_size : 0, v->num_channels);
    field("activation", "%s, 2-D rope theta %g", m4_activation_name(v->hidden_act), v->rope_theta);
    printf("Projector\n");
    field("merge", "spatial_merge_size %" PRId64 ", activation %s, bias %s, image_token_index %" PRId64,
          c->spatial_merge_size, m4_activation_name(c->projector_hidden_act), yes_no(c->multimodal_projector_bias),
          c->image_token_index);
}

/* ---- text: module tree ------------------------------------------------------------------------- */

typedef struct {
    int indent;
    char label[200];
    char shape[48];
    const char *dtype;           /* NULL: a heading or subtotal row */
    bool has_params;
    int64_t params;
} tree_row;

typedef struct {
    tree_row *rows;
    size_t n, cap;
} tree;

static tree_row *tree_add(tree *t, int indent, bool has_params, int64_t params, const char *fmt, ...) {
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        tree_row *r = realloc(t->rows, cap * sizeof *r);
        if (!r) return NULL;
        t->rows = r;
        t->cap = cap;
    }
    tree_row *row = &t->rows[t->n++];
    memset(row, 0, sizeof *row);
    row->indent = indent;
    row->has_params = has_params;
    row->params = params;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(row->label, sizeof row->label, fmt, ap);
    va_end(ap);
    return row;
}

static bool tree_add_tensor(tree *t, int indent, const char *label, const m4_tensor_spec *s, m4_dtype dtype) {
    tree_row *row = tree_add(t, indent, true, inspect_numel(s), "%s", label);
    if (!row) return false;
    fmt_shape(s->shape, s->ndim, row->shape, sizeof row->shape);
    row->dtype = m4_dtype_name(dtype);
    return true;
}

/* For a layer tensor ("model.language_model.layers.3.mlp.gate.weight", layer 3): the length of
 * its stack prefix ("model.language_model.layers.") and its suffix ("mlp.gate.weight"). */
static bool split_layer_name(const m4_tensor_spec *s, size_t *prefix_len, const char **suffix) {
    if (s->layer < 0) return false;
    char needle[32];
    int n = snprintf(needle, sizeof needle, "layers.%d.", s->layer);
    for (const char *p = strstr(s->name, needle); p; p = strstr(p + 1, needle)) {
        if (p == s->name || p[-1] == '.') {
            *prefix_len = (size_t)(p - s->name) + strlen("layers.");
            *suffix = p + n;
            return true;
        }
    }
    return false;
}

/* The specs of one layer stack (text or vision), grouped by layer index. */
typedef struct {
    const char *prefix;          /* points into a spec name */
    size_t prefix_len;
    int n_layers;
    size_t *members;             /* spec indices, layer by layer, each layer in spec order */
    size_t *first;               /* [n_layers + 1]: layer l is members[first[l] .. first[l+1]) */
} layer_stack;

static bool in_stack(const m4_tensor_spec *s, const char *prefix, size_t prefix_len) {
    size_t len;
    const char *suffix;
    return split_layer_name(s, &len, &suffix) && len == prefix_len && strncmp(s->name, prefix, len) == 0;
}

static bool stack_build(const inspect_input *in, size_t seed, layer_stack *st) {
    const char *suffix;
    memset(st, 0, sizeof *st);
    st->prefix = in->specs[seed].name;
    split_layer_name(&in->specs[seed], &st->prefix_len, &suffix);
    for (size_t i = 0; i < in->n; i++)
        if (in_stack(&in->specs[i], st->prefix, st->prefix_len) && in->specs[i].layer + 1 > st->n_layers)
            st->n_layers = in->specs[i].layer + 1;
    st->first = calloc((size_t)st->n_layers + 1, sizeof *st->first);
    st->members = calloc(in->n ? in->n : 1, sizeof *st->members);
    if (!st->first || !st->members) return false;
    size_t k = 0;
    for (int l = 0; l < st->n_layers; l++) {
        st->first[l] = k;
        for (size_t i = 0; i < in->n; i++)
            if (in->specs[i].layer == l && in_stack(&in->specs[i], st->prefix, st->prefix_len)) st->members[k++] = i;
    }
    st->first[st->n_layers] = k;
    return true;
}

static void stack_free(layer_stack *st) {
    free(st->members);
    free(st->first);
}

static const char *suffix_of(const m4_tensor_spec *s) {
    size_t len;
    const char *suffix = s->name;
    split_layer_name(s, &len, &suffix);
    return suffix;
}

/* Layers a and b hold the same tensors (by suffix), with the same shapes and dtypes. */
static bool same_layer(const inspect_input *in, const layer_stack *st, int a, int b) {
    size_t na = st->first[a + 1] - st->first[a], nb = st->first[b + 1] - st->first[b];
    if (na != nb) return false;
    for (size_t j = 0; j < na; j++) {
        size_t ia = st->members[st->first[a] + j], ib = st->members[st->first[b] + j];
        const m4_tensor_spec *sa = &in->specs[ia], *sb = &in->specs[ib];
        if (strcmp(suffix_of(sa), suffix_of(sb)) != 0 || sa->ndim != sb->ndim || in->dtypes[ia] != in->dtypes[ib] ||
            memcmp(sa->shape, sb->shape, (size_t)sa->ndim * sizeof sa->shape[0]) != 0)
            return false;
    }
    return true;
}

/* Layers [lo, hi) are identical: print layer lo's tensors once, with the group's totals. */
static bool tree_add_group(tree *t, const inspect_input *in, const layer_stack *st, int lo, int hi) {
    int count = hi - lo;
    int64_t per_layer = 0;
    for (size_t j = st->first[lo]; j < st->first[lo + 1]; j++) per_layer += inspect_numel(&in->specs[st->members[j]]);
    char range[32];
    if (count == 1)
        snprintf(range, sizeof range, "%d", lo);
    else
        snprintf(range, sizeof range, "{%d..%d}", lo, hi - 1);
    if (!tree_add(t, 2, false, 0, "%.*s%s  x %d layer%s, each:", (int)st->prefix_len, st->prefix, range, count,
                  count == 1 ? "" : "s"))
        return false;
    for (size_t j = st->first[lo]; j < st->first[lo + 1]; j++) {
        size_t i = st->members[j];
        if (!tree_add_tensor(t, 4, suffix_of(&in->specs[i]), &in->specs[i], in->dtypes[i])) return false;
    }
    return tree_add(t, 4, true, per_layer, "per layer") && tree_add(t, 4, true, per_layer * count, "x %d", count);
}

static bool tree_add_stack(tree *t, const inspect_input *in, size_t seed) {
    layer_stack st;
    bool ok = stack_build(in, seed, &st);
    for (int lo = 0, hi = 1; ok && lo < st.n_layers; lo = hi++) {
        while (hi < st.n_layers && same_layer(in, &st, lo, hi)) hi++;
        ok = tree_add_group(t, in, &st, lo, hi);
    }
    stack_free(&st);
    return ok;
}

static bool build_tree(const inspect_input *in, bool all_layers, tree *t) {
    const char *done[8];
    size_t done_len[8], n_done = 0;
    for (size_t i = 0; i < in->n; i++) {
        const m4_tensor_spec *s = &in->specs[i];
        size_t len;
        const char *suffix;
        if (all_layers || !split_layer_name(s, &len, &suffix)) {
            if (!tree_add_tensor(t, 2, s->name, s, in->dtypes[i])) return false;
            continue;
        }
        bool seen = false;
        for (size_t d = 0; d < n_done && !seen; d++) seen = done_len[d] == len && strncmp(done[d], s->name, len) == 0;
        if (seen) continue;
        if (n_done < 8) {
            done[n_done] = s->name;
            done_len[n_done++] = len;
        }
        if (!tree_add_stack(t, in, i)) return false;
    }
    return true;
}

static bool print_tree(const inspect_input *in, bool all_layers) {
    tree t = {0};
    if (!build_tree(in, all_layers, &t)) {
        free(t.rows);
        cli_error(CMD, "out of memory while listing tensors");
        return false;
    }
    size_t w_label = strlen("tensor"), w_shape = strlen("shape");
    for (size_t i = 0; i < t.n; i++) {
        const tree_row *r = &t.rows[i];
        if (!r->dtype) continue; /* headings may run long */
        size_t lw = (size_t)r->indent + strlen(r->label), sw = strlen(r->shape);
        if (lw > w_label) w_label = lw;
        if (sw > w_shape) w_shape = sw;
    }
    printf("\nModule tree (%s)\n", in->from_checkpoint ? "dtypes as stored" : "dtypes inferred from config");
    printf("  %-*s  %-*s  %-8s  %17s\n", (int)(w_label - 2), "tensor", (int)w_shape, "shape", "dtype", "params");
    char b[32];
    for (size_t i = 0; i < t.n; i++) {
        const tree_row *r = &t.rows[i];
        int pad = (int)w_label - r->indent;
        if (r->dtype)
            printf("%*s%-*s  %-*s  %-8s  %17s\n", r->indent, "", pad, r->label, (int)w_shape, r->shape, r->dtype,
                   fmt_count(r->params, b, sizeof b));
        else if (r->has_params)
            printf("%*s%-*s  %-*s  %-8s  %17s\n", r->indent, "", pad, r->label, (int)w_shape, "", "",
                   fmt_count(r->params, b, sizeof b));
        else
            printf("%*s%s\n", r->indent, "", r->label);
    }
    free(t.rows);
    return true;
}

/* ---- text: counts ------------------------------------------------------------------------------ */

static void count_line(const char *label, int64_t v, int64_t of, const char *note) {
    char b[32];
    if (of > 0)
        printf("  %-18s %17s  %6.2f%%%s%s\n", label, fmt_count(v, b, sizeof b), 100.0 * (double)v / (double)of,
               note ? "  " : "", note ? note : "");
    else
        printf("  %-18s %17s%s%s\n", label, fmt_count(v, b, sizeof b), note ? "  " : "", note ? note : "");
}

static void print_params(const inspect_params *p) {
    char b[4][32];
    printf("\nParameters (tensor elements; FP8 scale scalars included)\n");
    for (int part = 0; part < M4_PART_COUNT; part++) count_line(m4_part_name((m4_part)part), p->by_part[part], p->total, NULL);
    count_line("total", p->total, 0, NULL);
    printf("  = text %s + vision %s + projector %s + FP8 scales %s\n", fmt_count(p->text, b[0], sizeof b[0]),
           fmt_count(p->vision, b[1], sizeof b[1]), fmt_count(p->projector, b[2], sizeof b[2]),
           fmt_count(p->fp8_scales, b[3], sizeof b[3]));
}

static void print_active(const inspect_active *a, const inspect_params *p, int64_t hidden) {
    char note[160], b[32];
    printf("\nActive parameters per text token\n"
           "  (what one text token reads: every attention, norm, router, shared-expert, dense-MLP and\n"
           "  lm_head weight; k/E of the routed experts and of their scales; one embedding row.\n"
           "  The vision tower and projector run per image patch, not per text token.)\n");
    for (int part = 0; part < M4_PART_COUNT; part++) {
        const char *n = NULL;
        if (part == M4_PART_VISION || part == M4_PART_PROJECTOR) continue;
        if (part == M4_PART_ROUTED_EXPERTS) {
            snprintf(note, sizeof note, "top-%" PRId64 " of %" PRId64 ": %" PRId64 "/%" PRId64 " of %s",
                     a->experts_per_token, a->routed_experts, a->experts_per_token, a->routed_experts,
                     fmt_count(a->routed_total, b, sizeof b));
            n = note;
        } else if (part == M4_PART_EMBED) {
            snprintf(note, sizeof note, "one row (hidden_size %" PRId64 ")", hidden);
            n = note;
        }
        count_line(m4_part_name((m4_part)part), a->by_part[part], a->total, n);
    }
    snprintf(note, sizeof note, "%.2f%% of all %s", p->total ? 100.0 * (double)a->total / (double)p->total : 0.0,
             fmt_count(p->total, b, sizeof b));
    printf("  %-18s %17s  %s\n", "total", fmt_count(a->total, b, sizeof b), note);
    printf("  %-18s %17s  per image patch, not per text token\n", m4_part_name(M4_PART_VISION),
           fmt_count(a->vision_per_patch, b, sizeof b));
    printf("  %-18s %17s  per image patch (merger and linears per 2x2 block), not per text token\n",
           m4_part_name(M4_PART_PROJECTOR), fmt_count(a->projector_per_patch, b, sizeof b));
}

static void print_cost(const inspect_cost *c, const m4_config *cfg) {
    char f[32], w[32], k[32];
    printf("\nOne decode token at context %" PRId64 " (FLOPs: 2 per active weight; attention as HF computes it)\n",
           c->context);
    printf("  %-26s %14s %14s %14s\n", "component", "FLOPs", "weight bytes", "cache bytes");
    for (int i = 0; i < INSPECT_COST_COUNT; i++) {
        const inspect_cost_row *r = &c->rows[i];
        if (!r->flops && !r->weight_bytes && !r->cache_bytes) continue;
        printf("  %-26s %14s %14s %14s\n", inspect_cost_name((inspect_cost_component)i), fmt_si((double)r->flops, "FLOP", f, sizeof f),
               fmt_si((double)r->weight_bytes, "B", w, sizeof w), fmt_si((double)r->cache_bytes, "B", k, sizeof k));
    }
    printf("  %-26s %14s %14s %14s\n", "total", fmt_si((double)c->total_flops, "FLOP", f, sizeof f),
           fmt_si((double)c->total_weight_bytes, "B", w, sizeof w), fmt_si((double)c->total_cache_bytes, "B", k, sizeof k));
    double intensity = c->total_bytes ? (double)c->total_flops / (double)c->total_bytes : 0.0;
    printf("  arithmetic intensity     %.3f FLOP/byte (%.4f bytes/FLOP) over %s of weights + cache\n", intensity,
           intensity > 0 ? 1.0 / intensity : 0.0, fmt_si((double)c->total_bytes, "B", w, sizeof w));
    const m4_text_config *t = &cfg->text;
    printf("  attention: HF's compressed cache re-expands all T = %" PRId64 " cached latents through kv_b_proj\n"
           "  every step (2*T*Rkv*H*(dn+dv) per layer, Rkv %" PRId64 ", H %" PRId64 ", dn %" PRId64 ", dv %" PRId64 "),\n"
           "  plus 2*H*(dq+dv)*T for scores and values; cache bytes = T*(Rkv+dr) per layer in %s.\n",
           c->context, t->kv_lora_rank, t->num_attention_heads, t->qk_nope_head_dim, t->v_head_dim,
           m4_dtype_name(c->cache_dtype));
    printf("  Absorbed MLA (kv_b folded into q and o) would need %s for attention instead of %s.\n",
           fmt_si((double)c->attention_flops_absorbed, "FLOP", f, sizeof f),
           fmt_si((double)c->attention_flops, "FLOP", w, sizeof w));
}

/* ---- the expert-parallel plan (--gpus; definitions in inspect.h) ------------------------------ */

typedef struct {
    int64_t gpus, context, cache_bytes;
    m4_dtype cache_dtype;
    inspect_weight_split split[INSPECT_STORAGE_COUNT];
    inspect_gpu_share largest[INSPECT_STORAGE_COUNT];  /* GPU 0 */
    inspect_gpu_share smallest[INSPECT_STORAGE_COUNT]; /* GPU N−1 */
    int64_t fewest[INSPECT_STORAGE_COUNT][INSPECT_GPU_CARD_COUNT];
    inspect_expert_comm comm;
} gpu_plan;

/* The cache is the one inspect_per_token counted for the same context. */
static int build_gpu_plan(const inspect_input *in, const inspect_cost *cost, int64_t gpus, gpu_plan *plan,
                          m4_error *err) {
    memset(plan, 0, sizeof *plan);
    plan->gpus = gpus;
    plan->context = cost->context;
    plan->cache_dtype = cost->cache_dtype;
    plan->cache_bytes = cost->rows[INSPECT_COST_KV_CACHE].cache_bytes;
    for (int s = 0; s < INSPECT_STORAGE_COUNT; s++) {
        inspect_weight_split *w = &plan->split[s];
        if (inspect_split_weights(&in->config, in->specs, in->dtypes, in->n, (inspect_storage)s, w, err) != 0 ||
            inspect_gpu_share_of(w, plan->cache_bytes, gpus, 0, &plan->largest[s], err) != 0 ||
            inspect_gpu_share_of(w, plan->cache_bytes, gpus, gpus - 1, &plan->smallest[s], err) != 0)
            return -1;
        for (int c = 0; c < INSPECT_GPU_CARD_COUNT; c++)
            plan->fewest[s][c] = inspect_fewest_gpus(w, plan->cache_bytes, inspect_gpu_cards[c].usable_bytes);
    }
    inspect_expert_comm_of(&in->config, in->specs, in->n, gpus, &plan->comm);
    return 0;
}

/* The column heading of a storage in text output. */
static const char *storage_label(inspect_storage s) { return s == INSPECT_STORAGE_BF16 ? "bf16" : "as stored"; }

static double gib(int64_t bytes) { return (double)bytes / (double)(1LL << 30); }

/* One row of the plan: a label and the bytes under each storage. */
static void plan_bytes_row(const char *label, const int64_t bytes[INSPECT_STORAGE_COUNT]) {
    char b[INSPECT_STORAGE_COUNT][32];
    printf("  %-32s", label);
    for (int s = 0; s < INSPECT_STORAGE_COUNT; s++)
        printf("  %10s %7.2f GiB", fmt_si((double)bytes[s], "B", b[s], sizeof b[s]), gib(bytes[s]));
    putchar('\n');
}

/* "GPU 2" or "GPUs 0..1" */
static char *gpu_range(int64_t first, int64_t last, char *buf, size_t size) {
    if (first == last)
        snprintf(buf, size, "GPU %" PRId64, first);
    else
        snprintf(buf, size, "GPUs %" PRId64 "..%" PRId64, first, last);
    return buf;
}

/* "GPUs 0..1: 43 each; GPU 2: 42" (GPUs 0 .. E mod N − 1 hold one expert more) */
static void print_expert_blocks(const gpu_plan *p) {
    const int64_t experts = p->split[0].experts, more = experts % p->gpus;
    char range[2][48];
    printf("  experts    of the %" PRId64 " routed experts of every MoE layer, ", experts);
    if (p->gpus == 1) {
        printf("GPU 0: all\n");
        return;
    }
    if (more == 0) {
        printf("%s: %" PRId64 " each\n", gpu_range(0, p->gpus - 1, range[0], sizeof range[0]), p->largest[0].experts);
        return;
    }
    printf("%s: %" PRId64 " each; %s: %" PRId64 " each\n", gpu_range(0, more - 1, range[0], sizeof range[0]),
           p->largest[0].experts, gpu_range(more, p->gpus - 1, range[1], sizeof range[1]), p->smallest[0].experts);
}

static void print_gpu_plan(const gpu_plan *p) {
    char b[3][48];
    printf("\nExpert-parallel plan: %" PRId64 " GPU%s, context %" PRId64 ", batch 1 (docs/SCALING.md)\n", p->gpus,
           p->gpus == 1 ? "" : "s", p->context);
    printf("  The routed experts are split across the GPUs in contiguous blocks (GPU r holds experts\n"
           "  r*q + min(r, m) onwards, q = E / N, m = E mod N); every GPU holds a copy of the rest:\n"
           "  embeddings, attention (MLA) with the whole latent cache, norms, router, shared expert,\n"
           "  dense MLP, lm_head, vision tower and projector. Bytes = weights + latent cache;\n"
           "  activations, workspaces and the CUDA context are not counted.\n");
    print_expert_blocks(p);
    enum { TEXT, VISION, PROJECTOR, EXPERT, CACHE, LARGEST, SMALLEST, ROWS };
    char label[ROWS][64] = {"replicated: text", "replicated: vision tower", "replicated: projector",
                            "one routed expert (all layers)"};
    snprintf(label[CACHE], sizeof label[CACHE], "latent cache (%s)", m4_dtype_name(p->cache_dtype));
    snprintf(label[LARGEST], sizeof label[LARGEST], "largest GPU (%" PRId64 " experts)", p->largest[0].experts);
    snprintf(label[SMALLEST], sizeof label[SMALLEST], "smallest GPU (%" PRId64 " experts)", p->smallest[0].experts);
    int64_t bytes[ROWS][INSPECT_STORAGE_COUNT];
    for (int s = 0; s < INSPECT_STORAGE_COUNT; s++) {
        bytes[TEXT][s] = p->split[s].replicated_text;
        bytes[VISION][s] = p->split[s].replicated_vision;
        bytes[PROJECTOR][s] = p->split[s].replicated_projector;
        bytes[EXPERT][s] = p->split[s].per_expert;
        bytes[CACHE][s] = p->cache_bytes;
        bytes[LARGEST][s] = p->largest[s].total_bytes;
        bytes[SMALLEST][s] = p->smallest[s].total_bytes;
    }
    printf("  %-32s", "bytes");
    for (int s = 0; s < INSPECT_STORAGE_COUNT; s++) printf("  %22s", storage_label((inspect_storage)s));
    putchar('\n');
    for (int r = 0; r < ROWS; r++) plan_bytes_row(label[r], bytes[r]);
    for (int c = 0; c < INSPECT_GPU_CARD_COUNT; c++) {
        const inspect_gpu_card *card = &inspect_gpu_cards[c];
        snprintf(b[0], sizeof b[0], "fits %s %s (%.0f GiB usable)", card->name, card->memory, gib(card->usable_bytes));
        printf("  %-32s", b[0]);
        for (int s = 0; s < INSPECT_STORAGE_COUNT; s++)
            printf("  %22s", yes_no(p->largest[s].total_bytes <= card->usable_bytes));
        putchar('\n');
    }

    const inspect_expert_comm *m = &p->comm;
    printf("  Communication (bf16 activations): after each of the %" PRId64 " MoE layers one all-reduce (sum)\n"
           "  combines the GPUs' partial routed outputs: hidden_size %" PRId64 " x 2 = %s bytes per token.\n",
           m->moe_layers, m->hidden_size, fmt_count(m->message_bytes_per_layer, b[0], sizeof b[0]));
    printf("  per decoded token  %" PRId64 " all-reduces of %s bytes = %s bytes; each GPU sends (and receives)\n"
           "                     2*(N-1)/N of it, %s bytes (ring all-reduce: NCCL's bus bytes)\n",
           m->moe_layers, fmt_count(m->message_bytes_per_layer, b[0], sizeof b[0]),
           fmt_count(m->message_bytes, b[1], sizeof b[1]), fmt_count((int64_t)(m->bus_bytes_per_gpu + 0.5), b[2], sizeof b[2]));
    printf("  per prefill token  the same bytes: a prompt of P tokens runs %" PRId64 " all-reduces of P x %s bytes\n",
           m->moe_layers, fmt_count(m->message_bytes_per_layer, b[0], sizeof b[0]));
}

/* One row of the fit table: the largest of N GPUs' shares against each card. */
static void print_fit_row(const gpu_plan *p, int64_t gpus) {
    inspect_gpu_share largest[INSPECT_STORAGE_COUNT];
    m4_error err;
    for (int s = 0; s < INSPECT_STORAGE_COUNT; s++) {
        if (inspect_gpu_share_of(&p->split[s], p->cache_bytes, gpus, 0, &largest[s], &err) != 0) {
            printf("  %5" PRId64 " %s\n", gpus, err.msg);
            return;
        }
    }
    char b[32];
    printf("  %5" PRId64 " %8" PRId64, gpus, largest[0].experts);
    for (int s = 0; s < INSPECT_STORAGE_COUNT; s++) {
        printf(" %12s", fmt_si((double)largest[s].total_bytes, "B", b, sizeof b));
        for (int c = 0; c < INSPECT_GPU_CARD_COUNT; c++)
            printf(" %5s", yes_no(largest[s].total_bytes <= inspect_gpu_cards[c].usable_bytes));
    }
    putchar('\n');
}

/* N = 1 .. FIT_TABLE_ROWS (at most E), and the plan's N beyond, then the fewest per card. */
static void print_fit_table(const gpu_plan *p) {
    const int64_t experts = p->split[0].experts;
    printf("\nGPUs needed at context %" PRId64 " (the largest GPU's weights + cache against usable memory)\n",
           p->context);
    printf("  %5s %8s", "N", "experts");
    for (int s = 0; s < INSPECT_STORAGE_COUNT; s++) {
        printf(" %12s", storage_label((inspect_storage)s));
        for (int c = 0; c < INSPECT_GPU_CARD_COUNT; c++) printf(" %5s", inspect_gpu_cards[c].name);
    }
    putchar('\n');
    for (int64_t gpus = 1; gpus <= FIT_TABLE_ROWS && gpus <= experts; gpus++) print_fit_row(p, gpus);
    if (p->gpus > FIT_TABLE_ROWS) print_fit_row(p, p->gpus);
    printf("  fewest GPUs:");
    for (int s = 0; s < INSPECT_STORAGE_COUNT; s++) {
        printf("%s %s", s ? ";" : "", storage_label((inspect_storage)s));
        for (int c = 0; c < INSPECT_GPU_CARD_COUNT; c++) {
            printf("%s %s ", c ? "," : "", inspect_gpu_cards[c].name);
            if (p->fewest[s][c])
                printf("%" PRId64, p->fewest[s][c]);
            else
                printf("none (not even %" PRId64 ")", experts);
        }
    }
    putchar('\n');
}

/* ---- JSON -------------------------------------------------------------------------------------- */

static json_t *jint(int64_t v) { return json_integer((json_int_t)v); }

static json_t *json_by_part(const int64_t by_part[M4_PART_COUNT]) {
    json_t *o = json_object();
    for (int p = 0; p < M4_PART_COUNT; p++) json_object_set_new(o, m4_part_name((m4_part)p), jint(by_part[p]));
    return o;
}

static json_t *json_shape(const m4_tensor_spec *s) {
    json_t *a = json_array();
    for (int d = 0; d < s->ndim; d++) json_array_append_new(a, jint(s->shape[d]));
    return a;
}

static json_t *json_rope(const m4_text_config *t) {
    const m4_rope_config *r = &t->rope;
    return json_pack("{s:s, s:f, s:f, s:I, s:o, s:o, s:o, s:b}", "type", r->type == M4_ROPE_YARN ? "yarn" : "default",
                     "theta", r->theta, "factor", r->factor, "original_max_position_embeddings",
                     (json_int_t)r->original_max_position_embeddings, "mscale",
                     r->has_mscale ? json_real(r->mscale) : json_null(), "mscale_all_dim",
                     r->has_mscale_all_dim ? json_real(r->mscale_all_dim) : json_null(), "llama_4_scaling_beta",
                     r->has_llama_4_scaling_beta ? json_real(r->llama_4_scaling_beta) : json_null(), "interleave",
                     (int)t->rope_interleave);
}

static json_t *json_text_config(const m4_text_config *t) {
    json_t *o = json_object();
    const struct {
        const char *key;
        int64_t v;
    } ints[] = {
        {"vocab_size", t->vocab_size},
        {"hidden_size", t->hidden_size},
        {"num_hidden_layers", t->num_hidden_layers},
        {"num_attention_heads", t->num_attention_heads},
        {"num_key_value_heads", t->num_key_value_heads},
        {"q_lora_rank", t->q_lora_rank},
        {"kv_lora_rank", t->kv_lora_rank},
        {"qk_nope_head_dim", t->qk_nope_head_dim},
        {"qk_rope_head_dim", t->qk_rope_head_dim},
        {"v_head_dim", t->v_head_dim},
        {"n_routed_experts", t->n_routed_experts},
        {"num_experts_per_tok", t->num_experts_per_tok},
        {"n_shared_experts", t->n_shared_experts},
        {"moe_intermediate_size", t->moe_intermediate_size},
        {"intermediate_size", t->intermediate_size},
        {"first_k_dense_replace", t->first_k_dense_replace},
        {"max_position_embeddings", t->max_position_embeddings},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) json_object_set_new(o, ints[i].key, jint(ints[i].v));
    json_object_set_new(o, "rms_norm_eps", json_real(t->rms_norm_eps));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(t->tie_word_embeddings));
    json_object_set_new(o, "hidden_act", json_string(m4_activation_name(t->hidden_act)));
    json_object_set_new(o, "rope", json_rope(t));
    return o;
}

static json_t *json_config(const m4_config *c) {
    const m4_vision_config *v = &c->vision;
    inspect_softmax_scale s;
    inspect_softmax(c, &s);
    json_t *vision = json_null(), *projector = json_null();
    if (c->multimodal) {
        vision = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:f}", "hidden_size", (json_int_t)v->hidden_size,
                           "intermediate_size", (json_int_t)v->intermediate_size, "num_hidden_layers",
                           (json_int_t)v->num_hidden_layers, "num_attention_heads", (json_int_t)v->num_attention_heads,
                           "head_dim", (json_int_t)v->head_dim, "patch_size", (json_int_t)v->patch_size, "image_size",
                           (json_int_t)v->image_size, "hidden_act", m4_activation_name(v->hidden_act), "rope_theta",
                           v->rope_theta);
        projector = json_pack("{s:I, s:s, s:b}", "spatial_merge_size", (json_int_t)c->spatial_merge_size, "hidden_act",
                              m4_activation_name(c->projector_hidden_act), "bias", (int)c->multimodal_projector_bias);
    }
    return json_pack("{s:s, s:s, s:b, s:s, s:o, s:o, s:o, s:b, s:{s:f, s:f, s:f}}", "architecture", c->architecture,
                     "model_type", model_type(c), "multimodal", (int)c->multimodal, "dtype", c->dtype, "text",
                     json_text_config(&c->text), "vision", vision, "projector", projector, "fp8", (int)c->quant.fp8,
                     "softmax_scale", "base", s.base, "mscale", s.mscale, "with_mscale", s.with_mscale);
}

static json_t *json_source(const inspect_input *in) {
    if (!in->from_checkpoint) return json_pack("{s:s, s:s}", "kind", "config", "dtypes", "inferred");
    return json_pack("{s:s, s:s, s:I, s:I, s:I}", "kind", "checkpoint", "dtypes", "on_disk", "shards",
                     (json_int_t)in->n_shards, "tensors", (json_int_t)in->n_disk_tensors, "bytes",
                     (json_int_t)in->disk_bytes);
}

static json_t *json_tensors(const inspect_input *in) {
    json_t *a = json_array();
    for (size_t i = 0; i < in->n; i++) {
        const m4_tensor_spec *s = &in->specs[i];
        json_array_append_new(a, json_pack("{s:s, s:o, s:s, s:I, s:s}", "name", s->name, "shape", json_shape(s), "dtype",
                                           m4_dtype_name(in->dtypes[i]), "params", (json_int_t)inspect_numel(s), "part",
                                           m4_part_name(s->part)));
    }
    return a;
}

static json_t *json_params(const inspect_params *p) {
    return json_pack("{s:I, s:o, s:I, s:I, s:I, s:I}", "total", (json_int_t)p->total, "by_part", json_by_part(p->by_part),
                     "text", (json_int_t)p->text, "vision", (json_int_t)p->vision, "projector",
                     (json_int_t)p->projector, "fp8_scales", (json_int_t)p->fp8_scales);
}

static json_t *json_active(const inspect_active *a) {
    return json_pack("{s:I, s:o, s:I, s:I, s:I, s:I}", "total", (json_int_t)a->total, "by_part", json_by_part(a->by_part),
                     "experts_per_token", (json_int_t)a->experts_per_token, "routed_experts",
                     (json_int_t)a->routed_experts, "vision_per_image_patch", (json_int_t)a->vision_per_patch,
                     "projector_per_image_patch", (json_int_t)a->projector_per_patch);
}

static json_t *json_cost(const inspect_cost *c) {
    json_t *rows = json_array();
    for (int i = 0; i < INSPECT_COST_COUNT; i++) {
        const inspect_cost_row *r = &c->rows[i];
        if (!r->flops && !r->weight_bytes && !r->cache_bytes) continue;
        json_array_append_new(rows, json_pack("{s:s, s:I, s:I, s:I}", "name", inspect_cost_name((inspect_cost_component)i),
                                              "flops", (json_int_t)r->flops, "weight_bytes", (json_int_t)r->weight_bytes,
                                              "cache_bytes", (json_int_t)r->cache_bytes));
    }
    double ratio = c->total_bytes ? (double)c->total_flops / (double)c->total_bytes : 0.0;
    return json_pack("{s:I, s:s, s:o, s:I, s:I, s:I, s:I, s:f, s:I, s:I}", "context", (json_int_t)c->context,
                     "cache_dtype", m4_dtype_name(c->cache_dtype), "components", rows, "total_flops",
                     (json_int_t)c->total_flops, "total_weight_bytes", (json_int_t)c->total_weight_bytes,
                     "total_cache_bytes", (json_int_t)c->total_cache_bytes, "total_bytes", (json_int_t)c->total_bytes,
                     "flops_per_byte", ratio, "attention_flops", (json_int_t)c->attention_flops,
                     "attention_flops_absorbed", (json_int_t)c->attention_flops_absorbed);
}

static json_t *json_gpu_share(const inspect_gpu_share *g, int64_t rank) {
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "rank", (json_int_t)rank, "first_expert",
                     (json_int_t)g->first_expert, "experts", (json_int_t)g->experts, "weight_bytes",
                     (json_int_t)g->weight_bytes, "cache_bytes", (json_int_t)g->cache_bytes, "total_bytes",
                     (json_int_t)g->total_bytes);
}

static json_t *json_gpu_storage(const gpu_plan *p, inspect_storage s) {
    const inspect_weight_split *w = &p->split[s];
    json_t *fits = json_object(), *fewest = json_object(), *per_gpu = json_array();
    for (int c = 0; c < INSPECT_GPU_CARD_COUNT; c++) {
        const inspect_gpu_card *card = &inspect_gpu_cards[c];
        json_object_set_new(fits, card->name, json_boolean(p->largest[s].total_bytes <= card->usable_bytes));
        json_object_set_new(fewest, card->name, p->fewest[s][c] ? jint(p->fewest[s][c]) : json_null());
    }
    for (int64_t rank = 0; rank < p->gpus; rank++) {
        inspect_gpu_share g;
        m4_error ignored; /* ranks 0 .. N−1 of an N that build_gpu_plan accepted */
        if (inspect_gpu_share_of(w, p->cache_bytes, p->gpus, rank, &g, &ignored) == 0)
            json_array_append_new(per_gpu, json_gpu_share(&g, rank));
    }
    return json_pack("{s:s, s:{s:I, s:I, s:I, s:I}, s:I, s:I, s:o, s:o, s:o}", "name", inspect_storage_name(s),
                     "replicated", "text", (json_int_t)w->replicated_text, "vision", (json_int_t)w->replicated_vision,
                     "projector", (json_int_t)w->replicated_projector, "total", (json_int_t)w->replicated,
                     "bytes_per_expert", (json_int_t)w->per_expert, "largest_gpu_bytes",
                     (json_int_t)p->largest[s].total_bytes, "fits", fits, "fewest_gpus", fewest, "per_gpu", per_gpu);
}

static json_t *json_gpu_plan(const gpu_plan *p) {
    json_t *cards = json_array(), *storage = json_array();
    for (int c = 0; c < INSPECT_GPU_CARD_COUNT; c++)
        json_array_append_new(cards, json_pack("{s:s, s:s, s:I}", "name", inspect_gpu_cards[c].name, "memory",
                                               inspect_gpu_cards[c].memory, "usable_bytes",
                                               (json_int_t)inspect_gpu_cards[c].usable_bytes));
    for (int s = 0; s < INSPECT_STORAGE_COUNT; s++) json_array_append_new(storage, json_gpu_storage(p, (inspect_storage)s));
    const inspect_expert_comm *m = &p->comm;
    return json_pack("{s:I, s:I, s:s, s:I, s:o, s:o, s:{s:s, s:I, s:I, s:I, s:f, s:f}}", "gpus", (json_int_t)p->gpus,
                     "context", (json_int_t)p->context, "cache_dtype", m4_dtype_name(p->cache_dtype), "cache_bytes",
                     (json_int_t)p->cache_bytes, "cards", cards, "storage", storage, "communication", "collective",
                     "all_reduce", "moe_layers", (json_int_t)m->moe_layers, "message_bytes_per_layer",
                     (json_int_t)m->message_bytes_per_layer, "message_bytes_per_token", (json_int_t)m->message_bytes,
                     "bus_bytes_per_gpu_per_decoded_token", m->bus_bytes_per_gpu,
                     "bus_bytes_per_gpu_per_prefill_token", m->bus_bytes_per_gpu);
}

/* plan: NULL without --gpus */
static int print_json(const inspect_input *in, const inspect_params *p, const inspect_active *a, const inspect_cost *c,
                      const gpu_plan *plan) {
    json_t *root = json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:o}", "path", in->path, "source", json_source(in),
                             "config", json_config(&in->config), "tensors", json_tensors(in), "params", json_params(p),
                             "active", json_active(a), "per_token", json_cost(c));
    if (root && plan) json_object_set_new(root, "gpu_plan", json_gpu_plan(plan));
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!text) {
        cli_error(CMD, "could not build the JSON output");
        return CLI_FAILED;
    }
    puts(text);
    free(text);
    return CLI_OK;
}

/* ---- the command ------------------------------------------------------------------------------- */

int cmd_inspect(int argc, char **argv) {
    inspect_options opt;
    int rc = parse_args(argc, argv, &opt);
    if (rc < 0) return CLI_OK; /* help */
    if (rc != CLI_OK) return rc;

    inspect_input in;
    m4_error err = {{0}};
    if (inspect_open(opt.path, &in, &err) != 0) {
        cli_error(CMD, "%s", err.msg);
        inspect_close(&in);
        return CLI_FAILED;
    }
    inspect_params params;
    inspect_active active;
    inspect_cost cost;
    gpu_plan plan;
    inspect_count_params(in.specs, in.n, &params);
    if (inspect_active_params(&in.config, in.specs, in.n, &active, &err) != 0 ||
        inspect_per_token(&in.config, in.specs, in.dtypes, in.n, opt.context, in.dense_dtype, &cost, &err) != 0 ||
        (opt.gpus && build_gpu_plan(&in, &cost, opt.gpus, &plan, &err) != 0)) {
        cli_error(CMD, "%s: %s", opt.path, err.msg);
        inspect_close(&in);
        return CLI_FAILED;
    }

    rc = CLI_OK;
    if (opt.json) {
        rc = print_json(&in, &params, &active, &cost, opt.gpus ? &plan : NULL);
    } else {
        print_header(&in);
        if (print_tree(&in, opt.all_layers)) {
            print_params(&params);
            print_active(&active, &params, in.config.text.hidden_size);
            print_cost(&cost, &in.config);
            if (opt.gpus) {
                print_gpu_plan(&plan);
                print_fit_table(&plan);
            }
        } else {
            rc = CLI_FAILED;
        }
    }
    if (fflush(stdout) != 0) {
        cli_error(CMD, "cannot write the output");
        rc = CLI_FAILED;
    }
    inspect_close(&in);
    return rc;
}
