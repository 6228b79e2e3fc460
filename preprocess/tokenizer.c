/* tokenizer.c — the Tekken tokenizer: tekken.json → ids and back (MODEL.md §6.3; tokenizer.h).
 *
 * Matches mistral-common's Tekkenizer (tekken.py) and the tiktoken encoder under it:
 *   load    the vocabulary is cut to its first default_vocab_size − NS ranks, rank i must sit at
 *           vocab[i], ranks 0–255 must be the 256 single bytes, special tokens come from the file or
 *           (version ≤ v7, none in the file) the fixed DEPRECATED_SPECIAL_TOKENS, then fillers
 *           "<SPECIAL_i>" up to NS − 1; token strings unique.
 *   encode  regex pieces (leftmost-first matches of the file's pattern, in order; text between
 *           matches — none for Mistral's pattern — is dropped as tiktoken drops it); a piece that
 *           is a whole token is that token, otherwise byte-pair merging: repeatedly merge the
 *           adjacent pair whose concatenation has the lowest rank (leftmost on ties) until no
 *           adjacent pair is a token. tiktoken rescans all pairs per merge (O(n²)); here a min-heap
 *           keyed (rank, position) makes the same choices in O(n log n), so a 64 KiB "word" is fast.
 *   ids     rank + NS.
 * Stricter than mistral-common, for clearer errors: config.num_vocab_tokens must equal the length
 * of vocab, base64 must be strict (standard alphabet, "=" only at the end; Python skips stray
 * characters), and special tokens must carry a boolean is_control. The regex goes through PCRE2
 * with \s rewritten (translate_pattern); PCRE2's Unicode tables (14.0 in 10.42) are older than
 * tiktoken's, so letters and digits assigned since split differently
 * (tests/fixtures/tokenizer/README.md). */
#include "tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "m4_file.h"
#include "m4_json.h"

#define NO_RANK UINT32_MAX

struct m4_tokenizer {
    char name[512];          /* the file, for messages */
    char version[16];        /* config.version, "v3" … */
    char *pattern;           /* config.pattern */
    int n_special;           /* NS: ids 0..NS-1 */
    int n_ranks;             /* BPE ranks in use: default_vocab_size − NS */

    /* BPE vocabulary: rank r's bytes are bytes[offset[r] .. offset[r+1]). */
    uint8_t *bytes;
    uint32_t *offset;        /* [n_ranks + 1] */
    uint32_t *slots;         /* open-addressing hash of bytes → rank: slot holds rank + 1, 0 = empty */
    uint32_t slot_mask;      /* number of slots − 1 (a power of two) */

    /* Special tokens: id i's string is special[i] (NUL-terminated, in one arena). */
    char **special;          /* [n_special] */
    uint8_t *is_control;     /* [n_special] */
    char *special_arena;

    size_t max_piece;        /* longest token or special string, in bytes */
    pcre2_code *re;
    int jit;
    char unicode[24];        /* PCRE2's Unicode version, e.g. "14.0.0" */
};

/* mistral-common's Tekkenizer.DEPRECATED_SPECIAL_TOKENS: ids 0..19, all control tokens. */
static const char *const deprecated_special[] = {
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
    "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
};
#define N_DEPRECATED_SPECIAL ((int)(sizeof deprecated_special / sizeof deprecated_special[0]))

/* ------------------------------------------------------------------------------------------------
 * UTF-8 */

/* Classifies the character starting at s[0] (n ≥ 1 bytes available): returns its length when it is
 * a complete valid character; 0 when s[0..n) is the valid start of a character that needs more
 * bytes; −k when the first k bytes are a maximal invalid subpart (Unicode §3.9: each becomes one
 * U+FFFD under "replace"). */
static int utf8_next(const uint8_t *s, size_t n) {
    uint8_t b = s[0], lo = 0x80, hi = 0xBF;
    int need;
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0) lo = 0xA0;      /* no overlong forms */
        if (b == 0xED) hi = 0x9F;      /* no surrogates D800–DFFF */
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0) lo = 0x90;      /* no overlong forms */
        if (b == 0xF4) hi = 0x8F;      /* nothing above U+10FFFF */
    } else
        return -1;
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n) return 0;
        uint8_t c = s[i];
        uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (c < l || c > h) return -i;
    }
    return need;
}

size_t m4_utf8_check(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        int r = utf8_next(s + i, len - i);
        if (r <= 0) return i;
        i += (size_t)r;
    }
    return len;
}

/* ------------------------------------------------------------------------------------------------
 * Token id lists */

int m4_token_ids_push(m4_token_ids *list, int32_t id, m4_error *err) {
    if (list->n == list->cap) {
        size_t cap = list->cap ? 2 * list->cap : 64;
        int32_t *ids = realloc(list->ids, cap * sizeof *ids);
        if (!ids) return m4_fail(err, "tokenizer: out of memory for %zu token ids", cap);
        list->ids = ids;
        list->cap = cap;
    }
    list->ids[list->n++] = id;
    return 0;
}

