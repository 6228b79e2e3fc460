/* prompt.h — what `mistral4 run` and `mistral4 tokenize` share to turn a prompt into token ids:
 * the prompt's images (the conversation file's and --image's, decoded and preprocessed as one
 * batch with each one's token grid), and the v15 chat template over one user message or a
 * conversation file (preprocess/chat.h), or <s> + raw text. Messages are printed as
 * `mistral4 CMD: …`. */
#ifndef M4_CLI_PROMPT_H
#define M4_CLI_PROMPT_H

#include <stdbool.h>
#include <stdint.h>

#include "chat.h"
#include "config.h"
#include "image.h"
#include "tokenizer.h"
#include "vision.h"

#define CLI_PROMPT_MAX_IMAGES M4_CHAT_MAX_IMAGES   /* images of one prompt, --image and --chat together */

/* A prompt as the command line gives it: one of text (`prompt`, through the template, or after <s>
 * alone with `raw`) and a conversation file (`chat`); --image files in order. */
typedef struct {
    const char *prompt, *chat;
    bool raw;
    m4_reasoning_effort effort;
    const char *const *images;
    int n_images;
} cli_prompt_spec;

/* The prompt's images, in order: the conversation file's image chunks, then --image's. */
typedef struct {
    int n;
    char *paths[CLI_PROMPT_MAX_IMAGES];   /* owned */
    m4_image_options opt;                 /* the model's patch_size, spatial_merge_size, image_size */
    m4_pixel_batch batch;
    int64_t rows[CLI_PROMPT_MAX_IMAGES], cols[CLI_PROMPT_MAX_IMAGES];  /* merged patches */
} cli_prompt_images;

/* The images of `spec`: reads its conversation file (into *conv, zeroed first; free it with
 * m4_chat_file_free) for their paths, then decodes and preprocesses them all with the image
 * settings of `cfg`, which must be multimodal when there are any (`model` names it in the
 * message; NULL: no config.json, so no images). Prints the error and returns -1 on failure. */
int cli_prompt_load_images(const char *cmd, const cli_prompt_spec *spec, const m4_config *cfg, const char *model,
                           m4_chat_file *conv, cli_prompt_images *im);
void cli_prompt_images_free(cli_prompt_images *im);

/* The ids of `spec`'s text or conversation (not --ids) with the images `im` loaded from it, through
 * the chat template (or <s> + text with raw), appended to *out. Prints the error and returns -1. */
int cli_prompt_encode(const char *cmd, const cli_prompt_spec *spec, const m4_tokenizer *tok, m4_chat_file *conv,
                      const cli_prompt_images *im, m4_token_ids *out);

#endif
