/* image.h — image files in, Pixtral pixel values out: PNG/JPEG decoding and the preprocessing of
 * Hugging Face's PixtralProcessor around PixtralImageProcessor (the v5 torchvision backend),
 * MODEL.md §1.4, §3.7 and §4.
 *
 * The pipeline, each step matching what HF computes for a PIL image:
 *   file ──decode──▶ RGB uint8 [3, h, w]          PIL's decode + convert_to_rgb: gray expanded,
 *                                                 alpha composited onto white (PIL integer math)
 *        ──resize──▶ RGB uint8 [3, H, W]          H, W: longest edge ≤ longest_edge (floor), then
 *                                                 rounded UP to multiples of patch·merge (28);
 *                                                 torchvision's antialiased bicubic on uint8
 *                                                 (fixed-point weights, like ATen's uint8 kernel)
 *        ──normalise──▶ float32 [3, H, W]         (x − 255·mean) / (255·std), float32 (fused)
 *        ──batch──▶ float32 [N, 3, Hmax, Wmax]    zero padding bottom/right, image_sizes (H, W)
 *
 * The decoder reads untrusted files: every failure is a status and an m4_error naming the file
 * and the problem (empty, truncated, corrupt, too large, not a PNG/JPEG); limits below bound the
 * memory a file can make us allocate. Nothing here prints. */
#ifndef M4_IMAGE_H
#define M4_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "m4_error.h"
#include "vision.h" /* m4_pixel_batch: the pre-processing's output is the vision tower's input */

/* ---- decoder limits ---------------------------------------------------------------------- */

/* Largest decoded image accepted: width · height ≤ 2^26 = 67,108,864 pixels (8192 × 8192; a
 * 60-megapixel camera frame fits). Checked from the file header, before any pixel buffer is
 * allocated. The decoder then holds at most 4 bytes a pixel plus one RGB copy (≈ 448 MiB at the
 * limit; libjpeg's own buffers are bounded by M4_IMAGE_MAX_JPEG_MEMORY); the preprocessed result
 * is at most longest_edge² pixels anyway. */
#define M4_IMAGE_MAX_PIXELS ((int64_t)1 << 26)
/* Longest side accepted (either dimension), also passed to libpng as its user limit. */
#define M4_IMAGE_MAX_SIDE 65535
/* Largest file read into memory (256 MiB). */
#define M4_IMAGE_MAX_FILE_BYTES ((int64_t)1 << 28)
/* Progressive JPEG: at most this many scans (a normal file has about 10; a crafted one with
 * thousands makes decoding quadratic). Same bound libjpeg-turbo's own fuzzers use. */
#define M4_IMAGE_MAX_JPEG_SCANS 500
/* Memory libjpeg may allocate for one image (coefficient buffers of progressive files). */
#define M4_IMAGE_MAX_JPEG_MEMORY ((long)1 << 29)

/* ---- decoded images ---------------------------------------------------------------------- */

/* An RGB image, 8 bits a channel, planar: pixels[c·H·W + y·W + x] (torch's CHW uint8 layout). */
typedef struct {
    int64_t height, width;
    uint8_t *pixels;         /* [3, height, width]; owned (m4_image_free) */
} m4_image;

/* Reads and decodes a PNG or JPEG file (format from its first bytes, not its name) into RGB the way
 * HF's processor sees a PIL image: PIL's decode (libjpeg ISLOW IDCT + fancy upsampling; 16-bit
 * PNG samples keep their high byte, except 16-bit grayscale which PIL opens as I;16 and clamps to
 * 255), then `convert_to_rgb`: gray → RGB, CMYK → RGB (PIL's formula), and anything with alpha
 * (RGBA, LA, palette or colour-key transparency) alpha-composited onto opaque white with PIL's
 * integer `alpha_composite`. EXIF orientation is ignored, as HF ignores it. */
int m4_image_load(const char *path, m4_image *img, m4_error *err);

/* The same from bytes in memory; `name` stands for the file in error messages. */
int m4_image_decode(const uint8_t *data, size_t size, const char *name, m4_image *img, m4_error *err);

void m4_image_free(m4_image *img);

/* ---- preprocessing ----------------------------------------------------------------------- */

/* The processor settings (preprocessor_config.json / processor_config.json). */
typedef struct {
    int64_t patch_size;      /* vision_config.patch_size (14) */
    int64_t merge;           /* spatial_merge_size (2): images are sized in multiples of patch·merge */
    int64_t longest_edge;    /* size.longest_edge (1540) */
    double rescale_factor;   /* 1/255 */
    double mean[3], std[3];  /* image_mean, image_std (OpenAI CLIP values) */
} m4_image_options;

/* The published model's settings (MODEL.md §1.4): 14, 2, 1540, 1/255, CLIP mean/std. */
void m4_image_options_default(m4_image_options *opt);

