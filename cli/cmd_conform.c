/* cmd_conform.c — `mistral4 conform`: runs a backend against golden Hugging Face activations and
 * prints, for every component, how far it is from HF and where error starts. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "backend.h"
#include "conform.h"
#include "files.h"
#include "plugin_backend.h"
#include "registry.h"

#define CMD "conform"

/* The backends built into this binary, comma-separated (cli.h). */
const char *cli_backend_list(void) {
    static char list[128];
    list[0] = '\0';
    for (const m4_backend *const *b = m4_backend_list(); *b; b++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "", (*b)->name);
    return list;
}

/* One line for each bundled golden case (golden/README.md has the details). */
static const struct {
    const char *name, *what;
} case_lines[] = {
    {"text_tiny", "text model: MLA, YaRN, 16-expert top-4 MoE; a batch of 2, one row left-padded"},
    {"long_positions", "text_tiny's model at positions up to 1005: YaRN and the Llama-4 query scale"},
    {"routing_variants", "3 layers: a dense first layer, group-limited routing, 2 shared experts"},
    {"multimodal", "Pixtral vision tower + projector + text model, two images (RGB and RGBA PNG)"},
    {"fp8", "the published FP8 layout (F8_E4M3 weights + scales) with one image"},
    {"preprocess", "images only, no model: HF's image processor (tests/test_image.c checks it;\n"
                   "                    `mistral4 preprocess IMAGE...` shows what the vision path is fed)"},
};

/* The bundled golden cases' folder in `buf`: beside an installed command (M4_CASES_FROM_BIN,
 * relative to the binary's folder: <prefix>/share/mistral4/cases, which `cmake --install` writes),
 * else in the source tree the binary was built from (M4_SOURCE_DIR/golden/cases). NULL when
 * neither exists (an installed binary whose cases were removed, a build whose source moved). */
static const char *bundled_cases_dir(char *buf, size_t size) {
    char exe[4096], candidate[4200];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        snprintf(candidate, sizeof candidate, "%s/%s", exe, M4_CASES_FROM_BIN);
        if (cli_has_folder(candidate, ".") && realpath(candidate, buf)) return buf; /* buf: PATH_MAX */
    }
    snprintf(buf, size, "%s/golden/cases", M4_SOURCE_DIR);
    return cli_has_folder(buf, ".") ? buf : NULL;
}

static int only_folders(const struct dirent *e) { return e->d_name[0] != '.'; }

/* The bundled cases, one line each, found at run time (bundled_cases_dir). */
static void print_bundled_cases(void) {
    char dir[4200];
    struct dirent **names = NULL;
    int n = bundled_cases_dir(dir, sizeof dir) ? scandir(dir, &names, only_folders, alphasort) : -1;
    if (n < 0) {
        printf("\nBundled cases: not found (looked beside this binary and in %s/golden/cases).\n", M4_SOURCE_DIR);
        return;
    }
    printf("\nBundled cases (--case %s/NAME):\n", dir);
    for (int i = 0; i < n; i++) {
        if (cli_has_folder(dir, names[i]->d_name)) {
            const char *what = "(no description: not one of the cases this binary was built with)";
            for (size_t k = 0; k < sizeof case_lines / sizeof *case_lines; k++)
                if (strcmp(case_lines[k].name, names[i]->d_name) == 0) what = case_lines[k].what;
            printf("  %-17s %s\n", names[i]->d_name, what);
        }
        free(names[i]);
    }
    free(names);
}

