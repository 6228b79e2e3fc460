/* image.c — PNG/JPEG decoding and Pixtral image preprocessing (image.h; MODEL.md §4, §3.7).
 *
 * Three sources of truth are reproduced here, each named where it is used:
 *   PIL (Pillow 13) — what a decoded PNG/JPEG looks like and its convert("RGB") / alpha_composite
 *                     integer arithmetic (HF's convert_to_rgb runs on the PIL image);
 *   ATen's uint8 antialiased bicubic kernel (torch 2.14, UpSampleKernel.cpp and its AVX2 twin) —
 *                     what torchvision's resize computes for a uint8 CHW tensor on the CPU;
 *   HF's TorchvisionBackend — the fused rescale/normalise and the batch padding.
 * The decoders see untrusted bytes: libpng and libjpeg report errors through longjmp into a
 * handler that frees what was allocated and returns an m4_error; neither library prints. */
#include "image.h"

#include <math.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include "m4_file.h"

/* ============================================================================================
 * Small helpers
 * ========================================================================================== */

void m4_image_free(m4_image *img) {
    if (!img) return;
    free(img->pixels);
    img->pixels = NULL;
    img->height = img->width = 0;
}

/* Checks the size limits shared by both decoders. `what` is "PNG" or "JPEG". */
static int check_dimensions(const char *name, const char *what, int64_t width, int64_t height,
                            m4_error *err) {
    if (width <= 0 || height <= 0)
        return m4_fail(err, "%s: %s header gives a zero-sized image (%lld x %lld pixels)", name, what,
                       (long long)width, (long long)height);
    if (width > M4_IMAGE_MAX_SIDE || height > M4_IMAGE_MAX_SIDE || width * height > M4_IMAGE_MAX_PIXELS)
        return m4_fail(err,
                       "%s: %s header claims %lld x %lld pixels, more than this decoder accepts "
                       "(at most %lld pixels, %d per side: M4_IMAGE_MAX_PIXELS, M4_IMAGE_MAX_SIDE)",
                       name, what, (long long)width, (long long)height,
                       (long long)M4_IMAGE_MAX_PIXELS, M4_IMAGE_MAX_SIDE);
    return 0;
}

/* ============================================================================================
 * PIL's conversions to RGB
 * ========================================================================================== */

/* PIL Image.alpha_composite(white, src).convert("RGB") for one channel value c with alpha a
 * (Pillow AlphaComposite.c with an opaque white destination: blend = 255·(255−a), out alpha 255,
 * coef1 = a·255·255·2^7 / (255·255) = a·2^7, coef2 = (255−a)·2^7, then a rounded division by 255
 * done with shifts). a = 0 copies the destination (white). */
static uint8_t composite_on_white(uint8_t c, uint8_t a) {
    if (a == 0) return 255;
    const uint32_t precision_bits = 7;
    uint32_t coef1 = (uint32_t)a << precision_bits;
    uint32_t coef2 = (255u << precision_bits) - coef1;
    uint32_t tmp = (uint32_t)c * coef1 + 255u * coef2 + (0x80u << precision_bits);
    return (uint8_t)((((tmp >> 8) + tmp) >> 8) >> precision_bits);
}

/* PIL's cmyk2rgb (Convert.c): nk = 255 − k; out = clip(nk − round(c·nk / 255)), where the
 * division by 255 is MULDIV255: t = c·nk + 128, ((t >> 8) + t) >> 8. */
