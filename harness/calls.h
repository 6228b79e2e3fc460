/* calls.h — the backend calls that serve the registry's rows (calls.c): for each m4_backend
 * entry, how a golden case's inputs reach it. The runner (conform.c) does the rest the same way
 * for every row: read the row's golden inputs and expected outputs, allocate what the call
 * writes, time the call, compare. */
#ifndef M4_CALLS_H
#define M4_CALLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "conform.h"
#include "golden.h"
#include "registry.h"

/* What a call sees of the case beside its row's datasets (conform.c fills it from /inputs). */
typedef struct {
    const m4_backend *backend;
    void *state;                   /* the backend's, opened on `model` */
    const m4_model *model;
    m4_case_dims dims;
    const int64_t *ids;            /* [B, S] */
    const int64_t *positions;      /* [B, S] */
    const int64_t *mask;           /* [B, S] or NULL */
    const m4_pixel_batch *px;      /* the case's images; NULL without */
    const m4_patch_grid *grids;    /* [images] patch grids; NULL without images or a vision tower */
    float softmax_scale;
    m4_softmax_scale_rule rule;
} m4_case;

/* What a call did beside writing its outputs: the tokens it processed (n of the row's cost
 * formula) and any work beyond that formula. */
typedef struct {
    int64_t tokens;
    m4_cost extra;
} m4_call_work;

struct m4_row_call {
    /* offsetof(m4_backend, …) of the entry that serves the row (NULL there: not implemented),
     * and of the one that serves it instead on a case with images (0: the same). */
    size_t entry, entry_with_images;
    /* in[k]: the row's inputs as read; out[k]: buffers for the row's outputs, shaped as the row
     * says (NULL for an optional output the golden lacks). Returns 0, or -1 with err set. */
    int (*run)(const m4_case *c, const m4_component *comp, int layer, const m4_array *in, void *const *out,
               m4_call_work *work, m4_error *err);
    /* One call serves every row of the row's group (the attention and its stages): it runs once
     * per layer, each row compares one of its outputs. */
    bool shared;
    /* Optional: compares the outputs beyond the row's dataset after it passed through compare():
     * got[k] what the call wrote, want[k] out[k]'s golden. */
    void (*check)(m4_result *res, void *const *got, m4_array *want);
    const char *note; /* appended to the row's message (e.g. "HF's routing") */
};

extern const m4_row_call m4_call_embed_tokens, m4_call_rmsnorm, m4_call_rope, m4_call_self_attn,
    m4_call_router, m4_call_experts, m4_call_shared_experts, m4_call_mlp, m4_call_decoder_layer,
    m4_call_lm_head, m4_call_forward_embeds, m4_call_forward, m4_call_patch_conv, m4_call_vision_rope,
    m4_call_vision_attention, m4_call_vision_feed_forward, m4_call_vision_layer, m4_call_vision_tower,
    m4_call_patch_merger, m4_call_linear, m4_call_activation, m4_call_projector, m4_call_merge;

#endif
