/* Regression tests for the bugs the fuzzers found (issue #9; tests/fuzz/, docs/INPUTS.md), one
 * test each, named after what the input did, and for the input limits added with them. Each bug
 * crashed (or, under ASan/UBSan, reported a memory error or undefined behaviour) before its fix;
 * now it must fail cleanly with a message. The inputs are rebuilt here rather than committed, so
 * each test says in code what made it crash. */
#include "testutil.h"

#include <hdf5.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "golden.h"
#include "safetensors.h"
#include "weights.h"

typedef struct {
    char *dir;
    char *h5;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    f->dir = m4t_tempdir();
    f->h5 = m4t_join(f->dir, "golden.h5");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    m4t_rmtree(f->dir);
    free(f->h5);
    free(f->dir);
    free(f);
    return 0;
}

static hid_t create_h5(const char *path) {
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(file >= 0);
    return file;
}

/* Reading `dataset` must fail (as float32 and as int64) with a message holding `needle`. */
static void expect_read_fails(const char *path, const char *dataset, const char *needle) {
    m4_golden *g;
    m4_error err = {{0}};
    assert_int_equal(m4_golden_open(path, &g, &err), 0);
    for (int as_int = 0; as_int < 2; as_int++) {
        m4_array a;
        err.msg[0] = 0;
        assert_int_equal(m4_golden_read(g, dataset, as_int, &a, &err), -1);
        assert_null(a.f32);
        assert_null(a.i64);
        assert_int_equal(a.numel, 0);
        m4t_assert_contains(err.msg, needle);
        m4t_assert_contains(err.msg, dataset);
    }
    m4_golden_close(g);
}

/* Found by fuzz_golden (STRUCTURED mode, first minute): a dataset whose header claims
 * [2^62, 1] int64 elements, chunked and never written (so the file is a few KiB). The element
 * count times 4 or 8 bytes wrapped around size_t to 0, malloc(0) succeeded, and HDF5 wrote the
 * fill value into it: a heap-buffer-overflow. Now extents are bounded before any arithmetic
 * (M4_GOLDEN_MAX_ELEMENTS). */
