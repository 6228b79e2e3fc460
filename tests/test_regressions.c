/* Regression tests for the bugs the fuzzers found (issue #9; tests/fuzz/, docs/INPUTS.md), one
 * test each, named after what the input did, and for the input limits added with them. Each bug
 * crashed (or, under ASan/UBSan, reported a memory error or undefined behaviour) before its fix;
 * now it must fail cleanly with a message. The inputs are rebuilt here rather than committed, so
 * each test says in code what made it crash. */
#include "testutil.h"

#include <dirent.h>
#include <hdf5.h>
#include <jansson.h>
#include <signal.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat.h"
#include "config.h"
#include "config_compare.h"
#include "conform.h"
#include "golden.h"
#include "image.h"
#include "safetensors.h"
#include "tokenizer.h"
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

/* Reading `dataset` as int64 (as_int) or float32 must fail with a message holding `needle`. */
static void expect_read_fails_as(const char *path, const char *dataset, bool as_int, const char *needle) {
    m4_golden *g;
    m4_error err = {{0}};
    assert_int_equal(m4_golden_open(path, &g, &err), 0);
    m4_array a;
    err.msg[0] = 0;
    assert_int_equal(m4_golden_read(g, dataset, as_int, &a, &err), -1);
    assert_null(a.f32);
    assert_null(a.i64);
    assert_int_equal(a.numel, 0);
    m4t_assert_contains(err.msg, needle);
    m4t_assert_contains(err.msg, dataset);
    m4_golden_close(g);
}

/* The same, as float32 and as int64. */
static void expect_read_fails(const char *path, const char *dataset, const char *needle) {
    expect_read_fails_as(path, dataset, false, needle);
    expect_read_fails_as(path, dataset, true, needle);
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


/* ---- what libhdf5 is asked to read (issue #18, fault 5) ----------------------------------- */

/* Writes dataset `name` [2, 2] of element type `type` into a new file `path` (contiguous, written
 * with `values` of type `memory` when given, else left unallocated); returns the data's address. */
static haddr_t write_small_dataset(const char *path, const char *name, hid_t type, hid_t memory, const void *values) {
    hid_t file = create_h5(path);
    hsize_t dims[2] = {2, 2};
    hid_t space = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_LATE);
    hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(ds >= 0);
    if (values) assert_true(H5Dwrite(ds, memory, H5S_ALL, H5S_ALL, H5P_DEFAULT, values) >= 0);
    haddr_t at = H5Dget_offset(ds);
    H5Dclose(ds), H5Pclose(dcpl), H5Sclose(space), H5Fclose(file);
    return at;
}

/* A type other than float32 / int64 / uint8, or one whose header claims a float32 of 2^26 bytes (a RAW
 * fuzz input's damaged header claimed more: libhdf5 converted it with an unchecked 256 GB calloc
 * in H5T__bit_copy and dereferenced NULL, or allocated 4 GB for a 2 × 2 dataset), is refused
 * before H5Dread: golden files hold float32 activations, int64 ids and uint8 image bytes, nothing
 * that needs libhdf5's general (bit by bit) conversion. */
static void golden_other_element_types_are_refused(void **state) {
    fixture *f = *state;
    const double doubles[4] = {1, 2, 3, 4};
    write_small_dataset(f->h5, "d", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, doubles);
    expect_read_fails(f->h5, "d", "is stored as float64; golden files hold float32, int64 and uint8 data");
    hid_t huge = H5Tcopy(H5T_IEEE_F32LE);
    assert_true(H5Tset_size(huge, (size_t)1 << 26) >= 0); /* precision 32 in a 64 MiB element */
    write_small_dataset(f->h5, "huge", huge, huge, NULL);
    H5Tclose(huge);
    expect_read_fails(f->h5, "huge", "is stored as float536870912; golden files hold");
    hid_t shifted = H5Tcopy(H5T_IEEE_F32LE); /* a float32 whose exponent bias is not IEEE's 127 */
    assert_true(H5Tset_ebias(shifted, 100) >= 0);
    write_small_dataset(f->h5, "shifted", shifted, shifted, NULL);
    H5Tclose(shifted);
    m4_golden *g;
    m4_error err = {{0}};
    assert_int_equal(m4_golden_open(f->h5, &g, &err), 0);
    m4_array a;
    assert_int_equal(m4_golden_read(g, "shifted", false, &a, &err), -1);
    m4t_assert_contains(err.msg, "dataset \"shifted\" is stored as float32 with a nonstandard bit layout; golden files");
    const float big_endian[4] = {1, 2, 3, 4}; /* the other byte order is the same type */
    m4_golden_close(g);
    write_small_dataset(f->h5, "be", H5T_IEEE_F32BE, H5T_NATIVE_FLOAT, big_endian);
    assert_int_equal(m4_golden_open(f->h5, &g, &err), 0);
    if (m4_golden_read(g, "be", false, &a, &err) != 0) fail_msg("%s", err.msg);
    assert_true(a.f32[3] == 4.0f);
    m4_array_free(&a);
    m4_golden_close(g);
}

