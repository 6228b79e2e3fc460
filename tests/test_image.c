/* Image decoding and Pixtral preprocessing (preprocess/image.h) against Hugging Face's processor:
 * every image of golden/cases/preprocess (sizes exact, decoded and resized uint8 compared, pixel
 * values within one uint8 step before normalisation), the batch, the resize rule, the token
 * layout, the PNG/JPEG variants PIL knows (palette, gray+alpha, 16-bit, colour key, interlaced,
 * CMYK) and files that must be refused with a message naming the file and the problem. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include "golden.h"
#include "image.h"

#define GOLDEN_DIR "golden/cases/preprocess"

/* The committed preprocess case (golden/README.md): file name and source size (W x H). */
static const struct {
    const char *file;
    int64_t width, height;
} golden_images[] = {
    {"pre0_rgb_45x31.png", 45, 31},     {"pre1_rgba_60x90.png", 60, 90},
    {"pre2_wide_1600x300.jpg", 1600, 300}, {"pre3_tiny_5x7.png", 5, 7},
    {"pre4_gray_83x50.jpg", 83, 50},
};
enum { N_GOLDEN = sizeof golden_images / sizeof golden_images[0] };

/* ---- helpers --------------------------------------------------------------------------------- */

static m4_golden *open_golden(void) {
    char *path = m4t_source_path(GOLDEN_DIR "/preprocess.h5");
    m4_golden *g = NULL;
    m4_error err = {{0}};
    if (m4_golden_open(path, &g, &err) != 0) fail_msg("%s", err.msg);
    free(path);
    return g;
}

static m4_array read_golden(const m4_golden *g, const char *path, bool as_int) {
    m4_array a;
    m4_error err = {{0}};
    if (m4_golden_read(g, path, as_int, &a, &err) != 0) fail_msg("%s", err.msg);
    return a;
}

static uint8_t *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *data = malloc((size_t)n + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return data;
}

static m4_image load_ok(const char *path) {
    m4_image img;
    m4_error err = {{0}};
    if (m4_image_load(path, &img, &err) != 0) fail_msg("%s", err.msg);
    return img;
}

/* Loading `path` must fail with a message naming the file and containing `problem`. */
static void expect_refused(const char *path, const char *problem) {
    m4_image img = {0};
    m4_error err = {{0}};
    int rc = m4_image_load(path, &img, &err);
    if (rc == 0) fail_msg("%s: decoded (%lld x %lld) but should have been refused", path,
                          (long long)img.width, (long long)img.height);
    assert_null(img.pixels);
    m4t_assert_contains(err.msg, path);
    m4t_assert_contains(err.msg, problem);
    print_message("refused as expected: %s\n", err.msg);
}

/* Counts how many uint8 values differ and the largest difference. */
static void count_u8_diff(const uint8_t *ours, const float *hf, int64_t n, int64_t *n_diff, int *max_diff) {
    *n_diff = 0, *max_diff = 0;
    for (int64_t i = 0; i < n; i++) {
        int d = abs((int)ours[i] - (int)hf[i]);
        if (d) (*n_diff)++;
        if (d > *max_diff) *max_diff = d;
    }
}

/* pixel_values [n, 3, H, W] against HF's: every value within one uint8 step of the normalisation
 * (1/(255·std_c), plus float32 rounding slack); returns how many differ at all and the largest
 * difference in uint8 steps. */
static int64_t compare_pixel_values(const float *ours, const float *hf, int64_t n, int64_t H, int64_t W,
                                    double *max_steps) {
    m4_image_options opt;
    m4_image_options_default(&opt);
    int64_t n_diff = 0;
    *max_steps = 0;
    for (int64_t k = 0; k < n; k++)
        for (int64_t c = 0; c < 3; c++) {
            double step = 1.0 / (255.0 * opt.std[c]);
            for (int64_t i = 0; i < H * W; i++) {
                int64_t at = (k * 3 + c) * H * W + i;
                double d = fabs((double)ours[at] - (double)hf[at]);
                if (d != 0) n_diff++;
                if (d / step > *max_steps) *max_steps = d / step;
                if (!(d <= step * (1 + 1e-5)))
                    fail_msg("pixel_values[%lld, %lld, %lld, %lld]: ours %.9g, HF %.9g (%.3f uint8 steps)",
                             (long long)k, (long long)c, (long long)(i / W), (long long)(i % W),
                             (double)ours[at], (double)hf[at], d / step);
            }
        }
    return n_diff;
}

/* ---- golden: every image of the preprocess case -------------------------------------------- */

