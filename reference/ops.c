/* ops.c — the building blocks of the reference: linear, RMSNorm, activations, softmax, the SwiGLU
 * MLP and the token embedding. Float32 throughout, in the operation order of HF's float32 CPU run
 * (MODEL.md §2.2, §2.7).
 *
 * Dot products go through dot.c: M4_LANES independent partial sums (element j goes to lane
 * j % M4_LANES, lanes combined pairwise at the end), deterministic, independent of thread count,
 * chunking and instruction set. */
#include "reference.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dot.h"

#define M4_LINEAR_CHUNK 512    /* weight elements dequantised at a time (2 KiB, stays in L1) */
#define M4_LINEAR_TOKENS 8     /* tokens that share one pass over a weight row */
#define M4_PARALLEL_MIN_MACS (1 << 18) /* below this a linear stays on one thread */
_Static_assert(M4_LINEAR_CHUNK % M4_LANES == 0, "chunks must keep lanes aligned with columns");

float m4_ref_dot(const float *a, const float *b, int64_t n) {
    float acc[M4_LANES] = {0};
    m4_dot_lanes(acc, a, b, n);
    return m4_dot_lanes_sum(acc);
}

/* nn.Linear (no bias) — y[n, out] = x[n, in] · Wᵀ, W [out, in]. BF16, F32 and FP8 rows are read
 * in place by m4_dot_rows, M4_DOT_ROWS at a time, for each token; other dtypes are dequantised
 * M4_LINEAR_CHUNK elements at a time into a stack buffer (never a whole matrix), one output row
 * per iteration, M4_LINEAR_TOKENS tokens sharing each pass over the row. Both sum in dot.h's
 * order, so the path taken never changes a bit. */
void m4_ref_linear(const float *x, int64_t n, const m4_weight *w, float *y) {
    const int64_t in = w->cols, out = w->rows;
    if (m4_dot_rows_supported(w)) {          /* BF16, F32 and FP8 rows read in place, 4 at a time */
        const int64_t groups = (out + M4_DOT_ROWS - 1) / M4_DOT_ROWS;
#pragma omp parallel for schedule(static) if (out * in * n >= M4_PARALLEL_MIN_MACS)
        for (int64_t g = 0; g < groups; g++)
            for (int64_t t = 0; t < n; t++) {
                float dots[M4_DOT_ROWS];
                m4_dot_rows(w, g * M4_DOT_ROWS, x + t * in, dots);
                for (int64_t r = 0; r < M4_DOT_ROWS && g * M4_DOT_ROWS + r < out; r++)
                    y[t * out + g * M4_DOT_ROWS + r] = dots[r];
            }
        return;
    }
#pragma omp parallel for schedule(static) if (out * in * n >= M4_PARALLEL_MIN_MACS)
    for (int64_t o = 0; o < out; o++) {
        float wchunk[M4_LINEAR_CHUNK];                       /* this row, [c0, c0 + nc) */
        for (int64_t t0 = 0; t0 < n; t0 += M4_LINEAR_TOKENS) {
            int64_t nt = n - t0 < M4_LINEAR_TOKENS ? n - t0 : M4_LINEAR_TOKENS;
            float acc[M4_LINEAR_TOKENS][M4_LANES];           /* per token partial sums */
            memset(acc, 0, sizeof acc);
            for (int64_t c0 = 0; c0 < in; c0 += M4_LINEAR_CHUNK) {
                int64_t nc = in - c0 < M4_LINEAR_CHUNK ? in - c0 : M4_LINEAR_CHUNK;
                m4_weight_row_chunk_f32(w, o, c0, nc, wchunk);
                for (int64_t t = 0; t < nt; t++)
                    m4_dot_lanes(acc[t], wchunk, x + (t0 + t) * in + c0, nc);
            }
            for (int64_t t = 0; t < nt; t++) y[(t0 + t) * out + o] = m4_dot_lanes_sum(acc[t]);
        }
    }
}

/* Mistral4RMSNorm / PixtralRMSNorm — y[n, dim] = w ⊙ (x · rsqrt(mean(x²) + eps)), x [n, dim].
 * Statistics in float32; the weight multiplies after the normalisation (MODEL.md §2.2). y may be x. */
