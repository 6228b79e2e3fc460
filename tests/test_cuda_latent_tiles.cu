/* The tensor-core latent attention's partition of the key tiles among its splits
 * (m4k_latent_split_tiles, kernels/latent_attention.cuh), which the kernel reads from the device
 * length at every decode step: for every query, the splits together read each causally visible tile exactly once
 * and nothing past the query's causal end — at lengths from one key to many tiles, decode (S = 1)
 * and prompts, with more splits than tiles (the launch is sized from the capacity). Host code
 * only: runs without a GPU. */
#include <vector>

extern "C" {
#include "testutil.h"
}
#include "kernels/latent_attention.cuh"

static void every_visible_tile_read_once(void **state) {
    (void)state;
    const int64_t pasts[] = {0, 1, 63, 64, 65, 1000, 4095, 131071};
    const int64_t lengths[] = {1, 2, 63, 64, 129, 200};
    const int64_t split_counts[] = {1, 2, 3, 7, 132, 2048};
    int64_t checked = 0;
    for (int64_t past : pasts)
        for (int64_t S : lengths)
            for (int64_t splits : split_counts)
                for (int64_t i = 0; i < S; i += S > 8 ? S / 8 : 1) {
                    const int64_t visible = (past + i + 1 + M4_CUDA_KEY_TILE - 1) / M4_CUDA_KEY_TILE;
                    std::vector<int> reads((size_t)visible + 1, 0);
                    for (int64_t split = 0; split < splits; split++) {
                        const m4k_tile_range r = m4k_latent_split_tiles(past, S, i, split, splits);
                        for (int64_t t = r.first; t < r.last; t++) {
                            assert_true(t >= 0);
                            assert_true(t < visible);            /* never past the causal end */
                            reads[(size_t)t]++;
                        }
                    }
                    for (int64_t t = 0; t < visible; t++) assert_int_equal(reads[(size_t)t], 1);
                    checked++;
                }
    assert_true(checked > 1000);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(every_visible_tile_read_once)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
