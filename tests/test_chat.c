/* test_chat.c — the v15 chat template as ids (preprocess/chat.c, MODEL.md §6.4) against
 * mistral-common, and the reasoning read back out of generated ids.
 *
 * The expected ids come from mistral-common 1.13.1 (InstructRequestNormalizerV15 +
 * InstructTokenizerV15.encode_instruct, a ModelSettingsBuilder accepting reasoning_effort
 * none/high with default none) on tests/fixtures/tokenizer/tekken_v15_synthetic.json; the
 * script that printed them is tests/fixtures/chat/make_expected.py. */
#include "chat.h"
#include "testutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNTHETIC "tests/fixtures/tokenizer/tekken_v15_synthetic.json"

static m4_tokenizer *load_synthetic(void) {
    char *path = m4t_source_path(SYNTHETIC);
    m4_tokenizer *tok;
    m4_error err;
    if (m4_tokenizer_load(path, &tok, &err)) fail_msg("%s", err.msg);
    free(path);
    return tok;
}

static void assert_ids(const m4_token_ids *got, const int32_t *want, size_t n, const char *what) {
    int same = got->n == n;
    for (size_t i = 0; same && i < n; i++) same = got->ids[i] == want[i];
    if (!same) {
        char buf[4096];
        size_t at = 0;
        for (size_t i = 0; i < got->n && at + 16 < sizeof buf; i++)
            at += (size_t)snprintf(buf + at, sizeof buf - at, "%d ", got->ids[i]);
        fail_msg("%s: got %zu ids (%s), want %zu", what, got->n, buf, n);
    }
}

#define TEXT(s) ((m4_chat_chunk){.kind = M4_CHUNK_TEXT, .text = (s)})
#define MSG(r, ...)                                                                               \
    ((m4_chat_message){.role = (r), .chunks = (const m4_chat_chunk[]){__VA_ARGS__},            \
                       .n_chunks = sizeof((const m4_chat_chunk[]){__VA_ARGS__}) / sizeof(m4_chat_chunk)})

static void encode_ok(const m4_tokenizer *tok, const m4_chat_message *m, size_t n, m4_reasoning_effort e,
                      m4_token_ids *out) {
    m4_error err;
    if (m4_chat_encode(tok, m, n, e, out, &err)) fail_msg("%s", err.msg);
}

/* <s>[MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS][INST]Hello, world![/INST] */
static void test_one_user_message(void **state) {
    (void)state;
    m4_tokenizer *tok = load_synthetic();
    const m4_chat_message m[] = {MSG(M4_ROLE_USER, TEXT("Hello, world!"))};
    static const int32_t want[] = {1, 37, 223, 134, 373, 388, 363, 402, 195, 201, 709, 549, 1911, 529, 210,
                                   874, 134, 225, 38, 3, 172, 622, 211, 144, 385, 370, 643, 133, 4};
    m4_token_ids ids = {0};
    encode_ok(tok, m, 1, M4_REASONING_NONE, &ids);
    assert_ids(&ids, want, sizeof want / sizeof *want, "one user message");
    m4_token_ids_free(&ids);
    m4_tokenizer_free(tok);
}

/* reasoning_effort "high" */
static void test_reasoning_high(void **state) {
    (void)state;
    m4_tokenizer *tok = load_synthetic();
    const m4_chat_message m[] = {MSG(M4_ROLE_USER, TEXT("What is 2+2?"))};
    static const int32_t want[] = {1, 37, 223, 134, 373, 388, 363, 402, 195, 201, 709, 549, 1911, 529, 204,
                                   1327, 134, 225, 38, 3, 187, 204, 369, 495, 132, 150, 143, 150, 163, 4};
    m4_token_ids ids = {0};
    encode_ok(tok, m, 1, M4_REASONING_HIGH, &ids);
    assert_ids(&ids, want, sizeof want / sizeof *want, "reasoning high");
    m4_token_ids_free(&ids);
    m4_reasoning_effort e;
    m4_error err;
    assert_int_equal(m4_reasoning_effort_parse("high", &e, &err), 0);
    assert_int_equal(e, M4_REASONING_HIGH);
    assert_int_equal(m4_reasoning_effort_parse("medium", &e, &err), -1);
    m4t_assert_contains(err.msg, "none or high");
    m4_tokenizer_free(tok);
}