static void print_help(void) {
    printf(
        "Usage: mistral4 conform --case DIR [options]\n"
        "       mistral4 conform --model DIR --golden FILE.h5 [options]\n"
        "       mistral4 conform --golden FILE.h5 --candidate THEIRS.h5 [options]\n"
        "       mistral4 conform --list-datasets\n"
        "\n"
        "Checks an implementation of Mistral 4 against golden activations produced by Hugging Face\n"
        "transformers (golden/README.md). Every component of the registry that the golden file\n"
        "holds is run teacher-forced (its inputs are HF's own, so an error cannot hide behind an\n"
        "earlier one), then the whole model end to end. Each row reports max abs error, relative\n"
        "L2 error, cosine similarity, the share of the error budget used, and the wall time of the\n"
        "backend call (for the CUDA backends also its device time, CUDA events around the\n"
        "component's kernels: \"dev ms\"); router rows also compare the top-k expert sets. The\n"
        "first failing row in model order is named as the first divergence.\n"
        "\n"
        "Options:\n"
        "  --case DIR        a golden case folder: DIR/model/ (checkpoint) and DIR/<name>.h5\n"
        "  --model DIR       the checkpoint the golden file was made with (config.json + safetensors)\n"
        "  --golden FILE     the golden HDF5 file\n"
        "  --backend NAME    implementation to check (default: ref; built here: %s)\n"
        "  --backend plugin:PATH.so\n"
        "                    an outside implementation built against <mistral4/plugin.h>\n"
        "                    (docs/PLUGINS.md): the components it declares are run, the rest\n"
        "                    reported as not implemented\n"
        "  --candidate FILE  instead of a backend: compare the activations another engine dumped in\n"
        "                    the golden layout (docs/CANDIDATE-LAYOUT.md), teacher-forced on the\n"
        "                    golden's inputs; rows the file lacks are NOT-IMPL. Needs --golden (or\n"
        "                    --case); the config comes from the golden\n"
        "  --list-datasets   print the datasets a candidate file holds per row (markdown) and exit\n"
        "  --only GLOB       only components whose name matches GLOB (e.g. 'text.layers.1.*')\n"
        "  --bf16            use the bf16 error budgets (relative L2 2e-2, cosine 0.999) instead of\n"
        "                    float32's (the default for cuda-bf16)\n"
        "  --report FILE     also write a JSON report (schema mistral4-conform/1; NaN metrics are null)\n"
        "  --junit FILE      also write a JUnit XML report (one testcase per component)\n"
        "                    (the folders of both must exist and be writable: checked before any row runs)\n"
        "  --quiet           print only the summary lines\n"
        "  --progress        show progress on stderr: on a terminal one line rewritten in place\n"
        "                    (\"[12/66] text.layers.1.mlp\", the default there), else one line per\n"
        "                    component as it finishes\n"
        "  --no-progress     no progress (the default when stderr is not a terminal)\n"
        "  --no-legend       no legend under the table\n"
        "  -h, --help        show this help\n"
        "\n"
        "Budgets (docs/ARCHITECTURE.md): float32 relative L2 <= 1e-5 per component, <= 1e-4 for the\n"
        "end-to-end logits; router top-k sets identical; NaN never passes.\n"
        "The MLA softmax scale rule (base or mscale2) is read from the golden file (MODEL.md §0.1).\n"
        "\n"
        "Examples:\n"
        "  mistral4 conform --case golden/cases/text_tiny\n"
        "  mistral4 conform --case golden/cases/long_positions --only 'text.layers.*.self_attn*'\n"
        "  mistral4 conform --case golden/cases/fp8 --report build/fp8.json --junit build/fp8.xml\n"
        "  mistral4 conform --case golden/cases/multimodal --backend cuda-bf16   (on a GPU)\n"
        "  mistral4 conform --golden golden/cases/text_tiny/text_tiny.h5 --candidate theirs.h5\n"
        "\n"
        "Exit status: 0 every row passed (rows the backend does not implement are reported, not\n"
        "failed), 1 a row failed or errored, the inputs could not be read or an output cannot be\n"
        "written, 2 usage error.\n",
        cli_backend_list());
    print_bundled_cases();
}

typedef struct {
    char *buf;
    size_t size;
} path_buffer;

