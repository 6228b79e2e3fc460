/* optimized/fp8_blocks.h — the FP8 scale layout the CUDA kernels and the upload share — on the
 * CPU: block counts, the scale index of an element against a direct [E][nbr][nbc] walk, and the
 * column-block shift the GEMV and grouped GEMM use instead of a division (equal to c / bc for
 * every column where it is defined; refused where it would be wrong). */
#include "testutil.h"

#include "../optimized/fp8_blocks.h"

static void block_counts(void **state) {
    (void)state;
    assert_int_equal(m4_fp8_blocks(200, 128), 2);
    assert_int_equal(m4_fp8_blocks(256, 128), 2);
    assert_int_equal(m4_fp8_blocks(257, 128), 3);
    assert_int_equal(m4_fp8_blocks(1, 128), 1);
    assert_int_equal(m4_fp8_blocks(4096, 4096), 1);          /* per tensor: one block */
    assert_int_equal(m4_fp8_blocks(INT64_C(1) << 40, 1), INT64_C(1) << 40);
}

/* The index against the array's own walk: experts, then row blocks, then column blocks. */
static void scale_index_walks_the_array(void **state) {
    (void)state;
    const int64_t shapes[][4] = {{200, 264, 128, 128}, {200, 272, 7, 16}, {61, 37, 7, 5}, {4096, 2048, 4096, 2048},
                                 {3, 1000, 1, 1000},   {128, 128, 128, 128}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const int64_t rows = shapes[i][0], cols = shapes[i][1], br = shapes[i][2], bc = shapes[i][3];
        const int64_t nbr = m4_fp8_blocks(rows, br), nbc = m4_fp8_blocks(cols, bc), E = 3;
        for (int64_t e = 0; e < E; e++)
            for (int64_t r = 0; r < rows; r += (rows > 300 ? 97 : 1))
                for (int64_t c = 0; c < cols; c += (cols > 300 ? 89 : 1)) {
                    int64_t want = 0, rb = 0, cb = 0;
                    while ((rb + 1) * br <= r) rb++;
                    while ((cb + 1) * bc <= c) cb++;
                    want = (e * nbr + rb) * nbc + cb;
                    assert_int_equal(m4_fp8_scale_index(e, r, c, rows, cols, br, bc), want);
                    assert_true(want < E * nbr * nbc);
                }
    }
}

static void col_shift_matches_division(void **state) {
    (void)state;
    /* {cols, block_cols, step, defined} */
    const int64_t cases[][4] = {
        {4096, 4096, 16, 1}, {4096, 8192, 32, 1}, {264, 264, 16, 1}, /* one block over the width */
        {272, 128, 16, 1},   {272, 128, 32, 1},   {4096, 16, 16, 1}, {4096, 32, 32, 1}, {2048, 1024, 32, 1},
        {272, 16, 32, 0},    {272, 96, 16, 0},    {272, 40, 8, 0},   {272, 8, 16, 0},   {0, 16, 16, 0},
        {16, 0, 16, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const int64_t cols = cases[i][0], bc = cases[i][1], step = cases[i][2];
        const int s = m4_fp8_col_shift(cols, bc, step);
        if (!cases[i][3]) {
            assert_int_equal(s, -1);
            continue;
        }
        assert_true(s >= 0 && s <= 62);
        for (int64_t c = 0; c < cols; c++) assert_int_equal(c >> s, c / bc);
        /* a kernel step of `step` columns starting at a multiple of step stays in one block */
        for (int64_t c = 0; c + step <= cols; c += step) assert_int_equal(c >> s, (c + step - 1) >> s);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(block_counts),
        cmocka_unit_test(scale_index_walks_the_array),
        cmocka_unit_test(col_shift_matches_division),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