void m4_token_ids_free(m4_token_ids *list) {
    free(list->ids);
    list->ids = NULL;
    list->n = list->cap = 0;
}

/* ------------------------------------------------------------------------------------------------
 * The bytes → rank hash table (FNV-1a, linear probing). */

static uint32_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3u;
    return (uint32_t)(h ^ (h >> 32));
}

/* The rank of the token whose bytes are p[0..n), or NO_RANK. */
static uint32_t rank_of(const m4_tokenizer *tok, const uint8_t *p, size_t n) {
    for (uint32_t s = hash_bytes(p, n) & tok->slot_mask;; s = (s + 1) & tok->slot_mask) {
        uint32_t v = tok->slots[s];
        if (v == 0) return NO_RANK;
        uint32_t r = v - 1, len = tok->offset[r + 1] - tok->offset[r];
        if (len == n && memcmp(tok->bytes + tok->offset[r], p, n) == 0) return r;
    }
}

/* Inserts rank r; returns the rank already holding the same bytes, or NO_RANK. */
static uint32_t insert_rank(m4_tokenizer *tok, uint32_t r) {
    const uint8_t *p = tok->bytes + tok->offset[r];
    size_t n = tok->offset[r + 1] - tok->offset[r];
    uint32_t s = hash_bytes(p, n) & tok->slot_mask;
    for (; tok->slots[s] != 0; s = (s + 1) & tok->slot_mask) {
        uint32_t q = tok->slots[s] - 1;
        if (tok->offset[q + 1] - tok->offset[q] == n && memcmp(tok->bytes + tok->offset[q], p, n) == 0)
            return q;
    }
    tok->slots[s] = r + 1;
    return NO_RANK;
}

/* ------------------------------------------------------------------------------------------------
 * Loading */

/* obj[key] as an integer in [lo, hi]; `at` is the object's path for messages ("config"). */
static int get_int(const char *name, const json_t *obj, const char *at, const char *key,
                   long long lo, long long hi, long long *out, m4_error *err) {
    const json_t *v = json_object_get(obj, key);
    if (!v) return m4_fail(err, "%s: %s.%s is missing", name, at, key);
    if (!json_is_integer(v))
        return m4_fail(err, "%s: %s.%s must be an integer, not %s", name, at, key, m4_json_kind(v));
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return m4_fail(err, "%s: %s.%s = %lld is out of range [%lld, %lld]", name, at, key, x, lo, hi);
    *out = x;
    return 0;
}

/* obj[key] as a string (may contain no NUL). */
static int get_string(const char *name, const json_t *obj, const char *at, const char *key,
                      const char **out, m4_error *err) {
    const json_t *v = json_object_get(obj, key);
    if (!v) return m4_fail(err, "%s: %s.%s is missing", name, at, key);
    if (!json_is_string(v))
        return m4_fail(err, "%s: %s.%s must be a string, not %s", name, at, key, m4_json_kind(v));
    *out = json_string_value(v);
    if (strlen(*out) != json_string_length(v))
        return m4_fail(err, "%s: %s.%s contains a NUL character", name, at, key);
    return 0;
}

/* Standard base64 (RFC 4648 alphabet, '=' padding, length a multiple of 4) into out, which has
 * room for 3·len/4 bytes. Returns the decoded length, or −1 − (index of the bad character), or
 * −1 − len when the length itself is wrong. */
static long base64_decode(const char *s, size_t len, uint8_t *out) {
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (len % 4 != 0) return -1 - (long)len;
    size_t n = 0;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (size_t k = 0; k < 4; k++) {
            char c = s[i + k];
            const char *hit = c ? strchr(alphabet, c) : NULL;
            /* '=' only as the last one or two characters of the text. */
            if (c == '=' && i + 4 == len && (k == 3 || (k == 2 && s[i + 3] == '='))) {
                pad++;
                v <<= 6;
            } else if (hit && pad == 0) {
                v = (v << 6) | (uint32_t)(hit - alphabet);
            } else {
                return -1 - (long)(i + k);
            }
        }
        out[n++] = (uint8_t)(v >> 16);
        if (pad < 2) out[n++] = (uint8_t)(v >> 8);
        if (pad < 1) out[n++] = (uint8_t)v;
    }
    return (long)n;
}

