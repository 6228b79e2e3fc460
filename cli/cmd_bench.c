/* cmd_bench.c — `mistral4 bench`: end-to-end generation speed of a checkpoint on a backend (the
 * reference on the CPU, or the CUDA implementation): for each prompt length, greedy generation of
 * a fixed number of tokens from a synthetic prompt, timed as `mistral4 run` times it (prefill: the
 * prompt's forward; decode: the one-token forwards), after warm-up runs, repeated, medians
 * reported. The per-kernel benchmarks are elsewhere (scripts/bench, m4_gpu_bench). */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "generate.h"
#include "generation.h"
#include "m4_output.h"

#define CMD "bench"
#define MAX_LENGTHS 32

static void print_help(void) {
    printf("Usage: mistral4 bench --model DIR [--backend NAME] [--prompt N[,N...]] [--gen N]\n"
           "                      [--repeat N] [--warmup N] [--json] [--out FILE]\n"
           "\n"
           "Times generation end to end, as `mistral4 run` does: for each prompt length N, a synthetic\n"
           "prompt of N token ids (deterministic; the ids do not change the work), one prefill forward,\n"
           "then --gen one-token steps, greedy, end-of-sequence ignored so that every run generates\n"
           "the same count. Each length runs --warmup untimed times, then --repeat timed ones; the\n"
           "table shows the medians. On a cuda-* backend the weights are uploaded once and the cache\n"
           "emptied between runs.\n"
           "\n"
           "Options:\n"
           "  --model DIR       the checkpoint (config.json + *.safetensors)\n"
           "  --backend NAME    ref (default: the float32 reference on the CPU), or a CUDA backend\n"
           "                    (built here: %s)\n"
           "  --prompt LIST     prompt lengths, comma-separated (default 128)\n"
           "  --gen N           tokens generated per run (default 32)\n"
           "  --repeat N        timed runs per length (default 3)\n"
           "  --warmup N        untimed runs per length first (default 1)\n"
           "  --json            print the result as JSON instead of the table\n"
           "  --out FILE        also write the JSON to FILE (complete or not at all; its folder must\n"
           "                    exist and be writable, checked before the model is opened)\n"
           "  -h, --help        show this help\n"
           "\n"
           "Columns (medians over the timed runs):\n"
           "  prefill s, prompt tok/s    the prompt's forward; prompt tokens per second\n"
           "  decode s, decode tok/s     the one-token forwards and their sampling; steps per second\n"
           "  ms/token                   decode seconds per step\n"
           "\n"
           "JSON: {schema \"mistral4-bench/1\", model, backend, device, version, gen, repeat, warmup,\n"
           "rows: [{prompt_tokens, new_tokens, decode_steps, prefill_seconds, prefill_tokens_per_second,\n"
           "decode_seconds, decode_tokens_per_second, ms_per_token, runs: [{prefill_seconds,\n"
           "decode_seconds}]}]}.\n"
           "\n"
           "Examples:\n"
           "  mistral4 bench --model golden/cases/text_tiny/model --prompt 16,64 --gen 8\n"
           "  mistral4 bench --model /models/Mistral-Small-4-119B-2603 --backend cuda-bf16 \\\n"
           "                 --prompt 512,4096 --gen 128 --out bench/results/e2e-h200.json\n"
           "\n"
           "Exit status: 0 measured, 1 the model could not be used or a run failed, 2 usage error.\n",
           cli_backend_list());
}

typedef struct {
    const char *model_dir, *backend, *out;
    int64_t lengths[MAX_LENGTHS];
    int n_lengths;
    int64_t gen, repeat, warmup;
    bool json;
} bench_args;

/* --prompt "16,64": positive lengths, comma separated (an empty item is an error). */
static int parse_lengths(const char *s, bench_args *a) {
    a->n_lengths = 0;
    const char *cursor = s, *p;
    size_t len;
    int more;
    while ((more = cli_list_next(CMD, "--prompt", s, &cursor, &p, &len)) == 1) {
        char item[32];
        if (len >= sizeof item) return cli_usage_error(CMD, "--prompt: '%s' is not a list of lengths", s);
        if (a->n_lengths == MAX_LENGTHS) return cli_usage_error(CMD, "--prompt: at most %d lengths", MAX_LENGTHS);
        snprintf(item, sizeof item, "%.*s", (int)len, p);
        if (cli_parse_count(CMD, "--prompt", item, 1, INT64_MAX, &a->lengths[a->n_lengths++])) return CLI_USAGE;
    }
    return more == 0 ? CLI_OK : CLI_USAGE;
}