static uint8_t cmyk_channel(uint8_t c, uint8_t k) {
    int nk = 255 - k;
    int t = c * nk + 128;
    int v = nk - (((t >> 8) + t) >> 8);
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* ============================================================================================
 * PNG (libpng 1.6)
 * ========================================================================================== */

/* Everything the PNG decoder allocates or learns lives here, in the caller's frame, so that the
 * longjmp error path sees it (no automatic variable of the setjmp function changes after setjmp). */
typedef struct {
    const char *name;
    const uint8_t *data;
    size_t size, pos;
    bool truncated;          /* the read callback ran out of bytes */
    char msg[200];           /* libpng's error message */
    png_structp png;
    png_infop info;
    uint8_t *buf;            /* decoded rows, rowbytes · height */
    png_bytep *rows;
    /* what the decoded rows hold */
    int64_t width, height;
    int channels;            /* 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA (after libpng's transforms) */
    bool gray16;             /* 16-bit grayscale kept at 16 bits (PIL's I;16, see png_to_rgb) */
    bool has_key;            /* colour-key transparency (tRNS on a gray or RGB image) */
    uint16_t key[3];         /* the key as stored: gray in key[0], or R, G, B */
} png_reader;

static void on_png_error(png_structp png, png_const_charp msg) {
    png_reader *r = png_get_error_ptr(png);
    snprintf(r->msg, sizeof r->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* libpng warns about recoverable problems in ancillary chunks (a text chunk with a bad CRC, an
 * ICC profile it dislikes); PIL ignores those chunks too, so the warnings are dropped. */
static void on_png_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void png_read_memory(png_structp png, png_bytep out, size_t n) {
    png_reader *r = png_get_io_ptr(png);
    if (n > r->size - r->pos) {
        r->truncated = true;
        png_error(png, "unexpected end of file");
    }
    memcpy(out, r->data + r->pos, n);
    r->pos += n;
}

/* The work between setjmp and the end; any libpng error longjmps out of it. */
static void png_decode_rows(png_reader *r) {
    png_structp png = r->png;
    png_infop info = r->info;
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, color_type, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &color_type, &interlace, NULL, NULL);
    r->width = w, r->height = h;
    if (w == 0 || h == 0 || (int64_t)w * h > M4_IMAGE_MAX_PIXELS) png_error(png, "image too large");

    /* PIL opens palette images as P and converts them through the palette (with its tRNS alphas);
     * gray images of 1, 2, 4 bits become 0…255 by the same scaling libpng uses (×255, ×85, ×17). */
    bool has_trns = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
        png_set_palette_to_rgb(png);
        if (has_trns) png_set_tRNS_to_alpha(png);
    } else if (has_trns) {
        png_color_16p key = NULL;
        png_get_tRNS(png, info, NULL, NULL, &key);
        if (key) {
            r->has_key = true;
            if (color_type == PNG_COLOR_TYPE_GRAY) {
                r->key[0] = key->gray;
            } else {
                r->key[0] = key->red, r->key[1] = key->green, r->key[2] = key->blue;
            }
        }
    }
    if (color_type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    r->gray16 = color_type == PNG_COLOR_TYPE_GRAY && depth == 16;
    if (depth == 16 && !r->gray16) png_set_strip_16(png); /* PIL keeps the high byte too */
    if (interlace != PNG_INTERLACE_NONE) png_set_interlace_handling(png);
    png_read_update_info(png, info);

    r->channels = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    size_t expect = (size_t)w * (size_t)r->channels * (r->gray16 ? 2u : 1u);
    if (r->channels < 1 || r->channels > 4 || rowbytes != expect)
        png_error(png, "unexpected row layout after conversion");
    r->buf = malloc(rowbytes * h);
    r->rows = malloc(sizeof *r->rows * h);
    if (!r->buf || !r->rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) r->rows[y] = r->buf + (size_t)y * rowbytes;
    png_read_image(png, r->rows);
    /* No png_read_end: the chunks after the image data carry no pixels, and PIL accepts a file
     * that stops there (no IEND). The last IDAT chunk's CRC has been checked by now. */
}

/* The decoded rows → RGB planes, as HF's convert_to_rgb sees the PIL image:
 *  - gray / RGB without transparency: copied (gray to all three channels);
 *  - 16-bit gray: PIL opens it as I;16 and convert("RGB") clamps each sample to 255;
 *  - gray+alpha, RGBA, palette with tRNS: composited onto white;
 *  - colour key (tRNS on gray/RGB): PIL marks a pixel transparent when its 8-bit value equals the
 *    key as stored (for 1/2/4/16-bit images this compares different scales — PIL's behaviour, kept),
 *    then composites: a keyed pixel becomes white. */
static void png_to_rgb(const png_reader *r, uint8_t *out) {
    int64_t plane = r->width * r->height;
    int ch = r->channels;
    for (int64_t y = 0; y < r->height; y++) {
        const uint8_t *row = r->rows[y];
        for (int64_t x = 0; x < r->width; x++) {
            uint8_t rgb[3], a = 255;
            if (r->gray16) {
                unsigned v = (unsigned)row[2 * x] << 8 | row[2 * x + 1];
                rgb[0] = rgb[1] = rgb[2] = (uint8_t)(v > 255 ? 255 : v);
            } else if (ch <= 2) {
                rgb[0] = rgb[1] = rgb[2] = row[x * ch];
                if (ch == 2) a = row[x * ch + 1];
            } else {
                for (int c = 0; c < 3; c++) rgb[c] = row[x * ch + c];
                if (ch == 4) a = row[x * ch + 3];
            }
            if (r->has_key) {
                bool keyed = ch <= 2 ? rgb[0] == r->key[0]
                                     : rgb[0] == r->key[0] && rgb[1] == r->key[1] && rgb[2] == r->key[2];
                if (keyed) a = 0;
            }
            bool alpha = ch == 2 || ch == 4 || r->has_key;
            for (int c = 0; c < 3; c++)
                out[c * plane + y * r->width + x] = alpha ? composite_on_white(rgb[c], a) : rgb[c];
        }
    }
}

/* Reads the IHDR fields before libpng does, to name an oversized image in the message. */
static int png_check_header(const uint8_t *data, size_t size, const char *name, m4_error *err) {
    if (size < 33)
        return m4_fail(err, "%s: truncated PNG (%zu bytes: the file ends inside the PNG header)", name,
                       size);
    if (memcmp(data + 12, "IHDR", 4) != 0)
        return m4_fail(err, "%s: corrupt PNG (the first chunk is not IHDR)", name);
    uint32_t w = (uint32_t)data[16] << 24 | (uint32_t)data[17] << 16 | (uint32_t)data[18] << 8 | data[19];
    uint32_t h = (uint32_t)data[20] << 24 | (uint32_t)data[21] << 16 | (uint32_t)data[22] << 8 | data[23];
    return check_dimensions(name, "PNG", w, h, err);
}

static int png_decode_inner(png_reader *r, m4_image *img, m4_error *err) {
    r->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, r, on_png_error, on_png_warning);
    if (!r->png) return m4_fail(err, "%s: cannot start libpng (out of memory?)", r->name);
    r->info = png_create_info_struct(r->png);
    if (!r->info) return m4_fail(err, "%s: cannot start libpng (out of memory?)", r->name);
    if (setjmp(png_jmpbuf(r->png))) {
        if (r->truncated)
            return m4_fail(err, "%s: truncated PNG (the file ends after %zu bytes, inside the image data)",
                           r->name, r->size);
        return m4_fail(err, "%s: corrupt PNG (libpng: %s)", r->name, r->msg);
    }
    png_set_user_limits(r->png, M4_IMAGE_MAX_SIDE, M4_IMAGE_MAX_SIDE);
    png_set_chunk_cache_max(r->png, 1000);        /* ancillary chunks kept (text, sPLT, unknown) */
    png_set_chunk_malloc_max(r->png, 8u << 20);   /* bytes of one ancillary chunk */
    png_set_read_fn(r->png, r, png_read_memory);
    png_decode_rows(r);

    img->height = r->height, img->width = r->width;
    img->pixels = malloc((size_t)(3 * r->height * r->width));
    if (!img->pixels) return m4_fail(err, "%s: out of memory for a %lld x %lld image", r->name,
                                     (long long)r->width, (long long)r->height);
    png_to_rgb(r, img->pixels);
    return 0;
}

static int png_decode(const uint8_t *data, size_t size, const char *name, m4_image *img, m4_error *err) {
    if (png_check_header(data, size, name, err) != 0) return -1;
    png_reader r = {.name = name, .data = data, .size = size};
    int rc = png_decode_inner(&r, img, err);
    png_destroy_read_struct(r.png ? &r.png : NULL, r.info ? &r.info : NULL, NULL);
    free(r.rows);
    free(r.buf);
    if (rc != 0) m4_image_free(img);
    return rc;
}

/* ============================================================================================
 * JPEG (libjpeg-turbo, libjpeg 6b API)
 * ========================================================================================== */

typedef struct {
    struct jpeg_error_mgr pub;   /* first member: libjpeg hands us a pointer to it */
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];   /* the error, or the first corrupt-data warning */
    int warning_code;            /* that warning's libjpeg message code; 0 = none */
} jpeg_errors;

