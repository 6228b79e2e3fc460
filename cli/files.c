/* files.c — the folder scan of the command line (files.h). */
#include "files.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

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
