/* The safetensors reader: small checkpoints written byte by byte come back with the right values
 * (one file, sharded, opened by folder, file or index), and every malformed input fails with one
 * message that names the file and the problem — never a crash (the debug preset runs ASan+UBSan). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"

/* ------------------------------------------------------------------------------------------------
 * Helpers */

typedef m4t_dir_fixture fixture; /* one fresh temporary folder per test */

/* Opening `path` must fail, leave *out NULL, and say each of the (NULL-terminated) phrases. */
static void expect_open_fails(const char *path, ...) {
    m4_checkpoint *c = (m4_checkpoint *)(uintptr_t)1;
    m4_error err = {{0}};
    int rc = m4_checkpoint_open(path, &c, &err);
    if (rc == 0) {
        m4_checkpoint_close(c);
        fail_msg("opening %s succeeded; expected a failure", path);
    }
    assert_int_equal(rc, -1);
    assert_null(c);
    assert_true(strlen(err.msg) > 0);
    if (getenv("M4T_SHOW_ERRORS")) print_message("%s\n", err.msg);
    va_list ap;
    va_start(ap, path);
    for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;)
        m4t_assert_contains(err.msg, needle);
    va_end(ap);
}

/* A raw file: header text padded with spaces to a multiple of 8 bytes (as safetensors writers do,
 * so that the data section stays aligned), then `data_len` zero bytes of data. */
static char *write_raw(const char *dir, const char *name, const char *header, size_t data_len) {
    char padded[1024];
    size_t n = strlen(header);
    assert_true(n + 8 < sizeof padded);
    memcpy(padded, header, n);
    while (n % 8) padded[n++] = ' ';
    padded[n] = 0;
    char *path = m4t_join(dir, name);
    unsigned char *data = calloc(data_len ? data_len : 1, 1);
    assert_non_null(data);
    m4t_write_raw_safetensors(path, n, padded, data, data_len);
    free(data);
    return path;
}

/* The same without padding. */
static char *write_unpadded(const char *dir, const char *name, const char *header, size_t data_len) {
    char *path = m4t_join(dir, name);
    unsigned char *data = calloc(data_len ? data_len : 1, 1);
    assert_non_null(data);
    m4t_write_raw_safetensors(path, strlen(header), header, data, data_len);
    free(data);
    return path;
}

static m4_checkpoint *open_ok(const char *path) {
    m4_checkpoint *c = NULL;
    m4_error err = {{0}};
    int rc = m4_checkpoint_open(path, &c, &err);
    if (rc != 0) fail_msg("opening %s failed: %s", path, err.msg);
    assert_non_null(c);
    return c;
}

static void write_index(const char *dir, const char *weight_map_json) {
    char *path = m4t_join(dir, "model.safetensors.index.json");
    size_t n = strlen(weight_map_json) + 256;
    char *text = malloc(n);
    assert_non_null(text);
    snprintf(text, n, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": %s}", weight_map_json);
    m4t_write_text(path, text);
    free(text);
    free(path);
}

/* ------------------------------------------------------------------------------------------------
 * A small valid checkpoint with every dtype */

enum { N_ROWS = 2, N_COLS = 3 };

typedef struct {
    int64_t i64[3];
    float f32[N_ROWS * N_COLS];
    float scalar;
    int32_t i32[2];
    uint16_t bf16[4];
    uint16_t f16[4];
    uint8_t f8[3 * 5];
} sample_data;

static void fill_sample(sample_data *d) {
    d->i64[0] = -5, d->i64[1] = (int64_t)1 << 40, d->i64[2] = 7;
    for (int i = 0; i < N_ROWS * N_COLS; i++) d->f32[i] = 0.25f * (float)i - 1.0f;
    d->scalar = 3.5f;
    d->i32[0] = -123, d->i32[1] = 456;
    const float bf[4] = {1.0f, -2.5f, 0.15625f, 1024.0f};
    for (int i = 0; i < 4; i++) d->bf16[i] = m4t_f32_to_bf16(bf[i]);
    d->f16[0] = 0x3C00, d->f16[1] = 0xC100, d->f16[2] = 0x0001, d->f16[3] = 0x7BFF;
    for (int i = 0; i < 15; i++) d->f8[i] = m4t_f32_to_f8e4m3((float)(i - 7) * 0.5f);
}

/* Element-size-aligned order (8, 4, 4, 4, 2, 2, 1 bytes) so every offset is aligned. */
static size_t sample_tensors(const sample_data *d, m4t_tensor *t) {
    size_t n = 0;
    t[n++] = (m4t_tensor){"tok.ids", "I64", 1, {3}, d->i64, sizeof d->i64};
    t[n++] = (m4t_tensor){"a.weight", "F32", 2, {N_ROWS, N_COLS}, d->f32, sizeof d->f32};
    t[n++] = (m4t_tensor){"a.weight_scale_inv", "F32", 0, {0}, &d->scalar, sizeof d->scalar};
    t[n++] = (m4t_tensor){"pos", "I32", 1, {2}, d->i32, sizeof d->i32};
    t[n++] = (m4t_tensor){"norm.weight", "BF16", 1, {4}, d->bf16, sizeof d->bf16};
    t[n++] = (m4t_tensor){"half", "F16", 2, {2, 2}, d->f16, sizeof d->f16};
    t[n++] = (m4t_tensor){"empty", "F32", 2, {4, 0}, NULL, 0};
    t[n++] = (m4t_tensor){"experts.gate_up_proj", "F8_E4M3", 3, {1, 3, 5}, d->f8, sizeof d->f8};
    return n;
}