/* Finds the little-endian pair (a, b) of 64-bit fields in file `path` and rewrites it as (to_a,
 * to_b): a contiguous layout message's address and size. */
static void patch_u64_pair(const char *path, uint64_t a, uint64_t b, uint64_t to_a, uint64_t to_b) {
    FILE *file = fopen(path, "r+b");
    assert_non_null(file);
    static unsigned char bytes[1 << 16];
    unsigned char pattern[16], patched[16];
    size_t n = fread(bytes, 1, sizeof bytes, file);
    for (int i = 0; i < 8; i++) {
        pattern[i] = (unsigned char)(a >> 8 * i), pattern[8 + i] = (unsigned char)(b >> 8 * i);
        patched[i] = (unsigned char)(to_a >> 8 * i), patched[8 + i] = (unsigned char)(to_b >> 8 * i);
    }
    size_t at = 0;
    while (at + 16 <= n && memcmp(bytes + at, pattern, 16) != 0) at++;
    assert_true(at + 16 <= n);
    assert_int_equal(fseek(file, (long)at, SEEK_SET), 0);
    assert_int_equal(fwrite(patched, 1, 16, file), 16);
    fclose(file);
}

/* A contiguous dataset's layout message (its address, then its size) rewritten: a size that is
 * not the shape's, or data past the end of the file, is refused before libhdf5 reads it. */
static void golden_contiguous_storage_that_does_not_fit_is_refused(void **state) {
    fixture *f = *state;
    const float values[4] = {1, 2, 3, 4};
    haddr_t at = write_small_dataset(f->h5, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, values);
    assert_true(at != HADDR_UNDEF);
    patch_u64_pair(f->h5, at, 16, at, (uint64_t)1 << 32);
    expect_read_fails_as(f->h5, "x", false, "stores 4294967296 bytes, but its 4 elements take 16: the file is damaged");
    at = write_small_dataset(f->h5, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, values);
    patch_u64_pair(f->h5, at, 16, (uint64_t)1 << 40, 16);
    expect_read_fails_as(f->h5, "x", false, "past the end of the");
}

