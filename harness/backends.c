/* backends.c — the backends built into this binary: the reference always, the CUDA ones when the
 * build found nvcc (M4_HAVE_CUDA). */
#include <stddef.h>
#include <string.h>

#include "backend.h"

static const m4_backend *const backends[] = {
    &m4_backend_reference,
#ifdef M4_HAVE_CUDA
    &m4_backend_cuda_fp32,
    &m4_backend_cuda_bf16,
#endif
};
static const char *const names[] = {
    "ref",
#ifdef M4_HAVE_CUDA
    "cuda-fp32",
    "cuda-bf16",
#endif
    NULL,
};

const m4_backend *m4_backend_find(const char *name) {
    for (size_t i = 0; i < sizeof backends / sizeof *backends; i++)
        if (strcmp(backends[i]->name, name) == 0) return backends[i];
    return NULL;
}

const char *const *m4_backend_names(void) { return names; }