static void keep_path(const char *path, double bytes, void *out) {
    path_buffer *b = out;
    snprintf(b->buf, b->size, "%s", path);
}

/* How many PNG and JPEG files (by name) `dir` holds. */
static int count_images(const char *dir) {
    const char *const kinds[] = {".png", ".jpg", ".jpeg"};
    int n = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        int found = cli_files_ending(dir, kinds[k], NULL, NULL);
        if (found > 0) n += found;
    }
    return n;
}

/* Finds DIR/<name>.h5 and DIR/model for --case; CLI_OK, or CLI_FAILED with a message saying what
 * DIR is instead (missing, not a folder, the image-only preprocess case, something else). */
static int resolve_case(const char *dir, char *model, size_t model_size, char *golden, size_t golden_size) {
    struct stat st;
    if (stat(dir, &st) != 0) {
        cli_error(CMD, "--case %s: %s", dir, errno == ENOENT ? "no such folder" : strerror(errno));
        return CLI_FAILED;
    }
    if (!S_ISDIR(st.st_mode)) {
        cli_error(CMD, "--case %s: not a folder (a golden case is a folder: model/ and one .h5 file)", dir);
        return CLI_FAILED;
    }
    snprintf(model, model_size, "%s/model", dir);
    path_buffer found = {golden, golden_size};
    const int goldens = cli_files_ending(dir, ".h5", keep_path, &found);
    if (goldens == 1 && cli_has_folder(dir, "model")) return CLI_OK;
    if (goldens == 1 && count_images(dir) > 0)
        cli_error(CMD, "--case %s: an image-preprocessing case (images and %s, no model/): it checks HF's "
                       "image processor, not a model, so conform has nothing to run. tests/test_image.c "
                       "compares it; `mistral4 preprocess IMAGE...` shows what the vision path is fed",
                  dir, strrchr(golden, '/') + 1);
    else
        cli_error(CMD, "--case %s: not a golden case folder (expected model/ and exactly one .h5 file; "
                       "found %s model/ and %d .h5 files)",
                  dir, cli_has_folder(dir, "model") ? "a" : "no", goldens < 0 ? 0 : goldens);
    return CLI_FAILED;
}

/* A shape formula as the registry writes it ("d->B * d->S, t->hidden_size") in the layout's words:
 * case sizes bare, text_config fields bare, vision_config fields as vision.NAME. */
static void print_formula(const char *text, FILE *out) {
    for (const char *p = text; *p;) {
        if (strncmp(p, "d->", 3) == 0 || strncmp(p, "t->", 3) == 0) p += 3;
        else if (strncmp(p, "v->", 3) == 0) fputs("vision.", out), p += 3;
        else fputc(*p++, out);
    }
}

/* The candidate layout, one line per dataset a candidate file holds for a row
 * (m4_component_candidate_output): docs/CANDIDATE-LAYOUT.md holds this output. */
static void print_datasets(FILE *out) {
    fprintf(out, "| row | dataset | dtype | shape | cases |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < m4_component_count; i++) {
        const m4_component *comp = &m4_components[i];
        for (int k = 0; k < M4_MAX_OUTPUTS && comp->out[k].name; k++) {
            if (!m4_component_candidate_output(comp, k)) continue;
            const m4_dataset *ds = &comp->out[k];
            fprintf(out, "| `%s` | `%s/%s` | %s | [", comp->name, m4_component_candidate_group(comp), ds->name,
                    ds->ids ? "int64" : "float32");
            print_formula(ds->shape_text, out);
            fprintf(out, "] | %s |\n", comp->vision || comp->images_only ? "with images" : "all");
        }
    }
}

/* How progress is shown on stderr. */
typedef enum {
    PROGRESS_NONE,
    PROGRESS_LINE,   /* a terminal: one line rewritten in place, cleared before the table */
    PROGRESS_LINES,  /* not a terminal (--progress): one line per row */
} progress_mode;

