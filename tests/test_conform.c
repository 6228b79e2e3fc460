/* The reference against every committed golden case through the harness (each component
 * teacher-forced, and end to end), and the harness against deliberately broken math: it must
 * catch the break and name the right component as the first divergence. */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conform.h"

typedef struct {
    m4_model model;
    char *model_dir, *golden;
    bool broken; /* a config field changed on purpose, standing for a bug in the math */
} golden_case;

static void open_case(const char *name, golden_case *c) {
    *c = (golden_case){0};
    char rel[256];
    snprintf(rel, sizeof rel, "golden/cases/%s/model", name);
    c->model_dir = m4t_source_path(rel);
    snprintf(rel, sizeof rel, "golden/cases/%s/%s.h5", name, name);
    c->golden = m4t_source_path(rel);
    m4_error err;
    if (m4_model_open(c->model_dir, &c->model, &err) != 0) fail_msg("%s", err.msg);
}

static void close_case(golden_case *c) {
    m4_model_close(&c->model);
    free(c->model_dir);
    free(c->golden);
}

static void run(golden_case *c, const char *only, m4_report *report) {
    m4_conform_options opt = {.model_dir = c->model_dir, .golden_path = c->golden,
                              .backend = &m4_backend_reference, .only = only, .model = &c->model,
                              .model_broken_on_purpose = c->broken};
    m4_error err;
    if (m4_conform_run(&opt, report, &err) != 0) fail_msg("%s", err.msg);
}

/* Every row passes, with the budgets of docs/ARCHITECTURE.md; an image case runs its vision path
 * (every vision and projector row, the merge) and `model` end to end from ids + pixels. */
static void check_case_passes(const char *name, int min_rows) {
    golden_case c;
    open_case(name, &c);
    m4_report r;
    run(&c, NULL, &r);
    for (size_t i = 0; i < r.n; i++) {
        const m4_result *x = &r.results[i];
        if (x->status != M4_RESULT_PASS)
            fail_msg("%s: %s %s: rel L2 %.3e (budget %.1e) %s", name, x->name,
                     m4_result_status_name(x->status), x->cmp.rel_l2, x->tolerance, x->message);
        if (x->topk_mismatches > 0) fail_msg("%s: %s: router sets differ", name, x->name);
    }
    assert_int_equal(r.first_divergence, -1);
    assert_true((int)r.n >= min_rows);
    /* the end-to-end logits are among the rows */
    const m4_result *e2e = NULL;
    for (size_t i = 0; i < r.n; i++)
        if (strcmp(r.results[i].name, "model") == 0 || strcmp(r.results[i].name, "text") == 0)
            if (r.results[i].status == M4_RESULT_PASS) e2e = &r.results[i];
    assert_non_null(e2e);
    assert_true(e2e->cmp.rel_l2 <= 1e-4);
    if (c.model.config.multimodal) { /* ids + pixels → logits, and the vision rows ran */
        const m4_result *model = NULL;
        int vision_rows = 0;
        for (size_t i = 0; i < r.n; i++) {
            if (strcmp(r.results[i].name, "model") == 0) model = &r.results[i];
            if (strncmp(r.results[i].name, "vision.", 7) == 0 || strncmp(r.results[i].name, "projector", 9) == 0 ||
                strcmp(r.results[i].name, "multimodal.merge") == 0)
                vision_rows++;
        }
        assert_non_null(model);
        assert_int_equal(model->status, M4_RESULT_PASS);
        assert_true(model->cmp.rel_l2 <= 1e-4);
        int64_t L = c.model.config.vision.num_hidden_layers;
        /* patch_conv, ln_pre, rope, 8 rows per layer, 6 projector rows, merge */
        assert_true(vision_rows >= 3 + 8 * L + 6 + 1);
    }
    m4_report_free(&r);
    close_case(&c);
}

static void text_tiny_passes(void **state) { check_case_passes("text_tiny", 38); }
static void long_positions_passes(void **state) { check_case_passes("long_positions", 38); }
static void routing_variants_passes(void **state) { check_case_passes("routing_variants", 38); }
static void multimodal_passes(void **state) { check_case_passes("multimodal", 60); }
static void fp8_passes(void **state) { check_case_passes("fp8", 60); }

/* Runs a case with one parameter broken and returns the first divergence's name. */
static void expect_first_divergence(const char *case_name, void (*breaker)(m4_config *),
                                    const char *expected) {
    golden_case c;
    open_case(case_name, &c);
    breaker(&c.model.config);
    c.broken = true;
    m4_report r;
    run(&c, NULL, &r);
    if (r.first_divergence < 0) fail_msg("%s: the broken parameter went unnoticed", case_name);
    assert_string_equal(r.results[r.first_divergence].name, expected);
    m4_report_free(&r);
    close_case(&c);
}

