/* Regression tests for the bugs the fuzzers found (issue #9; tests/fuzz/, docs/INPUTS.md), one
 * test each, named after what the input did, and for the input limits added with them. Each bug
 * crashed (or, under ASan/UBSan, reported a memory error or undefined behaviour) before its fix;
 * now it must fail cleanly with a message. The inputs are rebuilt here rather than committed, so
 * each test says in code what made it crash. */
#include "testutil.h"

#include <dirent.h>
#include <hdf5.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat.h"
#include "config.h"
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

/* Copies committed case `name`'s golden into the fixture's folder and replaces its dataset
 * `dataset` by one of shape dims[ndim] (zeros, int64 or float32). */
static char *golden_with_dataset(const fixture *f, const char *name, const char *dataset, bool as_int, int ndim,
                                 const hsize_t *dims) {
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
        T(config_two_million_layers_is_refused),
        T(weights_patch_merger_width_overflow_is_refused),
        T(config_file_over_the_size_limit_is_refused),
        T(index_over_the_size_limit_is_refused),
        T(inputs_that_are_not_regular_files_are_refused),
        T(tokenizer_file_over_the_size_limit_is_refused),
        T(conform_golden_shape_mismatch_is_an_error_row),
        T(conform_golden_short_attention_mask_is_refused),
        T(conform_golden_buffer_over_the_limit_is_an_error_row),
        T(report_writers_leave_a_file_named_like_the_old_temporary_alone),
        T(report_write_error_leaves_the_previous_report),
    };
    /* M4T_FILTER=name runs one test (to check a fix by reverting it). */
    if (getenv("M4T_FILTER")) cmocka_set_test_filter(getenv("M4T_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
