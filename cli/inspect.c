/* inspect.c — parameter, active-parameter and per-token cost accounting over the tensor-spec
 * list. Definitions: inspect.h. */
#include "inspect.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "files.h"
#include "safetensors.h"

/* ---- single tensors --------------------------------------------------------------------------- */

int64_t inspect_numel(const m4_tensor_spec *s) {
    int64_t n = 1;
    for (int d = 0; d < s->ndim; d++) n *= s->shape[d];
    return n;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

bool inspect_is_routed(const m4_tensor_spec *s) {
    if (s->part == M4_PART_ROUTED_EXPERTS) return true;
    /* per-expert scales: gate_up_proj_scale_inv [E,1,1], down_proj_activation_scale [E], … */
    return s->part == M4_PART_FP8_SCALES && s->ndim >= 1 && strstr(s->name, ".mlp.experts.") != NULL;
}

int inspect_dtype_from_config_name(const char *name, m4_dtype *out) {
    static const struct {
        const char *name;
        m4_dtype dtype;
    } names[] = {
        {"bfloat16", M4_DTYPE_BF16}, {"bf16", M4_DTYPE_BF16},  {"float16", M4_DTYPE_F16},
        {"half", M4_DTYPE_F16},      {"fp16", M4_DTYPE_F16},   {"float32", M4_DTYPE_F32},
        {"float", M4_DTYPE_F32},     {"fp32", M4_DTYPE_F32},
    };
    if (!name) return -1;
    const char *bare = strncmp(name, "torch.", 6) == 0 ? name + 6 : name;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(bare, names[i].name) == 0) {
            *out = names[i].dtype;
            return 0;
        }
    }
    return -1;
}

m4_dtype inspect_inferred_dtype(const m4_tensor_spec *s, m4_dtype dense) {
    if (s->kind == M4_SPEC_SCALE || s->kind == M4_SPEC_ACT_SCALE) return M4_DTYPE_F32;
    return s->fp8 ? M4_DTYPE_F8_E4M3 : dense;
}

/* ---- opening a path ----------------------------------------------------------------------- */

static char *join_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* true when `dir` holds a *.safetensors file or a *.safetensors.index.json */
static bool folder_has_safetensors(const char *dir) {
    return cli_files_ending(dir, ".safetensors", NULL, NULL) > 0 ||
           cli_files_ending(dir, ".safetensors.index.json", NULL, NULL) > 0;
}

static void set_dense_dtype(inspect_input *in) {
    in->dense_dtype_known = inspect_dtype_from_config_name(in->config.dtype, &in->dense_dtype) == 0;
    if (!in->dense_dtype_known) in->dense_dtype = M4_DTYPE_F32;
}

static int open_config(const char *config_path, inspect_input *in, m4_error *err) {
    if (m4_config_load(config_path, &in->config, err) != 0) return -1;
    set_dense_dtype(in);
    if (m4_weight_specs(&in->config, NULL, &in->specs, &in->n, err) != 0) return -1;
    in->dtypes = calloc(in->n ? in->n : 1, sizeof *in->dtypes);
    if (!in->dtypes) return m4_fail(err, "%s: out of memory (%zu bytes)", config_path, in->n * sizeof *in->dtypes);
    for (size_t i = 0; i < in->n; i++) in->dtypes[i] = inspect_inferred_dtype(&in->specs[i], in->dense_dtype);
    return 0;
}