/* A system prompt in place, two user messages merged with "\n\n", an assistant answer with
 * trailing spaces stripped, then a new user turn:
 * <s>[SYSTEM_PROMPT]You are terse.[/SYSTEM_PROMPT][MODEL_SETTINGS]…[/MODEL_SETTINGS]
 * [INST]Hi there\n\nsecond part[/INST]Hello.</s>[INST]Bye[/INST] */
static void test_system_merge_history(void **state) {
    (void)state;
    m4_tokenizer *tok = load_synthetic();
    const m4_chat_message m[] = {
        MSG(M4_ROLE_SYSTEM, TEXT("You are terse.")),
        MSG(M4_ROLE_USER, TEXT("Hi there")),
        MSG(M4_ROLE_USER, TEXT(""), TEXT("second part")),      /* empty text is dropped */
        MSG(M4_ROLE_ASSISTANT, TEXT("Hello.  ")),
        MSG(M4_ROLE_USER, TEXT("Bye")),
    };
    static const int32_t want[] = {1, 17, 189, 405, 684, 1833, 515, 146, 18, 37, 223, 134, 373, 388, 363,
                                   402, 195, 201, 709, 549, 1911, 529, 210, 874, 134, 225, 38, 3, 172, 205,
                                   1256, 367, 515, 1423, 905, 4, 172, 622, 211, 146, 2, 3, 166, 221, 201, 4};
    m4_token_ids ids = {0};
    encode_ok(tok, m, 5, M4_REASONING_NONE, &ids);
    assert_ids(&ids, want, sizeof want / sizeof *want, "system + merged history");
    m4_token_ids_free(&ids);
    m4_tokenizer_free(tok);
}

/* An assistant turn with reasoning: [THINK]some thoughts[/THINK]answer</s> (no stripping of a
 * list content); reading it back splits reasoning and answer. */
static void test_thinking_history_and_split(void **state) {
    (void)state;
    m4_tokenizer *tok = load_synthetic();
    const m4_chat_message m[] = {
        MSG(M4_ROLE_USER, TEXT("Think first")),
        MSG(M4_ROLE_ASSISTANT, ((m4_chat_chunk){.kind = M4_CHUNK_THINKING, .text = "some thoughts", .closed = 1}),
            TEXT("answer")),
        MSG(M4_ROLE_USER, TEXT("again")),
    };
    static const int32_t want[] = {1, 37, 223, 134, 373, 388, 363, 402, 195, 201, 709, 549, 1911, 529, 204,
                                   1327, 134, 225, 38, 3, 1538, 1177, 1258, 4, 35, 215, 898, 426, 405, 203,
                                   578, 215, 36, 645, 1543, 2, 3, 493, 593, 4};
    m4_token_ids ids = {0};
    encode_ok(tok, m, 3, M4_REASONING_HIGH, &ids);
    assert_ids(&ids, want, sizeof want / sizeof *want, "thinking history");

    /* the assistant part as if generated: [THINK]some thoughts[/THINK]answer</s> */
    const int32_t *gen = want + 24;
    char *thinking, *answer;
    int has, closed;
    m4_error err;
    assert_int_equal(m4_chat_split_thinking(tok, gen, 12, &thinking, &answer, &has, &closed, &err), 0);
    assert_string_equal(thinking, "some thoughts");
    assert_string_equal(answer, "answer");
    assert_true(has && closed);
    free(thinking), free(answer);
    /* cut inside the block: not closed, no answer yet */
    assert_int_equal(m4_chat_split_thinking(tok, gen, 5, &thinking, &answer, &has, &closed, &err), 0);
    assert_string_equal(thinking, "some thou");
    assert_string_equal(answer, "");
    assert_true(has && !closed);
    free(thinking), free(answer);
    /* no block at all: everything is the answer */
    assert_int_equal(m4_chat_split_thinking(tok, gen + 9, 3, &thinking, &answer, &has, &closed, &err), 0);
    assert_string_equal(thinking, "");
    assert_string_equal(answer, "answer");
    assert_true(!has && !closed);
    free(thinking), free(answer);
    m4_token_ids_free(&ids);
    m4_tokenizer_free(tok);
}

