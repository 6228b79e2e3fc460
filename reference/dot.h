/* dot.h — dot products of the reference: float32 vectors, and weight rows (BF16, F32 or FP8 E4M3
 * codes, read in place) against a float32 vector. One summation order everywhere: element j goes
 * to partial sum (lane) j % M4_LANES, products and sums are rounded to float32 one at a time (no
 * fused multiply-add), the lanes are combined pairwise at the end. The result is the same for any
 * thread count, chunking or instruction set. */
#ifndef M4_DOT_H
#define M4_DOT_H

#include <stdbool.h>
#include <stdint.h>

#include "weights.h"

#define M4_LANES 16   /* independent partial sums per dot product */
#define M4_DOT_ROWS 8 /* weight rows per m4_dot_rows call (they share each load of x) */

/* acc[j % M4_LANES] += w[j] · x[j] for j in [0, n). A caller that splits a dot product into
 * pieces keeps each piece's start a multiple of M4_LANES, so that lanes stay aligned with
 * absolute indices. */
void m4_dot_lanes(float acc[M4_LANES], const float *w, const float *x, int64_t n);

/* The pairwise sum of the lanes, ((l0 + l8) + (l4 + l12)) + … in a fixed tree (acc is used up). */
float m4_dot_lanes_sum(float acc[M4_LANES]);

/* true when m4_dot_rows reads w in place: BF16 or F32 with scale 1, or FP8 E4M3 with a scale
 * below 2^8 in magnitude (every published and golden checkpoint). Otherwise the caller
 * dequantises rows itself (m4_weight_row_chunk_f32) and uses m4_dot_lanes. */
bool m4_dot_rows_supported(const m4_weight *w);

/* y[r] = Σ_j W[row0 + r, j] · x[j] for r in [0, M4_DOT_ROWS), W[i, j] dequantised as
 * m4_weight_row_f32 does (the FP8 code's value times the scale, rounded to float32), summed in the
 * order above. Rows past the last one repeat it (y still gets M4_DOT_ROWS values). Vectorised
 * for the CPU it runs on (dot.c). Requires m4_dot_rows_supported(w). */
void m4_dot_rows(const m4_weight *w, int64_t row0, const float *x, float y[M4_DOT_ROWS]);

/* The same without AVX-512 (what m4_dot_rows runs on a CPU without it), for the tests. */
void m4_dot_rows_portable(const m4_weight *w, int64_t row0, const float *x, float y[M4_DOT_ROWS]);

/* The same, element by element, in the plain words of the definition: the twin that the tests
 * hold m4_dot_rows to, bit for bit. */
void m4_dot_rows_plain(const m4_weight *w, int64_t row0, const float *x, float y[M4_DOT_ROWS]);

#endif
