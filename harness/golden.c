#include "golden.h"

#include <hdf5.h>
#include <hdf5_hl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "m4_file.h"

struct m4_golden {
    hid_t file;
    char *path; /* as given, whole: it leads every message (m4_error shortens a long one in the middle) */
    bool variable_strings; /* a candidate's: its string attributes may be variable-length */
};

/* HDF5 prints its own error stack by default; the harness reports errors itself. */
static void silence_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static int open_file(const char *path, bool variable_strings, m4_golden **out, m4_error *err) {
    *out = NULL;
    silence_hdf5();
    /* libhdf5 opens whatever the path names and would block on a FIFO: the file kind first. */
    size_t size;
    int fd = m4_file_open_regular(path, "the golden file", &size, err);
    if (fd < 0) return -1;
    close(fd);
    if (H5Fis_hdf5(path) <= 0) return m4_fail(err, "%s: missing or not an HDF5 file", path);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return m4_fail(err, "%s: cannot open as HDF5", path);
    m4_golden *g = calloc(1, sizeof *g);
    char *copy = strdup(path);
    if (!g || !copy) {
        free(g), free(copy);
        H5Fclose(file);
        return m4_fail(err, "%s: out of memory (%zu bytes)", path, sizeof *g);
    }
    g->file = file;
    g->path = copy;
    g->variable_strings = variable_strings;
    *out = g;
    return 0;
}

int m4_golden_open(const char *path, m4_golden **out, m4_error *err) { return open_file(path, false, out, err); }

int m4_golden_open_candidate(const char *path, m4_golden **out, m4_error *err) {
    return open_file(path, true, out, err);
}

void m4_golden_close(m4_golden *g) {
    if (!g) return;
    H5Fclose(g->file);
    free(g->path);
    free(g);
}

const char *m4_golden_path(const m4_golden *g) { return g->path; }

int m4_golden_attr(const m4_golden *g, const char *name, char *buf, size_t size, m4_error *err) {
    if (H5Aexists(g->file, name) <= 0)
        return m4_fail(err, "%s: root attribute \"%s\" is missing", g->path, name);
    hid_t attr = H5Aopen(g->file, name, H5P_DEFAULT);
    if (attr < 0) return m4_fail(err, "%s: cannot open root attribute \"%s\"", g->path, name);
    hid_t type = H5Aget_type(attr), space = H5Aget_space(attr);
    int rc = 0;
    /* One string, not an array of them: H5Aread writes every element, so a shape other than a
     * single element would overrun the one value read here. */
    if (type < 0 || space < 0 || H5Tget_class(type) != H5T_STRING ||
        H5Sget_simple_extent_type(space) == H5S_NULL || H5Sget_simple_extent_npoints(space) != 1) {
        rc = m4_fail(err, "%s: root attribute \"%s\" is not a string", g->path, name);
    } else if (H5Tis_variable_str(type) > 0 && !g->variable_strings) {
        /* golden/generate.py writes fixed-length strings only; a variable-length one lives in the
         * file's global heap, where a corrupt heap size made H5Aread spin for minutes (issue #18) */
        rc = m4_fail(err, "%s: root attribute \"%s\" is a variable-length string; golden files hold fixed-length "
                          "ones (golden/generate.py)", g->path, name);
    } else if (H5Tis_variable_str(type) > 0) {
        char *value = NULL;
        hid_t mem = H5Tget_native_type(type, H5T_DIR_ASCEND);
        if (mem < 0 || H5Aread(attr, mem, &value) < 0 || !value) {
            rc = m4_fail(err, "%s: cannot read root attribute \"%s\"", g->path, name);
        } else {
            snprintf(buf, size, "%s", value);
        }
        if (value) H5free_memory(value);
        if (mem >= 0) H5Tclose(mem);
    } else {
        size_t len = H5Tget_size(type);
        char *value = len > 0 && len <= M4_GOLDEN_MAX_ATTR_BYTES ? calloc(len + 1, 1) : NULL;
        if (len == 0 || len > M4_GOLDEN_MAX_ATTR_BYTES)
            rc = m4_fail(err, "%s: root attribute \"%s\" is %zu bytes long (at most %d)", g->path,
                         name, len, M4_GOLDEN_MAX_ATTR_BYTES);
        else if (!value || H5Aread(attr, type, value) < 0)
            rc = m4_fail(err, "%s: cannot read root attribute \"%s\"", g->path, name);
        else
            snprintf(buf, size, "%s", value);
        free(value);
    }
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    H5Aclose(attr);
    return rc;
}