/* Keeps the specs whose tensor is on disk, with the dtype found there. */
static int open_checkpoint(const char *dir, inspect_input *in, m4_error *err) {
    if (m4_model_open(dir, &in->model, err) != 0) return -1;
    in->from_checkpoint = true;
    in->config = in->model.config;
    set_dense_dtype(in);
    const m4_checkpoint *ck = in->model.checkpoint;
    in->n_shards = m4_checkpoint_shard_count(ck);
    in->n_disk_tensors = m4_checkpoint_tensor_count(ck);
    in->disk_bytes = m4_checkpoint_data_bytes(ck);

    m4_tensor_spec *all = NULL;
    size_t n_all = 0;
    if (m4_weight_specs(&in->config, NULL, &all, &n_all, err) != 0) return -1;
    in->specs = calloc(n_all ? n_all : 1, sizeof *in->specs);
    in->dtypes = calloc(n_all ? n_all : 1, sizeof *in->dtypes);
    if (!in->specs || !in->dtypes) {
        free(all);
        return m4_fail(err, "%s: out of memory (%zu bytes)", dir, n_all * (sizeof *in->specs + sizeof *in->dtypes));
    }
    for (size_t i = 0; i < n_all; i++) {
        const m4_tensor *t = m4_find_spec_tensor(ck, &in->config, &all[i], NULL);
        if (!t) continue; /* an optional FP8 companion the checkpoint does not hold */
        in->specs[in->n] = all[i];
        in->dtypes[in->n] = t->dtype;
        in->n++;
    }
    free(all);
    return 0;
}

int inspect_open(const char *path, inspect_input *in, m4_error *err) {
    memset(in, 0, sizeof *in);
    in->path = path;
    struct stat st;
    if (stat(path, &st) != 0) return m4_fail(err, "cannot open '%s': %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return open_config(path, in, err);

    char *config_path = join_path(path, "config.json");
    if (!config_path) return m4_fail(err, "%s: out of memory (%zu bytes)", path, strlen(path) + sizeof "/config.json");
    int rc;
    if (stat(config_path, &st) != 0)
        rc = m4_fail(err, "'%s' holds no config.json (expected a checkpoint folder or a config.json file)",
                     path);
    else if (folder_has_safetensors(path))
        rc = open_checkpoint(path, in, err);
    else
        rc = open_config(config_path, in, err);
    free(config_path);
    return rc;
}

void inspect_close(inspect_input *in) {
    if (in->from_checkpoint) m4_model_close(&in->model);
    free(in->specs);
    free(in->dtypes);
    memset(in, 0, sizeof *in);
}

/* ---- parameter counts ------------------------------------------------------------------------- */

static bool is_text_part(m4_part p) {
    return p != M4_PART_VISION && p != M4_PART_PROJECTOR && p != M4_PART_FP8_SCALES;
}

void inspect_count_params(const m4_tensor_spec *specs, size_t n, inspect_params *out) {
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        int64_t numel = inspect_numel(&specs[i]);
        out->total += numel;
        out->by_part[specs[i].part] += numel;
    }
    for (int p = 0; p < M4_PART_COUNT; p++)
        if (is_text_part((m4_part)p)) out->text += out->by_part[p];
    out->vision = out->by_part[M4_PART_VISION];
    out->projector = out->by_part[M4_PART_PROJECTOR];
    out->fp8_scales = out->by_part[M4_PART_FP8_SCALES];
}

/* ---- active parameters ------------------------------------------------------------------------ */

/* A routed stack and its per-expert scales lead with E: [E, …]. */
static int check_routed_shape(const m4_config *cfg, const m4_tensor_spec *s, m4_error *err) {
    const int64_t experts = cfg->text.n_routed_experts;
    if (s->ndim < 1 || s->shape[0] != experts)
        return m4_fail(err, "%s: leading dimension is not n_routed_experts (%lld)", s->name, (long long)experts);
    return 0;
}

/* Elements of `s` one text token reads: k/E of a routed stack, one embedding row, else all.
 * Vision and projector tensors are not read per text token (0). */
