/* fuzz_tokenizer — the Tekken tokenizer (preprocess/tokenizer.c) on untrusted input.
 *
 * The first input byte picks the mode:
 *   even  the rest is TEXT, encoded with the committed tekken.json (tests/fixtures/tokenizer/
 *         tekken_v15_synthetic.json: the real v15 pattern and special tokens over a small
 *         vocabulary, so each run is fast). Valid UTF-8 must round-trip: decode(encode(x)) == x,
 *         and the streaming detokenizer must give the same bytes; invalid UTF-8 must fail with a
 *         message.
 *   odd   the rest is a TEKKEN.JSON, parsed with m4_tokenizer_parse; when it loads, a few fixed
 *         strings are encoded and decoded with it, and every id's piece is read.
 * Environment: M4_FUZZ_TEKKEN=FILE uses another tekken.json for the text mode (e.g. the full
 * tekken_240911.json, 19 MB: slower to load, same code). */
#include <stdbool.h>

#include "fuzz_common.h"
#include "tokenizer.h"

#include "fuzz_fixture_tokenizer.h"

/* Encodes text[0..n); when it is valid UTF-8 and `exact`, checks both decoders give it back.
 * (A file's own pattern need not match every character: like tiktoken, text no piece matches is
 * dropped, so the round trip is exact only for patterns that cover everything, as Tekken's do.) */
static void round_trip(const m4_tokenizer *tok, const char *text, size_t n, bool exact) {
    m4_token_ids ids = {0};
    m4_error err = {{0}};
    bool valid = m4_utf8_check((const uint8_t *)text, n) == n;
    int rc = m4_tokenizer_encode(tok, text, n, &ids, &err);
    if (!valid) {
        FUZZ_CHECK(rc != 0 && err.msg[0] != 0);
        m4_token_ids_free(&ids);
        return;
    }
    if (rc != 0) { /* e.g. a user pattern that fails to match */
        FUZZ_CHECK(err.msg[0] != 0);
        fuzz_note("encode", err.msg);
        m4_token_ids_free(&ids);
        return;
    }
    int vocab = m4_tokenizer_vocab_size(tok), ns = m4_tokenizer_num_special(tok);
    for (size_t i = 0; i < ids.n; i++) FUZZ_CHECK(ids.ids[i] >= ns && ids.ids[i] < vocab);
    char *back = NULL;
    size_t back_len = 0;
    FUZZ_CHECK(m4_tokenizer_decode(tok, ids.ids, ids.n, M4_SPECIAL_SKIP, &back, &back_len, &err) == 0);
    FUZZ_CHECK(back_len <= n);
    if (exact) FUZZ_CHECK(back_len == n && memcmp(back, text, n) == 0);
    free(back);
    m4_detokenizer d;
    FUZZ_CHECK(m4_detokenizer_init(&d, tok, M4_SPECIAL_KEEP, &err) == 0);
    char *stream = malloc(n + 1);
    size_t at = 0;
    for (size_t i = 0; i < ids.n; i++) {
        const char *piece;
        size_t len;
        FUZZ_CHECK(m4_detokenizer_push(&d, ids.ids[i], &piece, &len, &err) == 0);
        FUZZ_CHECK(at + len <= back_len);
        memcpy(stream + at, piece, len);
        at += len;
    }
    const char *rest;
    size_t rest_len;
    FUZZ_CHECK(m4_detokenizer_finish(&d, &rest, &rest_len, &err) == 0 && rest_len == 0);
    FUZZ_CHECK(at == back_len);
    if (exact) FUZZ_CHECK(memcmp(stream, text, n) == 0);
    free(stream);
    m4_detokenizer_free(&d);
    m4_token_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const bool json_mode = data[0] & 1;
    data++, size--;
    if (!json_mode) {
        round_trip(fixed_tokenizer("fuzz_tokenizer"), (const char *)data, size, true);
        return 0;
    }
    m4_tokenizer *tok = NULL;
    m4_error err = {{0}};
    if (m4_tokenizer_parse((const char *)data, size, "fuzz/tekken.json", &tok, &err) != 0) {
        FUZZ_CHECK(tok == NULL && err.msg[0] != 0);
        fuzz_note("parse", err.msg);
        return 0;
    }
    fuzz_note("parse", "loaded");
    static const char *texts[] = {"", "Hello, world!", "  tabs\tand\nnewlines\r\n", "naïve café 東京 🙂",
                                  "[INST] not special [/INST]", "1234567890"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) round_trip(tok, texts[i], strlen(texts[i]), false);
    int vocab = m4_tokenizer_vocab_size(tok);
    for (int32_t id = -1; id <= vocab && id < 4096; id++) {
        const uint8_t *bytes;
        size_t len;
        int rc = m4_tokenizer_piece(tok, id, &bytes, &len, &err);
        FUZZ_CHECK((rc == 0) == (id >= 0 && id < vocab));
        if (id >= 0 && id < m4_tokenizer_num_special(tok)) (void)m4_tokenizer_special_str(tok, id);
    }
    m4_tokenizer_free(tok);
    return 0;
}
