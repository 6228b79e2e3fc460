/* Determinism of the reference (issue #9): the same input gives bit-identical output run after run
 * and whatever the number of OpenMP threads. It holds by construction — every dot product sums 16
 * fixed lanes in a fixed order (m4_ref_dot), and the parallel loops split independent output rows
 * (linear: output features; attention: batch × head), never one sum — and this test checks it:
 *
 *   1. logits of m4_ref_text_forward on golden/cases/text_tiny's own inputs ([2, 10], padded), and
 *      on a longer synthetic batch ([2, 96], one row padded) large enough that the attention and
 *      every linear take their OpenMP path: threads 1, 2, 3 and a repeat, compared with memcmp;
 *   2. the whole conformance run (every component of the registry, teacher-forced and end to
 *      end) of text_tiny and of the multimodal case (vision tower, projector, merge): every row's
 *      max abs error, relative L2 and cosine, identical at 1 and 3 threads.
 * Without OpenMP only the repeat is checked (there is one thread). */
#include "testutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "conform.h"
#include "golden.h"
#include "reference.h"
#include "weights.h"

typedef struct {
    m4_model model;
    m4_array ids, positions, mask;
    m4_softmax_scale_rule rule;
    char *golden;
} fixture;

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static int max_threads_tested(void) {
#ifdef _OPENMP
    return 3;
#else
    return 1;
#endif
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    char *dir = m4t_source_path("golden/cases/text_tiny/model");
    f->golden = m4t_source_path("golden/cases/text_tiny/text_tiny.h5");
    m4_error err = {{0}};
    int rc = m4_model_open(dir, &f->model, &err);
    free(dir);
    m4_golden *g = NULL;
    char rule[32];
    if (rc == 0) rc = m4_golden_open(f->golden, &g, &err);
    if (rc == 0)
        rc = m4_golden_read(g, "inputs/input_ids", true, &f->ids, &err) ||
             m4_golden_read(g, "inputs/position_ids", true, &f->positions, &err) ||
             m4_golden_read(g, "inputs/attention_mask", true, &f->mask, &err) ||
             m4_golden_attr(g, "mla_softmax_scale_rule", rule, sizeof rule, &err);
    m4_golden_close(g);
    if (rc != 0) {
        fprintf(stderr, "test_determinism: %s\n", err.msg);
        return -1;
    }
    f->rule = strcmp(rule, "base") == 0 ? M4_SOFTMAX_SCALE_BASE : M4_SOFTMAX_SCALE_MSCALE2;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    m4_model_close(&f->model);
    m4_array_free(&f->ids), m4_array_free(&f->positions), m4_array_free(&f->mask);
    free(f->golden);
    free(f);
    set_threads(1);
    return 0;
}

/* logits [B, S, V] of one forward at `threads` threads (caller frees). */
static float *forward(const fixture *f, const int64_t *ids, const int64_t *positions,
                      const int64_t *mask, int64_t B, int64_t S, int threads) {
    const int64_t V = f->model.config.text.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)(B * S * V));
    assert_non_null(logits);
    m4_error err = {{0}};
    set_threads(threads);
    if (m4_ref_text_forward(&f->model, ids, NULL, B, S, positions, mask, 0, f->rule, logits, &err) != 0)
        fail_msg("forward at %d threads: %s", threads, err.msg);
    return logits;
}

/* Runs the forward at 1 thread, again at 1, then at 2 and 3, and requires identical bits. */
static void check_forward(const fixture *f, const int64_t *ids, const int64_t *positions,
                          const int64_t *mask, int64_t B, int64_t S) {
    const size_t bytes = sizeof(float) * (size_t)(B * S * f->model.config.text.vocab_size);
    float *ref = forward(f, ids, positions, mask, B, S, 1);
    int runs[] = {1, 2, 3};
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        if (runs[i] > max_threads_tested()) continue;
        float *got = forward(f, ids, positions, mask, B, S, runs[i]);
        if (memcmp(ref, got, bytes) != 0) {
            size_t k = 0;
            while (k < bytes / sizeof(float) && memcmp(&ref[k], &got[k], sizeof(float)) == 0) k++;
            fail_msg("[%lld, %lld] logits at %d threads differ from 1 thread: first at element %zu "
                     "(%.9g vs %.9g)", (long long)B, (long long)S, runs[i], k, ref[k], got[k]);
        }
        free(got);
    }
    free(ref);
}

