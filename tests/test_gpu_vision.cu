/* The vision tower's layout kernels (optimized/kernels/vision.cu) with the reference
 * (reference/vision.c, projector.c, multimodal.c) as the CPU truth, bit for bit:
 *   m4k_im2col + m4k_to_channels_first — against m4_ref_patch_conv with an identity weight
 *     [C·p·p, C·p·p] (each output channel then is one pixel of the patch, in the weight's
 *     [C, p, p] order: exactly an im2col column), over every patch of a padded batch of two
 *     images listed in a scrambled order (rows address patches by (image, row, col)), at a small
 *     patch and at p = 16 (C·p·p = 768 values per row, more than one thread pass);
 *   m4k_unfold — against m4_ref_patch_unfold (F.unfold of Mistral3PatchMerger) on two images
 *     with odd grid sides (their last row/column dropped), the source rows listed per block as
 *     the backend lists them (sub-patch k = dr·m + dc);
 *   m4k_merge_rows — against m4_ref_merge_image_features, out of place and in place.
 * Budget: every value identical (pure copies); outputs prefilled with NaN bits, so that an
 * unwritten value fails. A wrong index in any of the four moves values to other places.
 * Cost: well under a second on an H100. Skips (exit 77) without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

extern "C" {
#include "testutil.h"
#include "vision.h"
}
#include "gpu_test_util.cuh"
#include "kernels/vision.cuh"

/* Values that differ from each other and from zero: v_i = (i + 1) · 2⁻¹⁰ · (−1)^i (exact). */
static std::vector<float> distinct_values(size_t n) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) v[i] = (float)(i + 1) * (1.0f / 1024.0f) * (i % 2 ? -1.0f : 1.0f);
    return v;
}

/* Values at which two float arrays differ bit-wise. */
static int64_t differing(const float *a, const float *b, size_t n) {
    int64_t count = 0;
    for (size_t i = 0; i < n; i++) count += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return count;
}

static void check_im2col(int64_t n_img, int64_t C, int64_t p, int64_t H, int64_t W) {
    const int64_t gh = H / p, gw = W / p, L = gh * gw, K = C * p * p;
    const std::vector<float> pixels = distinct_values((size_t)(n_img * C * H * W));
    std::vector<int64_t> sizes((size_t)(2 * n_img));
    for (int64_t n = 0; n < n_img; n++) sizes[(size_t)(2 * n)] = H, sizes[(size_t)(2 * n + 1)] = W;
    const m4_pixel_batch px = {n_img, H, W, pixels.data(), sizes.data()};
    m4_vision_config cfg = m4_vision_config{};
    cfg.num_channels = C, cfg.patch_size = p, cfg.hidden_size = K;
    std::vector<float> identity((size_t)(K * K), 0.0f);
    for (int64_t k = 0; k < K; k++) identity[(size_t)(k * K + k)] = 1.0f;
    m4_weight w = m4_weight{};
    w.name = "identity", w.dtype = M4_DTYPE_F32, w.rows = K, w.cols = K, w.scale = 1.0f;
    w.data = reinterpret_cast<const uint8_t *>(identity.data());
    std::vector<float> conv((size_t)(n_img * K * L));              /* [N_img, K, gh, gw] */
    m4_error err = m4_error{};
    assert_int_equal(m4_ref_patch_conv(&cfg, &w, &px, conv.data(), &err), 0);

    /* every patch, listed last image first, columns before rows: row r ↔ (img, pr, pc) */
    std::vector<int32_t> img, pr, pc;
    for (int64_t n = n_img - 1; n >= 0; n--)
        for (int64_t c = 0; c < gw; c++)
            for (int64_t r = 0; r < gh; r++) img.push_back((int32_t)n), pr.push_back((int32_t)r), pc.push_back((int32_t)c);
    const int64_t rows = (int64_t)img.size();
    float *d_pixels = to_device(pixels), *d_cols = nan_filled((size_t)(rows * K));
    int32_t *d_img = to_device(img), *d_pr = to_device(pr), *d_pc = to_device(pc);
    assert_int_equal(m4k_im2col(d_pixels, C, H, W, p, d_img, d_pr, d_pc, rows, d_cols, 0, &err), 0);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> cols = to_host(d_cols, (size_t)(rows * K));
    std::vector<float> want((size_t)(rows * K));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < K; k++)
            want[(size_t)(r * K + k)] = conv[(size_t)((img[(size_t)r] * K + k) * L + pr[(size_t)r] * gw + pc[(size_t)r])];
    const int64_t wrong_cols = differing(cols.data(), want.data(), want.size());

    /* the same patches in the images' row-major order, then to the conv layout */
    std::vector<int32_t> img2, pr2, pc2;
    for (int64_t n = 0; n < n_img; n++)
        for (int64_t r = 0; r < gh; r++)
            for (int64_t c = 0; c < gw; c++) img2.push_back((int32_t)n), pr2.push_back((int32_t)r), pc2.push_back((int32_t)c);
    int32_t *d_img2 = to_device(img2), *d_pr2 = to_device(pr2), *d_pc2 = to_device(pc2);
    float *d_rows = nan_filled((size_t)(rows * K)), *d_conv = nan_filled(conv.size());
    assert_int_equal(m4k_im2col(d_pixels, C, H, W, p, d_img2, d_pr2, d_pc2, rows, d_rows, 0, &err), 0);
    assert_int_equal(m4k_to_channels_first(d_rows, n_img, L, K, d_conv, 0, &err), 0);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> got_conv = to_host(d_conv, conv.size());
    const int64_t wrong_conv = differing(got_conv.data(), conv.data(), conv.size());
    cudaFree(d_pixels), cudaFree(d_cols), cudaFree(d_img), cudaFree(d_pr), cudaFree(d_pc);
    cudaFree(d_img2), cudaFree(d_pr2), cudaFree(d_pc2), cudaFree(d_rows), cudaFree(d_conv);
    fprintf(stderr, "im2col %lld images [%lld, %lld, %lld], p %2lld: %lld rows × %lld: %lld values differ; "
                    "+ to_channels_first: %lld differ (budget 0)\n",
            (long long)n_img, (long long)C, (long long)H, (long long)W, (long long)p, (long long)rows, (long long)K,
            (long long)wrong_cols, (long long)wrong_conv);
    assert_int_equal(wrong_cols, 0);
    assert_int_equal(wrong_conv, 0);
}

