/* report.c — the conformance report as a terminal table, JSON and JUnit XML. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conform.h"
#include "m4_output.h"

static void print_rule(FILE *out, int width) {
    for (int i = 0; i < width; i++) fputc('-', out);
    fputc('\n', out);
}

/* One metric of the table in `buf` (16 bytes) by `format`; "NaN" for a NaN (glibc would print
 * "nan" or "-nan"): a row whose output had NaN where the golden did not (metrics.h). */
static const char *metric(char *buf, const char *format, double v) {
    if (isnan(v)) return "NaN";
    snprintf(buf, 16, format, v);
    return buf;
}

void m4_report_print_table(const m4_report *r, FILE *out) {
    int name_width = 24;
    for (size_t i = 0; i < r->n; i++) {
        int len = (int)strlen(r->results[i].name);
        if (len > name_width) name_width = len;
    }
    const bool device = r->n > 0 && r->results[0].device_ms >= 0;   /* a device backend's run */
    int width = name_width + 94 + (device ? 11 : 0);
    if (r->backend_paths[0]) fprintf(out, "%s paths: %s\n", r->backend, r->backend_paths);
    if (r->candidate_path[0]) fprintf(out, "candidate: %s\n", r->candidate_path);
    fprintf(out, "%-*s  %-16s %10s %10s %10s %8s %10s%s  %s\n", name_width, "component", "shape",
            "max abs", "rel L2", "cosine", "budget%", "time ms", device ? "     dev ms" : "", "result");
    print_rule(out, width);
    for (size_t i = 0; i < r->n; i++) {
        const m4_result *x = &r->results[i];
        if (x->status == M4_RESULT_PASS || x->status == M4_RESULT_FAIL) {
            char max_abs[16], rel_l2[16], cosine[16], budget[16], time[16], device_ms[16];
            fprintf(out, "%-*s  %-16s %10s %10s %10s %8s %10s", name_width, x->name, x->shape,
                    metric(max_abs, "%.2e", x->cmp.max_abs), metric(rel_l2, "%.2e", x->cmp.rel_l2),
                    metric(cosine, "%.7f", x->cmp.cosine), metric(budget, "%.1f", x->cmp.budget_pct),
                    x->stage ? "" : metric(time, "%.3f", x->time_ms));
            if (device) fprintf(out, " %10s", x->stage ? "" : metric(device_ms, "%.4f", x->device_ms));
            fprintf(out, "  %s", m4_result_status_name(x->status));
        } else {
            fprintf(out, "%-*s  %-16s %10s %10s %10s %8s %10s%s  %s", name_width, x->name, "-", "-",
                    "-", "-", "-", "-", device ? "          -" : "", m4_result_status_name(x->status));
        }
        if (x->status != M4_RESULT_PASS && x->message[0]) fprintf(out, "  (%s)", x->message);
        else if (x->topk_mismatches == 0) fprintf(out, "  (top-k sets identical)");
        if ((int)i == r->first_divergence) fprintf(out, "  <- first divergence");
        fputc('\n', out);
    }
    print_rule(out, width);
    fprintf(out, "%s on %s [%s, transformers %s, softmax scale %s]: %d passed, %d failed, %d errors, "
                 "%d not implemented; %.1f ms in components\n",
            r->backend, r->case_name, r->golden_path, r->transformers_version, r->scale_rule, r->n_pass,
            r->n_fail, r->n_error, r->n_not_implemented, r->total_ms);
    if (r->first_divergence >= 0)
        fprintf(out, "first divergence: %s\n", r->results[r->first_divergence].name);
}

/* JSON numbers cannot be NaN/Inf: such metrics become null. */
static json_t *number(double v) { return isfinite(v) ? json_real(v) : json_null(); }