/* Reads vocab[0 .. n_ranks) into the byte arena and the hash table. */
static int load_vocab(m4_tokenizer *tok, const json_t *vocab, m4_error *err) {
    const char *name = tok->name;
    size_t n = (size_t)tok->n_ranks, total = 0;
    /* First pass: types, ranks and the arena's size. */
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(vocab, i);
        char at[48];
        snprintf(at, sizeof at, "vocab[%zu]", i);
        if (!json_is_object(e))
            return m4_fail(err, "%s: %s must be an object, not %s", name, at, m4_json_kind(e));
        long long rank;
        if (get_int(name, e, at, "rank", 0, 0x7fffffff, &rank, err)) return -1;
        if ((size_t)rank != i) {
            if ((size_t)rank < i)
                return m4_fail(err, "%s: %s.rank = %lld duplicates the rank of vocab[%lld] (ranks "
                               "must be 0, 1, 2, … in order)", name, at, rank, rank);
            return m4_fail(err, "%s: %s.rank = %lld, expected %zu (ranks must be 0, 1, 2, … in "
                           "order)", name, at, rank, i);
        }
        const char *b64;
        if (get_string(name, e, at, "token_bytes", &b64, err)) return -1;
        size_t len = strlen(b64);
        if (len == 0) return m4_fail(err, "%s: %s.token_bytes is empty", name, at);
        if (len > 4096) return m4_fail(err, "%s: %s.token_bytes is too long (%zu)", name, at, len);
        total += len / 4 * 3;
    }
    if (total > UINT32_MAX) return m4_fail(err, "%s: vocabulary bytes exceed 4 GiB", name);

    uint32_t n_slots = 1;
    while (n_slots < 2 * n) n_slots *= 2;
    tok->bytes = malloc(total ? total : 1);
    tok->offset = malloc((n + 1) * sizeof *tok->offset);
    tok->slots = calloc(n_slots, sizeof *tok->slots);
    if (!tok->bytes || !tok->offset || !tok->slots)
        return m4_fail(err, "%s: out of memory for %zu tokens", name, n);
    tok->slot_mask = n_slots - 1;

    /* Second pass: decode, check the single bytes, fill the table. */
    uint32_t at_byte = 0;
    for (size_t i = 0; i < n; i++) {
        const char *b64 = json_string_value(json_object_get(json_array_get(vocab, i), "token_bytes"));
        size_t len = strlen(b64);
        long got = base64_decode(b64, len, tok->bytes + at_byte);
        if (got < 0) {
            size_t bad = (size_t)(-1 - got);
            if (bad == len)
                return m4_fail(err, "%s: vocab[%zu].token_bytes \"%.40s\" is not base64 (length "
                               "%zu is not a multiple of 4)", name, i, b64, len);
            return m4_fail(err, "%s: vocab[%zu].token_bytes \"%.40s\" is not base64 (bad character "
                           "at %zu)", name, i, b64, bad);
        }
        tok->offset[i] = at_byte;
        at_byte += (uint32_t)got;
        tok->offset[i + 1] = at_byte;
        if (i < 256 && (got != 1 || tok->bytes[tok->offset[i]] != i))
            return m4_fail(err, "%s: vocab[%zu] must be the single byte 0x%02zX (ranks 0–255 are "
                           "the 256 bytes)", name, i, i);
        if ((size_t)got > tok->max_piece) tok->max_piece = (size_t)got;
        uint32_t dup = insert_rank(tok, (uint32_t)i);
        if (dup != NO_RANK)
            return m4_fail(err, "%s: vocab[%zu].token_bytes duplicates vocab[%u]", name, i, dup);
    }
    return 0;
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Special tokens: the file's list, or the fixed ones for old files; fillers up to NS. */
static int load_special(m4_tokenizer *tok, const json_t *list, int version_num, m4_error *err) {
    const char *name = tok->name;
    int ns = tok->n_special, n_defined;
    if (list && !json_is_null(list)) {
        if (!json_is_array(list))
            return m4_fail(err, "%s: special_tokens must be an array, not %s", name, m4_json_kind(list));
        if (json_array_size(list) > (size_t)ns)
            return m4_fail(err, "%s: special_tokens has %zu entries but "
                           "config.default_num_special_tokens is %d", name,
                           json_array_size(list), ns);
        n_defined = (int)json_array_size(list);
    } else {
        if (version_num > 7)
            return m4_fail(err, "%s: special_tokens is missing (required for version v%d > v7)",
                           name, version_num);
        if (ns < N_DEPRECATED_SPECIAL)
            return m4_fail(err, "%s: config.default_num_special_tokens = %d is less than the %d "
                           "fixed special tokens", name, ns, N_DEPRECATED_SPECIAL);
        list = NULL;
        n_defined = N_DEPRECATED_SPECIAL;
    }

    /* Sizes first, then one arena for all strings. */
    size_t total = 0;
    for (int i = 0; i < ns; i++) {
        if (i >= n_defined) {
            total += (size_t)snprintf(NULL, 0, "<SPECIAL_%d>", i) + 1;
        } else if (!list) {
            total += strlen(deprecated_special[i]) + 1;
        } else {
            const json_t *e = json_array_get(list, (size_t)i);
            char at[48];
            snprintf(at, sizeof at, "special_tokens[%d]", i);
            if (!json_is_object(e))
                return m4_fail(err, "%s: %s must be an object, not %s", name, at, m4_json_kind(e));
            long long rank;
            const char *s;
            if (get_int(name, e, at, "rank", 0, 0x7fffffff, &rank, err)) return -1;
            if (rank != i) {
                if (rank < i)
                    return m4_fail(err, "%s: %s.rank = %lld duplicates the rank of "
                                   "special_tokens[%lld] (ranks must be 0, 1, 2, … in order)",
                                   name, at, rank, rank);
                return m4_fail(err, "%s: %s.rank = %lld, expected %d (ranks must be 0, 1, 2, … in "
                               "order)", name, at, rank, i);
            }
            if (get_string(name, e, at, "token_str", &s, err)) return -1;
            if (!*s) return m4_fail(err, "%s: %s.token_str is empty", name, at);
            const json_t *c = json_object_get(e, "is_control");
            if (!c) return m4_fail(err, "%s: %s.is_control is missing", name, at);
            if (!json_is_boolean(c))
                return m4_fail(err, "%s: %s.is_control must be true or false, not %s", name, at,
                               m4_json_kind(c));
            total += strlen(s) + 1;
        }
    }
    tok->special = calloc((size_t)ns ? (size_t)ns : 1, sizeof *tok->special);
    tok->is_control = calloc((size_t)ns ? (size_t)ns : 1, 1);
    tok->special_arena = malloc(total ? total : 1);
    if (!tok->special || !tok->is_control || !tok->special_arena)
        return m4_fail(err, "%s: out of memory for %d special tokens", name, ns);
    char *p = tok->special_arena;
    for (int i = 0; i < ns; i++) {
        tok->special[i] = p;
        if (i >= n_defined) {
            p += sprintf(p, "<SPECIAL_%d>", i) + 1;
            tok->is_control[i] = 1;
        } else {
            const json_t *e = list ? json_array_get(list, (size_t)i) : NULL;
            const char *s = list ? json_string_value(json_object_get(e, "token_str"))
                                 : deprecated_special[i];
            size_t n = strlen(s) + 1;
            memcpy(p, s, n);
            p += n;
            tok->is_control[i] = list ? json_is_true(json_object_get(e, "is_control")) : 1;
        }
        size_t n = strlen(tok->special[i]);
        if (n > tok->max_piece) tok->max_piece = n;
    }

    /* Every special string unique (a defined one may clash with a filler "<SPECIAL_i>"). Sorting
     * copies of the pointers puts equal strings side by side. */
    size_t count = ns > 0 ? (size_t)ns : 0;
    char **sorted = malloc((count ? count : 1) * sizeof *sorted);
    if (!sorted) return m4_fail(err, "%s: out of memory", name);
    memcpy(sorted, tok->special, count * sizeof *sorted);
    qsort(sorted, count, sizeof *sorted, compare_strings);
    for (int i = 1; i < ns; i++) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            int first = -1, second = -1;
            for (int k = 0; k < ns; k++) {
                if (strcmp(tok->special[k], sorted[i]) != 0) continue;
                if (first < 0) first = k;
                else if (second < 0) second = k;
            }
            free(sorted);
            return m4_fail(err, "%s: special token \"%s\" appears twice (ids %d and %d%s)", name,
                           tok->special[first], first, second,
                           second >= n_defined ? ", the second a filler" : "");
        }
    }
    free(sorted);
    return 0;
}

