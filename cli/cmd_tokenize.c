/* cmd_tokenize.c — `mistral4 tokenize`: text, one user message or a conversation file → token ids
 * with the Tekken tokenizer and the v15 chat template (preprocess/tokenizer.h, chat.h, the prompt
 * glue `run` uses: prompt.h), the [IMG] layout of the prompt's images; and ids → text. No model
 * weights are read. */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "generation.h"
#include "m4_file.h"
#include "prompt.h"
#include "tokenizer.h"

#define CMD "tokenize"
/* Largest text read from a file or standard input (a TEXT argument is bounded by the system). */
#define MAX_TEXT_BYTES (64L << 20)

static void print_help(void) {
    printf(
        "Usage: mistral4 tokenize (--model DIR | --tokenizer FILE) [TEXT... | --file FILE] [options]\n"
        "       mistral4 tokenize (--model DIR | --tokenizer FILE) --prompt TEXT | --chat FILE.json\n"
        "       mistral4 tokenize (--model DIR | --tokenizer FILE) --decode [LIST...]\n"
        "\n"
        "Turns text into the token ids of the Tekken tokenizer (tekken.json), and ids back into text.\n"
        "No model weights are read. The ids are the ones `mistral4 run` feeds for the same prompt\n"
        "(`run --print-prompt` shows them) and the ones mistral-common gives: Tekkenizer.encode(text,\n"
        "bos=False, eos=False) for text, the v15 chat template (InstructTokenizerV15) for a prompt or\n"
        "a conversation.\n"
        "\n"
        "Input (one kind):\n"
        "  TEXT...              each TEXT encoded as it is: no <s>, no template, and special-token text\n"
        "                       such as [INST] is ordinary text; one result per TEXT ('--' ends the\n"
        "                       options, for a TEXT that starts with '-')\n"
        "  --file FILE          the bytes of FILE (a regular file; '-': standard input), a final newline\n"
        "                       included, up to %ld MiB. With no input given: standard input\n"
        "  --prompt TEXT        one user message through the v15 chat template, as `run --prompt`:\n"
        "                       <s>[MODEL_SETTINGS]{\"reasoning_effort\": …}[/MODEL_SETTINGS][INST]…[/INST]\n"
        "  --chat FILE.json     a conversation through the template: the file `run --chat` reads\n"
        "                       (docs/INPUTS.md §8), its roles in an order mistral-common accepts\n"
        "  --decode [LIST...]   ids → text, one text per LIST of ids (separated by commas or spaces;\n"
        "                       no LIST: one list from --file or standard input). Invalid UTF-8 (ids\n"
        "                       that split a character) comes out as U+FFFD, as mistral-common decodes\n"
        "\n"
        "Options:\n"
        "  --model DIR          the model folder: DIR/tekken.json, and DIR/config.json for images\n"
        "  --tokenizer FILE     a tekken.json (no images: they need the model's config)\n"
        "  --image FILE         with --prompt or --chat: a PNG or JPEG, as `run --image` (repeatable)\n"
        "  --raw                with --prompt: <s> then the text, no template (as `run --raw`)\n"
        "  --reasoning EFFORT   with --prompt or --chat: none (default) or high\n"
        "  --skip-special       with --decode: special tokens give no text (default: their string,\n"
        "                       e.g. [INST], so a prompt decodes as it is laid out)\n"
        "  --json               one JSON object per input, one per line (fields below)\n"
        "  -h, --help           show this help\n"
        "\n"
        "Output: one line of ids per input, separated by spaces; with --decode the text of each LIST\n"
        "followed by a newline. With --prompt or --chat, stderr says how many tokens and, for each\n"
        "image, its grid of merged patches and where its block starts: rows × cols [IMG], each row\n"
        "closed by [IMG_BREAK], the last by [IMG_END] (the Pixtral processor's layout).\n"
        "JSON fields: input (text, file, prompt, chat or ids), count, ids, pieces (each id's string:\n"
        "a special token's, or its bytes; null where an id holds part of a character), images\n"
        "([{path, rows, cols, tokens, start}], --prompt/--chat), text (--decode: exactly the text,\n"
        "with no newline added).\n"
        "\n"
        "Examples:\n"
        "  mistral4 tokenize --model /models/Mistral-Small-4-119B-2603 'Hello, world!'\n"
        "  mistral4 tokenize --model DIR --prompt 'What is this?' --image cat.png --json\n"
        "  mistral4 tokenize --model DIR --chat conversation.json --reasoning high\n"
        "  mistral4 tokenize --model DIR 'Hello' | mistral4 tokenize --model DIR --decode\n"
        "\n"
        "Exit status: 0 done, 1 the tokenizer, text, conversation, images or ids could not be used,\n"
        "2 usage error.\n",
        MAX_TEXT_BYTES >> 20);
}