int m4_report_write_json(const m4_report *r, const char *path, m4_error *err) {
    json_t *root = json_object(), *rows = json_array();
    json_object_set_new(root, "schema", json_string("mistral4-conform/1"));
    json_object_set_new(root, "backend", json_string(r->backend));
    json_object_set_new(root, "backend_paths", r->backend_paths[0] ? json_string(r->backend_paths) : json_null());
    json_object_set_new(root, "candidate", r->candidate_path[0] ? json_string(r->candidate_path) : json_null());
    json_object_set_new(root, "warnings", r->warnings[0] ? json_string(r->warnings) : json_null());
    json_object_set_new(root, "case", json_string(r->case_name));
    json_object_set_new(root, "golden", json_string(r->golden_path));
    json_object_set_new(root, "model", json_string(r->model_path));
    json_object_set_new(root, "transformers_version", json_string(r->transformers_version));
    json_object_set_new(root, "torch_version", json_string(r->torch_version));
    json_object_set_new(root, "softmax_scale_rule", json_string(r->scale_rule));
    json_t *summary = json_pack("{s:i, s:i, s:i, s:i, s:o, s:o}", "passed", r->n_pass, "failed",
                                r->n_fail, "errors", r->n_error, "not_implemented",
                                r->n_not_implemented, "time_ms", number(r->total_ms),
                                "first_divergence",
                                r->first_divergence >= 0 ? json_string(r->results[r->first_divergence].name)
                                                         : json_null());
    json_object_set_new(root, "summary", summary);
    for (size_t i = 0; i < r->n; i++) {
        const m4_result *x = &r->results[i];
        json_t *row = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:I, s:o, s:o, s:o, s:o}",
                                "component", x->name, "hf_module", x->hf_module, "shape", x->shape,
                                "status", m4_result_status_name(x->status),
                                "max_abs", number(x->cmp.max_abs), "rel_l2", number(x->cmp.rel_l2),
                                "cosine", number(x->cmp.cosine), "tolerance", number(x->tolerance),
                                "nonfinite_mismatch", (json_int_t)x->cmp.nonfinite_mismatch,
                                "budget_pct", number(x->cmp.budget_pct), "time_ms", number(x->time_ms),
                                "flops", number(x->flops), "bytes", number(x->bytes));
        if (x->device_ms >= 0) json_object_set_new(row, "device_ms", number(x->device_ms));
        if (x->topk_mismatches >= 0)
            json_object_set_new(row, "topk_set_mismatches", json_integer(x->topk_mismatches));
        if (x->message[0]) json_object_set_new(row, "message", json_string(x->message));
        json_array_append_new(rows, row);
    }
    json_object_set_new(root, "results", rows);
    int rc = m4_write_json_file(root, path, "JSON report", err);
    json_decref(root);
    return rc;
}

static void xml_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\n' || *s == '\t') fputc(*s, f);
        }
    }
}

/* The JUnit XML of report `content`; -1 when a write failed. */
static int fill_junit(FILE *f, const void *content) {
    const m4_report *r = content;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    fprintf(f, "<testsuites name=\"mistral4 conform\" tests=\"%zu\" failures=\"%d\" errors=\"%d\" "
               "skipped=\"%d\" time=\"%.6f\">\n", r->n, r->n_fail, r->n_error, r->n_not_implemented,
            r->total_ms / 1e3);
    fprintf(f, "  <testsuite name=\"");
    xml_escaped(f, r->backend);
    fprintf(f, ".");
    xml_escaped(f, r->case_name);
    fprintf(f, "\" tests=\"%zu\" failures=\"%d\" errors=\"%d\" skipped=\"%d\" time=\"%.6f\">\n", r->n,
            r->n_fail, r->n_error, r->n_not_implemented, r->total_ms / 1e3);
    for (size_t i = 0; i < r->n; i++) {
        const m4_result *x = &r->results[i];
        fprintf(f, "    <testcase classname=\"");
        xml_escaped(f, r->case_name);
        fprintf(f, "\" name=\"");
        xml_escaped(f, x->name);
        fprintf(f, "\" time=\"%.6f\">", x->time_ms / 1e3);
        char detail[1600];
        snprintf(detail, sizeof detail, "shape %s: max abs %.3e, rel L2 %.3e (budget %.1e, %.1f%%), cosine %.7f. %s",
                 x->shape, x->cmp.max_abs, x->cmp.rel_l2, x->tolerance, x->cmp.budget_pct, x->cmp.cosine,
                 x->message);
        const char *tag = x->status == M4_RESULT_FAIL ? "failure"
                          : x->status == M4_RESULT_ERROR ? "error"
                          : x->status == M4_RESULT_NOT_IMPLEMENTED ? "skipped" : NULL;
        if (tag) {
            fprintf(f, "<%s message=\"", tag);
            xml_escaped(f, x->status == M4_RESULT_NOT_IMPLEMENTED ? x->message : detail);
            fprintf(f, "\"/>");
        }
        fprintf(f, "</testcase>\n");
    }
    fprintf(f, "  </testsuite>\n</testsuites>\n");
    return ferror(f) ? -1 : 0;
}

int m4_report_write_junit(const m4_report *r, const char *path, m4_error *err) {
    return m4_write_stream_atomically(path, "JUnit report", fill_junit, r, err);
}
