/* bench_gpu.cu — m4_gpu_bench: the CUDA backend's kernels at the real model's widths, timed with
 * CUDA events, against ceilings measured in the same run (a device-to-device copy; a cuBLAS bf16
 * GEMM on random data). Weights are random synthetic tensors of the published shapes (no
 * checkpoint needed). Writes one JSON document (stdout, or --out FILE) and a table on stderr.
 *
 *   m4_gpu_bench [--config tests/fixtures/mistral-small-4-119b-2603.config.json] [--out FILE]
 *                [--iters N] [--quick] [--only FAMILY]
 *
 * M4_CUDA_ENABLE / M4_CUDA_DISABLE (paths.h) switch fast paths on and off, so that two runs compare
 * them; the result file records which were on.
 *
 * Each row: median of N event-timed runs after 3 warm-ups, inputs rotating over several copies so
 * that no weight stays in L2 between runs where the weight set is smaller than 4× L2. */
#include <algorithm>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <vector>

#include <curand.h>

#include "cuda_model.cuh"
#ifdef M4_HAVE_CUDNN
#include "cudnn_attention.cuh"
#endif
#include "kernels/attention.cuh"
#include "kernels/flash_attention.cuh"
#include "kernels/gemv.cuh"
#include "kernels/latent_attention.cuh"
#include "kernels/moe.cuh"
#include "kernels/norm.cuh"
#include "paths.h"

extern "C" {
#include "m4_output.h" /* --out: written whole or not at all */
}

