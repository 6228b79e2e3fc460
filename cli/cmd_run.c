/* cmd_run.c — `mistral4 run`: generates text with the plain-C reference (prefill, then one token at
 * a time over the MLA kv cache), streaming the tokens as they come. The prompt is a user message
 * through the chat template, a conversation file, or raw token ids; images go through the Pixtral
 * preprocessing and the vision tower. */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend.h"
#include "chat.h"
#include "cli.h"
#include "generate.h"
#include "generation.h"
#include "image.h"
#include "prompt.h"
#include "tokenizer.h"

#define CMD "run"
#define MAX_IMAGES M4_CHAT_MAX_IMAGES   /* images of one prompt, --image and --chat together */

static void print_help(void) {
    printf(
        "Usage: mistral4 run --model DIR (--prompt TEXT | --chat FILE.json | --ids LIST) [options]\n"
        "\n"
        "Generates with the plain-C float32 reference of Mistral 4 (or, with --backend, the CUDA\n"
        "implementation): one prefill forward over the prompt, then one forward per new token over\n"
        "the MLA kv cache (the normalised kv latent and the rotated rope key of every position, as\n"
        "Hugging Face caches them). Tokens are printed on\n"
        "stdout as they are generated: as text when DIR holds the Tekken tokenizer (tekken.json),\n"
        "otherwise as token ids. Prompt and generation speed go to stderr at the end.\n"
        "\n"
        "Prompt (exactly one):\n"
        "  --prompt TEXT        one user message through the v15 chat template (needs tekken.json):\n"
        "                       <s>[MODEL_SETTINGS]{\"reasoning_effort\": …}[/MODEL_SETTINGS][INST]…[/INST]\n"
        "  --chat FILE.json     a conversation through the chat template: a JSON array of messages\n"
        "                       (or {\"messages\": [...]}), each {\"role\": \"system\"|\"user\"|\"assistant\",\n"
        "                       \"content\": TEXT or [chunks]}; chunks {\"type\": \"text\", \"text\": …},\n"
        "                       {\"type\": \"image\", \"path\": FILE} (relative to the JSON file's folder),\n"
        "                       {\"type\": \"thinking\", \"thinking\": …}. Roles in an order mistral-common\n"
        "                       accepts (docs/INPUTS.md §8): it ends with a user (or system) message.\n"
        "  --ids LIST           token ids, comma separated, used as they are (no template, no <s>\n"
        "                       added); special tokens may be written as their text (needs\n"
        "                       tekken.json): '<s>,[INST],1044,[/INST]'. With --image, each [IMG] is\n"
        "                       one image's placeholder, expanded as the Pixtral processor does,\n"
        "                       unless LIST already holds [IMG_BREAK]/[IMG_END] (taken as expanded).\n"
        "\n"
        "Options:\n"
        "  --model DIR          the checkpoint: config.json, *.safetensors, and tekken.json for text\n"
        "  --image FILE         a PNG or JPEG for the prompt (repeatable, in order; needs a multimodal\n"
        "                       model). --prompt: the images go before the text; --chat: they are\n"
        "                       added to the last user message; --ids: see above. Preprocessed with\n"
        "                       the model's patch_size, spatial_merge_size and longest edge\n"
        "                       vision_config.image_size (1540 for the published model).\n"
        "  --backend NAME       ref (default: the float32 reference on the CPU), or, in a build with\n"
        "                       CUDA, cuda-bf16 / cuda-fp32: text model, kv cache (absorbed MLA)\n"
        "                       and vision tower on the GPU (built here: %s). Only fast paths a\n"
        "                       GPU run has proven are on; M4_CUDA_ENABLE=LIST|all switches\n"
        "                       unproven ones on, M4_CUDA_DISABLE=LIST switches paths off for\n"
        "                       their simpler twins (`mistral4 --help` lists them)\n"
        "  --raw                with --prompt: <s> then the text, no chat template\n"
        "  --reasoning EFFORT   none (default) or high: the template's reasoning_effort; with high\n"
        "                       the model thinks in [THINK]…[/THINK] before answering\n"
        "  --max-tokens N       new tokens at most (default 128); generation also stops at the\n"
        "                       model's eos_token_id and at max_position_embeddings\n"
        "  --temperature T      0 (default): greedy, as HF generate(do_sample=False); 1e-6 to 1e6:\n"
        "                       sample (below 1e-6 the logits divided by T overflow)\n"
        "  --top-k K            sample among the K most likely tokens only (default 0: all)\n"
        "  --top-p P            sample among the most likely tokens holding P of the probability\n"
        "                       (default 1: all); order as HF: temperature, top-k, top-p\n"
        "  --seed S             the sampler's random seed (default 0; same seed, same tokens)\n"
        "  --start-position N   the prompt's first position id (default 0): its S tokens take\n"
        "                       positions N..N+S-1 and the new tokens follow, as in a golden case made\n"
        "                       with make-golden --positions N; N+S must fit max_position_embeddings\n"
        "  --print-prompt       print the ids the prompt feeds (after the template and the images'\n"
        "                       expansion) and their positions on stderr, then generate as usual\n"
        "                       (`mistral4 tokenize` gives the ids without loading the model)\n"
        "  --scale-rule RULE    the MLA softmax scale (MODEL.md §0.1): base (default) is\n"
        "                       qk_head_dim^-0.5, the model's intended math (vLLM, SGLang, NeMo);\n"
        "                       mscale2 multiplies it by mscale(factor, mscale_all_dim)^2, as\n"
        "                       transformers >= PR #47435 (e.g. 5.24) computes it. The golden tiny\n"
        "                       models were made with transformers 5.24, so reproducing their\n"
        "                       generate() ids needs --scale-rule mscale2.\n"
        "  -h, --help           show this help\n"
        "\n"
        "Examples:\n"
        "  mistral4 run --model /models/Mistral-Small-4-119B-2603 --prompt 'Why is the sky blue?'\n"
        "  mistral4 run --model /models/Mistral-Small-4-119B-2603 --image cat.png --prompt 'What is this?'\n"
        "  mistral4 run --model DIR --chat conversation.json --reasoning high --max-tokens 1024\n"
        "  mistral4 run --model golden/cases/text_tiny/model --ids 1,331,439,199,422,397,420 \\\n"
        "               --max-tokens 4 --scale-rule mscale2\n"
        "\n"
        "Exit status: 0 generated, 1 the model, tokenizer, images or prompt could not be used,\n"
        "2 usage error.\n",
        cli_backend_list());
}

