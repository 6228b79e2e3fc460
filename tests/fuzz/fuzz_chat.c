/* fuzz_chat — conversation files (`mistral4 run --chat FILE.json`) on untrusted bytes.
 *
 * The bytes are written to <scratch>/chat.json and read by m4_chat_file_read, the reader the
 * command uses (JSON with duplicate keys refused, the messages array or object, roles, chunks,
 * image paths resolved against the file's folder). Then, as the command does, each image chunk
 * gets its image's token grid and the conversation is rendered through the v15 chat template
 * (m4_chat_encode: normalisation, role and chunk validation, the Tekken tokenizer) with the
 * committed tests/fixtures/tokenizer/tekken_v15_synthetic.json, loaded once.
 *
 * Images: the reader only records each chunk's path; no path in the input is ever opened here.
 * Each image gets a small fake grid (1..4 × 1..4 merged patches, from a hash of its path) in
 * place of the one its decoded pixels would give. Decoding is fuzz_image's job.
 *
 * The reasoning effort is "high" for inputs of odd length, "none" for even ones.
 *
 * Checks: a failure says why; a conversation that encodes starts with <s>, writes
 * [MODEL_SETTINGS] once when it has a user message (none otherwise), ends with [/INST] or, when
 * its last message is a system one (mistral-common accepts that), [/SYSTEM_PROMPT], holds only
 * ids of the vocabulary, one [IMG_END] per image and rows × cols [IMG] per image, and its ids
 * decode. */
#include "fuzz_common.h"

#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "tokenizer.h"

#include "fuzz_fixture_tokenizer.h"

static int32_t special(const m4_tokenizer *tok, const char *name) {
    int32_t id;
    m4_error err;
    FUZZ_CHECK(m4_tokenizer_special_id(tok, name, &id, &err) == 0);
    return id;
}

/* What load_images would give, without opening the file: a grid of 1..4 × 1..4. */
static void fake_grid(const char *path, int64_t *rows, int64_t *cols) {
    uint32_t h = 2166136261u;
    for (const char *p = path; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
    *rows = 1 + (int64_t)(h % 4), *cols = 1 + (int64_t)((h >> 8) % 4);
}

static void check_ids(const m4_tokenizer *tok, const m4_chat_file *conv, const m4_token_ids *ids) {
    const int32_t bos = special(tok, "<s>"), end_inst = special(tok, "[/INST]");
    const int32_t settings = special(tok, "[MODEL_SETTINGS]"), img = special(tok, "[IMG]");
    const int32_t img_end = special(tok, "[IMG_END]"), end_system = special(tok, "[/SYSTEM_PROMPT]");
    size_t n_images = 0, n_img = 0, n_user = 0;
    for (size_t m = 0; m < conv->n_messages; m++) n_user += conv->messages[m].role == M4_ROLE_USER;
    const int ends_with_user = conv->messages[conv->n_messages - 1].role == M4_ROLE_USER;
    for (size_t k = 0; k < conv->n_chunks; k++)
        if (conv->chunks[k].kind == M4_CHUNK_IMAGE) {
            n_images++;
            n_img += (size_t)(conv->chunks[k].rows * conv->chunks[k].cols);
        }
    FUZZ_CHECK(ids->n >= 3 && ids->ids[0] == bos && ids->ids[ids->n - 1] == (ends_with_user ? end_inst : end_system));
    const int vocab = m4_tokenizer_vocab_size(tok);
    size_t seen_settings = 0, seen_img = 0, seen_end = 0;
    for (size_t i = 0; i < ids->n; i++) {
        FUZZ_CHECK(ids->ids[i] >= 0 && ids->ids[i] < vocab);
        seen_settings += ids->ids[i] == settings;
        seen_img += ids->ids[i] == img;
        seen_end += ids->ids[i] == img_end;
    }
    FUZZ_CHECK(seen_settings == (n_user > 0));
    FUZZ_CHECK(seen_end == n_images && seen_img == n_img);
    char *text = NULL;
    size_t len = 0;
    m4_error err = {{0}};
    FUZZ_CHECK(m4_tokenizer_decode(tok, ids->ids, ids->n, M4_SPECIAL_KEEP, &text, &len, &err) == 0);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const m4_tokenizer *tok = fixed_tokenizer("fuzz_chat");
    char path[600];
    fuzz_path("chat.json", path, sizeof path);
    fuzz_write(path, data, size);

    m4_chat_file conv;
    m4_error err = {{0}};
    if (m4_chat_file_read(path, 0, &conv, &err) != 0) {
        FUZZ_CHECK(err.msg[0] != 0);             /* every failure says why */
        fuzz_note("read", err.msg);
        return 0;
    }
    FUZZ_CHECK(conv.n_messages > 0 && conv.n_images <= M4_CHAT_MAX_IMAGES);
    int images = 0;
    for (size_t k = 0; k < conv.n_chunks; k++)       /* index → a token grid, as the command does */
        if (conv.chunks[k].kind == M4_CHUNK_IMAGE) {
            const int64_t i = conv.chunks[k].rows;
            FUZZ_CHECK(i == images && i < conv.n_images);   /* numbered in order of appearance */
            images++;
            fake_grid(conv.image_paths[i], &conv.chunks[k].rows, &conv.chunks[k].cols);
        }
    FUZZ_CHECK(images == conv.n_images);
    m4_token_ids ids = {0};
    const m4_reasoning_effort effort = size & 1 ? M4_REASONING_HIGH : M4_REASONING_NONE;
    if (m4_chat_encode(tok, conv.messages, conv.n_messages, effort, &ids, &err) != 0) {
        FUZZ_CHECK(err.msg[0] != 0);
        fuzz_note("encode", err.msg);
    } else {
        fuzz_note("encode", "ok");
        check_ids(tok, &conv, &ids);
    }
    m4_token_ids_free(&ids);
    m4_chat_file_free(&conv);
    return 0;
}
