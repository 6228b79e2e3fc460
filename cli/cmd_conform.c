/* cmd_conform.c — `mistral4 conform`: runs a backend against golden Hugging Face activations and
 * prints, for every component, how far it is from HF and where error starts. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
        "  --report FILE     also write a JSON report (schema mistral4-conform/1)\n"
        "  --junit FILE      also write a JUnit XML report (one testcase per component)\n"
        "  --quiet           print only the summary lines\n"
        "  --progress        print each component on stderr as it finishes (default on a terminal)\n"
        "  -h, --help        show this help\n"
        "\n"
        "Budgets (docs/ARCHITECTURE.md): float32 relative L2 <= 1e-5 per component, <= 1e-4 for the\n"
        "end-to-end logits; router top-k sets identical; NaN never passes.\n"
        "The MLA softmax scale rule (base or mscale2) is read from the golden file (MODEL.md §0.1).\n"
        "\n"
        "Examples:\n"
        "  mistral4 conform --case golden/cases/text_tiny\n"
        "  mistral4 conform --case golden/cases/long_positions --only 'text.layers.*.self_attn*'\n"
        "  mistral4 conform --case golden/cases/fp8 --report fp8.json --junit fp8.xml\n"
        "  mistral4 conform --case golden/cases/multimodal --backend cuda-bf16   (on a GPU)\n"
        "  mistral4 conform --golden golden/cases/text_tiny/text_tiny.h5 --candidate theirs.h5\n"
        "\n"
        "Exit status: 0 every row passed (rows the backend does not implement are reported, not\n"
        "failed), 1 a row failed or errored or the inputs could not be read, 2 usage error.\n",
        cli_backend_list());
}

typedef struct {
    char *buf;
    size_t size;
} path_buffer;

static void keep_path(const char *path, double bytes, void *out) {
    path_buffer *b = out;
    snprintf(b->buf, b->size, "%s", path);
}

/* Finds DIR/<name>.h5 and DIR/model for --case. */
static int resolve_case(const char *dir, char *model, size_t model_size, char *golden, size_t golden_size) {
    snprintf(model, model_size, "%s/model", dir);
    path_buffer found = {golden, golden_size};
    return cli_files_ending(dir, ".h5", keep_path, &found) == 1 ? 0 : -1;
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

static void print_progress(const m4_result *r, size_t done, void *user) {
    fprintf(stderr, "[%4zu] %-48s %-8s %.2e\n", done, r->name, m4_result_status_name(r->status), r->cmp.rel_l2);
}

int cmd_conform(int argc, char **argv) {
    const char *case_dir = NULL, *model = NULL, *golden = NULL, *backend_name = NULL, *only = NULL;
    const char *report_path = NULL, *junit_path = NULL, *candidate = NULL;
    bool bf16 = false, quiet = false, progress = isatty(2);
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
        else if (strcmp(a, "--quiet") == 0) quiet = true, progress = false;
        else if (strcmp(a, "--progress") == 0) progress = true;
        else return cli_usage_error(CMD, "unknown option '%s'", a);
    }
    char model_buf[1024], golden_buf[1024];
    if (case_dir) {
        if (model || golden) return cli_usage_error(CMD, "--case replaces --model and --golden");
        if (resolve_case(case_dir, model_buf, sizeof model_buf, golden_buf, sizeof golden_buf) != 0) {
            cli_error(CMD, "%s: not a golden case folder (expected model/ and exactly one .h5 file)", case_dir);
            return CLI_FAILED;
        }
        model = model_buf, golden = golden_buf;
    }
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
                              .progress = progress ? print_progress : NULL};
    m4_report report;
    int run = m4_conform_run(&opt, &report, &err);
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
    }
    int rc = report.n_fail || report.n_error ? CLI_FAILED : CLI_OK;
    if (report_path && m4_report_write_json(&report, report_path, &err) != 0) {
        cli_error(CMD, "%s", err.msg);
        rc = CLI_FAILED;
    }
    if (junit_path && m4_report_write_junit(&report, junit_path, &err) != 0) {
        cli_error(CMD, "%s", err.msg);
        rc = CLI_FAILED;
    }
    m4_report_free(&report);
    return rc;
}
