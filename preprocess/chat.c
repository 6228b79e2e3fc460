/* chat.c — the v15 chat template as token ids: mistral-common's request normaliser
 * (InstructRequestNormalizerV15: merge consecutive same-role messages) and instruct tokenizer
 * (InstructTokenizerV15.encode_instruct), for text, image and thinking chunks; and the
 * [THINK]…[/THINK] block read back out of generated ids (MODEL.md §6.4). */
#include "chat.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "m4_file.h"

int m4_reasoning_effort_parse(const char *s, m4_reasoning_effort *effort, m4_error *err) {
    if (strcmp(s, "none") == 0) *effort = M4_REASONING_NONE;
    else if (strcmp(s, "high") == 0) *effort = M4_REASONING_HIGH;
    else return m4_fail(err, "reasoning effort '%s': must be none or high", s);
    return 0;
}

/* ---- normalisation: one turn per group of consecutive same-role messages -------------------- */

/* A chunk of a normalised turn: merged text (owned), or a caller's image / thinking chunk. */
typedef struct {
    m4_chat_chunk_kind kind;
    char *text;                   /* TEXT: owned, NUL-terminated */
    const m4_chat_chunk *chunk;   /* IMAGE, THINKING */
} piece;

typedef struct {
    m4_chat_role role;
    piece *pieces;
    size_t n;
} turn;

static void free_turns(turn *turns, size_t n) {
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < turns[i].n; k++) free(turns[i].pieces[k].text);
        free(turns[i].pieces);
    }
    free(turns);
}

static const char *role_name(m4_chat_role r) {
    return r == M4_ROLE_SYSTEM ? "system" : r == M4_ROLE_USER ? "user" : "assistant";
}

/* _aggregate_content_chunks: the chunks of messages[first, last) in order, adjacent text joined
 * with "\n\n" (within and across messages alike), empty text dropped. */
static int aggregate(const m4_chat_message *messages, size_t first, size_t last, turn *t,
                     m4_error *err) {
    size_t cap = 1;
    for (size_t m = first; m < last; m++) cap += messages[m].n_chunks;
    t->pieces = calloc(cap, sizeof *t->pieces);
    if (!t->pieces) return m4_fail(err, "chat: out of memory");
    char *text = NULL;                       /* the text being merged, NULL when none */
    size_t len = 0;
    for (size_t m = first; m < last; m++)
        for (size_t c = 0; c < messages[m].n_chunks; c++) {
            const m4_chat_chunk *ch = &messages[m].chunks[c];
            if (ch->kind == M4_CHUNK_TEXT) {
                if (!ch->text) {
                    free(text);              /* the text merged so far is in no piece yet */
                    return m4_fail(err, "chat: message %zu chunk %zu: text is NULL", m, c);
                }
                const size_t add = strlen(ch->text);
                if (add == 0) continue;
                const size_t sep = text ? 2 : 0;
                char *grown = realloc(text, len + sep + add + 1);
                if (!grown) {
                    free(text);
                    return m4_fail(err, "chat: out of memory");
                }
                text = grown;
                memcpy(text + len, "\n\n", sep);
                memcpy(text + len + sep, ch->text, add + 1);
                len += sep + add;
            } else {
                if (text) t->pieces[t->n++] = (piece){.kind = M4_CHUNK_TEXT, .text = text};
                text = NULL, len = 0;
                t->pieces[t->n++] = (piece){.kind = ch->kind, .chunk = ch};
            }
        }
    if (text) t->pieces[t->n++] = (piece){.kind = M4_CHUNK_TEXT, .text = text};
    return 0;
}

/* InstructRequestNormalizerV15._aggregate_messages: consecutive user or assistant messages
 * become one turn; each system message stays its own. */
static int normalise(const m4_chat_message *messages, size_t n, turn **out, size_t *n_out,
                     m4_error *err) {
    turn *turns = calloc(n, sizeof *turns);
    size_t nt = 0;
    if (!turns) return m4_fail(err, "chat: out of memory");
    for (size_t i = 0; i < n;) {
        const m4_chat_role role = messages[i].role;
        if (role != M4_ROLE_SYSTEM && role != M4_ROLE_USER && role != M4_ROLE_ASSISTANT) {
            free_turns(turns, nt);
            return m4_fail(err, "chat: message %zu has an unknown role (%d)", i, (int)role);
        }
        size_t j = i + 1;
        if (role != M4_ROLE_SYSTEM)
            while (j < n && messages[j].role == role) j++;
        turns[nt].role = role;
        if (aggregate(messages, i, j, &turns[nt++], err)) {
            free_turns(turns, nt);
            return -1;
        }
        i = j;
    }
    *out = turns, *n_out = nt;
    return 0;
}

