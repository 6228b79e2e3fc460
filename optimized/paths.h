/* paths.h — the CUDA fast paths that have a simpler twin, and which of them a GPU run has proven.
 *
 * The one table (paths.c) every switch, report and test reads. A fast path is *proven* when a
 * committed bench/results/ file from `scripts/gpu-check` on a GPU records it as proven (its
 * conformance cases and GPU tests passing with it on, its compute-sanitizer runs clean); the
 * table names that file and the commit it measured. Proven paths run by default; unproven ones
 * stay off and their twin runs, until a commit adds the result file that proves them (that commit
 * also fills in the row's proof; tests/test_cuda_paths.c holds the defaults to the files).
 *
 * Environment, read when a CUDA backend opens (m4_cuda_paths_from_env):
 *   M4_CUDA_ENABLE=name,…|all    switch unproven paths on (to prove or measure them)
 *   M4_CUDA_DISABLE=name,…|all   switch paths off (bisecting, A/B runs); applied after ENABLE
 * Plain C: the CLI's help and the CPU tests read it too. */
#ifndef M4_CUDA_PATHS_H
#define M4_CUDA_PATHS_H

#include <stdbool.h>
#include <stddef.h>

#include "m4_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    M4_PATH_FLASH,          /* bf16 prefill attention on the tensor cores (flash_attention.cu) */
    M4_PATH_CUDNN,          /* cuDNN's fused attention for the bf16 prefill (cudnn_attention.cu) */
    M4_PATH_GROUPED,        /* grouped expert GEMM (grouped_gemm.cu) */
    M4_PATH_PAIRS,          /* weights sharing an input uploaded side by side, run as one */
    M4_PATH_LATENT_TC,      /* tensor-core latent attention (kernels/latent_attention.cu) */
    M4_PATH_GRAPHS,         /* the session's one-token step captured as a CUDA graph */
    M4_PATH_PROMPT_EXPAND,  /* a prompt into an empty cache takes the HF form */
    M4_PATH_FP8_CODES,      /* an FP8 checkpoint's GEMM weights kept as FP8 codes on cuda-bf16 */
    M4_PATH_COUNT
} m4_cuda_path;

typedef struct {
    const char *name;          /* the switch's name */
    const char *fast;          /* what the fast path does */
    const char *twin;          /* what runs when it is off */
    const char *proof;         /* the bench/results/ file whose GPU run proved it; NULL: unproven */
    const char *proof_commit;  /* the commit that run measured (NULL when unproven) */
} m4_cuda_path_info;

extern const m4_cuda_path_info m4_cuda_path_table[M4_PATH_COUNT];

/* Which paths are on. */
typedef struct {
    bool on[M4_PATH_COUNT];
} m4_cuda_paths;

static inline bool m4_cuda_path_proven(m4_cuda_path p) { return m4_cuda_path_table[p].proof != NULL; }

/* The defaults: exactly the proven paths on. */
m4_cuda_paths m4_cuda_paths_default(void);

/* The defaults, then `enable` switched on, then `disable` switched off: comma-separated names or
 * `all` (NULL or empty: nothing). -1 with err naming the variable and the unknown name. */
int m4_cuda_paths_parse(const char *enable, const char *disable, m4_cuda_paths *out, m4_error *err);

/* m4_cuda_paths_parse of M4_CUDA_ENABLE and M4_CUDA_DISABLE. */
int m4_cuda_paths_from_env(m4_cuda_paths *out, m4_error *err);

/* One line per path: "name on|off  proven (FILE @ COMMIT)|unproven  fast … | twin …" into buf
 * (NUL-terminated, truncated to n); returns the length the whole text needs. */
size_t m4_cuda_paths_describe(const m4_cuda_paths *paths, char *buf, size_t n);

/* "flash,grouped" — the names of the paths that are on ("none" when none), into buf. */
size_t m4_cuda_paths_list_on(const m4_cuda_paths *paths, char *buf, size_t n);

/* The switches in effect for the process's CUDA backends: set when a backend opens. */
extern m4_cuda_paths m4_cuda_path_switches;

static inline bool m4_cuda_path_on(m4_cuda_path p) { return m4_cuda_path_switches.on[p]; }

#ifdef __cplusplus
}
#endif

#endif