/* Chunks far larger than the dataset made libhdf5 allocate gigabytes for a few elements. */
static void golden_chunks_larger_than_the_dataset_are_refused(void **state) {
    fixture *f = *state;
    hid_t file = create_h5(f->h5);
    hsize_t dims[2] = {2, 2}, max[2] = {H5S_UNLIMITED, H5S_UNLIMITED}, chunk[2] = {1 << 14, 1 << 14};
    hid_t space = H5Screate_simple(2, dims, max), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    hid_t ds = H5Dcreate2(file, "x", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(ds >= 0);
    H5Dclose(ds), H5Pclose(dcpl), H5Sclose(space), H5Fclose(file);
    expect_read_fails_as(f->h5, "x", false, "is stored in chunks larger than both the dataset (16 bytes) and 1048576 bytes");
}

/* A variable-length string attribute lives in the file's global heap, where a damaged heap size
 * kept H5Aread busy for minutes (RAW fuzzing). golden/generate.py writes fixed-length strings
 * only, so a golden file's are refused; a candidate file, which any engine may write (h5py's
 * default for a str is variable-length), may hold them. */
static void golden_variable_length_attribute_is_refused(void **state) {
    fixture *f = *state;
    hid_t file = create_h5(f->h5);
    hid_t type = H5Tcopy(H5T_C_S1), space = H5Screate(H5S_SCALAR);
    H5Tset_size(type, H5T_VARIABLE);
    hid_t attr = H5Acreate2(file, "case", type, space, H5P_DEFAULT, H5P_DEFAULT);
    const char *value = "text_tiny";
    assert_true(attr >= 0 && H5Awrite(attr, type, &value) >= 0);
    H5Aclose(attr), H5Sclose(space), H5Tclose(type), H5Fclose(file);
    expect_attr_fails(f->h5, "case", "is a variable-length string; golden files hold fixed-length ones");
    m4_golden *g;
    m4_error err = {{0}};
    char buf[64];
    assert_int_equal(m4_golden_open_candidate(f->h5, &g, &err), 0);
    if (m4_golden_attr(g, "case", buf, sizeof buf, &err) != 0) fail_msg("%s", err.msg);
    assert_string_equal(buf, "text_tiny");
    m4_golden_close(g);
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
    m4t_assert_contains(err.msg, "more than the 1048576-byte limit (M4_CONFIG_MAX_BYTES)");
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
    m4t_assert_contains(err.msg, "more than the 104857600-byte limit (M4_SAFETENSORS_MAX_INDEX)");
    free(path);
}

/* ---- the conformance runner's trust in golden shapes --------------------------------------- */

/* Replaces dataset `dataset` of golden file `path` by one of shape dims[ndim] (zeros, int64 or
 * float32). */
/* Issue #18, fault 1 and 2: a FIFO, a folder or a link to /dev/zero where an input file is
 * expected hung the tool (a FIFO's open waits for a writer; /dev/zero never ends) or ran it out of
 * memory (tekken.json had no limit). Every reader now refuses them on the opened descriptor and
 * names the kind. alarm() turns a hang into a failure. */
static int read_config(const char *path, m4_error *err) {
    m4_config cfg;
    return m4_config_load(path, &cfg, err);
}
static int read_tokenizer(const char *path, m4_error *err) {
    m4_tokenizer *tok;
    return m4_tokenizer_load(path, &tok, err);
}
static int read_chat(const char *path, m4_error *err) {
    m4_chat_file chat;
    return m4_chat_file_read(path, 0, &chat, err);
}
static int read_image(const char *path, m4_error *err) {
    m4_image img;
    return m4_image_load(path, &img, err);
}
static int read_golden(const char *path, m4_error *err) {
    m4_golden *g;
    return m4_golden_open(path, &g, err);
}

static void inputs_that_are_not_regular_files_are_refused(void **state) {
    fixture *f = *state;
    const struct {
        int (*read)(const char *path, m4_error *err);
        const char *what;
    } readers[] = {{read_config, "the config"},         {read_tokenizer, "the tokenizer file"},
                   {read_chat, "the conversation file"}, {read_image, "the image"},
                   {read_golden, "the golden file"}};
    char *fifo = m4t_join(f->dir, "fifo"), *zero = m4t_join(f->dir, "zero");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(symlink("/dev/zero", zero), 0);
    const struct {
        const char *path, *kind;
    } inputs[] = {{fifo, "is a FIFO (named pipe), not a regular file"},
                  {zero, "is a character device, not a regular file"},
                  {f->dir, "is a folder, not a regular file"}};
    alarm(20);
    for (size_t r = 0; r < sizeof readers / sizeof *readers; r++)
        for (size_t i = 0; i < sizeof inputs / sizeof *inputs; i++) {
            m4_error err = {{0}};
            assert_int_equal(readers[r].read(inputs[i].path, &err), -1);
            char expected[512];
            snprintf(expected, sizeof expected, "%s: %s %s", inputs[i].path, readers[r].what, inputs[i].kind);
            m4t_assert_contains(err.msg, expected);
        }
    alarm(0);
    free(fifo), free(zero);
}

/* Issue #18, fault 2: tekken.json has a size limit like every other input. */
static void tokenizer_file_over_the_size_limit_is_refused(void **state) {
    fixture *f = *state;
    char *path = m4t_join(f->dir, "tekken.json");
    FILE *file = fopen(path, "wb");
    assert_non_null(file);
    assert_int_equal(ftruncate(fileno(file), (off_t)M4_TOKENIZER_MAX_BYTES + 1), 0); /* sparse: fast */
    fclose(file);
    m4_tokenizer *tok;
    m4_error err = {{0}};
    assert_int_equal(m4_tokenizer_load(path, &tok, &err), -1);
    m4t_assert_contains(err.msg, "more than the 67108864-byte limit (M4_TOKENIZER_MAX_BYTES)");
    free(path);
}

static void replace_dataset(const char *path, const char *dataset, bool as_int, int ndim, const hsize_t *dims) {
    hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(file >= 0);
    assert_true(H5Ldelete(file, dataset, H5P_DEFAULT) >= 0);
    hsize_t numel = 1;
    for (int d = 0; d < ndim; d++) numel *= dims[d];
    void *zeros = calloc((size_t)numel, 8);
    assert_non_null(zeros);
    hid_t type = as_int ? H5T_NATIVE_INT64 : H5T_NATIVE_FLOAT, space = H5Screate_simple(ndim, dims, NULL);
    hid_t ds = H5Dcreate2(file, dataset, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(ds >= 0);
    assert_true(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros) >= 0);
    H5Dclose(ds), H5Sclose(space), H5Fclose(file);
    free(zeros);
}

/* Copies committed case `name`'s golden into the fixture's folder (crafted.h5). */
static char *golden_copy(const fixture *f, const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "golden/cases/%s/%s.h5", name, name);
    char *src = m4t_source_path(rel), *dst = m4t_join(f->dir, "crafted.h5");
    FILE *in = fopen(src, "rb");
    assert_non_null(in);
    assert_int_equal(fseek(in, 0, SEEK_END), 0);
    long size = ftell(in);
    assert_true(size > 0);
    rewind(in);
    char *bytes = malloc((size_t)size);
    assert_non_null(bytes);
    assert_int_equal(fread(bytes, 1, (size_t)size, in), (size_t)size);
    fclose(in);
    m4t_write_file(dst, bytes, (size_t)size);
    free(bytes);
    free(src);
    return dst;
}

/* Copies committed case `name`'s golden into the fixture's folder and replaces its dataset
 * `dataset` by one of shape dims[ndim] (zeros, int64 or float32). */