/* The tekken patterns are written for tiktoken's Rust regex engine (fancy-regex over the regex
 * crate). Under PCRE2_UTF | PCRE2_UCP the same text means the same thing except for \s: Rust's is
 * the Unicode White_Space property, PCRE2's adds U+180E (Mongolian vowel separator, whitespace
 * before Unicode 6.3). So \s and \S are rewritten as \p{White_Space} and \P{White_Space}, which
 * work inside and outside brackets. Other escapes are copied as they are. */
static char *translate_pattern(const char *pattern) {
    size_t n = strlen(pattern), count = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (pattern[i] == '\\') {
            if (pattern[i + 1] == 's' || pattern[i + 1] == 'S') count++;
            i++;
        }
    char *out = malloc(n + count * 14 + 1);
    if (!out) return NULL;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (pattern[i] == '\\' && i + 1 < n) {
            char c = pattern[++i];
            if (c == 's' || c == 'S') {
                at += (size_t)sprintf(out + at, "\\%c{White_Space}", c == 's' ? 'p' : 'P');
            } else {
                out[at++] = '\\';
                out[at++] = c;
            }
        } else {
            out[at++] = pattern[i];
        }
    }
    out[at] = '\0';
    return out;
}

static int compile_pattern(m4_tokenizer *tok, m4_error *err) {
    char *pattern = translate_pattern(tok->pattern);
    pcre2_compile_context *cctx = pcre2_compile_context_create(NULL);
    if (!pattern || !cctx) {
        free(pattern);
        pcre2_compile_context_free(cctx);
        return m4_fail(err, "%s: out of memory compiling config.pattern", tok->name);
    }
    /* Rust's rules for the rest: "." excludes only \n, "$" is the end of the text only. */
    pcre2_set_newline(cctx, PCRE2_NEWLINE_LF);
    int code;
    PCRE2_SIZE where;
    tok->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                            PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &code, &where, cctx);
    free(pattern);
    pcre2_compile_context_free(cctx);
    if (!tok->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return m4_fail(err, "%s: config.pattern does not compile (PCRE2, after \\s → "
                       "\\p{White_Space}) at offset %zu: %s", tok->name, (size_t)where,
                       (const char *)msg);
    }
    tok->jit = pcre2_jit_compile(tok->re, PCRE2_JIT_COMPLETE) == 0;
    pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, tok->unicode);
    return 0;
}