/* ---- encoding -------------------------------------------------------------------------------- */

/* The special tokens the template writes, looked up by string. */
typedef struct {
    int32_t bos, eos, inst, end_inst, system, end_system, settings, end_settings;
    int32_t think, end_think, img, img_break, img_end;
    int have_think;
} specials;

static int lookup(const m4_tokenizer *tok, const char *s, int32_t *id, m4_error *err) {
    return m4_tokenizer_special_id(tok, s, id, err) ? m4_fail_context(err, "chat template") : 0;
}

static int lookup_specials(const m4_tokenizer *tok, specials *sp, m4_error *err) {
    m4_error ignored;
    if (lookup(tok, "<s>", &sp->bos, err) || lookup(tok, "</s>", &sp->eos, err) ||
        lookup(tok, "[INST]", &sp->inst, err) || lookup(tok, "[/INST]", &sp->end_inst, err) ||
        lookup(tok, "[SYSTEM_PROMPT]", &sp->system, err) ||
        lookup(tok, "[/SYSTEM_PROMPT]", &sp->end_system, err) ||
        lookup(tok, "[MODEL_SETTINGS]", &sp->settings, err) ||
        lookup(tok, "[/MODEL_SETTINGS]", &sp->end_settings, err) ||
        lookup(tok, "[IMG]", &sp->img, err) || lookup(tok, "[IMG_BREAK]", &sp->img_break, err) ||
        lookup(tok, "[IMG_END]", &sp->img_end, err))
        return -1;
    /* [THINK] is needed only when a conversation holds thinking */
    sp->have_think = !m4_tokenizer_special_id(tok, "[THINK]", &sp->think, &ignored) &&
                     !m4_tokenizer_special_id(tok, "[/THINK]", &sp->end_think, &ignored);
    return 0;
}

static int encode_text(const m4_tokenizer *tok, const char *text, size_t len, m4_token_ids *out,
                       m4_error *err) {
    return len ? m4_tokenizer_encode(tok, text, len, out, err) : 0;
}

/* One chunk of a turn: text, an image's [IMG] grid, or a thinking block. */
static int encode_piece(const m4_tokenizer *tok, const specials *sp, const piece *p, size_t len,
                        m4_token_ids *out, m4_error *err) {
    if (p->kind == M4_CHUNK_TEXT) return encode_text(tok, p->text, len, out, err);
    const m4_chat_chunk *c = p->chunk;
    if (p->kind == M4_CHUNK_IMAGE) {
        if (c->rows <= 0 || c->cols <= 0 || c->rows > M4_IMAGE_MAX_PIXELS / c->cols)
            return m4_fail(err, "chat: an image chunk has a %lld x %lld token grid", (long long)c->rows,
                           (long long)c->cols);
        const m4_image_token_ids ids = {.img = sp->img, .img_break = sp->img_break, .img_end = sp->img_end};
        for (int64_t k = 0; k < c->rows * (c->cols + 1); k++)
            if (m4_token_ids_push(out, (int32_t)m4_image_block_token(c->rows, c->cols, &ids, k), err)) return -1;
        return 0;
    }
    if (!sp->have_think)
        return m4_fail(err, "chat template: the tokenizer has no special tokens [THINK] / [/THINK]");
    if (!c->text) return m4_fail(err, "chat: a thinking chunk's text is NULL");
    if (m4_token_ids_push(out, sp->think, err) || encode_text(tok, c->text, strlen(c->text), out, err))
        return -1;
    return c->closed ? m4_token_ids_push(out, sp->end_think, err) : 0;
}

/* The order of roles as mistral-common's v15 validator checks it
 * (MistralRequestValidator._validate_message_list_structure, before merging), its rules in its
 * order and with its wording, so a refusal reads the same here and there
 * (tests/fixtures/chat_refusals/role_orders.json): at least one message; a lone message is a
 * system or user one; a longer conversation does not end with an assistant message (a system
 * message may end it); a system message never follows an assistant message. Tool messages and
 * assistant prefixes, which the rules also name, are not part of this template. */