static void test_golden_images(void **state) {
    (void)state;
    m4_golden *g = open_golden();
    m4_image_options opt;
    m4_image_options_default(&opt);
    m4_image_token_ids ids;
    m4_image_token_ids_default(&ids);
    for (int k = 0; k < N_GOLDEN; k++) {
        char rel[256], key[64];
        snprintf(rel, sizeof rel, GOLDEN_DIR "/%s", golden_images[k].file);
        char *path = m4t_source_path(rel);
        m4_image img = load_ok(path);

        /* decode: source size, and the RGB tensor HF decoded (after convert-to-RGB) */
        snprintf(key, sizeof key, "preprocess/%d/source_size", k);
        m4_array src = read_golden(g, key, true);
        assert_int_equal(img.height, src.i64[0]);
        assert_int_equal(img.width, src.i64[1]);
        assert_int_equal(img.width, golden_images[k].width);
        assert_int_equal(img.height, golden_images[k].height);
        snprintf(key, sizeof key, "preprocess/%d/decoded", k);
        m4_array dec = read_golden(g, key, false);
        assert_int_equal(dec.numel, 3 * img.height * img.width);
        int64_t dec_diff;
        int dec_max;
        count_u8_diff(img.pixels, dec.f32, dec.numel, &dec_diff, &dec_max);
        assert_true(dec_max <= 1);

        /* resize rule: image_sizes exactly as HF */
        snprintf(key, sizeof key, "preprocess/%d/image_sizes", k);
        m4_array sizes = read_golden(g, key, true);
        int64_t H, W;
        m4_error err = {{0}};
        assert_int_equal(m4_image_target_size(&opt, img.height, img.width, &H, &W, &err), 0);
        assert_int_equal(H, sizes.i64[0]);
        assert_int_equal(W, sizes.i64[1]);

        /* resize arithmetic, teacher-forced: HF's decoded tensor through our bicubic must give
         * HF's resized tensor bit for bit (pure integer math once the weights are fixed). */
        snprintf(key, sizeof key, "preprocess/%d/resized", k);
        m4_array res = read_golden(g, key, false);
        assert_int_equal(res.numel, 3 * H * W);
        uint8_t *hf_decoded = malloc((size_t)dec.numel), *resized = malloc((size_t)res.numel);
        for (int64_t i = 0; i < dec.numel; i++) hf_decoded[i] = (uint8_t)dec.f32[i];
        assert_int_equal(m4_image_resize_bicubic_aa(hf_decoded, 3, img.height, img.width, resized, H, W, &err), 0);
        int64_t res_diff;
        int res_max;
        count_u8_diff(resized, res.f32, res.numel, &res_diff, &res_max);
        if (res_diff != 0)
            fail_msg("%s: resize of HF's decoded image differs from HF's resize in %lld of %lld values (max %d)",
                     golden_images[k].file, (long long)res_diff, (long long)res.numel, res_max);

        /* end to end from the file: pixel_values within one uint8 step */
        m4_pixel_batch batch;
        if (m4_image_preprocess(&opt, &img, 1, &batch, &err) != 0) fail_msg("%s", err.msg);
        assert_int_equal(batch.image_sizes[0], H);
        assert_int_equal(batch.image_sizes[1], W);
        snprintf(key, sizeof key, "preprocess/%d/pixel_values", k);
        m4_array pv = read_golden(g, key, false);
        assert_int_equal(pv.numel, 3 * batch.height * batch.width);
        double max_steps;
        int64_t pv_diff = compare_pixel_values(batch.pixel_values, pv.f32, 1, H, W, &max_steps);

        /* the [IMG] block the processor put in place of one placeholder */
        snprintf(key, sizeof key, "preprocess/%d/input_ids", k);
        m4_array hf_ids = read_golden(g, key, true);
        int64_t tokens[4096], n_tokens;
        assert_int_equal(m4_image_tokens(&opt, H, W, &ids, tokens, 4096, &n_tokens, &err), 0);
        assert_int_equal(n_tokens, hf_ids.numel);
        for (int64_t i = 0; i < n_tokens; i++) assert_int_equal(tokens[i], hf_ids.i64[i]);

        print_message("%-24s %lldx%lld -> %lldx%lld (HF %lldx%lld): decoded %lld/%lld differ (max %d), "
                      "resized %lld differ, pixel_values %lld/%lld differ (max %.2f uint8 steps), %lld tokens\n",
                      golden_images[k].file, (long long)img.width, (long long)img.height, (long long)W,
                      (long long)H, (long long)sizes.i64[1], (long long)sizes.i64[0], (long long)dec_diff,
                      (long long)dec.numel, dec_max, (long long)res_diff, (long long)pv_diff,
                      (long long)pv.numel, max_steps, (long long)n_tokens);
        free(hf_decoded);
        free(resized);
        m4_pixel_batch_free(&batch);
        m4_array_free(&src);
        m4_array_free(&dec);
        m4_array_free(&sizes);
        m4_array_free(&res);
        m4_array_free(&pv);
        m4_array_free(&hf_ids);
        m4_image_free(&img);
        free(path);
    }
    m4_golden_close(g);
}

