/* The component registry (harness/registry.c) as the runner reads it: every row names the
 * dataset it compares among its outputs, a backend call the reference serves, and shapes for all
 * its datasets; the vision flag is the row's own (the vision path by name, whatever the enum
 * order); the rows of one shared call (the attention and its stages) declare the same call. */
#include "testutil.h"

#include <string.h>

#include "backend.h"
#include "calls.h"
#include "registry.h"

static bool on_vision_path(const char *name) {
    return strncmp(name, "vision", 6) == 0 || strncmp(name, "projector", 9) == 0 ||
           strcmp(name, "multimodal.merge") == 0;
}

static bool reference_serves(size_t entry) {
    void (*fn)(void);
    memcpy(&fn, (const char *)&m4_backend_reference + entry, sizeof fn);
    return fn != NULL;
}

static void every_row_is_complete(void **state) {
    for (size_t r = 0; r < m4_component_count; r++) {
        const m4_component *comp = &m4_components[r];
        assert_non_null(comp->call);
        assert_non_null(comp->cost);
        assert_true(comp->call->entry > 0 && reference_serves(comp->call->entry));
        if (comp->call->entry_with_images) assert_true(reference_serves(comp->call->entry_with_images));
        bool compared = false;
        for (int k = 0; k < M4_MAX_OUTPUTS && comp->out[k].name; k++) {
            assert_non_null(comp->out[k].shape);
            assert_non_null(comp->out[k].shape_text); /* --list-datasets prints it */
            compared |= strcmp(comp->out[k].name, comp->dataset) == 0;
        }
        if (!compared) fail_msg("%s compares \"%s\", which is not among its outputs", comp->name, comp->dataset);
        for (int k = 0; k < M4_MAX_INPUTS && comp->in[k].name; k++) assert_non_null(comp->in[k].shape);
        /* the row's dataset is never optional: without it the row does not run */
        for (int k = 0; k < M4_MAX_OUTPUTS && comp->out[k].name; k++)
            if (strcmp(comp->out[k].name, comp->dataset) == 0 && !comp->call->shared) assert_false(comp->out[k].optional);
    }
}

static void vision_flag_follows_the_name(void **state) {
    int vision = 0;
    for (size_t r = 0; r < m4_component_count; r++) {
        const m4_component *comp = &m4_components[r];
        if (m4_component_is_vision(comp) != on_vision_path(comp->name))
            fail_msg("%s: vision is %d", comp->name, (int)m4_component_is_vision(comp));
        vision += comp->vision;
    }
    assert_true(vision >= 19);
}

/* A shared call's rows sit together and declare the same group and outputs, so the runner can
 * make the call once for all of them; exactly one of them (its `out`) reports time and work. */
static void shared_calls_are_declared_alike(void **state) {
    int shared_groups = 0;
    for (size_t r = 0; r < m4_component_count; r++) {
        const m4_component *first = &m4_components[r];
        if (!first->call->shared || (r > 0 && m4_components[r - 1].call == first->call)) continue;
        shared_groups++;
        int primaries = 0;
        size_t e = r;
        for (; e < m4_component_count && m4_components[e].call == first->call; e++) {
            const m4_component *comp = &m4_components[e];
            assert_string_equal(comp->group, first->group);
            for (int k = 0; k < M4_MAX_OUTPUTS; k++) {
                assert_true((comp->out[k].name == NULL) == (first->out[k].name == NULL));
                if (comp->out[k].name) assert_string_equal(comp->out[k].name, first->out[k].name);
            }
            primaries += strcmp(comp->dataset, comp->out[0].name) == 0;
        }
        assert_int_equal(primaries, 1);
        for (; e < m4_component_count; e++) assert_ptr_not_equal(m4_components[e].call, first->call);
    }
    assert_int_equal(shared_groups, 2); /* self_attn, vision attention */
}

/* In a candidate file (docs/CANDIDATE-LAYOUT.md) every row reads its compared dataset from a
 * place of its own: two rows on one dataset (`text` and `model` share the golden's logits) could
 * not be told apart. */
static void candidate_rows_have_datasets_of_their_own(void **state) {
    (void)state;
    for (size_t r = 0; r < m4_component_count; r++)
        for (size_t q = 0; q < r; q++) {
            const m4_component *a = &m4_components[r], *b = &m4_components[q];
            if (strcmp(m4_component_candidate_group(a), m4_component_candidate_group(b)) == 0 &&
                strcmp(a->dataset, b->dataset) == 0)
                fail_msg("rows %s and %s both read %s/%s from a candidate", a->name, b->name,
                         m4_component_candidate_group(a), a->dataset);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_row_is_complete),
        cmocka_unit_test(vision_flag_follows_the_name),
        cmocka_unit_test(shared_calls_are_declared_alike),
        cmocka_unit_test(candidate_rows_have_datasets_of_their_own),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
