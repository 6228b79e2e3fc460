/* vision.cuh — the vision tower's layout kernels (vision.cu): patch im2col, the conv output's
 * channels-first layout, the patch merger's unfold, the image features' merge into the text
 * embeddings. Launcher conventions: common.cuh. */
#ifndef M4_KERNELS_VISION_CUH
#define M4_KERNELS_VISION_CUH

#include <stdint.h>

#include "common.cuh"

/* Patch im2col: row r of cols [n_rows, C·p·p] is the patch (img[r], pr[r], pc[r]) of pixels
 * [N_img, C, Hpx, Wpx], in the weight's [C, p, p] order. */
int m4k_im2col(const float *pixels, int64_t C, int64_t Hpx, int64_t Wpx, int64_t p,
               const int32_t *img, const int32_t *pr, const int32_t *pc, int64_t n_rows, float *cols,
               cudaStream_t stream, m4_error *err);

/* out[n, d, l] = x[n·L + l, d]: [N_img·L, Dv] → [N_img, Dv, L] (the conv output layout). */
int m4k_to_channels_first(const float *x, int64_t n_img, int64_t L, int64_t Dv, float *out,
                          cudaStream_t stream, m4_error *err);

/* Patch merger unfold: out[r, ch·m² + k] = x[src[r·m² + k], ch], x [P, Dv], r < M. */
int m4k_unfold(const float *x, const int32_t *src, int64_t M, int64_t m2, int64_t Dv, float *out,
               cudaStream_t stream, m4_error *err);

/* out[i] = src[i] ≥ 0 ? features[src[i]] : embeds[i], rows of D floats, i < n. */
int m4k_merge_rows(const float *embeds, const float *features, const int32_t *src, int64_t n,
                   int64_t D, float *out, cudaStream_t stream, m4_error *err);

#endif