static void golden_inputs_are_bit_identical_across_runs_and_threads(void **state) {
    fixture *f = *state;
    assert_int_equal(f->ids.ndim, 2);
    check_forward(f, f->ids.i64, f->positions.i64, f->mask.i64, f->ids.dims[0], f->ids.dims[1]);
}

/* [2, 96]: B·H·S·T·(dq + dv) = 2·4·96·96·32 ≈ 2.4 M multiply-adds in the attention and ≥ 0.4 M in
 * each projection, above the thresholds (2^18) of both OpenMP loops, so threads really split the
 * work; row 1 is left-padded by 7 tokens (mask 0, position 0, as HF builds them). */
static void long_batch_is_bit_identical_across_threads(void **state) {
    fixture *f = *state;
    enum { B = 2, S = 96, PAD = 7 };
    int64_t ids[B * S], pos[B * S], mask[B * S];
    const int64_t V = f->model.config.text.vocab_size;
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0; s < S; s++) {
            int64_t i = b * S + s;
            bool pad = b == 1 && s < PAD;
            ids[i] = pad ? 11 : (1 + 37 * s + 101 * b) % V;
            mask[i] = !pad;
            pos[i] = pad ? 0 : s - (b == 1 ? PAD : 0);
        }
    check_forward(f, ids, pos, mask, B, S);
}

/* Every component of a conformance run, at 1 and 3 threads: the comparison figures of each row
 * depend on every bit the backend produced, so they must be equal as doubles. */
static void check_conformance(const m4_conform_options *opt) {
    m4_report r1, r3;
    m4_error err = {{0}};
    set_threads(1);
    if (m4_conform_run(opt, &r1, &err) != 0) fail_msg("conform at 1 thread: %s", err.msg);
    set_threads(max_threads_tested());
    if (m4_conform_run(opt, &r3, &err) != 0) fail_msg("conform at %d threads: %s", max_threads_tested(), err.msg);
    assert_int_equal(r1.n, r3.n);
    assert_true(r1.n > 30);
    for (size_t i = 0; i < r1.n; i++) {
        const m4_result *a = &r1.results[i], *b = &r3.results[i];
        assert_string_equal(a->name, b->name);
        assert_int_equal(a->status, b->status);
        if (a->cmp.max_abs != b->cmp.max_abs || a->cmp.rel_l2 != b->cmp.rel_l2 ||
            a->cmp.cosine != b->cmp.cosine || a->topk_mismatches != b->topk_mismatches)
            fail_msg("%s: max abs %.9g / %.9g, rel L2 %.9g / %.9g at 1 / %d threads", a->name,
                     a->cmp.max_abs, b->cmp.max_abs, a->cmp.rel_l2, b->cmp.rel_l2, max_threads_tested());
    }
    m4_report_free(&r1);
    m4_report_free(&r3);
}

static void conformance_rows_are_identical_across_threads(void **state) {
    fixture *f = *state;
    m4_conform_options opt = {.golden_path = f->golden, .backend = &m4_backend_reference,
                              .model = &f->model};
    check_conformance(&opt);
}

/* The same on the multimodal case: the vision tower, projector and merge rows too. */
static void multimodal_rows_are_identical_across_threads(void **state) {
    (void)state;
    char *model = m4t_source_path("golden/cases/multimodal/model");
    char *golden = m4t_source_path("golden/cases/multimodal/multimodal.h5");
    m4_conform_options opt = {.model_dir = model, .golden_path = golden,
                              .backend = &m4_backend_reference};
    check_conformance(&opt);
    free(model);
    free(golden);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(golden_inputs_are_bit_identical_across_runs_and_threads),
        cmocka_unit_test(long_batch_is_bit_identical_across_threads),
        cmocka_unit_test(conformance_rows_are_identical_across_threads),
        cmocka_unit_test(multimodal_rows_are_identical_across_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
