/* files.h — the command line's look at the file system: the one folder scan (the files of a
 * folder whose names end in a given suffix: a checkpoint's *.safetensors, a golden case's *.h5),
 * and the checks made before any work starts (an output path can be written, a case folder). */
#ifndef M4_CLI_FILES_H
#define M4_CLI_FILES_H

#include <stdbool.h>
#include <stddef.h>

/* Calls each(path, bytes, user) (may be NULL) for every file of `dir` whose name ends in `suffix`
 * (and is longer than it), in readdir order; bytes is its size (stat), 0 when unreadable. Returns
 * how many there were, or -1 when dir cannot be opened. */
int cli_files_ending(const char *dir, const char *suffix, void (*each)(const char *path, double bytes, void *user),
                     void *user);

/* Whether `path` can be written as an output file, checked before any work starts: its folder
 * exists, is a folder and is writable, and `path` is not a folder. 0, or -1 with the reason in
 * `why` ("the folder build/x does not exist"). */
int cli_output_problem(const char *path, char *why, size_t size);

/* Whether `dir` holds a folder `name` (as golden cases hold model/). */
bool cli_has_folder(const char *dir, const char *name);

#endif