static int active_numel(const m4_config *cfg, const m4_tensor_spec *s, int64_t *out, m4_error *err) {
    int64_t numel = inspect_numel(s);
    if (s->part == M4_PART_VISION || s->part == M4_PART_PROJECTOR) {
        *out = 0;
    } else if (inspect_is_routed(s)) {
        int64_t experts = cfg->text.n_routed_experts, k = cfg->text.num_experts_per_tok;
        if (check_routed_shape(cfg, s, err) != 0) return -1;
        if (k < 0 || k > experts)
            return m4_fail(err, "num_experts_per_tok %lld is outside 0..n_routed_experts %lld",
                           (long long)k, (long long)experts);
        *out = numel / experts * k;
    } else if (s->part == M4_PART_EMBED && s->ndim == 2) {
        *out = s->shape[1]; /* one row: hidden_size values */
    } else {
        *out = numel;
    }
    return 0;
}

/* The embedding matrix when the lm_head is tied to it and has no tensor of its own; else NULL. */
static const m4_tensor_spec *tied_lm_head(const m4_config *cfg, const m4_tensor_spec *specs, size_t n) {
    if (!cfg->tie_word_embeddings) return NULL;
    const m4_tensor_spec *embed = NULL;
    for (size_t i = 0; i < n; i++) {
        if (specs[i].part == M4_PART_LM_HEAD) return NULL;
        if (specs[i].part == M4_PART_EMBED && specs[i].ndim == 2) embed = &specs[i];
    }
    return embed;
}

int inspect_active_params(const m4_config *cfg, const m4_tensor_spec *specs, size_t n,
                          inspect_active *out, m4_error *err) {
    memset(out, 0, sizeof *out);
    out->experts_per_token = cfg->text.num_experts_per_tok;
    out->routed_experts = cfg->text.n_routed_experts;
    for (size_t i = 0; i < n; i++) {
        const m4_tensor_spec *s = &specs[i];
        if (s->part == M4_PART_VISION) out->vision_per_patch += inspect_numel(s);
        if (s->part == M4_PART_PROJECTOR) out->projector_per_patch += inspect_numel(s);
        if (s->part == M4_PART_ROUTED_EXPERTS) out->routed_total += inspect_numel(s);
        int64_t active = 0;
        if (active_numel(cfg, s, &active, err) != 0) return -1;
        out->by_part[s->part] += active;
    }
    const m4_tensor_spec *tied = tied_lm_head(cfg, specs, n);
    if (tied) out->by_part[M4_PART_LM_HEAD] += inspect_numel(tied);
    for (int p = 0; p < M4_PART_COUNT; p++) out->total += out->by_part[p];
    return 0;
}

/* ---- per-token cost --------------------------------------------------------------------------- */

const char *inspect_cost_name(inspect_cost_component c) {
    static const char *names[INSPECT_COST_COUNT] = {
        [INSPECT_COST_EMBED] = "embed_tokens",
        [INSPECT_COST_ATTN_PROJ] = "attention.projections",
        [INSPECT_COST_ATTN_KV_B] = "attention.kv_b_expansion",
        [INSPECT_COST_ATTN_SCORES] = "attention.scores_pv",
        [INSPECT_COST_KV_CACHE] = "kv_cache_read",
        [INSPECT_COST_NORMS] = "norms",
        [INSPECT_COST_ROUTER] = "router",
        [INSPECT_COST_SHARED] = "shared_expert",
        [INSPECT_COST_ROUTED] = "routed_experts",
        [INSPECT_COST_DENSE_MLP] = "dense_mlp",
        [INSPECT_COST_LM_HEAD] = "lm_head",
        [INSPECT_COST_FP8_SCALES] = "fp8_scales",
    };
    return (unsigned)c < INSPECT_COST_COUNT ? names[c] : "?";
}

static bool is_kv_b(const m4_tensor_spec *s) {
    return s->part == M4_PART_ATTENTION && ends_with(s->name, "kv_b_proj.weight");
}