typedef struct {
    struct jpeg_progress_mgr pub;
    bool too_many_scans;
} jpeg_progress;

typedef struct {
    const char *name;
    const uint8_t *data;
    size_t size;
    struct jpeg_decompress_struct cinfo;
    jpeg_errors errors;
    jpeg_progress progress;
    uint8_t *buf;                /* decoded scanlines, width · components · height */
} jpeg_reader;

static void on_jpeg_error(j_common_ptr cinfo) {
    jpeg_errors *e = (jpeg_errors *)cinfo->err;
    e->pub.format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

/* Warnings (level −1) are corrupt-data reports: libjpeg carries on with made-up data (gray
 * blocks after a premature end of file). PIL refuses such a file ("image file is truncated"),
 * so the first warning is kept and the decode fails after the fact. Trace messages (level ≥ 0)
 * are ignored. Nothing is printed. */
static void on_jpeg_message(j_common_ptr cinfo, int level) {
    jpeg_errors *e = (jpeg_errors *)cinfo->err;
    if (level >= 0 || e->warning_code != 0) return;
    /* Extraneous bytes before a marker are skipped and change nothing; PIL accepts them too. */
    if (e->pub.msg_code == JWRN_EXTRANEOUS_DATA) return;
    e->warning_code = e->pub.msg_code;
    e->pub.format_message(cinfo, e->msg);
}

static void on_jpeg_progress(j_common_ptr cinfo) {
    jpeg_progress *p = (jpeg_progress *)cinfo->progress;
    if (cinfo->is_decompressor &&
        ((j_decompress_ptr)cinfo)->input_scan_number > M4_IMAGE_MAX_JPEG_SCANS) {
        p->too_many_scans = true;
        jpeg_errors *e = (jpeg_errors *)cinfo->err;
        snprintf(e->msg, sizeof e->msg, "more than %d scans (M4_IMAGE_MAX_JPEG_SCANS)",
                 M4_IMAGE_MAX_JPEG_SCANS);
        longjmp(e->jump, 1);
    }
}

/* Decodes the scanlines into r->buf; fills *out_components. Errors longjmp to the caller. */
static int jpeg_decode_inner(jpeg_reader *r, m4_image *img, m4_error *err) {
    struct jpeg_decompress_struct *ci = &r->cinfo;
    ci->err = jpeg_std_error(&r->errors.pub);
    r->errors.pub.error_exit = on_jpeg_error;
    r->errors.pub.emit_message = on_jpeg_message;
    if (setjmp(r->errors.jump)) {
        /* A premature end is first a warning (libjpeg pads with a fake EOI marker), then often an
         * error about the missing image; name the cause. */
        if (r->errors.warning_code == JWRN_JPEG_EOF || r->errors.pub.msg_code == JERR_INPUT_EOF)
            return m4_fail(err, "%s: truncated JPEG (the file ends after %zu bytes; libjpeg: %s)", r->name,
                           r->size, r->errors.msg);
        if (r->progress.too_many_scans)
            return m4_fail(err, "%s: JPEG rejected: %s", r->name, r->errors.msg);
        return m4_fail(err, "%s: corrupt or unsupported JPEG (libjpeg: %s)", r->name, r->errors.msg);
    }
    jpeg_create_decompress(ci);
    ci->mem->max_memory_to_use = M4_IMAGE_MAX_JPEG_MEMORY;
    r->progress.pub.progress_monitor = on_jpeg_progress;
    ci->progress = &r->progress.pub;
    jpeg_mem_src(ci, r->data, (unsigned long)r->size);
    if (jpeg_read_header(ci, TRUE) != JPEG_HEADER_OK)
        return m4_fail(err, "%s: JPEG holds no image (tables only)", r->name);
    if (check_dimensions(r->name, "JPEG", ci->image_width, ci->image_height, err) != 0) return -1;

    /* PIL's modes: 1 component → L, 3 → RGB (YCbCr converted by libjpeg), 4 → CMYK (YCCK
     * converted to CMYK by libjpeg). Decoder settings are libjpeg's defaults, which PIL leaves
     * alone: ISLOW integer IDCT, fancy (triangle-filter) chroma upsampling. */
    bool cmyk = false;
    switch (ci->jpeg_color_space) {
    case JCS_GRAYSCALE: ci->out_color_space = JCS_GRAYSCALE; break;
    case JCS_YCbCr:
    case JCS_RGB: ci->out_color_space = JCS_RGB; break;
    case JCS_CMYK:
    case JCS_YCCK: ci->out_color_space = JCS_CMYK, cmyk = true; break;
    default:
        return m4_fail(err, "%s: unsupported JPEG colour space (%d components)", r->name,
                       ci->num_components);
    }
    ci->dct_method = JDCT_ISLOW;
    ci->do_fancy_upsampling = TRUE;
    jpeg_start_decompress(ci);
    int64_t w = ci->output_width, h = ci->output_height, comps = ci->output_components;
    if (check_dimensions(r->name, "JPEG", w, h, err) != 0) return -1;
    if (comps != (cmyk ? 4 : ci->out_color_space == JCS_GRAYSCALE ? 1 : 3))
        return m4_fail(err, "%s: unexpected JPEG output (%lld components)", r->name, (long long)comps);
    r->buf = malloc((size_t)(w * h * comps));
    if (!r->buf) return m4_fail(err, "%s: out of memory for a %lld x %lld image", r->name,
                                (long long)w, (long long)h);
    while (ci->output_scanline < ci->output_height) {
        JSAMPROW row = r->buf + (size_t)ci->output_scanline * (size_t)(w * comps);
        if (jpeg_read_scanlines(ci, &row, 1) != 1)  /* cannot happen with a memory source */
            return m4_fail(err, "%s: JPEG decoder stopped at row %u", r->name, ci->output_scanline);
    }
    jpeg_finish_decompress(ci);
    if (r->errors.warning_code == JWRN_JPEG_EOF)
        return m4_fail(err, "%s: truncated JPEG (the file ends after %zu bytes, inside the image data)",
                       r->name, r->size);
    if (r->errors.warning_code != 0)
        return m4_fail(err, "%s: corrupt JPEG data (libjpeg: %s)", r->name, r->errors.msg);

    /* Adobe CMYK files store inverted values; PIL reads them with rawmode CMYK;I. */
    bool inverted = cmyk && ci->saw_Adobe_marker;
    img->height = h, img->width = w;
    img->pixels = malloc((size_t)(3 * h * w));
    if (!img->pixels) return m4_fail(err, "%s: out of memory for a %lld x %lld image", r->name,
                                     (long long)w, (long long)h);
    int64_t plane = h * w;
    for (int64_t i = 0; i < plane; i++) {
        const uint8_t *p = r->buf + i * comps;
        if (comps == 1) {
            img->pixels[i] = img->pixels[plane + i] = img->pixels[2 * plane + i] = p[0];
        } else if (comps == 3) {
            for (int c = 0; c < 3; c++) img->pixels[c * plane + i] = p[c];
        } else {
            uint8_t k = inverted ? (uint8_t)(255 - p[3]) : p[3];
            for (int c = 0; c < 3; c++)
                img->pixels[c * plane + i] = cmyk_channel(inverted ? (uint8_t)(255 - p[c]) : p[c], k);
        }
    }
    return 0;
}

static int jpeg_decode(const uint8_t *data, size_t size, const char *name, m4_image *img, m4_error *err) {
    jpeg_reader *r = calloc(1, sizeof *r);  /* large (jmp_buf, libjpeg state): not on the stack */
    if (!r) return m4_fail(err, "%s: out of memory", name);
    r->name = name, r->data = data, r->size = size;
    int rc = jpeg_decode_inner(r, img, err);
    jpeg_destroy_decompress(&r->cinfo);  /* a no-op on the zeroed struct if creation never ran */
    free(r->buf);
    free(r);
    if (rc != 0) m4_image_free(img);
    return rc;
}

/* ============================================================================================
 * Format detection, files
 * ========================================================================================== */

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

/* A name for a format we recognise but do not decode, or NULL. */
static const char *other_format(const uint8_t *d, size_t n) {
    if (n >= 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0)) return "GIF";
    if (n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0) return "WebP";
    if (n >= 2 && d[0] == 'B' && d[1] == 'M') return "BMP";
    if (n >= 4 && (memcmp(d, "II*\0", 4) == 0 || memcmp(d, "MM\0*", 4) == 0)) return "TIFF";
    if (n >= 12 && memcmp(d + 4, "ftyp", 4) == 0) return "HEIF/AVIF (ISO media)";
    if (n >= 4 && memcmp(d, "%PDF", 4) == 0) return "PDF";
    return NULL;
}

