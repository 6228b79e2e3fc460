/* golden.h — read-only access to a golden HDF5 file (golden/README.md has the layout): root
 * string attributes (provenance), and datasets addressed as "<component>/<name>", e.g.
 * "text.layers.0.self_attn/q_rot", read into float32 or int64. */
#ifndef M4_GOLDEN_H
#define M4_GOLDEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "m4_error.h"

#define M4_GOLDEN_MAX_DIMS 8

/* Largest dataset read into memory, in elements (2^27: 512 MiB as float32, 1 GiB as int64; the
 * committed goldens' largest dataset holds under 2^20, the published model's logits for 512 tokens
 * 2^26). Larger extents are refused before any allocation: an HDF5 header can claim any size
 * without the file being large. The runner (conform.c) bounds every buffer it allocates for a
 * dataset, sized from the config and the case's inputs, by the same limit. */
#define M4_GOLDEN_MAX_ELEMENTS ((int64_t)1 << 27)

/* Longest fixed-length string attribute read (1 MiB; the config_json attribute is a few KiB). */
#define M4_GOLDEN_MAX_ATTR_BYTES (1 << 20)

typedef struct m4_golden m4_golden;

/* A dataset read into memory: float32 data or int64 data (one of them), row-major. */
typedef struct {
    int ndim;
    int64_t dims[M4_GOLDEN_MAX_DIMS];
    int64_t numel;
    float *f32;
    int64_t *i64;
} m4_array;

int m4_golden_open(const char *path, m4_golden **out, m4_error *err);
/* A candidate file (docs/CANDIDATE-LAYOUT.md), written by any engine: as m4_golden_open, but its
 * string attributes may also be variable-length (h5py's default for a str), which golden files
 * never hold (m4_golden_attr refuses them there). */
int m4_golden_open_candidate(const char *path, m4_golden **out, m4_error *err);
void m4_golden_close(m4_golden *g);
const char *m4_golden_path(const m4_golden *g);

/* A root attribute as a string: one fixed-length string (golden/generate.py writes no other), or
 * in a candidate file also a variable-length one. Fails when absent. */
int m4_golden_attr(const m4_golden *g, const char *name, char *buf, size_t size, m4_error *err);

/* true when the root attribute exists. */
bool m4_golden_has_attr(const m4_golden *g, const char *name);

/* The stored element type of dataset `path` as a short name: "float32", "float64", "float16",
 * "int64", "int32", "uint8", … ("string", "other" for the rest). */
int m4_golden_dtype(const m4_golden *g, const char *path, char *buf, size_t size, m4_error *err);

/* true when the object (group or dataset) exists, e.g. "text.layers.3" or "model/logits". */
bool m4_golden_has(const m4_golden *g, const char *path);

/* Reads a dataset converted to float32 (as_int = false) or int64 (as_int = true). It must be
 * stored as float32, int64 or uint8 (what golden/generate.py writes), little- or big-endian:
 * another type, data in other files, and storage that does not fit the shape or the file are
 * refused before libhdf5 reads (docs/INPUTS.md §5). */
int m4_golden_read(const m4_golden *g, const char *path, bool as_int, m4_array *out, m4_error *err);

void m4_array_free(m4_array *a);

/* Calls fn(name, user) for every root-level group name (the component instances), in creation
 * or name order. */
int m4_golden_groups(const m4_golden *g, void (*fn)(const char *name, void *user), void *user,
                     m4_error *err);

/* "[2, 9, 64]" */
void m4_array_shape_string(const m4_array *a, char *buf, size_t size);

#endif