/* Fails on a setting the processor could not use (non-positive sizes, zero std …). */
int m4_image_options_check(const m4_image_options *opt, m4_error *err);

/* The resize rule (PixtralImageProcessor.resize / get_resize_output_image_size): with
 * r = max(h/L, w/L) in double, when r > 1: h = floor(h/r), w = floor(w/r); then each side rounds UP
 * to a multiple of p = patch·merge. Fails when a side would become 0 (an image too elongated to
 * keep one pixel on its short side), where HF would hand torch a zero-sized resize. */
int m4_image_target_size(const m4_image_options *opt, int64_t height, int64_t width,
                         int64_t *out_height, int64_t *out_width, m4_error *err);

/* torchvision `resize(uint8 CHW, [out_h, out_w], BICUBIC, antialias=True)` as ATen's CPU uint8
 * kernel computes it: separable, horizontal pass first, each pass with weights of the Keys cubic
 * (a = −0.5) whose support widens by the downscale factor, normalised in double, then converted
 * to int16 fixed point; every output is clamp((Σ w·x + 2^(p−1)) >> p, 0, 255), so the
 * intermediate image is uint8. A side whose size does not change is not resampled. `src` has
 * `channels` planes of h × w, `dst` receives channels planes of out_h × out_w. */
int m4_image_resize_bicubic_aa(const uint8_t *src, int64_t channels, int64_t height, int64_t width,
                               uint8_t *dst, int64_t out_height, int64_t out_width, m4_error *err);

/* Rescale + normalise, fused as the torchvision backend does it, all in float32:
 * out = (x − m) / s with m = f32(mean)·f32(1/rescale_factor), s likewise from std. */
void m4_image_normalize(const m4_image_options *opt, const uint8_t *chw, int64_t height,
                        int64_t width, float *out);

/* Resize + normalise + pad `n` decoded images (PixtralImageProcessor._preprocess). The batch
 * owns its arrays: free them with m4_pixel_batch_free. */
int m4_image_preprocess(const m4_image_options *opt, const m4_image *images, int64_t n,
                        m4_pixel_batch *out, m4_error *err);

/* Frees what m4_image_preprocess allocated (not for batches that view other memory). */
void m4_pixel_batch_free(m4_pixel_batch *batch);

/* ---- the image's tokens in the prompt (MODEL.md §3.7) ------------------------------------ */

/* Tekken ids of the image tokens. */
typedef struct {
    int64_t img;             /* [IMG] = 10: replaced by one projector output row */
    int64_t img_break;       /* [IMG_BREAK] = 12: ends each row of merged patches */
    int64_t img_end;         /* [IMG_END] = 13: replaces the last [IMG_BREAK] */
} m4_image_token_ids;

void m4_image_token_ids_default(m4_image_token_ids *ids);

/* The token grid of a resized H × W image: rows = H/(patch·merge), cols = W/(patch·merge); the
 * block holds rows·(cols+1) tokens of which rows·cols are [IMG]. Fails unless H and W are positive
 * multiples of patch·merge. */
int m4_image_token_grid(const m4_image_options *opt, int64_t height, int64_t width, int64_t *rows,
                        int64_t *cols, m4_error *err);

/* The k-th of the rows·(cols+1) ids of an image's block, PixtralProcessor's expansion of one
 * [IMG] placeholder: for each row, cols × [IMG] then [IMG_BREAK]; the last [IMG_BREAK] becomes
 * [IMG_END]. The one place that layout is written: m4_image_tokens, m4_image_expand_placeholders
 * and the chat template (chat.c) all take their ids from it. */
int64_t m4_image_block_token(int64_t rows, int64_t cols, const m4_image_token_ids *ids, int64_t k);

/* The block of a resized H × W image (m4_image_token_grid, m4_image_block_token): writes
 * rows·(cols+1) ids to out (capacity `cap`; fails when too small) and their number to *n_out. */
int m4_image_tokens(const m4_image_options *opt, int64_t height, int64_t width,
                    const m4_image_token_ids *ids, int64_t *out, int64_t cap, int64_t *n_out,
                    m4_error *err);

/* A prompt's ids [n] with each [IMG] placeholder (tid->img) replaced, in order, by its image's
 * block; grids [n_images, 2] = (rows, cols) of each image's merged patches (m4_image_token_grid).
 * A list that already holds [IMG_BREAK] or [IMG_END] is taken as expanded and copied as it is
 * (the model checks the [IMG] count against the images). Fails when the placeholders are not
 * n_images. *out (malloc'd, [*n_out]) is the caller's to free. */
int m4_image_expand_placeholders(const int64_t *ids, int64_t n, const int64_t *grids, int64_t n_images,
                                 const m4_image_token_ids *tid, int64_t **out, int64_t *n_out, m4_error *err);

#endif