namespace {

struct row {
    std::string name, path;
    double ms, bytes, flops;
    const char *ceiling;     /* "copy" or "gemm" */
};

struct bench {
    m4_cuda st;
    int iters = 20;
    double copy_gbps = 0, gemm_tflops = 0;
    std::vector<row> rows;
    std::vector<void *> allocations;
    curandGenerator_t rng = nullptr;
};

#define CHECK(call)                                                                                \
    do {                                                                                           \
        cudaError_t s_ = (call);                                                                   \
        if (s_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "m4_gpu_bench: %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(s_)); \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

void *device_alloc(bench &b, size_t bytes) {
    void *p = nullptr;
    CHECK(cudaMalloc(&p, bytes));
    b.allocations.push_back(p);
    return p;
}

/* Random normal floats (× scale), on the device. */
float *random_f32(bench &b, int64_t n, float scale) {
    float *p = static_cast<float *>(device_alloc(b, sizeof(float) * (size_t)((n + 1) & ~INT64_C(1))));
    if (curandGenerateNormal(b.rng, p, (size_t)((n + 1) & ~INT64_C(1)), 0.0f, scale) != CURAND_STATUS_SUCCESS) {
        fprintf(stderr, "m4_gpu_bench: curand failed\n");
        exit(1);
    }
    return p;
}

m4_dev_weight random_weight(bench &b, int64_t experts, int64_t rows, int64_t cols, bool bf16) {
    m4_dev_weight w;
    w.experts = experts, w.rows = rows, w.cols = cols, w.bf16 = bf16;
    const int64_t n = experts * rows * cols;
    float *f = random_f32(b, n, 0.02f);
    if (!bf16) {
        w.data = f;
        return w;
    }
    w.data = device_alloc(b, sizeof(__nv_bfloat16) * (size_t)n);
    m4_error err = {{0}};
    if (m4k_to_bf16(f, static_cast<__nv_bfloat16 *>(w.data), n, b.st.stream, &err)) {
        fprintf(stderr, "m4_gpu_bench: %s\n", err.msg);
        exit(1);
    }
    CHECK(cudaStreamSynchronize(b.st.stream));
    CHECK(cudaFree(f));
    b.allocations.erase(std::find(b.allocations.begin(), b.allocations.end(), (void *)f));
    return w;
}

/* Random FP8 codes (a hash of the index; the NaN codes 0x7F / 0xFF replaced by ±448) and scales
 * uniform in [2^-9, 2^-8) (a hash too), for random_fp8_weight. */
__global__ void fill_fp8(uint8_t *codes, int64_t n, float *scales, int64_t n_scales, uint32_t seed) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ (uint32_t)(i >> 32) * 2246822519u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
        const uint8_t code = (uint8_t)(h >> 24);
        codes[i] = (code & 0x7F) == 0x7F ? (uint8_t)(code - 1) : code;
        if (i < n_scales) scales[i] = (1.0f + (float)(h & 0xFFFF) / 65536.0f) * (1.0f / 512.0f);
    }
}

/* An FP8 weight [experts, rows, cols] with block_rows × block_cols scale blocks (the published
 * checkpoint: one per matrix, block = [rows, cols]). */
m4_dev_weight random_fp8_weight(bench &b, int64_t experts, int64_t rows, int64_t cols, int64_t block_rows,
                                int64_t block_cols) {
    m4_dev_weight w;
    w.experts = experts, w.rows = rows, w.cols = cols, w.fp8 = true;
    w.block_rows = block_rows, w.block_cols = block_cols;
    const int64_t n = experts * rows * cols;
    const int64_t n_scales = experts * m4_fp8_blocks(rows, block_rows) * m4_fp8_blocks(cols, block_cols);
    w.data = device_alloc(b, (size_t)n);
    float *scales = static_cast<float *>(device_alloc(b, sizeof(float) * (size_t)n_scales));
    w.scales = scales;
    static uint32_t seed = 7;
    fill_fp8<<<1024, 256, 0, b.st.stream>>>(static_cast<uint8_t *>(w.data), n, scales, n_scales, seed++);
    CHECK(cudaGetLastError());
    CHECK(cudaStreamSynchronize(b.st.stream));
    return w;
}

/* Device bytes of a weight as stored (FP8: codes + scales). */
double stored_bytes(const m4_dev_weight &w) {
    double bytes = (double)(w.experts * w.rows * w.cols) * (double)w.elem_bytes();
    if (w.fp8) bytes += 4.0 * (double)(w.experts * m4_fp8_blocks(w.rows, w.block_rows) * m4_fp8_blocks(w.cols, w.block_cols));
    return bytes;
}

/* Median milliseconds of fn(i) over b.iters event-timed runs after 3 warm-ups. */
template <typename Fn> double time_ms(bench &b, Fn fn) {
    cudaEvent_t start, stop;
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreate(&stop));
    for (int i = 0; i < 3; i++) fn(i);
    std::vector<float> ms((size_t)b.iters);
    for (int i = 0; i < b.iters; i++) {
        CHECK(cudaEventRecord(start, b.st.stream));
        fn(i);
        CHECK(cudaEventRecord(stop, b.st.stream));
        CHECK(cudaEventSynchronize(stop));
        CHECK(cudaEventElapsedTime(&ms[(size_t)i], start, stop));
    }
    CHECK(cudaGetLastError());
    cudaEventDestroy(start), cudaEventDestroy(stop);
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

/* The same with fn(v) captured once per input variant v < variants into a CUDA graph and the
 * graphs replayed: the decode step's launch gaps disappear, as they do in a graph-captured decode
 * loop. fn must only enqueue stream work (no synchronisation). */
template <typename Fn> double time_graph_ms(bench &b, int variants, Fn fn) {
    std::vector<cudaGraphExec_t> graphs((size_t)variants);
    for (int v = 0; v < variants; v++) {
        cudaGraph_t graph;
        CHECK(cudaStreamBeginCapture(b.st.stream, cudaStreamCaptureModeThreadLocal));
        fn(v);
        CHECK(cudaStreamEndCapture(b.st.stream, &graph));
        CHECK(cudaGraphInstantiate(&graphs[(size_t)v], graph, 0));
        CHECK(cudaGraphDestroy(graph));
    }
    double ms = time_ms(b, [&](int i) { CHECK(cudaGraphLaunch(graphs[(size_t)(i % variants)], b.st.stream)); });
    for (cudaGraphExec_t g : graphs) CHECK(cudaGraphExecDestroy(g));
    return ms;
}

void must(int rc, const m4_error &err) {
    if (rc) {
        fprintf(stderr, "m4_gpu_bench: %s\n", err.msg);
        exit(1);
    }
}

/* A row's rates and its two shares: of its own ceiling (the one the issue's bound names: copy
 * bandwidth for decode rows, cuBLAS peak for prefill rows), and of the roofline — the time it
 * would take at whichever of the two ceilings binds for its bytes and FLOPs, over its time. */
struct shares {
    double gbps, tflops, pct_of_ceiling, pct_of_roofline;
    shares(const bench &b, const row &r) {
        gbps = r.bytes / r.ms / 1e6, tflops = r.flops / r.ms / 1e9;
        pct_of_ceiling = strcmp(r.ceiling, "copy") == 0 ? 100 * gbps / b.copy_gbps : 100 * tflops / b.gemm_tflops;
        const double floor_ms = std::max(r.bytes / (b.copy_gbps * 1e6), r.flops / (b.gemm_tflops * 1e9));
        pct_of_roofline = 100 * floor_ms / r.ms;
    }
};

void add(bench &b, const std::string &name, const std::string &path, double ms, double bytes, double flops,
         const char *ceiling) {
    b.rows.push_back({name, path, ms, bytes, flops, ceiling});
    const shares x(b, b.rows.back());
    fprintf(stderr, "%-58s %10.4f ms %9.1f GB/s %8.1f TFLOP/s %6.1f%% of %s %6.1f%% of roofline\n", name.c_str(), ms,
            x.gbps, x.tflops, x.pct_of_ceiling, ceiling, x.pct_of_roofline);
}

/* ---- ceilings -------------------------------------------------------------------------------- */

void ceilings(bench &b, bool quick) {
    const size_t bytes = quick ? (size_t)1 << 28 : (size_t)1 << 32;
    void *src = device_alloc(b, bytes), *dst = device_alloc(b, bytes);
    CHECK(cudaMemset(src, 1, bytes));
    double ms = time_ms(b, [&](int) { CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, b.st.stream)); });
    b.copy_gbps = 2.0 * (double)bytes / ms / 1e6;
    b.rows.push_back({"ceiling/copy_d2d", "cudaMemcpy", ms, 2.0 * (double)bytes, 0, "copy"});
    fprintf(stderr, "%-58s %10.4f ms %9.1f GB/s (read + write)\n", "ceiling/copy_d2d", ms, b.copy_gbps);
    CHECK(cudaFree(src));
    CHECK(cudaFree(dst));
    b.allocations.clear();

    const int64_t n = quick ? 2048 : 8192;
    m4_dev_weight A = random_weight(b, 1, n, n, true), B = random_weight(b, 1, n, n, true);
    float *C = static_cast<float *>(device_alloc(b, sizeof(__nv_bfloat16) * (size_t)(n * n)));
    const float one = 1, zero = 0;
    ms = time_ms(b, [&](int) {
        cublasGemmEx(b.st.cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)n, (int)n, &one, A.data, CUDA_R_16BF, (int)n,
                     B.data, CUDA_R_16BF, (int)n, &zero, C, CUDA_R_16BF, (int)n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    });
    b.gemm_tflops = 2.0 * (double)n * n * n / ms / 1e9;
    b.rows.push_back({"ceiling/cublas_bf16_gemm_" + std::to_string(n), "cublasGemmEx bf16→bf16", ms, 0, 2.0 * n * n * n, "gemm"});
    fprintf(stderr, "%-58s %10.4f ms %9.1f TFLOP/s\n", ("ceiling/cublas_bf16_gemm_" + std::to_string(n)).c_str(), ms, b.gemm_tflops);
    for (void *p : b.allocations) cudaFree(p);
    b.allocations.clear();
}

/* ---- components ------------------------------------------------------------------------------ */

/* nn.Linear of the model at n tokens, through m4_cuda_linear (GEMV for n ≤ 8, cuBLAS above).
 * Enough weight copies rotate that the set exceeds L2 several times over. fp8: FP8 weights with
 * per-tensor scales (the published checkpoint's form) on the bf16 path; bytes are FP8 bytes +
 * scales. */