/* Images: the [IMG] grid (rows of cols [IMG], [IMG_BREAK] between rows, [IMG_END] last); a user
 * message of exactly [text, image] puts the image first; [image, text, image] keeps its order. */
static void test_images(void **state) {
    (void)state;
    m4_tokenizer *tok = load_synthetic();
    const m4_chat_chunk img23 = {.kind = M4_CHUNK_IMAGE, .rows = 2, .cols = 3};
    const m4_chat_chunk img11 = {.kind = M4_CHUNK_IMAGE, .rows = 1, .cols = 1};
    m4_token_ids ids = {0}, text = {0};
    m4_error err;
    if (m4_tokenizer_encode(tok, "Describe", 8, &text, &err)) fail_msg("%s", err.msg);
    const m4_chat_message swap[] = {MSG(M4_ROLE_USER, TEXT("Describe"), img23)};
    encode_ok(tok, swap, 1, M4_REASONING_NONE, &ids);
    /* … [INST] IMG IMG IMG BREAK IMG IMG IMG END Describe [/INST] */
    size_t at = 0;
    while (at < ids.n && ids.ids[at] != 3) at++;
    static const int32_t grid[] = {3, 10, 10, 10, 12, 10, 10, 10, 13};
    assert_true(ids.n == at + 9 + text.n + 1);
    assert_memory_equal(ids.ids + at, grid, sizeof grid);
    assert_memory_equal(ids.ids + at + 9, text.ids, sizeof(int32_t) * text.n);
    assert_int_equal(ids.ids[ids.n - 1], 4);
    m4_token_ids_free(&ids);

    const m4_chat_message keep[] = {MSG(M4_ROLE_USER, img11, TEXT("Describe"), img11)};
    encode_ok(tok, keep, 1, M4_REASONING_NONE, &ids);
    at = 0;
    while (at < ids.n && ids.ids[at] != 3) at++;
    assert_int_equal(ids.ids[at + 1], 10);
    assert_int_equal(ids.ids[at + 2], 13);
    assert_memory_equal(ids.ids + at + 3, text.ids, sizeof(int32_t) * text.n);
    assert_int_equal(ids.ids[at + 3 + text.n], 10);
    m4_token_ids_free(&ids);
    m4_token_ids_free(&text);
    m4_tokenizer_free(tok);
}

static void expect_error(const m4_tokenizer *tok, const m4_chat_message *m, size_t n, const char *needle) {
    m4_token_ids ids = {0};
    m4_error err;
    assert_int_equal(m4_chat_encode(tok, m, n, M4_REASONING_NONE, &ids, &err), -1);
    m4t_assert_contains(err.msg, needle);
    m4_token_ids_free(&ids);
}

/* The role orders of tests/fixtures/chat_refusals/role_orders.json (generate.py there, with
 * mistral-common's v15 validator): every order of 0 to 4 system/user/assistant messages, each
 * message the text of its role's initial and index ("s0", "u1" …). The template accepts exactly
 * the orders mistral-common accepts, with its ids, and refuses the others with its message. */
