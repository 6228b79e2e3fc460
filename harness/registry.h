/* registry.h — the component registry: one row per component, iterated by the conformance
 * runner, the CMocka conformance tests, the benchmarks and the profiler alike. A row says what
 * the component reads and writes (golden datasets and their shapes, as functions of the config
 * and the case), what it costs, whether it is on the vision path, and which backend call serves
 * it (calls.h); conform.c runs every row the same way. Adding a component is one row here plus
 * its implementations (ggml's test-backend-ops is the model; docs/ARCHITECTURE.md has the recipe). */
#ifndef M4_REGISTRY_H
#define M4_REGISTRY_H

/* Under the bf16 budgets a row also needs cosine similarity >= this (issue #7's bound). */
#define M4_BF16_MIN_COSINE 0.999

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "golden.h"

typedef enum {
    M4_COMP_EMBED,          /* text.embed_tokens */
    M4_COMP_INPUT_NORM,     /* text.layers.{i}.input_layernorm */
    M4_COMP_ROPE,           /* text.layers.{i}.self_attn.rope */
    M4_COMP_ATTN_STAGE,     /* an intermediate of self_attn (q_rot, llama4_scale, …) */
    M4_COMP_SELF_ATTN,      /* text.layers.{i}.self_attn */
    M4_COMP_POST_NORM,      /* text.layers.{i}.post_attention_layernorm */
    M4_COMP_ROUTER,         /* text.layers.{i}.mlp.gate */
    M4_COMP_EXPERTS,        /* text.layers.{i}.mlp.experts */
    M4_COMP_SHARED_EXPERTS, /* text.layers.{i}.mlp.shared_experts */
    M4_COMP_MLP,            /* text.layers.{i}.mlp */
    M4_COMP_DECODER_LAYER,  /* text.layers.{i} */
    M4_COMP_FINAL_NORM,     /* text.norm */
    M4_COMP_LM_HEAD,        /* text.lm_head */
    M4_COMP_TEXT_MODEL,     /* text: the language model end to end from HF's inputs_embeds */
    M4_COMP_MODEL,          /* model: end to end */
    /* the vision path (multimodal models only; m4_component.vision) */
    M4_COMP_PATCH_CONV,     /* vision.patch_conv */
    M4_COMP_LN_PRE,         /* vision.ln_pre */
    M4_COMP_VISION_ROPE,    /* vision.rope */
    M4_COMP_VISION_ATTN_NORM, /* vision.layers.{j}.attention_norm */
    M4_COMP_VISION_ATTN_STAGE, /* an intermediate of the vision attention (q_rot, …) */
    M4_COMP_VISION_ATTN,    /* vision.layers.{j}.attention */
    M4_COMP_VISION_FFN_NORM, /* vision.layers.{j}.ffn_norm */
    M4_COMP_VISION_FFN,     /* vision.layers.{j}.feed_forward */
    M4_COMP_VISION_LAYER,   /* vision.layers.{j} */
    M4_COMP_VISION_TOWER,   /* vision: pixels → selected features, end to end */
    M4_COMP_PROJECTOR_NORM, /* projector.norm */
    M4_COMP_PATCH_MERGER,   /* projector.patch_merger */
    M4_COMP_PROJECTOR_LINEAR_1, /* projector.linear_1 */
    M4_COMP_PROJECTOR_ACT,  /* projector.act */
    M4_COMP_PROJECTOR_LINEAR_2, /* projector.linear_2 */
    M4_COMP_PROJECTOR,      /* projector (the whole Mistral3MultiModalProjector) */
    M4_COMP_MERGE           /* multimodal.merge */
} m4_component_kind;

/* Work of one call, for the profiler's GB/s and FLOP/s: n tokens of B·S = n, context T. */
typedef struct {
    double flops;
    double bytes;           /* weights read (at their stored width) + activations in and out */
} m4_cost;

/* The sizes a golden case implies beside the config: its inputs' batch B and length S, and for a
 * case with images their number, padded height and width, all images' patches P (one sequence)
 * and the merged image tokens M. */
typedef struct {
    int64_t B, S;
    int64_t images, height, width, P, M;
} m4_case_dims;