/* ---- the command line ----------------------------------------------------------------------- */

/* A growable list of int64 ids. */
typedef struct {
    int64_t *v;
    size_t n, cap;
} idlist;

static int push(idlist *l, int64_t id) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        int64_t *v = realloc(l->v, sizeof *v * cap);
        if (!v) return -1;
        l->v = v, l->cap = cap;
    }
    l->v[l->n++] = id;
    return 0;
}

/* --ids: "1,2, 3" → ids; an item written [NAME] or <NAME> is a special token of the tokenizer,
 * looked up by its string ("<s>,[INST],1044,[/INST]"). Items are separated by commas (an empty
 * one is an error, cli_list_next). With tok NULL only the syntax is checked (names are not
 * resolved, nothing is stored): a usage error. With a tokenizer (or none, when the model has no
 * tekken.json) names are resolved: an unknown one is a failure (-1). */
static int parse_id_list(const char *s, const m4_tokenizer *tok, bool resolve, idlist *out) {
    const char *cursor = s, *p;
    size_t len;
    int more;
    while ((more = cli_list_next(CMD, "--ids", s, &cursor, &p, &len)) == 1) {
        if ((p[0] == '[' && p[len - 1] == ']') || (p[0] == '<' && p[len - 1] == '>')) {
            if (resolve) {
                char name[128];
                int32_t id;
                m4_error err;
                snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1), p);
                if (!tok) {
                    cli_error(CMD, "--ids: '%s' is special token text, but the model has no tokenizer "
                                   "(tekken.json) to look it up", name);
                    return -1;
                }
                if (m4_tokenizer_special_id(tok, name, &id, &err)) {
                    cli_error(CMD, "--ids: unknown special token text: %s", err.msg);
                    return -1;
                }
                if (push(out, id)) return -1;
            }
        } else {
            char *stop;
            errno = 0;
            long long v = strtoll(p, &stop, 10);
            if (errno || stop != p + len || !isdigit((unsigned char)p[0]))
                return cli_usage_error(CMD, "--ids: '%.*s' in '%s' is neither a token id nor special token "
                                            "text like [INST] or <s>", (int)len, p, s);
            if (resolve && push(out, v)) return -1;
        }
    }
    return more == 0 ? CLI_OK : CLI_USAGE;
}

