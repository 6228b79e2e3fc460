/* fuzz_common.h — what the libFuzzer targets share: a private scratch folder for the temporary
 * files the real code paths open (they take paths, not buffers), and the invariant check.
 *
 * The scratch folder is made once per process under $TMPDIR (or /dev/shm, or /tmp) and removed
 * at exit; ci/fuzz-smoke points TMPDIR at a folder it deletes, so nothing is left behind even when
 * a target is killed. Fuzz targets are test code: the file-level state here is theirs, not the
 * library's. */
#ifndef M4_FUZZ_COMMON_H
#define M4_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stops the run with a report when an invariant of the code under test does not hold: libFuzzer
 * treats the abort as a crash and saves the input. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* M4_FUZZ_VERBOSE=1 prints each input's error message (to check what seeds reach). */
static inline void fuzz_note(const char *what, const char *msg) {
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("M4_FUZZ_VERBOSE") && strcmp(getenv("M4_FUZZ_VERBOSE"), "0") != 0;
    if (verbose) fprintf(stderr, "[%s] %s\n", what, msg);
}

static char fuzz_dir_path[512];
static char fuzz_made[16][600]; /* files to remove at exit (fixed names, rewritten per input) */
static int fuzz_n_made;

static inline void fuzz_cleanup(void) {
    for (int i = fuzz_n_made - 1; i >= 0; i--) remove(fuzz_made[i]);
    if (fuzz_dir_path[0]) rmdir(fuzz_dir_path);
}

/* The scratch folder, made on first use. */
static inline const char *fuzz_dir(void) {
    if (fuzz_dir_path[0]) return fuzz_dir_path;
    const char *base = getenv("TMPDIR");
    struct stat st;
    if (!base || !*base) base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/m4fuzz.XXXXXX", base);
    if (!mkdtemp(fuzz_dir_path)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(fuzz_cleanup);
    return fuzz_dir_path;
}

/* "<scratch>/<name>" into buf; the file (or folder) is remembered for removal at exit. */
static inline const char *fuzz_path(const char *name, char *buf, size_t size) {
    snprintf(buf, size, "%s/%s", fuzz_dir(), name);
    for (int i = 0; i < fuzz_n_made; i++)
        if (strcmp(fuzz_made[i], buf) == 0) return buf;
    if (fuzz_n_made < (int)(sizeof fuzz_made / sizeof fuzz_made[0]))
        snprintf(fuzz_made[fuzz_n_made++], sizeof fuzz_made[0], "%s", buf);
    return buf;
}

static inline const char *fuzz_mkdir(const char *name, char *buf, size_t size) {
    fuzz_path(name, buf, size);
    if (mkdir(buf, 0700) != 0) {
        struct stat st;
        if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) {
            perror(buf);
            abort();
        }
    }
    return buf;
}

/* Writes size bytes to path (replacing it). */
static inline void fuzz_write(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

#endif