int m4_image_decode(const uint8_t *data, size_t size, const char *name, m4_image *img, m4_error *err) {
    img->pixels = NULL;
    img->height = img->width = 0;
    if (!name) name = "(image in memory)";
    if (size == 0 || !data) return m4_fail(err, "%s: empty file (0 bytes), not an image", name);
    if ((int64_t)size > M4_IMAGE_MAX_FILE_BYTES)
        return m4_fail(err, "%s: %zu bytes, more than the %lld-byte limit (M4_IMAGE_MAX_FILE_BYTES)",
                       name, size, (long long)M4_IMAGE_MAX_FILE_BYTES);
    if (size >= 8 && memcmp(data, png_magic, 8) == 0) return png_decode(data, size, name, img, err);
    if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
        return jpeg_decode(data, size, name, img, err);
    if (size < 8 && memcmp(data, png_magic, size) == 0)
        return m4_fail(err, "%s: truncated PNG (%zu bytes: the file ends inside the signature)", name, size);
    const char *other = other_format(data, size);
    if (other)
        return m4_fail(err, "%s: %s image; only PNG and JPEG are supported (convert it first)", name, other);
    char head[3 * 8 + 1] = "";
    for (size_t i = 0; i < size && i < 8; i++) snprintf(head + 3 * i, 4, "%02x ", data[i]);
    if (head[0]) head[strlen(head) - 1] = 0;
    return m4_fail(err, "%s: not a PNG or JPEG file (it starts with bytes %s)", name, head);
}