static char *golden_with_dataset(const fixture *f, const char *name, const char *dataset, bool as_int, int ndim,
                                 const hsize_t *dims) {
    char *dst = golden_copy(f, name);
    replace_dataset(dst, dataset, as_int, ndim, dims);
    return dst;
}

/* Runs the reference on case `name`'s model against `golden`, only the rows matching `only`. */
static int conform_on(const char *name, const char *golden, const char *only, m4_report *report, m4_error *err) {
    char rel[256];
    snprintf(rel, sizeof rel, "golden/cases/%s/model", name);
    char *model_dir = m4t_source_path(rel);
    m4_conform_options opt = {.model_dir = model_dir, .golden_path = golden, .backend = &m4_backend_reference,
                              .only = only};
    int rc = m4_conform_run(&opt, report, err);
    free(model_dir);
    return rc;
}

typedef struct {
    const char *case_name, *dataset;
    bool as_int;
    int ndim;
    hsize_t dims[4];
    const char *only;          /* the rows run: the one that reads the dataset and others */
    const char *row;           /* the row that reads the dataset */
    const char *shapes;        /* what the message says */
} crafted_dataset;

/* Reported in issue #9 (found reading harness/conform.c after fuzz_golden): the runner sized its
 * buffers from one golden dataset and let the backend write (or read, or compare) the size the
 * config and the case's inputs imply. Each dataset below has another shape than the one its row
 * implies; before the fix each was a heap-buffer-overflow under ASan — a write past the output
 * (input_layernorm/out, lm_head/out, patch_merger/out), a read past an input (self_attn/in,
 * experts/topk_ids) or past the trace buffer compared with it (attn_weights). Now the row is an
 * ERROR naming the file, the dataset and both shapes, and the other rows still run. */
static void conform_golden_shape_mismatch_is_an_error_row(void **state) {
    fixture *f = *state;
    static const crafted_dataset cases[] = {
        {"text_tiny", "text.layers.0.input_layernorm/out", false, 1, {1}, "text.layers.0.*",
         "text.layers.0.input_layernorm", "has shape [1] but the config and inputs imply [2, 10, 64]"},
        {"text_tiny", "text.lm_head/out", false, 3, {2, 10, 256}, "text.[ln]*", "text.lm_head",
         "has shape [2, 10, 256] but the config and inputs imply [2, 10, 512]"},
        {"text_tiny", "text.layers.0.self_attn/in", false, 3, {1, 10, 64}, "text.layers.0.*",
         "text.layers.0.self_attn", "has shape [1, 10, 64] but the config and inputs imply [2, 10, 64]"},
        {"text_tiny", "text.layers.0.self_attn/attn_weights", false, 4, {2, 4, 10, 20}, "text.layers.0.self_attn*",
         "text.layers.0.self_attn.attn_weights",
         "has shape [2, 4, 10, 20] but the config and inputs imply [2, 4, 10, 10]"},
        {"text_tiny", "text.layers.0.mlp.experts/topk_ids", true, 2, {20, 2}, "text.layers.0.mlp*",
         "text.layers.0.mlp.experts", "has shape [20, 2] but the config and inputs imply [20, 4]"},
        {"multimodal", "projector.patch_merger/out", false, 2, {1, 32}, "projector*", "projector.patch_merger",
         "has shape [1, 32] but the config and inputs imply [24, 32]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const crafted_dataset *x = &cases[i];
        char *golden = golden_with_dataset(f, x->case_name, x->dataset, x->as_int, x->ndim, x->dims);
        m4_report r;
        m4_error err = {{0}};
        if (conform_on(x->case_name, golden, x->only, &r, &err) != 0) fail_msg("%s", err.msg);
        const m4_result *row = NULL;
        for (size_t k = 0; k < r.n; k++)
            if (strcmp(r.results[k].name, x->row) == 0) row = &r.results[k];
        if (!row) fail_msg("%s: no row %s", x->dataset, x->row);
        if (row->status != M4_RESULT_ERROR)
            fail_msg("%s: %s is %s, not ERROR", x->dataset, x->row, m4_result_status_name(row->status));
        m4t_assert_contains(row->message, golden);
        m4t_assert_contains(row->message, x->dataset);
        m4t_assert_contains(row->message, x->shapes);
        assert_true(r.n_pass > 0); /* the rows around it still ran */
        m4_report_free(&r);
        remove(golden);
        free(golden);
    }
}

/* The case's inputs are checked the same way: an attention mask shorter than input_ids made every
 * attention read past it. The run stops before any row, naming the dataset. */
static void conform_golden_short_attention_mask_is_refused(void **state) {
    fixture *f = *state;
    const hsize_t dims[2] = {2, 5};
    char *golden = golden_with_dataset(f, "text_tiny", "inputs/attention_mask", true, 2, dims);
    m4_report r;
    m4_error err = {{0}};
    assert_int_equal(conform_on("text_tiny", golden, "text.layers.0.self_attn", &r, &err), -1);
    m4t_assert_contains(err.msg, golden);
    m4t_assert_contains(err.msg, "dataset \"inputs/attention_mask\" has shape [2, 5] but the config and inputs "
                                 "imply [2, 10]");
    m4_report_free(&r);
    free(golden);
}

/* Sets element `index` (row-major) of int64 dataset `dataset` of golden file `path` to `value`. */
static void set_int_element(const char *path, const char *dataset, size_t index, int64_t value) {
    hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(file >= 0);
    hid_t ds = H5Dopen2(file, dataset, H5P_DEFAULT), space = H5Dget_space(ds);
    assert_true(ds >= 0);
    hssize_t n = H5Sget_simple_extent_npoints(space);
    assert_true(n > (hssize_t)index);
    int64_t *values = malloc(sizeof *values * (size_t)n);
    assert_non_null(values);
    assert_true(H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values) >= 0);
    values[index] = value;
    assert_true(H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values) >= 0);
    free(values);
    H5Sclose(space), H5Dclose(ds), H5Fclose(file);
}

