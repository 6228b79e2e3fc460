/* cuda_backend.h — the C interface of the CUDA implementation (callable from C11 host code).
 * All pointers named d_* are device pointers. Every function returns 0 or -1 with `err` set. */
#ifndef M4_CUDA_BACKEND_H
#define M4_CUDA_BACKEND_H

#ifdef __cplusplus
extern "C" {
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "m4_error.h"
#include "reference.h"
#include "vision.h"

/* Number of usable CUDA devices; 0 (and success) on a machine without a GPU or driver. */
int m4_cuda_device_count(int *count, m4_error *err);

/* A text-generation session on the GPU (m4_ref_text_forward_cached's twin): the model's weights
 * on the device in fp32 or bf16, and an MLA cache of `batch` rows × `capacity` positions whose
 * attention runs in the absorbed latent form. One-token steps of up to 8 rows replay a CUDA
 * graph of the whole forward, captured at the first such step (environment M4_CUDA_DISABLE=graphs, or
 * m4_cuda_session_use_graphs(s, false), launches them one by one instead; the results are the
 * same bit for bit). */
typedef struct m4_cuda_session m4_cuda_session;

/* upload_progress (may be NULL) hears of each text layer's weights uploaded. */
int m4_cuda_session_open(const m4_model *model, bool bf16, int64_t batch, int64_t capacity,
                         const m4_progress *upload_progress, m4_cuda_session **out, m4_error *err);
/* ids [B, S] (or inputs_embeds [B, S, D] when non-NULL) follow the cache's length positions
 * (position_ids NULL: length + arange(S); attention_mask [B, length + S] or NULL) → the last
 * position's logits [B, V]; the cache then holds S more positions. */
int m4_cuda_session_forward(m4_cuda_session *s, const int64_t *ids, const float *inputs_embeds,
                            int64_t B, int64_t S, const int64_t *position_ids,
                            const int64_t *attention_mask, m4_softmax_scale_rule rule,
                            float *logits, m4_error *err);
/* The prompt's inputs_embeds [B, S, D] on the GPU: embed_tokens(ids), the image-token rows
 * replaced in order by the images' features (vision tower → projector); px NULL: no images. */
int m4_cuda_session_prompt_embeds(m4_cuda_session *s, const int64_t *ids, int64_t B, int64_t S,
                                  const m4_pixel_batch *px, float *embeds, m4_error *err);
void m4_cuda_session_use_graphs(m4_cuda_session *s, bool on);
/* Empties the cache: the next forward starts at position 0 (the weights stay on the device). */
int m4_cuda_session_reset(m4_cuda_session *s, m4_error *err);
/* The current device's name ("NVIDIA H200") into buf. */
int m4_cuda_device_name(char *buf, size_t n, m4_error *err);
/* Positions the cache holds; the device time of the last forward (CUDA events), ms. */
int64_t m4_cuda_session_length(const m4_cuda_session *s);
double m4_cuda_session_device_ms(const m4_cuda_session *s);
void m4_cuda_session_close(m4_cuda_session *s);

#ifdef __cplusplus
}
#endif

#endif
