/* chat.h — the chat template of Mistral Small 4 as token ids (MODEL.md §6.4): mistral-common's
 * InstructTokenizerV15 with its request normaliser, for conversations of system, user and
 * assistant messages holding text, images and thinking; and the reasoning read back out of a
 * generated answer.
 *
 *   <s> [SYSTEM_PROMPT]system[/SYSTEM_PROMPT]                    (each system message, in place)
 *       [MODEL_SETTINGS]{"reasoning_effort": "none"}[/MODEL_SETTINGS]   (before the first user
 *       [INST]user[/INST]                                                 message only)
 *       assistant</s>   [THINK]thinking[/THINK]answer</s>
 *       [INST]user[/INST] …
 *
 * Normalisation as mistral-common does it: consecutive user (or assistant) messages merge into
 * one, adjacent text joined with "\n\n" (empty text dropped); system messages never merge; a user
 * message of exactly [text, image] is reordered image first; an assistant message of text only
 * loses its trailing spaces. An image becomes its processor expansion: per row of merged patches,
 * cols × [IMG] then [IMG_BREAK], the last [IMG_BREAK] being [IMG_END] (image.h m4_image_tokens).
 * The settings block is always written: "none" is the model's default effort (the published
 * template does the same).
 *
 * Not covered: tools ([AVAILABLE_TOOLS], [TOOL_CALLS], [TOOL_RESULTS]) and JSON-schema response
 * formats. Special tokens are looked up by their string in the tokenizer file, so a file without
 * [MODEL_SETTINGS] or [THINK] fails with a message naming the token. */
#ifndef M4_CHAT_H
#define M4_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "m4_error.h"
#include "tokenizer.h"

typedef enum { M4_ROLE_SYSTEM, M4_ROLE_USER, M4_ROLE_ASSISTANT } m4_chat_role;

typedef enum {
    M4_CHUNK_TEXT,       /* text: UTF-8 */
    M4_CHUNK_IMAGE,      /* an image: its token grid, rows × cols merged patches */
    M4_CHUNK_THINKING    /* assistant reasoning: [THINK]text[/THINK] ([/THINK] only when closed) */
} m4_chat_chunk_kind;

typedef struct {
    m4_chat_chunk_kind kind;
    const char *text;          /* TEXT, THINKING: NUL-terminated UTF-8 */
    int64_t rows, cols;        /* IMAGE: m4_image_token_grid of the preprocessed image */
    int closed;                /* THINKING: 1 = the block was closed with [/THINK] */
} m4_chat_chunk;

typedef struct {
    m4_chat_role role;
    const m4_chat_chunk *chunks;
    size_t n_chunks;
} m4_chat_message;

typedef enum { M4_REASONING_NONE, M4_REASONING_HIGH } m4_reasoning_effort;

/* "none" / "high" → effort; anything else is an error. */
int m4_reasoning_effort_parse(const char *s, m4_reasoning_effort *effort, m4_error *err);

/* Appends the ids of the whole conversation, ready for the model to answer, to *out. The order
 * of roles is checked as mistral-common's v15 validator checks it, refusals worded as it words
 * them (tests/fixtures/chat_refusals/role_orders.json): an empty conversation ("Conversation must
 * have at least one message"), a lone assistant message, a conversation of more than one message
 * ending with an assistant message ("Expected last role User or Tool … but got assistant"), a
 * system message right after an assistant message ("Unexpected role 'system' after role
 * 'assistant'"). So a conversation may start with an assistant message when more follow, and may
 * end with a system message, as mistral-common allows. Fails also on images outside user
 * messages, thinking outside assistant messages, a special token the tokenizer lacks, or text the
 * tokenizer refuses. */
int m4_chat_encode(const m4_tokenizer *tok, const m4_chat_message *messages, size_t n_messages,
                   m4_reasoning_effort effort, m4_token_ids *out, m4_error *err);

/* ---- conversation files (`mistral4 run --chat FILE.json`; docs/INPUTS.md §8) ------------------- */

/* Largest conversation file read, and most image chunks in one. */
#define M4_CHAT_FILE_MAX_BYTES (1L << 20)
#define M4_CHAT_MAX_IMAGES 64

/* A conversation file: a JSON array of messages (or {"messages": [...]}), each {"role": "system" |
 * "user" | "assistant", "content": TEXT or [chunks]}; chunks {"type": "text", "text": …},
 * {"type": "image", "path": FILE} (relative to the file's folder), {"type": "thinking",
 * "thinking": …, "closed": bool}. An image chunk's `rows` holds its index in image_paths until the
 * caller, having preprocessed the image, sets its token grid. */
typedef struct {
    void *json;                    /* the parsed file (jansson); the chunks' strings point into it */
    m4_chat_message *messages;     /* [n_messages] */
    m4_chat_chunk *chunks;         /* every message's chunks in order, then room for extra_chunks */
    size_t n_messages, n_chunks;
    char *image_paths[M4_CHAT_MAX_IMAGES]; /* the image chunks' files in order, resolved; owned */
    int n_images;
} m4_chat_file;

/* Reads and checks a conversation file, keeping `extra_chunks` free chunk slots after the file's
 * (for images a caller adds). Fails, naming the file and the message/chunk, on a file that is not
 * a regular file or is larger than M4_CHAT_FILE_MAX_BYTES, invalid JSON, duplicate keys, a bad
 * role, content or chunk, or more than M4_CHAT_MAX_IMAGES images. Roles' order and chunk kinds
 * per role are m4_chat_encode's to check. */
int m4_chat_file_read(const char *path, size_t extra_chunks, m4_chat_file *out, m4_error *err);
void m4_chat_file_free(m4_chat_file *f);

/* A generated answer read back: the text of its [THINK]…[/THINK] block (the first one; "" when
 * there is none) and the text outside it, special tokens such as </s> left out; both
 * NUL-terminated, free() them. *think_closed says whether the block was closed (0 also when
 * there is no block; *has_think tells them apart). Any pointer but tok, ids and err may be NULL. */
int m4_chat_split_thinking(const m4_tokenizer *tok, const int32_t *ids, size_t n, char **thinking,
                           char **answer, int *has_think, int *think_closed, m4_error *err);

#endif
