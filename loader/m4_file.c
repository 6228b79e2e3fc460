/* m4_file.c — see m4_file.h. */
#include "m4_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *m4_file_kind(mode_t mode) {
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a folder";
    if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISLNK(mode)) return "a symbolic link";
    return "not a regular file";
}

int m4_file_open_regular(const char *path, const char *what, size_t *size, m4_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return m4_fail(err, "%s: cannot open %s: %s", path, what, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int cause = errno;
        close(fd);
        return m4_fail(err, "%s: cannot stat %s: %s", path, what, strerror(cause));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return m4_fail(err, "%s: %s is %s, not a regular file", path, what, m4_file_kind(st.st_mode));
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        int cause = errno;
        close(fd);
        return m4_fail(err, "%s: cannot read %s: %s", path, what, strerror(cause));
    }
    *size = (size_t)st.st_size;
    return fd;
}

int m4_file_read_all(const char *path, const char *what, size_t limit, const char *limit_name, char **data,
                     size_t *size, m4_error *err) {
    *data = NULL;
    *size = 0;
    size_t bytes;
    int fd = m4_file_open_regular(path, what, &bytes, err);
    if (fd < 0) return -1;
    if (bytes > limit) {
        close(fd);
        return m4_fail(err, "%s: %s has %zu bytes, more than the %zu-byte limit (%s)", path, what, bytes, limit,
                       limit_name);
    }
    char *buffer = malloc(bytes + 1);
    if (!buffer) {
        close(fd);
        return m4_fail(err, "%s: out of memory reading %s (%zu bytes)", path, what, bytes);
    }
    size_t got = 0;
    while (got < bytes) {
        ssize_t n = read(fd, buffer + got, bytes - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int cause = n < 0 ? errno : 0;
            close(fd);
            free(buffer);
            return cause ? m4_fail(err, "%s: read error in %s after %zu of %zu bytes: %s", path, what, got, bytes,
                                   strerror(cause))
                         : m4_fail(err, "%s: %s ended after %zu of its %zu bytes (truncated while read?)", path,
                                   what, got, bytes);
        }
        got += (size_t)n;
    }
    close(fd);
    buffer[bytes] = 0;
    *data = buffer;
    *size = bytes;
    return 0;
}
