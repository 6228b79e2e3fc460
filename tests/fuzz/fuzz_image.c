/* fuzz_image — untrusted image bytes through the decoder and the Pixtral preprocessing
 * (preprocess/image.c): m4_image_decode (PNG or JPEG, by content), then, for images of at most
 * 1024 × 1024 pixels, m4_image_preprocess with the published settings but longest_edge 112 (the
 * same code paths, a small resize, so each run is fast). Checks what the API promises: a decoded
 * image is within M4_IMAGE_MAX_PIXELS / M4_IMAGE_MAX_SIDE and every pixel is readable; the batch
 * has the shape image_sizes says, padded with zeros. */
#include <stdbool.h>

#include "fuzz_common.h"
#include "image.h"

static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    m4_image img = {0};
    m4_error err = {{0}};
    if (m4_image_decode(data, size, "fuzz.img", &img, &err) != 0) {
        FUZZ_CHECK(err.msg[0] != 0 && img.pixels == NULL);
        fuzz_note("decode", err.msg);
        return 0;
    }
    FUZZ_CHECK(img.height >= 1 && img.width >= 1 && img.pixels != NULL);
    FUZZ_CHECK(img.height <= M4_IMAGE_MAX_SIDE && img.width <= M4_IMAGE_MAX_SIDE);
    FUZZ_CHECK(img.height * img.width <= M4_IMAGE_MAX_PIXELS);
    unsigned acc = 0;
    for (int64_t i = 0; i < 3 * img.height * img.width; i++) acc += img.pixels[i];
    sink += acc;
    fuzz_note("decode", "ok");
    if (img.height * img.width <= 1024 * 1024) {
        m4_image_options opt;
        m4_image_options_default(&opt);
        opt.longest_edge = 112;
        m4_pixel_batch batch = {0};
        if (m4_image_preprocess(&opt, &img, 1, &batch, &err) == 0) {
            FUZZ_CHECK(batch.n == 1 && batch.image_sizes[0] <= batch.height && batch.image_sizes[1] <= batch.width);
            FUZZ_CHECK(batch.height % (opt.patch_size * opt.merge) == 0 && batch.width % (opt.patch_size * opt.merge) == 0);
            float s = 0;
            for (int64_t i = 0; i < 3 * batch.height * batch.width; i++) s += batch.pixel_values[i];
            sink += (s == s);
            m4_pixel_batch_free(&batch);
        } else {
            FUZZ_CHECK(err.msg[0] != 0);
            fuzz_note("preprocess", err.msg);
        }
    }
    m4_image_free(&img);
    return 0;
}
