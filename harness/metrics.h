/* metrics.h — how far an implementation's output is from the golden one. */
#ifndef M4_METRICS_H
#define M4_METRICS_H

#include <stdbool.h>
#include <stdint.h>

/* When any position is a non-finite mismatch (nonfinite_mismatch > 0), max_abs, rel_l2, cosine
 * and budget_pct are NaN: the output has no distance to the golden (reports print NaN, JSON null). */
typedef struct {
    int64_t n;              /* elements compared */
    double max_abs;         /* max |got − want| over finite pairs */
    double rel_l2;          /* ‖got − want‖₂ / ‖want‖₂ (‖got − want‖₂ when want is all zero) */
    double cosine;          /* got·want / (‖got‖‖want‖); 1 when both are zero */
    int64_t nonfinite_mismatch; /* positions where exactly one side is NaN/Inf, or got is NaN */
    double budget_pct;      /* 100 · rel_l2 / tolerance: how much of the error budget is used */
    bool pass;              /* rel_l2 ≤ tolerance, and no non-finite mismatch (NaN never passes) */
} m4_comparison;

/* Compares n float32 values against the golden ones with a relative-L2 tolerance.
 * Sums in double so the metric itself adds no error. */
m4_comparison m4_compare_f32(const float *got, const float *want, int64_t n, double tolerance);

/* Router agreement: for each of n tokens, are the k expert ids the same set? Returns the number
 * of tokens whose sets differ (order within a token does not matter). */
int64_t m4_topk_set_mismatches(const int64_t *got, const int64_t *want, int64_t n, int64_t k);

#endif