typedef struct {
    const char *model_dir, *prompt, *chat, *ids;
    const char *images[MAX_IMAGES];
    int n_images;
    bool raw, print_prompt;
    int64_t start_position;  /* the prompt's first position id */
    m4_reasoning_effort effort;
    int64_t max_tokens;
    m4_sampling sampling;
    uint64_t seed;
    m4_softmax_scale_rule rule;
    const char *backend;     /* "ref", "cuda-fp32" or "cuda-bf16" */
} run_args;


/* A number in [min, max], or also exactly 0 when zero_too (--temperature 0: greedy). Checked as
 * written, before it becomes a float: 1e-50 is refused, not rounded to 0. */
static int parse_float(const char *opt, const char *s, bool zero_too, double min, double max, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || isspace((unsigned char)s[0]) || !((zero_too && v == 0) || (v >= min && v <= max)))
        return cli_usage_error(CMD, "%s wants %sa number in [%g, %g], got '%s'", opt, zero_too ? "0 or " : "", min,
                               max, s);
    *out = (float)v;
    return 0;
}

/* Returns CLI_OK, CLI_USAGE (message printed), or -1 for --help (printed). */
static int parse_args(int argc, char **argv, run_args *a) {
    *a = (run_args){.max_tokens = 128, .sampling = m4_sampling_greedy(), .rule = M4_SOFTMAX_SCALE_BASE,
                    .effort = M4_REASONING_NONE, .backend = "ref"};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (cli_is_help(o)) {
            print_help();
            return -1;
        }
        if (strcmp(o, "--raw") == 0) {
            a->raw = true;
            continue;
        }
        if (strcmp(o, "--print-prompt") == 0) {
            a->print_prompt = true;
            continue;
        }
        static const char *const with_value[] = {"--model", "--prompt", "--chat", "--ids", "--image",
                                                 "--reasoning", "--max-tokens", "--temperature", "--top-k",
                                                 "--top-p", "--seed", "--scale-rule", "--backend",
                                                 "--start-position"};
        bool known = false;
        for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++) known |= strcmp(o, with_value[k]) == 0;
        if (!known) return cli_usage_error(CMD, "unknown option '%s'", o);
        if (i + 1 >= argc) return cli_usage_error(CMD, "%s needs a value", o);
        const char *v = argv[++i];
        int64_t n = 0;
        m4_error err;
        if (strcmp(o, "--model") == 0) a->model_dir = v;
        else if (strcmp(o, "--backend") == 0) {
            if (cli_parse_backend(CMD, v, &a->backend)) return CLI_USAGE;
        }
        else if (strcmp(o, "--prompt") == 0) a->prompt = v;
        else if (strcmp(o, "--chat") == 0) a->chat = v;
        else if (strcmp(o, "--ids") == 0) a->ids = v;
        else if (strcmp(o, "--image") == 0) {
            if (a->n_images == MAX_IMAGES) return cli_usage_error(CMD, "at most %d --image files", MAX_IMAGES);
            a->images[a->n_images++] = v;
        } else if (strcmp(o, "--reasoning") == 0) {
            if (m4_reasoning_effort_parse(v, &a->effort, &err)) return cli_usage_error(CMD, "--reasoning: %s", err.msg);
        } else if (strcmp(o, "--max-tokens") == 0) {
            if (cli_parse_count(CMD, o, v, 1, INT64_MAX, &a->max_tokens)) return CLI_USAGE;
        } else if (strcmp(o, "--temperature") == 0) {
            /* 0 is greedy; above it, what the sampler can divide the logits by (generate.h) */
            if (parse_float(o, v, true, M4_SAMPLING_MIN_TEMPERATURE, 1e6, &a->sampling.temperature)) return CLI_USAGE;
        } else if (strcmp(o, "--top-k") == 0) {
            if (cli_parse_count(CMD, o, v, 0, INT64_MAX, &a->sampling.top_k)) return CLI_USAGE;
        } else if (strcmp(o, "--top-p") == 0) {
            if (parse_float(o, v, false, 1e-6, 1.0, &a->sampling.top_p)) return CLI_USAGE;
        } else if (strcmp(o, "--seed") == 0) {
            if (cli_parse_count(CMD, o, v, 0, INT64_MAX, &n)) return CLI_USAGE;
            a->seed = (uint64_t)n;
        } else if (strcmp(o, "--start-position") == 0) {
            if (cli_parse_count(CMD, o, v, 0, INT64_MAX, &a->start_position)) return CLI_USAGE;
        } else if (strcmp(o, "--scale-rule") == 0) {
            if (strcmp(v, "base") == 0) a->rule = M4_SOFTMAX_SCALE_BASE;
            else if (strcmp(v, "mscale2") == 0) a->rule = M4_SOFTMAX_SCALE_MSCALE2;
            else return cli_usage_error(CMD, "--scale-rule wants base or mscale2, got '%s'", v);
        }
    }
    if (!a->model_dir) return cli_usage_error(CMD, "missing --model DIR");
    if (!!a->prompt + !!a->chat + !!a->ids != 1)
        return cli_usage_error(CMD, "give exactly one of --prompt, --chat and --ids");
    if (a->ids && parse_id_list(a->ids, NULL, false, NULL) != CLI_OK) return CLI_USAGE;
    if (a->raw && !a->prompt) return cli_usage_error(CMD, "--raw goes with --prompt");
    if (a->raw && a->n_images) return cli_usage_error(CMD, "--raw has no place for images: use --ids with [IMG] placeholders");
    if (a->sampling.temperature == 0 && (a->sampling.top_k > 0 || a->sampling.top_p < 1.0f))
        return cli_usage_error(CMD, "--top-k and --top-p need --temperature > 0 (0 is greedy)");
    return CLI_OK;
}

