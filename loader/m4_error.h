/* m4_error.h — how library code reports failure.
 *
 * Every fallible function in loader/, reference/, optimized/ and harness/ returns 0 on success
 * and -1 on failure, and fills a caller-owned m4_error with one sentence that names the file (or
 * tensor) and the problem. Library code never prints, exits or aborts on bad input. */
#ifndef M4_ERROR_H
#define M4_ERROR_H

#include <stdarg.h>

typedef struct {
    char msg[1024];
} m4_error;

/* Formats msg into err (if err is non-NULL) and returns -1, so callers can write
 * `return m4_fail(err, "%s: truncated", path);`. A message longer than msg keeps its start and its
 * end, joined by "…" (a long path leading the message is cut in the middle, the reason after it
 * stays whole). */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
int m4_fail(m4_error *err, const char *fmt, ...);

/* Prefixes an existing message: "context: previous message" (shortened in the middle as above
 * when too long). Returns -1. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
int m4_fail_context(m4_error *err, const char *fmt, ...);

#endif
