/* Weights that share an input run as one only when the upload stacked them as a pair
 * (m4_cuda_weight_pair, optimized/cuda_model.cu): the first flagged paired_with_next, the second's
 * data right after the first's, same width and element type, neither FP8 nor an expert stack; two
 * weights that merely lie back to back (two cudaMallocs can) are not a pair. Host code only (the device pointers
 * are never dereferenced): runs without a GPU. */
#include <cuda_bf16.h>

extern "C" {
#include "testutil.h"
}
#include "cuda_model.cuh"

/* A weight as upload_fused leaves the first of a pair (flagged) */
static m4_dev_weight weight(void *data, int64_t rows, int64_t cols, bool bf16) {
    m4_dev_weight w;
    w.data = data, w.rows = rows, w.cols = cols, w.bf16 = bf16, w.paired_with_next = true;
    return w;
}

static void side_by_side_pairs_up(void **state) {
    (void)state;
    static __nv_bfloat16 storage[(24 + 10) * 16];
    const m4_dev_weight q_a = weight(storage, 24, 16, true), kv_a = weight(storage + 24 * 16, 10, 16, true);
    m4_dev_weight both;
    assert_true(m4_cuda_weight_pair(q_a, kv_a, &both));
    assert_ptr_equal(both.data, storage);
    assert_int_equal(both.rows, 34);
    assert_int_equal(both.cols, 16);
    assert_true(both.bf16 && !both.fp8 && !both.owner);
    static float f32[(3 + 5) * 8];                       /* float32 elements are 4 bytes apart */
    assert_true(m4_cuda_weight_pair(weight(f32, 3, 8, false), weight(f32 + 3 * 8, 5, 8, false), &both));
    assert_int_equal(both.rows, 8);
}

static void anything_else_does_not(void **state) {
    (void)state;
    static __nv_bfloat16 storage[64 * 16];
    m4_dev_weight both;
    const m4_dev_weight a = weight(storage, 8, 16, true);
    /* a gap, the wrong order, another width, another element type */
    assert_false(m4_cuda_weight_pair(a, weight(storage + 9 * 16, 8, 16, true), &both));
    assert_false(m4_cuda_weight_pair(weight(storage + 8 * 16, 8, 16, true), a, &both));
    assert_false(m4_cuda_weight_pair(a, weight(storage + 8 * 16, 8, 8, true), &both));
    assert_false(m4_cuda_weight_pair(a, weight(storage + 8 * 16, 4, 16, false), &both));
    /* back to back in memory but not stacked by the upload (switch `pairs` off, or two allocations) */
    m4_dev_weight lone = a;
    lone.paired_with_next = false;
    assert_false(m4_cuda_weight_pair(lone, weight(storage + 8 * 16, 8, 16, true), &both));
    /* FP8 (scales of their own) and expert stacks stay apart */
    m4_dev_weight fp8 = weight(storage, 8, 16, false), next = weight(reinterpret_cast<char *>(storage) + 8 * 16, 8, 16, false);
    fp8.fp8 = next.fp8 = true;
    assert_false(m4_cuda_weight_pair(fp8, next, &both));
    m4_dev_weight stack = a;
    stack.experts = 2;
    assert_false(m4_cuda_weight_pair(stack, weight(storage + 2 * 8 * 16, 8, 16, true), &both));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(side_by_side_pairs_up), cmocka_unit_test(anything_else_does_not)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