/* Issue #18, fault 8: an attention mask value other than 0 or 1 (here 7, at [1, 3]) was taken as
 * "a token" (the attention masks only zeros) and the case passed. It is refused before any row,
 * naming the file, the position and the value. */
static void conform_golden_mask_value_other_than_0_or_1_is_refused(void **state) {
    fixture *f = *state;
    const hsize_t dims[2] = {2, 10};
    char *golden = golden_with_dataset(f, "text_tiny", "inputs/attention_mask", true, 2, dims);
    m4_report r;
    m4_error err = {{0}};
    if (conform_on("text_tiny", golden, "text.layers.0.self_attn", &r, &err) != 0) fail_msg("%s", err.msg);
    m4_report_free(&r); /* zeros are mask values: accepted */
    set_int_element(golden, "inputs/attention_mask", 13, 7);
    assert_int_equal(conform_on("text_tiny", golden, "text.layers.0.self_attn", &r, &err), -1);
    m4t_assert_contains(err.msg, golden);
    m4t_assert_contains(err.msg, "inputs/attention_mask[1, 3] is 7: mask values are 0 (padding) or 1 (a token)");
    assert_int_equal(r.n, 0);
    m4_report_free(&r);
    free(golden);
}

/* Reported in issue #9 (reading harness/conform.c): the runner never checked its buffers'
 * allocations (a failed one was handed to the backend as NULL, to write through), and sized them
 * from the case's inputs with unchecked int64 products. A well-formed case whose input_ids are
 * [1, 6144] (the rest of the file tiny) implies attention weights of B·H·S·S = 1·4·6144·6144 =
 * 150,994,944 floats (604 MB), more than any dataset the runner reads may hold, so nothing could
 * be compared with them. Before the fix the runner allocated them, ran the attention at S = 6144,
 * and the rows only failed afterwards on the shapes of their datasets. Now every buffer's element
 * count is computed with overflow checks and bounded by M4_GOLDEN_MAX_ELEMENTS before malloc, and
 * every malloc is checked: the attention's rows are ERRORs naming the file, the dataset and the
 * implied shape, the backend does not run, and the run goes on to the next rows. */
static void conform_golden_buffer_over_the_limit_is_an_error_row(void **state) {
    fixture *f = *state;
    const hsize_t S = 6144, ids[2] = {1, S}, in[3] = {1, S, 64};
    char *golden = golden_with_dataset(f, "text_tiny", "inputs/input_ids", true, 2, ids);
    replace_dataset(golden, "inputs/position_ids", true, 2, ids);
    replace_dataset(golden, "inputs/attention_mask", true, 2, ids);
    replace_dataset(golden, "text.layers.0.self_attn/in", false, 3, in);
    m4_report r;
    m4_error err = {{0}};
    if (conform_on("text_tiny", golden, "text.layers.0.*", &r, &err) != 0) fail_msg("%s", err.msg);
    static const char *const attention_rows[] = {"text.layers.0.self_attn", "text.layers.0.self_attn.attn_weights",
                                                 "text.layers.0.self_attn.q_proj"};
    for (size_t i = 0; i < sizeof attention_rows / sizeof *attention_rows; i++) {
        const m4_result *row = NULL;
        for (size_t k = 0; k < r.n; k++)
            if (strcmp(r.results[k].name, attention_rows[i]) == 0) row = &r.results[k];
        if (!row) fail_msg("no row %s", attention_rows[i]);
        if (row->status != M4_RESULT_ERROR)
            fail_msg("%s is %s, not ERROR (%s)", attention_rows[i], m4_result_status_name(row->status), row->message);
        m4t_assert_contains(row->message, golden);
        m4t_assert_contains(row->message, "dataset \"text.layers.0.self_attn/attn_weights\": the config and inputs "
                                          "imply shape [1, 4, 6144, 6144] (150994944 elements), more than the "
                                          "134217728-element limit (M4_GOLDEN_MAX_ELEMENTS)");
    }
    /* the run went on: the rows after the attention ran (and failed on their own datasets' shapes) */
    const m4_result *last = &r.results[r.n - 1];
    assert_string_equal(last->name, "text.layers.0.mlp");
    assert_int_equal(last->status, M4_RESULT_ERROR);
    m4t_assert_contains(last->message, "has shape [2, 10, 64] but the config and inputs imply [1, 6144, 64]");
    assert_int_equal(r.n_error, r.n);
    m4_report_free(&r);
    remove(golden);
    free(golden);
}