/* The tensors of sample_tensors, as the loader must report them. */
static void check_sample(const m4_checkpoint *c, const sample_data *d, const char *file) {
    assert_int_equal(m4_checkpoint_tensor_count(c), 8);
    uint64_t bytes = sizeof d->i64 + sizeof d->f32 + sizeof d->scalar + sizeof d->i32 +
                     sizeof d->bf16 + sizeof d->f16 + sizeof d->f8;
    assert_int_equal(m4_checkpoint_data_bytes(c), bytes);

    /* Sorted by name (strcmp order). */
    static const char *sorted[] = {"a.weight", "a.weight_scale_inv", "empty", "experts.gate_up_proj",
                                   "half", "norm.weight", "pos", "tok.ids"};
    for (size_t i = 0; i < 8; i++) {
        const m4_tensor *t = m4_checkpoint_tensor(c, i);
        assert_non_null(t);
        assert_string_equal(t->name, sorted[i]);
        assert_ptr_equal(m4_checkpoint_find(c, sorted[i]), t);
        if (file) assert_string_equal(t->file, file);
    }
    assert_null(m4_checkpoint_tensor(c, 8));
    assert_null(m4_checkpoint_find(c, "a"));
    assert_null(m4_checkpoint_find(c, "a.weight "));
    assert_null(m4_checkpoint_find(c, "zzz"));
    assert_null(m4_checkpoint_find(c, ""));

    const m4_tensor *t = m4_checkpoint_find(c, "a.weight");
    assert_int_equal(t->dtype, M4_DTYPE_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], N_ROWS);
    assert_int_equal(t->shape[1], N_COLS);
    assert_int_equal(t->numel, N_ROWS * N_COLS);
    assert_int_equal(t->nbytes, sizeof d->f32);
    assert_memory_equal(t->data, d->f32, sizeof d->f32);
    float out[16];
    m4_convert_to_f32(t->dtype, t->data, (size_t)t->numel, 1.0f, out);
    for (int i = 0; i < N_ROWS * N_COLS; i++) assert_true(out[i] == 0.25f * (float)i - 1.0f);

    t = m4_checkpoint_find(c, "a.weight_scale_inv");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->numel, 1);
    assert_int_equal(t->nbytes, 4);
    m4_convert_to_f32(t->dtype, t->data, 1, 1.0f, out);
    assert_true(out[0] == 3.5f);

    t = m4_checkpoint_find(c, "tok.ids");
    assert_int_equal(t->dtype, M4_DTYPE_I64);
    assert_int_equal(t->numel, 3);
    assert_memory_equal(t->data, d->i64, sizeof d->i64);

    t = m4_checkpoint_find(c, "pos");
    assert_int_equal(t->dtype, M4_DTYPE_I32);
    assert_memory_equal(t->data, d->i32, sizeof d->i32);

    t = m4_checkpoint_find(c, "norm.weight");
    assert_int_equal(t->dtype, M4_DTYPE_BF16);
    assert_int_equal(t->nbytes, 8);
    m4_convert_to_f32(t->dtype, t->data, 4, 1.0f, out);
    assert_true(out[0] == 1.0f && out[1] == -2.5f && out[2] == 0.15625f && out[3] == 1024.0f);

    t = m4_checkpoint_find(c, "half");
    assert_int_equal(t->dtype, M4_DTYPE_F16);
    assert_int_equal(t->ndim, 2);
    m4_convert_to_f32(t->dtype, t->data, 4, 1.0f, out);
    assert_true(out[0] == 1.0f && out[1] == -2.5f && out[2] == 0x1p-24f && out[3] == 65504.0f);

    t = m4_checkpoint_find(c, "empty");
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 4);
    assert_int_equal(t->shape[1], 0);
    assert_int_equal(t->numel, 0);
    assert_int_equal(t->nbytes, 0);

    t = m4_checkpoint_find(c, "experts.gate_up_proj");
    assert_int_equal(t->dtype, M4_DTYPE_F8_E4M3);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->shape[0], 1);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->shape[2], 5);
    assert_int_equal(t->nbytes, 15);
    m4_convert_to_f32(t->dtype, t->data, 15, 2.0f, out);
    for (int i = 0; i < 15; i++) assert_true(out[i] == (float)(i - 7)); /* (i-7)/2 exact, × 2 */
}

static void single_file_by_file_and_folder(void **state) {
    fixture *f = *state;
    sample_data d;
    fill_sample(&d);
    m4t_tensor t[8];
    size_t n = sample_tensors(&d, t);
    char *path = m4t_join(f->dir, "model.safetensors");
    m4t_write_safetensors(path, t, n);

    m4_checkpoint *c = open_ok(path);
    check_sample(c, &d, path);
    assert_string_equal(m4_checkpoint_path(c), path);
    m4_checkpoint_close(c);

    c = open_ok(f->dir); /* folder: finds model.safetensors */
    check_sample(c, &d, path);
    assert_string_equal(m4_checkpoint_path(c), f->dir);
    m4_checkpoint_close(c);
    free(path);
}

static void single_file_any_name(void **state) {
    fixture *f = *state;
    sample_data d;
    fill_sample(&d);
    m4t_tensor t[8];
    size_t n = sample_tensors(&d, t);
    char *path = m4t_join(f->dir, "consolidated.safetensors");
    m4t_write_safetensors(path, t, n);
    m4_checkpoint *c = open_ok(path);
    check_sample(c, &d, path);
    m4_checkpoint_close(c);
    free(path);
}

/* Two shards + model.safetensors.index.json, opened by folder and by index path. */
/* The sample in two shards (its first 3 tensors, the rest) and an index naming them, in f->dir;
 * the shards' paths into *s1, *s2 (malloc'd); returns the tensor count. */