static int validate_roles(const m4_chat_message *messages, size_t n, m4_error *err) {
    if (n == 0) return m4_fail(err, "chat: Conversation must have at least one message");
    if (n == 1 && messages[0].role == M4_ROLE_ASSISTANT)
        return m4_fail(err, "chat: Conversation must start with a user message or system message");
    if (n > 1 && messages[n - 1].role == M4_ROLE_ASSISTANT)
        return m4_fail(err, "chat: Expected last role User or Tool (or Assistant with prefix) for serving but "
                            "got %s", role_name(messages[n - 1].role));
    for (size_t i = 1; i < n; i++)
        if (messages[i - 1].role == M4_ROLE_ASSISTANT && messages[i].role == M4_ROLE_SYSTEM)
            return m4_fail(err, "chat: message %zu: Unexpected role '%s' after role '%s'", i,
                           role_name(messages[i].role), role_name(messages[i - 1].role));
    return 0;
}

/* Checks which chunk kinds a role may hold (system: text; user: text, images; assistant: text,
 * thinking), after merging. */
static int validate(const turn *turns, size_t n, m4_error *err) {
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < turns[i].n; k++) {
            const m4_chat_chunk_kind kind = turns[i].pieces[k].kind;
            const char *article = turns[i].role == M4_ROLE_ASSISTANT ? "an" : "a";
            if (kind == M4_CHUNK_IMAGE && turns[i].role != M4_ROLE_USER)
                return m4_fail(err, "chat: images are only allowed in user messages (found one in %s %s "
                                    "message)", article, role_name(turns[i].role));
            if (kind == M4_CHUNK_THINKING && turns[i].role != M4_ROLE_ASSISTANT)
                return m4_fail(err, "chat: thinking is only allowed in assistant messages (found some "
                                    "in %s %s message)", article, role_name(turns[i].role));
        }
    for (size_t i = 0; i < n; i++)
        if (turns[i].role == M4_ROLE_ASSISTANT && turns[i].n == 0)
            return m4_fail(err, "chat: an assistant message has no content");
    return 0;
}

int m4_chat_encode(const m4_tokenizer *tok, const m4_chat_message *messages, size_t n_messages,
                   m4_reasoning_effort effort, m4_token_ids *out, m4_error *err) {
    specials sp;
    if (validate_roles(messages, n_messages, err) || lookup_specials(tok, &sp, err)) return -1;
    turn *turns = NULL;
    size_t n = 0;
    if (normalise(messages, n_messages, &turns, &n, err)) return -1;
    int rc = -1, settings_written = 0;
    if (validate(turns, n, err) || m4_token_ids_push(out, sp.bos, err)) goto done;
    for (size_t i = 0; i < n; i++) {
        turn *t = &turns[i];
        if (t->role == M4_ROLE_SYSTEM) {                  /* [SYSTEM_PROMPT]text[/SYSTEM_PROMPT] */
            if (m4_token_ids_push(out, sp.system, err)) goto done;
            for (size_t k = 0; k < t->n; k++)
                if (encode_piece(tok, &sp, &t->pieces[k], t->pieces[k].text ? strlen(t->pieces[k].text) : 0,
                                 out, err))
                    goto done;
            if (m4_token_ids_push(out, sp.end_system, err)) goto done;
        } else if (t->role == M4_ROLE_USER) {
            if (!settings_written) {                      /* before the first user message */
                const char *json = effort == M4_REASONING_HIGH ? "{\"reasoning_effort\": \"high\"}"
                                                               : "{\"reasoning_effort\": \"none\"}";
                if (m4_token_ids_push(out, sp.settings, err) || encode_text(tok, json, strlen(json), out, err) ||
                    m4_token_ids_push(out, sp.end_settings, err))
                    goto done;
                settings_written = 1;
            }
            if (m4_token_ids_push(out, sp.inst, err)) goto done;
            /* exactly one text then one image: the image goes first (force_img_first) */
            const int swap = t->n == 2 && t->pieces[0].kind == M4_CHUNK_TEXT && t->pieces[1].kind == M4_CHUNK_IMAGE;
            for (size_t k = 0; k < t->n; k++) {
                const piece *p = &t->pieces[swap ? 1 - k : k];
                if (encode_piece(tok, &sp, p, p->text ? strlen(p->text) : 0, out, err)) goto done;
            }
            if (m4_token_ids_push(out, sp.end_inst, err)) goto done;
        } else {                                          /* assistant: content then </s> */
            const int text_only = t->n == 1 && t->pieces[0].kind == M4_CHUNK_TEXT;
            for (size_t k = 0; k < t->n; k++) {
                const piece *p = &t->pieces[k];
                size_t len = p->text ? strlen(p->text) : 0;
                if (text_only)                            /* a plain string content: rstrip(" ") */
                    while (len > 0 && p->text[len - 1] == ' ') len--;
                if (encode_piece(tok, &sp, p, len, out, err)) goto done;
            }
            if (m4_token_ids_push(out, sp.eos, err)) goto done;
        }
    }
    rc = 0;
done:
    free_turns(turns, n);
    return rc;
}