/* ---- long paths in messages (issue #18, fault 7) ------------------------------------------ */

/* m4_error holds 1024 bytes: a 2000-character image path filled it, and the reason, which comes
 * last, was cut off ("PATH…" and nothing after). A message too long now keeps its start and its
 * end, joined by "…", so the reason survives; so does m4_fail_context's prefix. */
static void long_path_keeps_the_reason(void **state) {
    fixture *f = *state;
    char path[2100];
    int n = snprintf(path, sizeof path, "%s/missing", f->dir);
    while (n < 1990) n += snprintf(path + n, sizeof path - (size_t)n, "/%.150s", "component-of-a-long-path-"
                                   "................................................................"
                                   "...............................................................");
    n += snprintf(path + n, sizeof path - (size_t)n, "/x.png");
    assert_true(n >= 2000 && (size_t)n < sizeof path);
    m4_image img;
    m4_error err = {{0}};
    assert_int_equal(m4_image_load(path, &img, &err), -1);
    assert_true(strlen(err.msg) < sizeof err.msg);
    assert_memory_equal(err.msg, path, 200); /* the path's start */
    m4t_assert_contains(err.msg, "\u2026");
    static const char reason[] = "/x.png: cannot open the image: No such file or directory";
    size_t len = strlen(err.msg);
    assert_true(len > sizeof reason);
    assert_string_equal(err.msg + len - (sizeof reason - 1), reason);
    m4_fail_context(&err, "message 3 chunk 1");
    assert_memory_equal(err.msg, "message 3 chunk 1: ", 19);
    len = strlen(err.msg);
    assert_string_equal(err.msg + len - (sizeof reason - 1), reason);
}

/* ---- the golden's recorded config against the model's (issue #18, fault 3) ---------------- */

/* Writes root attribute `name` of `path` as the generator does (golden/generate.py set_str_attr:
 * a scalar fixed-length NUL-terminated string), replacing it. */
static void set_root_attr(const char *path, const char *name, const char *value) {
    hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(file >= 0);
    if (H5Aexists(file, name) > 0) assert_true(H5Adelete(file, name) >= 0);
    hid_t type = H5Tcopy(H5T_C_S1), space = H5Screate(H5S_SCALAR);
    H5Tset_size(type, strlen(value) + 1);
    H5Tset_strpad(type, H5T_STR_NULLTERM);
    hid_t attr = H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(attr >= 0);
    assert_true(H5Awrite(attr, type, value) >= 0);
    H5Aclose(attr), H5Sclose(space), H5Tclose(type), H5Fclose(file);
}

/* A copy of text_tiny's golden whose config_json is the model's config.json with `key` set to
 * `value` (a JSON text), or `whole` as config_json when given. */
static char *golden_with_config(const fixture *f, const char *key, const char *value, const char *whole) {
    char *golden = golden_copy(f, "text_tiny");
    if (whole) {
        set_root_attr(golden, "config_json", whole);
        return golden;
    }
    char *config = m4t_source_path("golden/cases/text_tiny/model/config.json");
    json_t *root = json_load_file(config, 0, NULL), *v = json_loads(value, JSON_DECODE_ANY, NULL);
    assert_non_null(root);
    assert_non_null(v);
    assert_int_equal(json_object_set_new(root, key, v), 0);
    char *text = json_dumps(root, JSON_INDENT(2));
    set_root_attr(golden, "config_json", text);
    free(text), json_decref(root), free(config);
    return golden;
}

/* Before issue #18 the golden's config_json was never compared with the model: a golden claiming
 * hidden_size 128 (or one layer, or holding no JSON at all) passed 38/38 against the text_tiny
 * model, and a model that did not match its golden failed 34 rows with budget% 14090871. Now the
 * run is refused before any row, naming every differing field the forward pass reads with both
 * values. */
