/* m4_output.h — the one writer of every file the project writes (conformance reports, JUnit XML,
 * benchmark results, `mistral4 preprocess --out`): nothing half-written is ever left behind.
 *
 * The file is written as a new temporary file beside the target (PATH.tmp-XXXXXX: same folder, so
 * the rename stays on one file system, and created exclusively, so nothing is overwritten), synced
 * to disk, and renamed over PATH only when complete. On any failure the temporary file is removed
 * and PATH is left as it was. While it exists the temporary file is registered with m4_faults, so
 * the command line's SIGINT/SIGTERM handler removes it too. The file is created with mode 0666
 * and the kernel applies the umask (and a folder's default ACL), exactly as for a file fopen
 * creates: nothing here reads or changes the umask.
 *
 * Errors name the path, the document and the cause; every write, flush, sync and close is checked:
 *   "r.json: cannot write the JSON report: disk full (ENOSPC) after 65536 bytes: nothing written"
 *   "r.json: cannot write the JSON report: cannot create a temporary file beside it (No such file …)" */
#ifndef M4_OUTPUT_H
#define M4_OUTPUT_H

#include <stdio.h>

#include "m4_error.h"

/* Writes `path` through fill(tmp, content), which writes the document into the (existing, empty)
 * file named `tmp` — for libraries that open files by name (HDF5). fill returns 0, or -1 with
 * errno set to the cause where there is one. `what` names the document in messages ("JSON
 * report"). */
int m4_write_atomically(const char *path, const char *what, int (*fill)(const char *tmp, const void *content),
                        const void *content, m4_error *err);

/* The same, for a document written to a stdio stream: fill(f, content) returns 0, or -1 when it
 * saw a write fail; the stream's error state, flush and close are checked here as well. */
int m4_write_stream_atomically(const char *path, const char *what, int (*fill)(FILE *f, const void *content),
                               const void *content, m4_error *err);

/* Any JSON document (a jansson json_t *), indented, keys in insertion order. */
int m4_write_json_file(const void *json_root, const char *path, const char *what, m4_error *err);

#endif
