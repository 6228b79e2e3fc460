/* cmd_preprocess.c — `mistral4 preprocess IMAGE... [--out FILE.h5|FILE.json]`: decodes images and
 * runs the Pixtral image preprocessing (preprocess/image.h), printing each image's sizes and token
 * grid and writing pixel_values, image_sizes and the image tokens. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>
#include <hdf5_hl.h>

#include "cli.h"
#include "generation.h"
#include "image.h"
#include "m4_output.h"

#define CMD "preprocess"
#define SCHEMA "mistral4-preprocess/1"

static void print_help(void) {
    printf(
        "Usage: mistral4 preprocess IMAGE... [--out FILE.h5|FILE.json] [options]\n"
        "\n"
        "Decodes PNG/JPEG images and preprocesses them exactly as Hugging Face's PixtralProcessor\n"
        "(torchvision backend) does for Mistral 4: convert to RGB (alpha composited onto white),\n"
        "resize so the longest side is at most --longest-edge and both sides are multiples of\n"
        "patch·merge (bicubic, antialiased, on uint8), normalise with the CLIP mean/std, and pad the\n"
        "batch with zeros to its largest height and width (docs/MODEL.md §4). Prints, per image, the\n"
        "source and resized sizes and its token grid (rows of [IMG] tokens, each row closed by\n"
        "[IMG_BREAK], the last one by [IMG_END]; MODEL.md §3.7).\n"
        "\n"
        "Options:\n"
        "  --out FILE          also write the result: FILE.h5 (HDF5) or FILE.json, chosen by the\n"
        "                      extension; written to a temporary name and renamed when complete;\n"
        "                      its folder must exist and be writable (checked before any work)\n"
        "  --patch N           vision patch size (default 14)\n"
        "  --merge N           spatial merge size (default 2)\n"
        "  --longest-edge N    longest side after resizing (default 1540)\n"
        "  --quiet             print nothing on success\n"
        "  -h, --help          show this help\n"
        "\n"
        "Output (both formats; schema " SCHEMA "):\n"
        "  pixel_values   float32 [N, 3, H, W]   normalised pixels, zero-padded to the batch max H, W\n"
        "  image_sizes    int64 [N, 2]           (H, W) of each resized image before padding\n"
        "  source_sizes   int64 [N, 2]           (height, width) of each decoded file\n"
        "  token_grid     int64 [N, 2]           (rows, cols) of merged patches = [IMG] rows, columns\n"
        "  image_tokens   int64 [L]              every image's token block, concatenated in order\n"
        "                                        (ids [IMG]=10, [IMG_BREAK]=12, [IMG_END]=13)\n"
        "  attributes     schema, files, patch_size, spatial_merge_size, longest_edge\n"
        "\n"
        "Examples:\n"
        "  mistral4 preprocess photo.jpg\n"
        "  mistral4 preprocess a.png b.jpg --out pixels.h5\n"
        "  mistral4 preprocess chart.png --longest-edge 1024 --out chart.json\n"
        "\n"
        "Exit status: 0 success, 1 an image could not be read or the output not written, 2 usage error.\n");
}

/* The whole result, gathered for the writers. */
typedef struct {
    int n;
    char **files;
    const m4_image_options *opt;
    const m4_pixel_batch *batch;
    int64_t *source_sizes;   /* [n, 2] */
    int64_t *token_grid;     /* [n, 2] */
    int64_t *tokens;         /* [n_tokens] */
    int64_t n_tokens;
} result;

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* ---- HDF5 ---------------------------------------------------------------------------------- */

/* The HDF5 file at `path` (m4_write_atomically's temporary file). */
static int write_h5(const char *path, const void *content) {
    const result *r = content;
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return -1;
    const m4_pixel_batch *b = r->batch;
    hsize_t pv_dims[4] = {(hsize_t)b->n, 3, (hsize_t)b->height, (hsize_t)b->width};
    hsize_t nx2[2] = {(hsize_t)r->n, 2};
    hsize_t tok_dims[1] = {(hsize_t)r->n_tokens};
    size_t names_len = 1;
    for (int i = 0; i < r->n; i++) names_len += strlen(r->files[i]) + 1;
    char *names = calloc(names_len, 1);
    int ok = names != NULL;
    for (int i = 0; ok && i < r->n; i++) {
        if (i) strcat(names, "\n");
        strcat(names, r->files[i]);
    }
    ok = ok && H5LTmake_dataset(f, "pixel_values", 4, pv_dims, H5T_NATIVE_FLOAT, b->pixel_values) >= 0 &&
         H5LTmake_dataset(f, "image_sizes", 2, nx2, H5T_NATIVE_INT64, b->image_sizes) >= 0 &&
         H5LTmake_dataset(f, "source_sizes", 2, nx2, H5T_NATIVE_INT64, r->source_sizes) >= 0 &&
         H5LTmake_dataset(f, "token_grid", 2, nx2, H5T_NATIVE_INT64, r->token_grid) >= 0 &&
         H5LTmake_dataset(f, "image_tokens", 1, tok_dims, H5T_NATIVE_INT64, r->tokens) >= 0 &&
         H5LTset_attribute_string(f, "/", "schema", SCHEMA) >= 0 &&
         H5LTset_attribute_string(f, "/", "files", names) >= 0;
    long long settings[3] = {r->opt->patch_size, r->opt->merge, r->opt->longest_edge};
    const char *setting_names[3] = {"patch_size", "spatial_merge_size", "longest_edge"};
    for (int i = 0; ok && i < 3; i++) ok = H5LTset_attribute_long_long(f, "/", setting_names[i], &settings[i], 1) >= 0;
    free(names);
    if (H5Fclose(f) < 0) ok = 0;
    return ok ? 0 : -1;
}