int m4_image_load(const char *path, m4_image *img, m4_error *err) {
    img->pixels = NULL;
    img->height = img->width = 0;
    char *data;
    size_t size;
    if (m4_file_read_all(path, "the image", M4_IMAGE_MAX_FILE_BYTES, "M4_IMAGE_MAX_FILE_BYTES", &data, &size, err))
        return -1;
    int rc = m4_image_decode((const uint8_t *)data, size, path, img, err);
    free(data);
    return rc;
}

/* ============================================================================================
 * Options, target size, token layout
 * ========================================================================================== */

void m4_image_options_default(m4_image_options *opt) {
    *opt = (m4_image_options){
        .patch_size = 14,
        .merge = 2,
        .longest_edge = 1540,
        .rescale_factor = 1.0 / 255.0,
        .mean = {0.48145466, 0.4578275, 0.40821073},
        .std = {0.26862954, 0.26130258, 0.27577711},
    };
}

int m4_image_options_check(const m4_image_options *opt, m4_error *err) {
    if (opt->patch_size <= 0 || opt->merge <= 0 || opt->patch_size * opt->merge > M4_IMAGE_MAX_SIDE)
        return m4_fail(err, "image options: patch_size %lld and spatial_merge_size %lld must be positive",
                       (long long)opt->patch_size, (long long)opt->merge);
    if (opt->longest_edge <= 0 || opt->longest_edge > M4_IMAGE_MAX_SIDE)
        return m4_fail(err, "image options: longest_edge %lld must be in 1..%d", (long long)opt->longest_edge,
                       M4_IMAGE_MAX_SIDE);
    if (!(opt->rescale_factor > 0) || !isfinite(opt->rescale_factor))
        return m4_fail(err, "image options: rescale_factor %g must be positive", opt->rescale_factor);
    for (int c = 0; c < 3; c++)
        if (!((float)opt->std[c] != 0) || !isfinite(opt->std[c]) || !isfinite(opt->mean[c]))
            return m4_fail(err, "image options: image_std[%d] = %g (must be finite and non-zero), "
                                "image_mean[%d] = %g", c, opt->std[c], c, opt->mean[c]);
    return 0;
}

