/* plugin_backend.c — a plugin (include/mistral4/plugin.h) behind the backend interface: dlopen,
 * the ABI checks, and one adapter per m4_backend entry that turns the harness's types into the
 * ABI's plain ones (weights as float32 views, grids, pixels, traces) and the plugin's error
 * string into an m4_error. */
#include "plugin_backend.h"

#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <mistral4/plugin.h>

/* A float32 view of a weight, made once per weight (key: the m4_weight or the checkpoint tensor)
 * and kept until close. */
typedef struct {
    const void *key;
    m4_plugin_weight view;
    float *data;
} weight_view;

typedef struct {
    void *library;
    const m4_plugin_info *info;
    char path[1024], name[160], table_name[200];
    m4_backend table;
    /* while open */
    const m4_model *model;
    void *ctx;
    m4_plugin_host host;
    m4_plugin_error perr;
    weight_view *views;
    size_t n_views, cap_views;
    m4_plugin_grid *grids;
    int64_t cap_grids;
    /* a crash inside the plugin (guarded calls, below) */
    sigjmp_buf crash_jump;
    pthread_t caller;        /* the thread that called the plugin (and set crash_jump) */
    struct sigaction saved[5];
    volatile sig_atomic_t crash_signal;
    bool crashed;
} plugin;

/* The loaded plugin: the backend entries get only their state, so one plugin per process. */
static plugin loaded;

/* The plugin's answer: 0, or -1 with its message (or a note that it gave none) in err. */
static int plugin_status(plugin *p, int rc, m4_error *err) {
    if (rc == 0) return 0;
    return m4_fail(err, "plugin %s: %s", p->name, p->perr.msg[0] ? p->perr.msg : "failed without a message");
}

/* ---- crashes: a signal inside a plugin call ends that call with an error, not the harness ---- */

static const int crash_signals[5] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};

/* On the calling thread: back to its guard. On a thread of the plugin's own (its OpenMP team,
 * say) there is nothing to jump back to: the signal does what it would have done unguarded. */
static void on_crash(int sig) {
    if (!pthread_equal(pthread_self(), loaded.caller)) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    loaded.crash_signal = sig;
    siglongjmp(loaded.crash_jump, 1);
}

/* Routes the crash signals to on_crash while the plugin runs (disarm puts the previous back). */
static void arm(plugin *p) {
    struct sigaction act = {.sa_handler = on_crash};
    sigemptyset(&act.sa_mask);
    p->caller = pthread_self();
    for (int i = 0; i < 5; i++) sigaction(crash_signals[i], &act, &p->saved[i]);
}

static void disarm(plugin *p) {
    for (int i = 0; i < 5; i++) sigaction(crash_signals[i], &p->saved[i], NULL);
}

/* After a crash in `call`: no further call reaches the plugin (its memory may be corrupt). */
static int crashed(plugin *p, const char *call, m4_error *err) {
    disarm(p);
    p->crashed = true;
    return m4_fail(err, "%s: plugin %s crashed in %s (signal %d, %s); no further calls are made", p->path, p->name,
                   call, (int)p->crash_signal, strsignal(p->crash_signal));
}

/* The body of an adapter: `call` (an expression calling the plugin) guarded; returns from the
 * adapter with its status. The component's name is the adapter's, less "plug_". */
#define GUARDED(p, err, call)                                                                      \
    do {                                                                                           \
        if ((p)->crashed) return m4_fail(err, "plugin %s crashed earlier; not called", (p)->name); \
        if (sigsetjmp((p)->crash_jump, 1)) return crashed(p, __func__ + 5, err);                    \
        arm(p);                                                                                    \
        int rc_ = (call);                                                                          \
        disarm(p);                                                                                 \
        return plugin_status(p, rc_, err);                                                         \
    } while (0)

static m4_plugin_error *fresh_error(plugin *p) {
    p->perr.msg[0] = '\0';
    return &p->perr;
}

/* The helpers that allocate stay out of the adapters' frames, which hold a sigsetjmp (GUARDED):
 * inlined there, their locals would draw -Wclobbered (harmlessly: none changes after it). */