/* ---- reading the reasoning back -------------------------------------------------------------- */

int m4_chat_split_thinking(const m4_tokenizer *tok, const int32_t *ids, size_t n, char **thinking,
                           char **answer, int *has_think, int *think_closed, m4_error *err) {
    m4_error ignored;
    int32_t think = -1, end_think = -1;
    const int known = !m4_tokenizer_special_id(tok, "[THINK]", &think, &ignored) &&
                      !m4_tokenizer_special_id(tok, "[/THINK]", &end_think, &ignored);
    m4_token_ids in = {0}, outside = {0};
    int state = 0;                 /* 0 before the block, 1 inside, 2 after it */
    int rc = -1;
    char *t = NULL, *a = NULL;
    size_t len;
    for (size_t i = 0; i < n; i++) {
        if (known && state == 0 && ids[i] == think) { state = 1; continue; }
        if (known && state == 1 && ids[i] == end_think) { state = 2; continue; }
        if (m4_token_ids_push(state == 1 ? &in : &outside, ids[i], err)) goto done;
    }
    if (m4_tokenizer_decode(tok, in.ids, in.n, M4_SPECIAL_SKIP, &t, &len, err) ||
        m4_tokenizer_decode(tok, outside.ids, outside.n, M4_SPECIAL_SKIP, &a, &len, err))
        goto done;
    if (has_think) *has_think = state != 0;
    if (think_closed) *think_closed = state == 2;
    if (thinking) *thinking = t, t = NULL;
    if (answer) *answer = a, a = NULL;
    rc = 0;
done:
    free(t), free(a);
    m4_token_ids_free(&in), m4_token_ids_free(&outside);
    return rc;
}

/* ---- conversation files ------------------------------------------------------------------------ */

void m4_chat_file_free(m4_chat_file *f) {
    json_decref(f->json);
    free(f->messages), free(f->chunks);
    for (int i = 0; i < f->n_images; i++) free(f->image_paths[i]);
    memset(f, 0, sizeof *f);
}

/* The file's folder ("." for a bare name), malloc'ed. */
static char *folder_of(const char *path) {
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    char *dir = malloc(n + 2);
    if (!dir) return NULL;
    if (slash) memcpy(dir, path, n), dir[n] = '\0';
    else strcpy(dir, ".");
    if (slash && n == 0) strcpy(dir, "/");
    return dir;
}

