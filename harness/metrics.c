#include "metrics.h"

#include <math.h>
#include <stdlib.h>

m4_comparison m4_compare_f32(const float *got, const float *want, int64_t n, double tolerance) {
    m4_comparison c = {.n = n};
    double diff2 = 0, want2 = 0, got2 = 0, dot = 0;
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        bool g_finite = isfinite(g), w_finite = isfinite(w);
        if (isnan(g) || g_finite != w_finite || (!g_finite && g != w)) {
            c.nonfinite_mismatch++;
            continue;
        }
        if (!g_finite) continue; /* the same infinity on both sides */
        double d = g - w;
        if (fabs(d) > c.max_abs) c.max_abs = fabs(d);
        diff2 += d * d;
        want2 += w * w;
        got2 += g * g;
        dot += g * w;
    }
    c.pass = c.nonfinite_mismatch == 0;
    if (!c.pass) { /* a NaN output (or a misplaced Inf) has no distance: the finite pairs alone
                      would read as perfect when every element is NaN */
        c.max_abs = c.rel_l2 = c.cosine = c.budget_pct = NAN;
        return c;
    }
    c.rel_l2 = want2 > 0 ? sqrt(diff2 / want2) : sqrt(diff2);
    c.cosine = (got2 > 0 && want2 > 0) ? dot / sqrt(got2 * want2) : (got2 == want2 ? 1.0 : 0.0);
    c.budget_pct = tolerance > 0 ? 100.0 * c.rel_l2 / tolerance : (c.rel_l2 > 0 ? INFINITY : 0);
    c.pass = c.rel_l2 <= tolerance;
    return c;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int64_t m4_topk_set_mismatches(const int64_t *got, const int64_t *want, int64_t n, int64_t k) {
    int64_t mismatches = 0;
    int64_t *a = malloc((size_t)k * sizeof *a), *b = malloc((size_t)k * sizeof *b);
    if (!a || !b) {
        free(a), free(b);
        return n; /* cannot compare: count everything as different rather than pass */
    }
    for (int64_t t = 0; t < n; t++) {
        for (int64_t j = 0; j < k; j++) a[j] = got[t * k + j], b[j] = want[t * k + j];
        qsort(a, (size_t)k, sizeof *a, cmp_i64);
        qsort(b, (size_t)k, sizeof *b, cmp_i64);
        for (int64_t j = 0; j < k; j++) {
            if (a[j] != b[j]) {
                mismatches++;
                break;
            }
        }
    }
    free(a), free(b);
    return mismatches;
}