/* ---- JSON ---------------------------------------------------------------------------------- */

static void json_string(FILE *out, const char *s) {
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(out, "\\%c", *p);
        else if (*p < 0x20) fprintf(out, "\\u%04x", *p);
        else fputc(*p, out);
    }
    fputc('"', out);
}

static void json_int_pairs(FILE *out, const int64_t *v, int n) {
    fputc('[', out);
    for (int i = 0; i < n; i++)
        fprintf(out, "%s[%lld, %lld]", i ? ", " : "", (long long)v[2 * i], (long long)v[2 * i + 1]);
    fputc(']', out);
}

/* The JSON document into `out` (m4_write_stream_atomically checks its flush and close). */
static int write_json(FILE *out, const void *content) {
    const result *r = content;
    const m4_pixel_batch *b = r->batch;
    fprintf(out, "{\n  \"schema\": \"%s\",\n  \"patch_size\": %lld,\n  \"spatial_merge_size\": %lld,\n"
                 "  \"longest_edge\": %lld,\n  \"files\": [",
            SCHEMA, (long long)r->opt->patch_size, (long long)r->opt->merge, (long long)r->opt->longest_edge);
    for (int i = 0; i < r->n; i++) {
        if (i) fputs(", ", out);
        json_string(out, r->files[i]);
    }
    fputs("],\n  \"source_sizes\": ", out);
    json_int_pairs(out, r->source_sizes, r->n);
    fputs(",\n  \"image_sizes\": ", out);
    json_int_pairs(out, b->image_sizes, r->n);
    fputs(",\n  \"token_grid\": ", out);
    json_int_pairs(out, r->token_grid, r->n);
    fputs(",\n  \"image_tokens\": [", out);
    for (int64_t i = 0; i < r->n_tokens; i++) fprintf(out, "%s%lld", i ? ", " : "", (long long)r->tokens[i]);
    fprintf(out, "],\n  \"pixel_values_shape\": [%lld, 3, %lld, %lld],\n  \"pixel_values\": [",
            (long long)b->n, (long long)b->height, (long long)b->width);
    int64_t total = b->n * 3 * b->height * b->width;
    for (int64_t i = 0; i < total; i++) {
        /* %.9g round-trips a float32 */
        fprintf(out, "%s%.9g", i == 0 ? "" : (i % 16 == 0 ? ",\n    " : ", "), (double)b->pixel_values[i]);
    }
    fputs("]\n}\n", out);
    return ferror(out) ? -1 : 0;
}

/* ---- the command ----------------------------------------------------------------------------- */