static inspect_cost_component cost_component(const m4_tensor_spec *s) {
    switch (s->part) {
    case M4_PART_EMBED: return INSPECT_COST_EMBED;
    case M4_PART_ATTENTION: return is_kv_b(s) ? INSPECT_COST_ATTN_KV_B : INSPECT_COST_ATTN_PROJ;
    case M4_PART_NORM: return INSPECT_COST_NORMS;
    case M4_PART_ROUTER: return INSPECT_COST_ROUTER;
    case M4_PART_SHARED_EXPERT: return INSPECT_COST_SHARED;
    case M4_PART_ROUTED_EXPERTS: return INSPECT_COST_ROUTED;
    case M4_PART_DENSE_MLP: return INSPECT_COST_DENSE_MLP;
    case M4_PART_LM_HEAD: return INSPECT_COST_LM_HEAD;
    default: return INSPECT_COST_FP8_SCALES;
    }
}

/* Checked int64_t arithmetic for the costs: the loader bounds each tensor (M4_MAX_TENSOR_ELEMENTS,
 * 2^40) and the layer count (M4_CONFIG_MAX_LAYERS), not their products with a context of up to
 * 2^32, so a cost can exceed int64_t. A result that does not fit sets *overflow (the caller then
 * fails) instead of being undefined behaviour. */
static int64_t mul(int64_t a, int64_t b, bool *overflow) {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r)) *overflow = true;
    return r;
}

static int64_t add(int64_t a, int64_t b, bool *overflow) {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) *overflow = true;
    return r;
}

/* FLOPs for `active` weight elements of component c at context T (definitions: inspect.h). */
static int64_t weight_flops(inspect_cost_component c, int64_t active, int64_t T, bool *overflow) {
    switch (c) {
    case INSPECT_COST_EMBED:
    case INSPECT_COST_FP8_SCALES: return 0;
    case INSPECT_COST_ATTN_KV_B: return mul(mul(2, T, overflow), active, overflow);
    default: return mul(2, active, overflow);
    }
}

int inspect_per_token(const m4_config *cfg, const m4_tensor_spec *specs, const m4_dtype *dtypes,
                      size_t n, int64_t context, m4_dtype cache_dtype, inspect_cost *out,
                      m4_error *err) {
    memset(out, 0, sizeof *out);
    if (context < 1) return m4_fail(err, "context length must be at least 1 (got %lld)", (long long)context);
    const m4_text_config *t = &cfg->text;
    const int64_t T = context;
    out->context = T;
    out->cache_dtype = cache_dtype;
    bool overflow = false;

    int64_t attention_layers = 0, kv_b_params = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t active = 0;
        if (active_numel(cfg, &specs[i], &active, err) != 0) return -1;
        if (active == 0) continue;
        inspect_cost_component c = cost_component(&specs[i]);
        inspect_cost_row *row = &out->rows[c];
        row->flops = add(row->flops, weight_flops(c, active, T, &overflow), &overflow);
        row->weight_bytes = add(row->weight_bytes, mul(active, (int64_t)m4_dtype_size(dtypes[i]), &overflow),
                                &overflow);
        if (is_kv_b(&specs[i])) {
            attention_layers++;
            kv_b_params = add(kv_b_params, active, &overflow);
        }
    }
    const m4_tensor_spec *tied = tied_lm_head(cfg, specs, n);
    if (tied) {
        int64_t numel = inspect_numel(tied);
        inspect_cost_row *row = &out->rows[INSPECT_COST_LM_HEAD];
        row->flops = add(row->flops, mul(2, numel, &overflow), &overflow);
        row->weight_bytes = add(row->weight_bytes, mul(numel, (int64_t)m4_dtype_size(dtypes[tied - specs]), &overflow),
                                &overflow);
    }

    /* per layer: q·kᵀ over dq = dn + dr and P·v over dv, for each of H heads and T keys */
    const int64_t H = t->num_attention_heads, dq = t->qk_head_dim, dv = t->v_head_dim;
    const int64_t Rkv = t->kv_lora_rank, dr = t->qk_rope_head_dim;
    const int64_t heads_times_keys = mul(mul(2, H, &overflow), T, &overflow); /* 2·H·T */
    out->rows[INSPECT_COST_ATTN_SCORES].flops =
        mul(mul(attention_layers, heads_times_keys, &overflow), dq + dv, &overflow);
    out->rows[INSPECT_COST_KV_CACHE].cache_bytes =
        mul(mul(mul(attention_layers, T, &overflow), Rkv + dr, &overflow), (int64_t)m4_dtype_size(cache_dtype),
            &overflow);

    out->attention_flops = add(add(out->rows[INSPECT_COST_ATTN_PROJ].flops, out->rows[INSPECT_COST_ATTN_KV_B].flops,
                                   &overflow),
                               out->rows[INSPECT_COST_ATTN_SCORES].flops, &overflow);
    /* absorbed: kv_b once, 2·H·T·(Rkv + dr) for the scores and 2·H·T·Rkv for the values per layer */
    const int64_t absorbed_per_layer = mul(heads_times_keys, 2 * Rkv + dr, &overflow);
    out->attention_flops_absorbed =
        add(add(out->rows[INSPECT_COST_ATTN_PROJ].flops, mul(2, kv_b_params, &overflow), &overflow),
            mul(attention_layers, absorbed_per_layer, &overflow), &overflow);
    for (int c = 0; c < INSPECT_COST_COUNT; c++) {
        out->total_flops = add(out->total_flops, out->rows[c].flops, &overflow);
        out->total_weight_bytes = add(out->total_weight_bytes, out->rows[c].weight_bytes, &overflow);
        out->total_cache_bytes = add(out->total_cache_bytes, out->rows[c].cache_bytes, &overflow);
    }
    out->total_bytes = add(out->total_weight_bytes, out->total_cache_bytes, &overflow);
    if (overflow) {
        memset(out, 0, sizeof *out);
        return m4_fail(err, "the FLOPs or bytes of one decode token at context %lld exceed 2^63 - 1: the "
                       "config's sizes are too large to count them in 64 bits", (long long)context);
    }
    return 0;
}