static void golden_huge_extent_is_refused(void **state) {
    fixture *f = *state;
    hid_t file = create_h5(f->h5);
    hid_t group = H5Gcreate2(file, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {(hsize_t)1 << 62, 1}, chunk[2] = {1, 1};
    hid_t space = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_LATE);
    hid_t ds = H5Dcreate2(group, "out", H5T_STD_I64LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(ds >= 0);
    H5Dclose(ds), H5Pclose(dcpl), H5Sclose(space), H5Gclose(group), H5Fclose(file);
    expect_read_fails(f->h5, "model/out", "element limit");
}

/* The same limit without overflow: 2^20 × 2^9 = 2^29 elements fits in size_t but is over the
 * limit, so it is refused before malloc rather than allocating gigabytes. */
static void golden_extent_over_the_limit_is_refused(void **state) {
    fixture *f = *state;
    hid_t file = create_h5(f->h5);
    hsize_t dims[2] = {(hsize_t)1 << 20, (hsize_t)1 << 9}, chunk[2] = {1, 1};
    hid_t space = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_LATE);
    hid_t ds = H5Dcreate2(file, "big", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(ds >= 0);
    H5Dclose(ds), H5Pclose(dcpl), H5Sclose(space), H5Fclose(file);
    expect_read_fails(f->h5, "big", "element limit");
}

/* A dataset with a null dataspace (no shape at all) used to come back as one uninitialised
 * element; it is an error now. */
static void golden_null_dataspace_is_refused(void **state) {
    fixture *f = *state;
    hid_t file = create_h5(f->h5);
    hid_t space = H5Screate(H5S_NULL);
    hid_t ds = H5Dcreate2(file, "empty", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(ds >= 0);
    H5Dclose(ds), H5Sclose(space), H5Fclose(file);
    expect_read_fails(f->h5, "empty", "null dataspace");
}

/* Writes root attribute `name` as a string array of n elements (variable- or fixed-length). */
static void write_string_array_attr(const char *path, const char *name, bool variable, hsize_t n) {
    hid_t file = create_h5(path);
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, variable ? H5T_VARIABLE : 8);
    hid_t space = H5Screate_simple(1, &n, NULL);
    hid_t attr = H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(attr >= 0);
    if (variable) {
        const char *values[3] = {"mscale2", "base", "again"};
        assert_true(H5Awrite(attr, type, values) >= 0);
    } else {
        char values[3][8] = {"mscale2", "base", "again"};
        assert_true(H5Awrite(attr, type, values) >= 0);
    }
    H5Aclose(attr), H5Sclose(space), H5Tclose(type), H5Fclose(file);
}

static void expect_attr_fails(const char *path, const char *name, const char *needle) {
    m4_golden *g;
    m4_error err = {{0}};
    assert_int_equal(m4_golden_open(path, &g, &err), 0);
    char buf[64];
    assert_int_equal(m4_golden_attr(g, name, buf, sizeof buf, &err), -1);
    m4t_assert_contains(err.msg, name);
    m4t_assert_contains(err.msg, needle);
    m4_golden_close(g);
}

/* A root attribute holding three variable-length strings instead of one: H5Aread wrote three
 * pointers into the single `char *` on the stack (stack-buffer-overflow). Now an attribute must
 * hold exactly one string. */
static void golden_attribute_vlen_string_array_is_refused(void **state) {
    fixture *f = *state;
    write_string_array_attr(f->h5, "mla_softmax_scale_rule", true, 3);
    expect_attr_fails(f->h5, "mla_softmax_scale_rule", "is not a string");
}

/* The same with fixed-length strings: H5Aread wrote 3 × 8 bytes into a 9-byte buffer
 * (heap-buffer-overflow). */
static void golden_attribute_fixed_string_array_is_refused(void **state) {
    fixture *f = *state;
    write_string_array_attr(f->h5, "case", false, 3);
    expect_attr_fails(f->h5, "case", "is not a string");
}


/* ---- config.json and the tensor list ----------------------------------------------------- */

/* A tiny multimodal config (the seed of fuzz_config / fuzz_safetensors mode 3); %s is spliced in
 * as extra top-level fields and %s as extra text_config fields. */
static char *tiny_config(const char *top, const char *text) {
    static const char fmt[] =
        "{\"model_type\": \"mistral3\", %s \"text_config\": {\"model_type\": \"mistral4\", "
        "\"vocab_size\": 16, \"hidden_size\": 8, \"intermediate_size\": 8, \"moe_intermediate_size\": 4, "
        "\"num_attention_heads\": 2, \"num_key_value_heads\": 2, \"n_routed_experts\": 4, "
        "\"num_experts_per_tok\": 2, \"q_lora_rank\": 4, \"kv_lora_rank\": 4, \"qk_rope_head_dim\": 2, "
        "\"qk_nope_head_dim\": 2, \"v_head_dim\": 2, \"pad_token_id\": 11, %s "
        "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}}, "
        "\"vision_config\": {\"hidden_size\": 8, \"intermediate_size\": 8, \"num_hidden_layers\": 1, "
        "\"num_attention_heads\": 2, \"image_size\": 8, \"patch_size\": 2}}";
    size_t n = sizeof fmt + strlen(top) + strlen(text);
    char *json = malloc(n);
    assert_non_null(json);
    snprintf(json, n, fmt, top, text);
    return json;
}

/* Found with fuzz_config (a seed with num_hidden_layers raised; the 10-minute run itself did not
 * get there): 2,000,000 layers parsed, then m4_weight_specs allocated the layer array (2 GB) and a
 * ~20-entry-a-layer tensor list (2 GB more): out of memory. Now num_hidden_layers (text and
 * vision) is at most M4_CONFIG_MAX_LAYERS. */
static void config_two_million_layers_is_refused(void **state) {
    (void)state;
    char *json = tiny_config("", "\"num_hidden_layers\": 2000000,");
    m4_config cfg;
    m4_error err = {{0}};
    assert_int_equal(m4_config_parse(json, "big.json", &cfg, &err), -1);
    m4t_assert_contains(err.msg, "text_config.num_hidden_layers = 2000000 is out of range [1, 1024]");
    free(json);
}

/* Found with fuzz_config (hand-made input, under UBSan): spatial_merge_size 2^31 − 1 made the
 * patch merger's width Dv · m · m overflow int64_t (undefined behaviour; the shape came out
 * negative). Now every implied shape is multiplied with overflow checks and bounded by
 * M4_MAX_TENSOR_ELEMENTS, so m4_weight_specs fails with a message. */
static void weights_patch_merger_width_overflow_is_refused(void **state) {
    (void)state;
    char *json = tiny_config("\"spatial_merge_size\": 2147483647,", "\"num_hidden_layers\": 1,");
    m4_config cfg;
    m4_error err = {{0}};
    assert_int_equal(m4_config_parse(json, "merge.json", &cfg, &err), 0);
    m4_tensor_spec *specs = (m4_tensor_spec *)(uintptr_t)1;
    size_t n = 7;
    assert_int_equal(m4_weight_specs(&cfg, NULL, &specs, &n, &err), -1);
    assert_null(specs);
    assert_int_equal(n, 0);
    m4t_assert_contains(err.msg, "patch_merger.merging_layer.weight");
    m4t_assert_contains(err.msg, "M4_MAX_TENSOR_ELEMENTS");
    free(json);
}

/* ---- file-size limits (no crash before; json_load_file read any size, or a FIFO forever) --- */

static void config_file_over_the_size_limit_is_refused(void **state) {
    fixture *f = *state;
    char *path = m4t_join(f->dir, "config.json");
    FILE *file = fopen(path, "wb");
    assert_non_null(file);
    assert_int_equal(ftruncate(fileno(file), M4_CONFIG_MAX_BYTES + 1), 0); /* sparse: fast */
    fclose(file);
    m4_config cfg;
    m4_error err = {{0}};
    assert_int_equal(m4_config_load(path, &cfg, &err), -1);
    m4t_assert_contains(err.msg, "byte limit for a config");
    remove(path);
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_equal(m4_config_load(path, &cfg, &err), -1); /* must not block reading the FIFO */
    m4t_assert_contains(err.msg, "not a regular file");
    free(path);
}

static void index_over_the_size_limit_is_refused(void **state) {
    fixture *f = *state;
    char *path = m4t_join(f->dir, "model.safetensors.index.json");
    FILE *file = fopen(path, "wb");
    assert_non_null(file);
    assert_int_equal(ftruncate(fileno(file), M4_SAFETENSORS_MAX_INDEX + 1), 0);
    fclose(file);
    m4_checkpoint *c;
    m4_error err = {{0}};
    assert_int_equal(m4_checkpoint_open(f->dir, &c, &err), -1);
    assert_null(c);
    m4t_assert_contains(err.msg, "byte limit for an index");
    free(path);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(golden_huge_extent_is_refused),
        T(golden_extent_over_the_limit_is_refused),
        T(golden_null_dataspace_is_refused),
        T(golden_attribute_vlen_string_array_is_refused),
        T(golden_attribute_fixed_string_array_is_refused),
        T(config_two_million_layers_is_refused),
        T(weights_patch_merger_width_overflow_is_refused),
        T(config_file_over_the_size_limit_is_refused),
        T(index_over_the_size_limit_is_refused),
    };
    /* M4T_FILTER=name runs one test (to check a fix by reverting it). */
    if (getenv("M4T_FILTER")) cmocka_set_test_filter(getenv("M4T_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