static void print_progress(const m4_result *r, size_t done, size_t total, void *user) {
    const progress_mode *mode = user;
    if (*mode == PROGRESS_LINE) {
        fprintf(stderr, "\r\033[K[%zu/%zu] %s", done, total, r->name); /* \033[K: clear to the line's end */
        fflush(stderr);
    } else {
        fprintf(stderr, "[%zu/%zu] %-48s %s\n", done, total, r->name, m4_result_status_name(r->status));
    }
}

/* What the table's columns and summary mean, under the table (--no-legend leaves it out); the
 * lines about stage rows and NaN only where the table has such a row. */
static void print_legend(const m4_report *r, bool bf16) {
    bool stages = false, nan = false;
    for (size_t i = 0; i < r->n; i++) stages |= r->results[i].stage, nan |= isnan(r->results[i].cmp.rel_l2);
    printf("budget%%: rel L2 as a share of the row's budget (%s); over 100 fails.\n",
           bf16 ? "bf16: 2e-2, and cosine >= 0.999" : "float32: 1e-5 per component, 1e-4 end to end");
    if (stages)
        printf("Blank time: a stage row, an intermediate output of a call that computes several (e.g. "
               "self_attn's q_rot), timed on that call's own row.\n");
    if (nan) printf("NaN: the output held NaN or Inf where HF's did not; it has no distance to HF and fails.\n");
    printf("softmax scale %s: the MLA scale rule the golden was made with (base: the model's; mscale2: "
           "transformers 5.24's; docs/MODEL.md §0.1).\n", r->scale_rule);
}

/* Writes the report with `writer` to `path`, then "wrote PATH" (as `preprocess` says; not with
 * --quiet); CLI_FAILED with the writer's message when it failed. */
static int write_report(int (*writer)(const m4_report *r, const char *path, m4_error *err), const m4_report *report,
                        const char *path, bool quiet) {
    m4_error err = {{0}};
    if (writer(report, path, &err) != 0) {
        cli_error(CMD, "%s", err.msg);
        return CLI_FAILED;
    }
    if (!quiet) printf("wrote %s\n", path);
    return CLI_OK;
}

