/* m4_faults.c — see m4_faults.h. Both registries are read by signal handlers, so what they hold
 * is reached through atomic pointers: a handler sees an entry whole or not at all. */
#define _DEFAULT_SOURCE /* strdup with -std=c11 */
#include "m4_faults.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- temporary files: a fixed table of owned path copies (NULL = free slot) ------------------- */

static _Atomic(char *) temporaries[M4_FAULTS_MAX_TEMPORARIES];

int m4_faults_track_temporary(const char *path) {
    char *copy = strdup(path);
    if (!copy) return -1;
    for (int i = 0; i < M4_FAULTS_MAX_TEMPORARIES; i++) {
        char *expected = NULL;
        if (atomic_compare_exchange_strong(&temporaries[i], &expected, copy)) return i;
    }
    free(copy);
    return -1;
}

void m4_faults_forget_temporary(int slot) {
    if (slot < 0 || slot >= M4_FAULTS_MAX_TEMPORARIES) return;
    free(atomic_exchange(&temporaries[slot], NULL));
}

void m4_faults_remove_temporaries(void) {
    for (int i = 0; i < M4_FAULTS_MAX_TEMPORARIES; i++) {
        const char *path = atomic_load(&temporaries[i]);
        if (path) unlink(path);
    }
}

/* ---- mapped files: a list, newest first (a checkpoint may have any number of shards) ---------- */

typedef struct mapping {
    const uint8_t *base;
    size_t length;
    char *path;
    _Atomic(struct mapping *) next;
} mapping;

static _Atomic(mapping *) mappings;

int m4_faults_track_mapping(const void *base, size_t length, const char *path) {
    mapping *m = malloc(sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return -1;
    }
    m->base = base;
    m->length = length;
    atomic_init(&m->next, atomic_load(&mappings));
    atomic_store(&mappings, m); /* published whole */
    return 0;
}

void m4_faults_forget_mapping(const void *base) {
    _Atomic(mapping *) *link = &mappings;
    for (mapping *m = atomic_load(link); m; link = &m->next, m = atomic_load(link)) {
        if (m->base != base) continue;
        atomic_store(link, atomic_load(&m->next)); /* unpublished, then freed */
        free(m->path);
        free(m);
        return;
    }
}

const char *m4_faults_mapped_file(const void *address) {
    const uint8_t *a = address;
    for (mapping *m = atomic_load(&mappings); m; m = atomic_load(&m->next))
        if (a >= m->base && a < m->base + m->length) return m->path;
    return NULL;
}
