/* M4_CUDA_DISABLE's parser (optimized/kernels.cu, m4k_paths_parse): every named fast path switches
 * off alone and in lists, empty items are ignored, and an unknown name is an error that names it
 * and the known ones. Host code only: runs without a GPU. */
#include <string.h>

extern "C" {
#include "testutil.h"
}
#include "kernels.cuh"

static void all_on_by_default(void **state) {
    (void)state;
    m4k_paths p;
    m4_error err = {{0}};
    for (const char *list : {(const char *)nullptr, "", ","}) {
        assert_int_equal(m4k_paths_parse(list, &p, &err), 0);
        assert_true(p.flash && p.grouped && p.pairs && p.latent_tc && p.graphs && p.prompt_expand);
    }
}

static void each_name_switches_its_path(void **state) {
    (void)state;
    struct { const char *name; bool m4k_paths::*on; } cases[] = {
        {"flash", &m4k_paths::flash},         {"grouped", &m4k_paths::grouped}, {"pairs", &m4k_paths::pairs},
        {"latent_tc", &m4k_paths::latent_tc}, {"graphs", &m4k_paths::graphs}, {"prompt_expand", &m4k_paths::prompt_expand}};
    for (const auto &c : cases) {
        m4k_paths p;
        m4_error err = {{0}};
        assert_int_equal(m4k_paths_parse(c.name, &p, &err), 0);
        for (const auto &other : cases) assert_int_equal(p.*other.on, other.on != c.on);
    }
    m4k_paths p;
    m4_error err = {{0}};
    assert_int_equal(m4k_paths_parse("pairs,,graphs,", &p, &err), 0);
    assert_true(p.flash && p.grouped && !p.pairs && p.latent_tc && !p.graphs && p.prompt_expand);
}

static void unknown_names_are_errors(void **state) {
    (void)state;
    for (const char *list : {"flsh", "flash,bogus", "flash_", "Flash", "grouped graphs"}) {
        m4k_paths p;
        m4_error err = {{0}};
        assert_int_equal(m4k_paths_parse(list, &p, &err), -1);
        assert_non_null(strstr(err.msg, "M4_CUDA_DISABLE: unknown path"));
        assert_non_null(strstr(err.msg, "known: flash, grouped, pairs, latent_tc, graphs, prompt_expand"));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(all_on_by_default), cmocka_unit_test(each_name_switches_its_path),
                                       cmocka_unit_test(unknown_names_are_errors)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
