/* generation.c — the generation helpers `run` and `bench` share (generation.h). */
#include "generation.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "files.h"

int cli_parse_backend(const char *cmd, const char *value, const char **out) {
    if (!m4_backend_find(value))
        return cli_usage_error(cmd, "--backend: unknown backend '%s' (built here: %s)", value, cli_backend_list());
    *out = value;
    return CLI_OK;
}

int cli_parse_count(const char *cmd, const char *opt, const char *value, int64_t min, int64_t max, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    /* strtoll would also skip leading spaces and take a '+': a whole number is digits, signed '-' */
    bool written_plainly = isdigit((unsigned char)value[0]) || (value[0] == '-' && isdigit((unsigned char)value[1]));
    if (errno || !written_plainly || *end || v < min || v > max) {
        if (max == INT64_MAX)
            return cli_usage_error(cmd, "%s wants a whole number >= %lld, got '%s'", opt, (long long)min, value);
        return cli_usage_error(cmd, "%s wants a whole number in %lld..%lld, got '%s'", opt, (long long)min,
                               (long long)max, value);
    }
    *out = v;
    return CLI_OK;
}

static bool is_list_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The number of items (runs of characters other than commas and spaces) in [from, to). */
static size_t items_in(const char *from, const char *to) {
    size_t n = 0;
    for (const char *p = from; p < to; p++)
        n += p[0] != ',' && !is_list_space(p[0]) && (p == from || p[-1] == ',' || is_list_space(p[-1]));
    return n;
}

int cli_list_split(const char *list, const char **cursor, const char **item, size_t *len) {
    const char *p = *cursor;
    /* after the first item, a comma may separate it from this one (spaces alone also do) */
    bool after_comma = false;
    while (is_list_space(*p)) p++;
    if (*p == ',' && items_in(list, p) > 0) after_comma = true, p++;
    while (is_list_space(*p)) p++;
    if (*p == ',' || (*p == '\0' && (after_comma || items_in(list, p) == 0))) {
        *len = items_in(list, p) + 1;
        return -1;
    }
    if (*p == '\0') return 0;
    const char *end = p;
    while (*end && *end != ',' && !is_list_space(*end)) end++;
    *item = p, *len = (size_t)(end - p);
    *cursor = end;
    return 1;
}

int cli_list_next(const char *cmd, const char *opt, const char *list, const char **cursor, const char **item,
                  size_t *len) {
    const int more = cli_list_split(list, cursor, item, len);
    if (more < 0)
        return cli_usage_error(cmd, "%s: item %zu of '%s' is empty (items are separated by commas or spaces)", opt,
                               *len, list);
    return more;
}

double cli_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_on_layer(void *watch, int64_t layer, int64_t layers) {
    cli_layer_watch *w = watch;
    double t = cli_now_seconds() - w->start;
    if (t > 1.0 || w->shown) {
        fprintf(stderr, "\rmistral4 %s: %s: layer %lld/%lld, %.1f s", w->cmd, w->what, (long long)(layer + 1),
                (long long)layers, t);
        w->shown = true;
        if (layer + 1 == layers) fputc('\n', stderr);
    }
}

static void add_bytes(const char *path, double bytes, void *total) { *(double *)total += bytes; }

double cli_checkpoint_gib(const char *dir) {
    double bytes = 0;
    cli_files_ending(dir, ".safetensors", add_bytes, &bytes);
    return bytes / (1024.0 * 1024.0 * 1024.0);
}

int cli_model_open(const char *cmd, const char *dir, const char *backend, m4_model *model) {
    const double gib = cli_checkpoint_gib(dir);
    if (gib > 1.0) fprintf(stderr, "mistral4 %s: loading %s (%.1f GiB) ...\n", cmd, dir, gib);
    m4_error err = {{0}};
    bool resident = false;
    const bool ref = strcmp(backend, "ref") == 0;
    if (ref ? m4_model_open_resident(dir, model, &resident, &err) : m4_model_open(dir, model, &err)) {
        cli_error(cmd, "%s", err.msg);
        return CLI_FAILED;
    }
    if (ref && gib > 1.0)
        fprintf(stderr, "mistral4 %s: weights %s\n", cmd,
                resident ? "resident in memory (huge pages)" : "left mapped: more than half of the free memory");
    return CLI_OK;
}

int cli_backend_open(const char *cmd, const char *name, const m4_model *model, int64_t capacity,
                     m4_generate_options *opt, cli_generator *gen) {
    *gen = (cli_generator){.backend = m4_backend_find(name)};
    if (!gen->backend) {
        cli_error(cmd, "--backend %s: not built into this binary (built here: %s)", name, cli_backend_list());
        return CLI_FAILED;
    }
    if (!gen->backend->session_open) return CLI_OK; /* the reference: m4_ref_generate's own cache */
    m4_error err = {{0}};
    cli_layer_watch watch = {.cmd = cmd, .what = "upload to the GPU", .start = cli_now_seconds()};
    const m4_progress upload = {.layer_done = cli_on_layer, .user = &watch};
    if (gen->backend->session_open(model, 1, capacity, &upload, &gen->session, &err)) {
        if (watch.shown) fputc('\n', stderr);
        cli_error(cmd, "%s: %s", name, err.msg);
        gen->session = NULL;
        return CLI_FAILED;
    }
    opt->backend = (m4_cached_forward){.forward = gen->backend->session_forward, .user = gen->session};
    return CLI_OK;
}

int cli_prompt_embeds(const cli_generator *gen, const m4_model *model, const int64_t *ids, int64_t S,
                      const m4_pixel_batch *px, float *embeds, m4_error *err) {
    if (gen->session) return gen->backend->session_prompt_embeds(gen->session, ids, 1, S, px, embeds, err);
    return m4_ref_prompt_embeds(model, ids, 1, S, px, embeds, err);
}

int cli_backend_reset(const cli_generator *gen, m4_error *err) {
    return gen->session ? gen->backend->session_reset(gen->session, err) : 0;
}

void cli_backend_device(const cli_generator *gen, char *buf, size_t n) {
    m4_error err;
    if (gen->session && gen->backend->session_device_name(gen->session, buf, n, &err) == 0) return;
    snprintf(buf, n, "%s", gen->session ? "GPU" : "CPU");
}

void cli_backend_close(cli_generator *gen) {
    if (gen->session) gen->backend->session_close(gen->session);
    gen->session = NULL;
}