static size_t write_sharded_sample(const fixture *f, sample_data *d, char **s1, char **s2) {
    fill_sample(d);
    m4t_tensor t[8];
    size_t n = sample_tensors(d, t);
    *s1 = m4t_join(f->dir, "model-00001-of-00002.safetensors");
    *s2 = m4t_join(f->dir, "model-00002-of-00002.safetensors");
    m4t_write_safetensors(*s1, t, 3);
    m4t_write_safetensors(*s2, t + 3, n - 3);
    write_index(f->dir,
                "{\"tok.ids\": \"model-00001-of-00002.safetensors\","
                " \"a.weight\": \"model-00001-of-00002.safetensors\","
                " \"a.weight_scale_inv\": \"model-00001-of-00002.safetensors\","
                " \"pos\": \"model-00002-of-00002.safetensors\","
                " \"norm.weight\": \"model-00002-of-00002.safetensors\","
                " \"half\": \"model-00002-of-00002.safetensors\","
                " \"empty\": \"model-00002-of-00002.safetensors\","
                " \"experts.gate_up_proj\": \"model-00002-of-00002.safetensors\"}");
    return n;
}

static void sharded_by_folder_and_index(void **state) {
    fixture *f = *state;
    sample_data d;
    char *s1, *s2;
    const size_t n = write_sharded_sample(f, &d, &s1, &s2);
    char *index = m4t_join(f->dir, "model.safetensors.index.json");

    for (int how = 0; how < 2; how++) {
        m4_checkpoint *c = open_ok(how == 0 ? f->dir : index);
        check_sample(c, &d, NULL);
        assert_string_equal(m4_checkpoint_find(c, "tok.ids")->file, s1);
        assert_string_equal(m4_checkpoint_find(c, "a.weight")->file, s1);
        assert_string_equal(m4_checkpoint_find(c, "pos")->file, s2);
        assert_string_equal(m4_checkpoint_find(c, "experts.gate_up_proj")->file, s2);
        m4_checkpoint_close(c);
    }
    /* Relative paths: the index in the current folder (its folder is then "."). */
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(f->dir), 0);
    m4_checkpoint *rel = NULL;
    m4_error err = {{0}};
    int rc = m4_checkpoint_open("model.safetensors.index.json", &rel, &err);
    assert_int_equal(chdir(cwd), 0);
    if (rc != 0) fail_msg("relative index: %s", err.msg);
    check_sample(rel, &d, NULL);
    assert_string_equal(m4_checkpoint_find(rel, "pos")->file, "./model-00002-of-00002.safetensors");
    m4_checkpoint_close(rel);

    /* A shard on its own is a valid single-file checkpoint too. */
    m4_checkpoint *c = open_ok(s2);
    assert_int_equal(m4_checkpoint_tensor_count(c), n - 3);
    assert_null(m4_checkpoint_find(c, "a.weight"));
    m4_checkpoint_close(c);
    free(index);
    free(s1);
    free(s2);
}

/* Resident weights (m4_checkpoint_make_resident): a sharded checkpoint's tensors move out of the
 * file mappings into anonymous memory, every byte as the file holds it, every tensor readable
 * until close; the data pointers change (the files are no longer mapped). */
static void sharded_made_resident(void **state) {
    fixture *f = *state;
    sample_data d;
    char *s1, *s2;
    const size_t n = write_sharded_sample(f, &d, &s1, &s2);
    m4_checkpoint *mapped = open_ok(f->dir), *resident = open_ok(f->dir);
    const size_t count = m4_checkpoint_tensor_count(resident);
    assert_int_equal(count, n);
    const void **before = malloc(sizeof *before * (count ? count : 1));
    for (size_t i = 0; i < count; i++) before[i] = m4_checkpoint_tensor(resident, i)->data;
    m4_error err = {{0}};
    if (m4_checkpoint_make_resident(resident, &err) != 0) fail_msg("%s", err.msg);
    check_sample(resident, &d, NULL);
    for (size_t i = 0; i < count; i++) {
        const m4_tensor *a = m4_checkpoint_tensor(mapped, i), *b = m4_checkpoint_tensor(resident, i);
        assert_string_equal(a->name, b->name);
        assert_int_equal(a->nbytes, b->nbytes);
        if (a->nbytes) {
            assert_memory_equal(a->data, b->data, a->nbytes);
            assert_true(b->data != before[i]);
        }
    }
    free(before);
    m4_checkpoint_close(mapped), m4_checkpoint_close(resident);
    free(s1), free(s2);
}

/* With both an index and a model.safetensors in the folder the index wins. */
static void index_preferred_over_single_file(void **state) {
    fixture *f = *state;
    float a = 1.0f, b = 2.0f;
    m4t_tensor ta = {"a", "F32", 1, {1}, &a, 4}, tb = {"b", "F32", 1, {1}, &b, 4};
    char *single = m4t_join(f->dir, "model.safetensors");
    char *shard = m4t_join(f->dir, "model-00001-of-00001.safetensors");
    m4t_write_safetensors(single, &ta, 1);
    m4t_write_safetensors(shard, &tb, 1);
    write_index(f->dir, "{\"b\": \"model-00001-of-00001.safetensors\"}");
    m4_checkpoint *c = open_ok(f->dir);
    assert_int_equal(m4_checkpoint_tensor_count(c), 1);
    assert_non_null(m4_checkpoint_find(c, "b"));
    assert_null(m4_checkpoint_find(c, "a"));
    assert_string_equal(m4_checkpoint_find(c, "b")->file, shard);
    m4_checkpoint_close(c);
    free(single);
    free(shard);
}