/* ---- the prompt ---------------------------------------------------------------------------- */

/* --ids with images: each [IMG] placeholder becomes its image's block (m4_image_expand_placeholders). */
static int expand_placeholders(const m4_config *cfg, const cli_prompt_images *im, idlist *ids) {
    m4_image_token_ids tid;
    m4_image_token_ids_default(&tid);
    tid.img = cfg->image_token_index;
    int64_t grids[2 * MAX_IMAGES], *expanded, n;
    for (int i = 0; i < im->n; i++) grids[2 * i] = im->rows[i], grids[2 * i + 1] = im->cols[i];
    m4_error err;
    if (m4_image_expand_placeholders(ids->v, (int64_t)ids->n, grids, im->n, &tid, &expanded, &n, &err)) {
        cli_error(CMD, "--ids with --image: %s", err.msg);
        return -1;
    }
    free(ids->v);
    *ids = (idlist){.v = expanded, .n = (size_t)n, .cap = (size_t)n};
    return 0;
}

static int build_prompt(const run_args *a, const m4_model *model, const m4_tokenizer *tok, idlist *ids,
                        cli_prompt_images *im) {
    const cli_prompt_spec spec = {.prompt = a->prompt, .chat = a->chat, .raw = a->raw, .effort = a->effort,
                                  .images = a->images, .n_images = a->n_images};
    m4_chat_file conv = {0};
    m4_token_ids tids = {0};
    int rc = -1;
    if ((a->prompt || a->chat) && !tok) {
        cli_error(CMD, "%s/tekken.json not found: --prompt and --chat need the tokenizer (use --ids)", a->model_dir);
        return -1;
    }
    if (cli_prompt_load_images(CMD, &spec, &model->config, a->model_dir, &conv, im)) goto done;
    if (a->ids) {
        if (parse_id_list(a->ids, tok, true, ids) != CLI_OK) goto done;
        if (im->n > 0 && expand_placeholders(&model->config, im, ids)) goto done;
        rc = 0;
        goto done;
    }
    if (cli_prompt_encode(CMD, &spec, tok, &conv, im, &tids)) goto done;
    for (size_t i = 0; i < tids.n; i++)
        if (push(ids, tids.ids[i])) goto done;
    rc = 0;
done:
    m4_token_ids_free(&tids);
    m4_chat_file_free(&conv);
    return rc;
}

/* ---- streaming ------------------------------------------------------------------------------- */

typedef struct {
    const m4_tokenizer *tok;
    m4_detokenizer detok;
    bool have_detok;
    int32_t think, end_think;       /* -1 when the tokenizer has none */
    const m4_generate_options *opt;
    int64_t count, think_tokens, last;
    bool in_think, failed;
    m4_error err;
} stream;

static int on_token(void *user, int64_t row, int64_t index, int64_t token) {
    stream *s = user;
    (void)row, (void)index;
    s->count++, s->last = token;
    for (int i = 0; i < s->opt->n_eos; i++)
        if (token == s->opt->eos_ids[i]) return 0;           /* </s> is not printed */
    if (!s->have_detok) {
        printf("%s%lld", s->count > 1 ? " " : "", (long long)token);
    } else if (token == s->think || token == s->end_think) {
        s->in_think = token == s->think;
        fputs(m4_tokenizer_special_str(s->tok, (int32_t)token), stdout);
    } else {
        const char *text;
        size_t len;
        if (m4_detokenizer_push(&s->detok, (int32_t)token, &text, &len, &s->err)) {
            s->failed = true;
            return 1;
        }
        fwrite(text, 1, len, stdout);
        s->think_tokens += s->in_think;
    }
    fflush(stdout);
    return 0;
}