static void swap_rope_pairing(m4_config *cfg) { cfg->text.rope_interleave = !cfg->text.rope_interleave; }
static void drop_llama4_scale(m4_config *cfg) { cfg->text.rope.has_llama_4_scaling_beta = false; }
static void flip_norm_topk(m4_config *cfg) { cfg->text.norm_topk_prob = !cfg->text.norm_topk_prob; }
static void wrong_rms_eps(m4_config *cfg) { cfg->text.rms_norm_eps *= 1000; }

static void broken_rope_pairing_is_named(void **state) {
    expect_first_divergence("text_tiny", swap_rope_pairing, "text.layers.0.self_attn.q_rot");
}

static void dropped_llama4_scale_is_named(void **state) {
    expect_first_divergence("long_positions", drop_llama4_scale, "text.layers.0.self_attn.llama4_scale");
}

/* MODEL.md §7 trap 4: below original_max_position_embeddings the scale is exactly 1, so the
 * short case cannot see it — which is why the long_positions case exists. */
static void dropped_llama4_scale_is_invisible_at_short_positions(void **state) {
    golden_case c;
    open_case("text_tiny", &c);
    drop_llama4_scale(&c.model.config);
    c.broken = true;
    m4_report r;
    run(&c, "text.layers.0.self_attn*", &r);
    assert_int_equal(r.first_divergence, -1);
    m4_report_free(&r);
    close_case(&c);
}

static void broken_router_is_named(void **state) {
    /* routing_variants: layer 0 is dense (first_k_dense_replace = 1), so the first router is 1's */
    expect_first_divergence("routing_variants", flip_norm_topk, "text.layers.1.mlp.gate");
}

static void broken_norm_eps_is_named(void **state) {
    expect_first_divergence("text_tiny", wrong_rms_eps, "text.layers.0.input_layernorm");
}

/* The vision path's traps (MODEL.md §7): Pixtral's act is silu though the config default is gelu;
 * the 2-D RoPE frequencies; the projector norm takes the text eps. */
static void gelu_vision_act(m4_config *cfg) { cfg->vision.hidden_act = M4_ACT_GELU; }
static void wrong_vision_theta(m4_config *cfg) { cfg->vision.rope_theta *= 2; }
static void wrong_projector_eps(m4_config *cfg) { cfg->text.rms_norm_eps = 1.0; }

static void broken_vision_act_is_named(void **state) {
    expect_first_divergence("multimodal", gelu_vision_act, "vision.layers.0.feed_forward");
}

static void broken_vision_rope_is_named(void **state) {
    expect_first_divergence("multimodal", wrong_vision_theta, "vision.rope");
}

static void broken_projector_eps_is_named(void **state) {
    expect_first_divergence("fp8", wrong_projector_eps, "projector.norm");
}

/* The JSON report holds every row and the summary; the JUnit file is well-formed XML with one
 * testcase per row (xmllint validates it in tests/cli_tests.cmake too). */
static void reports_are_written_and_complete(void **state) {
    golden_case c;
    open_case("text_tiny", &c);
    m4_report r;
    run(&c, NULL, &r);
    char *dir = m4t_tempdir(), *json_path = m4t_join(dir, "r.json"), *xml_path = m4t_join(dir, "r.xml");
    m4_error err;
    assert_int_equal(m4_report_write_json(&r, json_path, &err), 0);
    assert_int_equal(m4_report_write_junit(&r, xml_path, &err), 0);
    json_error_t jerr;
    json_t *root = json_load_file(json_path, 0, &jerr);
    assert_non_null(root);
    assert_string_equal(json_string_value(json_object_get(root, "schema")), "mistral4-conform/1");
    assert_int_equal(json_array_size(json_object_get(root, "results")), r.n);
    json_t *summary = json_object_get(root, "summary");
    assert_int_equal(json_integer_value(json_object_get(summary, "passed")), r.n_pass);
    assert_true(json_is_null(json_object_get(summary, "first_divergence")));
    assert_true(json_is_null(json_object_get(root, "backend_paths"))); /* the reference has none */
    json_decref(root);
    FILE *f = fopen(xml_path, "r");
    assert_non_null(f);
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    size_t cases = 0;
    for (const char *p = buf; (p = strstr(p, "<testcase ")); p++) cases++;
    assert_int_equal(cases, r.n);
    m4t_assert_contains(buf, "<testsuites name=\"mistral4 conform\"");
    m4_report_free(&r);
    m4t_rmtree(dir);
    free(dir), free(json_path), free(xml_path);
    close_case(&c);
}

