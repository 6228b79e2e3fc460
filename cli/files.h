/* files.h — the one folder scan of the command line: the files of a folder whose names end in a
 * given suffix (a checkpoint's *.safetensors, a golden case's *.h5). */
#ifndef M4_CLI_FILES_H
#define M4_CLI_FILES_H

/* Calls each(path, bytes, user) (may be NULL) for every file of `dir` whose name ends in `suffix`
 * (and is longer than it), in readdir order; bytes is its size (stat), 0 when unreadable. Returns
 * how many there were, or -1 when dir cannot be opened. */
int cli_files_ending(const char *dir, const char *suffix, void (*each)(const char *path, double bytes, void *user),
                     void *user);

#endif
