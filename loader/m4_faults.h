/* m4_faults.h — what a signal handler needs to know to leave nothing half-done: the temporary
 * files being written (to remove them on SIGINT/SIGTERM) and the files mapped into memory (to name
 * the one that shrank when a read of it raises SIGBUS).
 *
 * The libraries only register and unregister; the command line installs the handlers
 * (cli/signals.c) and calls the two async-signal-safe readers below from them. Registration is
 * made from one thread at a time (the thread that writes or opens); the readers may interrupt it
 * at any instruction: an entry is published only once complete and freed only after it is
 * unpublished. */
#ifndef M4_FAULTS_H
#define M4_FAULTS_H

#include <stddef.h>

/* ---- temporary files -------------------------------------------------------------------------- */

/* Most temporary files registered at once (the writer holds one at a time). */
#define M4_FAULTS_MAX_TEMPORARIES 16

/* Registers `path` (copied) as a temporary file to remove if the process is interrupted. Returns
 * the slot to pass to m4_faults_forget_temporary, or -1 when out of memory or all slots are taken. */
int m4_faults_track_temporary(const char *path);

/* Unregisters a slot (after the file was renamed or removed); -1 is ignored. */
void m4_faults_forget_temporary(int slot);

/* Removes every registered temporary file (unlink only). Async-signal-safe. */
void m4_faults_remove_temporaries(void);

/* ---- mapped files ----------------------------------------------------------------------------- */

/* Registers the mapping [base, base + length) of file `path` (copied). 0, or -1 when out of memory. */
int m4_faults_track_mapping(const void *base, size_t length, const char *path);

/* Unregisters the mapping that starts at `base` (before it is unmapped); unknown bases are ignored. */
void m4_faults_forget_mapping(const void *base);

/* The path of the registered mapping holding `address`, or NULL. Async-signal-safe. */
const char *m4_faults_mapped_file(const void *address);

#endif