/* The shape a dataset must have. */
typedef struct {
    int ndim;
    int64_t dims[M4_GOLDEN_MAX_DIMS];
} m4_shape;

/* M4_SHAPE(B, S, D) */
#define M4_SHAPE(...) \
    ((m4_shape){.ndim = (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), .dims = {__VA_ARGS__}})

/* A golden dataset a row reads or writes: its name in the row's group (or in `group`), and its
 * shape as the config and the case imply it (golden/README.md). */
typedef struct {
    const char *name;       /* NULL ends a list */
    m4_shape (*shape)(const m4_config *cfg, const m4_case_dims *d);
    const char *shape_text; /* its formula as written: "d->B, d->S, t->hidden_size" (d: the case,
                             * t: text_config, v: vision_config) */
    bool ids;               /* int64 token or expert ids, not float32 */
    bool optional;          /* an output written only when the golden holds it (attention traces) */
    const char *group;      /* NULL: the row's group */
} m4_dataset;

#define M4_MAX_INPUTS 3
#define M4_MAX_OUTPUTS 9

/* The backend call that serves a row (calls.h): which m4_backend entry, and how the case's
 * inputs reach it. */
typedef struct m4_row_call m4_row_call;

typedef struct {
    const char *name;       /* the one dotted name; {i} = text layer, {j} = vision layer index */
    const char *hf_module;  /* the Hugging Face class that computes it */
    m4_component_kind kind;
    const char *group;      /* golden group holding its datasets ({i} / {j} substituted) */
    const char *dataset;    /* golden dataset it is compared against: one of `out` */
    double tolerance_fp32;  /* relative L2 budget, float32 implementations */
    double tolerance_bf16;  /* relative L2 budget, the bf16 fast path (and M4_BF16_MIN_COSINE) */
    m4_cost (*cost)(const m4_config *cfg, int64_t tokens, int64_t context, int weight_bytes);
    bool vision;            /* on the vision path: multimodal models and cases with images only;
                             * its cost's context is the patch sequence P, not S */
    bool images_only;       /* runs only on a case with images (`text`, from the merged embeds) */
    const char *candidate_group; /* a candidate file's group for the row when not `group` (`text`,
                             * whose golden is `model`'s logits: docs/CANDIDATE-LAYOUT.md) */
    const m4_row_call *call;
    m4_dataset in[M4_MAX_INPUTS];   /* golden inputs, in the order the call takes them */
    m4_dataset out[M4_MAX_OUTPUTS]; /* what the call writes, each compared with its golden */
} m4_component;

extern const m4_component m4_components[];
extern const size_t m4_component_count;

/* Substitutes {i} (or {j}) in a pattern. */
void m4_component_instance(const char *pattern, int layer, char *buf, size_t size);

/* Which layers a row iterates: 'i' (text layers), 'j' (vision layers) or 0 (a single row). */
char m4_component_layer_placeholder(const m4_component *comp);

/* True for the rows of the vision path (vision tower, projector, merge): they apply only to
 * multimodal models. */
bool m4_component_is_vision(const m4_component *comp);

/* The index in comp->out of the dataset the row is compared on (comp->dataset). */
int m4_component_compared_output(const m4_component *comp);

/* True when a candidate file (docs/CANDIDATE-LAYOUT.md) must hold out[k] for the row: its compared
 * dataset, and for an unshared call its other required outputs (the router's top-k ids and
 * weights, the rope's sin table), which the call's checks compare too. */
bool m4_component_candidate_output(const m4_component *comp, int k);

/* The row's group in a candidate file: candidate_group, else group ({i}/{j} not substituted). */
const char *m4_component_candidate_group(const m4_component *comp);

/* How many instances of the row a model has: its text or vision layer count, 1 for a single
 * row, 0 for a vision row of a text-only model. */
int64_t m4_component_instances(const m4_component *comp, const m4_config *cfg);

/* Work of the vision tower and projector for `patches` patches (to add to `model`'s cost when it
 * runs with images). */
m4_cost m4_vision_path_cost(const m4_config *cfg, int64_t patches, int weight_bytes);

#endif