int m4_image_target_size(const m4_image_options *opt, int64_t height, int64_t width,
                         int64_t *out_height, int64_t *out_width, m4_error *err) {
    if (m4_image_options_check(opt, err) != 0) return -1;
    if (height <= 0 || width <= 0)
        return m4_fail(err, "image of %lld x %lld pixels has no area", (long long)width, (long long)height);
    /* get_resize_output_image_size: Python floats are doubles, `/` divides them correctly rounded. */
    double L = (double)opt->longest_edge;
    double ratio = fmax((double)height / L, (double)width / L);
    int64_t h = height, w = width;
    if (ratio > 1) {
        h = (int64_t)floor((double)height / ratio);
        w = (int64_t)floor((double)width / ratio);
    }
    if (h < 1 || w < 1)
        return m4_fail(err, "image of %lld x %lld pixels is too elongated: fitting it into %lld pixels "
                            "leaves %lld x %lld",
                       (long long)width, (long long)height, (long long)opt->longest_edge, (long long)w,
                       (long long)h);
    /* _num_image_tokens: round UP to whole (patch·merge) tiles. */
    int64_t p = opt->patch_size * opt->merge;
    *out_height = ((h - 1) / p + 1) * p;
    *out_width = ((w - 1) / p + 1) * p;
    return 0;
}

void m4_image_token_ids_default(m4_image_token_ids *ids) {
    *ids = (m4_image_token_ids){.img = 10, .img_break = 12, .img_end = 13};
}

int m4_image_token_grid(const m4_image_options *opt, int64_t height, int64_t width, int64_t *rows,
                        int64_t *cols, m4_error *err) {
    if (m4_image_options_check(opt, err) != 0) return -1;
    int64_t p = opt->patch_size * opt->merge;
    if (height <= 0 || width <= 0 || height % p != 0 || width % p != 0)
        return m4_fail(err, "image size %lld x %lld (H x W) is not a positive multiple of patch_size · "
                            "spatial_merge_size = %lld",
                       (long long)height, (long long)width, (long long)p);
    *rows = height / p;
    *cols = width / p;
    return 0;
}

int64_t m4_image_block_token(int64_t rows, int64_t cols, const m4_image_token_ids *ids, int64_t k) {
    if (k % (cols + 1) < cols) return ids->img;
    return k / (cols + 1) + 1 < rows ? ids->img_break : ids->img_end;
}

int m4_image_tokens(const m4_image_options *opt, int64_t height, int64_t width,
                    const m4_image_token_ids *ids, int64_t *out, int64_t cap, int64_t *n_out,
                    m4_error *err) {
    int64_t rows = 0, cols = 0;
    if (m4_image_token_grid(opt, height, width, &rows, &cols, err) != 0) return -1;
    int64_t n = rows * (cols + 1);
    if (n > cap)
        return m4_fail(err, "image of %lld x %lld needs %lld tokens, the buffer holds %lld",
                       (long long)height, (long long)width, (long long)n, (long long)cap);
    for (int64_t k = 0; k < n; k++) out[k] = m4_image_block_token(rows, cols, ids, k);
    *n_out = n;
    return 0;
}

int m4_image_expand_placeholders(const int64_t *ids, int64_t n, const int64_t *grids, int64_t n_images,
                                 const m4_image_token_ids *tid, int64_t **out, int64_t *n_out, m4_error *err) {
    int64_t placeholders = 0, total = n;
    bool expanded = false;
    for (int64_t i = 0; i < n; i++) {
        placeholders += ids[i] == tid->img;
        expanded |= ids[i] == tid->img_break || ids[i] == tid->img_end;
    }
    if (!expanded && placeholders != n_images)
        return m4_fail(err, "%lld image%s but %lld [IMG] placeholder%s (id %lld) in the ids", (long long)n_images,
                       n_images == 1 ? "" : "s", (long long)placeholders, placeholders == 1 ? "" : "s",
                       (long long)tid->img);
    for (int64_t k = 0; !expanded && k < n_images; k++) {
        if (grids[2 * k] <= 0 || grids[2 * k + 1] <= 0 || grids[2 * k] > M4_IMAGE_MAX_PIXELS / grids[2 * k + 1])
            return m4_fail(err, "image %lld: a %lld x %lld token grid", (long long)k, (long long)grids[2 * k],
                           (long long)grids[2 * k + 1]);
        total += grids[2 * k] * (grids[2 * k + 1] + 1) - 1;
    }
    int64_t *o = malloc(sizeof *o * (size_t)(total > 0 ? total : 1));
    if (!o) return m4_fail(err, "out of memory for %lld prompt ids", (long long)total);
    int64_t at = 0;
    for (int64_t i = 0, k = 0; i < n; i++) {
        if (expanded || ids[i] != tid->img) {
            o[at++] = ids[i];
            continue;
        }
        const int64_t rows = grids[2 * k], cols = grids[2 * k + 1];
        for (int64_t j = 0; j < rows * (cols + 1); j++) o[at++] = m4_image_block_token(rows, cols, tid, j);
        k++;
    }
    *out = o, *n_out = at;
    return 0;
}

/* ============================================================================================
 * Resize: torchvision / ATen antialiased bicubic on uint8
 * ========================================================================================== */

/* Keys' cubic convolution kernel with a = −0.5 (ATen HelperInterpCubic::aa_filter; PIL's
 * bicubic), in double, in ATen's operation order. */
