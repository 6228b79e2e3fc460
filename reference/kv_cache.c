/* kv_cache.c — the MLA key/value cache: per layer, row and position the normalised kv latent
 * c_kv [Rkv] and the rotated shared key k_rope [dr] (MODEL.md §6.1; the struct's comment in
 * reference.h says how forwards fill it). Pure storage: the math that writes and reads it is in
 * mla.c (m4_ref_mla_cached), the bookkeeping of `length` in text.c. */
#include "reference.h"

#include <stdlib.h>

int64_t m4_kv_cache_bytes(const m4_text_config *cfg, int64_t batch, int64_t capacity) {
    return (int64_t)sizeof(float) * cfg->num_hidden_layers * batch * capacity *
           (cfg->kv_lora_rank + cfg->qk_rope_head_dim);
}

int m4_kv_cache_init(m4_kv_cache *cache, const m4_text_config *cfg, int64_t batch,
                     int64_t capacity, m4_error *err) {
    *cache = (m4_kv_cache){0};
    const int64_t L = cfg->num_hidden_layers, Rkv = cfg->kv_lora_rank, dr = cfg->qk_rope_head_dim;
    if (batch <= 0 || capacity <= 0)
        return m4_fail(err, "kv cache: %lld rows of %lld positions: both must be positive",
                       (long long)batch, (long long)capacity);
    if (L <= 0 || Rkv <= 0 || dr <= 0)
        return m4_fail(err, "kv cache: the config has %lld layers, kv_lora_rank %lld, "
                            "qk_rope_head_dim %lld", (long long)L, (long long)Rkv, (long long)dr);
    const int64_t positions = L * batch * capacity;                  /* (layer, row, t) slots */
    if (positions > INT64_MAX / (int64_t)sizeof(float) / (Rkv + dr))
        return m4_fail(err, "kv cache: %lld x %lld x %lld positions overflow", (long long)L,
                       (long long)batch, (long long)capacity);
    cache->c_kv = malloc(sizeof(float) * (size_t)(positions * Rkv));
    cache->k_rope = malloc(sizeof(float) * (size_t)(positions * dr));
    if (!cache->c_kv || !cache->k_rope) {
        m4_kv_cache_free(cache);
        return m4_fail(err, "kv cache: out of memory for %lld rows of %lld positions (%.1f MiB)",
                       (long long)batch, (long long)capacity,
                       (double)m4_kv_cache_bytes(cfg, batch, capacity) / (1024.0 * 1024.0));
    }
    cache->layers = L, cache->batch = batch, cache->capacity = capacity;
    cache->kv_lora_rank = Rkv, cache->rope_dim = dr, cache->length = 0;
    return 0;
}

void m4_kv_cache_reset(m4_kv_cache *cache) { cache->length = 0; }

void m4_kv_cache_free(m4_kv_cache *cache) {
    free(cache->c_kv);
    free(cache->k_rope);
    *cache = (m4_kv_cache){0};
}

float *m4_kv_cache_c_kv(const m4_kv_cache *cache, int64_t layer, int64_t b, int64_t t) {
    return cache->c_kv + ((layer * cache->batch + b) * cache->capacity + t) * cache->kv_lora_rank;
}

float *m4_kv_cache_k_rope(const m4_kv_cache *cache, int64_t layer, int64_t b, int64_t t) {
    return cache->k_rope + ((layer * cache->batch + b) * cache->capacity + t) * cache->rope_dim;
}