#if defined(__GNUC__)
#define OUT_OF_LINE __attribute__((noinline))
#else
#define OUT_OF_LINE
#endif

/* ---- weights as float32 -------------------------------------------------------------------- */

static const weight_view *cached_view(plugin *p, const void *key) {
    for (size_t i = 0; i < p->n_views; i++)
        if (p->views[i].key == key) return &p->views[i];
    return NULL;
}

/* A new view of numel floats for `key`, its data left to the caller to fill; NULL with err set. */
static weight_view *new_view(plugin *p, const void *key, const char *name, int64_t numel, m4_error *err) {
    if (p->n_views == p->cap_views) {
        size_t cap = p->cap_views ? 2 * p->cap_views : 32;
        weight_view *grown = realloc(p->views, cap * sizeof *grown);
        if (!grown) return m4_fail(err, "out of memory for the plugin's weight views"), NULL;
        p->views = grown, p->cap_views = cap;
    }
    float *data = malloc(sizeof *data * (size_t)(numel > 0 ? numel : 1));
    if (!data) return m4_fail(err, "out of memory for a float32 copy of %s (%lld values)", name, (long long)numel), NULL;
    weight_view *v = &p->views[p->n_views++];
    *v = (weight_view){.key = key, .data = data, .view = {.name = name, .data = data}};
    return v;
}

/* The m4_weight a component entry was handed (a norm's, a projector linear's) as float32. */
OUT_OF_LINE static int weight_of(plugin *p, const m4_weight *w, const m4_plugin_weight **out, m4_error *err) {
    const weight_view *v = cached_view(p, w);
    if (!v) {
        weight_view *nv = new_view(p, w, w->name ? w->name : "a weight", w->rows * w->cols, err);
        if (!nv) return -1;
        m4_convert_to_f32(w->dtype, w->data, (size_t)(w->rows * w->cols), w->scale, nv->data);
        nv->view.ndim = w->rows == 1 ? 1 : 2;
        nv->view.shape[0] = w->rows == 1 ? w->cols : w->rows;
        nv->view.shape[1] = w->rows == 1 ? 0 : w->cols;
        v = nv;
    }
    *out = &v->view;
    return 0;
}

/* The checkpoint's tensor `name`, in either spelling (weights.h, "Names"). */
static const m4_tensor *find_tensor(const m4_checkpoint *ckpt, const char *name) {
    static const char *const spellings[][2] = {
        {"model.language_model.", "language_model.model."}, {"model.language_model.", "model."},
        {"lm_head.", "language_model.lm_head."},            {"model.vision_tower.", "vision_tower."},
        {"model.multi_modal_projector.", "multi_modal_projector."},
    };
    const m4_tensor *t = m4_checkpoint_find(ckpt, name);
    for (size_t i = 0; !t && i < sizeof spellings / sizeof spellings[0]; i++)
        for (int dir = 0; !t && dir < 2; dir++) {
            const char *from = spellings[i][dir], *to = spellings[i][!dir];
            char other[512];
            if (strncmp(name, from, strlen(from)) != 0) continue;
            snprintf(other, sizeof other, "%s%s", to, name + strlen(from));
            t = m4_checkpoint_find(ckpt, other);
        }
    return t;
}

/* m4_plugin_host.weight: a checkpoint tensor by name as float32, dequantised with its
 * `<name>_scale_inv` (one scale, or one per expert of a stack). */