/* Many tensors in scrambled order: find() and the sorted listing agree. */
static void many_tensors_sorted(void **state) {
    fixture *f = *state;
    enum { N = 300 };
    static char names[N][32];
    static float values[N];
    m4t_tensor t[N];
    for (int i = 0; i < N; i++) {
        int k = (i * 7919) % N; /* a permutation of 0..N-1 */
        snprintf(names[i], sizeof names[i], "layers.%d.w", k);
        values[i] = (float)k;
        t[i] = (m4t_tensor){names[i], "F32", 1, {1}, &values[i], 4};
    }
    char *path = m4t_join(f->dir, "model.safetensors");
    m4t_write_safetensors(path, t, N);
    m4_checkpoint *c = open_ok(path);
    assert_int_equal(m4_checkpoint_tensor_count(c), N);
    assert_int_equal(m4_checkpoint_data_bytes(c), 4 * N);
    for (size_t i = 1; i < N; i++)
        assert_true(strcmp(m4_checkpoint_tensor(c, i - 1)->name, m4_checkpoint_tensor(c, i)->name) < 0);
    for (int k = 0; k < N; k++) {
        char name[32];
        snprintf(name, sizeof name, "layers.%d.w", k);
        const m4_tensor *x = m4_checkpoint_find(c, name);
        assert_non_null(x);
        float v;
        memcpy(&v, x->data, 4);
        assert_true(v == (float)k);
    }
    m4_checkpoint_close(c);
    free(path);
}

/* A header with only __metadata__ is a valid, empty checkpoint. */
static void empty_checkpoint(void **state) {
    fixture *f = *state;
    char *path = write_raw(f->dir, "model.safetensors", "{\"__metadata__\":{\"format\":\"pt\"}}", 0);
    m4_checkpoint *c = open_ok(path);
    assert_int_equal(m4_checkpoint_tensor_count(c), 0);
    assert_int_equal(m4_checkpoint_data_bytes(c), 0);
    assert_null(m4_checkpoint_tensor(c, 0));
    assert_null(m4_checkpoint_find(c, "a"));
    m4_checkpoint_close(c);
    free(path);
}

static void close_null_is_harmless(void **state) {
    (void)state;
    m4_checkpoint_close(NULL);
}

/* ------------------------------------------------------------------------------------------------
 * Bad input: files and folders */

static void missing_file(void **state) {
    fixture *f = *state;
    char *path = m4t_join(f->dir, "nope.safetensors");
    expect_open_fails(path, path, "no such file or folder", NULL);
    free(path);
}

static void folder_without_model_files(void **state) {
    fixture *f = *state;
    char *other = m4t_join(f->dir, "config.json");
    m4t_write_text(other, "{}");
    expect_open_fails(f->dir, f->dir, "no model.safetensors or model.safetensors.index.json", NULL);
    free(other);
}

static void truncated_file(void **state) {
    fixture *f = *state;
    char *path = m4t_join(f->dir, "model.safetensors");
    m4t_write_file(path, "\x10\0\0\0\0", 5);
    expect_open_fails(path, path, "truncated", "5 bytes", NULL);
    m4t_write_file(path, "", 0);
    expect_open_fails(path, path, "truncated", "0 bytes", NULL);
    free(path);
}

static void header_length_past_eof(void **state) {
    fixture *f = *state;
    char *path = m4t_join(f->dir, "model.safetensors");
    m4t_write_raw_safetensors(path, 1000, "{}", NULL, 0);
    expect_open_fails(path, path, "header length 1000 runs past the end of the file", NULL);
    /* Exactly the 8 length bytes and nothing else, claiming one header byte. */
    m4t_write_raw_safetensors(path, 1, "", NULL, 0);
    expect_open_fails(path, path, "runs past the end of the file", NULL);
    free(path);
}

static void header_length_over_cap(void **state) {
    fixture *f = *state;
    char *path = m4t_join(f->dir, "model.safetensors");
    m4t_write_raw_safetensors(path, (uint64_t)M4_SAFETENSORS_MAX_HEADER + 1, "{}", NULL, 0);
    expect_open_fails(path, path, "exceeds the", "limit", NULL);
    m4t_write_raw_safetensors(path, UINT64_MAX, "{}", NULL, 0); /* would wrap 8 + N */
    expect_open_fails(path, path, "header length 18446744073709551615 exceeds", NULL);
    free(path);
}

static void invalid_json(void **state) {
    fixture *f = *state;
    char *path = write_raw(f->dir, "model.safetensors", "{\"a\": {\"dtype\": ", 0);
    expect_open_fails(path, path, "invalid JSON header", NULL);
    free(path);
    /* An empty header is not JSON either. */
    path = write_raw(f->dir, "empty.safetensors", "", 0);
    expect_open_fails(path, path, "invalid JSON header", NULL);
    free(path);
    /* Trailing garbage after the object. */
    path = write_raw(f->dir, "garbage.safetensors", "{} x", 0);
    expect_open_fails(path, path, "invalid JSON header", NULL);
    free(path);
}

static void header_not_object(void **state) {
    fixture *f = *state;
    char *path = write_raw(f->dir, "model.safetensors", "[1, 2, 3]", 0);
    expect_open_fails(path, path, "header is not a JSON object", NULL);
    free(path);
    path = write_raw(f->dir, "entry.safetensors", "{\"a\": [0, 4]}", 4);
    expect_open_fails(path, path, "\"a\"", "header entry is not an object", NULL);
    free(path);
    path = write_raw(f->dir, "meta.safetensors", "{\"__metadata__\": 3}", 0);
    expect_open_fails(path, path, "\"__metadata__\" is not an object", NULL);
    free(path);
}