/* ---- expert parallelism over N GPUs --------------------------------------------------------- */

const char *inspect_storage_name(inspect_storage s) {
    return s == INSPECT_STORAGE_BF16 ? "bf16" : "as_stored";
}

/* Bytes of `s` stored as `storage`; `stored` is its dtype in the checkpoint (or inferred). A bf16
 * copy has no FP8 scales. */
static int64_t storage_bytes(const m4_tensor_spec *s, m4_dtype stored, inspect_storage storage) {
    if (storage == INSPECT_STORAGE_AS_STORED) return inspect_numel(s) * (int64_t)m4_dtype_size(stored);
    const bool scale = s->kind == M4_SPEC_SCALE || s->kind == M4_SPEC_ACT_SCALE;
    return scale ? 0 : inspect_numel(s) * (int64_t)m4_dtype_size(M4_DTYPE_BF16);
}

/* Plain sums: as for the parameter counts, at most ~45,000 tensors of at most 2^40 elements of at
 * most 8 bytes stay below 2^59. */
int inspect_split_weights(const m4_config *cfg, const m4_tensor_spec *specs, const m4_dtype *dtypes,
                          size_t n, inspect_storage storage, inspect_weight_split *out, m4_error *err) {
    memset(out, 0, sizeof *out);
    out->experts = cfg->text.n_routed_experts;
    for (size_t i = 0; i < n; i++) {
        const m4_tensor_spec *s = &specs[i];
        const int64_t bytes = storage_bytes(s, dtypes[i], storage);
        if (inspect_is_routed(s)) {
            if (check_routed_shape(cfg, s, err) != 0) return -1;
            out->per_expert += bytes / out->experts;
        } else if (s->part == M4_PART_VISION) {
            out->replicated_vision += bytes;
        } else if (s->part == M4_PART_PROJECTOR) {
            out->replicated_projector += bytes;
        } else {
            out->replicated_text += bytes;
        }
    }
    out->replicated = out->replicated_text + out->replicated_vision + out->replicated_projector;
    return 0;
}