static int host_weight(void *host, const char *name, m4_plugin_weight *out, m4_plugin_error *perr) {
    plugin *p = host;
    m4_error err = {{0}};
    const m4_tensor *t = find_tensor(p->model->checkpoint, name);
    if (!t) return m4_plugin_fail(perr, "%s: no tensor \"%s\"", m4_checkpoint_path(p->model->checkpoint), name);
    const weight_view *v = cached_view(p, t);
    if (!v) {
        char scale_name[512];
        snprintf(scale_name, sizeof scale_name, "%s_scale_inv", t->name);
        const m4_tensor *s = m4_checkpoint_find(p->model->checkpoint, scale_name);
        int64_t slices = s ? s->numel : 1, per_slice = slices ? t->numel / slices : 0;
        if (s && (t->ndim > 4 || (s->numel != 1 && s->numel != t->shape[0])))
            return m4_plugin_fail(perr, "%s: %lld scales for %s: the host dequantises one per tensor or per expert only",
                                  scale_name, (long long)s->numel, t->name);
        weight_view *nv = new_view(p, t, t->name, t->numel, &err);
        if (!nv) return m4_plugin_fail(perr, "%s", err.msg);
        for (int64_t k = 0; k < slices; k++) {
            float scale = 1.0f;
            if (s) m4_convert_to_f32(s->dtype, (const char *)s->data + k * (int64_t)m4_dtype_size(s->dtype), 1, 1.0f, &scale);
            m4_convert_to_f32(t->dtype, (const char *)t->data + k * per_slice * (int64_t)m4_dtype_size(t->dtype),
                              (size_t)per_slice, scale, nv->data + k * per_slice);
        }
        nv->view.ndim = t->ndim;
        for (int d = 0; d < t->ndim && d < 4; d++) nv->view.shape[d] = t->shape[d];
        v = nv;
    }
    *out = v->view;
    return 0;
}

/* ---- the harness's types as the ABI's ------------------------------------------------------- */

static m4_plugin_pixels pixels_of(const plugin *p, const m4_pixel_batch *px) {
    return (m4_plugin_pixels){.n = px->n, .channels = p->model->config.vision.num_channels, .height = px->height,
                              .width = px->width, .pixel_values = px->pixel_values, .image_sizes = px->image_sizes};
}

/* grids [n] copied into the ABI's struct (in p->grids, kept until close), or NULL with err set. */
OUT_OF_LINE static const m4_plugin_grid *grids_of(plugin *p, const m4_patch_grid *grids, int64_t n, m4_error *err) {
    if (n > p->cap_grids) {
        m4_plugin_grid *grown = realloc(p->grids, sizeof *grown * (size_t)n);
        if (!grown) return m4_fail(err, "out of memory for %lld patch grids", (long long)n), NULL;
        p->grids = grown, p->cap_grids = n;
    }
    for (int64_t i = 0; i < n; i++) p->grids[i] = (m4_plugin_grid){grids[i].rows, grids[i].cols};
    return p->grids;
}

static int scale_rule_of(m4_softmax_scale_rule rule) {
    return rule == M4_SOFTMAX_SCALE_MSCALE2 ? M4_PLUGIN_SCALE_MSCALE2 : M4_PLUGIN_SCALE_BASE;
}

/* ---- the backend entries ---------------------------------------------------------------------- */

static int plug_open(const m4_model *model, void **state, m4_error *err) {
    plugin *p = &loaded;
    p->model = model;
    p->host = (m4_plugin_host){.abi_version = M4_PLUGIN_ABI_VERSION, .model_dir = m4_checkpoint_path(model->checkpoint),
                               .host = p, .weight = host_weight};
    p->ctx = NULL;
    if (sigsetjmp(p->crash_jump, 1)) return crashed(p, "init", err);
    arm(p);
    int rc = p->info->init(&p->host, &p->ctx, fresh_error(p));
    disarm(p);
    if (rc != 0)
        return m4_fail(err, "%s: plugin %s: init failed: %s", p->path, p->name,
                       p->perr.msg[0] ? p->perr.msg : "no message");
    *state = p;
    return 0;
}

static void plug_close(void *state) {
    plugin *p = state;
    /* after a crash the plugin is not called again; a crash in teardown ends only teardown (the
     * report is complete by then) */
    if (p->info->teardown && !p->crashed) {
        if (sigsetjmp(p->crash_jump, 1) == 0) {
            arm(p);
            p->info->teardown(p->ctx);
        }
        disarm(p);
    }
    for (size_t i = 0; i < p->n_views; i++) free(p->views[i].data);
    free(p->views), free(p->grids);
    p->views = NULL, p->n_views = p->cap_views = 0, p->ctx = NULL;
    p->grids = NULL, p->cap_grids = 0;
}

