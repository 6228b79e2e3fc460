/* format.h — small text formatters for the command line: counts with thousands separators,
 * tensor shapes, and SI-scaled quantities. Each writes into a caller buffer and returns it. */
#ifndef M4_CLI_FORMAT_H
#define M4_CLI_FORMAT_H

#include <stddef.h>
#include <stdint.h>

/* 119401317952 → "119,401,317,952"; negative numbers keep their sign. */
char *fmt_count(int64_t v, char *buf, size_t size);

/* {128, 4096, 4096}, 3 → "[128, 4096, 4096]"; ndim 0 → "[]" (a scalar). */
char *fmt_shape(const int64_t *shape, int ndim, char *buf, size_t size);

/* 4.6383e11, "FLOP" → "463.83 GFLOP"; below 1000 the value is printed whole ("512 B"). */
char *fmt_si(double v, const char *unit, char *buf, size_t size);

#endif