static void test_role_orders_match_mistral_common(void **state) {
    (void)state;
    m4_tokenizer *tok = load_synthetic();
    char *path = m4t_source_path("tests/fixtures/chat_refusals/role_orders.json");
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) fail_msg("%s: line %d: %s", path, jerr.line, jerr.text);
    json_t *orders = json_object_get(root, "orders");
    assert_true(json_array_size(orders) >= 121);
    size_t refused = 0;
    for (size_t k = 0; k < json_array_size(orders); k++) {
        json_t *order = json_array_get(orders, k), *roles = json_object_get(order, "roles");
        const size_t n = json_array_size(roles);
        m4_chat_message m[8];
        m4_chat_chunk chunks[8];
        char texts[8][24], name[96] = "";
        assert_true(n <= 8);
        for (size_t i = 0; i < n; i++) {
            const char *role = json_string_value(json_array_get(roles, i));
            snprintf(texts[i], sizeof texts[i], "%c%zu", role[0], i);
            chunks[i] = TEXT(texts[i]);
            m[i] = (m4_chat_message){.role = role[0] == 's' ? M4_ROLE_SYSTEM : role[0] == 'u' ? M4_ROLE_USER
                                                                                               : M4_ROLE_ASSISTANT,
                                     .chunks = &chunks[i], .n_chunks = 1};
            strncat(name, role, sizeof name - strlen(name) - 2), strcat(name, " ");
        }
        m4_token_ids ids = {0};
        m4_error err = {{0}};
        const int rc = m4_chat_encode(tok, m, n, M4_REASONING_NONE, &ids, &err);
        if (json_is_true(json_object_get(order, "accepted"))) {
            if (rc) fail_msg("[%s] mistral-common accepts it, we refuse: %s", name, err.msg);
            json_t *want = json_object_get(order, "ids");
            int32_t w[256];
            assert_true(json_array_size(want) <= 256);
            for (size_t i = 0; i < json_array_size(want); i++) w[i] = (int32_t)json_integer_value(json_array_get(want, i));
            assert_ids(&ids, w, json_array_size(want), name);
        } else {
            const char *message = json_string_value(json_object_get(order, "message"));
            if (rc == 0) fail_msg("[%s] mistral-common refuses it (%s), we accept it", name, message);
            if (!strstr(err.msg, message)) fail_msg("[%s] we say '%s', mistral-common '%s'", name, err.msg, message);
            refused++;
        }
        m4_token_ids_free(&ids);
    }
    assert_true(refused > 0 && refused < json_array_size(orders));
    json_decref(root);
    free(path);
    m4_tokenizer_free(tok);
}

static void test_errors(void **state) {
    (void)state;
    m4_tokenizer *tok = load_synthetic();
    const m4_chat_chunk img = {.kind = M4_CHUNK_IMAGE, .rows = 1, .cols = 1};
    const m4_chat_chunk think = {.kind = M4_CHUNK_THINKING, .text = "x", .closed = 1};
    expect_error(tok, NULL, 0, "Conversation must have at least one message");
    const m4_chat_message b[] = {MSG(M4_ROLE_USER, TEXT("x")), MSG(M4_ROLE_ASSISTANT, TEXT("y"))};
    expect_error(tok, b, 2, "Expected last role User or Tool (or Assistant with prefix) for serving but got assistant");
    /* the example: accepted before */
    const m4_chat_message a[] = {MSG(M4_ROLE_USER, TEXT("x")), MSG(M4_ROLE_ASSISTANT, TEXT("y")),
                                 MSG(M4_ROLE_SYSTEM, TEXT("z")), MSG(M4_ROLE_USER, TEXT("w"))};
    expect_error(tok, a, 4, "message 2: Unexpected role 'system' after role 'assistant'");
    const m4_chat_message c[] = {MSG(M4_ROLE_SYSTEM, img), MSG(M4_ROLE_USER, TEXT("x"))};
    expect_error(tok, c, 2, "images are only allowed in user messages (found one in a system message)");
    const m4_chat_message c2[] = {MSG(M4_ROLE_USER, TEXT("x")), MSG(M4_ROLE_ASSISTANT, img),
                                  MSG(M4_ROLE_USER, TEXT("y"))};
    expect_error(tok, c2, 3, "images are only allowed in user messages (found one in an assistant message)");
    const m4_chat_message d[] = {MSG(M4_ROLE_USER, think)};
    expect_error(tok, d, 1, "thinking is only allowed in assistant messages");
    const m4_chat_message e[] = {MSG(M4_ROLE_USER, TEXT("x")), MSG(M4_ROLE_ASSISTANT, TEXT("")),
                                 MSG(M4_ROLE_USER, TEXT("y"))};
    expect_error(tok, e, 3, "assistant message has no content");
    const m4_chat_message f[] = {MSG(M4_ROLE_USER, TEXT("\xff"))};
    expect_error(tok, f, 1, "UTF-8");
    const m4_chat_chunk flat = {.kind = M4_CHUNK_IMAGE, .rows = 0, .cols = 4};
    const m4_chat_message g[] = {MSG(M4_ROLE_USER, flat)};
    expect_error(tok, g, 1, "0 x 4 token grid");
    m4_tokenizer_free(tok);
}