/* The batch of images 0, 1, 3: zero padding to the batch max, image_sizes, tokens in order. */
static void test_golden_batch(void **state) {
    (void)state;
    m4_golden *g = open_golden();
    m4_array index = read_golden(g, "preprocess/batch/image_index", true);
    m4_array sizes = read_golden(g, "preprocess/batch/image_sizes", true);
    m4_array pv = read_golden(g, "preprocess/batch/pixel_values", false);
    m4_array hf_ids = read_golden(g, "preprocess/batch/input_ids", true);
    int64_t n = index.numel;
    m4_image images[8];
    assert_true(n <= 8);
    for (int64_t i = 0; i < n; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, GOLDEN_DIR "/%s", golden_images[index.i64[i]].file);
        char *path = m4t_source_path(rel);
        images[i] = load_ok(path);
        free(path);
    }
    m4_image_options opt;
    m4_image_options_default(&opt);
    m4_pixel_batch batch;
    m4_error err = {{0}};
    if (m4_image_preprocess(&opt, images, n, &batch, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(pv.ndim, 4);
    assert_int_equal(batch.n, pv.dims[0]);
    assert_int_equal(batch.height, pv.dims[2]);
    assert_int_equal(batch.width, pv.dims[3]);
    for (int64_t i = 0; i < 2 * n; i++) assert_int_equal(batch.image_sizes[i], sizes.i64[i]);
    double max_steps;
    int64_t n_diff = compare_pixel_values(batch.pixel_values, pv.f32, n, batch.height, batch.width, &max_steps);
    /* padding is exactly zero on both sides */
    for (int64_t k = 0; k < n; k++) {
        int64_t h = batch.image_sizes[2 * k], w = batch.image_sizes[2 * k + 1];
        for (int64_t c = 0; c < 3; c++)
            for (int64_t y = 0; y < batch.height; y++)
                for (int64_t x = 0; x < batch.width; x++)
                    if (y >= h || x >= w)
                        assert_true(batch.pixel_values[((k * 3 + c) * batch.height + y) * batch.width + x] == 0.0f);
    }
    m4_image_token_ids ids;
    m4_image_token_ids_default(&ids);
    int64_t tokens[4096], at = 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t written;
        assert_int_equal(m4_image_tokens(&opt, batch.image_sizes[2 * k], batch.image_sizes[2 * k + 1], &ids,
                                         tokens + at, 4096 - at, &written, &err), 0);
        at += written;
    }
    assert_int_equal(at, hf_ids.numel);
    for (int64_t i = 0; i < at; i++) assert_int_equal(tokens[i], hf_ids.i64[i]);
    print_message("batch of %lld: pixel_values [%lld, 3, %lld, %lld], %lld values differ (max %.2f uint8 steps)\n",
                  (long long)n, (long long)n, (long long)batch.height, (long long)batch.width, (long long)n_diff,
                  max_steps);
    for (int64_t i = 0; i < n; i++) m4_image_free(&images[i]);
    m4_pixel_batch_free(&batch);
    m4_array_free(&index);
    m4_array_free(&sizes);
    m4_array_free(&pv);
    m4_array_free(&hf_ids);
    m4_golden_close(g);
}

/* ---- resize rule, resize, normalise, tokens --------------------------------------------------- */

static void test_target_size(void **state) {
    (void)state;
    m4_image_options opt;
    m4_image_options_default(&opt);
    /* (height, width) → HF's get_resize_output_image_size(size 1540, patch 28) */
    static const int64_t cases[][4] = {
        {700, 1000, 700, 1008},    /* MODEL.md §4 example: no downscale, round up */
        {300, 1600, 308, 1540},    /* downscaled: floor(300/1.0389…) = 288 → 308 */
        {7, 5, 28, 28},            /* tiny: upscaled to one tile */
        {1540, 1540, 1540, 1540},  /* exactly the limit */
        {1541, 1, -1, -1},         /* refused: HF computes width floor(1 / 1.00065) = 0 */
        {1570, 1000, 1540, 980},   /* floor (HF) — Python round (mistral-common) would give 1008 */
        {1602, 700, 1540, 672},    /* floor 686 → 672; round 687 → 700 */
        {1000, 1570, 980, 1540},   /* the same on the height */
        {4000, 3000, 1540, 1176},
        {28, 29, 28, 56},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t H = -1, W = -1;
        m4_error err = {{0}};
        int rc = m4_image_target_size(&opt, cases[i][0], cases[i][1], &H, &W, &err);
        if (cases[i][2] < 0) { /* HF would hand torch a zero-sized resize */
            assert_int_equal(rc, -1);
            m4t_assert_contains(err.msg, "too elongated");
            continue;
        }
        assert_int_equal(rc, 0);
        if (H != cases[i][2] || W != cases[i][3])
            fail_msg("%lld x %lld (H x W): got %lld x %lld, HF %lld x %lld", (long long)cases[i][0],
                     (long long)cases[i][1], (long long)H, (long long)W, (long long)cases[i][2],
                     (long long)cases[i][3]);
    }
    /* other settings: patch 16, merge 1, longest edge 1024 (HF's defaults) */
    opt.patch_size = 16, opt.merge = 1, opt.longest_edge = 1024;
    int64_t H, W;
    m4_error err = {{0}};
    assert_int_equal(m4_image_target_size(&opt, 700, 1000, &H, &W, &err), 0);
    assert_int_equal(H, 704);
    assert_int_equal(W, 1008);
    opt.merge = 0;
    assert_int_equal(m4_image_target_size(&opt, 700, 1000, &H, &W, &err), -1);
    m4t_assert_contains(err.msg, "must be positive");
}