/* ---- the command line ----------------------------------------------------------------------- */

typedef struct {
    const char *model_dir, *tokenizer, *file, *prompt, *chat;
    char **inputs;               /* the TEXTs, or with --decode the LISTs; [n_inputs] */
    int n_inputs;
    const char *images[CLI_PROMPT_MAX_IMAGES];
    int n_images;
    bool decode, raw, skip_special, json, effort_given;
    m4_reasoning_effort effort;
} tokenize_args;

/* Returns CLI_OK, CLI_USAGE (message printed), or -1 for --help (printed). The TEXTs or LISTs are
 * gathered at the front of argv[1..] (as getopt permutes it): a->inputs points there. */
static int parse_args(int argc, char **argv, tokenize_args *a) {
    *a = (tokenize_args){.effort = M4_REASONING_NONE, .inputs = argv + 1};
    bool options_end = false;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (options_end || o[0] != '-' || o[1] == '\0') {      /* a TEXT or LIST ("-" too) */
            a->inputs[a->n_inputs++] = argv[i];   /* into argv[1 + n_inputs], at or before i: read already */
            continue;
        }
        if (cli_is_help(o)) {
            print_help();
            return -1;
        }
        bool *flag = strcmp(o, "--decode") == 0 ? &a->decode : strcmp(o, "--raw") == 0 ? &a->raw
                   : strcmp(o, "--skip-special") == 0 ? &a->skip_special : strcmp(o, "--json") == 0 ? &a->json
                   : NULL;
        if (flag) {
            *flag = true;
            continue;
        }
        if (strcmp(o, "--") == 0) {
            options_end = true;
            continue;
        }
        static const char *const with_value[] = {"--model", "--tokenizer", "--file", "--prompt", "--chat",
                                                 "--image", "--reasoning"};
        bool known = false;
        for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++) known |= strcmp(o, with_value[k]) == 0;
        if (!known) return cli_usage_error(CMD, "unknown option '%s'", o);
        if (i + 1 >= argc) return cli_usage_error(CMD, "%s needs a value", o);
        const char *v = argv[++i];
        m4_error err;
        if (strcmp(o, "--model") == 0) a->model_dir = v;
        else if (strcmp(o, "--tokenizer") == 0) a->tokenizer = v;
        else if (strcmp(o, "--file") == 0) a->file = v;
        else if (strcmp(o, "--prompt") == 0) a->prompt = v;
        else if (strcmp(o, "--chat") == 0) a->chat = v;
        else if (strcmp(o, "--image") == 0) {
            if (a->n_images == CLI_PROMPT_MAX_IMAGES)
                return cli_usage_error(CMD, "at most %d --image files", CLI_PROMPT_MAX_IMAGES);
            a->images[a->n_images++] = v;
        } else {
            if (m4_reasoning_effort_parse(v, &a->effort, &err)) return cli_usage_error(CMD, "--reasoning: %s", err.msg);
            a->effort_given = true;
        }
    }
    if (!!a->model_dir + !!a->tokenizer != 1) return cli_usage_error(CMD, "give one of --model DIR and --tokenizer FILE");
    const int kinds = (a->n_inputs > 0) + !!a->file + !!a->prompt + !!a->chat;
    if (kinds > 1)
        return cli_usage_error(CMD, "give one input: TEXT arguments, --file, --prompt or --chat%s",
                               a->decode ? " (with --decode: LIST arguments or --file)" : "");
    if (a->decode && (a->prompt || a->chat)) return cli_usage_error(CMD, "--decode takes ids, not --prompt or --chat");
    const bool template = a->prompt || a->chat;
    if (a->n_images && !template) return cli_usage_error(CMD, "--image goes with --prompt or --chat");
    if (a->effort_given && !template) return cli_usage_error(CMD, "--reasoning goes with --prompt or --chat");
    if (a->raw && !a->prompt) return cli_usage_error(CMD, "--raw goes with --prompt");
    if (a->raw && a->n_images) return cli_usage_error(CMD, "--raw has no place for images");
    if (a->skip_special && !a->decode) return cli_usage_error(CMD, "--skip-special goes with --decode");
    return CLI_OK;
}

