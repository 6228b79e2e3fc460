/* candidate_edit.c — makes bad candidate files for the tests of `mistral4 conform --candidate`
 * (tests/candidate_tests.cmake) with the HDF5 C API, so CI needs no Python:
 *
 *   candidate_edit FILE scale PATH FACTOR   multiplies float dataset PATH by FACTOR in place
 *   candidate_edit FILE delete PATH         removes dataset or group PATH
 *   candidate_edit FILE reshape PATH        replaces PATH by float32 zeros whose last dimension is 1
 *   candidate_edit FILE retype PATH         replaces PATH by a float64 copy
 *   candidate_edit FILE attr NAME VALUE     sets root string attribute NAME
 *   candidate_edit FILE link PATH TARGET    adds soft link PATH -> TARGET (groups created)
 *
 * Exits 0, or 1 with a message on stderr. */
#include <hdf5.h>
#include <hdf5_hl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const char *path) {
    fprintf(stderr, "candidate_edit: %s: %s\n", path, what);
    return 1;
}

/* Reads float dataset `path` as double: its data (malloc'd), rank and dims. */
static double *read_all(hid_t file, const char *path, int *ndim, hsize_t *dims) {
    hid_t ds = H5Dopen2(file, path, H5P_DEFAULT);
    if (ds < 0) return NULL;
    hid_t space = H5Dget_space(ds);
    *ndim = H5Sget_simple_extent_dims(space, dims, NULL);
    hsize_t n = 1;
    for (int d = 0; d < *ndim; d++) n *= dims[d];
    double *data = malloc(sizeof *data * (n ? n : 1));
    if (data && H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
        free(data);
        data = NULL;
    }
    H5Sclose(space);
    H5Dclose(ds);
    return data;
}

/* Replaces `path` by a new dataset of `type` and shape dims[ndim] holding data (as double). */
static int replace(hid_t file, const char *path, hid_t type, int ndim, const hsize_t *dims, const double *data) {
    if (H5Ldelete(file, path, H5P_DEFAULT) < 0) return -1;
    hid_t space = H5Screate_simple(ndim, dims, NULL);
    hid_t ds = H5Dcreate2(file, path, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = ds < 0 || H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0 ? -1 : 0;
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(space);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: candidate_edit FILE scale|delete|reshape|retype|attr|link PATH [VALUE]\n");
        return 1;
    }
    const char *file_path = argv[1], *op = argv[2], *path = argv[3];
    hid_t file = H5Fopen(file_path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (file < 0) return fail("cannot open as HDF5 for writing", file_path);
    int rc = 0;
    if (strcmp(op, "delete") == 0) {
        rc = H5Ldelete(file, path, H5P_DEFAULT) < 0 ? fail("cannot delete", path) : 0;
    } else if (strcmp(op, "link") == 0 && argc == 5) {
        hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
        H5Pset_create_intermediate_group(lcpl, 1);
        rc = H5Lcreate_soft(argv[4], file, path, lcpl, H5P_DEFAULT) < 0 ? fail("cannot link", path) : 0;
        H5Pclose(lcpl);
    } else if (strcmp(op, "attr") == 0 && argc == 5) {
        if (H5Aexists(file, path) > 0) H5Adelete(file, path);
        rc = H5LTset_attribute_string(file, "/", path, argv[4]) < 0 ? fail("cannot set the attribute", path) : 0;
    } else {
        int ndim = 0;
        hsize_t dims[H5S_MAX_RANK];
        double *data = read_all(file, path, &ndim, dims);
        if (!data) {
            rc = fail("cannot read as a float dataset", path);
        } else if (strcmp(op, "scale") == 0 && argc == 5) {
            hsize_t n = 1;
            for (int d = 0; d < ndim; d++) n *= dims[d];
            for (hsize_t i = 0; i < n; i++) data[i] *= atof(argv[4]);
            hid_t ds = H5Dopen2(file, path, H5P_DEFAULT);
            rc = ds < 0 || H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0
                     ? fail("cannot write", path) : 0;
            if (ds >= 0) H5Dclose(ds);
        } else if (strcmp(op, "reshape") == 0 && ndim > 1) {
            hsize_t shorter[H5S_MAX_RANK];
            memcpy(shorter, dims, sizeof shorter);
            shorter[ndim - 1] = 1;
            hsize_t n = 1;
            for (int d = 0; d < ndim; d++) n *= shorter[d];
            double *z = calloc(n ? n : 1, sizeof *z);
            rc = !z || replace(file, path, H5T_IEEE_F32LE, ndim, shorter, z) ? fail("cannot reshape", path) : 0;
            free(z);
        } else if (strcmp(op, "retype") == 0) {
            rc = replace(file, path, H5T_IEEE_F64LE, ndim, dims, data) ? fail("cannot retype", path) : 0;
        } else {
            rc = fail("unknown operation or missing value", op);
        }
        free(data);
    }
    H5Fclose(file);
    return rc;
}