static void entry_fields_missing_or_mistyped(void **state) {
    fixture *f = *state;
    static const char *headers[] = {
        "{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}",
        "{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}",
        "{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}",
        "{\"a\": {\"dtype\": 5, \"shape\": [1], \"data_offsets\": [0, 4]}}",
        "{\"a\": {\"dtype\": \"F32\", \"shape\": 1, \"data_offsets\": [0, 4]}}",
    };
    for (size_t i = 0; i < sizeof headers / sizeof *headers; i++) {
        char *path = write_raw(f->dir, "model.safetensors", headers[i], 4);
        expect_open_fails(path, path, "\"a\"", "needs string \"dtype\"", NULL);
        free(path);
    }
    char *path = write_raw(f->dir, "model.safetensors",
                           "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4);
    expect_open_fails(path, path, "\"a\"", "data_offsets must be two non-negative integers", NULL);
    free(path);
    path = write_raw(f->dir, "model.safetensors",
                     "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4);
    expect_open_fails(path, path, "\"a\"", "data_offsets must be two non-negative integers", NULL);
    free(path);
    path = write_raw(f->dir, "model.safetensors",
                     "{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4);
    expect_open_fails(path, path, "\"a\"", "shape[0] is not a non-negative integer", NULL);
    free(path);
    path = write_raw(f->dir, "model.safetensors",
                     "{\"a\": {\"dtype\": \"F32\", \"shape\": [1, 1.5], \"data_offsets\": [0, 4]}}", 4);
    expect_open_fails(path, path, "\"a\"", "shape[1] is not a non-negative integer", NULL);
    free(path);
    path = write_raw(f->dir, "model.safetensors",
                     "{\"a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], "
                     "\"data_offsets\": [0, 4]}}", 4);
    expect_open_fails(path, path, "\"a\"", "9 dimensions", NULL);
    free(path);
}

static void unknown_dtype(void **state) {
    fixture *f = *state;
    char *path = write_raw(f->dir, "model.safetensors",
                           "{\"w\": {\"dtype\": \"F8_E5M2\", \"shape\": [4], \"data_offsets\": [0, 4]}}", 4);
    expect_open_fails(path, path, "\"w\"", "unknown dtype \"F8_E5M2\"", NULL);
    free(path);
}

/* ------------------------------------------------------------------------------------------------
 * Bad input: offsets and sizes */

static void offsets_end_before_begin(void **state) {
    fixture *f = *state;
    char *path = write_raw(f->dir, "model.safetensors",
                           "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", 8);
    expect_open_fails(path, path, "\"w\"", "[8, 4] end before they begin", NULL);
    free(path);
}

static void offsets_overlap(void **state) {
    fixture *f = *state;
    char *path = write_raw(f->dir, "model.safetensors",
                           "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                           " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12);
    expect_open_fails(path, path, "\"b\"", "overlap", NULL);
    free(path);
    /* Two tensors sharing the same bytes exactly. */
    path = write_raw(f->dir, "same.safetensors",
                     "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                     " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8);
    expect_open_fails(path, path, "overlap", NULL);
    free(path);
}

static void offsets_gap(void **state) {
    fixture *f = *state;
    char *path = write_raw(f->dir, "model.safetensors",
                           "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                           " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [12, 20]}}", 20);
    expect_open_fails(path, path, "\"b\"", "gap", NULL);
    free(path);
    /* A gap at the very start of the data section. */
    path = write_raw(f->dir, "lead.safetensors",
                     "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12);
    expect_open_fails(path, path, "\"a\"", "gap", NULL);
    free(path);
}

static void data_past_eof(void **state) {
    fixture *f = *state;
    char *path = write_raw(f->dir, "model.safetensors",
                           "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 8);
    expect_open_fails(path, path, "\"a\"", "past the end of the data section", NULL);
    free(path);
}

static void trailing_bytes(void **state) {
    fixture *f = *state;
    char *path = write_raw(f->dir, "model.safetensors",
                           "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 12);
    expect_open_fails(path, path, "holds 12 bytes but its tensors cover 8", NULL);
    free(path);
    /* No tensors at all but data bytes. */
    path = write_raw(f->dir, "none.safetensors", "{}", 4);
    expect_open_fails(path, path, "holds 4 bytes but its tensors cover 0", NULL);
    free(path);
}

static void shape_size_mismatch(void **state) {
    fixture *f = *state;
    char *path = write_raw(f->dir, "model.safetensors",
                           "{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8);
    expect_open_fails(path, path, "\"a\"", "shape × F32 is 12 bytes but data_offsets span 8", NULL);
    free(path);
    path = write_raw(f->dir, "bf.safetensors",
                     "{\"a\": {\"dtype\": \"BF16\", \"shape\": [2, 2], \"data_offsets\": [0, 16]}}", 16);
    expect_open_fails(path, path, "\"a\"", "shape × BF16 is 8 bytes but data_offsets span 16", NULL);
    free(path);
}

static void duplicate_name_in_header(void **state) {
    fixture *f = *state;
    char *path = write_raw(f->dir, "model.safetensors",
                           "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                           " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8);
    expect_open_fails(path, path, "invalid JSON header", "duplicate", NULL);
    free(path);
}

static void shape_product_overflow(void **state) {
    fixture *f = *state;
    /* [2^40, 2^40]: 2^80 elements. */
    char *path = write_raw(f->dir, "model.safetensors",
                           "{\"a\": {\"dtype\": \"F32\", \"shape\": [1099511627776, 1099511627776], "
                           "\"data_offsets\": [0, 4]}}", 4);
    expect_open_fails(path, path, "\"a\"", "shape product overflows", NULL);
    free(path);
    /* [2^62, 2]: 2^63 elements fits uint64 but not int64. */
    path = write_raw(f->dir, "i64.safetensors",
                     "{\"a\": {\"dtype\": \"I32\", \"shape\": [4611686018427387904, 2], "
                     "\"data_offsets\": [0, 4]}}", 4);
    expect_open_fails(path, path, "\"a\"", "overflows", NULL);
    free(path);
    /* 2^62 elements of 4 bytes: the element count fits, the byte count does not. */
    path = write_raw(f->dir, "bytes.safetensors",
                     "{\"a\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904], "
                     "\"data_offsets\": [0, 4]}}", 4);
    expect_open_fails(path, path, "\"a\"", "byte size overflows", NULL);
    free(path);
    /* A zero dimension makes the product 0 whatever follows: not an overflow. */
    path = write_raw(f->dir, "zero.safetensors",
                     "{\"a\": {\"dtype\": \"F32\", \"shape\": [0, 4611686018427387904, 4611686018427387904], "
                     "\"data_offsets\": [0, 0]}}", 0);
    m4_checkpoint *c = open_ok(path);
    assert_int_equal(m4_checkpoint_find(c, "a")->numel, 0);
    m4_checkpoint_close(c);
    free(path);
}

static void misaligned_offset(void **state) {
    fixture *f = *state;
    char *path = write_raw(f->dir, "model.safetensors",
                              "{\"h\": {\"dtype\": \"BF16\", \"shape\": [1], \"data_offsets\": [0, 2]},"
                              " \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [2, 6]}}", 6);
    expect_open_fails(path, path, "\"w\"", "data offset 2", "is not aligned to its 4-byte elements", NULL);
    free(path);
    path = write_raw(f->dir, "i64.safetensors",
                        "{\"h\": {\"dtype\": \"I32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                        " \"w\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [4, 12]}}", 12);
    expect_open_fails(path, path, "\"w\"", "data offset 4", "8-byte elements", NULL);
    free(path);
}

/* An unpadded header puts the data section at an odd file offset: an F32 tensor at data offset 0
 * would be read through a misaligned pointer (undefined behaviour), so it is refused. Single-byte
 * tensors have no alignment to keep and are accepted. */
static void unpadded_header(void **state) {
    fixture *f = *state;
    const char *header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    assert_true((8 + strlen(header)) % 4 != 0);
    char *path = write_unpadded(f->dir, "model.safetensors", header, 8);
    expect_open_fails(path, path, "\"w\"", "is not aligned to its 4-byte elements",
                      "the header length is not padded to a multiple of 8", NULL);
    free(path);
    const char *bytes = "{\"b\":{\"dtype\":\"F8_E4M3\",\"shape\":[3],\"data_offsets\":[0,3]}}";
    assert_true(strlen(bytes) % 8 != 0);
    path = write_unpadded(f->dir, "fp8.safetensors", bytes, 3);
    m4_checkpoint *c = open_ok(path);
    assert_int_equal(m4_checkpoint_find(c, "b")->nbytes, 3);
    m4_checkpoint_close(c);
    free(path);
}

/* ------------------------------------------------------------------------------------------------
 * Bad input: sharded checkpoints */

typedef struct {
    float a, b, c;
} three;

static void write_shard(const char *dir, const char *file, const char *n1, const char *n2,
                        const three *v) {
    m4t_tensor t[2] = {{n1, "F32", 1, {1}, &v->a, 4}, {n2, "F32", 1, {1}, &v->b, 4}};
    char *path = m4t_join(dir, file);
    m4t_write_safetensors(path, t, n2 ? 2 : 1);
    free(path);
}

static void same_name_in_two_shards(void **state) {
    fixture *f = *state;
    three v = {1, 2, 3};
    write_shard(f->dir, "s1.safetensors", "a", "b", &v);
    write_shard(f->dir, "s2.safetensors", "a", "c", &v);
    write_index(f->dir, "{\"a\": \"s1.safetensors\", \"b\": \"s1.safetensors\", \"c\": \"s2.safetensors\"}");
    expect_open_fails(f->dir, "model.safetensors.index.json", "\"a\"", "stored twice",
                      "s1.safetensors", "s2.safetensors", NULL);
}

static void shard_missing(void **state) {
    fixture *f = *state;
    three v = {1, 2, 3};
    write_shard(f->dir, "s1.safetensors", "a", NULL, &v);
    write_index(f->dir, "{\"a\": \"s1.safetensors\", \"b\": \"s2.safetensors\"}");
    char *index = m4t_join(f->dir, "model.safetensors.index.json");
    expect_open_fails(index, index, "\"s2.safetensors\"", "listed in the index but missing", NULL);
    free(index);
}

static void tensor_in_wrong_shard(void **state) {
    fixture *f = *state;
    three v = {1, 2, 3};
    write_shard(f->dir, "s1.safetensors", "b", NULL, &v);
    write_shard(f->dir, "s2.safetensors", "a", NULL, &v);
    write_index(f->dir, "{\"a\": \"s1.safetensors\", \"b\": \"s2.safetensors\"}");
    expect_open_fails(f->dir, "model.safetensors.index.json", "\"a\"",
                      "indexed in shard \"s1.safetensors\" but not stored there", NULL);
}

static void indexed_tensor_stored_nowhere(void **state) {
    fixture *f = *state;
    three v = {1, 2, 3};
    write_shard(f->dir, "s1.safetensors", "a", NULL, &v);
    write_index(f->dir, "{\"a\": \"s1.safetensors\", \"ghost\": \"s1.safetensors\"}");
    expect_open_fails(f->dir, "model.safetensors.index.json", "\"ghost\"",
                      "indexed in shard \"s1.safetensors\" but not stored there", NULL);
}

static void stored_but_not_indexed(void **state) {
    fixture *f = *state;
    three v = {1, 2, 3};
    write_shard(f->dir, "s1.safetensors", "a", "extra", &v);
    write_index(f->dir, "{\"a\": \"s1.safetensors\"}");
    expect_open_fails(f->dir, "model.safetensors.index.json", "\"extra\"", "s1.safetensors",
                      "missing from the index", NULL);
}

static void shard_name_escapes_folder(void **state) {
    fixture *f = *state;
    three v = {1, 2, 3};
    /* The file exists one level up: it must still be refused. */
    char *sub = m4t_join(f->dir, "ckpt");
    assert_int_equal(mkdir(sub, 0700), 0);
    write_shard(f->dir, "outside.safetensors", "a", NULL, &v);
    write_index(sub, "{\"a\": \"../outside.safetensors\"}");
    expect_open_fails(sub, "model.safetensors.index.json", "weight_map[\"a\"]",
                      "must be a file name inside the checkpoint folder", NULL);
    char *abs = m4t_join(f->dir, "outside.safetensors");
    char json[4096];
    snprintf(json, sizeof json, "{\"a\": \"%s\"}", abs);
    write_index(sub, json);
    expect_open_fails(sub, "model.safetensors.index.json", "weight_map[\"a\"]",
                      "must be a file name inside the checkpoint folder", NULL);
    write_index(sub, "{\"a\": \"\"}");
    expect_open_fails(sub, "must be a file name inside the checkpoint folder", NULL);
    write_index(sub, "{\"a\": 7}");
    expect_open_fails(sub, "must be a file name inside the checkpoint folder", NULL);
    free(abs);
    free(sub);
}

static void bad_index_json(void **state) {
    fixture *f = *state;
    char *index = m4t_join(f->dir, "model.safetensors.index.json");
    m4t_write_text(index, "{\"weight_map\": {\"a\": ");
    expect_open_fails(f->dir, index, "invalid JSON", NULL);
    m4t_write_text(index, "{\"metadata\": {}}");
    expect_open_fails(f->dir, index, "\"weight_map\" is missing, empty or not an object", NULL);
    m4t_write_text(index, "{\"weight_map\": {}}");
    expect_open_fails(f->dir, index, "\"weight_map\" is missing, empty or not an object", NULL);
    m4t_write_text(index, "{\"weight_map\": [\"s1.safetensors\"]}");
    expect_open_fails(f->dir, index, "\"weight_map\" is missing, empty or not an object", NULL);
    m4t_write_text(index, "[1]");
    expect_open_fails(f->dir, index, "\"weight_map\"", NULL);
    m4t_write_text(index, "{\"weight_map\": {\"a\": \"s1.safetensors\", \"a\": \"s1.safetensors\"}}");
    expect_open_fails(f->dir, index, "duplicate", NULL);
    free(index);
}

/* A malformed shard behind an index: the message names the shard, not the index. */
static void bad_shard_behind_index(void **state) {
    fixture *f = *state;
    char *shard = write_raw(f->dir, "s1.safetensors",
                            "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 4);
    write_index(f->dir, "{\"a\": \"s1.safetensors\"}");
    expect_open_fails(f->dir, shard, "past the end of the data section", NULL);
    free(shard);
}

/* Shards in a subfolder named by the index ("sub/x.safetensors") stay inside the checkpoint. */
static void shard_in_subfolder(void **state) {
    fixture *f = *state;
    three v = {1, 2, 3};
    char *sub = m4t_join(f->dir, "shards");
    assert_int_equal(mkdir(sub, 0700), 0);
    write_shard(sub, "s1.safetensors", "a", "b", &v);
    write_index(f->dir, "{\"a\": \"shards/s1.safetensors\", \"b\": \"shards/s1.safetensors\"}");
    m4_checkpoint *c = open_ok(f->dir);
    assert_int_equal(m4_checkpoint_tensor_count(c), 2);
    m4t_assert_contains(m4_checkpoint_find(c, "b")->file, "shards/s1.safetensors");
    m4_checkpoint_close(c);
    free(sub);
}

/* A shard that is there but is not a file is named for what it is, not "missing" (#18 fault 7):
 * a FIFO (opened without blocking) and a folder behind an index; a FIFO model.safetensors and a
 * character device linked in as one are not "no model.safetensors … in this folder". */
static void shard_that_is_not_a_file_is_named(void **state) {
    fixture *f = *state;
    three v = {1, 2, 3};
    write_shard(f->dir, "s1.safetensors", "a", NULL, &v);
    char *fifo = m4t_join(f->dir, "s2.safetensors"), *folder = m4t_join(f->dir, "s3.safetensors");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(mkdir(folder, 0700), 0);
    write_index(f->dir, "{\"a\": \"s1.safetensors\", \"b\": \"s2.safetensors\"}");
    expect_open_fails(f->dir, fifo, "is a FIFO (named pipe), not a regular file", NULL);
    write_index(f->dir, "{\"a\": \"s1.safetensors\", \"b\": \"s3.safetensors\"}");
    expect_open_fails(f->dir, folder, "is a folder, not a regular file", NULL);

    char *alone = m4t_join(f->dir, "alone"), *single = m4t_join(alone, "model.safetensors");
    assert_int_equal(mkdir(alone, 0700), 0);
    assert_int_equal(mkfifo(single, 0600), 0);
    expect_open_fails(alone, single, "is a FIFO (named pipe), not a regular file", NULL);
    assert_int_equal(unlink(single), 0);
    assert_int_equal(symlink("/dev/zero", single), 0);
    expect_open_fails(alone, single, "/dev/zero (a character device)", NULL);
    free(fifo), free(folder), free(alone), free(single);
}

/* A shard linked from outside the checkpoint folder is refused (#18 fault 8), by an index and as a
 * folder's model.safetensors; a link between the folder's own files is fine. */
static void shard_linked_outside_the_folder_is_refused(void **state) {
    fixture *f = *state;
    three v = {1, 2, 3};
    char *model = m4t_join(f->dir, "model"), *elsewhere = m4t_join(f->dir, "elsewhere");
    assert_int_equal(mkdir(model, 0700), 0);
    assert_int_equal(mkdir(elsewhere, 0700), 0);
    write_shard(elsewhere, "s1.safetensors", "a", NULL, &v);
    write_shard(model, "real.safetensors", "b", NULL, &v);
    char *s1 = m4t_join(model, "s1.safetensors"), *s2 = m4t_join(model, "s2.safetensors");
    assert_int_equal(symlink("../elsewhere/s1.safetensors", s1), 0);
    assert_int_equal(symlink("real.safetensors", s2), 0); /* inside: fine */
    write_index(model, "{\"a\": \"s1.safetensors\", \"b\": \"s2.safetensors\"}");
    expect_open_fails(model, s1, "is a link to", "elsewhere/s1.safetensors (a regular file)",
                      "outside the checkpoint folder", "blobs/", NULL);
    write_index(model, "{\"b\": \"s2.safetensors\"}");
    m4_checkpoint *c = open_ok(model);
    assert_int_equal(m4_checkpoint_tensor_count(c), 1);
    m4_checkpoint_close(c);

    char *single = m4t_join(elsewhere, "model.safetensors"), *index = m4t_join(elsewhere, "model.safetensors.index.json");
    assert_int_equal(symlink(s2, single), 0); /* elsewhere/model.safetensors -> model/s2 -> model/real */
    expect_open_fails(elsewhere, single, "outside the checkpoint folder", NULL);
    free(model), free(elsewhere), free(s1), free(s2), free(single), free(index);
}

/* The Hugging Face hub cache: models--ORG--NAME/snapshots/REV/FILE -> ../../blobs/SHA256. Loading
 * from a snapshot folder works, sharded and single-file; a link from a snapshot out of its repo's
 * blobs/ (into another repo's) is still refused. */
static void hub_cache_snapshot_loads(void **state) {
    fixture *f = *state;
    three v = {1, 2, 3};
    char *repo = m4t_join(f->dir, "models--org--name"), *blobs = m4t_join(repo, "blobs"),
         *snapshots = m4t_join(repo, "snapshots"), *rev = m4t_join(snapshots, "0123abcd"),
         *other = m4t_join(f->dir, "models--org--other");
    assert_int_equal(mkdir(repo, 0700), 0);
    assert_int_equal(mkdir(blobs, 0700), 0);
    assert_int_equal(mkdir(snapshots, 0700), 0);
    assert_int_equal(mkdir(rev, 0700), 0);
    assert_int_equal(mkdir(other, 0700), 0);
    write_shard(blobs, "5a1e", "a", NULL, &v);
    write_shard(blobs, "b10b", "b", NULL, &v);
    write_index(blobs, "{\"a\": \"model-00001-of-00002.safetensors\", \"b\": \"model-00002-of-00002.safetensors\"}");
    char *link1 = m4t_join(rev, "model-00001-of-00002.safetensors"), *link2 = m4t_join(rev, "model-00002-of-00002.safetensors"),
         *index = m4t_join(rev, "model.safetensors.index.json");
    assert_int_equal(symlink("../../blobs/5a1e", link1), 0);
    assert_int_equal(symlink("../../blobs/b10b", link2), 0);
    assert_int_equal(symlink("../../blobs/model.safetensors.index.json", index), 0);
    m4_checkpoint *c = open_ok(rev);
    assert_int_equal(m4_checkpoint_tensor_count(c), 2);
    m4_checkpoint_close(c);

    assert_int_equal(unlink(link2), 0);
    write_shard(other, "b10b", "b", NULL, &v);
    assert_int_equal(symlink("../../../models--org--other/b10b", link2), 0);
    expect_open_fails(rev, link2, "outside the checkpoint folder", NULL);

    assert_int_equal(unlink(index), 0); /* the single-file form */
    assert_int_equal(unlink(link1), 0), assert_int_equal(unlink(link2), 0);
    char *single = m4t_join(rev, "model.safetensors");
    assert_int_equal(symlink("../../blobs/5a1e", single), 0);
    c = open_ok(rev);
    assert_int_equal(m4_checkpoint_tensor_count(c), 1);
    m4_checkpoint_close(c);
    free(repo), free(blobs), free(snapshots), free(rev), free(other), free(link1), free(link2), free(index),
        free(single);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, m4t_dir_setup, m4t_dir_teardown)
    const struct CMUnitTest tests[] = {
        T(single_file_by_file_and_folder),
        T(single_file_any_name),
        T(sharded_by_folder_and_index),
        T(sharded_made_resident), T(index_preferred_over_single_file),
        T(many_tensors_sorted),
        T(empty_checkpoint),
        cmocka_unit_test(close_null_is_harmless),
        T(missing_file),
        T(folder_without_model_files),
        T(truncated_file),
        T(header_length_past_eof),
        T(header_length_over_cap),
        T(invalid_json),
        T(header_not_object),
        T(entry_fields_missing_or_mistyped),
        T(unknown_dtype),
        T(offsets_end_before_begin),
        T(offsets_overlap),
        T(offsets_gap),
        T(data_past_eof),
        T(trailing_bytes),
        T(shape_size_mismatch),
        T(duplicate_name_in_header),
        T(shape_product_overflow),
        T(misaligned_offset),
        T(unpadded_header),
        T(same_name_in_two_shards),
        T(shard_missing),
        T(tensor_in_wrong_shard),
        T(indexed_tensor_stored_nowhere),
        T(stored_but_not_indexed),
        T(shard_name_escapes_folder),
        T(bad_index_json),
        T(bad_shard_behind_index),
        T(shard_in_subfolder),
        T(shard_that_is_not_a_file_is_named),
        T(shard_linked_outside_the_folder_is_refused),
        T(hub_cache_snapshot_loads),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
