/* prompt.c — a prompt's images and its ids through the chat template, for `run` and `tokenize`
 * (prompt.h). */
#include "prompt.h"

#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int add_image_path(const char *cmd, cli_prompt_images *im, const char *path) {
    if (im->n == CLI_PROMPT_MAX_IMAGES) {
        cli_error(cmd, "at most %d images (the conversation's and --image's together)", CLI_PROMPT_MAX_IMAGES);
        return -1;
    }
    if (!(im->paths[im->n] = strdup(path))) {
        cli_error(cmd, "out of memory (%zu bytes)", strlen(path) + 1);
        return -1;
    }
    im->n++;
    return 0;
}

/* Decodes im->paths and preprocesses them as one batch with the model's settings; each one's grid. */
static int preprocess_images(const char *cmd, cli_prompt_images *im, const m4_config *cfg) {
    m4_image_options_default(&im->opt);
    im->opt.patch_size = cfg->vision.patch_size;
    im->opt.merge = cfg->spatial_merge_size;
    im->opt.longest_edge = cfg->vision.image_size;
    m4_image *decoded = calloc((size_t)im->n, sizeof *decoded);
    m4_error err;
    int rc = -1;
    if (!decoded) {
        cli_error(cmd, "out of memory (%zu bytes)", (size_t)im->n * sizeof *decoded);
        return -1;
    }
    if (m4_image_options_check(&im->opt, &err)) {
        cli_error(cmd, "the model's image settings: %s", err.msg);
        goto done;
    }
    for (int i = 0; i < im->n; i++)
        if (m4_image_load(im->paths[i], &decoded[i], &err)) {
            cli_error(cmd, "%s", err.msg);
            goto done;
        }
    if (m4_image_preprocess(&im->opt, decoded, im->n, &im->batch, &err)) {
        cli_error(cmd, "%s", err.msg);
        goto done;
    }
    for (int i = 0; i < im->n; i++)
        if (m4_image_token_grid(&im->opt, im->batch.image_sizes[2 * i], im->batch.image_sizes[2 * i + 1],
                                &im->rows[i], &im->cols[i], &err)) {
            cli_error(cmd, "%s: %s", im->paths[i], err.msg);
            goto done;
        }
    rc = 0;
done:
    for (int i = 0; i < im->n; i++) m4_image_free(&decoded[i]);
    free(decoded);
    return rc;
}

int cli_prompt_load_images(const char *cmd, const cli_prompt_spec *spec, const m4_config *cfg, const char *model,
                           m4_chat_file *conv, cli_prompt_images *im) {
    m4_error err;
    memset(conv, 0, sizeof *conv);
    if (spec->chat) {                             /* room for the --image chunks after the file's */
        if (m4_chat_file_read(spec->chat, CLI_PROMPT_MAX_IMAGES, conv, &err)) {
            cli_error(cmd, "%s", err.msg);
            return -1;
        }
        for (int i = 0; i < conv->n_images; i++)
            if (add_image_path(cmd, im, conv->image_paths[i])) return -1;
    }
    for (int i = 0; i < spec->n_images; i++)
        if (add_image_path(cmd, im, spec->images[i])) return -1;
    if (im->n == 0) return 0;
    if (!cfg) {
        cli_error(cmd, "images need the model's config.json (its patch and image sizes): give --model DIR of a "
                       "multimodal model");
        return -1;
    }
    if (!cfg->multimodal) {
        cli_error(cmd, "images need a multimodal model; %s is %s (text only)", model, cfg->architecture);
        return -1;
    }
    return preprocess_images(cmd, im, cfg);
}

void cli_prompt_images_free(cli_prompt_images *im) {
    for (int i = 0; i < im->n; i++) free(im->paths[i]);
    m4_pixel_batch_free(&im->batch);
    memset(im, 0, sizeof *im);
}

/* The conversation file's image chunks (which hold their image's index in rows) get their token
 * grids; the --image files join its last message, which must be the user's (its chunks are the
 * last of conv->chunks, so they can grow in place). */
static int place_images(const char *cmd, const cli_prompt_spec *spec, m4_chat_file *conv, const cli_prompt_images *im) {
    const int from_file = conv->n_images;
    for (size_t k = 0; k < conv->n_chunks; k++)
        if (conv->chunks[k].kind == M4_CHUNK_IMAGE) {
            const int64_t i = conv->chunks[k].rows;
            conv->chunks[k].rows = im->rows[i], conv->chunks[k].cols = im->cols[i];
        }
    if (im->n == from_file) return 0;
    m4_chat_message *u = &conv->messages[conv->n_messages - 1];
    if (u->role != M4_ROLE_USER) {
        cli_error(cmd, "%s: --image needs the conversation to end with a user message", spec->chat);
        return -1;
    }
    for (int i = from_file; i < im->n; i++)
        conv->chunks[conv->n_chunks++] = (m4_chat_chunk){.kind = M4_CHUNK_IMAGE, .rows = im->rows[i], .cols = im->cols[i]};
    u->n_chunks += (size_t)(im->n - from_file);
    return 0;
}

int cli_prompt_encode(const char *cmd, const cli_prompt_spec *spec, const m4_tokenizer *tok, m4_chat_file *conv,
                      const cli_prompt_images *im, m4_token_ids *out) {
    m4_error err;
    if (spec->raw) {
        int32_t bos;
        if (m4_tokenizer_special_id(tok, "<s>", &bos, &err) || m4_token_ids_push(out, bos, &err) ||
            m4_tokenizer_encode(tok, spec->prompt, strlen(spec->prompt), out, &err)) {
            cli_error(cmd, "%s", err.msg);
            return -1;
        }
        return 0;
    }
    m4_chat_chunk prompt_chunks[CLI_PROMPT_MAX_IMAGES + 1];
    m4_chat_message one = {.role = M4_ROLE_USER, .chunks = prompt_chunks};
    const m4_chat_message *messages = &one;
    size_t n_messages = 1;
    if (spec->prompt) {                                  /* the images, then the text */
        for (int i = 0; i < im->n; i++)
            prompt_chunks[i] = (m4_chat_chunk){.kind = M4_CHUNK_IMAGE, .rows = im->rows[i], .cols = im->cols[i]};
        prompt_chunks[im->n] = (m4_chat_chunk){.kind = M4_CHUNK_TEXT, .text = spec->prompt};
        one.n_chunks = (size_t)im->n + 1;
    } else {
        if (place_images(cmd, spec, conv, im)) return -1;
        messages = conv->messages, n_messages = conv->n_messages;
    }
    if (m4_chat_encode(tok, messages, n_messages, spec->effort, out, &err)) {
        cli_error(cmd, "%s%s%s", spec->chat ? spec->chat : "", spec->chat ? ": " : "", err.msg);
        return -1;
    }
    return 0;
}