void m4_ref_rmsnorm(const float *x, int64_t n, int64_t dim, const m4_weight *w, float eps, float *y) {
    float wchunk[M4_LINEAR_CHUNK];
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        float variance = m4_ref_dot(xr, xr, dim) / (float)dim;
        float inv_rms = 1.0f / sqrtf(variance + eps);        /* torch.rsqrt = 1 / sqrt */
        for (int64_t c0 = 0; c0 < dim; c0 += M4_LINEAR_CHUNK) {
            int64_t nc = dim - c0 < M4_LINEAR_CHUNK ? dim - c0 : M4_LINEAR_CHUNK;
            m4_weight_row_chunk_f32(w, 0, c0, nc, wchunk);
            for (int64_t j = 0; j < nc; j++) yr[c0 + j] = wchunk[j] * (xr[c0 + j] * inv_rms);
        }
    }
}

/* nn.SiLU — x · sigmoid(x), computed as torch's CPU kernel does: x / (1 + exp(−x)). In place. */
void m4_ref_silu(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
}

/* GELUActivation (exact) — (x · 0.5) · (1 + erf(x · √½)), torch's operation order. In place. */
void m4_ref_gelu(float *x, int64_t n) {
    const float sqrt_half = 0.70710678118654752440f;
    for (int64_t i = 0; i < n; i++) x[i] = (x[i] * 0.5f) * (1.0f + erff(x[i] * sqrt_half));
}

/* gelu_pytorch_tanh — 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))). In place. */
static void gelu_tanh(float *x, int64_t n) {
    const float beta = 0.79788456080286535588f, kappa = 0.044715f;
    for (int64_t i = 0; i < n; i++) {
        float cube = x[i] * x[i] * x[i];
        float inner = beta * (x[i] + kappa * cube);
        x[i] = 0.5f * x[i] * (1.0f + tanhf(inner));
    }
}

/* ACT2FN[hidden_act], in place over n values. */
void m4_ref_activation(float *x, int64_t n, m4_activation act) {
    switch (act) {
    case M4_ACT_SILU: m4_ref_silu(x, n); break;
    case M4_ACT_GELU: m4_ref_gelu(x, n); break;
    case M4_ACT_GELU_TANH: gelu_tanh(x, n); break;
    case M4_ACT_RELU:
        for (int64_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    }
}

/* softmax(x, dim=-1, dtype=float32) over n values in place: e = exp(x − max), x = e / Σe. */
void m4_ref_softmax(float *x, int64_t n) {
    float max = x[0];
    for (int64_t i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
    float acc[M4_LANES] = {0};
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        acc[i % M4_LANES] += x[i];
    }
    float sum = m4_dot_lanes_sum(acc);
    for (int64_t i = 0; i < n; i++) x[i] = x[i] / sum;
}

/* Mistral4MLP / PixtralMLP (SwiGLU) — y[n, D] = down( act(x·gateᵀ) ⊙ (x·upᵀ) ), x [n, D],
 * gate/up [F, D], down [D, F]. */
int m4_ref_swiglu_mlp(const float *x, int64_t n, const m4_weight *gate, const m4_weight *up,
                      const m4_weight *down, m4_activation act, float *y, m4_error *err) {
    const int64_t F = gate->rows;
    if (up->rows != F || up->cols != gate->cols || down->cols != F)
        return m4_fail(err, "swiglu mlp: inconsistent shapes gate [%lld, %lld], up [%lld, %lld], "
                            "down [%lld, %lld]", (long long)gate->rows, (long long)gate->cols,
                       (long long)up->rows, (long long)up->cols, (long long)down->rows,
                       (long long)down->cols);
    float *g = malloc(sizeof(float) * (size_t)(n * F));      /* [n, F] gate, then the product */
    float *u = malloc(sizeof(float) * (size_t)(n * F));      /* [n, F] up */
    if (!g || !u) {
        free(g), free(u);
        return m4_fail(err, "swiglu mlp: out of memory for %lld x %lld intermediates", (long long)n,
                       (long long)F);
    }
    m4_ref_linear(x, n, gate, g);
    m4_ref_linear(x, n, up, u);
    m4_ref_activation(g, n * F, act);
    for (int64_t i = 0; i < n * F; i++) g[i] = g[i] * u[i];
    m4_ref_linear(g, n, down, y);
    free(g), free(u);
    return 0;
}

/* text.embed_tokens — nn.Embedding: out[n, D] = embed_tokens[ids[n], :]. */
int m4_ref_embed_tokens(const m4_weight *embed_tokens, const int64_t *ids, int64_t n, float *out,
                        m4_error *err) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= embed_tokens->rows)
            return m4_fail(err, "text.embed_tokens: token id %lld at position %lld is outside the "
                                "vocabulary [0, %lld)", (long long)ids[i], (long long)i,
                           (long long)embed_tokens->rows);
    for (int64_t i = 0; i < n; i++)
        m4_weight_row_f32(embed_tokens, ids[i], out + i * embed_tokens->cols);
    return 0;
}