void linear(bench &b, const char *component, int64_t out, int64_t in, int64_t n, bool bf16, bool fp8 = false) {
    const size_t elem = fp8 ? 1 : bf16 ? 2 : 4, weight_bytes = (size_t)(out * in) * elem;
    const int copies = (int)std::min<size_t>(16, std::max<size_t>(1, ((size_t)256 << 20) / weight_bytes + 1));
    std::vector<m4_dev_weight> w;
    for (int c = 0; c < copies; c++)
        w.push_back(fp8 ? random_fp8_weight(b, 1, out, in, out, in) : random_weight(b, 1, out, in, bf16));
    float *x = random_f32(b, n * in, 1.0f), *y = static_cast<float *>(device_alloc(b, sizeof(float) * (size_t)(n * out)));
    m4_error err = {{0}};
    const bool decode = n <= M4_CUDA_GEMV_MAX_TOKENS;
    auto call = [&](int i) { must(m4_cuda_linear(&b.st, x, n, w[(size_t)i % w.size()], y, &err), err); };
    double ms = decode ? time_graph_ms(b, (int)w.size(), call) : time_ms(b, call);
    const double bytes = stored_bytes(w[0]) + 4.0 * n * (in + out);
    add(b, std::string("cuda-") + (fp8 ? "fp8/" : bf16 ? "bf16/" : "fp32/") + component + (decode ? "/decode:" : "/prefill:") +
               std::to_string(n),
        decode ? (fp8 ? "gemv fp8 codes × scale (CUDA graph)" : "gemv (CUDA graph)")
               : (fp8 ? "fp8 → bf16 dequant + cublasGemmEx bf16 (+ x→bf16)"
                      : bf16 ? "cublasGemmEx bf16 (+ x→bf16)" : "cublasSgemm pedantic"),
        ms, bytes, 2.0 * n * out * in, decode ? "copy" : "gemm");
    for (void *p : b.allocations) cudaFree(p);
    b.allocations.clear();
}

/* The routed experts of one real-width MoE layer (E × [2F, D] + E × [D, F]) at n tokens, top-K
 * routing drawn at random (distinct experts per token). Bytes: each distinct expert's weights once
 * (fp8: FP8 stacks with one scale per expert, the published form; FP8 bytes + scales). */
