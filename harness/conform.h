/* conform.h — the conformance runner: every registry component of a backend, teacher-forced on
 * the golden inputs, then end to end, each compared with Hugging Face's activations. */
#ifndef M4_CONFORM_H
#define M4_CONFORM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "backend.h"
#include "metrics.h"
#include "weights.h"

typedef enum {
    M4_RESULT_PASS,
    M4_RESULT_FAIL,           /* over budget, NaN, or router sets differ */
    M4_RESULT_ERROR,          /* the backend returned an error */
    M4_RESULT_NOT_IMPLEMENTED /* the backend has no entry for it */
} m4_result_status;

const char *m4_result_status_name(m4_result_status s);

typedef struct {
    char name[128];           /* component instance, e.g. text.layers.1.mlp.gate */
    char hf_module[48];
    char shape[64];           /* of the compared tensor */
    m4_comparison cmp;
    double tolerance;
    double min_cosine;        /* bf16 budgets also need cosine >= 0.999; 0 otherwise */
    int64_t topk_mismatches;  /* router rows: tokens whose expert sets differ; else -1 */
    double time_ms;           /* wall time of the backend call that produced it */
    double device_ms;         /* its device time (CUDA events) for device backends, else -1 */
    double flops, bytes;      /* registry cost of that call */
    bool stage;               /* a later output of its group's shared call (calls.h): the call's time
                                 and cost are reported on the group's own row, not here */
    m4_result_status status;
    char message[1200];
} m4_result;

typedef struct {
    m4_result *results;
    size_t n, cap;
    char case_name[64];
    char golden_path[512];
    char model_path[512];
    char backend[32];         /* the backend's name, or "candidate" */
    char candidate_path[512]; /* the candidate file compared (docs/CANDIDATE-LAYOUT.md); "" for a backend */
    char backend_paths[256];  /* the backend's describe_paths (its fast paths in effect); "" without one */
    char scale_rule[16];      /* "base" or "mscale2": what the golden was produced with */
    char transformers_version[32], torch_version[32];
    int first_divergence;     /* index into results, -1 when every row passes */
    int n_pass, n_fail, n_error, n_not_implemented;
    double total_ms;
    /* config fields the forward pass does not read (eos ids, dtype, …) that differ between the
     * golden's recorded config and the model's: "golden FILE was made with F = A, the model has B
     * (…)"; "" when none. Fields it reads refuse the run instead (m4_conform_run's error). */
    char warnings[1024];
} m4_report;

/* Progress is reported per component through this callback (NULL for silence): row `done` of the
 * `total` rows the case runs (counted before the first runs). */
typedef void (*m4_progress_fn)(const m4_result *r, size_t done, size_t total, void *user);

typedef struct {
    const char *model_dir;    /* checkpoint folder the golden was made with */
    const char *golden_path;  /* .h5 file */
    const m4_backend *backend;
    /* Instead of a backend: a candidate file in the golden layout (docs/CANDIDATE-LAYOUT.md),
     * written by any engine, whose datasets are the rows' outputs (teacher-forced on the golden's
     * inputs). The config then comes from the golden's config_json; model_dir is not read. A row
     * the file lacks is reported NOT-IMPL. backend must be NULL. */
    const char *candidate_path;
    const char *only;         /* fnmatch glob over component instance names; NULL = all */
    bool bf16_budgets;        /* use the bf16 tolerances */
    m4_progress_fn progress;
    void *progress_user;
    /* Optional: run on this already-opened model instead of opening model_dir (tests use it to
     * break a parameter on purpose and check the harness names the first divergence). */
    const m4_model *model;
    /* Tests only: `model`'s config was changed on purpose, standing for a bug in the math (a swapped
     * rope pairing, a wrong eps), so it is not refused for differing from the golden's recorded
     * config (which every other run is, before any row: m4_conform_run). */
    bool model_broken_on_purpose;
} m4_conform_options;

int m4_conform_run(const m4_conform_options *opt, m4_report *report, m4_error *err);
void m4_report_free(m4_report *report);

/* Report writers. The table goes to `out` (the caller's sink). */
void m4_report_print_table(const m4_report *r, FILE *out);
int m4_report_write_json(const m4_report *r, const char *path, m4_error *err);
int m4_report_write_junit(const m4_report *r, const char *path, m4_error *err);

#endif
