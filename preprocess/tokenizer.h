/* tokenizer.h — the Tekken tokenizer (mistral-common's Tekkenizer; MODEL.md §6.3).
 *
 * A tekken.json file holds a byte-level BPE vocabulary (tiktoken style: a token's rank is its merge
 * priority), the regex that splits text into pieces before BPE, and the special tokens. Ids:
 *
 *   0 .. NS-1                special tokens (NS = config.default_num_special_tokens, 1000 in
 *                            Mistral's files); the file's special_tokens list, or mistral-common's
 *                            fixed DEPRECATED_SPECIAL_TOKENS (ranks 0–19) for files of version ≤ v7
 *                            that have none, then fillers "<SPECIAL_i>" up to NS-1
 *   NS .. default_vocab_size-1   BPE rank r ↔ id r + NS; the vocabulary is cut to its first
 *                            default_vocab_size − NS ranks, as mistral-common does
 *
 * Encoding (= Tekkenizer.encode(s, bos=False, eos=False) = tiktoken's encode with no special tokens):
 * split the UTF-8 text with the file's regex (PCRE2, Unicode mode), then merge each piece's bytes by
 * rank — always the lowest-ranked adjacent pair, leftmost on ties — and add NS. Special tokens are
 * never produced from text: "[INST]" written in text is ordinary text; callers add special ids
 * themselves (m4_tokenizer_special_id + m4_token_ids_push).
 *
 * Input text must be valid UTF-8 (no surrogates, no overlong forms, ≤ U+10FFFF); otherwise encode
 * fails and the message gives the byte offset. (mistral-common takes Python str, which is always
 * Unicode; tiktoken turns a lone surrogate code point into U+FFFD, which a UTF-8 caller writes as
 * EF BF BD itself.)
 *
 * A loaded tokenizer is read-only: any number of threads may encode and decode with it at once.
 * Every function that can fail returns 0 on success and -1 on failure with a message in *err
 * (loader/m4_error.h); nothing here prints. */
#ifndef M4_TOKENIZER_H
#define M4_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "m4_error.h"

/* Most special tokens a tekken.json may declare (config.default_num_special_tokens), 2^20.
 * Mistral's files have 1000; every one below the file's own list is a filler "<SPECIAL_i>" built
 * at load time, so without a bound a 10 KB file could ask for 2^31 of them (minutes of CPU and
 * tens of GB). */
#define M4_TOKENIZER_MAX_SPECIAL_TOKENS (1 << 20)

typedef struct m4_tokenizer m4_tokenizer;

/* A growable list of token ids (caller-owned; zero-initialise, free with m4_token_ids_free). */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} m4_token_ids;

int m4_token_ids_push(m4_token_ids *list, int32_t id, m4_error *err);
void m4_token_ids_free(m4_token_ids *list);

/* ---- loading -------------------------------------------------------------------------------- */

/* Largest tekken.json read: the published one (131072 ranks, base64 bytes) is about 15 MB. */
#define M4_TOKENIZER_MAX_BYTES ((size_t)64 << 20)

/* Reads and validates a tekken.json (a regular file of at most M4_TOKENIZER_MAX_BYTES). Errors
 * name the file and the field, e.g. "x/tekken.json: vocab[300].token_bytes: invalid base64 at
 * character 3". */
int m4_tokenizer_load(const char *path, m4_tokenizer **out, m4_error *err);

/* The same from JSON text in memory; `name` stands for the file in messages. */
int m4_tokenizer_parse(const char *json, size_t len, const char *name, m4_tokenizer **out,
                       m4_error *err);

void m4_tokenizer_free(m4_tokenizer *tok);

int m4_tokenizer_vocab_size(const m4_tokenizer *tok);   /* all ids: default_vocab_size */
int m4_tokenizer_num_special(const m4_tokenizer *tok);  /* NS */
const char *m4_tokenizer_version(const m4_tokenizer *tok); /* config.version, e.g. "v3" */
const char *m4_tokenizer_pattern(const m4_tokenizer *tok); /* the split regex */
int m4_tokenizer_uses_jit(const m4_tokenizer *tok);    /* 1 when PCRE2's JIT compiled the regex */
/* The Unicode version of PCRE2's property tables ("14.0.0" for PCRE2 10.42). tiktoken's Rust regex
 * has newer tables: letters and digits assigned after that version split differently here. */