void experts(bench &b, const m4_text_config *cfg, int64_t n, bool fp8 = false) {
    const int64_t E = cfg->n_routed_experts, K = cfg->num_experts_per_tok, D = cfg->hidden_size, F = cfg->moe_intermediate_size;
    m4_dev_weight gu = fp8 ? random_fp8_weight(b, E, 2 * F, D, 2 * F, D) : random_weight(b, E, 2 * F, D, true);
    m4_dev_weight dn = fp8 ? random_fp8_weight(b, E, D, F, D, F) : random_weight(b, E, D, F, true);
    const double elem = fp8 ? 1.0 : 2.0;                  /* weight bytes per element */
    float *x = random_f32(b, n * D, 1.0f), *out = static_cast<float *>(device_alloc(b, sizeof(float) * (size_t)(n * D)));
    srand(1234);
    const int sets = 16;                       /* rotate routings so experts differ run to run */
    std::vector<int32_t> ids((size_t)(sets * n * K));
    std::vector<float> wts((size_t)(sets * n * K), 1.0f / (float)K);
    double distinct = 0;
    for (int s = 0; s < sets; s++) {
        std::vector<bool> used((size_t)E, false);
        for (int64_t t = 0; t < n; t++) {
            std::vector<bool> mine((size_t)E, false);
            for (int64_t k = 0; k < K; k++) {
                int32_t e;
                do e = rand() % (int32_t)E; while (mine[(size_t)e]);
                mine[(size_t)e] = true;
                ids[(size_t)((s * n + t) * K + k)] = e;
                if (!used[(size_t)e]) used[(size_t)e] = true, distinct += 1;
            }
        }
    }
    distinct /= sets;
    int32_t *d_ids = static_cast<int32_t *>(device_alloc(b, sizeof(int32_t) * ids.size()));
    float *d_w = static_cast<float *>(device_alloc(b, sizeof(float) * wts.size()));
    CHECK(cudaMemcpy(d_ids, ids.data(), sizeof(int32_t) * ids.size(), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(d_w, wts.data(), sizeof(float) * wts.size(), cudaMemcpyHostToDevice));
    m4_error err = {{0}};
    const bool decode = n <= M4_CUDA_GEMV_MAX_TOKENS;
    auto call = [&](int i) {
        const int64_t s = i % sets;
        must(m4_cuda_moe_experts(&b.st, gu, dn, K, cfg->hidden_act, x, n, d_ids + s * n * K, d_w + s * n * K, nullptr, out, &err), err);
    };
    double ms = decode ? time_graph_ms(b, sets, call) : time_ms(b, call);
    const double bytes = distinct * (3.0 * (double)(D * F) * elem + (fp8 ? 8.0 : 0.0)) + 4.0 * (double)n * D * 2;
    const std::string prefix = fp8 ? "cuda-fp8/" : "cuda-bf16/";
    add(b, prefix + "text.layers.0.mlp.experts" + (decode ? "/decode:" : "/prefill:") + std::to_string(n),
        decode ? (fp8 ? "gemv fp8 (swiglu fused) + combine (CUDA graph)" : "gemv (swiglu fused) + combine (CUDA graph)")
               : !m4_cuda_path_on(M4_PATH_GROUPED) ? "permute + gather + per-expert GEMMs after a host sync + combine (grouped off)"
               : (fp8 ? "permute + gather + grouped GEMM x2 (fp8 staged, dequantised in shared memory, mma.sync bf16, "
                        "swiglu fused) + combine"
                      : "permute + gather + grouped GEMM x2 (mma.sync bf16, swiglu fused) + combine"),
        ms, bytes,
        2.0 * n * K * 3.0 * D * F, decode ? "copy" : "gemm");
    if (decode) {
        /* the same step in its three launches, each replayed alone: where the time goes */
        float *hm = static_cast<float *>(device_alloc(b, sizeof(float) * (size_t)(n * K * F)));
        float *y = static_cast<float *>(device_alloc(b, sizeof(float) * (size_t)(n * K * D)));
        const double part_bytes[3] = {distinct * 2.0 * (double)(D * F) * elem, distinct * (double)(D * F) * elem,
                                      4.0 * (double)n * K * D + 4.0 * (double)n * D};
        const char *part_names[3] = {"gate_up", "down", "combine"};
        const char *part_paths[3] = {"gemv, swiglu fused (CUDA graph)", "gemv (CUDA graph)", "weighted un-permute (CUDA graph)"};
        for (int part = 0; part < 3; part++) {
            const double part_ms = time_graph_ms(b, sets, [&](int i) {
                const int32_t *set_ids = d_ids + (i % sets) * n * K;
                if (part == 0)
                    must(m4_cuda_gemv(&b.st, gu, set_ids, n * K, x, K, 1, hm, true, cfg->hidden_act, &err), err);
                else if (part == 1)
                    must(m4_cuda_gemv(&b.st, dn, set_ids, n * K, hm, 1, 1, y, false, cfg->hidden_act, &err), err);
                else
                    must(m4k_moe_combine(y, nullptr, set_ids, d_w + (i % sets) * n * K, nullptr, n, K, D, out, b.st.stream, &err),
                         err);
            });
            add(b, prefix + "text.layers.0.mlp.experts." + part_names[part] + "/decode:" + std::to_string(n),
                part_paths[part], part_ms, part_bytes[part], part == 2 ? 0.0 : 2.0 * n * K * (part == 0 ? 2.0 : 1.0) * D * F,
                "copy");
        }
    }
    for (void *p : b.allocations) cudaFree(p);
    b.allocations.clear();
}

/* The attention kernels alone (prefill, causal) at S tokens, H heads, dq/dv: the float32 one (the fp32
 * path, and traces) and the bf16 path's flash kernel, on the same float32 inputs. */
void attention(bench &b, const m4_text_config *cfg, int64_t S) {
    const int64_t H = cfg->num_attention_heads, dq = cfg->qk_head_dim, dv = cfg->v_head_dim;
    float *Q = random_f32(b, H * S * dq, 1.0f), *K = random_f32(b, H * S * dq, 1.0f), *V = random_f32(b, S * H * dv, 1.0f);
    float *O = static_cast<float *>(device_alloc(b, sizeof(float) * (size_t)(S * H * dv)));
    m4k_attention_args a = {};
    a.Q = Q, a.K = K, a.V = V, a.B = 1, a.H = H, a.S = S, a.T = S, a.dq = dq, a.dv = dv;
    a.v_row_stride = H * dv, a.v_head_stride = dv, a.scale = 0.07f, a.causal = true, a.O = O;
    m4_error err = {{0}};
    double ms = time_ms(b, [&](int) { must(m4k_attention(&a, b.st.stream, &err), err); });
    /* bytes: Q, K, V read and O written once (float32); FLOPs: the causal half of S² scores and outputs */
    const double bytes = 4.0 * H * S * (2 * dq + dv + dv), flops = 2.0 * H * S * S * (dq + dv) / 2;
    add(b, "cuda-fp32/text.layers.0.self_attn.attention/prefill:" + std::to_string(S), "one block per query (float32)", ms,
        bytes, flops, "gemm");
    ms = time_ms(b, [&](int) { must(m4k_flash_attention(&a, b.st.stream, &err), err); });
    add(b, "cuda-bf16/text.layers.0.self_attn.attention/prefill:" + std::to_string(S),
        "flash attention (tensor cores, wmma bf16: 64 queries x 64-key tiles, online softmax, causal tiles skipped)", ms,
        bytes, flops, "gemm");
#ifdef M4_HAVE_CUDNN
    /* cuDNN's fused attention on the same inputs, bf16 conversions included (the first call builds
     * the plan, untimed); no row where libcudnn cannot be opened */
    m4_cudnn *cudnn = nullptr;
    if (m4_cudnn_create(&cudnn, nullptr, &err) || m4_cudnn_attention(cudnn, &a, b.st.stream, &err)) {
        fprintf(stderr, "m4_gpu_bench: no cuDNN attention row: %s\n", err.msg);
    } else {
        ms = time_ms(b, [&](int) { must(m4_cudnn_attention(cudnn, &a, b.st.stream, &err), err); });
        add(b, "cudnn-bf16/text.layers.0.self_attn.attention/prefill:" + std::to_string(S),
            "cuDNN fused attention (SDPA operation graph, bf16, causal) + float32<->bf16 conversions", ms, bytes, flops,
            "gemm");
    }
    m4_cudnn_destroy(cudnn);
#endif
    for (void *p : b.allocations) cudaFree(p);
    b.allocations.clear();
}

/* MLA decode over the latent cache (absorbed form): kv_b folded into the query, attention over the
 * T cached [c_kv | k_rope] latents, kv_b's value half applied after — batch 1, one new token,
 * bf16 cache and kv_b. Bytes: the cache read once, kv_b once. */
void mla_latent_decode(bench &b, const m4_text_config *cfg, int64_t T) {
    const int64_t H = cfg->num_attention_heads, dn = cfg->qk_nope_head_dim, dr = cfg->qk_rope_head_dim;
    const int64_t dv = cfg->v_head_dim, Rkv = cfg->kv_lora_rank, dq = dn + dr;
    m4_dev_weight kv_b = random_weight(b, 1, H * (dn + dv), Rkv, true);
    m4_dev_weight c_cache = random_weight(b, 1, T, Rkv, true), r_cache = random_weight(b, 1, T, dr, true);
    float *Q = random_f32(b, H * dq, 1.0f);
    float *QL = static_cast<float *>(device_alloc(b, sizeof(float) * (size_t)(H * (Rkv + dr))));
    float *O_lat = static_cast<float *>(device_alloc(b, sizeof(float) * (size_t)(H * Rkv)));
    float *O = static_cast<float *>(device_alloc(b, sizeof(float) * (size_t)(H * dv)));
    const int64_t past = T - 1;
    int64_t *d_past = static_cast<int64_t *>(device_alloc(b, sizeof(int64_t)));
    CHECK(cudaMemcpy(d_past, &past, sizeof past, cudaMemcpyHostToDevice));
    m4_error err = {{0}};
    double ms = time_graph_ms(b, 1, [&](int) {
        must(m4k_mla_absorb_q(Q, kv_b.b16(), H, H, 1, dn, dr, dv, Rkv, QL, b.st.stream, &err) ||
                 m4k_mla_latent_attention<__nv_bfloat16>(QL, c_cache.b16(), r_cache.b16(), T, 1, H, 1, d_past, Rkv, dr,
                                                         0.07f, nullptr, 0, O_lat, b.st.stream, &err) ||
                 m4k_mla_unabsorb_v(O_lat, kv_b.b16(), 1, H, 1, dn, dv, Rkv, O, b.st.stream, &err),
             err);
    });
    const double bytes = 2.0 * (double)T * (Rkv + dr) + 2.0 * (double)H * (dn + dv) * Rkv;
    const double flops = 2.0 * H * (dn * Rkv + T * (Rkv + dr) + T * Rkv + dv * Rkv);
    add(b, "cuda-bf16/text.layers.0.self_attn.latent/decode:1/ctx:" + std::to_string(T),
        m4_cuda_path_on(M4_PATH_LATENT_TC)
            ? "absorb q + split-K latent attention (tensor cores, all heads per block, cp.async tiles) + combine + "
              "unabsorb v (CUDA graph)"
            : "absorb q + split-K latent attention (CUDA cores, a block per head and split; latent_tc off) + combine + "
              "unabsorb v (CUDA graph)",
        ms, bytes, flops, "copy");
    for (void *p : b.allocations) cudaFree(p);
    b.allocations.clear();
}

/* The latent attention of a whole S-token prompt, causal, past 0 (what the generation session
 * runs on the prompt: the absorbed form over the cache it just filled) — batch 1, bf16 cache.
 * FLOPs: the causal half of S² scores over Rkv + dr and outputs over Rkv, per head. */
void mla_latent_prefill(bench &b, const m4_text_config *cfg, int64_t S) {
    const int64_t H = cfg->num_attention_heads, dr = cfg->qk_rope_head_dim, Rkv = cfg->kv_lora_rank;
    const int64_t stride = (S + M4_CUDA_KEY_TILE - 1) / M4_CUDA_KEY_TILE * M4_CUDA_KEY_TILE;
    m4_dev_weight c_cache = random_weight(b, 1, stride, Rkv, true), r_cache = random_weight(b, 1, stride, dr, true);
    float *QL = random_f32(b, H * S * (Rkv + dr), 1.0f);
    float *O_lat = static_cast<float *>(device_alloc(b, sizeof(float) * (size_t)(H * S * Rkv)));
    int64_t *d_past = static_cast<int64_t *>(device_alloc(b, sizeof(int64_t)));
    CHECK(cudaMemset(d_past, 0, sizeof(int64_t)));
    m4_error err = {{0}};
    double ms = time_ms(b, [&](int) {
        must(m4k_mla_latent_attention<__nv_bfloat16>(QL, c_cache.b16(), r_cache.b16(), stride, 1, H, S, d_past, Rkv, dr,
                                                     0.07f, nullptr, 0, O_lat, b.st.stream, &err),
             err);
    });
    const double bytes = 2.0 * (double)S * (Rkv + dr) + 4.0 * (double)H * S * (2 * Rkv + dr);
    const double flops = 2.0 * H * ((double)S * S / 2) * (2 * Rkv + dr);
    add(b, "cuda-bf16/text.layers.0.self_attn.latent/prefill:" + std::to_string(S),
        m4_cuda_path_on(M4_PATH_LATENT_TC) ? "latent attention over the prompt's own cache (tensor cores, causal tiles skipped)"
                                    : "latent attention over the prompt's own cache (CUDA cores; latent_tc off)",
        ms, bytes, flops,
        "gemm");
    for (void *p : b.allocations) cudaFree(p);
    b.allocations.clear();
}

/* Synthetic device weights for a one-layer model at the published widths: random tensors
 * registered in b.st.weights under dummy host keys (one distinct address each), the bytes a
 * step reads counted as they are made. */
struct synthetic_weights {
    bench &b;
    m4_model model;                        /* the published config, one text and one vision layer */
    m4_text_layer_weights text_layer;
    m4_vision_layer_weights vision_layer;
    char keys[64];
    int next_key = 0;
    double bytes = 0;
    /* b.st runs `model` in bf16 until this goes */
    synthetic_weights(bench &bench_, const m4_config *published) : b(bench_) {
        memset(&model, 0, sizeof model), memset(&text_layer, 0, sizeof text_layer);
        memset(&vision_layer, 0, sizeof vision_layer);
        model.config = *published;
        model.config.text.num_hidden_layers = 1, model.config.vision.num_hidden_layers = 1;
        model.weights.layers = &text_layer, model.weights.vision_layers = &vision_layer;
        b.st.model = &model, b.st.precision = M4_PRECISION_BF16;
    }
    const uint8_t *key() { return reinterpret_cast<const uint8_t *>(&keys[next_key++]); }
    void plain(m4_weight &w, int64_t rows, int64_t cols, bool f32) {
        w.data = key(), w.rows = rows, w.cols = cols, w.name = "synthetic";
        b.st.weights[w.data] = random_weight(b, 1, rows, cols, !f32);
        bytes += (double)(rows * cols) * (f32 ? 4 : 2);
    }
    /* an expert stack of which `read` experts are read per step */
    void stack(m4_expert_stack &s, int64_t experts, int64_t rows, int64_t cols, int64_t read) {
        s.data = key(), s.experts = experts, s.rows = rows, s.cols = cols, s.name = "synthetic";
        b.st.weights[s.data] = random_weight(b, experts, rows, cols, true);
        bytes += (double)(read * rows * cols) * 2;
    }
    /* two weights with one input, side by side in one allocation, as the upload places them
     * (switch `pairs`; off: two weights, as the upload keeps them then) */
    void pair(m4_weight &a, int64_t a_rows, m4_weight &c, int64_t c_rows, int64_t cols) {
        if (!m4_cuda_path_on(M4_PATH_PAIRS)) return plain(a, a_rows, cols, false), plain(c, c_rows, cols, false);
        m4_dev_weight both = random_weight(b, 1, a_rows + c_rows, cols, true), view = both;
        view.paired_with_next = true;
        a.data = key(), c.data = key();
        a.rows = a_rows, c.rows = c_rows, a.cols = c.cols = cols, a.name = c.name = "synthetic";
        view.rows = a_rows, b.st.weights[a.data] = view;
        view.rows = c_rows, view.data = static_cast<__nv_bfloat16 *>(both.data) + a_rows * cols, view.paired_with_next = false;
        b.st.weights[c.data] = view;
        bytes += (double)((a_rows + c_rows) * cols) * 2;
    }
    /* the device state back as it was: no model, no weights, every allocation freed */
    ~synthetic_weights() {
        cudaFree(b.st.d_rope_inv_freq);
        b.st.d_rope_inv_freq = nullptr;
        b.st.weights.clear();
        b.st.model = nullptr;
        for (void *p : b.allocations) cudaFree(p);
        b.allocations.clear();
    }
};

/* The decode step of one real-width decoder layer (input norm, MLA over a T-position latent cache
 * in the absorbed form, post norm, router, 4 of 128 experts, shared expert) at batch 1, bf16,
 * captured in a CUDA graph. The layer is synthetic (synthetic_weights) in a one-layer copy of the
 * published config. Bytes: every weight the step reads (4 distinct experts of the stacks) and the
 * cache. */
void decode_step(bench &b, const m4_config *published, int64_t T) {
    synthetic_weights w(b, published);
    m4_text_layer_weights &layer = w.text_layer;
    const m4_text_config *t = &w.model.config.text;
    const int64_t D = t->hidden_size, H = t->num_attention_heads, F = t->moe_intermediate_size, E = t->n_routed_experts;
    m4_cuda &st = b.st;
    auto plain = [&](m4_weight &x, int64_t rows, int64_t cols, bool f32) { w.plain(x, rows, cols, f32); };
    auto pair = [&](m4_weight &x, int64_t x_rows, m4_weight &y, int64_t y_rows, int64_t cols) { w.pair(x, x_rows, y, y_rows, cols); };
    plain(layer.input_layernorm, 1, D, true), plain(layer.post_attention_layernorm, 1, D, true);
    pair(layer.q_a_proj, t->q_lora_rank, layer.kv_a_proj_with_mqa, t->kv_lora_rank + t->qk_rope_head_dim, D);
    plain(layer.q_a_layernorm, 1, t->q_lora_rank, true);
    plain(layer.q_b_proj, H * t->qk_head_dim, t->q_lora_rank, false);
    plain(layer.kv_a_layernorm, 1, t->kv_lora_rank, true);
    plain(layer.kv_b_proj, H * (t->qk_nope_head_dim + t->v_head_dim), t->kv_lora_rank, false);
    plain(layer.o_proj, D, H * t->v_head_dim, false);
    layer.moe = true;
    plain(layer.router, E, D, true);
    w.stack(layer.experts_gate_up, E, 2 * F, D, t->num_experts_per_tok), w.stack(layer.experts_down, E, D, F, t->num_experts_per_tok);
    pair(layer.shared_gate_proj, F * t->n_shared_experts, layer.shared_up_proj, F * t->n_shared_experts, D);
    plain(layer.shared_down_proj, D, F * t->n_shared_experts, false);
    m4_error err = {{0}};
    m4_cuda_cache cache;
    must(m4_cuda_init_rope(&st, &err) || m4_cuda_cache_init(&st, &cache, 1, T + 1, &err), err);
    must(m4_cuda_cache_set_length(&st, &cache, T, &err), err);   /* T zero-filled positions: the same work as real ones */
    const double bytes = w.bytes + 2.0 * (double)T * (t->kv_lora_rank + t->qk_rope_head_dim);
    const int variants = 16;                  /* different inputs route to different experts */
    float *h = random_f32(b, variants * D, 1.0f);
    int64_t *d_pos = static_cast<int64_t *>(device_alloc(b, sizeof(int64_t)));
    CHECK(cudaMemcpy(d_pos, &T, sizeof T, cudaMemcpyHostToDevice));
    m4_cuda_positions where;
    where.d_pos = d_pos;
    const float scale = m4_ref_mla_softmax_scale(t, M4_SOFTMAX_SCALE_MSCALE2);
    double ms = time_graph_ms(b, variants, [&](int v) {
        must(m4_cuda_decoder_layer(&st, 0, &cache, h + v * D, 1, 1, where, scale, &err), err);
    });
    add(b, "cuda-bf16/text.layers.0/decode:1/ctx:" + std::to_string(T),
        "whole decoder layer: norms, absorbed MLA over the latent cache, router, 4+1 experts (CUDA graph)", ms, bytes,
        0, "copy");
    m4_cuda_cache_free(&cache);
}

/* One real-width Pixtral layer (attention_norm, block-diagonal attention with 2-D RoPE, ffn_norm,
 * SwiGLU MLP with gate/up paired) over one image of side×side pixels, bf16, synthetic weights
 * (synthetic_weights) in a one-layer copy of the published vision config. FLOPs: the four
 * projections, the MLP, and the attention's scores and outputs over the whole image. */
void vision_layer(bench &b, const m4_config *published, int64_t side) {
    synthetic_weights w(b, published);
    m4_vision_layer_weights &layer = w.vision_layer;
    const m4_vision_config *v = &w.model.config.vision;
    const int64_t Dv = v->hidden_size, I = v->intermediate_size, grid = side / v->patch_size, P = grid * grid;
    w.plain(layer.attention_norm, 1, Dv, true), w.plain(layer.ffn_norm, 1, Dv, true);
    w.plain(layer.q_proj, Dv, Dv, false), w.plain(layer.k_proj, Dv, Dv, false), w.plain(layer.v_proj, Dv, Dv, false);
    w.plain(layer.o_proj, Dv, Dv, false);
    w.pair(layer.gate_proj, I, layer.up_proj, I, Dv), w.plain(layer.down_proj, Dv, I, false);
    const m4_patch_grid grids[1] = {{grid, grid}};
    float *h = random_f32(b, P * Dv, 1.0f);
    m4_error err = {{0}};
    const double ms = time_ms(b, [&](int) { must(m4_cuda_vision_layer(&b.st, 0, h, grids, 1, &err), err); });
    const double flops = 2.0 * P * (4.0 * Dv * Dv + 3.0 * Dv * I) + 4.0 * (double)P * P * Dv;
    add(b, "cuda-bf16/vision.layers.0/image:" + std::to_string(side) + "px",
        std::string("one Pixtral layer over ") + std::to_string(P) + " patches: cuBLAS projections, paired gate/up, " +
            (m4_cuda_path_on(M4_PATH_FLASH) ? "flash" : "float32") + " block-diagonal attention",
        ms, w.bytes + 4.0 * 2 * (double)P * Dv, flops, "gemm");
}

/* The GEMV launch configurations (m4k_gemv_config) on the two decode shapes that matter most: the
 * routed experts of a real-width layer at batch 1 and lm_head at batch 1. Weights made once. */
void tune_gemv(bench &b, const m4_text_config *cfg) {
    const int64_t E = cfg->n_routed_experts, K = cfg->num_experts_per_tok, D = cfg->hidden_size, F = cfg->moe_intermediate_size;
    m4_dev_weight gu = random_weight(b, E, 2 * F, D, true), dn = random_weight(b, E, D, F, true);
    m4_dev_weight head = random_weight(b, 1, cfg->vocab_size, D, true);
    float *x = random_f32(b, D, 1.0f), *out = static_cast<float *>(device_alloc(b, sizeof(float) * (size_t)cfg->vocab_size));
    const int sets = 16;
    std::vector<int32_t> ids((size_t)(sets * K));
    std::vector<float> wts(ids.size(), 1.0f / (float)K);
    for (int s = 0; s < sets; s++)
        for (int64_t k = 0; k < K; k++) ids[(size_t)(s * K + k)] = (int32_t)((s * 37 + k * 11) % E);   /* distinct per set */
    int32_t *d_ids = static_cast<int32_t *>(device_alloc(b, sizeof(int32_t) * ids.size()));
    float *d_w = static_cast<float *>(device_alloc(b, sizeof(float) * wts.size()));
    CHECK(cudaMemcpy(d_ids, ids.data(), sizeof(int32_t) * ids.size(), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(d_w, wts.data(), sizeof(float) * wts.size(), cudaMemcpyHostToDevice));
    const m4k_gemv_tuning defaults = m4k_gemv_config;
    m4_error err = {{0}};
    for (int blocks : {2, 4, 8})
        for (int unroll : {2, 4, 8})
            for (bool shared : {true, false}) {
                m4k_gemv_config.blocks_per_sm = blocks, m4k_gemv_config.unroll = unroll, m4k_gemv_config.x_in_shared = shared;
                char label[96];
                snprintf(label, sizeof label, "blocks_per_sm:%d/unroll:%d/x_shared:%d", blocks, unroll, (int)shared);
                double ms = time_graph_ms(b, sets, [&](int v) {
                    must(m4_cuda_moe_experts(&b.st, gu, dn, K, cfg->hidden_act, x, 1, d_ids + v * K, d_w + v * K, nullptr,
                                             out, &err), err);
                });
                add(b, std::string("tune/cuda-bf16/text.layers.0.mlp.experts/decode:1/") + label, "gemv + combine (CUDA graph)",
                    ms, (double)K * 3.0 * (double)(D * F) * 2.0, 2.0 * K * 3.0 * D * F, "copy");
                ms = time_graph_ms(b, 1, [&](int) { must(m4_cuda_linear(&b.st, x, 1, head, out, &err), err); });
                add(b, std::string("tune/cuda-bf16/text.lm_head/decode:1/") + label, "gemv (CUDA graph)", ms,
                    2.0 * (double)(cfg->vocab_size * D), 2.0 * cfg->vocab_size * D, "copy");
            }
    m4k_gemv_config = defaults;
    for (void *p : b.allocations) cudaFree(p);
    b.allocations.clear();
}

void write_json(const bench &b, FILE *f, const char *device, const char *commit) {
    fprintf(f, "{\n  \"schema\": \"mistral4-gpu-bench/1\",\n  \"device\": \"%s\",\n  \"commit\": \"%s\",\n", device, commit);
    fprintf(f, "  \"iterations\": %d,\n  \"statistic\": \"median of CUDA-event times after 3 warm-ups\",\n", b.iters);
    fprintf(f, "  \"build\": {\"nvcc\": \"%d.%d\", \"build_type\": \"%s\", \"cuda_architectures\": \"%s\", "
               "\"cuda_flags\": \"%s\"},\n",
            __CUDACC_VER_MAJOR__, __CUDACC_VER_MINOR__, M4_BUILD_TYPE, M4_CUDA_ARCHS, M4_CUDA_FLAGS);
    char on[256];
    m4_cuda_paths_list_on(&m4_cuda_path_switches, on, sizeof on);
    fprintf(f, "  \"paths_on\": \"%s\",\n", on);
    fprintf(f, "  \"ceilings\": {\"copy_GBps\": %.1f, \"cublas_bf16_TFLOPs\": %.1f},\n  \"rows\": [\n", b.copy_gbps, b.gemm_tflops);
    for (size_t i = 0; i < b.rows.size(); i++) {
        const row &r = b.rows[i];
        const shares x(b, r);
        fprintf(f, "    {\"name\": \"%s\", \"path\": \"%s\", \"ms\": %.6f, \"bytes\": %.0f, \"flops\": %.0f, "
                   "\"GBps\": %.2f, \"TFLOPs\": %.3f, \"ceiling\": \"%s\", \"pct_of_ceiling\": %.2f, "
                   "\"pct_of_roofline\": %.2f}%s\n",
                r.name.c_str(), r.path.c_str(), r.ms, r.bytes, r.flops, x.gbps, x.tflops, r.ceiling, x.pct_of_ceiling,
                x.pct_of_roofline, i + 1 < b.rows.size() ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
}

} // namespace

int main(int argc, char **argv) {
    const char *config_path = "tests/fixtures/mistral-small-4-119b-2603.config.json", *out = nullptr, *only = "";
    const char *commit = getenv("M4_COMMIT") ? getenv("M4_COMMIT") : "unknown";
    bool quick = false;
    bench b;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) config_path = argv[++i];
        else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) out = argv[++i];
        else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc) b.iters = atoi(argv[++i]);
        else if (strcmp(argv[i], "--quick") == 0) quick = true;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: m4_gpu_bench [--config FILE] [--out FILE] [--iters N] [--quick] [--only FAMILY]\n"
                            "  FAMILY: a substring of linear, experts, attention, latent, layer, vision, tune (the ceilings always run)\n");
            return 2;
        }
    }
    if (b.iters < 1) b.iters = 1;
    m4_config cfg;
    m4_error err = {{0}};
    if (m4_config_load(config_path, &cfg, &err) || m4_cuda_paths_from_env(&m4_cuda_path_switches, &err)) {
        fprintf(stderr, "m4_gpu_bench: %s\n", err.msg);
        return 1;
    }
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        fprintf(stderr, "m4_gpu_bench: no CUDA device\n");
        return 77;
    }
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    CHECK(cudaStreamCreate(&b.st.stream));
    if (cublasCreate(&b.st.cublas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(b.st.cublas, b.st.stream) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "m4_gpu_bench: cuBLAS init failed\n");
        return 1;
    }
    curandCreateGenerator(&b.rng, CURAND_RNG_PSEUDO_DEFAULT);
    curandSetPseudoRandomGeneratorSeed(b.rng, 42);
    curandSetStream(b.rng, b.st.stream);
    fprintf(stderr, "m4_gpu_bench on %s (%d SMs, %.0f MB L2)\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6);

    ceilings(b, quick);
    auto want = [&](const char *family) { return strstr(family, only) != nullptr; };
    const m4_text_config *t = &cfg.text;
    const int64_t D = t->hidden_size, H = t->num_attention_heads;
    struct { const char *name; int64_t out, in; } linears[] = {
        /* q_a_proj and kv_a_proj_with_mqa run as one weight (m4_cuda_weight_pair), as in the model */
        {"text.layers.0.self_attn.q_a_proj+kv_a_proj_with_mqa", t->q_lora_rank + t->kv_lora_rank + t->qk_rope_head_dim, D},
        {"text.layers.0.self_attn.q_b_proj", H * t->qk_head_dim, t->q_lora_rank},
        {"text.layers.0.self_attn.kv_b_proj", H * (t->qk_nope_head_dim + t->v_head_dim), t->kv_lora_rank},
        {"text.layers.0.self_attn.o_proj", D, H * t->v_head_dim},
        /* the shared expert's gate_proj and up_proj, one weight (its SwiGLU is fused in decode) */
        {"text.layers.0.mlp.shared_experts.gate_proj+up_proj", 2 * t->moe_intermediate_size * t->n_shared_experts, D},
        {"text.lm_head", t->vocab_size, D},
    };
    const int64_t decode_sizes[] = {1, 8}, prefill_sizes[] = {512, 4096};
    if (want("linear")) {
        for (auto &l : linears) {
            for (int64_t n : decode_sizes) linear(b, l.name, l.out, l.in, n, true);
            if (!quick)
                for (int64_t n : prefill_sizes) linear(b, l.name, l.out, l.in, n, true);
        }
        linear(b, "text.layers.0.self_attn.o_proj", D, H * t->v_head_dim, 1, false);
        /* FP8 weights kept as FP8 (bf16 path): lm_head is the largest decode GEMV (bf16 in the
         * published checkpoint, FP8 here to show the kernel's bandwidth share), o_proj a real FP8
         * projection, also at a prefill size (dequantise + cuBLAS) */
        linear(b, "text.lm_head", t->vocab_size, D, 1, true, true);
        linear(b, "text.layers.0.self_attn.o_proj", D, H * t->v_head_dim, 1, true, true);
        if (!quick) linear(b, "text.layers.0.self_attn.o_proj", D, H * t->v_head_dim, 512, true, true);
    }
    if (want("experts")) {
        for (int64_t n : decode_sizes) experts(b, t, n);
        if (!quick)
            for (int64_t n : prefill_sizes) experts(b, t, n);
        experts(b, t, 1, true);                               /* FP8 stacks, as the published checkpoint */
        if (!quick) experts(b, t, 512, true);
    }
    if (want("attention")) attention(b, t, quick ? 256 : 1024);
    if (want("latent")) {
        for (int64_t T : {INT64_C(4096), INT64_C(32768), INT64_C(131072)})
            if (!quick || T == 4096) mla_latent_decode(b, t, T);
        mla_latent_prefill(b, t, quick ? 1024 : 4096);
    }
    if (want("layer"))
        for (int64_t T : {INT64_C(1), INT64_C(4096), INT64_C(32768)})
            if (!quick || T == 4096) decode_step(b, &cfg, T);
    if (want("vision") && cfg.multimodal) vision_layer(b, &cfg, quick ? 448 : cfg.vision.image_size);
    if (want("tune") && !quick) tune_gemv(b, t);

    char device[300];
    snprintf(device, sizeof device, "%s, %d SMs, sm_%d%d", prop.name, prop.multiProcessorCount, prop.major, prop.minor);
    if (!out) {
        write_json(b, stdout, device, commit);
    } else {
        struct document {
            const bench *b;
            const char *device, *commit;
        } doc = {&b, device, commit};
        const auto fill = [](FILE *f, const void *content) {
            const document *d = static_cast<const document *>(content);
            write_json(*d->b, f, d->device, d->commit);
            return 0; /* the writer checks the stream's error state, flush and close */
        };
        m4_error err = {};
        if (m4_write_stream_atomically(out, "GPU benchmark result", fill, &doc, &err) != 0) {
            fprintf(stderr, "m4_gpu_bench: %s\n", err.msg);
            return 1;
        }
    }
    curandDestroyGenerator(b.rng);
    cublasDestroy(b.st.cublas);
    return 0;
}