static double plug_last_device_ms(void *state) {
    plugin *p = state;
    return p->crashed ? -1 : p->info->last_device_ms(p->ctx);
}

static int plug_embed_tokens(void *state, const int64_t *ids, int64_t n, float *out, m4_error *err) {
    plugin *p = state;
    GUARDED(p, err, p->info->embed_tokens(p->ctx, ids, n, out, fresh_error(p)));
}

static int plug_rmsnorm(void *state, const m4_weight *w, const float *x, int64_t n, int64_t dim, float eps,
                        float *y, m4_error *err) {
    plugin *p = state;
    const m4_plugin_weight *pw;
    if (weight_of(p, w, &pw, err)) return -1;
    GUARDED(p, err, p->info->rmsnorm(p->ctx, pw, x, n, dim, eps, y, fresh_error(p)));
}

static int plug_rope(void *state, const int64_t *positions, int64_t n, float *cos, float *sin, m4_error *err) {
    plugin *p = state;
    GUARDED(p, err, p->info->rope(p->ctx, positions, n, cos, sin, fresh_error(p)));
}

static int plug_self_attn(void *state, int layer, const float *x, int64_t B, int64_t S, const int64_t *position_ids,
                          const int64_t *attention_mask, float softmax_scale, float *out, m4_mla_trace *trace,
                          m4_error *err) {
    plugin *p = state;
    m4_plugin_mla_trace t = {0};
    if (trace)
        t = (m4_plugin_mla_trace){.q = trace->q, .kv_a = trace->kv_a, .c_kv = trace->c_kv,
                                  .llama4_scale = trace->llama4_scale, .q_rot = trace->q_rot, .k_rot = trace->k_rot,
                                  .attn_weights = trace->attn_weights, .attn_output = trace->attn_output};
    GUARDED(p, err, p->info->self_attn(p->ctx, layer, x, B, S, position_ids, attention_mask, softmax_scale,
                                               out, &t, fresh_error(p)));
}

static int plug_router(void *state, int layer, const float *x, int64_t n, float *logits, int64_t *topk_ids,
                       float *topk_weights, m4_error *err) {
    plugin *p = state;
    GUARDED(p, err, p->info->router(p->ctx, layer, x, n, logits, topk_ids, topk_weights, fresh_error(p)));
}

static int plug_experts(void *state, int layer, const float *x, int64_t n, const int64_t *topk_ids,
                        const float *topk_weights, float *out, m4_error *err) {
    plugin *p = state;
    GUARDED(p, err, p->info->experts(p->ctx, layer, x, n, topk_ids, topk_weights, out, fresh_error(p)));
}

static int plug_shared_experts(void *state, int layer, const float *x, int64_t n, float *out, m4_error *err) {
    plugin *p = state;
    GUARDED(p, err, p->info->shared_experts(p->ctx, layer, x, n, out, fresh_error(p)));
}

static int plug_mlp(void *state, int layer, const float *x, int64_t n, float *out, m4_error *err) {
    plugin *p = state;
    GUARDED(p, err, p->info->mlp(p->ctx, layer, x, n, out, fresh_error(p)));
}

static int plug_decoder_layer(void *state, int layer, const float *h, int64_t B, int64_t S,
                              const int64_t *position_ids, const int64_t *attention_mask, float softmax_scale,
                              float *out, m4_error *err) {
    plugin *p = state;
    GUARDED(p, err, p->info->decoder_layer(p->ctx, layer, h, B, S, position_ids, attention_mask,
                                                   softmax_scale, out, fresh_error(p)));
}

static int plug_lm_head(void *state, const float *x, int64_t n, float *logits, m4_error *err) {
    plugin *p = state;
    GUARDED(p, err, p->info->lm_head(p->ctx, x, n, logits, fresh_error(p)));
}

static int plug_forward(void *state, const int64_t *ids, const float *inputs_embeds, int64_t B, int64_t S,
                        const int64_t *position_ids, const int64_t *attention_mask, m4_softmax_scale_rule rule,
                        float *logits, m4_error *err) {
    plugin *p = state;
    GUARDED(p, err, p->info->forward(p->ctx, ids, inputs_embeds, B, S, position_ids, attention_mask,
                                             scale_rule_of(rule), logits, fresh_error(p)));
}