static int read_chunk(const char *file, size_t m, size_t k, json_t *j, const char *dir, m4_chat_chunk *c,
                      m4_chat_file *f, m4_error *err) {
    const char *type = json_is_object(j) ? json_string_value(json_object_get(j, "type")) : NULL;
    if (!type) return m4_fail(err, "%s: message %zu chunk %zu: not an object with a \"type\"", file, m, k);
    const char *field = strcmp(type, "image") == 0 ? "path" : type;
    if (strcmp(type, "text") && strcmp(type, "thinking") && strcmp(type, "image"))
        return m4_fail(err, "%s: message %zu chunk %zu: unknown type \"%s\" (text, image or thinking)", file, m, k, type);
    const char *value = json_string_value(json_object_get(j, field));
    if (!value)
        return m4_fail(err, "%s: message %zu chunk %zu: a \"%s\" chunk needs its \"%s\" string", file, m, k, type, field);
    if (strcmp(type, "text") == 0) {
        *c = (m4_chat_chunk){.kind = M4_CHUNK_TEXT, .text = value};
    } else if (strcmp(type, "thinking") == 0) {
        json_t *closed = json_object_get(j, "closed");
        *c = (m4_chat_chunk){.kind = M4_CHUNK_THINKING, .text = value, .closed = closed ? json_is_true(closed) : 1};
    } else {
        if (f->n_images == M4_CHAT_MAX_IMAGES)
            return m4_fail(err, "%s: message %zu chunk %zu: more than %d images", file, m, k, M4_CHAT_MAX_IMAGES);
        const size_t need = strlen(dir) + strlen(value) + 2;
        char *resolved = malloc(need);
        if (!resolved) return m4_fail(err, "%s: out of memory", file);
        if (value[0] == '/') snprintf(resolved, need, "%s", value);
        else snprintf(resolved, need, "%s/%s", dir, value);
        *c = (m4_chat_chunk){.kind = M4_CHUNK_IMAGE, .rows = f->n_images};
        f->image_paths[f->n_images++] = resolved;
    }
    return 0;
}

static int read_messages(const char *path, size_t extra_chunks, const char *dir, m4_chat_file *f, m4_error *err) {
    json_t *root = f->json;
    json_t *msgs = json_is_array(root) ? root : json_object_get(root, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return m4_fail(err, "%s: expected a non-empty array of messages (or {\"messages\": [...]})", path);
    size_t n_chunks = 0;
    for (size_t m = 0; m < json_array_size(msgs); m++) {
        json_t *content = json_object_get(json_array_get(msgs, m), "content");
        n_chunks += json_is_array(content) ? json_array_size(content) : 1;
    }
    f->n_messages = json_array_size(msgs);
    f->messages = calloc(f->n_messages, sizeof *f->messages);
    f->chunks = calloc(n_chunks + extra_chunks, sizeof *f->chunks);
    if (!f->messages || !f->chunks) return m4_fail(err, "%s: out of memory for %zu chunks", path, n_chunks);
    for (size_t m = 0; m < f->n_messages; m++) {
        json_t *msg = json_array_get(msgs, m);
        const char *role = json_is_object(msg) ? json_string_value(json_object_get(msg, "role")) : NULL;
        json_t *content = json_is_object(msg) ? json_object_get(msg, "content") : NULL;
        m4_chat_message *out = &f->messages[m];
        if (!role || (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")))
            return m4_fail(err, "%s: message %zu: \"role\" must be system, user or assistant", path, m);
        out->role = role[0] == 's' ? M4_ROLE_SYSTEM : role[0] == 'u' ? M4_ROLE_USER : M4_ROLE_ASSISTANT;
        m4_chat_chunk *chunks = f->chunks + f->n_chunks;
        out->chunks = chunks;
        if (json_is_string(content)) {
            chunks[0] = (m4_chat_chunk){.kind = M4_CHUNK_TEXT, .text = json_string_value(content)};
            out->n_chunks = 1;
        } else if (json_is_array(content)) {
            for (size_t k = 0; k < json_array_size(content); k++)
                if (read_chunk(path, m, k, json_array_get(content, k), dir, &chunks[k], f, err)) return -1;
            out->n_chunks = json_array_size(content);
        } else {
            return m4_fail(err, "%s: message %zu: \"content\" must be a string or an array of chunks", path, m);
        }
        f->n_chunks += out->n_chunks;
    }
    return 0;
}

int m4_chat_file_read(const char *path, size_t extra_chunks, m4_chat_file *out, m4_error *err) {
    memset(out, 0, sizeof *out);
    char *text;
    size_t size;
    if (m4_file_read_all(path, "the conversation file", M4_CHAT_FILE_MAX_BYTES, "M4_CHAT_FILE_MAX_BYTES", &text,
                         &size, err))
        return -1;
    json_error_t jerr;
    out->json = json_loadb(text, size, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!out->json) return m4_fail(err, "%s: line %d: %s", path, jerr.line, jerr.text);
    char *dir = folder_of(path);
    int rc = dir ? read_messages(path, extra_chunks, dir, out, err) : m4_fail(err, "%s: out of memory", path);
    free(dir);
    if (rc) m4_chat_file_free(out);
    return rc;
}