static int parse_root(m4_tokenizer *tok, const json_t *root, m4_error *err) {
    const char *name = tok->name;
    if (!json_is_object(root))
        return m4_fail(err, "%s: the top level must be an object, not %s", name, m4_json_kind(root));
    const json_t *config = json_object_get(root, "config");
    if (!config) return m4_fail(err, "%s: config is missing", name);
    if (!json_is_object(config))
        return m4_fail(err, "%s: config must be an object, not %s", name, m4_json_kind(config));

    const char *pattern, *version;
    long long vocab_size, n_special, n_vocab_tokens;
    if (get_string(name, config, "config", "pattern", &pattern, err) ||
        get_string(name, config, "config", "version", &version, err) ||
        get_int(name, config, "config", "default_vocab_size", 1, 0x7fffffff, &vocab_size, err) ||
        get_int(name, config, "config", "default_num_special_tokens", 0, 0x7fffffff, &n_special,
                err) ||
        get_int(name, config, "config", "num_vocab_tokens", 0, 0x7fffffff, &n_vocab_tokens, err))
        return -1;
    if (!*pattern) return m4_fail(err, "%s: config.pattern is empty", name);
    if (n_special > M4_TOKENIZER_MAX_SPECIAL_TOKENS)
        return m4_fail(err, "%s: config.default_num_special_tokens = %lld is more than the %d special "
                       "tokens this tokenizer accepts (M4_TOKENIZER_MAX_SPECIAL_TOKENS)", name, n_special,
                       M4_TOKENIZER_MAX_SPECIAL_TOKENS);

    /* "v<number>"; mistral-common knows v1, v2, v3, v7, v11, v13, v15. */
    int version_num = 0, digits = 0;
    if (version[0] == 'v')
        for (const char *c = version + 1; *c >= '0' && *c <= '9' && digits < 6; c++, digits++)
            version_num = 10 * version_num + (*c - '0');
    if (digits == 0 || version[1 + digits] != '\0' || strlen(version) >= sizeof tok->version)
        return m4_fail(err, "%s: config.version \"%s\" is not of the form v<number>", name, version);
    strcpy(tok->version, version);

    const json_t *vocab = json_object_get(root, "vocab");
    if (!vocab) return m4_fail(err, "%s: vocab is missing", name);
    if (!json_is_array(vocab))
        return m4_fail(err, "%s: vocab must be an array, not %s", name, m4_json_kind(vocab));
    if ((size_t)n_vocab_tokens != json_array_size(vocab))
        return m4_fail(err, "%s: config.num_vocab_tokens is %lld but vocab has %zu entries", name,
                       n_vocab_tokens, json_array_size(vocab));
    if (n_special >= vocab_size || vocab_size - n_special < 256)
        return m4_fail(err, "%s: config.default_vocab_size = %lld leaves %lld BPE ranks after %lld "
                       "special tokens; at least the 256 single bytes are needed", name,
                       vocab_size, vocab_size - n_special, n_special);
    if ((size_t)(vocab_size - n_special) > json_array_size(vocab))
        return m4_fail(err, "%s: config.default_vocab_size = %lld needs %lld BPE ranks after %lld "
                       "special tokens, but vocab has only %zu", name, vocab_size,
                       vocab_size - n_special, n_special, json_array_size(vocab));
    tok->n_special = (int)n_special;
    tok->n_ranks = (int)(vocab_size - n_special);

    tok->pattern = malloc(strlen(pattern) + 1);
    if (!tok->pattern) return m4_fail(err, "%s: out of memory", name);
    strcpy(tok->pattern, pattern);

    if (load_vocab(tok, vocab, err)) return -1;
    if (load_special(tok, json_object_get(root, "special_tokens"), version_num, err)) return -1;
    return compile_pattern(tok, err);
}

