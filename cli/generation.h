/* generation.h — what `mistral4 run` and `mistral4 bench` share to generate: the clock, progress
 * of long steps on stderr, and the generation backend (the reference, or a backend's session
 * wired into m4_generate_options.backend). */
#ifndef M4_CLI_GENERATION_H
#define M4_CLI_GENERATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "generate.h"
#include "vision.h"

/* --backend of a generating command: "ref", or a cuda-* backend built into this binary. Sets *out,
 * or prints a usage error and returns CLI_USAGE. */
int cli_parse_backend(const char *cmd, const char *value, const char **out);
/* A whole number in [min, max] for option `opt`; else a usage error (CLI_USAGE). */
int cli_parse_count(const char *cmd, const char *opt, const char *value, int64_t min, int64_t max, int64_t *out);
/* A list ("1,331, 439", "16 32", a file of token ids), one item at a time: items are separated by
 * a comma, white space or both. Start with *cursor = list; each call sets *item and *len to the
 * next item, moves *cursor past it and returns 1; after the last item it returns 0. An empty item
 * (between two commas, or a comma at either end: "1,,2", "1,", "") is never skipped: the call
 * returns -1 with *len set to that item's number (1-based), for the caller's message. */
int cli_list_split(const char *list, const char **cursor, const char **item, size_t *len);

/* cli_list_split for a list option's value: an empty item is a usage error naming the option, the
 * item's number and the list (returns CLI_USAGE, message printed). */
int cli_list_next(const char *cmd, const char *opt, const char *list, const char **cursor, const char **item,
                  size_t *len);

/* CLOCK_MONOTONIC, in seconds. */
double cli_now_seconds(void);

/* Layer-by-layer progress of a long step on stderr ("mistral4 CMD: WHAT: layer i/n, t s"), once
 * it has taken more than a second; pass cli_on_layer and a watch as an m4_progress. */
typedef struct {
    const char *cmd;         /* "run", "bench" */
    const char *what;        /* "prefill of 12 tokens", "upload to the GPU" */
    double start;
    bool shown;
} cli_layer_watch;
void cli_on_layer(void *watch, int64_t layer, int64_t layers);

/* GiB of a checkpoint folder's *.safetensors files (to announce a long load); 0 when unreadable. */
double cli_checkpoint_gib(const char *dir);

/* Opens the checkpoint a generating command runs on `backend`, announcing a long load on stderr.
 * For the reference the weights are made resident (m4_model_open_resident: copied into huge pages
 * when they take at most half the free memory, since every step streams them), and stderr says
 * which; a CUDA backend uploads them from the mapping. Prints the error and returns CLI_FAILED. */
int cli_model_open(const char *cmd, const char *dir, const char *backend, m4_model *model);

/* What `run` and `bench` generate with: the backend, and for one with generation sessions
 * (backend.h; the CUDA ones) its open session; the reference has none (its loop owns the cache). */
typedef struct {
    const m4_backend *backend;
    void *session;
} cli_generator;

/* The generator for backend `name` ("ref", "cuda-fp32", "cuda-bf16") and one row of up to
 * `capacity` positions: opens its session (weights uploaded, with progress) and wires it into
 * opt->backend. Prints the error as `mistral4 CMD: …` and returns CLI_FAILED when it cannot be
 * opened. */
int cli_backend_open(const char *cmd, const char *name, const m4_model *model, int64_t capacity,
                     m4_generate_options *opt, cli_generator *gen);
/* The prompt's embeddings with its images: the session's, or the reference's. */
int cli_prompt_embeds(const cli_generator *gen, const m4_model *model, const int64_t *ids, int64_t S,
                      const m4_pixel_batch *px, float *embeds, m4_error *err);
/* Empties the session's cache (a new generation from position 0); nothing for the reference. */
int cli_backend_reset(const cli_generator *gen, m4_error *err);
/* "NVIDIA H200" for a session, "CPU" for the reference (into buf). */
void cli_backend_device(const cli_generator *gen, char *buf, size_t n);
void cli_backend_close(cli_generator *gen);

#endif
