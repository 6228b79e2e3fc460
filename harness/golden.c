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
    char path[1024];
};

/* HDF5 prints its own error stack by default; the harness reports errors itself. */
static void silence_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

int m4_golden_open(const char *path, m4_golden **out, m4_error *err) {
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
    if (!g) {
        H5Fclose(file);
        return m4_fail(err, "%s: out of memory (%zu bytes)", path, sizeof *g);
    }
    g->file = file;
    snprintf(g->path, sizeof g->path, "%s", path);
    *out = g;
    return 0;
}

void m4_golden_close(m4_golden *g) {
    if (!g) return;
    H5Fclose(g->file);
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

int m4_golden_dtype(const m4_golden *g, const char *path, char *buf, size_t size, m4_error *err) {
    if (!m4_golden_has(g, path)) return m4_fail(err, "%s: dataset \"%s\" is missing", g->path, path);
    hid_t ds = H5Dopen2(g->file, path, H5P_DEFAULT);
    if (ds < 0) return m4_fail(err, "%s: \"%s\" is not a dataset", g->path, path);
    hid_t type = H5Dget_type(ds);
    H5T_class_t cls = type < 0 ? H5T_NO_CLASS : H5Tget_class(type);
    size_t bits = type < 0 ? 0 : 8 * H5Tget_size(type);
    if (cls == H5T_FLOAT) snprintf(buf, size, "float%zu", bits);
    else if (cls == H5T_INTEGER) snprintf(buf, size, "%sint%zu", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", bits);
    else snprintf(buf, size, "%s", cls == H5T_STRING ? "string" : "other");
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
    size_t bytes = (size_t)(out->numel ? out->numel : 1) * (as_int ? sizeof(int64_t) : sizeof(float));
    void *data = malloc(bytes);
    if (!data) {
        rc = m4_fail(err, "%s: out of memory reading \"%s\" (%zu bytes)", g->path, path, bytes);
        goto done;
    }
    /* HDF5 converts the stored type (float64, int32, …) to the memory type. */
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