int m4_tokenizer_parse(const char *json, size_t len, const char *name, m4_tokenizer **out,
                       m4_error *err) {
    *out = NULL;
    m4_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return m4_fail(err, "%s: out of memory", name);
    snprintf(tok->name, sizeof tok->name, "%s", name);

    json_error_t jerr;
    /* token_str may hold "\u0000" (rank 0's string); it is never used, and the strings that are
     * used are checked for NULs. */
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root) {
        m4_fail(err, "%s: invalid JSON at line %d, column %d: %s", name, jerr.line, jerr.column,
                jerr.text);
        m4_tokenizer_free(tok);
        return -1;
    }
    int rc = parse_root(tok, root, err);
    json_decref(root);
    if (rc) {
        m4_tokenizer_free(tok);
        return -1;
    }
    *out = tok;
    return 0;
}

int m4_tokenizer_load(const char *path, m4_tokenizer **out, m4_error *err) {
    *out = NULL;
    char *text;
    size_t len;
    if (m4_file_read_all(path, "the tokenizer file", M4_TOKENIZER_MAX_BYTES, "M4_TOKENIZER_MAX_BYTES", &text, &len,
                         err))
        return -1;
    int rc = m4_tokenizer_parse(text, len, path, out, err);
    free(text);
    return rc;
}

void m4_tokenizer_free(m4_tokenizer *tok) {
    if (!tok) return;
    pcre2_code_free(tok->re);
    free(tok->pattern);
    free(tok->bytes);
    free(tok->offset);
    free(tok->slots);
    free(tok->special);
    free(tok->is_control);
    free(tok->special_arena);
    free(tok);
}

int m4_tokenizer_vocab_size(const m4_tokenizer *tok) { return tok->n_special + tok->n_ranks; }
int m4_tokenizer_num_special(const m4_tokenizer *tok) { return tok->n_special; }
const char *m4_tokenizer_version(const m4_tokenizer *tok) { return tok->version; }
const char *m4_tokenizer_pattern(const m4_tokenizer *tok) { return tok->pattern; }
int m4_tokenizer_uses_jit(const m4_tokenizer *tok) { return tok->jit; }
const char *m4_tokenizer_unicode_version(const m4_tokenizer *tok) { return tok->unicode; }

/* ------------------------------------------------------------------------------------------------
 * Special tokens */

int m4_tokenizer_special_id(const m4_tokenizer *tok, const char *str, int32_t *id, m4_error *err) {
    for (int i = 0; i < tok->n_special; i++) {
        if (strcmp(tok->special[i], str) == 0) {
            *id = i;
            return 0;
        }
    }
    return m4_fail(err, "%s: \"%s\" is not a special token of this tokenizer (version %s)",
                   tok->name, str, tok->version);
}

const char *m4_tokenizer_special_str(const m4_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_special ? tok->special[id] : NULL;
}

int m4_tokenizer_is_control(const m4_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_special && tok->is_control[id];
}

/* ------------------------------------------------------------------------------------------------
 * Encoding */

/* Scratch for merging one piece of n bytes. Part k starts at byte k (parts only ever grow to the
 * right, absorbing their right neighbour), so a part is named by its first byte:
 *   next[k]  first byte of the following part (n for the last)
 *   prev[k]  first byte of the preceding part (NO_RANK for the first)
 *   pair[k]  rank of the bytes of part k + the following part, NO_RANK if that is no token (or k
 *            has been absorbed)
 *   heap     min-heap of (rank << 32 | k); an entry is current while pair[k] still equals its rank */
typedef struct {
    uint32_t *next, *prev, *pair;
    uint64_t *heap;
    size_t heap_n, cap;
} bpe_scratch;

static int scratch_reserve(bpe_scratch *sc, size_t n, m4_error *err) {
    if (n <= sc->cap) return 0;
    size_t cap = sc->cap ? sc->cap : 256;
    while (cap < n) cap *= 2;
    uint32_t *next = realloc(sc->next, cap * sizeof *next);
    if (next) sc->next = next;
    uint32_t *prev = realloc(sc->prev, cap * sizeof *prev);
    if (prev) sc->prev = prev;
    uint32_t *pair = realloc(sc->pair, cap * sizeof *pair);
    if (pair) sc->pair = pair;
    uint64_t *heap = realloc(sc->heap, 3 * cap * sizeof *heap);
    if (heap) sc->heap = heap;
    if (!next || !prev || !pair || !heap)
        return m4_fail(err, "tokenizer encode: out of memory for a %zu-byte piece", n);
    sc->cap = cap;
    return 0;
}

static void heap_push(bpe_scratch *sc, uint64_t key) {
    size_t i = sc->heap_n++;
    while (i > 0 && sc->heap[(i - 1) / 2] > key) {
        sc->heap[i] = sc->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    sc->heap[i] = key;
}

static uint64_t heap_pop(bpe_scratch *sc) {
    uint64_t top = sc->heap[0], last = sc->heap[--sc->heap_n];
    size_t i = 0, n = sc->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && sc->heap[c + 1] < sc->heap[c]) c++;
        if (sc->heap[c] >= last) break;
        sc->heap[i] = sc->heap[c];
        i = c;
    }
    if (n > 0) sc->heap[i] = last;
    return top;
}

