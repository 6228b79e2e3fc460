#include "m4_error.h"

#include <stdio.h>
#include <string.h>

int m4_fail(m4_error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int m4_fail_context(m4_error *err, const char *fmt, ...) {
    if (err) {
        char context[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(context, sizeof context, fmt, ap);
        va_end(ap);
        /* Shift the previous message right and write "context: " in front of it. */
        size_t n = strlen(context), room = sizeof err->msg - 1;
        if (n + 2 > room) n = room - 2;
        err->msg[room] = 0;
        memmove(err->msg + n + 2, err->msg, room - n - 2);
        err->msg[room] = 0;
        memcpy(err->msg, context, n);
        err->msg[n] = ':';
        err->msg[n + 1] = ' ';
    }
    return -1;
}
