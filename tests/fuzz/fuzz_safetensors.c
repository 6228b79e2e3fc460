/* fuzz_safetensors — untrusted checkpoint bytes through the loader's real entry points.
 *
 * The first input byte picks the mode (the rest is the file):
 *   b % 4 == 0  the bytes are a .safetensors file: m4_checkpoint_open(file)
 *   b % 4 == 1  the bytes are model.safetensors.index.json, in a folder that holds two small valid
 *               shards (one in a subfolder): m4_checkpoint_open(folder or index, by bit 2 of b)
 *   b % 4 == 2  the bytes are model.safetensors beside the FP8 text config: m4_model_open(folder)
 *   b % 4 == 3  the same beside the multimodal config (vision tower, projector, legacy names)
 * On success every tensor and every bound weight is read whole, and the invariants the loader
 * promises are checked: tensors tile the data section, views stay inside their tensor. */
#include <stdbool.h>

#include "fuzz_common.h"
#include "fuzz_models.h"
#include "safetensors.h"
#include "st_write.h"
#include "weights.h"

static volatile uint32_t sink;
static volatile float fsink; /* floats read back, kept so the reads are not optimised away */

/* Reads every byte of n bytes at p (a view into the mmap must be readable). */
static void touch(const void *p, uint64_t n) {
    const uint8_t *b = p;
    uint32_t acc = 0;
    for (uint64_t i = 0; i < n; i++) acc += b[i];
    sink += acc;
}

/* Checks what m4_checkpoint_open promises about an opened checkpoint. */
static void check_checkpoint(const m4_checkpoint *c) {
    size_t n = m4_checkpoint_tensor_count(c);
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        const m4_tensor *t = m4_checkpoint_tensor(c, i);
        FUZZ_CHECK(t && t->name && t->file);
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= M4_MAX_DIMS);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            FUZZ_CHECK(t->shape[d] >= 0);
            numel *= t->shape[d]; /* cannot overflow: the loader checked the product */
        }
        FUZZ_CHECK(numel == t->numel);
        FUZZ_CHECK((uint64_t)numel * m4_dtype_size(t->dtype) == t->nbytes);
        FUZZ_CHECK(((uintptr_t)t->data) % m4_dtype_size(t->dtype) == 0);
        if (i) FUZZ_CHECK(strcmp(m4_checkpoint_tensor(c, i - 1)->name, t->name) < 0);
        FUZZ_CHECK(m4_checkpoint_find(c, t->name) == t);
        touch(t->data, t->nbytes);
        sum += t->nbytes;
    }
    FUZZ_CHECK(sum == m4_checkpoint_data_bytes(c));
    FUZZ_CHECK(m4_checkpoint_find(c, "no such tensor \x01") == NULL);
    FUZZ_CHECK(m4_checkpoint_shard_count(c) >= 1);
}

/* A bound weight must be a view inside the checkpoint tensor it names. */
static void check_weight(const m4_checkpoint *c, const m4_weight *w) {
    if (!w->name) return;
    const m4_tensor *t = m4_checkpoint_find(c, w->name);
    FUZZ_CHECK(t != NULL && w->data == t->data && w->dtype == t->dtype);
    FUZZ_CHECK(w->rows >= 0 && w->cols >= 0);
    FUZZ_CHECK((uint64_t)w->rows * (uint64_t)w->cols * m4_dtype_size(w->dtype) <= t->nbytes);
    float row[4096];
    if (w->cols > 4096) return;
    for (int64_t r = 0; r < w->rows; r++) m4_weight_row_f32(w, r, row);
    fsink += row[0];
}

static void check_stack(const m4_checkpoint *c, const m4_expert_stack *s) {
    if (!s->name) return;
    const m4_tensor *t = m4_checkpoint_find(c, s->name);
    FUZZ_CHECK(t != NULL && s->data == t->data);
    FUZZ_CHECK((uint64_t)s->experts * (uint64_t)s->rows * (uint64_t)s->cols * m4_dtype_size(s->dtype) ==
               t->nbytes);
    for (int64_t e = 0; e < s->experts; e++) {
        m4_weight w = m4_expert_weight(s, e);
        float row[4096];
        if (w.cols > 4096) return;
        for (int64_t r = 0; r < w.rows; r++) m4_weight_row_f32(&w, r, row);
        fsink += w.scale + w.activation_scale + row[0];
    }
}