static void im2col_matches_the_patch_conv(void **state) {
    (void)state;
    check_im2col(2, 3, 4, 12, 20);
    check_im2col(1, 3, 16, 32, 48);
}

static void check_unfold(int64_t Dv, int64_t m, const std::vector<m4_patch_grid> &grids) {
    const int64_t n_images = (int64_t)grids.size(), m2 = m * m;
    int64_t P = 0;
    for (const m4_patch_grid &g : grids) P += g.rows * g.cols;
    const int64_t M = m4_ref_merged_tokens(grids.data(), n_images, m);
    const std::vector<float> x = distinct_values((size_t)(P * Dv));
    std::vector<float> want((size_t)(M * Dv * m2));
    m4_ref_patch_unfold(x.data(), Dv, m, grids.data(), n_images, want.data());
    std::vector<int32_t> src;                                     /* [M, m²]: block by block, k = dr·m + dc */
    for (int64_t n = 0, base = 0; n < n_images; n++) {
        const int64_t h = grids[(size_t)n].rows, w = grids[(size_t)n].cols;
        for (int64_t R = 0; R < h / m; R++)
            for (int64_t Cb = 0; Cb < w / m; Cb++)
                for (int64_t dr = 0; dr < m; dr++)
                    for (int64_t dc = 0; dc < m; dc++) src.push_back((int32_t)(base + (R * m + dr) * w + Cb * m + dc));
        base += h * w;
    }
    assert_int_equal((int64_t)src.size(), M * m2);
    float *d_x = to_device(x), *d_out = nan_filled(want.size());
    int32_t *d_src = to_device(src);
    m4_error err = m4_error{};
    assert_int_equal(m4k_unfold(d_x, d_src, M, m2, Dv, d_out, 0, &err), 0);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> got = to_host(d_out, want.size());
    cudaFree(d_x), cudaFree(d_out), cudaFree(d_src);
    const int64_t wrong = differing(got.data(), want.data(), want.size());
    fprintf(stderr, "unfold Dv %3lld m %lld, %lld images: %lld merged tokens × %lld: %lld values differ (budget 0)\n",
            (long long)Dv, (long long)m, (long long)n_images, (long long)M, (long long)(Dv * m2), (long long)wrong);
    assert_int_equal(wrong, 0);
}

static void unfold_matches_the_reference(void **state) {
    (void)state;
    check_unfold(40, 2, {{4, 6}, {5, 3}});
    check_unfold(100, 2, {{7, 9}});          /* Dv·m² = 400 values per row: more than one thread pass */
    check_unfold(24, 3, {{6, 7}, {3, 3}});
}

static void merge_matches_the_reference(void **state) {
    (void)state;
    const int64_t n = 23, D = 300, image_token = 10;
    std::vector<int64_t> ids((size_t)n);
    for (int64_t i = 0; i < n; i++) ids[(size_t)i] = (i >= 3 && i < 9) || (i >= 15 && i < 19) || i == n - 1 ? image_token : i + 100;
    std::vector<int32_t> src((size_t)n);
    int64_t features_n = 0;
    for (int64_t i = 0; i < n; i++) src[(size_t)i] = ids[(size_t)i] == image_token ? (int32_t)features_n++ : -1;
    const std::vector<float> embeds = distinct_values((size_t)(n * D));
    std::vector<float> features = distinct_values((size_t)(features_n * D));
    for (float &v : features) v = -v * 3.0f;
    std::vector<float> want = embeds;
    m4_error err = m4_error{};
    assert_int_equal(m4_ref_merge_image_features(ids.data(), n, image_token, features.data(), features_n, D, want.data(), &err),
                     0);
    float *d_embeds = to_device(embeds), *d_features = to_device(features), *d_out = nan_filled(embeds.size());
    int32_t *d_src = to_device(src);
    assert_int_equal(m4k_merge_rows(d_embeds, d_features, d_src, n, D, d_out, 0, &err), 0);          /* out of place */
    assert_int_equal(m4k_merge_rows(d_embeds, d_features, d_src, n, D, d_embeds, 0, &err), 0);       /* in place */
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> out = to_host(d_out, embeds.size()), in_place = to_host(d_embeds, embeds.size());
    cudaFree(d_embeds), cudaFree(d_features), cudaFree(d_out), cudaFree(d_src);
    const int64_t wrong = differing(out.data(), want.data(), want.size()),
                  wrong_in_place = differing(in_place.data(), want.data(), want.size());
    fprintf(stderr, "merge_rows %lld rows (%lld image rows) × %lld: %lld values differ, in place %lld (budget 0)\n",
            (long long)n, (long long)features_n, (long long)D, (long long)wrong, (long long)wrong_in_place);
    assert_int_equal(wrong, 0);
    assert_int_equal(wrong_in_place, 0);
}

int main(void) {
    if (!gpu_present("test_gpu_vision")) return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(im2col_matches_the_patch_conv),
        cmocka_unit_test(unfold_matches_the_reference),
        cmocka_unit_test(merge_matches_the_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