/* Small resizes whose results torchvision 0.29.2 (torch 2.14.1, CPU) printed. */
static void test_resize_small(void **state) {
    (void)state;
    static const uint8_t src[3 * 5] = {0, 100, 200, 255, 7, 30, 60, 90, 120, 150, 255, 0, 255, 0, 255};
    static const uint8_t want_2x7[2 * 7] = {1, 46, 109, 155, 207, 146, 49, 177, 77, 55, 193, 66, 108, 225};
    static const uint8_t want_6x2[6 * 2] = {101, 162, 87, 152, 59, 131, 72, 126, 125, 138, 150, 144};
    uint8_t out[64];
    m4_error err = {{0}};
    assert_int_equal(m4_image_resize_bicubic_aa(src, 1, 3, 5, out, 2, 7, &err), 0);
    assert_memory_equal(out, want_2x7, sizeof want_2x7);
    assert_int_equal(m4_image_resize_bicubic_aa(src, 1, 3, 5, out, 6, 2, &err), 0);
    assert_memory_equal(out, want_6x2, sizeof want_6x2);
    /* same size: a copy */
    assert_int_equal(m4_image_resize_bicubic_aa(src, 1, 3, 5, out, 3, 5, &err), 0);
    assert_memory_equal(out, src, sizeof src);
    /* one pixel upscaled: every output equals it */
    uint8_t one = 77, big[28 * 28];
    assert_int_equal(m4_image_resize_bicubic_aa(&one, 1, 1, 1, big, 28, 28, &err), 0);
    for (int i = 0; i < 28 * 28; i++) assert_int_equal(big[i], 77);
    assert_int_equal(m4_image_resize_bicubic_aa(src, 1, 3, 5, out, 0, 2, &err), -1);
}

/* The fused float32 normalisation, bit for bit against HF's rescale_and_normalize. */
static void test_normalize(void **state) {
    (void)state;
    static const uint8_t px[3 * 5] = {0, 1, 128, 254, 255, 0, 1, 128, 254, 255, 0, 1, 128, 254, 255};
    static const float want[3 * 5] = {
        -0x1.cad1b8p+0f, -0x1.c715p+0f,   0x1.38ac1cp-4f, 0x1.ea6dccp+0f, 0x1.ee2a84p+0f,
        -0x1.c0896ep+0f, -0x1.bcb1e2p+0f, 0x1.59e6c0p-3f, 0x1.07aa02p+1f, 0x1.0995c8p+1f,
        -0x1.7aefb0p+0f, -0x1.774bc4p+0f, 0x1.5c1b82p-2f, 0x1.10daccp+1f, 0x1.12acc2p+1f,
    };
    m4_image_options opt;
    m4_image_options_default(&opt);
    float out[15];
    m4_image_normalize(&opt, px, 1, 5, out);
    for (int i = 0; i < 15; i++)
        if (out[i] != want[i]) fail_msg("value %d: %a, HF %a", i, (double)out[i], (double)want[i]);
}