const char *m4_tokenizer_unicode_version(const m4_tokenizer *tok);

/* ---- special tokens ------------------------------------------------------------------------- */

/* The id of a special token by its exact string ("<s>", "[INST]", "[IMG]", "[THINK]" …).
 * A string that is not one of this file's special tokens is an error. */
int m4_tokenizer_special_id(const m4_tokenizer *tok, const char *str, int32_t *id, m4_error *err);

/* The string of special id `id` (0 ≤ id < NS), or NULL for any other id. */
const char *m4_tokenizer_special_str(const m4_tokenizer *tok, int32_t id);

/* 1 if `id` is a special token marked is_control (fillers and the fixed ones are), else 0. */
int m4_tokenizer_is_control(const m4_tokenizer *tok, int32_t id);

/* ---- encoding ------------------------------------------------------------------------------- */

/* Appends the ids of `text` (len bytes of UTF-8, NULs allowed) to *out; no BOS/EOS. */
int m4_tokenizer_encode(const m4_tokenizer *tok, const char *text, size_t len, m4_token_ids *out,
                        m4_error *err);

/* ---- decoding ------------------------------------------------------------------------------- */

typedef enum {
    M4_SPECIAL_SKIP = 0, /* special tokens produce nothing (mistral-common's IGNORE, its default) */
    M4_SPECIAL_KEEP = 1  /* special tokens produce their string, e.g. "[INST]" (KEEP) */
} m4_special_policy;

/* The bytes of one id: a BPE token's bytes, or a special token's string. Not NUL-terminated;
 * *len receives the length. An id outside 0..vocab_size-1 is an error. */
int m4_tokenizer_piece(const m4_tokenizer *tok, int32_t id, const uint8_t **bytes, size_t *len,
                       m4_error *err);

/* Concatenates the pieces of ids[0..n) into a new NUL-terminated buffer (*out, free() it; *out_len
 * excludes the NUL). The bytes are returned as they are: ids that split a character give invalid
 * UTF-8, which the streaming decoder below never emits. */
int m4_tokenizer_decode(const m4_tokenizer *tok, const int32_t *ids, size_t n,
                        m4_special_policy policy, char **out, size_t *out_len, m4_error *err);

/* Streaming decoder for generation: feed ids one at a time; each push returns only whole UTF-8
 * characters and keeps the bytes of an incomplete character until the ids that finish it arrive.
 * Bytes that can never form a character (invalid UTF-8) come out as U+FFFD, one per maximal
 * invalid subpart (Python's errors="replace", which mistral-common's decode uses), so the output
 * is always valid UTF-8. */
typedef struct {
    const m4_tokenizer *tok;
    m4_special_policy policy;
    uint8_t pending[4];  /* the start of a character not yet complete */
    int n_pending;
    char *buf;           /* the text returned by the last push/finish (owned) */
    size_t cap;
} m4_detokenizer;

int m4_detokenizer_init(m4_detokenizer *d, const m4_tokenizer *tok, m4_special_policy policy,
                        m4_error *err);

/* Decodes one id. *text points into the detokenizer (valid until the next call), *len bytes,
 * possibly 0 while a character is incomplete. */
int m4_detokenizer_push(m4_detokenizer *d, int32_t id, const char **text, size_t *len,
                        m4_error *err);

/* Ends the stream: an incomplete character left pending comes out as U+FFFD. */
int m4_detokenizer_finish(m4_detokenizer *d, const char **text, size_t *len, m4_error *err);

void m4_detokenizer_free(m4_detokenizer *d);

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

/* Returns the byte offset of the first invalid UTF-8 sequence in s[0..len), or len if it is all
 * valid (strict: no overlong forms, no surrogates, nothing above U+10FFFF). */
size_t m4_utf8_check(const uint8_t *s, size_t len);

#endif
