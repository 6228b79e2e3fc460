/* files.c — the command line's look at the file system (files.h). */
#include "files.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cli_files_ending(const char *dir, const char *suffix, void (*each)(const char *path, double bytes, void *user),
                     void *user) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    const size_t s = strlen(suffix);
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const size_t n = strlen(e->d_name);
        if (n <= s || strcmp(e->d_name + n - s, suffix) != 0) continue;
        found++;
        if (!each) continue;
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        each(path, stat(path, &st) == 0 ? (double)st.st_size : 0, user);
    }
    closedir(d);
    return found;
}

int cli_output_problem(const char *path, char *why, size_t size) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(why, size, "it is a folder; name a file");
        return -1;
    }
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if (stat(dir, &st) != 0) {
        if (errno == ENOENT) snprintf(why, size, "the folder %s does not exist", dir);
        else snprintf(why, size, "the folder %s cannot be looked at (%s)", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(why, size, "%s is not a folder", dir);
        return -1;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        snprintf(why, size, "the folder %s is not writable (%s)", dir, strerror(errno));
        return -1;
    }
    return 0;
}

bool cli_has_folder(const char *dir, const char *name) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