static int plug_patch_conv(void *state, const m4_pixel_batch *px, float *out, m4_error *err) {
    plugin *p = state;
    m4_plugin_pixels ppx = pixels_of(p, px);
    GUARDED(p, err, p->info->patch_conv(p->ctx, &ppx, out, fresh_error(p)));
}

static int plug_vision_rope(void *state, const m4_patch_grid *grids, int64_t n_images, float *cos, float *sin,
                            m4_error *err) {
    plugin *p = state;
    const m4_plugin_grid *g = grids_of(p, grids, n_images, err);
    if (!g) return -1;
    GUARDED(p, err, p->info->vision_rope(p->ctx, g, n_images, cos, sin, fresh_error(p)));
}

static int plug_vision_attention(void *state, int layer, const float *x, const m4_patch_grid *grids,
                                 int64_t n_images, float *out, m4_vision_attn_trace *trace, m4_error *err) {
    plugin *p = state;
    m4_plugin_vision_trace t = {0};
    if (trace) t = (m4_plugin_vision_trace){.q_rot = trace->q_rot, .k_rot = trace->k_rot, .attn_weights = trace->attn_weights};
    const m4_plugin_grid *g = grids_of(p, grids, n_images, err);
    if (!g) return -1;
    GUARDED(p, err, p->info->vision_attention(p->ctx, layer, x, g, n_images, out, &t, fresh_error(p)));
}

static int plug_vision_feed_forward(void *state, int layer, const float *x, int64_t n, float *out, m4_error *err) {
    plugin *p = state;
    GUARDED(p, err, p->info->vision_feed_forward(p->ctx, layer, x, n, out, fresh_error(p)));
}

static int plug_vision_layer(void *state, int layer, const float *h, const m4_patch_grid *grids, int64_t n_images,
                             float *out, m4_error *err) {
    plugin *p = state;
    const m4_plugin_grid *g = grids_of(p, grids, n_images, err);
    if (!g) return -1;
    GUARDED(p, err, p->info->vision_layer(p->ctx, layer, h, g, n_images, out, fresh_error(p)));
}

static int plug_vision_tower(void *state, const m4_pixel_batch *px, float *features, m4_error *err) {
    plugin *p = state;
    m4_plugin_pixels ppx = pixels_of(p, px);
    GUARDED(p, err, p->info->vision_tower(p->ctx, &ppx, features, fresh_error(p)));
}

static int plug_patch_merger(void *state, const float *x, const m4_patch_grid *grids, int64_t n_images, float *out,
                             m4_error *err) {
    plugin *p = state;
    const m4_plugin_grid *g = grids_of(p, grids, n_images, err);
    if (!g) return -1;
    GUARDED(p, err, p->info->patch_merger(p->ctx, x, g, n_images, out, fresh_error(p)));
}

static int plug_linear(void *state, const m4_weight *w, const m4_weight *bias, const float *x, int64_t n, float *y,
                       m4_error *err) {
    plugin *p = state;
    const m4_plugin_weight *pw, *pb = NULL;
    if (weight_of(p, w, &pw, err) || (bias && bias->data && weight_of(p, bias, &pb, err))) return -1;
    GUARDED(p, err, p->info->linear(p->ctx, pw, pb, x, n, y, fresh_error(p)));
}

static int plug_activation(void *state, m4_activation act, const float *x, int64_t n, float *y, m4_error *err) {
    static const int acts[] = {[M4_ACT_SILU] = M4_PLUGIN_ACT_SILU, [M4_ACT_GELU] = M4_PLUGIN_ACT_GELU,
                               [M4_ACT_GELU_TANH] = M4_PLUGIN_ACT_GELU_TANH, [M4_ACT_RELU] = M4_PLUGIN_ACT_RELU};
    plugin *p = state;
    GUARDED(p, err, p->info->activation(p->ctx, acts[act], x, n, y, fresh_error(p)));
}

