/* make_seeds — writes the generated part of the fuzz seed corpora (scripts/fuzz --seeds runs it;
 * the output is committed under tests/fuzz/corpus/). Usage: make_seeds CORPUS_DIR
 *
 *   fuzz_safetensors/  valid single files (every dtype, scalars, empty tensors, metadata), index
 *                      JSONs for the index folder, and whole checkpoints of the two tiny configs
 *                      of fuzz_models.h (built from m4_weight_specs, so they bind), canonical and
 *                      legacy names;
 *   fuzz_config/       the two tiny configs;
 *   fuzz_golden/       small golden-like HDF5 files (RAW mode) and structured descriptions.
 * Each file starts with the target's mode byte (config seeds have none). The other config seeds
 * are plain copies of the committed configs (scripts/fuzz --seeds copies them). */
#include <hdf5.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "fuzz_models.h"
#include "st_write.h"
#include "weights.h"

static const char *root;

/* Writes CORPUS/target/name: the mode byte (none when mode < 0), then the data. */
static void put(const char *target, const char *name, int mode, const void *data, size_t size) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", root, target);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    uint8_t m = (uint8_t)mode;
    if (!f || (mode >= 0 && fwrite(&m, 1, 1, f) != 1) || (size && fwrite(data, 1, size, f) != size) ||
        fclose(f)) {
        perror(path);
        exit(1);
    }
}

static void put_st(const char *name, uint8_t mode, const st_entry *e, size_t n, const char *meta) {
    size_t size;
    uint8_t *file = st_build(e, n, meta, &size);
    put("fuzz_safetensors", name, mode, file, size);
    free(file);
}

/* A checkpoint of `config_json`: every spec the config implies, in a dtype it allows. */
static void put_model(const char *name, uint8_t mode, const char *config_json, bool legacy, bool bf16) {
    m4_config cfg;
    m4_error err;
    m4_tensor_spec *specs;
    size_t n;
    if (m4_config_parse(config_json, name, &cfg, &err) || m4_weight_specs(&cfg, NULL, &specs, &n, &err)) {
        fprintf(stderr, "make_seeds: %s\n", err.msg);
        exit(1);
    }
    st_entry *e = calloc(n, sizeof *e);
    char (*names)[200] = calloc(n, sizeof *names);
    float ones[64];
    for (int i = 0; i < 64; i++) ones[i] = 0.5f;
    for (size_t i = 0; i < n; i++) {
        const m4_tensor_spec *s = &specs[i];
        const char *nm = s->name;
        if (legacy) {
            static const struct { const char *from, *to; } map[] = {
                {"model.language_model.", "language_model.model."},
                {"lm_head.", "language_model.lm_head."},
                {"model.vision_tower.", "vision_tower."},
                {"model.multi_modal_projector.", "multi_modal_projector."}};
            for (size_t k = 0; k < 4; k++)
                if (!strncmp(nm, map[k].from, strlen(map[k].from))) {
                    snprintf(names[i], sizeof names[i], "%s%s", map[k].to, nm + strlen(map[k].from));
                    nm = names[i];
                    break;
                }
        }
        e[i].name = nm;
        e[i].ndim = s->ndim;
        int64_t numel = 1;
        for (int d = 0; d < s->ndim; d++) e[i].shape[d] = s->shape[d], numel *= s->shape[d];
        if (s->kind == M4_SPEC_SCALE || s->kind == M4_SPEC_ACT_SCALE) {
            e[i].dtype = "F32";
            e[i].data = ones;
        } else if (s->fp8) {
            e[i].dtype = "F8_E4M3";
        } else {
            e[i].dtype = bf16 ? (i % 3 == 0 ? "F16" : "BF16") : "F32";
        }
        size_t elem = !strcmp(e[i].dtype, "F32") ? 4 : !strcmp(e[i].dtype, "F8_E4M3") ? 1 : 2;
        e[i].nbytes = (size_t)numel * elem;
    }
    /* widest elements first (stable), so that every tensor stays aligned to its element size */
    st_entry *sorted = calloc(n, sizeof *sorted);
    size_t k = 0;
    for (size_t elem = 4; elem >= 1; elem /= 2)
        for (size_t i = 0; i < n; i++) {
            size_t sz = !strcmp(e[i].dtype, "F32") ? 4 : !strcmp(e[i].dtype, "F8_E4M3") ? 1 : 2;
            if (sz == elem) sorted[k++] = e[i];
        }
    memcpy(e, sorted, n * sizeof *e);
    free(sorted);
    put_st(name, mode, e, n, "{\"format\":\"pt\"}");
    free(e), free(names), free(specs);
}

