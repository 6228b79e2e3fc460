/* m4_file.h — how every input file is opened: as a regular file, checked on the opened
 * descriptor, of bounded size, with an error that names the file and what it is instead.
 *
 * A FIFO, device, socket or folder where a file is expected would block the open (a FIFO with no
 * writer), never end (/dev/zero) or fail later with a misleading message; every reader (config,
 * tokenizer, conversation, image, golden, safetensors shard) opens through here. */
#ifndef M4_FILE_H
#define M4_FILE_H

#include <stddef.h>
#include <sys/types.h>

#include "m4_error.h"

/* What a file of this st_mode is, for messages: "a folder", "a FIFO (named pipe)", "a character
 * device", "a block device", "a socket", "a symbolic link", "a regular file". */
const char *m4_file_kind(mode_t mode);

/* Opens path read-only (close-on-exec) when it is a regular file. The open does not block, so a
 * FIFO is refused rather than waited on, and the check is made with fstat on the opened
 * descriptor, so the file cannot be swapped between check and use. `what` names the file's role
 * in messages ("the tokenizer file"). Returns the descriptor (blocking mode restored) and sets
 * *size, or returns -1 with err filled: "PATH: the tokenizer file is a FIFO (named pipe), not a
 * regular file". */
int m4_file_open_regular(const char *path, const char *what, size_t *size, m4_error *err);

/* Reads the whole of a regular file of at most `limit` bytes into a malloc'ed buffer, with a NUL
 * after the last byte (so JSON text can be parsed in place); *size excludes the NUL. limit_name
 * is the constant a user looks up in docs/INPUTS.md (M4_..._MAX_BYTES). The caller frees *data. */
int m4_file_read_all(const char *path, const char *what, size_t limit, const char *limit_name, char **data,
                     size_t *size, m4_error *err);

#endif