int cmd_conform(int argc, char **argv) {
    const char *case_dir = NULL, *model = NULL, *golden = NULL, *backend_name = NULL, *only = NULL;
    const char *report_path = NULL, *junit_path = NULL, *candidate = NULL;
    bool bf16 = false, quiet = false, legend = true, progress_asked = false, no_progress = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
#define VALUE(opt, var)                                                                            \
    if (strcmp(a, opt) == 0) {                                                                     \
        if (!has_value) return cli_usage_error(CMD, "%s needs a value", opt);                     \
        var = argv[++i];                                                                           \
        continue;                                                                                  \
    }
        if (cli_is_help(a)) {
            print_help();
            return CLI_OK;
        }
        VALUE("--case", case_dir)
        VALUE("--model", model)
        VALUE("--golden", golden)
        VALUE("--backend", backend_name)
        VALUE("--only", only)
        VALUE("--report", report_path)
        VALUE("--junit", junit_path)
        VALUE("--candidate", candidate)
#undef VALUE
        if (strcmp(a, "--list-datasets") == 0) {
            print_datasets(stdout);
            return CLI_OK;
        }
        if (strcmp(a, "--bf16") == 0) bf16 = true;
        else if (strcmp(a, "--quiet") == 0) quiet = true;
        else if (strcmp(a, "--progress") == 0) progress_asked = true;
        else if (strcmp(a, "--no-progress") == 0) no_progress = true;
        else if (strcmp(a, "--no-legend") == 0) legend = false;
        else return cli_usage_error(CMD, "unknown option '%s'", a);
    }
    if (progress_asked && no_progress) return cli_usage_error(CMD, "--progress and --no-progress contradict");
    const bool terminal = isatty(2);
    progress_mode progress = PROGRESS_NONE; /* the default off a terminal */
    if (!quiet && !no_progress && (terminal || progress_asked)) progress = terminal ? PROGRESS_LINE : PROGRESS_LINES;
    char model_buf[1024], golden_buf[1024];
    if (case_dir) {
        if (model || golden) return cli_usage_error(CMD, "--case replaces --model and --golden");
        if (resolve_case(case_dir, model_buf, sizeof model_buf, golden_buf, sizeof golden_buf) != CLI_OK)
            return CLI_FAILED;
        model = model_buf, golden = golden_buf;
    }
    const int report_ok = cli_check_output(CMD, "--report", report_path); /* both said, before any row runs */
    if (cli_check_output(CMD, "--junit", junit_path) != CLI_OK || report_ok != CLI_OK) return CLI_FAILED;
    const m4_backend *backend = NULL;
    m4_error err = {{0}};
    bool plugin = false;
    if (candidate) {
        if (backend_name) return cli_usage_error(CMD, "--candidate replaces --backend");
        if (model && !case_dir) return cli_usage_error(CMD, "--candidate takes the config from the golden, not --model");
        if (!golden) return cli_usage_error(CMD, "--candidate needs --golden FILE.h5 (or --case DIR)");
    } else {
        if (!model || !golden) return cli_usage_error(CMD, "give --case DIR, or both --model and --golden");
        if (!backend_name) backend_name = "ref";
        backend = m4_backend_find(backend_name);
        plugin = strncmp(backend_name, M4_PLUGIN_PREFIX, strlen(M4_PLUGIN_PREFIX)) == 0;
        if (plugin && m4_plugin_backend_load(backend_name + strlen(M4_PLUGIN_PREFIX), &backend, &err) != 0) {
            cli_error(CMD, "%s", err.msg);
            return CLI_FAILED;
        }
        if (!backend)
            return cli_usage_error(CMD, "unknown backend '%s' (built here: %s)", backend_name, cli_backend_list());
        if (backend->precision == M4_PRECISION_BF16) bf16 = true;
    }

    m4_conform_options opt = {.model_dir = candidate ? NULL : model, .golden_path = golden, .backend = backend,
                              .candidate_path = candidate, .only = only, .bf16_budgets = bf16,
                              .progress = progress ? print_progress : NULL, .progress_user = &progress};
    m4_report report;
    int run = m4_conform_run(&opt, &report, &err);
    if (progress == PROGRESS_LINE) fputs("\r\033[K", stderr); /* the table replaces the progress line */
    if (plugin) m4_plugin_backend_unload(); /* the report keeps copies of every string */
    if (run != 0) {
        cli_error(CMD, "%s", err.msg);
        m4_report_free(&report);
        return CLI_FAILED;
    }
    if (report.warnings[0]) cli_error(CMD, "warning: %s", report.warnings);
    if (report.n == 0) {
        cli_error(CMD, "no component of %s matched%s%s", golden, only ? " --only " : "", only ? only : "");
        m4_report_free(&report);
        return CLI_FAILED;
    }
    if (quiet) {
        printf("%s on %s: %d passed, %d failed, %d errors, %d not implemented%s%s\n", report.backend,
               report.case_name, report.n_pass, report.n_fail, report.n_error, report.n_not_implemented,
               report.first_divergence >= 0 ? "; first divergence: " : "",
               report.first_divergence >= 0 ? report.results[report.first_divergence].name : "");
    } else {
        m4_report_print_table(&report, stdout);
        if (legend) print_legend(&report, bf16);
    }
    int rc = report.n_fail || report.n_error ? CLI_FAILED : CLI_OK;
    if (report_path && write_report(m4_report_write_json, &report, report_path, quiet) != CLI_OK) rc = CLI_FAILED;
    if (junit_path && write_report(m4_report_write_junit, &report, junit_path, quiet) != CLI_OK) rc = CLI_FAILED;
    m4_report_free(&report);
    return rc;
}
