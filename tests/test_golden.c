/* The committed goldens, read through the HDF5 C API: the MANIFEST's files exist with their
 * sizes and SHA-256, the provenance attributes are there and agree with the MANIFEST, the
 * generator file is the one that made them, and every registry component that the case's model
 * has is present with its datasets. */
#include "testutil.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "golden.h"
#include "registry.h"

#define MAX_GOLDEN_BYTES (40u * 1000u * 1000u)

static json_t *manifest;

static int load_manifest(void **state) {
    char *path = m4t_source_path("golden/MANIFEST.json");
    json_error_t jerr;
    manifest = json_load_file(path, 0, &jerr);
    if (!manifest) fprintf(stderr, "%s: %s (line %d)\n", path, jerr.text, jerr.line);
    free(path);
    return manifest ? 0 : -1;
}

static int free_manifest(void **state) {
    json_decref(manifest);
    return 0;
}

/* SHA-256 of a file as lowercase hex, and its size. */
static void sha256_file(const char *path, char hex[65], long *size) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: missing (listed in golden/MANIFEST.json)", path);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL), 1);
    unsigned char buf[1 << 16], digest[32];
    size_t n;
    *size = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        EVP_DigestUpdate(ctx, buf, n);
        *size += (long)n;
    }
    unsigned int len;
    EVP_DigestFinal_ex(ctx, digest, &len);
    EVP_MD_CTX_free(ctx);
    fclose(f);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

static void files_match_checksums_and_budget(void **state) {
    const char *name;
    json_t *c;
    long total = 0;
    int files = 0;
    json_object_foreach(json_object_get(manifest, "cases"), name, c) {
        size_t i;
        json_t *file;
        json_array_foreach(json_object_get(c, "files"), i, file) {
            char rel[512], hex[65];
            snprintf(rel, sizeof rel, "golden/%s", json_string_value(json_object_get(file, "path")));
            char *path = m4t_source_path(rel);
            long size;
            sha256_file(path, hex, &size);
            if (size != json_integer_value(json_object_get(file, "bytes")))
                fail_msg("%s: %ld bytes, MANIFEST says %lld", path, size,
                         (long long)json_integer_value(json_object_get(file, "bytes")));
            if (strcmp(hex, json_string_value(json_object_get(file, "sha256"))) != 0)
                fail_msg("%s: sha256 %s differs from the MANIFEST", path, hex);
            total += size;
            files++;
            free(path);
        }
    }
    assert_true(files >= 6);
    if (total >= (long)MAX_GOLDEN_BYTES) fail_msg("goldens total %ld bytes, over the 40 MB budget", total);
}

static void generator_is_the_recorded_one(void **state) {
    char *path = m4t_source_path("golden/generate.py"), hex[65];
    long size;
    sha256_file(path, hex, &size);
    assert_string_equal(hex, json_string_value(json_object_get(manifest, "generator_sha256")));
    free(path);
}

/* Checks the provenance attributes of one file against the MANIFEST. */
static void check_provenance(const m4_golden *g, const char *case_name, json_t *c) {
    static const char *required[] = {"generator", "generator_sha256", "transformers_version",
                                     "torch_version", "seed", "dtype", "case"};
    char value[256];
    m4_error err;
    for (size_t i = 0; i < sizeof required / sizeof *required; i++)
        if (m4_golden_attr(g, required[i], value, sizeof value, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(m4_golden_attr(g, "case", value, sizeof value, &err), 0);
    assert_string_equal(value, case_name);
    assert_int_equal(m4_golden_attr(g, "generator_sha256", value, sizeof value, &err), 0);
    assert_string_equal(value, json_string_value(json_object_get(manifest, "generator_sha256")));
    assert_int_equal(m4_golden_attr(g, "transformers_version", value, sizeof value, &err), 0);
    assert_string_equal(value, json_string_value(json_object_get(json_object_get(manifest, "versions"), "transformers")));
    assert_int_equal(m4_golden_attr(g, "dtype", value, sizeof value, &err), 0);
    assert_string_equal(value, "float32");
    (void)c;
}

/* Every registry row that applies to this model must have its group and dataset: the text rows
 * always ({i} per text layer), the vision path's rows ({j} per vision layer) exactly when the
 * model is multimodal — and a text-only case holds none of them. */
static int check_components(const m4_golden *g, const m4_config *cfg) {
    int checked = 0;
    for (size_t r = 0; r < m4_component_count; r++) {
        const m4_component *comp = &m4_components[r];
        bool per_layer = m4_component_layer_placeholder(comp) != 0;
        int64_t layers = m4_component_instances(comp, cfg);
        if (m4_component_is_vision(comp) && !cfg->multimodal) {
            char group[128];
            m4_component_instance(comp->group, 0, group, sizeof group);
            if (m4_golden_has(g, group))
                fail_msg("%s: a text-only case holds the vision group %s", m4_golden_path(g), group);
            continue;
        }
        for (int layer = 0; layer < layers; layer++) {
            bool moe_only = comp->kind == M4_COMP_ROUTER || comp->kind == M4_COMP_EXPERTS ||
                            comp->kind == M4_COMP_SHARED_EXPERTS;
            if (moe_only && layer < cfg->text.first_k_dense_replace) continue;
            char group[128], path[256];
            m4_component_instance(comp->group, per_layer ? layer : -1, group, sizeof group);
            snprintf(path, sizeof path, "%s/%s", group, comp->dataset);
            if (!m4_golden_has(g, path)) fail_msg("%s: component %s has no dataset %s", m4_golden_path(g),
                                                  comp->name, path);
            checked++;
        }
    }
    return checked;
}

static void every_case_has_its_components(void **state) {
    const char *name;
    json_t *c;
    int cases_with_model = 0;
    json_object_foreach(json_object_get(manifest, "cases"), name, c) {
        char rel[512];
        snprintf(rel, sizeof rel, "golden/%s", json_string_value(json_object_get(c, "h5")));
        char *path = m4t_source_path(rel);
        m4_golden *g;
        m4_error err;
        if (m4_golden_open(path, &g, &err) != 0) fail_msg("%s", err.msg);
        check_provenance(g, name, c);
        char config_json[65536];
        /* a case with a model has its end-to-end group; the preprocess case has images only */
        if (m4_golden_has(g, "model")) {
            if (m4_golden_attr(g, "config_json", config_json, sizeof config_json, &err) != 0)
                fail_msg("%s", err.msg);
            m4_config cfg;
            if (m4_config_parse(config_json, path, &cfg, &err) != 0) fail_msg("%s", err.msg);
            assert_true(check_components(g, &cfg) > 10);
            cases_with_model++;
        }
        m4_golden_close(g);
        free(path);
    }
    assert_true(cases_with_model >= 5);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(files_match_checksums_and_budget),
        cmocka_unit_test(generator_is_the_recorded_one),
        cmocka_unit_test(every_case_has_its_components),
    };
    return cmocka_run_group_tests(tests, load_manifest, free_manifest);
}
