#include "format.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

char *fmt_count(int64_t v, char *buf, size_t size) {
    char digits[32];
    /* the magnitude as unsigned, so INT64_MIN does not overflow */
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    int nd = snprintf(digits, sizeof digits, "%" PRIu64, mag);
    char out[48];
    size_t o = 0;
    if (v < 0) out[o++] = '-';
    for (int i = 0; i < nd; i++) {
        if (i > 0 && (nd - i) % 3 == 0) out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
    snprintf(buf, size, "%s", out);
    return buf;
}

char *fmt_shape(const int64_t *shape, int ndim, char *buf, size_t size) {
    size_t used = 0;
    int n = snprintf(buf, size, "[");
    used = n > 0 ? (size_t)n : 0;
    for (int d = 0; d < ndim && used < size; d++) {
        n = snprintf(buf + used, size - used, "%s%" PRId64, d ? ", " : "", shape[d]);
        if (n < 0) break;
        used += (size_t)n;
    }
    if (used < size) snprintf(buf + used, size - used, "]");
    return buf;
}

char *fmt_si(double v, const char *unit, char *buf, size_t size) {
    static const char *prefix[] = {"", "k", "M", "G", "T", "P", "E"};
    int p = 0;
    double a = v < 0 ? -v : v;
    while (a >= 1000.0 && p < 6) {
        a /= 1000.0;
        v /= 1000.0;
        p++;
    }
    if (p == 0)
        snprintf(buf, size, "%.0f %s", v, unit);
    else
        snprintf(buf, size, "%.2f %s%s", v, prefix[p], unit);
    return buf;
}
