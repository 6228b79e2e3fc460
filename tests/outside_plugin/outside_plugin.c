/* outside_plugin.c — a plugin as an outside project writes it: only <mistral4/plugin.h>, two
 * components (text.embed_tokens and every RMSNorm) in plain C, the rest left to "not
 * implemented". Built by tests/outside_plugin/CMakeLists.txt against an installed mistral4
 * (find_package or pkg-config) and, in the tree, by tests/plugins/plugins.cmake. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <mistral4/plugin.h>

typedef struct {
    m4_plugin_weight embed;  /* [V, D] */
} plugin;

static int init(const m4_plugin_host *host, void **ctx, m4_plugin_error *err) {
    plugin *p = calloc(1, sizeof *p);
    if (!p) return m4_plugin_fail(err, "out of memory");
    if (host->weight(host->host, "model.language_model.embed_tokens.weight", &p->embed, err)) {
        free(p);
        return -1;
    }
    *ctx = p;
    return 0;
}

static void teardown(void *ctx) { free(ctx); }

/* text.embed_tokens: ids [n] → out [n, D], rows of the table */
static int embed_tokens(void *ctx, const int64_t *ids, int64_t n, float *out, m4_plugin_error *err) {
    const plugin *p = ctx;
    const int64_t V = p->embed.shape[0], D = p->embed.shape[1];
    for (int64_t t = 0; t < n; t++) {
        if (ids[t] < 0 || ids[t] >= V) return m4_plugin_fail(err, "token id %lld outside [0, %lld)", (long long)ids[t], (long long)V);
        memcpy(out + t * D, p->embed.data + ids[t] * D, sizeof *out * (size_t)D);
    }
    return 0;
}

/* RMSNorm: y = x · rsqrt(mean(x²) + eps) · w, in float32 like HF */
static int rmsnorm(void *ctx, const m4_plugin_weight *w, const float *x, int64_t n, int64_t dim, float eps,
                   float *y, m4_plugin_error *err) {
    for (int64_t r = 0; r < n; r++) {
        float sum = 0.0f;
        for (int64_t j = 0; j < dim; j++) sum += x[r * dim + j] * x[r * dim + j];
        const float inv = 1.0f / sqrtf(sum / (float)dim + eps);
        for (int64_t j = 0; j < dim; j++) y[r * dim + j] = w->data[j] * (x[r * dim + j] * inv);
    }
    return 0;
}

static const m4_plugin_info info = {
    .abi_version = M4_PLUGIN_ABI_VERSION,
    .name = "outside",
    .description = "two components in plain C (tests/outside_plugin)",
    .buffers = M4_PLUGIN_HOST_BUFFERS,
    .components = M4_PLUGIN_EMBED_TOKENS | M4_PLUGIN_RMSNORM,
    .init = init,
    .teardown = teardown,
    .embed_tokens = embed_tokens,
    .rmsnorm = rmsnorm,
};

M4_PLUGIN_EXPORT const m4_plugin_info *m4_plugin_get_info(void) { return &info; }
