/* m4_output.c — see m4_output.h. */
#define _DEFAULT_SOURCE /* sigprocmask, getrandom, fsync with -std=c11 */
#include "m4_output.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "m4_faults.h"

/* The temporary file being written: its name, an open descriptor (for fsync and the byte count)
 * and its m4_faults slot. */
typedef struct {
    char *name;
    int fd;
    int slot;
} temporary;

/* Every signal blocked while a temporary file and its registration must appear (or disappear)
 * together: a SIGINT between the two would leave an unregistered file behind. */
static void block_signals(sigset_t *saved) {
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, saved);
}

static void restore_signals(const sigset_t *saved) { sigprocmask(SIG_SETMASK, saved, NULL); }

/* Six characters from [A-Za-z0-9] for the name's suffix; unpredictable where getrandom works,
 * different on each call anyway. */
static void random_suffix(char out[6]) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    static unsigned calls;
    unsigned char bytes[6];
    if (getrandom(bytes, sizeof bytes, GRND_NONBLOCK) != (ssize_t)sizeof bytes) {
        uint64_t x = ((uint64_t)getpid() << 20 ^ ++calls) * 0x9E3779B97F4A7C15u ^ (uint64_t)time(NULL);
        for (int i = 0; i < 6; i++, x >>= 8) bytes[i] = (unsigned char)x;
    }
    for (int i = 0; i < 6; i++) out[i] = alphabet[bytes[i] % (sizeof alphabet - 1)];
}

/* Creates PATH.tmp-XXXXXX exclusively, mode 0666 less the umask, and registers it. */
static int create_temporary(const char *path, const char *what, temporary *t, m4_error *err) {
    const size_t size = strlen(path) + sizeof ".tmp-XXXXXX";
    t->fd = t->slot = -1;
    t->name = malloc(size);
    if (!t->name) return m4_fail(err, "%s: cannot write the %s: out of memory (%zu bytes)", path, what, size);
    int cause = EEXIST;
    for (int attempt = 0; attempt < 100 && cause == EEXIST; attempt++) {
        char suffix[6];
        random_suffix(suffix);
        snprintf(t->name, size, "%s.tmp-%.6s", path, suffix);
        sigset_t saved;
        block_signals(&saved);
        t->fd = open(t->name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        cause = errno;
        if (t->fd >= 0 && (t->slot = m4_faults_track_temporary(t->name)) < 0) {
            unlink(t->name), close(t->fd);
            t->fd = -1, cause = ENOMEM;
        }
        restore_signals(&saved);
        if (t->fd >= 0) return 0;
    }
    free(t->name);
    return m4_fail(err, "%s: cannot write the %s: cannot create a temporary file beside it (%s)", path, what,
                   strerror(cause));
}

/* Renames the temporary file over `path` (keep) or removes it, and unregisters it. */
static int finish_temporary(temporary *t, const char *path, bool keep) {
    sigset_t saved;
    block_signals(&saved);
    int rc = keep ? rename(t->name, path) : 0, cause = errno;
    if (!keep || rc != 0) unlink(t->name);
    m4_faults_forget_temporary(t->slot);
    restore_signals(&saved);
    free(t->name);
    errno = cause;
    return rc;
}

/* The causes that mean "no room for the file", spelled out for the message; NULL for any other. */
static const char *no_room(int cause) {
    switch (cause) {
    case ENOSPC: return "disk full (ENOSPC)";
    case EDQUOT: return "disk quota exceeded (EDQUOT)";
    case EFBIG: return "file too large (EFBIG: the file system's or `ulimit -f`'s limit)";
    default: return NULL;
    }
}

/* The bytes a file holds: its size, or less where it has holes never written (HDF5 sets the end of
 * the file before writing up to it), counted by the blocks it has on disk. */
static intmax_t bytes_held(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return 0;
    const intmax_t allocated = (intmax_t)st.st_blocks * 512;
    return allocated < (intmax_t)st.st_size ? allocated : (intmax_t)st.st_size;
}

int m4_write_atomically(const char *path, const char *what, int (*fill)(const char *tmp, const void *content),
                        const void *content, m4_error *err) {
    temporary t;
    if (create_temporary(path, what, &t, err)) return -1;
    const char *failed = NULL; /* the step that failed */
    int cause = 0;
    errno = 0;
    if (fill(t.name, content) != 0) failed = "write error", cause = errno;
    /* fsync: a rename that reaches the disk before the data would leave an empty file after a crash */
    else if (fsync(t.fd) != 0) failed = "cannot sync it to disk", cause = errno;
    const intmax_t written = bytes_held(t.fd);
    if (close(t.fd) != 0 && !failed) failed = "cannot close it", cause = errno;
    if (finish_temporary(&t, path, !failed) != 0 && !failed) {
        return m4_fail(err, "%s: cannot write the %s: cannot rename the temporary file over it (%s): nothing written",
                       path, what, strerror(errno));
    }
    if (!failed) return 0;
    if (no_room(cause))
        return m4_fail(err, "%s: cannot write the %s: %s after %jd bytes: nothing written", path, what,
                       no_room(cause), written);
    return m4_fail(err, "%s: cannot write the %s: %s (%s) after %jd bytes: nothing written", path, what, failed,
                   cause ? strerror(cause) : "unknown cause", written);
}

/* A document written through a stdio stream: fill(f, content) then flush and close; -1 (errno
 * from the step that failed) when any of them failed. */
typedef struct {
    int (*fill)(FILE *f, const void *content);
    const void *content;
} stream_writer;

static int fill_stream(const char *tmp, const void *writer) {
    const stream_writer *w = writer;
    FILE *f = fopen(tmp, "w"); /* the temporary file exists: its mode stays */
    if (!f) return -1;
    errno = 0;
    int rc = w->fill(f, w->content) != 0 || fflush(f) != 0 || ferror(f) ? -1 : 0;
    int cause = errno;
    if (fclose(f) != 0 && rc == 0) return -1;
    errno = cause;
    return rc;
}

int m4_write_stream_atomically(const char *path, const char *what, int (*fill)(FILE *f, const void *content),
                               const void *content, m4_error *err) {
    const stream_writer w = {fill, content};
    return m4_write_atomically(path, what, fill_stream, &w, err);
}

static int fill_json(FILE *f, const void *root) {
    return json_dumpf(root, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
}

int m4_write_json_file(const void *json_root, const char *path, const char *what, m4_error *err) {
    return m4_write_stream_atomically(path, what, fill_json, json_root, err);
}
