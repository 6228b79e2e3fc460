/* The CUDA fast paths' table and switches (optimized/paths.h): the defaults are exactly the proven
 * paths, and a proof in the table is exactly what the committed GPU results hold — the newest
 * bench/results/*.json of scripts/gpu-check (schema mistral4-gpu-check/2) that gives a path a
 * verdict decides it, and a table row that claims a proof must name that file and its commit.
 * Then M4_CUDA_ENABLE / M4_CUDA_DISABLE: names alone and in lists, `all`, empty items, and unknown
 * names named with their variable. Host code only: runs without a GPU. */
#include <dirent.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <vector>

extern "C" {
#include "testutil.h"
}
#include "paths.h"

static void defaults_are_the_proven_paths(void **state) {
    (void)state;
    const m4_cuda_paths d = m4_cuda_paths_default();
    for (int i = 0; i < M4_PATH_COUNT; i++) {
        const m4_cuda_path_info &r = m4_cuda_path_table[i];
        assert_non_null(r.name), assert_non_null(r.fast), assert_non_null(r.twin);
        if (d.on[i] != (r.proof != nullptr)) fail_msg("%s: on by default %d, proven %d", r.name, d.on[i], r.proof != nullptr);
        assert_true((r.proof == nullptr) == (r.proof_commit == nullptr));
    }
}

/* The committed gpu-check results, oldest first (their names start with the date). */
static std::string results_dir(void) {
    char *path = m4t_source_path("bench/results/");
    const std::string dir = path;
    free(path);
    return dir;
}

static std::vector<std::string> gpu_results(void) {
    const std::string dir = results_dir();
    std::vector<std::string> files;
    DIR *d = opendir(dir.c_str());
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) {
        const std::string name = e->d_name;
        if (name.size() > 9 && name.compare(name.size() - 9, 9, "-gpu.json") == 0) files.push_back(name);
    }
    closedir(d);
    std::sort(files.begin(), files.end());
    return files;
}

static void proofs_are_the_committed_results(void **state) {
    (void)state;
    const std::string dir = results_dir();
    for (int i = 0; i < M4_PATH_COUNT; i++) {
        const m4_cuda_path_info &r = m4_cuda_path_table[i];
        std::string newest_file, newest_verdict, newest_commit;
        for (const std::string &file : gpu_results()) {
            json_error_t jerr;
            json_t *root = json_load_file((dir + file).c_str(), 0, &jerr);
            if (!root) fail_msg("%s: %s", file.c_str(), jerr.text);
            const char *schema = json_string_value(json_object_get(root, "schema"));
            json_t *verdict = json_object_get(json_object_get(json_object_get(root, "paths"), r.name), "verdict");
            if (schema && strcmp(schema, "mistral4-gpu-check/2") == 0 && json_is_string(verdict)) {
                newest_file = file, newest_verdict = json_string_value(verdict);
                const char *commit = json_string_value(json_object_get(root, "commit"));
                newest_commit = commit ? commit : "";
            }
            json_decref(root);
        }
        const bool proven = newest_verdict == "proven";
        if (proven != (r.proof != nullptr))
            fail_msg("%s: the table says %s, the newest committed GPU result with a verdict for it (%s) says '%s'", r.name,
                     r.proof ? "proven" : "unproven", newest_file.empty() ? "none" : newest_file.c_str(),
                     newest_verdict.c_str());
        if (proven) {
            if ("bench/results/" + newest_file != r.proof)
                fail_msg("%s: proof names %s, the proving result is bench/results/%s", r.name, r.proof, newest_file.c_str());
            if (newest_commit != r.proof_commit)
                fail_msg("%s: proof commit %s, the result measured %s", r.name, r.proof_commit, newest_commit.c_str());
        }
    }
}

static void enable_then_disable(void **state) {
    (void)state;
    m4_error err = {{0}};
    m4_cuda_paths p;
    assert_int_equal(m4_cuda_paths_parse("all", NULL, &p, &err), 0);
    for (int i = 0; i < M4_PATH_COUNT; i++) assert_true(p.on[i]);
    assert_int_equal(m4_cuda_paths_parse("all", "all", &p, &err), 0);
    for (int i = 0; i < M4_PATH_COUNT; i++) assert_false(p.on[i]);
    const m4_cuda_paths d = m4_cuda_paths_default();
    for (int i = 0; i < M4_PATH_COUNT; i++) {                 /* each alone, on top of the defaults */
        const char *name = m4_cuda_path_table[i].name;
        assert_int_equal(m4_cuda_paths_parse(name, NULL, &p, &err), 0);
        for (int j = 0; j < M4_PATH_COUNT; j++) assert_int_equal(p.on[j], j == i ? true : d.on[j]);
        assert_int_equal(m4_cuda_paths_parse("all", name, &p, &err), 0);
        for (int j = 0; j < M4_PATH_COUNT; j++) assert_int_equal(p.on[j], j != i);
    }
    assert_int_equal(m4_cuda_paths_parse(",flash,,graphs,", "", &p, &err), 0);   /* empty items ignored */
    assert_true(p.on[M4_PATH_FLASH] && p.on[M4_PATH_GRAPHS]);
    char list[256];
    m4_cuda_paths_list_on(&p, list, sizeof list);
    assert_non_null(strstr(list, "flash")), assert_non_null(strstr(list, "graphs"));
    assert_int_equal(m4_cuda_paths_parse("", "all", &p, &err), 0);
    m4_cuda_paths_list_on(&p, list, sizeof list);
    assert_string_equal(list, "none");
}

static void unknown_names_are_errors(void **state) {
    (void)state;
    struct { const char *enable, *disable, *variable, *name; } cases[] = {
        {"flash,flsh", NULL, "M4_CUDA_ENABLE", "'flsh'"}, {NULL, "everything", "M4_CUDA_DISABLE", "'everything'"},
        {"grouped", "pairs,Flash", "M4_CUDA_DISABLE", "'Flash'"}};
    for (auto &c : cases) {
        m4_error err = {{0}};
        m4_cuda_paths p;
        assert_int_equal(m4_cuda_paths_parse(c.enable, c.disable, &p, &err), -1);
        assert_non_null(strstr(err.msg, c.variable)), assert_non_null(strstr(err.msg, c.name));
        assert_non_null(strstr(err.msg, "latent_tc"));       /* the known names are listed */
    }
}

static void describe_names_every_path(void **state) {
    (void)state;
    const m4_cuda_paths d = m4_cuda_paths_default();
    const size_t need = m4_cuda_paths_describe(&d, NULL, 0);
    std::vector<char> text(need + 1);
    assert_int_equal(m4_cuda_paths_describe(&d, text.data(), text.size()), need);
    assert_int_equal(strlen(text.data()), need);
    for (int i = 0; i < M4_PATH_COUNT; i++) {
        assert_non_null(strstr(text.data(), m4_cuda_path_table[i].name));
        assert_non_null(strstr(text.data(), m4_cuda_path_table[i].twin));
    }
    char small[16];
    assert_int_equal(m4_cuda_paths_describe(&d, small, sizeof small), need);   /* truncated, terminated */
    assert_int_equal(strlen(small), sizeof small - 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_are_the_proven_paths), cmocka_unit_test(proofs_are_the_committed_results),
        cmocka_unit_test(enable_then_disable), cmocka_unit_test(unknown_names_are_errors),
        cmocka_unit_test(describe_names_every_path)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