static int plug_projector(void *state, const float *x, const m4_patch_grid *grids, int64_t n_images, float *out,
                          m4_error *err) {
    plugin *p = state;
    const m4_plugin_grid *g = grids_of(p, grids, n_images, err);
    if (!g) return -1;
    GUARDED(p, err, p->info->projector(p->ctx, x, g, n_images, out, fresh_error(p)));
}

static int plug_merge_image_features(void *state, const int64_t *ids, int64_t n, const float *embeds,
                                     const float *features, int64_t n_features, float *out, m4_error *err) {
    plugin *p = state;
    GUARDED(p, err, p->info->merge_image_features(p->ctx, ids, n, embeds, features, n_features, out,
                                                          fresh_error(p)));
}

static int plug_forward_multimodal(void *state, const int64_t *ids, int64_t B, int64_t S, const m4_pixel_batch *px,
                                   const int64_t *position_ids, const int64_t *attention_mask,
                                   m4_softmax_scale_rule rule, float *logits, m4_error *err) {
    plugin *p = state;
    m4_plugin_pixels ppx = pixels_of(p, px);
    GUARDED(p, err, p->info->forward_multimodal(p->ctx, ids, B, S, &ppx, position_ids, attention_mask,
                                                        scale_rule_of(rule), logits, fresh_error(p)));
}

/* ---- loading and the checks ----------------------------------------------------------------- */

/* Each component: its bit, its name in messages, where the plugin keeps its function, and the
 * adapter the table gets when the plugin declares it. */