/* The report as m4_report_write_json writes it, read back (the caller json_decref's it). */
static json_t *written_json(const m4_report *r) {
    char *dir = m4t_tempdir(), *path = m4t_join(dir, "r.json");
    m4_error err;
    if (m4_report_write_json(r, path, &err) != 0) fail_msg("%s", err.msg);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) fail_msg("%s: %s", path, jerr.text);
    m4t_rmtree(dir);
    free(dir), free(path);
    return root;
}

/* The table as m4_report_print_table prints it (the caller frees it). */
static char *table_text(const m4_report *r) {
    FILE *f = tmpfile();
    assert_non_null(f);
    m4_report_print_table(r, f);
    const long size = ftell(f);
    rewind(f);
    char *text = calloc(1, (size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)size, f), size);
    fclose(f);
    return text;
}

/* A row whose output is all NaN reports NaN, not the perfect numbers of its (absent) finite
 * pairs: "NaN" in the table, null in the JSON, and FAIL (fault item 6 of issue #18). */
static void nan_row_reports_nan(void **state) {
    golden_case c;
    open_case("text_tiny", &c);
    c.model.config.text.rms_norm_eps = NAN; /* rsqrt(mean(x²) + NaN): every output is NaN */
    c.broken = true;
    m4_report r;
    run(&c, "text.layers.0.input_layernorm", &r);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.results[0].status, M4_RESULT_FAIL);
    json_t *root = written_json(&r);
    json_t *row = json_array_get(json_object_get(root, "results"), 0);
    for (const char *const *key = (const char *const[]){"max_abs", "rel_l2", "cosine", "budget_pct", NULL}; *key; key++)
        if (!json_is_null(json_object_get(row, *key))) fail_msg("JSON %s of an all-NaN row is not null", *key);
    assert_true(json_is_null(json_object_get(root, "warnings"))); /* none: null, not "" */
    json_decref(root);
    char *table = table_text(&r);
    const char *line = strstr(table, "text.layers.0.input_layernorm");
    assert_non_null(line);
    char row_text[512];
    snprintf(row_text, sizeof row_text, "%.*s", (int)strcspn(line, "\n"), line);
    free(table);
    if (!strstr(row_text, "NaN        NaN        NaN      NaN") || strstr(row_text, "1.0000000"))
        fail_msg("the table's row does not say NaN: %s", row_text);
    m4_report_free(&r);
    close_case(&c);
}

/* A backend's describe_paths reaches the report (backend_paths) and the table's first line. */
static void describe_paths_for_test(char *buf, size_t size, int table) {
    snprintf(buf, size, table ? "the whole table" : "flash on, graphs off");
}

static void backend_paths_are_reported(void **state) {
    golden_case c;
    open_case("text_tiny", &c);
    m4_backend described = m4_backend_reference;
    described.describe_paths = describe_paths_for_test;
    m4_conform_options opt = {.golden_path = c.golden, .backend = &described, .only = "text.norm", .model = &c.model};
    m4_report r;
    m4_error err = {{0}};
    if (m4_conform_run(&opt, &r, &err) != 0) fail_msg("%s", err.msg);
    assert_string_equal(r.backend_paths, "flash on, graphs off");
    json_t *root = written_json(&r);
    assert_string_equal(json_string_value(json_object_get(root, "backend_paths")), "flash on, graphs off");
    json_decref(root);
    char *table = table_text(&r);
    char line[256];
    snprintf(line, sizeof line, "%.*s", (int)strcspn(table, "\n") + 1, table);
    free(table);
    assert_string_equal(line, "ref paths: flash on, graphs off\n");
    m4_report_free(&r);
    close_case(&c);
}

/* The one name: the runner names each call (m4_backend.name_calls) with its report row's dotted
 * name, layer index included — what the CUDA backends name their NVTX ranges — and clears it after
 * the call. Every name given is a row of the report; every row that ran was named (a stage row of
 * the attention by its group's call). */
static char named[512][128];
static int n_named, n_cleared;
static void record_name(void *state, const char *component) {
    (void)state;
    if (!component) {
        n_cleared++;
        return;
    }
    assert_true(n_named < 512);
    snprintf(named[n_named++], sizeof named[0], "%s", component);
}