/* Returns CLI_OK, CLI_USAGE (message printed), or -1 for --help (printed). */
static int parse_args(int argc, char **argv, bench_args *a) {
    *a = (bench_args){.backend = "ref", .lengths = {128}, .n_lengths = 1, .gen = 32, .repeat = 3, .warmup = 1};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (cli_is_help(o)) {
            print_help();
            return -1;
        }
        if (strcmp(o, "--json") == 0) {
            a->json = true;
            continue;
        }
        static const char *const with_value[] = {"--model", "--backend", "--prompt", "--gen", "--repeat", "--warmup",
                                                 "--out"};
        bool known = false;
        for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++) known |= strcmp(o, with_value[k]) == 0;
        if (!known) return cli_usage_error(CMD, "unknown option '%s'", o);
        if (i + 1 >= argc) return cli_usage_error(CMD, "%s needs a value", o);
        const char *v = argv[++i];
        int rc = CLI_OK;
        if (strcmp(o, "--model") == 0) a->model_dir = v;
        else if (strcmp(o, "--out") == 0) a->out = v;
        else if (strcmp(o, "--backend") == 0) rc = cli_parse_backend(CMD, v, &a->backend);
        else if (strcmp(o, "--prompt") == 0) rc = parse_lengths(v, a);
        else if (strcmp(o, "--gen") == 0) rc = cli_parse_count(CMD, o, v, 1, 1 << 20, &a->gen);
        else if (strcmp(o, "--repeat") == 0) rc = cli_parse_count(CMD, o, v, 1, 1000, &a->repeat);
        else if (strcmp(o, "--warmup") == 0) rc = cli_parse_count(CMD, o, v, 0, 100, &a->warmup);
        if (rc != CLI_OK) return CLI_USAGE;
    }
    if (!a->model_dir) return cli_usage_error(CMD, "missing --model DIR");
    return CLI_OK;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of n values (sorted in place). */