/* --print-prompt: the ids fed and their positions on stderr, and as text when there is a tokenizer
 * (special tokens written as their string). */
static void print_prompt(const m4_tokenizer *tok, const idlist *ids, int64_t first_position) {
    fprintf(stderr, "mistral4 run: the prompt: %zu tokens at positions %lld..%lld:\n", ids->n,
            (long long)first_position, (long long)(first_position + (int64_t)ids->n - 1));
    for (size_t i = 0; i < ids->n; i++) fprintf(stderr, "%s%lld", i ? " " : "", (long long)ids->v[i]);
    fputc('\n', stderr);
    m4_token_ids as32 = {0};
    char *text = NULL;
    size_t len;
    m4_error err;
    int failed = !tok;
    for (size_t i = 0; !failed && i < ids->n; i++) failed = m4_token_ids_push(&as32, (int32_t)ids->v[i], &err);
    if (!failed && m4_tokenizer_decode(tok, as32.ids, as32.n, M4_SPECIAL_KEEP, &text, &len, &err) == 0)
        fprintf(stderr, "mistral4 run: the prompt as text: %.*s\n", (int)len, text);
    free(text);
    m4_token_ids_free(&as32);
}

/* ---- the command ------------------------------------------------------------------------------ */

int cmd_run(int argc, char **argv) {
    run_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc != CLI_OK) return rc == -1 ? CLI_OK : rc;

    m4_model model;
    m4_tokenizer *tok = NULL;
    m4_error err = {{0}};
    idlist ids = {0};
    cli_prompt_images im = {0};
    float *embeds = NULL;
    int64_t *out = NULL, *positions = NULL;   /* positions: [S] with --start-position, else NULL */
    cli_generator gen = {0};              /* the backend, and its session with --backend cuda-* */
    stream s = {.think = -1, .end_think = -1};
    rc = CLI_FAILED;

    double t0 = cli_now_seconds();
    if (cli_model_open(CMD, a.model_dir, a.backend, &model) != CLI_OK) return CLI_FAILED;
    char tekken[2048];
    snprintf(tekken, sizeof tekken, "%s/tekken.json", a.model_dir);
    struct stat st;
    if (stat(tekken, &st) == 0) {
        if (m4_tokenizer_load(tekken, &tok, &err)) {
            cli_error(CMD, "%s", err.msg);
            goto done;
        }
    } else if (a.ids) {
        fprintf(stderr, "mistral4 run: no tokenizer found (%s): printing token ids\n", tekken);
    }
    if (cli_now_seconds() - t0 > 1.0) fprintf(stderr, "mistral4 run: loaded in %.1f s\n", cli_now_seconds() - t0);

    if (build_prompt(&a, &model, tok, &ids, &im)) goto done;
    const m4_text_config *cfg = &model.config.text;
    const int64_t S = (int64_t)ids.n, P = cfg->max_position_embeddings;
    for (int64_t i = 0; i < S; i++)
        if (ids.v[i] >= cfg->vocab_size) {
            cli_error(CMD, "token id %lld at position %lld is outside the vocabulary [0, %lld)", (long long)ids.v[i],
                      (long long)i, (long long)cfg->vocab_size);
            goto done;
        }
    if (S > P) {
        cli_error(CMD, "the prompt has %lld tokens, more than the model's max_position_embeddings (%lld)",
                  (long long)S, (long long)P);
        goto done;
    }
    const int64_t N = a.start_position;                  /* the prompt takes positions N..N+S-1 */
    if (N > P - S) {
        cli_error(CMD, "--start-position %lld: the prompt's %lld tokens would take positions %lld..%lld, past the "
                       "model's max_position_embeddings (%lld: positions 0..%lld); at most %lld here",
                  (long long)N, (long long)S, (long long)N, (long long)(N + S - 1), (long long)P, (long long)(P - 1),
                  (long long)(P - S));
        goto done;
    }
    if (N > 0 && !(positions = malloc(sizeof *positions * (size_t)S))) {
        cli_error(CMD, "out of memory for the prompt's positions (%zu bytes)", sizeof *positions * (size_t)S);
        goto done;
    }
    for (int64_t i = 0; positions && i < S; i++) positions[i] = N + i;
    if (a.print_prompt) print_prompt(tok, &ids, N);
    m4_generate_options opt = m4_generate_defaults(&model);
    opt.max_new_tokens = a.max_tokens;
    if (opt.max_new_tokens > P - N - S + 1) {             /* the last token is never forwarded */
        opt.max_new_tokens = P - N - S + 1;
        fprintf(stderr, "mistral4 run: at most %lld new tokens fit in max_position_embeddings (%lld)%s\n",
                (long long)opt.max_new_tokens, (long long)P, N > 0 ? " after --start-position" : "");
    }
    opt.sampling = a.sampling;
    opt.scale_rule = a.rule;
    if (cli_backend_open(CMD, a.backend, &model, S + opt.max_new_tokens, &opt, &gen) != CLI_OK) goto done;
    if (im.n > 0) {
        embeds = malloc(sizeof(float) * (size_t)(S * cfg->hidden_size));
        if (!embeds) {
            cli_error(CMD, "out of memory for the prompt's embeddings (%zu bytes)",
                      sizeof(float) * (size_t)(S * cfg->hidden_size));
            goto done;
        }
        if (cli_prompt_embeds(&gen, &model, ids.v, S, &im.batch, embeds, &err)) {
            cli_error(CMD, "%s", err.msg);
            goto done;
        }
    }

    s.tok = tok, s.opt = &opt;
    if (tok) {
        if (m4_detokenizer_init(&s.detok, tok, M4_SPECIAL_SKIP, &err)) {
            cli_error(CMD, "%s", err.msg);
            goto done;
        }
        s.have_detok = true;
        m4_error ignored;
        if (m4_tokenizer_special_id(tok, "[THINK]", &s.think, &ignored) ||
            m4_tokenizer_special_id(tok, "[/THINK]", &s.end_think, &ignored))
            s.think = s.end_think = -1;
    }
    opt.on_token = on_token, opt.user = &s;
    char prefill_what[64];
    snprintf(prefill_what, sizeof prefill_what, "prefill of %lld tokens", (long long)S);
    cli_layer_watch watch = {.cmd = CMD, .what = prefill_what, .start = cli_now_seconds()};
    opt.prefill_progress = (m4_progress){.layer_done = cli_on_layer, .user = &watch};
    m4_prompt prompt = {.batch = 1, .length = S, .ids = ids.v, .inputs_embeds = embeds, .position_ids = positions};
    m4_rng rng;
    m4_rng_seed(&rng, a.seed);
    out = malloc(sizeof *out * (size_t)opt.max_new_tokens);
    m4_generate_stats stats;
    if (!out) {
        cli_error(CMD, "out of memory (%zu bytes)", sizeof *out * (size_t)opt.max_new_tokens);
        goto done;
    }
    watch.start = cli_now_seconds();
    if (m4_ref_generate(&model, &prompt, &opt, &rng, out, NULL, &stats, &err)) {
        fputc('\n', stdout);
        cli_error(CMD, "%s", err.msg);
        goto done;
    }
    if (s.failed) {
        cli_error(CMD, "%s", s.err.msg);
        goto done;
    }
    if (s.have_detok) {
        const char *text;
        size_t len;
        if (m4_detokenizer_finish(&s.detok, &text, &len, &err) == 0) fwrite(text, 1, len, stdout);
    }
    fputc('\n', stdout);
    fflush(stdout);

    bool eos = false;
    for (int i = 0; i < opt.n_eos; i++) eos |= s.last == opt.eos_ids[i];
    fprintf(stderr, "mistral4 run (%s): prompt %lld tokens in %.3f s (%.1f tokens/s); generated %lld tokens, "
                    "%lld decode steps in %.3f s (%.2f tokens/s); stopped: %s\n",
            a.backend, (long long)stats.prompt_tokens, stats.prefill_seconds, stats.prefill_tokens_per_second,
            (long long)stats.new_tokens, (long long)stats.decode_steps, stats.decode_seconds,
            stats.decode_tokens_per_second, eos ? "end of sequence" : "token budget");
    if (s.think_tokens > 0)
        fprintf(stderr, "mistral4 run: %lld of the tokens were reasoning inside [THINK]…[/THINK]\n",
                (long long)s.think_tokens);
    rc = CLI_OK;
done:
    cli_backend_close(&gen);
    if (s.have_detok) m4_detokenizer_free(&s.detok);
    cli_prompt_images_free(&im);
    free(ids.v), free(embeds), free(out), free(positions);
    m4_tokenizer_free(tok);
    m4_model_close(&model);
    return rc;
}
