#include "m4_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A message longer than msg keeps its start (the file it names) and its end (the reason, which
 * comes last: "PATH: the image is a FIFO …"), joined by "…" where the middle was cut, so a long
 * path cannot push the reason out (issue #18: a 2000-character image path left only the path).
 * The head is the smaller part: the reason is the part a reader needs whole. */
#define HEAD_BYTES 256
static const char ellipsis[] = "\u2026"; /* "…", 3 bytes of UTF-8 */

/* Moves back from `at` to the start of a UTF-8 character (never splits one). */
static size_t char_start(const char *text, size_t at) {
    while (at > 0 && ((unsigned char)text[at] & 0xC0) == 0x80) at--;
    return at;
}

static void set_message(m4_error *err, const char *text, size_t n) {
    const size_t room = sizeof err->msg - 1;
    if (n <= room) {
        memcpy(err->msg, text, n + 1);
        return;
    }
    const size_t dots = sizeof ellipsis - 1;
    size_t head = char_start(text, HEAD_BYTES), tail = char_start(text, n - (room - HEAD_BYTES - dots));
    memcpy(err->msg, text, head);
    memcpy(err->msg + head, ellipsis, dots);
    memcpy(err->msg + head + dots, text + tail, n - tail + 1);
}

/* fmt formatted into a malloc'ed string of its full length; NULL (ap left unused) without memory. */
static char *format_whole(const char *fmt, va_list ap) {
    va_list measure;
    va_copy(measure, ap);
    int n = vsnprintf(NULL, 0, fmt, measure);
    va_end(measure);
    char *text = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (text) vsnprintf(text, (size_t)n + 1, fmt, ap);
    return text;
}

int m4_fail(m4_error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        char *text = format_whole(fmt, ap);
        if (text) set_message(err, text, strlen(text));
        else vsnprintf(err->msg, sizeof err->msg, fmt, ap); /* no memory: cut at the end */
        va_end(ap);
        free(text);
    }
    return -1;
}

int m4_fail_context(m4_error *err, const char *fmt, ...) {
    if (err) {
        char previous[sizeof err->msg];
        memcpy(previous, err->msg, sizeof previous);
        previous[sizeof previous - 1] = 0;
        va_list ap;
        va_start(ap, fmt);
        char *context = format_whole(fmt, ap);
        va_end(ap);
        m4_fail(err, "%s: %s", context ? context : "(no memory for the context)", previous);
        free(context);
    }
    return -1;
}