int inspect_gpu_share_of(const inspect_weight_split *w, int64_t cache_bytes, int64_t gpus, int64_t rank,
                         inspect_gpu_share *out, m4_error *err) {
    memset(out, 0, sizeof *out);
    if (gpus < 1 || gpus > w->experts)
        return m4_fail(err, "%lld GPUs: expert parallelism gives each GPU at least one of the %lld routed experts "
                       "(1 .. %lld GPUs)", (long long)gpus, (long long)w->experts, (long long)w->experts);
    if (rank < 0 || rank >= gpus)
        return m4_fail(err, "GPU %lld of %lld: ranks are 0 .. %lld", (long long)rank, (long long)gpus,
                       (long long)gpus - 1);
    /* contiguous blocks: the first E mod N GPUs hold one expert more */
    const int64_t q = w->experts / gpus, m = w->experts % gpus;
    out->first_expert = rank * q + (rank < m ? rank : m);
    out->experts = q + (rank < m ? 1 : 0);
    bool overflow = false;
    out->weight_bytes = add(w->replicated, mul(out->experts, w->per_expert, &overflow), &overflow);
    out->cache_bytes = cache_bytes;
    out->total_bytes = add(out->weight_bytes, cache_bytes, &overflow);
    if (overflow) {
        memset(out, 0, sizeof *out);
        return m4_fail(err, "the bytes of one GPU's share exceed 2^63 - 1");
    }
    return 0;
}

/* Usable memory: what the lent machines' own description gives (an H100 80 GB leaves about 78 GiB
 * to allocate, an H200 141 GB about 139 GiB), the rest going to the CUDA context and reserves. */
const inspect_gpu_card inspect_gpu_cards[INSPECT_GPU_CARD_COUNT] = {
    {"H100", "80 GB", 78LL << 30},
    {"H200", "141 GB", 139LL << 30},
};

int64_t inspect_fewest_gpus(const inspect_weight_split *w, int64_t cache_bytes, int64_t usable_bytes) {
    for (int64_t gpus = 1; gpus <= w->experts; gpus++) {
        inspect_gpu_share largest; /* GPU 0 holds the largest share */
        m4_error ignored;
        if (inspect_gpu_share_of(w, cache_bytes, gpus, 0, &largest, &ignored) == 0 &&
            largest.total_bytes <= usable_bytes)
            return gpus;
    }
    return 0;
}

void inspect_expert_comm_of(const m4_config *cfg, const m4_tensor_spec *specs, size_t n, int64_t gpus,
                            inspect_expert_comm *out) {
    memset(out, 0, sizeof *out);
    out->gpus = gpus;
    int last_layer = -1;
    for (size_t i = 0; i < n; i++) {
        if (specs[i].part != M4_PART_ROUTED_EXPERTS || specs[i].layer == last_layer) continue;
        out->moe_layers++;
        last_layer = specs[i].layer;
    }
    out->hidden_size = cfg->text.hidden_size;
    out->message_bytes_per_layer = out->hidden_size * (int64_t)m4_dtype_size(M4_DTYPE_BF16);
    out->message_bytes = out->moe_layers * out->message_bytes_per_layer;
    out->bus_bytes_per_gpu = 2.0 * (double)(gpus - 1) / (double)gpus * (double)out->message_bytes;
}

/* ---- softmax scale --------------------------------------------------------------------------- */

void inspect_softmax(const m4_config *cfg, inspect_softmax_scale *out) {
    const m4_rope_config *r = &cfg->text.rope;
    memset(out, 0, sizeof *out);
    out->base = 1.0 / sqrt((double)cfg->text.qk_head_dim);
    out->mscale = 1.0;
    out->has_mscale_rule = r->type == M4_ROPE_YARN && r->has_mscale_all_dim && r->mscale_all_dim != 0.0;
    if (out->has_mscale_rule && r->factor > 1.0) out->mscale = 0.1 * r->mscale_all_dim * log(r->factor) + 1.0;
    out->with_mscale = out->base * out->mscale * out->mscale;
}