static void test_tokens(void **state) {
    (void)state;
    m4_image_options opt;
    m4_image_options_default(&opt);
    m4_image_token_ids ids;
    m4_image_token_ids_default(&ids);
    int64_t out[64], n;
    m4_error err = {{0}};
    assert_int_equal(m4_image_tokens(&opt, 56, 56, &ids, out, 64, &n, &err), 0);
    static const int64_t want_2x2[] = {10, 10, 12, 10, 10, 13};
    assert_int_equal(n, 6);
    assert_memory_equal(out, want_2x2, sizeof want_2x2);
    assert_int_equal(m4_image_tokens(&opt, 28, 28, &ids, out, 64, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(out[0], 10);
    assert_int_equal(out[1], 13);
    int64_t rows, cols;
    assert_int_equal(m4_image_token_grid(&opt, 700, 1008, &rows, &cols, &err), 0);
    assert_int_equal(rows, 25); /* MODEL.md §4: 25 x 36 = 900 [IMG] + 25 = 925 tokens */
    assert_int_equal(cols, 36);
    assert_int_equal(m4_image_tokens(&opt, 84, 56, &ids, out, 64, &n, &err), 0);
    static const int64_t want_3x2[] = {10, 10, 12, 10, 10, 12, 10, 10, 13};
    assert_int_equal(n, 9);
    assert_memory_equal(out, want_3x2, sizeof want_3x2);
    assert_int_equal(m4_image_tokens(&opt, 56, 30, &ids, out, 64, &n, &err), -1);
    m4t_assert_contains(err.msg, "multiple");
    assert_int_equal(m4_image_tokens(&opt, 56, 56, &ids, out, 5, &n, &err), -1);
    m4t_assert_contains(err.msg, "needs 6 tokens");
}

/* A prompt's [IMG] placeholders expanded in order, each to its own image's block; an already
 * expanded list kept as it is; a count that does not match the images refused. */
static void test_expand_placeholders(void **state) {
    m4_image_token_ids ids;
    m4_image_token_ids_default(&ids);
    const int64_t prompt[] = {1, 3, 10, 7, 10, 4}, grids[] = {2, 2, 1, 1}; /* 2 x 2 and 1 x 1 */
    int64_t *out, n;
    m4_error err = {{0}};
    assert_int_equal(m4_image_expand_placeholders(prompt, 6, grids, 2, &ids, &out, &n, &err), 0);
    static const int64_t want[] = {1, 3, 10, 10, 12, 10, 10, 13, 7, 10, 13, 4};
    assert_int_equal(n, 12);
    assert_memory_equal(out, want, sizeof want);
    free(out);
    assert_int_equal(m4_image_expand_placeholders(want, 12, grids, 2, &ids, &out, &n, &err), 0);
    assert_int_equal(n, 12); /* [IMG_BREAK]/[IMG_END] present: taken as expanded */
    assert_memory_equal(out, want, sizeof want);
    free(out);
    assert_int_equal(m4_image_expand_placeholders(prompt, 6, grids, 1, &ids, &out, &n, &err), -1);
    m4t_assert_contains(err.msg, "1 image but 2 [IMG] placeholders (id 10)");
}

/* ---- PNG and JPEG variants (expected values: PIL's convert_to_rgb) --------------------------- */

/* Writes a PNG with libpng: rows of raw samples as PNG stores them (big-endian 16-bit). */
static void write_png(const char *path, int w, int h, int depth, int color_type, int interlace,
                      const uint8_t *raw, const png_color *palette, int n_palette, const uint8_t *trns_alpha,
                      int n_trns, const png_color_16 *trns_key) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng could not write %s", path);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color_type, interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (palette) png_set_PLTE(png, info, palette, n_palette);
    if (trns_alpha || trns_key) png_set_tRNS(png, info, trns_alpha, n_trns, trns_key);
    png_write_info(png, info);
    int channels = color_type == PNG_COLOR_TYPE_RGB ? 3 : color_type == PNG_COLOR_TYPE_RGBA ? 4
                   : color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
    size_t rowbytes = ((size_t)w * (size_t)channels * (size_t)depth + 7) / 8;
    png_bytep *rows = malloc(sizeof *rows * (size_t)h);
    for (int y = 0; y < h; y++) rows[y] = (png_bytep)raw + (size_t)y * rowbytes;
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    fclose(f);
}

/* PIL's alpha_composite onto white = round-half-up((c·a + 255·(255−a)) / 255) (checked against
 * Pillow 13 for all 65,536 pairs). Written independently of image.c's shift arithmetic. */
static uint8_t on_white(int c, int a) { return (uint8_t)((2 * (c * a + 255 * (255 - a)) + 255) / 510); }

static void expect_rgb(const m4_image *img, int x, int y, int r, int g, int b) {
    int64_t plane = img->width * img->height, at = (int64_t)y * img->width + x;
    int got[3] = {img->pixels[at], img->pixels[plane + at], img->pixels[2 * plane + at]};
    if (got[0] != r || got[1] != g || got[2] != b)
        fail_msg("pixel (%d, %d): got (%d, %d, %d), expected (%d, %d, %d)", x, y, got[0], got[1], got[2], r,
                 g, b);
}

static void test_png_variants(void **state) {
    (void)state;
    char *dir = m4t_tempdir();
    char *path = m4t_join(dir, "v.png");
    m4_image img;

    /* gray + alpha (LA): composited onto white */
    static const uint8_t la[] = {0, 0, 0, 128, 200, 255, 100, 1, 37, 200, 255, 254, 1, 2, 128, 127};
    write_png(path, 4, 2, 8, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_INTERLACE_NONE, la, NULL, 0, NULL, 0, NULL);
    img = load_ok(path);
    static const int la_want[8] = {255, 127, 200, 254, 84, 255, 253, 192}; /* Pillow's output */
    for (int i = 0; i < 8; i++) {
        assert_int_equal(on_white(la[2 * i], la[2 * i + 1]), la_want[i]);
        expect_rgb(&img, i % 4, i / 4, la_want[i], la_want[i], la_want[i]);
    }
    m4_image_free(&img);

    /* RGBA 16-bit: the high byte of each sample, then composite */
    static const uint8_t rgba16[] = {0x12, 0x34, 0xAB, 0xCD, 0x00, 0xFF, 0xFF, 0x00,   /* a = 0xFF */
                                     0x80, 0x00, 0x40, 0x00, 0x20, 0x00, 0x7F, 0xFF};  /* a = 0x7F */
    write_png(path, 2, 1, 16, PNG_COLOR_TYPE_RGBA, PNG_INTERLACE_NONE, rgba16, NULL, 0, NULL, 0, NULL);
    img = load_ok(path);
    expect_rgb(&img, 0, 0, 0x12, 0xAB, 0x00);
    expect_rgb(&img, 1, 0, on_white(0x80, 0x7F), on_white(0x40, 0x7F), on_white(0x20, 0x7F));
    m4_image_free(&img);

    /* 16-bit gray: PIL opens it as I;16 and convert("RGB") clamps to 255 (not >> 8) */
    static const uint8_t gray16[] = {0, 0, 0, 100, 0, 255, 1, 0, 3, 232, 255, 255};
    write_png(path, 6, 1, 16, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, gray16, NULL, 0, NULL, 0, NULL);
    img = load_ok(path);
    static const int gray16_want[6] = {0, 100, 255, 255, 255, 255};
    for (int x = 0; x < 6; x++) expect_rgb(&img, x, 0, gray16_want[x], gray16_want[x], gray16_want[x]);
    m4_image_free(&img);

    /* 1-bit gray: 0 / 255 */
    static const uint8_t bits[] = {0xA0}; /* 1 0 1 0 */
    write_png(path, 4, 1, 1, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, bits, NULL, 0, NULL, 0, NULL);
    img = load_ok(path);
    expect_rgb(&img, 0, 0, 255, 255, 255);
    expect_rgb(&img, 1, 0, 0, 0, 0);
    m4_image_free(&img);

    /* 8-bit gray with a colour key: the keyed value becomes white (alpha 0), others stay */
    static const uint8_t gray8[] = {10, 60, 60, 200};
    png_color_16 key = {.gray = 60};
    write_png(path, 4, 1, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, gray8, NULL, 0, NULL, 0, &key);
    img = load_ok(path);
    expect_rgb(&img, 0, 0, 10, 10, 10);
    expect_rgb(&img, 1, 0, 255, 255, 255);
    expect_rgb(&img, 3, 0, 200, 200, 200);
    m4_image_free(&img);

    /* palette with per-entry alpha (tRNS): through the palette, composited */
    static const png_color pal[3] = {{255, 0, 0}, {0, 128, 255}, {10, 20, 30}};
    static const uint8_t pal_alpha[2] = {0, 100}; /* entry 2: opaque */
    static const uint8_t idx[] = {0, 1, 2};
    write_png(path, 3, 1, 8, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, idx, pal, 3, pal_alpha, 2, NULL);
    img = load_ok(path);
    expect_rgb(&img, 0, 0, 255, 255, 255);
    expect_rgb(&img, 1, 0, on_white(0, 100), on_white(128, 100), on_white(255, 100));
    expect_rgb(&img, 2, 0, 10, 20, 30);
    m4_image_free(&img);

    /* Adam7 interlacing: same pixels as the plain file */
    uint8_t rgb[3 * 9 * 7];
    for (int i = 0; i < (int)sizeof rgb; i++) rgb[i] = (uint8_t)(i * 37 + 11);
    write_png(path, 9, 7, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_ADAM7, rgb, NULL, 0, NULL, 0, NULL);
    img = load_ok(path);
    for (int y = 0; y < 7; y++)
        for (int x = 0; x < 9; x++) {
            const uint8_t *p = rgb + 3 * (y * 9 + x);
            expect_rgb(&img, x, y, p[0], p[1], p[2]);
        }
    m4_image_free(&img);

    free(path);
    m4t_rmtree(dir);
    free(dir);
}

/* Writes a flat-colour JPEG with libjpeg: gray (1 component) or Adobe CMYK (stored inverted, as
 * Photoshop and PIL write it). */
static void write_flat_jpeg(const char *path, int w, int h, int components, const uint8_t *pixel) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w, c.image_height = (JDIMENSION)h, c.input_components = components;
    c.in_color_space = components == 1 ? JCS_GRAYSCALE : JCS_CMYK;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 100, TRUE);
    jpeg_start_compress(&c, TRUE);
    uint8_t *row = malloc((size_t)(w * components));
    for (int x = 0; x < w; x++) memcpy(row + x * components, pixel, (size_t)components);
    while (c.next_scanline < c.image_height) jpeg_write_scanlines(&c, &row, 1);
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(row);
    fclose(f);
}