#define COMPONENT(bit, field) \
    {M4_PLUGIN_##bit, #field, offsetof(m4_plugin_info, field), offsetof(m4_backend, field), (void (*)(void))plug_##field}
static const struct {
    uint64_t bit;
    const char *name;
    size_t in_plugin, in_table;
    void (*adapter)(void);
} components[] = {
    COMPONENT(EMBED_TOKENS, embed_tokens),
    COMPONENT(RMSNORM, rmsnorm),
    COMPONENT(ROPE, rope),
    COMPONENT(SELF_ATTN, self_attn),
    COMPONENT(ROUTER, router),
    COMPONENT(EXPERTS, experts),
    COMPONENT(SHARED_EXPERTS, shared_experts),
    COMPONENT(MLP, mlp),
    COMPONENT(DECODER_LAYER, decoder_layer),
    COMPONENT(LM_HEAD, lm_head),
    COMPONENT(FORWARD, forward),
    COMPONENT(PATCH_CONV, patch_conv),
    COMPONENT(VISION_ROPE, vision_rope),
    COMPONENT(VISION_ATTENTION, vision_attention),
    COMPONENT(VISION_FEED_FORWARD, vision_feed_forward),
    COMPONENT(VISION_LAYER, vision_layer),
    COMPONENT(VISION_TOWER, vision_tower),
    COMPONENT(PATCH_MERGER, patch_merger),
    COMPONENT(LINEAR, linear),
    COMPONENT(ACTIVATION, activation),
    COMPONENT(PROJECTOR, projector),
    COMPONENT(MERGE_IMAGE_FEATURES, merge_image_features),
    COMPONENT(FORWARD_MULTIMODAL, forward_multimodal),
};
#undef COMPONENT
#define N_COMPONENTS (sizeof components / sizeof components[0])

static int fail_load(m4_error *err, const char *fmt, const char *detail) {
    m4_fail(err, fmt, loaded.path, detail);
    m4_plugin_backend_unload();
    return -1;
}

/* The checks of an m4_plugin_info beyond its version; 0 or -1 with err set. */
static int check_info(const m4_plugin_info *info, m4_error *err) {
    const char *path = loaded.path;
    if (!info->name || !info->name[0]) return m4_fail(err, "%s: the plugin has no name", path);
    if (info->buffers != M4_PLUGIN_HOST_BUFFERS)
        return m4_fail(err, "%s: plugin %s: buffers %u: ABI %d has host buffers only (M4_PLUGIN_HOST_BUFFERS)", path,
                       info->name, info->buffers, M4_PLUGIN_ABI_VERSION);
    if (!info->init) return m4_fail(err, "%s: plugin %s has no init function", path, info->name);
    uint64_t known = 0;
    for (size_t i = 0; i < N_COMPONENTS; i++) known |= components[i].bit;
    if (info->components & ~known)
        return m4_fail(err, "%s: plugin %s declares unknown components (bits 0x%llx) for ABI %d", path, info->name,
                       (unsigned long long)(info->components & ~known), M4_PLUGIN_ABI_VERSION);
    for (size_t i = 0; i < N_COMPONENTS; i++) {
        void (*fn)(void);
        memcpy(&fn, (const char *)info + components[i].in_plugin, sizeof fn);
        if ((info->components & components[i].bit) && !fn)
            return m4_fail(err, "%s: plugin %s declares %s but its %s function is NULL", path, info->name,
                           components[i].name, components[i].name);
    }
    return 0;
}

/* The plugin's entry point called under the crash guard: its info, or NULL (crash_signal set
 * when it crashed). */
static const m4_plugin_info *guarded_entry(const m4_plugin_info *(*entry)(void)) {
    if (sigsetjmp(loaded.crash_jump, 1)) {
        disarm(&loaded);
        return NULL;
    }
    arm(&loaded);
    const m4_plugin_info *info = entry();
    disarm(&loaded);
    return info;
}

int m4_plugin_backend_load(const char *path, const m4_backend **backend, m4_error *err) {
    if (loaded.library) return m4_fail(err, "%s: plugin %s is loaded already (one plugin at a time)", path, loaded.path);
    memset(&loaded, 0, sizeof loaded);
    snprintf(loaded.path, sizeof loaded.path, "%s", path);
    /* dlopen searches the library path for a bare name; a plugin is a file, so name it as one */
    char file[1100];
    snprintf(file, sizeof file, "%s%s", strchr(path, '/') ? "" : "./", path);
    loaded.library = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (!loaded.library) return fail_load(err, "%s: cannot load the plugin: %s", dlerror());
    const m4_plugin_info *(*entry)(void);
    void *sym = dlsym(loaded.library, M4_PLUGIN_ENTRY);
    if (!sym) return fail_load(err, "%s: not a mistral4 plugin: no symbol %s", M4_PLUGIN_ENTRY);
    memcpy(&entry, &sym, sizeof entry);
    const m4_plugin_info *info = guarded_entry(entry);
    if (loaded.crash_signal) return fail_load(err, "%s: the plugin crashed in %s", M4_PLUGIN_ENTRY);
    if (!info) return fail_load(err, "%s: %s returned NULL", M4_PLUGIN_ENTRY);
    if (info->abi_version != M4_PLUGIN_ABI_VERSION) {
        char detail[128];
        snprintf(detail, sizeof detail, "%u, this mistral4 has ABI %d", info->abi_version, M4_PLUGIN_ABI_VERSION);
        return fail_load(err, "%s: the plugin was built for plugin ABI %s (rebuild it with this plugin.h)", detail);
    }
    if (check_info(info, err)) {
        m4_plugin_backend_unload();
        return -1;
    }
    loaded.info = info;
    snprintf(loaded.name, sizeof loaded.name, "%s", info->name);
    m4_backend *t = &loaded.table;
    snprintf(loaded.table_name, sizeof loaded.table_name, "%s%s", M4_PLUGIN_PREFIX, info->name);
    *t = (m4_backend){.name = loaded.table_name,
                      .description = info->description ? info->description : "plugin",
                      .precision = M4_PRECISION_FP32,
                      .open = plug_open,
                      .close = plug_close,
                      .last_device_ms = info->last_device_ms ? plug_last_device_ms : NULL};
    for (size_t i = 0; i < N_COMPONENTS; i++)
        if (info->components & components[i].bit)
            memcpy((char *)t + components[i].in_table, &components[i].adapter, sizeof components[i].adapter);
    *backend = t;
    return 0;
}

void m4_plugin_backend_unload(void) {
    if (loaded.library) dlclose(loaded.library);
    memset(&loaded, 0, sizeof loaded);
}