/* ---- reading ----------------------------------------------------------------------------------- */

/* The bytes of `path` into a malloc'ed buffer with a NUL after them, at most MAX_TEXT_BYTES: a
 * regular file through the loader's one careful open (m4_file.h: a FIFO or device is refused, not
 * read), or standard input for "-". Prints the error and returns -1. */
static int read_text(const char *path, char **out, size_t *len) {
    m4_error err;
    if (strcmp(path, "-") != 0) {
        if (m4_file_read_all(path, "the text file", (size_t)MAX_TEXT_BYTES, "64 MiB", out, len, &err) == 0) return 0;
        cli_error(CMD, "%s", err.msg);
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            cli_error(CMD, "standard input: out of memory (%zu bytes)", cap);
            return -1;
        }
        if (n > (size_t)MAX_TEXT_BYTES) {
            cli_error(CMD, "standard input: more than the %ld MiB of text tokenize reads", MAX_TEXT_BYTES >> 20);
            free(buf);
            return -1;
        }
        if (n + 1 == cap) {
            char *grown = realloc(buf, 2 * cap);
            if (!grown) free(buf);
            buf = grown, cap *= 2;
            continue;
        }
        const ssize_t got = read(STDIN_FILENO, buf + n, cap - 1 - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            cli_error(CMD, "standard input: read failed: %s", strerror(errno));
            free(buf);
            return -1;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    buf[n] = '\0';
    *out = buf, *len = n;
    return 0;
}

/* A list of ids: whole numbers separated by commas and/or white space ("1,2, 3", "1 2\n3"), split by
 * cli_list_split (an empty item, "1,,2" or a trailing comma, is refused). `what` names the list in
 * messages; the list itself is not quoted (it may be a whole file). */
static int parse_ids(const char *s, const char *what, m4_token_ids *out) {
    const char *cursor = s, *item;
    size_t len;
    int more;
    while ((more = cli_list_split(s, &cursor, &item, &len)) == 1) {
        int64_t v = 0;
        size_t digits = 0;
        while (digits < len && digits <= 10 && item[digits] >= '0' && item[digits] <= '9')
            v = 10 * v + (item[digits++] - '0');
        if (digits != len || v > INT32_MAX) {
            cli_error(CMD, "%s: '%.*s' is not a token id (ids are whole numbers separated by commas or spaces)",
                      what, (int)(len < 40 ? len : 40), item);
            return -1;
        }
        m4_error err;
        if (m4_token_ids_push(out, (int32_t)v, &err)) {
            cli_error(CMD, "%s", err.msg);
            return -1;
        }
    }
    if (more < 0) {
        if (s[strspn(s, " \t\n\r")] == '\0') cli_error(CMD, "%s: no token ids", what);
        else cli_error(CMD, "%s: item %zu is empty (items are separated by commas or spaces)", what, len);
        return -1;
    }
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------------ */

/* Where each image's block starts in ids: blocks come in the images' order, each rows·(cols+1) long
 * and opening with [IMG]. */
static void image_starts(const m4_tokenizer *tok, const m4_token_ids *ids, const cli_prompt_images *im,
                         int64_t *start) {
    int32_t img = -1;
    m4_error ignored;
    m4_tokenizer_special_id(tok, "[IMG]", &img, &ignored);
    size_t at = 0;
    for (int i = 0; i < im->n; i++) {
        while (at < ids->n && ids->ids[at] != img) at++;
        start[i] = (int64_t)at;
        at += (size_t)(im->rows[i] * (im->cols[i] + 1));
    }
}

/* Each id's string: a special token's, or its bytes when they are whole UTF-8 (else null). */
static json_t *json_pieces(const m4_tokenizer *tok, const m4_token_ids *ids) {
    json_t *a = json_array();
    for (size_t i = 0; i < ids->n; i++) {
        const uint8_t *bytes;
        size_t len;
        m4_error err;
        const bool whole = m4_tokenizer_piece(tok, ids->ids[i], &bytes, &len, &err) == 0 &&
                           m4_utf8_check(bytes, len) == len;
        json_array_append_new(a, whole ? json_stringn((const char *)bytes, len) : json_null());
    }
    return a;
}

/* One result: ids (and, decoding, their text; with a template, the images). */
static void print_result(const tokenize_args *a, const m4_tokenizer *tok, const char *input, const m4_token_ids *ids,
                         const cli_prompt_images *im, const char *text, size_t text_len) {
    int64_t start[CLI_PROMPT_MAX_IMAGES];
    if (im) image_starts(tok, ids, im, start);
    if (a->json) {
        json_t *o = json_object(), *list = json_array();
        for (size_t i = 0; i < ids->n; i++) json_array_append_new(list, json_integer(ids->ids[i]));
        json_object_set_new(o, "input", json_string(input));
        json_object_set_new(o, "count", json_integer((json_int_t)ids->n));
        json_object_set_new(o, "ids", list);
        json_object_set_new(o, "pieces", json_pieces(tok, ids));
        if (text) json_object_set_new(o, "text", json_stringn(text, text_len));
        if (im) {
            json_t *images = json_array();
            for (int i = 0; i < im->n; i++)
                json_array_append_new(images, json_pack("{s:s, s:I, s:I, s:I, s:I}", "path", im->paths[i], "rows",
                                                        (json_int_t)im->rows[i], "cols", (json_int_t)im->cols[i],
                                                        "tokens", (json_int_t)(im->rows[i] * (im->cols[i] + 1)),
                                                        "start", (json_int_t)start[i]));
            json_object_set_new(o, "images", images);
        }
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(o);
        return;
    }
    if (text) {
        fwrite(text, 1, text_len, stdout);
        fputc('\n', stdout);
        return;
    }
    for (size_t i = 0; i < ids->n; i++) printf("%s%d", i ? " " : "", ids->ids[i]);
    fputc('\n', stdout);
    if (!im) return;
    fprintf(stderr, "mistral4 tokenize: %zu tokens\n", ids->n);
    for (int i = 0; i < im->n; i++)
        fprintf(stderr, "  image %d (%s): %lld x %lld merged patches, %lld tokens from index %lld\n", i + 1,
                im->paths[i], (long long)im->rows[i], (long long)im->cols[i],
                (long long)(im->rows[i] * (im->cols[i] + 1)), (long long)start[i]);
}

/* ---- the three kinds of input ------------------------------------------------------------------ */

static int encode_text(const tokenize_args *a, const m4_tokenizer *tok, const char *input, const char *text,
                       size_t len, const char *what) {
    m4_token_ids ids = {0};
    m4_error err;
    const int rc = m4_tokenizer_encode(tok, text, len, &ids, &err);
    if (rc) cli_error(CMD, "%s: %s", what, err.msg);
    else print_result(a, tok, input, &ids, NULL, NULL, 0);
    m4_token_ids_free(&ids);
    return rc;
}

/* ids → text through the streaming detokenizer (invalid UTF-8 → U+FFFD, as mistral-common). */
static int decode_list(const tokenize_args *a, const m4_tokenizer *tok, const char *list, const char *what) {
    m4_token_ids ids = {0};
    m4_detokenizer d;
    m4_error err;
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    int rc = -1;
    if (!mem || parse_ids(list, what, &ids)) goto done;
    if (m4_detokenizer_init(&d, tok, a->skip_special ? M4_SPECIAL_SKIP : M4_SPECIAL_KEEP, &err)) {
        cli_error(CMD, "%s", err.msg);
        goto done;
    }
    const char *piece;
    size_t n;
    int failed = 0;
    for (size_t i = 0; !failed && i < ids.n; i++)
        if (!(failed = m4_detokenizer_push(&d, ids.ids[i], &piece, &n, &err))) fwrite(piece, 1, n, mem);
    if (!failed && !(failed = m4_detokenizer_finish(&d, &piece, &n, &err))) fwrite(piece, 1, n, mem);
    if (failed) cli_error(CMD, "%s: %s", what, err.msg);
    rc = failed ? -1 : 0;
    m4_detokenizer_free(&d);
    fclose(mem), mem = NULL;
    if (rc == 0) print_result(a, tok, "ids", &ids, NULL, text, len);
done:
    if (mem) fclose(mem);
    free(text);
    m4_token_ids_free(&ids);
    return rc;
}

/* --prompt / --chat: the prompt glue of `run`, with the model's config.json for images (when DIR
 * has one). */
static int encode_template(const tokenize_args *a, const m4_tokenizer *tok) {
    const cli_prompt_spec spec = {.prompt = a->prompt, .chat = a->chat, .raw = a->raw, .effort = a->effort,
                                  .images = a->images, .n_images = a->n_images};
    m4_config cfg;
    const m4_config *have_cfg = NULL;
    m4_chat_file conv = {0};
    cli_prompt_images im = {0};
    m4_token_ids ids = {0};
    m4_error err;
    int rc = -1;
    if (a->model_dir) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/config.json", a->model_dir);
        if (stat(path, &st) == 0) {
            if (m4_config_load(path, &cfg, &err)) {
                cli_error(CMD, "%s", err.msg);
                return -1;
            }
            have_cfg = &cfg;
        }
    }
    if (cli_prompt_load_images(CMD, &spec, have_cfg, a->model_dir, &conv, &im) == 0 &&
        cli_prompt_encode(CMD, &spec, tok, &conv, &im, &ids) == 0) {
        print_result(a, tok, a->prompt ? "prompt" : "chat", &ids, &im, NULL, 0);
        rc = 0;
    }
    m4_token_ids_free(&ids);
    cli_prompt_images_free(&im);
    m4_chat_file_free(&conv);
    return rc;
}

/* ---- the command -------------------------------------------------------------------------------- */

int cmd_tokenize(int argc, char **argv) {
    tokenize_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc != CLI_OK) return rc == -1 ? CLI_OK : rc;
    char path[4096];
    if (a.model_dir) snprintf(path, sizeof path, "%s/tekken.json", a.model_dir);
    else snprintf(path, sizeof path, "%s", a.tokenizer);
    m4_tokenizer *tok = NULL;
    m4_error err;
    struct stat st;
    rc = CLI_FAILED;
    if (a.model_dir && stat(path, &st) != 0) {
        cli_error(CMD, "%s not found: the model folder has no Tekken tokenizer", path);
        goto done;
    }
    if (m4_tokenizer_load(path, &tok, &err)) {
        cli_error(CMD, "%s", err.msg);
        goto done;
    }
    if (a.prompt || a.chat) {
        if (encode_template(&a, tok)) goto done;
    } else if (a.n_inputs > 0) {
        for (int i = 0; i < a.n_inputs; i++) {
            char what[32];
            snprintf(what, sizeof what, "%s %d", a.decode ? "LIST" : "TEXT", i + 1);
            if (a.decode ? decode_list(&a, tok, a.inputs[i], what)
                         : encode_text(&a, tok, "text", a.inputs[i], strlen(a.inputs[i]), what))
                goto done;
        }
    } else {
        const char *file = a.file ? a.file : "-";
        char *text;
        size_t len;
        if (read_text(file, &text, &len)) goto done;
        const char *what = strcmp(file, "-") == 0 ? "standard input" : file;
        const size_t nul = strlen(text);             /* a list of ids is text: no NUL inside */
        if (a.decode && nul < len) {
            cli_error(CMD, "%s: a NUL byte at offset %zu, where token ids were expected", what, nul);
            free(text);
            goto done;
        }
        const int failed = a.decode ? decode_list(&a, tok, text, what) : encode_text(&a, tok, "file", text, len, what);
        free(text);
        if (failed) goto done;
    }
    rc = CLI_OK;
done:
    m4_tokenizer_free(tok);
    return rc;
}