static void test_jpeg_variants(void **state) {
    (void)state;
    char *dir = m4t_tempdir();
    char *path = m4t_join(dir, "v.jpg");
    /* gray: one channel copied to three */
    const uint8_t gray = 90;
    write_flat_jpeg(path, 16, 8, 1, &gray);
    m4_image img = load_ok(path);
    assert_int_equal(img.width, 16);
    assert_int_equal(img.height, 8);
    expect_rgb(&img, 5, 3, 90, 90, 90);
    m4_image_free(&img);
    /* Adobe CMYK, stored inverted: C=0 M=0 Y=0 K=0 is white; K=255 black; C=255 cyan;
     * C=M=Y=K=128 → nk − c·nk/255 with nk = 127: 127 − 64 = 63 (PIL's cmyk2rgb). */
    static const struct { uint8_t cmyk[4]; int rgb[3]; } cases[] = {
        {{0, 0, 0, 0}, {255, 255, 255}},
        {{0, 0, 0, 255}, {0, 0, 0}},
        {{255, 0, 0, 0}, {0, 255, 255}},
        {{128, 128, 128, 128}, {63, 63, 63}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t stored[4];
        for (int c = 0; c < 4; c++) stored[c] = (uint8_t)(255 - cases[i].cmyk[c]);
        write_flat_jpeg(path, 8, 8, 4, stored);
        img = load_ok(path);
        int64_t plane = img.width * img.height;
        for (int c = 0; c < 3; c++)
            if (abs(img.pixels[c * plane + 9] - cases[i].rgb[c]) > 1)
                fail_msg("CMYK (%d, %d, %d, %d) channel %d: %d, expected %d", cases[i].cmyk[0], cases[i].cmyk[1],
                         cases[i].cmyk[2], cases[i].cmyk[3], c, img.pixels[c * plane + 9], cases[i].rgb[c]);
        m4_image_free(&img);
    }
    free(path);
    m4t_rmtree(dir);
    free(dir);
}

/* A valid progressive JPEG with 631 scans (one AC coefficient per scan, refined bit by bit) is
 * refused by the scan limit; the same image with 10 scans decodes. */
static void write_progressive_jpeg(const char *path, int refinements) {
    enum { W = 16, H = 16 };
    jpeg_scan_info scans[1 + 63 * 10];
    int n = 0;
    scans[n++] = (jpeg_scan_info){.comps_in_scan = 1, .component_index = {0}, .Ss = 0, .Se = 0, .Ah = 0, .Al = 0};
    for (int k = 1; k <= 63; k++) {
        int top = refinements - 1;
        scans[n++] = (jpeg_scan_info){.comps_in_scan = 1, .component_index = {0}, .Ss = k, .Se = k, .Ah = 0, .Al = top};
        for (int al = top; al > 0; al--)
            scans[n++] = (jpeg_scan_info){.comps_in_scan = 1, .component_index = {0}, .Ss = k, .Se = k,
                                          .Ah = al, .Al = al - 1};
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = W, c.image_height = H, c.input_components = 1, c.in_color_space = JCS_GRAYSCALE;
    jpeg_set_defaults(&c);
    c.scan_info = scans, c.num_scans = n;
    jpeg_start_compress(&c, TRUE);
    uint8_t row[W];
    while (c.next_scanline < c.image_height) {
        for (int x = 0; x < W; x++) row[x] = (uint8_t)(x * 16 + c.next_scanline * 3);
        JSAMPROW rp = row;
        jpeg_write_scanlines(&c, &rp, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
}

static void test_jpeg_scan_limit(void **state) {
    (void)state;
    char *dir = m4t_tempdir();
    char *path = m4t_join(dir, "many-scans.jpg");
    write_progressive_jpeg(path, 10); /* 1 + 63 · 10 = 631 scans */
    expect_refused(path, "more than 500 scans");
    write_progressive_jpeg(path, 1);  /* 64 scans */
    m4_image img = load_ok(path);
    assert_int_equal(img.width, 16);
    m4_image_free(&img);
    free(path);
    m4t_rmtree(dir);
    free(dir);
}

/* ---- files that must be refused --------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static void test_bad_files(void **state) {
    (void)state;
    char *dir = m4t_tempdir();
    char *png_src = m4t_source_path(GOLDEN_DIR "/pre1_rgba_60x90.png");
    char *jpg_src = m4t_source_path(GOLDEN_DIR "/pre2_wide_1600x300.jpg");
    size_t png_size, jpg_size;
    uint8_t *png_data = read_file(png_src, &png_size);
    uint8_t *jpg_data = read_file(jpg_src, &jpg_size);
    char *path;

    path = m4t_join(dir, "truncated.png");  /* cut inside the image data */
    m4t_write_file(path, png_data, png_size / 2);
    expect_refused(path, "truncated PNG");
    free(path);

    path = m4t_join(dir, "no-crc.png"); /* the last IDAT chunk lacks its CRC */
    m4t_write_file(path, png_data, png_size - 16);
    expect_refused(path, "truncated PNG");
    free(path);

    path = m4t_join(dir, "no-iend.png"); /* image data complete, IEND missing: PIL accepts it */
    m4t_write_file(path, png_data, png_size - 12);
    m4_image whole = load_ok(path);
    assert_int_equal(whole.width, 60);
    m4_image_free(&whole);
    free(path);

    path = m4t_join(dir, "header-only.png"); /* cut inside the IHDR chunk */
    m4t_write_file(path, png_data, 20);
    expect_refused(path, "truncated PNG");
    free(path);

    path = m4t_join(dir, "truncated.jpg");
    m4t_write_file(path, jpg_data, jpg_size * 2 / 5);
    expect_refused(path, "truncated JPEG");
    free(path);

    path = m4t_join(dir, "headers-only.jpg"); /* ends before the first scan */
    m4t_write_file(path, jpg_data, 300);
    expect_refused(path, "truncated JPEG");
    free(path);

    /* corrupt PNG: bytes of the first IDAT chunk's data flipped (its CRC no longer matches) */
    uint8_t *bad = malloc(png_size);
    memcpy(bad, png_data, png_size);
    size_t at = 8;
    while (at + 8 <= png_size && memcmp(bad + at + 4, "IDAT", 4) != 0) at += 12 + be32(bad + at);
    assert_true(at + 8 + 32 < png_size);
    for (int i = 0; i < 16; i++) bad[at + 8 + 16 + i] ^= 0x5A;
    path = m4t_join(dir, "corrupt.png");
    m4t_write_file(path, bad, png_size);
    expect_refused(path, "corrupt PNG");
    free(path);
    free(bad);

    /* corrupt JPEG: garbage (including a stray marker) in the middle of the entropy-coded data */
    bad = malloc(jpg_size);
    memcpy(bad, jpg_data, jpg_size);
    for (size_t i = 0; i < 64; i++) bad[jpg_size / 2 + i] = (uint8_t)(i % 2 ? 0xD3 : 0xFF);
    path = m4t_join(dir, "corrupt.jpg");
    m4t_write_file(path, bad, jpg_size);
    expect_refused(path, "corrupt JPEG");
    free(path);

    /* JPEG whose frame header (SOF0) claims 60000 x 60000 pixels */
    memcpy(bad, jpg_data, jpg_size);
    size_t sof = 2;
    while (sof + 4 < jpg_size && !(bad[sof] == 0xFF && bad[sof + 1] == 0xC0))
        sof += 2 + ((size_t)bad[sof + 2] << 8 | bad[sof + 3]);
    assert_true(sof + 9 < jpg_size);
    bad[sof + 5] = 60000 >> 8, bad[sof + 6] = 60000 & 0xFF; /* height */
    bad[sof + 7] = 60000 >> 8, bad[sof + 8] = 60000 & 0xFF; /* width */
    path = m4t_join(dir, "huge.jpg");
    m4t_write_file(path, bad, jpg_size);
    expect_refused(path, "claims 60000 x 60000 pixels");
    free(path);
    free(bad);

    /* PNG whose IHDR (valid CRC) claims 100000 x 100000 pixels, then nothing */
    uint8_t huge[8 + 25];
    memcpy(huge, png_data, 8);
    put_be32(huge + 8, 13);
    memcpy(huge + 12, "IHDR", 4);
    put_be32(huge + 16, 100000);
    put_be32(huge + 20, 100000);
    const uint8_t ihdr_tail[5] = {8, 6, 0, 0, 0};
    memcpy(huge + 24, ihdr_tail, 5);
    put_be32(huge + 29, (uint32_t)crc32(0, huge + 12, 17));
    path = m4t_join(dir, "huge.png");
    m4t_write_file(path, huge, sizeof huge);
    expect_refused(path, "M4_IMAGE_MAX_PIXELS");
    free(path);

    /* just over the pixel limit: 8193 x 8192 */
    put_be32(huge + 16, 8193);
    put_be32(huge + 20, 8192);
    put_be32(huge + 29, (uint32_t)crc32(0, huge + 12, 17));
    path = m4t_join(dir, "over-limit.png");
    m4t_write_file(path, huge, sizeof huge);
    expect_refused(path, "claims 8193 x 8192 pixels");
    free(path);

    path = m4t_join(dir, "empty.png");
    m4t_write_file(path, "", 0);
    expect_refused(path, "empty file");
    free(path);

    path = m4t_join(dir, "notes.jpg"); /* the name says JPEG, the bytes say text */
    m4t_write_text(path, "These are notes, not an image.\n");
    expect_refused(path, "not a PNG or JPEG file");
    free(path);

    path = m4t_join(dir, "anim.gif");
    m4t_write_text(path, "GIF89a\x01\x00\x01\x00");
    expect_refused(path, "GIF image; only PNG and JPEG");
    free(path);

    path = m4t_join(dir, "missing.png");
    expect_refused(path, "cannot open");
    free(path);

    expect_refused(dir, "not a regular file");

    /* from memory: the name given stands for the file */
    m4_image img;
    m4_error err = {{0}};
    assert_int_equal(m4_image_decode(png_data, 100, "upload #3", &img, &err), -1);
    m4t_assert_contains(err.msg, "upload #3: truncated PNG");

    free(png_data);
    free(jpg_data);
    free(png_src);
    free(jpg_src);
    m4t_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_images), cmocka_unit_test(test_golden_batch),
        cmocka_unit_test(test_target_size),   cmocka_unit_test(test_resize_small),
        cmocka_unit_test(test_normalize),     cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_expand_placeholders),
        cmocka_unit_test(test_png_variants),  cmocka_unit_test(test_jpeg_variants),
        cmocka_unit_test(test_jpeg_scan_limit), cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