static double keys_cubic(double x) {
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    return 0.0;
}

/* The fixed-point weights of one axis (ATen _compute_index_ranges_int16_weights): output i reads
 * inputs first[i] … first[i]+count[i]−1 with weights w[i·taps + j]; sums carry `precision`
 * fractional bits. */
typedef struct {
    int64_t taps;            /* max_interp_size = 2·ceil(support) + 1 */
    int64_t *first, *count;
    int16_t *w;
    int precision;
} resize_axis;

static void resize_axis_free(resize_axis *ax) {
    free(ax->first);
    free(ax->count);
    free(ax->w);
}

static int resize_axis_init(resize_axis *ax, int64_t in, int64_t out, m4_error *err) {
    *ax = (resize_axis){0};
    /* scale = in/out (align_corners=False, no scale_factor given: torch computes it from sizes);
     * the filter support (2 for bicubic) widens by the scale when downscaling. */
    double scale = (double)in / (double)out;
    double support = scale >= 1.0 ? 2.0 * scale : 2.0;
    double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
    ax->taps = (int64_t)ceil(support) * 2 + 1;
    double *wd = malloc(sizeof *wd * (size_t)(out * ax->taps));
    ax->first = malloc(sizeof *ax->first * (size_t)out);
    ax->count = malloc(sizeof *ax->count * (size_t)out);
    ax->w = calloc((size_t)(out * ax->taps), sizeof *ax->w);
    if (!wd || !ax->first || !ax->count || !ax->w) {
        free(wd);
        resize_axis_free(ax);
        return m4_fail(err, "resize: out of memory for %lld x %lld weights", (long long)out,
                       (long long)ax->taps);
    }
    double wt_max = 0.0;
    for (int64_t i = 0; i < out; i++) {
        double center = scale * ((double)i + 0.5);
        int64_t xmin = (int64_t)(center - support + 0.5);  /* C++ cast: truncation toward zero */
        if (xmin < 0) xmin = 0;
        int64_t xend = (int64_t)(center + support + 0.5);
        int64_t xsize = (xend < in ? xend : in) - xmin;
        if (xsize < 0) xsize = 0;
        if (xsize > ax->taps) xsize = ax->taps;
        double *wi = wd + i * ax->taps;
        double total = 0.0;
        for (int64_t j = 0; j < xsize; j++) {
            wi[j] = keys_cubic(((double)(j + xmin) - center + 0.5) * invscale);
            total += wi[j];
        }
        if (total != 0.0)
            for (int64_t j = 0; j < xsize; j++) {
                wi[j] /= total;
                if (wi[j] > wt_max) wt_max = wi[j];
            }
        for (int64_t j = xsize; j < ax->taps; j++) wi[j] = 0.0;
        ax->first[i] = xmin;
        ax->count[i] = xsize;
    }
    /* The most fractional bits (≤ 22) for which the largest weight, doubled, stays below 2^15. */
    int precision;
    for (precision = 0; precision < 22; precision++) {
        int next = (int)(0.5 + wt_max * (double)(1 << (precision + 1)));
        if (next >= (1 << 15)) break;
    }
    ax->precision = precision;
    for (int64_t k = 0; k < out * ax->taps; k++) {
        double v = wd[k] * (double)(1 << precision);
        ax->w[k] = (int16_t)(v < 0 ? (int)(-0.5 + v) : (int)(0.5 + v));
    }
    free(wd);
    return 0;
}

/* One output sample: clamp((2^(p−1) + Σ w·x) >> p, 0, 255). The shift of ATen's int sum is
 * arithmetic (a floor); a negative sum floors below 0 and clamps to 0, so it is tested first.
 * Sums are int64 here (ATen uses int32, which they fit). */
static uint8_t resize_tap(const uint8_t *src, int64_t stride, const int16_t *w, int64_t count,
                          int precision) {
    int64_t acc = (int64_t)1 << (precision - 1);
    for (int64_t j = 0; j < count; j++) acc += (int64_t)w[j] * src[j * stride];
    if (acc < 0) return 0;
    acc >>= precision;
    return (uint8_t)(acc > 255 ? 255 : acc);
}