static void conform_golden_of_another_model_is_refused(void **state) {
    fixture *f = *state;
    const struct {
        const char *key, *value, *whole, *expected;
    } cases[] = {
        {"hidden_size", "128", NULL, "was made with hidden_size = 128, the model has 64 (the model: "},
        {"num_hidden_layers", "1", NULL, "was made with num_hidden_layers = 1, the model has 2 (the model: "},
        {"rope_parameters", "{\"rope_type\": \"yarn\", \"rope_theta\": 10000.0, \"factor\": 4.0, "
                            "\"original_max_position_embeddings\": 64, \"mscale\": 1.0}",
         NULL, "was made with rope_parameters.mscale_all_dim = absent, the model has 1; "
               "rope_parameters.llama_4_scaling_beta = absent, the model has 0.1 (the model: "},
        {NULL, NULL, "{\"model_type\": \"mistral4\", \"hidden_size\": ", " (config_json): invalid JSON at line 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *golden = golden_with_config(f, cases[i].key, cases[i].value, cases[i].whole);
        m4_report r;
        m4_error err = {{0}};
        if (conform_on("text_tiny", golden, NULL, &r, &err) != -1) fail_msg("case %zu ran: %d rows", i, (int)r.n);
        m4t_assert_contains(err.msg, golden);
        m4t_assert_contains(err.msg, cases[i].expected);
        assert_int_equal(r.n, 0); /* no row ran */
        m4_report_free(&r);
        remove(golden);
        free(golden);
    }
}

/* A field the forward pass does not read (the eos ids: generation only) is a warning in the report;
 * the rows still run and pass. */
static void conform_golden_other_eos_ids_only_warn(void **state) {
    fixture *f = *state;
    char *golden = golden_with_config(f, "eos_token_id", "[2, 7]", NULL);
    m4_report r;
    m4_error err = {{0}};
    if (conform_on("text_tiny", golden, "text.norm", &r, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(r.n_pass, 1);
    m4t_assert_contains(r.warnings, golden);
    m4t_assert_contains(r.warnings, "was made with eos_token_id = [2, 7], the model has [2] (the model: ");
    m4t_assert_contains(r.warnings, "fields the forward pass does not read");
    /* a CI job reads it from the JSON report too */
    char *json = m4t_join(f->dir, "r.json");
    if (m4_report_write_json(&r, json, &err) != 0) fail_msg("%s", err.msg);
    json_error_t jerr;
    json_t *root = json_load_file(json, 0, &jerr);
    assert_non_null(root);
    const char *warnings = json_string_value(json_object_get(root, "warnings"));
    assert_non_null(warnings);
    assert_string_equal(warnings, r.warnings);
    json_decref(root);
    free(json);
    m4_report_free(&r);
    free(golden);
}

static void count_difference(const m4_config_difference *d, void *calls) {
    (void)d;
    ++*(int *)calls;
}

/* The comparison cannot pass over a field its table does not list: the structs are also compared
 * whole, with the listed fields made equal. Here the bytes after text.norm_topk_prob (padding
 * before the double that follows) stand for such a field. */
static void config_compare_reports_bytes_no_field_covers(void **state) {
    (void)state;
    char *json = tiny_config("", "");
    m4_config a, b;
    m4_error err = {{0}};
    assert_int_equal(m4_config_parse(json, "a.json", &a, &err), 0);
    assert_int_equal(m4_config_parse(json, "b.json", &b, &err), 0); /* another source: not a difference */
    int calls = 0;
    assert_int_equal(m4_config_compare(&a, &b, count_difference, &calls), 0);
    assert_int_equal(calls, 0);
    const size_t gap = offsetof(m4_config, text.norm_topk_prob) + sizeof(bool);
    assert_true(gap < offsetof(m4_config, text.routed_scaling_factor));
    ((unsigned char *)&b)[gap] ^= 1;
    assert_int_equal(m4_config_compare(&a, &b, count_difference, &calls), 1);
    assert_int_equal(calls, 1);
    free(json);
}

/* ---- the report writers ------------------------------------------------------------------- */

/* A report of two rows, as the runner fills it. */
static m4_report small_report(void) {
    m4_report r = {.n = 2, .cap = 2, .case_name = "crafted", .golden_path = "crafted.h5", .backend = "ref",
                   .scale_rule = "base", .first_divergence = 1, .n_pass = 1, .n_fail = 1};
    r.results = calloc(2, sizeof *r.results);
    assert_non_null(r.results);
    for (int i = 0; i < 2; i++) {
        m4_result *x = &r.results[i];
        snprintf(x->name, sizeof x->name, "text.layers.%d.mlp", i);
        snprintf(x->shape, sizeof x->shape, "[2, 10, 64]");
        x->status = i ? M4_RESULT_FAIL : M4_RESULT_PASS;
        x->topk_mismatches = -1;
    }
    return r;
}

static char *read_text(const char *path) {
    FILE *file = fopen(path, "rb");
    if (!file) return NULL;
    char *text = calloc(1, 1 << 16);
    assert_non_null(text);
    assert_true(fread(text, 1, (1 << 16) - 1, file) < (1 << 16) - 1);
    fclose(file);
    return text;
}

static int entries_in(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* Reported in issue #9: the writers wrote FILE.tmp and renamed it over FILE, so a file of that
 * name (someone else's, or another writer's) was overwritten, then renamed away. Now the
 * temporary file has a unique name (created exclusively) and nothing else in the folder is touched. */
static void report_writers_leave_a_file_named_like_the_old_temporary_alone(void **state) {
    fixture *f = *state;
    char *json = m4t_join(f->dir, "r.json"), *xml = m4t_join(f->dir, "r.xml");
    char *json_tmp = m4t_join(f->dir, "r.json.tmp"), *xml_tmp = m4t_join(f->dir, "r.xml.tmp");
    m4t_write_text(json_tmp, "not ours");
    m4t_write_text(xml_tmp, "not ours either");
    m4_report r = small_report();
    m4_error err = {{0}};
    const mode_t saved_umask = umask(022); /* the mode checked below */
    if (m4_report_write_json(&r, json, &err) != 0) fail_msg("%s", err.msg);
    if (m4_report_write_junit(&r, xml, &err) != 0) fail_msg("%s", err.msg);
    umask(saved_umask);
    char *text = read_text(json_tmp);
    assert_non_null(text);
    assert_string_equal(text, "not ours");
    free(text);
    text = read_text(xml_tmp);
    assert_non_null(text);
    assert_string_equal(text, "not ours either");
    free(text);
    text = read_text(json);
    assert_non_null(text);
    m4t_assert_contains(text, "\"component\": \"text.layers.1.mlp\"");
    free(text);
    text = read_text(xml);
    assert_non_null(text);
    m4t_assert_contains(text, "</testsuites>");
    free(text);
    assert_int_equal(entries_in(f->dir), 4); /* no temporary file left */
    struct stat st;
    assert_int_equal(stat(json, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    m4_report_free(&r);
    free(json), free(xml), free(json_tmp), free(xml_tmp);
}

/* A write that fails part-way (here the file-size limit, as a full disk would) is an error naming
 * the report and the cause; the previous report stays as it was and no temporary file is left.
 * So is a folder that does not exist. */
static void report_write_error_leaves_the_previous_report(void **state) {
    fixture *f = *state;
    char *json = m4t_join(f->dir, "r.json"), *xml = m4t_join(f->dir, "r.xml");
    m4t_write_text(json, "previous JSON report");
    m4t_write_text(xml, "previous JUnit report");
    m4_report r = small_report();
    m4_error json_err = {{0}}, xml_err = {{0}};

    struct rlimit saved;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    void (*saved_handler)(int) = signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG */
    struct rlimit small = {.rlim_cur = 64, .rlim_max = saved.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    int json_rc = m4_report_write_json(&r, json, &json_err);
    int xml_rc = m4_report_write_junit(&r, xml, &xml_err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, saved_handler);

    assert_int_equal(json_rc, -1);
    m4t_assert_contains(json_err.msg, json);
    m4t_assert_contains(json_err.msg, "cannot write the JSON report: file too large (EFBIG");
    m4t_assert_contains(json_err.msg, "after 64 bytes: nothing written");
    assert_int_equal(xml_rc, -1);
    m4t_assert_contains(xml_err.msg, xml);
    m4t_assert_contains(xml_err.msg, "cannot write the JUnit report: file too large (EFBIG");
    char *text = read_text(json);
    assert_string_equal(text, "previous JSON report");
    free(text);
    text = read_text(xml);
    assert_string_equal(text, "previous JUnit report");
    free(text);
    assert_int_equal(entries_in(f->dir), 2);

    char *missing = m4t_join(f->dir, "missing/r.json");
    assert_int_equal(m4_report_write_json(&r, missing, &json_err), -1);
    m4t_assert_contains(json_err.msg, missing);
    m4t_assert_contains(json_err.msg, "cannot create a temporary file beside it (No such file or directory)");
    assert_int_equal(entries_in(f->dir), 2);
    m4_report_free(&r);
    free(json), free(xml), free(missing);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(golden_huge_extent_is_refused),
        T(golden_extent_over_the_limit_is_refused),
        T(golden_null_dataspace_is_refused),
        T(golden_attribute_vlen_string_array_is_refused),
        T(golden_attribute_fixed_string_array_is_refused),
        T(golden_other_element_types_are_refused),
        T(golden_contiguous_storage_that_does_not_fit_is_refused),
        T(golden_chunks_larger_than_the_dataset_are_refused),
        T(golden_variable_length_attribute_is_refused),
        T(config_two_million_layers_is_refused),
        T(weights_patch_merger_width_overflow_is_refused),
        T(config_file_over_the_size_limit_is_refused),
        T(index_over_the_size_limit_is_refused),
        T(inputs_that_are_not_regular_files_are_refused),
        T(tokenizer_file_over_the_size_limit_is_refused),
        T(conform_golden_shape_mismatch_is_an_error_row),
        T(conform_golden_short_attention_mask_is_refused),
        T(conform_golden_mask_value_other_than_0_or_1_is_refused),
        T(conform_golden_buffer_over_the_limit_is_an_error_row),
        T(long_path_keeps_the_reason),
        T(conform_golden_of_another_model_is_refused),
        T(conform_golden_other_eos_ids_only_warn),
        T(config_compare_reports_bytes_no_field_covers),
        T(report_writers_leave_a_file_named_like_the_old_temporary_alone),
        T(report_write_error_leaves_the_previous_report),
    };
    /* M4T_FILTER=name runs one test (to check a fix by reverting it). */
    if (getenv("M4T_FILTER")) cmocka_set_test_filter(getenv("M4T_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