static void calls_are_named_by_their_rows(void **state) {
    golden_case c;
    open_case("multimodal", &c);
    m4_backend naming = m4_backend_reference;
    naming.name_calls = record_name;
    n_named = n_cleared = 0;
    m4_conform_options opt = {.golden_path = c.golden, .backend = &naming, .model = &c.model};
    m4_report r;
    m4_error err = {{0}};
    if (m4_conform_run(&opt, &r, &err) != 0) fail_msg("%s", err.msg);
    assert_true(n_named > 0);
    assert_int_equal(n_cleared, n_named);
    for (int i = 0; i < n_named; i++) {
        bool is_row = false;
        for (size_t k = 0; k < r.n && !is_row; k++) is_row = strcmp(named[i], r.results[k].name) == 0;
        if (!is_row) fail_msg("the call named \"%s\" is no row of the report", named[i]);
    }
    for (size_t k = 0; k < r.n; k++) {
        const char *row = r.results[k].name;
        bool covered = false;
        for (int i = 0; i < n_named && !covered; i++) {
            const size_t len = strlen(named[i]);
            covered = strcmp(row, named[i]) == 0 || (strncmp(row, named[i], len) == 0 && row[len] == '.');
        }
        if (!covered) fail_msg("row %s ran under no name", row);
    }
    bool layer_indexed = false;
    for (int i = 0; i < n_named; i++) layer_indexed |= strcmp(named[i], "text.layers.1.self_attn") == 0;
    assert_true(layer_indexed);
    m4_report_free(&r);
    close_case(&c);
}

/* The rotary-table rows are served by the backend's rope entries like every other row: a backend
 * without them reports NOT-IMPL there (before, the runner checked the reference's host table
 * whatever the backend, and reported it as the backend's PASS). */
static void rope_rows_are_the_backends(void **state) {
    golden_case c;
    open_case("multimodal", &c);
    m4_backend without_rope = m4_backend_reference;
    without_rope.rope = NULL, without_rope.vision_rope = NULL;
    m4_conform_options opt = {.golden_path = c.golden, .backend = &without_rope, .model = &c.model};
    m4_report r;
    m4_error err = {{0}};
    if (m4_conform_run(&opt, &r, &err) != 0) fail_msg("%s", err.msg);
    int rope_rows = 0;
    for (size_t i = 0; i < r.n; i++) {
        const m4_result *x = &r.results[i];
        size_t n = strlen(x->name);
        bool rope = n >= 5 && strcmp(x->name + n - 5, ".rope") == 0;
        assert_int_equal(x->status, rope ? M4_RESULT_NOT_IMPLEMENTED : M4_RESULT_PASS);
        rope_rows += rope;
    }
    assert_int_equal(rope_rows, 1 + c.model.config.text.num_hidden_layers); /* vision.rope + one per layer */
    assert_int_equal(r.n_not_implemented, rope_rows);
    m4_report_free(&r);
    close_case(&c);
}

/* A golden file made with another model is refused before any row (issue #18; before, every row
 * ran and failed from text.embed_tokens on), naming the differing fields with both values. */
static void mismatched_golden_is_refused(void **state) {
    golden_case c;
    open_case("routing_variants", &c);
    char *other = m4t_source_path("golden/cases/text_tiny/text_tiny.h5");
    m4_conform_options opt = {.golden_path = other, .backend = &m4_backend_reference, .model = &c.model};
    m4_report r;
    m4_error err = {{0}};
    assert_int_equal(m4_conform_run(&opt, &r, &err), -1);
    assert_int_equal(r.n, 0);
    m4t_assert_contains(err.msg, "text_tiny.h5 was made with num_hidden_layers = 2, the model has 3; "
                                 "n_shared_experts = 1, the model has 2; n_group = 1, the model has 4;");
    m4_report_free(&r);
    free(other);
    close_case(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(text_tiny_passes),
        cmocka_unit_test(long_positions_passes),
        cmocka_unit_test(routing_variants_passes),
        cmocka_unit_test(multimodal_passes),
        cmocka_unit_test(fp8_passes),
        cmocka_unit_test(broken_rope_pairing_is_named),
        cmocka_unit_test(dropped_llama4_scale_is_named),
        cmocka_unit_test(dropped_llama4_scale_is_invisible_at_short_positions),
        cmocka_unit_test(broken_router_is_named),
        cmocka_unit_test(broken_norm_eps_is_named),
        cmocka_unit_test(broken_vision_act_is_named),
        cmocka_unit_test(broken_vision_rope_is_named),
        cmocka_unit_test(broken_projector_eps_is_named),
        cmocka_unit_test(reports_are_written_and_complete),
        cmocka_unit_test(nan_row_reports_nan),
        cmocka_unit_test(mismatched_golden_is_refused),
        cmocka_unit_test(backend_paths_are_reported),
        cmocka_unit_test(calls_are_named_by_their_rows),
        cmocka_unit_test(rope_rows_are_the_backends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