/* A small golden-like file: provenance attributes, inputs, one component group, a soft link. */
static void put_h5(const char *name, bool latest_format, bool chunked) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s/.seed.h5", root);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (latest_format) H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    static const char *keys[] = {"case", "mla_softmax_scale_rule", "mla_softmax_scale",
                                 "transformers_version", "torch_version"};
    static const char *values[] = {"seed", "mscale2", "0.3535533905932738", "5.24.0", "2.9.0"};
    for (int i = 0; i < 5; i++) {
        hid_t t = H5Tcopy(H5T_C_S1), s = H5Screate(H5S_SCALAR);
        if (i % 2) H5Tset_size(t, H5T_VARIABLE);
        else H5Tset_size(t, strlen(values[i]) + 1);
        hid_t a = H5Acreate2(f, keys[i], t, s, H5P_DEFAULT, H5P_DEFAULT);
        if (i % 2) H5Awrite(a, t, &values[i]);
        else H5Awrite(a, t, values[i]);
        H5Aclose(a), H5Sclose(s), H5Tclose(t);
    }
    int64_t ids[6] = {1, 5, 9, 2, 3, 4};
    float x[6 * 4];
    for (int i = 0; i < 24; i++) x[i] = (float)i / 8.0f;
    hid_t g = H5Gcreate2(f, "inputs", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t d2[2] = {2, 3}, d3[3] = {2, 3, 4};
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunked) {
        hsize_t c2[2] = {1, 3};
        H5Pset_chunk(dcpl, 2, c2);
        H5Pset_deflate(dcpl, 4);
    }
    hid_t s = H5Screate_simple(2, d2, NULL);
    hid_t ds = H5Dcreate2(g, "input_ids", H5T_STD_I64LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids), H5Dclose(ds);
    ds = H5Dcreate2(g, "position_ids", H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids), H5Dclose(ds);
    H5Sclose(s), H5Gclose(g), H5Pclose(dcpl);
    g = H5Gcreate2(f, "text.embed_tokens", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    s = H5Screate_simple(2, d2, NULL);
    ds = H5Dcreate2(g, "in", H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids), H5Dclose(ds), H5Sclose(s);
    s = H5Screate_simple(3, d3, NULL);
    ds = H5Dcreate2(g, "out", H5T_IEEE_F64LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x), H5Dclose(ds), H5Sclose(s);
    H5Gclose(g);
    g = H5Gcreate2(f, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Lcreate_soft("/text.embed_tokens/out", g, "logits", H5P_DEFAULT, H5P_DEFAULT);
    s = H5Screate(H5S_SCALAR);
    ds = H5Dcreate2(g, "in", H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids), H5Dclose(ds), H5Sclose(s);
    H5Gclose(g);
    H5Fclose(f);
    FILE *in = fopen(tmp, "rb");
    fseek(in, 0, SEEK_END);
    long n = ftell(in);
    fseek(in, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n);
    if (fread(buf, 1, (size_t)n, in) != (size_t)n) exit(1);
    fclose(in);
    remove(tmp);
    put("fuzz_golden", name, 0, buf, (size_t)n);
    free(buf);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds CORPUS_DIR\n");
        return 2;
    }
    root = argv[1];
    mkdir(root, 0755);

    /* fuzz_safetensors, mode 0: single files */
    float f4[4] = {1, -2, 0.5f, 3};
    int64_t i2[2] = {7, -1};
    put_st("empty_header", 0, NULL, 0, NULL);
    put_st("metadata_only", 0, NULL, 0, "{\"format\":\"pt\",\"total_size\":\"0\"}");
    /* widest elements first, so that every tensor stays aligned to its element size */
    st_entry all[] = {{"e.i64", "I64", 1, {2}, i2, 16},          {"a.f32", "F32", 2, {2, 2}, f4, 16},
                      {"f.i32", "I32", 0, {0}, NULL, 4},         {"g.empty", "F32", 2, {0, 7}, NULL, 0},
                      {"b.bf16", "BF16", 1, {3}, NULL, 6},       {"c.f16", "F16", 3, {1, 1, 2}, NULL, 4},
                      {"h.rank8", "BF16", 8, {1, 1, 1, 1, 1, 1, 1, 2}, NULL, 4}, {"d.fp8", "F8_E4M3", 1, {5}, NULL, 5}};
    put_st("every_dtype", 0, all, sizeof all / sizeof *all, "{\"format\":\"pt\"}");
    put_st("one_tensor", 0, all, 1, NULL);

    /* mode 1: index JSONs for the folder of fuzz_safetensors' index mode (bit 2: open the file) */
    static const char idx_ok[] =
        "{\"metadata\": {\"total_size\": 34}, \"weight_map\": {"
        "\"a.weight\": \"model-00001-of-00002.safetensors\", "
        "\"b.weight\": \"model-00001-of-00002.safetensors\", "
        "\"c.weight\": \"shards/model-00002-of-00002.safetensors\", "
        "\"c.weight_scale_inv\": \"shards/model-00002-of-00002.safetensors\", "
        "\"d\": \"shards/model-00002-of-00002.safetensors\"}}";
    static const char idx_missing[] =
        "{\"weight_map\": {\"a.weight\": \"model-00001-of-00002.safetensors\", "
        "\"b.weight\": \"model-00001-of-00002.safetensors\"}}";
    static const char idx_escape[] = "{\"weight_map\": {\"a.weight\": \"../model-00001-of-00002.safetensors\"}}";
    put("fuzz_safetensors", "index_ok", 1, idx_ok, strlen(idx_ok));
    put("fuzz_safetensors", "index_ok_file", 5, idx_ok, strlen(idx_ok));
    put("fuzz_safetensors", "index_incomplete", 1, idx_missing, strlen(idx_missing));
    put("fuzz_safetensors", "index_escape", 1, idx_escape, strlen(idx_escape));

    /* modes 2 and 3: whole checkpoints that bind */
    put_model("model_fp8", 2, FUZZ_CONFIG_FP8, false, true);
    put_model("model_vlm", 3, FUZZ_CONFIG_VLM, false, false);
    put_model("model_vlm_legacy_bf16", 3, FUZZ_CONFIG_VLM, true, true);

    /* fuzz_config: the two tiny configs (the committed ones are copied by scripts/fuzz --seeds) */
    put("fuzz_config", "tiny_fp8.json", -1, FUZZ_CONFIG_FP8, strlen(FUZZ_CONFIG_FP8));
    put("fuzz_config", "tiny_vlm.json", -1, FUZZ_CONFIG_VLM, strlen(FUZZ_CONFIG_VLM));

    /* fuzz_golden: RAW files (mode byte 0) */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    put_h5("golden_v0", false, false);
    put_h5("golden_latest_chunked", true, true);
    /* STRUCTURED descriptions (odd mode byte): see write_structured in fuzz_golden.c */
    static const uint8_t structured[][24] = {
        {0, 3, 0, 15, 2, 2, 2, 1, 3, 0, 1, 0, 1, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0},
        {1, 4, 2, 0, 0, 0, 7, 0, 0, 1, 3, 9, 9, 9, 1, 0, 3, 3, 6, 0, 0, 1, 1, 0},
        {0, 2, 1, 1, 2, 2, 2, 2, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof structured / sizeof *structured; i++) {
        char nm[32];
        snprintf(nm, sizeof nm, "structured_%zu", i);
        put("fuzz_golden", nm, 1, structured[i], sizeof structured[i]);
    }
    return 0;
}