/* A tokenizer without the v15 special tokens (a v3 file: only ids 0–19 are named) cannot write
 * the template, and the message says which token is missing. */
static void test_tokenizer_without_settings_tokens(void **state) {
    (void)state;
    char *json = malloc(256 * 64 + 512);
    size_t at = (size_t)sprintf(json, "{\"config\":{\"pattern\":\"[a-z]+|[^a-z]+\",\"num_vocab_tokens\":256,"
                                      "\"default_vocab_size\":276,\"default_num_special_tokens\":20,"
                                      "\"version\":\"v3\"},\"vocab\":[");
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 256; i++)
        at += (size_t)sprintf(json + at, "%s{\"rank\":%d,\"token_bytes\":\"%c%c==\",\"token_str\":null}",
                              i ? "," : "", i, b64[i >> 2], b64[(i & 3) << 4]);
    strcpy(json + at, "]}");
    m4_tokenizer *tok;
    m4_error err;
    if (m4_tokenizer_parse(json, strlen(json), "v3.json", &tok, &err)) fail_msg("%s", err.msg);
    const m4_chat_message m[] = {MSG(M4_ROLE_USER, TEXT("hi"))};
    expect_error(tok, m, 1, "[MODEL_SETTINGS]");
    /* splitting still works: there is simply no reasoning block */
    const int32_t gen[] = {20 + 'h', 20 + 'i', 2};
    char *thinking, *answer;
    int has;
    assert_int_equal(m4_chat_split_thinking(tok, gen, 3, &thinking, &answer, &has, NULL, &err), 0);
    assert_string_equal(answer, "hi");
    assert_false(has);
    free(thinking), free(answer);
    m4_tokenizer_free(tok);
    free(json);
}

/* Regression (issue #9, found reading chat.c while adding tests/fuzz/fuzz_chat.c): a text chunk
 * whose text is NULL after non-empty text in the same turn failed with the right message but
 * leaked the text being merged (LeakSanitizer in the debug preset). The CLI's reader never
 * passes NULL text, so the fuzzer could not reach it; the library API can. */
static void test_null_text_after_text_does_not_leak(void **state) {
    (void)state;
    m4_tokenizer *tok = load_synthetic();
    const m4_chat_chunk null_text = {.kind = M4_CHUNK_TEXT, .text = NULL};
    const m4_chat_message m[] = {MSG(M4_ROLE_USER, TEXT("merged so far"), null_text)};
    expect_error(tok, m, 1, "message 0 chunk 1: text is NULL");
    const m4_chat_message two[] = {MSG(M4_ROLE_USER, TEXT("a")), MSG(M4_ROLE_USER, TEXT("b"), null_text)};
    expect_error(tok, two, 2, "message 1 chunk 1: text is NULL");
    m4_tokenizer_free(tok);
}