int cmd_preprocess(int argc, char **argv) {
    m4_image_options opt;
    m4_image_options_default(&opt);
    const char *out_path = NULL;
    bool quiet = false;
    char **files = malloc(sizeof *files * (size_t)(argc > 1 ? argc : 1));
    if (!files) return CLI_FAILED;
    int n = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            free(files);
            print_help();
            return CLI_OK;
        }
        int64_t *target = strcmp(a, "--patch") == 0          ? &opt.patch_size
                          : strcmp(a, "--merge") == 0        ? &opt.merge
                          : strcmp(a, "--longest-edge") == 0 ? &opt.longest_edge
                                                             : NULL;
        if (target || strcmp(a, "--out") == 0) {
            if (i + 1 >= argc) {
                free(files);
                return cli_usage_error(CMD, "%s needs a value", a);
            }
            const char *value = argv[++i];
            if (!target) {
                out_path = value;
            } else if (cli_parse_count(CMD, a, value, 1, M4_IMAGE_MAX_SIDE, target) != CLI_OK) {
                free(files);
                return CLI_USAGE;
            }
        } else if (strcmp(a, "--quiet") == 0) {
            quiet = true;
        } else if (a[0] == '-' && a[1] != 0) {
            free(files);
            return cli_usage_error(CMD, "unknown option '%s'", a);
        } else {
            files[n++] = argv[i];
        }
    }
    if (n == 0) {
        free(files);
        return cli_usage_error(CMD, "give at least one image file");
    }
    if (out_path && !ends_with(out_path, ".h5") && !ends_with(out_path, ".hdf5") && !ends_with(out_path, ".json")) {
        free(files);
        return cli_usage_error(CMD, "--out %s: the name must end in .h5, .hdf5 or .json", out_path);
    }
    if (cli_check_output(CMD, "--out", out_path) != CLI_OK) {
        free(files);
        return CLI_FAILED;
    }
    m4_error err = {{0}};
    if (m4_image_options_check(&opt, &err) != 0) {
        free(files);
        return cli_usage_error(CMD, "%s", err.msg);
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* failures are reported once, below */

    int rc = CLI_FAILED;
    m4_image *images = calloc((size_t)n, sizeof *images);
    int64_t *source_sizes = malloc(sizeof(int64_t) * 2 * (size_t)n);
    int64_t *grid = malloc(sizeof(int64_t) * 2 * (size_t)n);
    int64_t *tokens = NULL, n_tokens = 0;
    m4_pixel_batch batch = {0};
    m4_image_token_ids ids;
    m4_image_token_ids_default(&ids);
    if (!images || !source_sizes || !grid) {
        cli_error(CMD, "out of memory (%zu bytes for %d images)", (size_t)n * (sizeof *images + 4 * sizeof(int64_t)), n);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (m4_image_load(files[i], &images[i], &err) != 0) {
            cli_error(CMD, "%s", err.msg);
            goto done;
        }
        source_sizes[2 * i] = images[i].height, source_sizes[2 * i + 1] = images[i].width;
    }
    if (m4_image_preprocess(&opt, images, n, &batch, &err) != 0) {
        cli_error(CMD, "%s", err.msg);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (m4_image_token_grid(&opt, batch.image_sizes[2 * i], batch.image_sizes[2 * i + 1], &grid[2 * i],
                                &grid[2 * i + 1], &err) != 0) {
            cli_error(CMD, "%s: %s", files[i], err.msg);
            goto done;
        }
        n_tokens += grid[2 * i] * (grid[2 * i + 1] + 1);
    }
    tokens = malloc(sizeof *tokens * (size_t)n_tokens);
    if (!tokens) {
        cli_error(CMD, "out of memory (%zu bytes for %lld image tokens)", sizeof *tokens * (size_t)n_tokens,
                  (long long)n_tokens);
        goto done;
    }
    for (int i = 0, at = 0; i < n; i++) {
        int64_t written;
        if (m4_image_tokens(&opt, batch.image_sizes[2 * i], batch.image_sizes[2 * i + 1], &ids, tokens + at,
                            n_tokens - at, &written, &err) != 0) {
            cli_error(CMD, "%s: %s", files[i], err.msg);
            goto done;
        }
        at += (int)written;
    }
    if (!quiet) {
        for (int i = 0; i < n; i++) {
            int64_t rows = grid[2 * i], cols = grid[2 * i + 1];
            printf("%s: %lld x %lld -> %lld x %lld (W x H); %lld rows x %lld columns of merged patches: "
                   "%lld [IMG] + %lld break/end = %lld tokens\n",
                   files[i], (long long)source_sizes[2 * i + 1], (long long)source_sizes[2 * i],
                   (long long)batch.image_sizes[2 * i + 1], (long long)batch.image_sizes[2 * i], (long long)rows,
                   (long long)cols, (long long)(rows * cols), (long long)rows, (long long)(rows * (cols + 1)));
        }
        printf("pixel_values [%lld, 3, %lld, %lld], %lld image tokens in all\n", (long long)batch.n,
               (long long)batch.height, (long long)batch.width, (long long)n_tokens);
    }
    if (out_path) {
        result r = {.n = n, .files = files, .opt = &opt, .batch = &batch, .source_sizes = source_sizes,
                    .token_grid = grid, .tokens = tokens, .n_tokens = n_tokens};
        const int failed = ends_with(out_path, ".json")
                               ? m4_write_stream_atomically(out_path, "output", write_json, &r, &err)
                               : m4_write_atomically(out_path, "output", write_h5, &r, &err);
        if (failed) {
            cli_error(CMD, "%s", err.msg);
            goto done;
        }
        if (!quiet) printf("wrote %s\n", out_path);
    }
    rc = CLI_OK;
done:
    for (int i = 0; images && i < n; i++) m4_image_free(&images[i]);
    free(images);
    free(source_sizes);
    free(grid);
    free(tokens);
    m4_pixel_batch_free(&batch);
    free(files);
    return rc;
}