bool m4_golden_has_attr(const m4_golden *g, const char *name) { return H5Aexists(g->file, name) > 0; }

/* The element type as a short name: "float32", "int64", "uint8", "string", "other". */
static void type_name(hid_t type, char *buf, size_t size) {
    H5T_class_t cls = type < 0 ? H5T_NO_CLASS : H5Tget_class(type);
    size_t bits = type < 0 ? 0 : 8 * H5Tget_size(type);
    if (cls == H5T_FLOAT) snprintf(buf, size, "float%zu", bits);
    else if (cls == H5T_INTEGER) snprintf(buf, size, "%sint%zu", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", bits);
    else snprintf(buf, size, "%s", cls == H5T_STRING ? "string" : "other");
}

/* true when `type` is `standard` (a little-endian IEEE float or two's complement integer) in
 * either byte order: every property (size, precision, offset, fields, sign) as libhdf5 defines it,
 * so a corrupt header's float32 with a 2^30-byte size or a shifted mantissa is not. */
static bool is_exactly(hid_t type, hid_t standard) {
    if (H5Tequal(type, standard) > 0) return true;
    hid_t big = H5Tcopy(standard);
    bool equal = big >= 0 && H5Tset_order(big, H5T_ORDER_BE) >= 0 && H5Tequal(type, big) > 0;
    if (big >= 0) H5Tclose(big);
    return equal;
}

int m4_golden_dtype(const m4_golden *g, const char *path, char *buf, size_t size, m4_error *err) {
    if (!m4_golden_has(g, path)) return m4_fail(err, "%s: dataset \"%s\" is missing", g->path, path);
    hid_t ds = H5Dopen2(g->file, path, H5P_DEFAULT);
    if (ds < 0) return m4_fail(err, "%s: \"%s\" is not a dataset", g->path, path);
    hid_t type = H5Dget_type(ds);
    type_name(type, buf, size);
    if (type >= 0) H5Tclose(type);
    H5Dclose(ds);
    return 0;
}

bool m4_golden_has(const m4_golden *g, const char *path) {
    /* H5Lexists must be asked one path component at a time. */
    char partial[512];
    size_t len = strlen(path);
    if (len >= sizeof partial) return false;
    for (size_t i = 0; i <= len; i++) {
        if (path[i] == '/' || path[i] == 0) {
            memcpy(partial, path, i);
            partial[i] = 0;
            if (i && H5Lexists(g->file, partial, H5P_DEFAULT) <= 0) return false;
        }
    }
    return true;
}

/* Largest chunk read when the dataset itself is smaller (1 MiB, libhdf5's default chunk cache;
 * h5py's chunks are within the dataset): a damaged header's chunk of 2^32 elements made libhdf5
 * allocate gigabytes for a 2 × 2 dataset. */
#define MAX_CHUNK_BYTES ((hsize_t)1 << 20)

static hsize_t file_size(const m4_golden *g) {
    hsize_t size = 0;
    return H5Fget_filesize(g->file, &size) < 0 ? 0 : size;
}

/* The storage of a dataset of `numel` elements of `element` bytes, as its header declares it,
 * against what golden files hold, before libhdf5 reads it (issue #18: damaged headers made H5Dread
 * allocate 4 GB for a 2 × 2 dataset): data in this file, not external or virtual files; contiguous
 * or compact data of exactly numel × element bytes inside the file; chunks of bounded size; no
 * more bytes stored than the file has. */
static int check_storage(const m4_golden *g, const char *path, hid_t ds, int64_t numel, size_t element,
                         m4_error *err) {
    hid_t dcpl = H5Dget_create_plist(ds);
    if (dcpl < 0) return m4_fail(err, "%s: cannot read the storage layout of dataset \"%s\"", g->path, path);
    const H5D_layout_t layout = H5Pget_layout(dcpl);
    const int external = H5Pget_external_count(dcpl);
    hsize_t chunk[H5S_MAX_RANK], chunk_bytes = element;
    const int chunk_rank = layout == H5D_CHUNKED ? H5Pget_chunk(dcpl, H5S_MAX_RANK, chunk) : 0;
    for (int d = 0; d < chunk_rank && chunk_bytes <= MAX_CHUNK_BYTES; d++) chunk_bytes *= chunk[d];
    H5Pclose(dcpl);
    const hsize_t expected = (hsize_t)numel * element, stored = H5Dget_storage_size(ds), available = file_size(g);
    if (external != 0 || layout == H5D_VIRTUAL)
        return m4_fail(err, "%s: dataset \"%s\" keeps its data in other files (external or virtual storage); golden "
                            "files hold their own", g->path, path);
    if (layout == H5D_CHUNKED && (chunk_rank < 0 || (chunk_bytes > MAX_CHUNK_BYTES && chunk_bytes > expected)))
        return m4_fail(err, "%s: dataset \"%s\" is stored in chunks larger than both the dataset (%llu bytes) and "
                            "%llu bytes: the file is damaged", g->path, path, (unsigned long long)expected,
                       (unsigned long long)MAX_CHUNK_BYTES);
    if ((layout == H5D_CONTIGUOUS || layout == H5D_COMPACT) && stored != expected)
        return m4_fail(err, "%s: dataset \"%s\" stores %llu bytes, but its %lld elements take %llu: the file is "
                            "damaged", g->path, path, (unsigned long long)stored, (long long)numel,
                       (unsigned long long)expected);
    haddr_t at = layout == H5D_CONTIGUOUS && stored > 0 ? H5Dget_offset(ds) : 0;
    if (stored > available || at == HADDR_UNDEF || at > available - stored)
        return m4_fail(err, "%s: dataset \"%s\" declares %llu bytes of data%s, past the end of the %llu-byte file: "
                            "the file is damaged or cut short", g->path, path, (unsigned long long)stored,
                       layout == H5D_CONTIGUOUS ? " at its offset" : "", (unsigned long long)available);
    return 0;
}

/* The stored element type: exactly one golden/generate.py writes (float32 activations, int64 ids,
 * uint8 image bytes), in either byte order; sets *bytes to its size. Checked before H5Dread, whose
 * conversions of other or damaged types (a float32 claiming 2^30 bytes, a shifted mantissa) are
 * where corrupt files crashed libhdf5 (a NULL dereference after an unchecked 256 GB calloc in
 * H5T__bit_copy, issue #18); between these three it converts with its plain hard-coded loops. */
static int check_type(const m4_golden *g, const char *path, hid_t ds, size_t *bytes, m4_error *err) {
    static const char *const written[] = {"float32", "int64", "uint8"};
    const hid_t standard[] = {H5T_IEEE_F32LE, H5T_STD_I64LE, H5T_STD_U8LE};
    hid_t type = H5Dget_type(ds);
    char name[32];
    type_name(type, name, sizeof name);
    bool known_name = false;
    for (size_t i = 0; i < sizeof standard / sizeof *standard; i++) {
        known_name |= strcmp(name, written[i]) == 0;
        if (type >= 0 && is_exactly(type, standard[i])) {
            *bytes = H5Tget_size(type);
            H5Tclose(type);
            return 0;
        }
    }
    if (type >= 0) H5Tclose(type);
    return m4_fail(err, "%s: dataset \"%s\" is stored as %s%s; golden files hold float32, int64 and uint8 data",
                   g->path, path, name, known_name ? " with a nonstandard bit layout" : "");
}

int m4_golden_read(const m4_golden *g, const char *path, bool as_int, m4_array *out, m4_error *err) {
    memset(out, 0, sizeof *out);
    if (!m4_golden_has(g, path)) return m4_fail(err, "%s: dataset \"%s\" is missing", g->path, path);
    hid_t ds = H5Dopen2(g->file, path, H5P_DEFAULT);
    if (ds < 0) return m4_fail(err, "%s: \"%s\" is not a dataset", g->path, path);
    hid_t space = H5Dget_space(ds);
    int ndim = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    int rc = 0;
    hsize_t dims[M4_GOLDEN_MAX_DIMS];
    if (ndim < 0 || ndim > M4_GOLDEN_MAX_DIMS) {
        rc = m4_fail(err, "%s: dataset \"%s\" has an unsupported rank (at most %d dimensions)",
                     g->path, path, M4_GOLDEN_MAX_DIMS);
        goto done;
    }
    if (H5Sget_simple_extent_type(space) == H5S_NULL) { /* no elements and no shape at all */
        rc = m4_fail(err, "%s: dataset \"%s\" holds no data (null dataspace)", g->path, path);
        goto done;
    }
    if (H5Sget_simple_extent_dims(space, dims, NULL) < 0) {
        rc = m4_fail(err, "%s: cannot read the shape of dataset \"%s\"", g->path, path);
        goto done;
    }
    out->ndim = ndim;
    out->numel = 1;
    for (int d = 0; d < ndim; d++) {
        /* Bounded before multiplying: a header may claim any extent (HDF5 fills unwritten chunks
         * with the fill value, so a huge dataset need not be large on disk). */
        if (dims[d] > (hsize_t)M4_GOLDEN_MAX_ELEMENTS ||
            (out->numel && (int64_t)dims[d] > M4_GOLDEN_MAX_ELEMENTS / out->numel)) {
            rc = m4_fail(err, "%s: dataset \"%s\" is larger than the %lld-element limit", g->path,
                         path, (long long)M4_GOLDEN_MAX_ELEMENTS);
            goto done;
        }
        out->dims[d] = (int64_t)dims[d];
        out->numel *= (int64_t)dims[d];
    }
    size_t stored_bytes = 0;
    if (check_type(g, path, ds, &stored_bytes, err) || check_storage(g, path, ds, out->numel, stored_bytes, err)) {
        rc = -1;
        goto done;
    }
    size_t bytes = (size_t)(out->numel ? out->numel : 1) * (as_int ? sizeof(int64_t) : sizeof(float));
    void *data = malloc(bytes);
    if (!data) {
        rc = m4_fail(err, "%s: out of memory reading \"%s\" (%zu bytes)", g->path, path, bytes);
        goto done;
    }
    /* HDF5 converts the stored type (one of check_type's three) to the memory type. */
    if (H5Dread(ds, as_int ? H5T_NATIVE_INT64 : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
        free(data);
        rc = m4_fail(err, "%s: cannot read dataset \"%s\" as %s", g->path, path, as_int ? "int64" : "float32");
        goto done;
    }
    if (as_int) out->i64 = data;
    else out->f32 = data;
done:
    if (rc != 0) out->ndim = 0, out->numel = 0;
    if (space >= 0) H5Sclose(space);
    H5Dclose(ds);
    return rc;
}

void m4_array_free(m4_array *a) {
    free(a->f32);
    free(a->i64);
    memset(a, 0, sizeof *a);
}

typedef struct {
    void (*fn)(const char *, void *);
    void *user;
} group_visit;

static herr_t visit_group(hid_t loc, const char *name, const H5L_info_t *info, void *data) {
    (void)info;
    group_visit *v = data;
    H5O_info_t oinfo;
    if (H5Oget_info_by_name2(loc, name, &oinfo, H5O_INFO_BASIC, H5P_DEFAULT) >= 0 && oinfo.type == H5O_TYPE_GROUP)
        v->fn(name, v->user);
    return 0;
}

int m4_golden_groups(const m4_golden *g, void (*fn)(const char *name, void *user), void *user,
                     m4_error *err) {
    group_visit v = {fn, user};
    if (H5Literate(g->file, H5_INDEX_NAME, H5_ITER_INC, NULL, visit_group, &v) < 0)
        return m4_fail(err, "%s: cannot list groups", g->path);
    return 0;
}

void m4_array_shape_string(const m4_array *a, char *buf, size_t size) {
    size_t len = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < a->ndim && len < size; d++)
        len += (size_t)snprintf(buf + len, size - len, "%s%lld", d ? ", " : "", (long long)a->dims[d]);
    if (len < size) snprintf(buf + len, size - len, "]");
}