/* ---- conversation files (m4_chat_file_read) ------------------------------------------------------ */

static char *write_chat(const char *dir, const char *name, const char *json) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);
    snprintf(path, n, "%s/%s", dir, name);
    m4t_write_text(path, json);
    return path;
}

static void test_chat_file_read(void **state) {
    (void)state;
    char *dir = m4t_tempdir();
    m4_chat_file c;
    m4_error err = {{0}};
    char *ok = write_chat(dir, "ok.json",
                          "{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"},"
                          " {\"role\": \"user\", \"content\": [{\"type\": \"image\", \"path\": \"cat.png\"},"
                          " {\"type\": \"text\", \"text\": \"what?\"}]}]}");
    assert_int_equal(m4_chat_file_read(ok, 2, &c, &err), 0);
    assert_int_equal(c.n_messages, 2);
    assert_int_equal(c.n_chunks, 3);
    assert_int_equal(c.n_images, 1);
    assert_int_equal(c.chunks[1].kind, M4_CHUNK_IMAGE);
    assert_int_equal(c.chunks[1].rows, 0);                   /* its index until the caller sets a grid */
    char want[1100];
    snprintf(want, sizeof want, "%s/cat.png", dir);          /* resolved against the file's folder */
    assert_string_equal(c.image_paths[0], want);
    m4_chat_file_free(&c);

    /* duplicate keys are refused, not resolved silently to the last one */
    char *dup = write_chat(dir, "dup.json", "[{\"role\": \"user\", \"role\": \"assistant\", \"content\": \"hi\"}]");
    assert_int_not_equal(m4_chat_file_read(dup, 0, &c, &err), 0);
    assert_non_null(strstr(err.msg, "dup.json"));
    assert_non_null(strstr(err.msg, "duplicate"));

    /* a folder is not a conversation file; an oversized file is refused before it is parsed */
    assert_int_not_equal(m4_chat_file_read(dir, 0, &c, &err), 0);
    assert_non_null(strstr(err.msg, "not a regular file"));
    size_t big_n = (size_t)M4_CHAT_FILE_MAX_BYTES + 16;
    char *big_json = malloc(big_n + 1);
    memset(big_json, ' ', big_n);
    big_json[big_n] = '\0';
    char *big = write_chat(dir, "big.json", big_json);
    assert_int_not_equal(m4_chat_file_read(big, 0, &c, &err), 0);
    assert_non_null(strstr(err.msg, "M4_CHAT_FILE_MAX_BYTES"));

    /* more images than a prompt takes: the message names the file */
    char *many_json = malloc(100 * (M4_CHAT_MAX_IMAGES + 2));
    strcpy(many_json, "[{\"role\": \"user\", \"content\": [");
    for (int i = 0; i <= M4_CHAT_MAX_IMAGES; i++)
        strcat(many_json, i ? ", {\"type\": \"image\", \"path\": \"a.png\"}" : "{\"type\": \"image\", \"path\": \"a.png\"}");
    strcat(many_json, "]}]");
    char *many = write_chat(dir, "many.json", many_json);
    assert_int_not_equal(m4_chat_file_read(many, 0, &c, &err), 0);
    assert_non_null(strstr(err.msg, "many.json"));
    assert_non_null(strstr(err.msg, "more than 64 images"));

    free(ok), free(dup), free(big), free(big_json), free(many), free(many_json);
    m4t_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_user_message),
        cmocka_unit_test(test_reasoning_high),
        cmocka_unit_test(test_system_merge_history),
        cmocka_unit_test(test_thinking_history_and_split),
        cmocka_unit_test(test_images),
        cmocka_unit_test(test_role_orders_match_mistral_common),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_tokenizer_without_settings_tokens),
        cmocka_unit_test(test_null_text_after_text_does_not_leak),
        cmocka_unit_test(test_chat_file_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
