/* rope.c — the text rotary embedding (YaRN or default) and the Llama-4 query temperature
 * (MODEL.md §2.4, §2.5 steps 4 and 6). Everything is float32 in the order of HF's
 * `_compute_yarn_parameters` (transformers 5.24), except the correction range, which HF computes
 * in Python doubles. */
#include "reference.h"

#include <math.h>

static const double pi = 3.14159265358979323846; /* Python math.pi */

/* yarn get_mscale: 0.1 · mscale · ln(scale) + 1 for scale > 1, else 1 (Python doubles). */
static double yarn_get_mscale(double scale, double mscale) {
    if (scale <= 1.0) return 1.0;
    return 0.1 * mscale * log(scale) + 1.0;
}

/* find_correction_dim: the rotary dimension whose wavelength makes num_rotations turns over
 * max_position_embeddings positions. */
static double find_correction_dim(double num_rotations, int64_t dim, double base,
                                  int64_t max_position_embeddings) {
    return ((double)dim * log((double)max_position_embeddings / (num_rotations * 2.0 * pi))) /
           (2.0 * log(base));
}

/* Mistral4RotaryEmbedding init — inv_freq[dr/2] and attention_factor (the cos/sin scale).
 * default: inv_freq[i] = 1 / theta^(2i/dim). yarn: MODEL.md §2.4. dim = int(qk_head_dim ·
 * partial_rotary_factor), which must equal qk_rope_head_dim. */
int m4_ref_rope_inv_freq(const m4_text_config *cfg, float *inv_freq, float *attention_factor,
                         m4_error *err) {
    const m4_rope_config *r = &cfg->rope;
    const int64_t dim = (int64_t)((double)cfg->qk_head_dim * r->partial_rotary_factor);
    if (dim != cfg->qk_rope_head_dim || dim <= 0 || dim % 2 != 0)
        return m4_fail(err, "text rope: int(qk_head_dim %lld x partial_rotary_factor %g) = %lld rotary "
                            "dims, expected qk_rope_head_dim %lld (even, > 0)",
                       (long long)cfg->qk_head_dim, r->partial_rotary_factor, (long long)dim,
                       (long long)cfg->qk_rope_head_dim);
    if (!(r->theta > 0)) return m4_fail(err, "text rope: rope_theta %g must be > 0", r->theta);
    const int64_t half = dim / 2;
    const float base = (float)r->theta;                     /* torch: scalar ** float32 tensor */

    if (r->type == M4_ROPE_DEFAULT) {
        /* HF's compute_default_rope_parameters uses dim = head_dim (all 128 q/k dims), whose cos
         * table cannot broadcast against the dr rotary dims unless qk_nope_head_dim = 0; we use
         * the rotary dims, which is what HF computes whenever it runs at all. */
        for (int64_t i = 0; i < half; i++)
            inv_freq[i] = 1.0f / powf(base, (float)(2 * i) / (float)dim);
        *attention_factor = 1.0f;
        return 0;
    }

    /* YaRN. HF 5.24 uses the factor as written (it only warns when it disagrees with
     * max_position_embeddings / original_max_position_embeddings). */
    const double factor = r->factor;
    if (!(factor > 0)) return m4_fail(err, "text rope: yarn factor %g must be > 0", factor);
    if (r->has_attention_factor)
        *attention_factor = (float)r->attention_factor;
    else if (r->has_mscale && r->mscale != 0 && r->has_mscale_all_dim && r->mscale_all_dim != 0)
        *attention_factor = (float)(yarn_get_mscale(factor, r->mscale) /
                                    yarn_get_mscale(factor, r->mscale_all_dim));
    else
        *attention_factor = (float)yarn_get_mscale(factor, 1.0);

    /* find_correction_range(beta_fast, beta_slow) over original_max_position_embeddings. */
    const int64_t orig = r->original_max_position_embeddings;
    double low = find_correction_dim(r->beta_fast, dim, r->theta, orig);
    double high = find_correction_dim(r->beta_slow, dim, r->theta, orig);
    if (r->truncate) low = floor(low), high = ceil(high);
    if (low < 0) low = 0;
    if (high > (double)(dim - 1)) high = (double)(dim - 1);
    if (low == high) high += 0.001;                          /* linear_ramp_factor's guard */

    for (int64_t i = 0; i < half; i++) {
        float pos_freq = powf(base, (float)(2 * i) / (float)dim);
        float extrapolation = 1.0f / pos_freq;
        float interpolation = 1.0f / ((float)factor * pos_freq);
        float ramp = ((float)i - (float)low) / (float)(high - low);
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        float extrapolation_factor = 1.0f - ramp;
        /* keep the double complement: 1 − (1 − ramp) is not always ramp in float32 */
        inv_freq[i] = interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
    }
    return 0;
}

/* text.layers.{i}.self_attn.rope — Mistral4RotaryEmbedding.forward: θ = float(p) · inv_freq[i]
 * (one float32 product), cos/sin[n, half] = cos/sin(θ) · attention_factor. HF's table is
 * cat(θ, θ) [n, dr]; both RoPE forms only need the first half. */
void m4_ref_rope_cos_sin(const float *inv_freq, int64_t half, float attention_factor,
                         const int64_t *positions, int64_t n, float *cos_out, float *sin_out) {
    for (int64_t t = 0; t < n; t++) {
        float p = (float)positions[t];
        for (int64_t i = 0; i < half; i++) {
            float theta = p * inv_freq[i];
            cos_out[t * half + i] = cosf(theta) * attention_factor;
            sin_out[t * half + i] = sinf(theta) * attention_factor;
        }
    }
}

/* apply_rotary_pos_emb_interleave (interleave) / apply_rotary_pos_emb (rotate_half) on one
 * vector x[dr] → out[dr] (no overlap). Pair i is (x[2i], x[2i+1]) interleaved or (x[i], x[half+i])
 * otherwise; either way out[i] = a·cos − b·sin and out[half+i] = b·cos + a·sin, i.e. the
 * interleaved result comes out de-interleaved (MODEL.md §2.5 step 4). */
void m4_ref_apply_rope(const float *x, float *out, int64_t dr, const float *cos_row,
                       const float *sin_row, int interleave) {
    const int64_t half = dr / 2;
    for (int64_t i = 0; i < half; i++) {
        float a = interleave ? x[2 * i] : x[i];
        float b = interleave ? x[2 * i + 1] : x[half + i];
        out[i] = a * cos_row[i] - b * sin_row[i];
        out[half + i] = b * cos_row[i] + a * sin_row[i];
    }
}

/* text.layers.{i}.self_attn.llama4_scale — get_llama_4_attn_scale:
 * 1 + beta · ln(1 + floor(float(p) / float(L))), each step float32 as torch computes it. */
float m4_ref_llama4_scale(int64_t position, float beta, int64_t original_max_position_embeddings) {
    float blocks = floorf((float)position / (float)original_max_position_embeddings);
    return 1.0f + beta * logf(1.0f + blocks);
}