static double median(double *v, int64_t n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double rate(double count, double seconds) { return seconds > 0 ? count / seconds : 0; }

/* One prompt length: warm-up and timed runs; appends its row to `rows`, prints its table line. */
static int bench_length(const bench_args *a, const m4_model *model, const cli_generator *gen, const m4_generate_options *base,
                        int64_t S, json_t *rows) {
    const int64_t V = model->config.text.vocab_size, runs = a->warmup + a->repeat;
    int64_t *ids = malloc(sizeof *ids * (size_t)S), *out = malloc(sizeof *out * (size_t)a->gen);
    double *prefill = malloc(sizeof *prefill * (size_t)a->repeat), *decode = malloc(sizeof *decode * (size_t)a->repeat);
    json_t *row_runs = json_array();
    int rc = CLI_FAILED;
    if (!ids || !out || !prefill || !decode || !row_runs) {
        cli_error(CMD, "out of memory (%zu bytes for a prompt of %lld tokens)",
                  sizeof *ids * (size_t)S + sizeof *out * (size_t)a->gen + 2 * sizeof *prefill * (size_t)a->repeat,
                  (long long)S);
        goto done;
    }
    for (int64_t i = 0; i < S; i++) ids[i] = (i * 7919 + 17) % V;   /* synthetic, deterministic */
    m4_generate_options opt = *base;
    opt.max_new_tokens = a->gen;
    opt.n_eos = 0;                                                    /* always --gen tokens */
    char what[64];
    snprintf(what, sizeof what, "prefill of %lld tokens", (long long)S);
    cli_layer_watch watch = {.cmd = CMD, .what = what};
    opt.prefill_progress = (m4_progress){.layer_done = cli_on_layer, .user = &watch};
    const m4_prompt prompt = {.batch = 1, .length = S, .ids = ids};
    m4_generate_stats stats = {0};
    for (int64_t r = 0; r < runs; r++) {
        m4_error err = {{0}};
        watch.start = cli_now_seconds(), watch.shown = false;
        if (cli_backend_reset(gen, &err) || m4_ref_generate(model, &prompt, &opt, NULL, out, NULL, &stats, &err)) {
            cli_error(CMD, "prompt of %lld tokens, run %lld: %s", (long long)S, (long long)(r + 1), err.msg);
            goto done;
        }
        if (r < a->warmup) continue;
        prefill[r - a->warmup] = stats.prefill_seconds, decode[r - a->warmup] = stats.decode_seconds;
        json_array_append_new(row_runs, json_pack("{s:f, s:f}", "prefill_seconds", stats.prefill_seconds,
                                                  "decode_seconds", stats.decode_seconds));
    }
    const double p = median(prefill, a->repeat), d = median(decode, a->repeat);
    const double steps = (double)stats.decode_steps;
    json_array_append_new(rows, json_pack("{s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:O}", "prompt_tokens",
                                          (json_int_t)S, "new_tokens", (json_int_t)stats.new_tokens, "decode_steps",
                                          (json_int_t)stats.decode_steps, "prefill_seconds", p,
                                          "prefill_tokens_per_second", rate((double)S, p), "decode_seconds", d,
                                          "decode_tokens_per_second", rate(steps, d), "ms_per_token",
                                          steps > 0 ? 1e3 * d / steps : 0.0, "runs", row_runs));
    if (!a->json)
        printf("%8lld %6lld %12.4f %14.1f %11.4f %14.2f %10.3f\n", (long long)S, (long long)stats.new_tokens, p,
               rate((double)S, p), d, rate(steps, d), steps > 0 ? 1e3 * d / steps : 0.0);
    fflush(stdout);
    rc = CLI_OK;
done:
    json_decref(row_runs);
    free(ids), free(out), free(prefill), free(decode);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    bench_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc != CLI_OK) return rc == -1 ? CLI_OK : rc;
    if (cli_check_output(CMD, "--out", a.out) != CLI_OK) return CLI_FAILED;

    m4_model model;
    m4_error err = {{0}};
    if (cli_model_open(CMD, a.model_dir, a.backend, &model) != CLI_OK) return CLI_FAILED;
    rc = CLI_FAILED;
    cli_generator gen = {0};
    json_t *root = NULL, *rows = json_array();
    const int64_t P = model.config.text.max_position_embeddings;
    int64_t capacity = 0;
    for (int k = 0; k < a.n_lengths; k++) {
        const int64_t need = a.lengths[k] + a.gen - 1;               /* the last token is never forwarded */
        if (need > P) {
            cli_error(CMD, "a prompt of %lld tokens and %lld new ones need %lld positions, more than the model's "
                           "max_position_embeddings (%lld)", (long long)a.lengths[k], (long long)a.gen,
                      (long long)need, (long long)P);
            goto done;
        }
        capacity = capacity > a.lengths[k] + a.gen ? capacity : a.lengths[k] + a.gen;
    }
    m4_generate_options opt = m4_generate_defaults(&model);
    if (!rows || cli_backend_open(CMD, a.backend, &model, capacity, &opt, &gen) != CLI_OK) goto done;
    char device[256];
    cli_backend_device(&gen, device, sizeof device);
    if (!a.json) {
        printf("mistral4 bench: %s on %s (%s), %lld new tokens per run, median of %lld after %lld warm-up\n",
               a.model_dir, a.backend, device, (long long)a.gen, (long long)a.repeat, (long long)a.warmup);
        printf("%8s %6s %12s %14s %11s %14s %10s\n", "prompt", "gen", "prefill s", "prompt tok/s", "decode s",
               "decode tok/s", "ms/token");
    }
    for (int k = 0; k < a.n_lengths; k++)
        if (bench_length(&a, &model, &gen, &opt, a.lengths[k], rows) != CLI_OK) goto done;
    root = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:O}", "schema", "mistral4-bench/1", "model",
                     a.model_dir, "backend", a.backend, "device", device, "version", cli_version(), "gen",
                     (json_int_t)a.gen, "repeat", (json_int_t)a.repeat, "warmup", (json_int_t)a.warmup, "rows", rows);
    if (!root) {
        cli_error(CMD, "out of memory");
        goto done;
    }
    if (a.json) {
        if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) goto done;
        fputc('\n', stdout);
    }
    if (a.out) {
        if (m4_write_json_file(root, a.out, "benchmark result", &err)) {
            cli_error(CMD, "%s", err.msg);
            goto done;
        }
        fprintf(stderr, "mistral4 bench: wrote %s\n", a.out);
    }
    rc = CLI_OK;
done:
    json_decref(root);
    json_decref(rows);
    cli_backend_close(&gen);
    m4_model_close(&model);
    return rc;
}