static void check_model(const m4_model *m) {
    const m4_checkpoint *c = m->checkpoint;
    const m4_weights *w = &m->weights;
    check_checkpoint(c);
    check_weight(c, &w->embed_tokens), check_weight(c, &w->norm), check_weight(c, &w->lm_head);
    for (int64_t i = 0; i < m->config.text.num_hidden_layers; i++) {
        const m4_text_layer_weights *l = &w->layers[i];
        const m4_weight *all[] = {&l->input_layernorm, &l->q_proj, &l->q_a_proj, &l->q_a_layernorm,
                                  &l->q_b_proj, &l->kv_a_proj_with_mqa, &l->kv_a_layernorm,
                                  &l->kv_b_proj, &l->o_proj, &l->post_attention_layernorm,
                                  &l->router, &l->router_bias, &l->shared_gate_proj,
                                  &l->shared_up_proj, &l->shared_down_proj, &l->gate_proj,
                                  &l->up_proj, &l->down_proj};
        for (size_t k = 0; k < sizeof all / sizeof *all; k++) check_weight(c, all[k]);
        check_stack(c, &l->experts_gate_up), check_stack(c, &l->experts_down);
    }
    if (!m->config.multimodal) return;
    check_weight(c, &w->patch_conv), check_weight(c, &w->ln_pre);
    for (int64_t i = 0; i < m->config.vision.num_hidden_layers; i++) {
        const m4_vision_layer_weights *l = &w->vision_layers[i];
        const m4_weight *all[] = {&l->attention_norm, &l->q_proj, &l->k_proj, &l->v_proj, &l->o_proj,
                                  &l->ffn_norm, &l->gate_proj, &l->up_proj, &l->down_proj};
        for (size_t k = 0; k < sizeof all / sizeof *all; k++) check_weight(c, all[k]);
    }
    check_weight(c, &w->projector_norm), check_weight(c, &w->patch_merger);
    check_weight(c, &w->linear_1), check_weight(c, &w->linear_2);
    check_weight(c, &w->linear_1_bias), check_weight(c, &w->linear_2_bias);
}

/* The two shards the index mode's folder holds, written once per process. */
static const char *index_folder(void) {
    static char dir[600];
    if (dir[0]) return dir;
    char sub[600], path[600];
    fuzz_mkdir("index", dir, sizeof dir);
    fuzz_mkdir("index/shards", sub, sizeof sub);
    float a[4] = {1, 2, 3, 4};
    st_entry one[] = {{"a.weight", "F32", 2, {2, 2}, a, sizeof a},
                      {"b.weight", "BF16", 1, {3}, NULL, 6}};
    st_entry two[] = {{"c.weight", "F8_E4M3", 1, {4}, NULL, 4},
                      {"c.weight_scale_inv", "F32", 0, {0}, a, 4},
                      {"d", "I64", 1, {1}, NULL, 8}};
    size_t size;
    uint8_t *file = st_build(one, 2, "{\"format\":\"pt\"}", &size);
    fuzz_write(fuzz_path("index/model-00001-of-00002.safetensors", path, sizeof path), file, size);
    free(file);
    file = st_build(two, 3, NULL, &size);
    fuzz_write(fuzz_path("index/shards/model-00002-of-00002.safetensors", path, sizeof path), file, size);
    free(file);
    return dir;
}

static const char *model_folder(const char *name, const char *config) {
    static char dirs[2][600];
    char *dir = dirs[config == FUZZ_CONFIG_VLM], path[600], file[700];
    if (dir[0]) return dir;
    fuzz_mkdir(name, dir, sizeof dirs[0]);
    snprintf(file, sizeof file, "%s/config.json", name);
    fuzz_write(fuzz_path(file, path, sizeof path), config, strlen(config));
    return dir;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const unsigned mode = data[0] % 4, variant = (data[0] >> 2) & 1;
    data++, size--;
    char path[600], file[700];
    m4_error err = {{0}};
    if (mode == 0 || mode == 1) {
        const char *open_path;
        if (mode == 0) {
            open_path = fuzz_path("fuzz.safetensors", path, sizeof path);
            fuzz_write(open_path, data, size);
        } else {
            const char *dir = index_folder();
            snprintf(file, sizeof file, "%s/model.safetensors.index.json", dir);
            fuzz_path("index/model.safetensors.index.json", path, sizeof path);
            fuzz_write(file, data, size);
            open_path = variant ? file : dir;
        }
        m4_checkpoint *c = NULL;
        if (m4_checkpoint_open(open_path, &c, &err) == 0) {
            FUZZ_CHECK(c != NULL);
            check_checkpoint(c);
            fuzz_note("checkpoint", "opened");
            m4_checkpoint_close(c);
        } else {
            fuzz_note("checkpoint", err.msg);
            FUZZ_CHECK(c == NULL && err.msg[0] != 0);
        }
        return 0;
    }
    const char *dir = mode == 2 ? model_folder("fp8", FUZZ_CONFIG_FP8) : model_folder("vlm", FUZZ_CONFIG_VLM);
    snprintf(file, sizeof file, "%s/model.safetensors", mode == 2 ? "fp8" : "vlm");
    fuzz_write(fuzz_path(file, path, sizeof path), data, size);
    m4_model model;
    if (m4_model_open(dir, &model, &err) == 0) {
        check_model(&model);
        fuzz_note("model", "bound");
        m4_model_close(&model);
    } else {
        fuzz_note("model", err.msg);
        FUZZ_CHECK(err.msg[0] != 0);
    }
    return 0;
}
