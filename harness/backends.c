/* backends.c — the backends built into this binary. */
#include <stddef.h>
#include <string.h>

#include "backend.h"

static const m4_backend *const backends[] = {&m4_backend_reference};
static const char *const names[] = {"ref", NULL};

const m4_backend *m4_backend_find(const char *name) {
    for (size_t i = 0; i < sizeof backends / sizeof *backends; i++)
        if (strcmp(backends[i]->name, name) == 0) return backends[i];
    return NULL;
}

const char *const *m4_backend_names(void) { return names; }