/* Sets pair[k] to the rank of bytes p[k .. end) and queues it. */
static void set_pair(const m4_tokenizer *tok, bpe_scratch *sc, const uint8_t *p, uint32_t k,
                     uint32_t end) {
    uint32_t r = rank_of(tok, p + k, end - k);
    sc->pair[k] = r;
    if (r != NO_RANK) heap_push(sc, (uint64_t)r << 32 | k);
}

/* Appends the ids of one regex piece p[0..n). */
static int encode_piece(const m4_tokenizer *tok, const uint8_t *p, size_t n, bpe_scratch *sc,
                        m4_token_ids *out, m4_error *err) {
    uint32_t whole = rank_of(tok, p, n);
    if (whole != NO_RANK) return m4_token_ids_push(out, (int32_t)whole + tok->n_special, err);
    if (n > UINT32_MAX / 2) return m4_fail(err, "tokenizer encode: a %zu-byte piece is too long", n);
    if (scratch_reserve(sc, n, err)) return -1;

    uint32_t len = (uint32_t)n;
    sc->heap_n = 0;
    for (uint32_t k = 0; k < len; k++) {
        sc->next[k] = k + 1;
        sc->prev[k] = k == 0 ? NO_RANK : k - 1;
    }
    for (uint32_t k = 0; k + 1 < len; k++) set_pair(tok, sc, p, k, k + 2);
    sc->pair[len - 1] = NO_RANK;

    while (sc->heap_n > 0) {
        uint64_t key = heap_pop(sc);
        uint32_t rank = (uint32_t)(key >> 32), k = (uint32_t)key;
        if (sc->pair[k] != rank) continue;          /* stale: that pair has changed since */
        uint32_t j = sc->next[k];                   /* part k absorbs part j */
        sc->next[k] = sc->next[j];
        if (sc->next[j] < len) sc->prev[sc->next[j]] = k;
        sc->pair[j] = NO_RANK;
        if (sc->next[k] < len) set_pair(tok, sc, p, k, sc->next[sc->next[k]]);
        else sc->pair[k] = NO_RANK;
        if (sc->prev[k] != NO_RANK) set_pair(tok, sc, p, sc->prev[k], sc->next[k]);
    }

    for (uint32_t k = 0; k < len; k = sc->next[k]) {
        uint32_t r = rank_of(tok, p + k, sc->next[k] - k);   /* always a token: see the header */
        if (m4_token_ids_push(out, (int32_t)r + tok->n_special, err)) return -1;
    }
    return 0;
}

int m4_tokenizer_encode(const m4_tokenizer *tok, const char *text, size_t len, m4_token_ids *out,
                        m4_error *err) {
    const uint8_t *s = (const uint8_t *)text;
    size_t bad = m4_utf8_check(s, len);
    if (bad < len)
        return m4_fail(err, "tokenizer encode: the text is not valid UTF-8 at byte %zu of %zu "
                       "(0x%02X): an invalid or truncated sequence", bad, len, s[bad]);

    pcre2_match_data *md = pcre2_match_data_create_from_pattern(tok->re, NULL);
    pcre2_match_context *mctx = pcre2_match_context_create(NULL);
    pcre2_jit_stack *stack = NULL;
    bpe_scratch sc = {0};
    int rc = 0;
    if (!md || !mctx) {
        rc = m4_fail(err, "tokenizer encode: out of memory");
        goto done;
    }
    size_t at = 0;
    while (at < len) {
        /* The text was checked above, so PCRE2 need not re-check it on every call. */
        int m = pcre2_match(tok->re, s, len, at, PCRE2_NO_UTF_CHECK, md, mctx);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m == PCRE2_ERROR_JIT_STACKLIMIT && !stack) {
            /* The default 32 KiB JIT stack ran out (very long runs); retry with a large one. */
            stack = pcre2_jit_stack_create(1 << 16, 1 << 26, NULL);
            if (!stack) {
                rc = m4_fail(err, "tokenizer encode: out of memory for the regex stack");
                goto done;
            }
            pcre2_jit_stack_assign(mctx, NULL, stack);
            continue;
        }
        if (m < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(m, msg, sizeof msg);
            rc = m4_fail(err, "tokenizer encode: regex match failed at byte %zu: %s", at,
                         (const char *)msg);
            goto done;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t start = ov[0], end = ov[1];
        if (end == start) {
            /* An empty match yields no piece; move on by one character. */
            at = start + (size_t)utf8_next(s + start, len - start);
            continue;
        }
        if (encode_piece(tok, s + start, end - start, &sc, out, err)) {
            rc = -1;
            goto done;
        }
        at = end;
    }
done:
    free(sc.next);
    free(sc.prev);
    free(sc.pair);
    free(sc.heap);
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(mctx);
    pcre2_match_data_free(md);
    return rc;
}

/* ------------------------------------------------------------------------------------------------
 * Decoding */