int m4_image_resize_bicubic_aa(const uint8_t *src, int64_t channels, int64_t height, int64_t width,
                               uint8_t *dst, int64_t out_height, int64_t out_width, m4_error *err) {
    if (channels <= 0 || height <= 0 || width <= 0 || out_height <= 0 || out_width <= 0)
        return m4_fail(err, "resize: bad sizes (%lld channels, %lld x %lld → %lld x %lld)",
                       (long long)channels, (long long)height, (long long)width, (long long)out_height,
                       (long long)out_width);
    bool horizontal = out_width != width, vertical = out_height != height;
    /* The horizontal pass writes [C, height, out_width] uint8; the vertical pass reads it. */
    const uint8_t *cur = src;
    uint8_t *tmp = NULL;
    if (horizontal) {
        resize_axis ax;
        if (resize_axis_init(&ax, width, out_width, err) != 0) return -1;
        uint8_t *out = vertical ? (tmp = malloc((size_t)(channels * height * out_width))) : dst;
        if (!out) {
            resize_axis_free(&ax);
            return m4_fail(err, "resize: out of memory");
        }
        for (int64_t r = 0; r < channels * height; r++)
            for (int64_t x = 0; x < out_width; x++)
                out[r * out_width + x] = resize_tap(cur + r * width + ax.first[x], 1, ax.w + x * ax.taps,
                                                    ax.count[x], ax.precision);
        resize_axis_free(&ax);
        cur = out;
    }
    if (vertical) {
        resize_axis ax;
        if (resize_axis_init(&ax, height, out_height, err) != 0) {
            free(tmp);
            return -1;
        }
        for (int64_t c = 0; c < channels; c++)
            for (int64_t y = 0; y < out_height; y++)
                for (int64_t x = 0; x < out_width; x++)
                    dst[(c * out_height + y) * out_width + x] =
                        resize_tap(cur + (c * height + ax.first[y]) * out_width + x, out_width,
                                   ax.w + y * ax.taps, ax.count[y], ax.precision);
        resize_axis_free(&ax);
    }
    if (!horizontal && !vertical) memcpy(dst, src, (size_t)(channels * height * width));
    free(tmp);
    return 0;
}

/* ============================================================================================
 * Normalise, batch
 * ========================================================================================== */

void m4_image_normalize(const m4_image_options *opt, const uint8_t *chw, int64_t height,
                        int64_t width, float *out) {
    /* TorchvisionBackend._fuse_mean_std_and_rescale_factor: torch.tensor(mean) (float32) times
     * the Python float 1/rescale_factor, which torch's CPU mul applies as a float32 scalar. */
    float inv_rescale = (float)(1.0 / opt->rescale_factor);
    int64_t plane = height * width;
    for (int c = 0; c < 3; c++) {
        float m = (float)opt->mean[c] * inv_rescale;
        float s = (float)opt->std[c] * inv_rescale;
        /* tvF.normalize: image.sub_(mean).div_(std) — a true division, not a reciprocal product */
        for (int64_t i = 0; i < plane; i++) out[c * plane + i] = ((float)chw[c * plane + i] - m) / s;
    }
}

void m4_pixel_batch_free(m4_pixel_batch *batch) {
    if (!batch) return;
    free((void *)batch->pixel_values);  /* owned when m4_image_preprocess filled the batch */
    free((void *)batch->image_sizes);
    *batch = (m4_pixel_batch){0};
}

int m4_image_preprocess(const m4_image_options *opt, const m4_image *images, int64_t n,
                        m4_pixel_batch *out, m4_error *err) {
    *out = (m4_pixel_batch){0};
    if (m4_image_options_check(opt, err) != 0) return -1;
    if (n <= 0) return m4_fail(err, "preprocess: no images");
    int64_t *sizes = malloc(sizeof *sizes * (size_t)(2 * n));
    if (!sizes) return m4_fail(err, "preprocess: out of memory");
    out->image_sizes = sizes;
    out->n = n;
    for (int64_t k = 0; k < n; k++) {
        int64_t *hw = sizes + 2 * k;
        if (!images[k].pixels || m4_image_target_size(opt, images[k].height, images[k].width, &hw[0],
                                                      &hw[1], err) != 0) {
            if (!images[k].pixels) m4_fail(err, "no pixels");
            m4_fail_context(err, "image %lld", (long long)k);
            m4_pixel_batch_free(out);
            return -1;
        }
        if (hw[0] > out->height) out->height = hw[0];
        if (hw[1] > out->width) out->width = hw[1];
    }
    int64_t H = out->height, W = out->width;
    float *pixels = calloc((size_t)(n * 3 * H * W), sizeof *pixels);
    out->pixel_values = pixels;
    if (!pixels) {
        m4_pixel_batch_free(out);
        return m4_fail(err, "preprocess: out of memory for %lld x 3 x %lld x %lld pixel values",
                       (long long)n, (long long)H, (long long)W);
    }
    for (int64_t k = 0; k < n; k++) {
        int64_t h = sizes[2 * k], w = sizes[2 * k + 1];
        uint8_t *resized = malloc((size_t)(3 * h * w));
        float *normed = malloc(sizeof *normed * (size_t)(3 * h * w));
        if (!resized || !normed ||
            m4_image_resize_bicubic_aa(images[k].pixels, 3, images[k].height, images[k].width, resized, h,
                                       w, err) != 0) {
            if (!resized || !normed) m4_fail(err, "preprocess: out of memory");
            m4_fail_context(err, "image %lld", (long long)k);
            free(resized);
            free(normed);
            m4_pixel_batch_free(out);
            return -1;
        }
        m4_image_normalize(opt, resized, h, w, normed);
        /* _pad_for_batching: each image at the top-left of its [3, H, W] slot, zeros elsewhere */
        for (int64_t c = 0; c < 3; c++)
            for (int64_t y = 0; y < h; y++)
                memcpy(pixels + ((k * 3 + c) * H + y) * W, normed + (c * h + y) * w,
                       sizeof *normed * (size_t)w);
        free(resized);
        free(normed);
    }
    return 0;
}