int m4_tokenizer_piece(const m4_tokenizer *tok, int32_t id, const uint8_t **bytes, size_t *len,
                       m4_error *err) {
    int32_t n_ids = tok->n_special + tok->n_ranks;
    if (id < 0 || id >= n_ids)
        return m4_fail(err, "%s: token id %d is out of range [0, %d)", tok->name, (int)id,
                       (int)n_ids);
    if (id < tok->n_special) {
        *bytes = (const uint8_t *)tok->special[id];
        *len = strlen(tok->special[id]);
    } else {
        uint32_t r = (uint32_t)(id - tok->n_special);
        *bytes = tok->bytes + tok->offset[r];
        *len = tok->offset[r + 1] - tok->offset[r];
    }
    return 0;
}

/* The piece of `id` under `policy` (a skipped special token is empty). */
static int piece_for(const m4_tokenizer *tok, int32_t id, m4_special_policy policy,
                     const uint8_t **bytes, size_t *len, m4_error *err) {
    if (m4_tokenizer_piece(tok, id, bytes, len, err)) return -1;
    if (id < tok->n_special && policy == M4_SPECIAL_SKIP) *len = 0;
    return 0;
}

int m4_tokenizer_decode(const m4_tokenizer *tok, const int32_t *ids, size_t n,
                        m4_special_policy policy, char **out, size_t *out_len, m4_error *err) {
    *out = NULL;
    *out_len = 0;
    size_t total = 0;
    const uint8_t *b = NULL;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (piece_for(tok, ids[i], policy, &b, &len, err)) return -1;
        total += len;
    }
    char *text = malloc(total + 1);
    if (!text) return m4_fail(err, "tokenizer decode: out of memory for %zu bytes", total + 1);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        piece_for(tok, ids[i], policy, &b, &len, NULL);
        memcpy(text + at, b, len);
        at += len;
    }
    text[at] = '\0';
    *out = text;
    *out_len = at;
    return 0;
}

int m4_detokenizer_init(m4_detokenizer *d, const m4_tokenizer *tok, m4_special_policy policy,
                        m4_error *err) {
    memset(d, 0, sizeof *d);
    d->tok = tok;
    d->policy = policy;
    /* Worst case: 3 pending bytes + the longest piece, every byte invalid → 3 bytes (U+FFFD). */
    d->cap = 3 * (3 + tok->max_piece) + 1;
    d->buf = malloc(d->cap);
    if (!d->buf) return m4_fail(err, "tokenizer: out of memory for the streaming decoder");
    return 0;
}

static size_t put_replacement(char *out) {
    out[0] = (char)0xEF;
    out[1] = (char)0xBF;
    out[2] = (char)0xBD;
    return 3;
}

int m4_detokenizer_push(m4_detokenizer *d, int32_t id, const char **text, size_t *len,
                        m4_error *err) {
    *text = d->buf;
    *len = 0;
    const uint8_t *piece = NULL;
    size_t n = 0;
    if (piece_for(d->tok, id, d->policy, &piece, &n, err)) return -1;

    /* Walk pending ++ piece character by character. */
    uint8_t head[4 + 4];
    size_t out = 0, i = 0, total = (size_t)d->n_pending + n;
    for (;;) {
        /* The next ≤ 4 bytes of pending ++ piece, starting at i. */
        size_t k = 0;
        for (; k < 4 && i + k < total; k++) {
            size_t at = i + k;
            head[k] = at < (size_t)d->n_pending ? d->pending[at] : piece[at - (size_t)d->n_pending];
        }
        if (k == 0) break;
        int r = utf8_next(head, k);
        if (r > 0) {
            memcpy(d->buf + out, head, (size_t)r);
            out += (size_t)r;
            i += (size_t)r;
        } else if (r == 0) {
            break;                                  /* incomplete: keep for the next id */
        } else {
            out += put_replacement(d->buf + out);
            i += (size_t)-r;
        }
    }
    /* What is left (0–3 bytes) is the start of a character. */
    uint8_t rest[4];
    int n_rest = 0;
    for (size_t at = i; at < total; at++)
        rest[n_rest++] = at < (size_t)d->n_pending ? d->pending[at] : piece[at - (size_t)d->n_pending];
    memcpy(d->pending, rest, (size_t)n_rest);
    d->n_pending = n_rest;
    d->buf[out] = '\0';
    *len = out;
    return 0;
}

int m4_detokenizer_finish(m4_detokenizer *d, const char **text, size_t *len, m4_error *err) {
    (void)err;
    size_t out = 0;
    if (d->n_pending > 0) out = put_replacement(d->buf);
    d->n_pending = 0;
    d->buf[out] = '\0';
    *text = d->buf;
    *len = out;
    return 0;
}

void m4_detokenizer_free(m4_detokenizer *d) {
    free(d->buf);
    d->buf = NULL;
    d->cap = 0;
}
