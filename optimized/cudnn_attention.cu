/* cudnn_attention.cu — prefill attention through cuDNN's fused flash attention
 * (cudnn_attention.cuh). The operation graph is the one cudnn-frontend emits for SDPA forward
 * with statistics (its scaled_dot_product_flash_attention node with the composite softmax and
 * diagonal mask, cuDNN < 9.21), written against the backend API directly:
 *
 *   S  = Q · Kᵀ                      matmul, bf16 in, float32 out (Kᵀ: K's strides swapped)
 *   Z  = S · scale                   pointwise MUL by a by-value float32 scalar
 *   causal: row = gen_index(Z, 2), col = gen_index(Z, 3)   (int32)
 *           bottom-right: row = row + T − S   (ADD then SUB of by-value int32 scalars)
 *           Z = row ≥ col ? Z : −∞   (CMP_GE → boolean, BINARY_SELECT)
 *   P  = exp(Z − max_j Z) / Σ_j exp(Z − max_j Z)   (reduction MAX, SUB, EXP, reduction ADD, DIV; P bf16)
 *   stats = max_j Z + log Σ_j exp(Z − max_j Z)      (LOG, ADD: float32 [B, H, S, 1], to scratch)
 *   O  = P · V                       matmul, bf16 out
 *
 * The statistics are not needed, but cuDNN 9.19's SDPA pattern matcher refuses the graph without
 * them for the no-mask and top-left forms ("Dropout set of ops not configured correctly", in
 * tag_mha_graph) and accepts it with them (the training graph Transformer Engine builds); seen on
 * a machine without a GPU by describing an H100 and an A100 to cuDNN by their properties
 * (m4_cudnn_check_graph, test_cuda_cudnn_attention): every graph here then reaches the
 * runtime-compiled flash engines, which stop only for the missing driver. cudnn-frontend hands
 * these cases to the single SDPA_FWD operation on cuDNN ≥ 9.13.1, which cannot express the
 * bottom-right diagonal before 9.21; the composite graph serves every 9.x from 9.6.
 *
 * cuDNN's heuristics (mode A, then fallback) pick the engine; the first configuration that
 * finalizes becomes the shape's plan. Every cuDNN status is checked, the message naming the
 * call, the descriptor and cuDNN's own last error. Unproven: no GPU has run it yet. */
#include <dlfcn.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <deque>

#include <cudnn.h>

#include "cudnn_attention.cuh"
#include "kernels/norm.cuh"   /* m4k_to_bf16 */

namespace {

/* The cuDNN functions used, resolved from the dlopen'ed library. */
#define M4_CUDNN_FUNCTIONS(X)                                                                                  \
    X(cudnnGetVersion) X(cudnnGetErrorString) X(cudnnGetLastErrorString) X(cudnnCreate) X(cudnnDestroy)       \
    X(cudnnSetStream) X(cudnnBackendCreateDescriptor) X(cudnnBackendDestroyDescriptor)                       \
    X(cudnnBackendSetAttribute) X(cudnnBackendGetAttribute) X(cudnnBackendFinalize) X(cudnnBackendExecute)

struct cudnn_api {
    void *lib = nullptr;
#define M4_CUDNN_POINTER(name) decltype(&::name) name = nullptr;
    M4_CUDNN_FUNCTIONS(M4_CUDNN_POINTER)
#undef M4_CUDNN_POINTER
};

/* Formats "cudnn attention: <call>: <status> (<cuDNN's last error>)" into err; returns -1. */
__attribute__((format(printf, 4, 5))) int cudnn_fail(const cudnn_api &api, cudnnStatus_t status, m4_error *err,
                                                     const char *fmt, ...) {
    char call[384], last[512] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call, sizeof call, fmt, ap);
    va_end(ap);
    api.cudnnGetLastErrorString(last, sizeof last);
    return m4_fail(err, "cudnn attention: %s: %s (%s)", call, api.cudnnGetErrorString(status),
                   last[0] ? last : "no further detail from cuDNN");
}

/* One plan of the cache: its key, the execution plan and every descriptor built for it (kept
 * alive with the plan, destroyed together), its workspace size in bytes. */
struct cudnn_plan {
    m4_cudnn_sdpa_key key;
    cudnnBackendDescriptor_t plan = nullptr;
    std::vector<cudnnBackendDescriptor_t> owned;
    int64_t workspace = 0;
};

/* Unique ids of the tensors the variant pack binds (the virtual ones count up from kVirtual). */
enum : int64_t { kUidQ = 1, kUidK, kUidV, kUidO, kUidStats, kUidScale, kUidMaskValue, kUidKeys, kUidQueries, kVirtual = 100 };

/* Base pointers and strides are promised 16-byte aligned to cuDNN (the scratch is carved so). */
constexpr int64_t kAlignment = 16;
constexpr size_t kScratchAlign = 256;

} // namespace

struct m4_cudnn {
    cudnn_api api;
    cudnnHandle_t handle = nullptr;
    size_t version = 0;
    std::deque<cudnn_plan> plans;                /* a deque: plan pointers stay valid as it grows */
    void *scratch = nullptr;
    size_t scratch_bytes = 0;
    std::vector<int32_t> lo, hi;                 /* host copies of block_lo/hi */
    std::vector<m4_cudnn_block> blocks;
};

namespace {

/* Builds one plan's descriptors, recording each in `owned`. Every call is checked. */
struct graph_builder {
    const cudnn_api &api;
    std::vector<cudnnBackendDescriptor_t> &owned;
    m4_error *err;
    int64_t next_virtual = kVirtual;

    int create(cudnnBackendDescriptorType_t type, const char *what, cudnnBackendDescriptor_t *out) {
        *out = nullptr;
        const cudnnStatus_t s = api.cudnnBackendCreateDescriptor(type, out);
        if (s != CUDNN_STATUS_SUCCESS) return cudnn_fail(api, s, err, "cudnnBackendCreateDescriptor(%s)", what);
        owned.push_back(*out);
        return 0;
    }
    int set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, const char *name_text,
            cudnnBackendAttributeType_t type, int64_t count, const void *value, const char *what) {
        const cudnnStatus_t s = api.cudnnBackendSetAttribute(d, name, type, count, value);
        if (s != CUDNN_STATUS_SUCCESS) return cudnn_fail(api, s, err, "cudnnBackendSetAttribute(%s, %s)", what, name_text);
        return 0;
    }
    int finalize(cudnnBackendDescriptor_t d, const char *what) {
        const cudnnStatus_t s = api.cudnnBackendFinalize(d);
        if (s != CUDNN_STATUS_SUCCESS) return cudnn_fail(api, s, err, "cudnnBackendFinalize(%s)", what);
        return 0;
    }

#define SET(d, name, type, count, value, what) set(d, name, #name, type, count, value, what)

    /* A 4-d tensor; uid 0 takes the next virtual id. */
    int tensor(int64_t uid, cudnnDataType_t type, const int64_t dims[4], const int64_t strides[4], bool is_virtual,
               bool by_value, const char *what, cudnnBackendDescriptor_t *out) {
        if (uid == 0) uid = next_virtual++;
        const bool yes = true;
        return create(CUDNN_BACKEND_TENSOR_DESCRIPTOR, what, out) ||
               SET(*out, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, what) ||
               SET(*out, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims, what) ||
               SET(*out, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides, what) ||
               SET(*out, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, what) ||
               SET(*out, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &kAlignment, what) ||
               (is_virtual && SET(*out, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &yes, what)) ||
               (by_value && SET(*out, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes, what)) ||
               finalize(*out, what);
    }

    /* y = mode(x[, b][, t]) computed in `precision` (axis: GEN_INDEX's dimension, else −1). */
    int pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t precision, int64_t axis, cudnnBackendDescriptor_t x,
                  cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y, const char *what,
                  std::vector<cudnnBackendDescriptor_t> *ops) {
        cudnnBackendDescriptor_t pw, op;
        if (create(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, what, &pw) ||
            SET(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, what) ||
            SET(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision, what) ||
            (axis >= 0 && SET(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, what)) || finalize(pw, what) ||
            create(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, what, &op) ||
            SET(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw, what) ||
            SET(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, what) ||
            (b && SET(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, what)) ||
            (t && SET(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t, what)) ||
            SET(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, what) ||
            finalize(op, what))
            return -1;
        ops->push_back(op);
        return 0;
    }

    /* y [B, H, S, 1] = reduce(x [B, H, S, T]) over the keys, in float32. */
    int reduction(cudnnReduceTensorOp_t reduce, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y,
                  const char *what, std::vector<cudnnBackendDescriptor_t> *ops) {
        const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
        cudnnBackendDescriptor_t r, op;
        if (create(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, what, &r) ||
            SET(r, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &reduce, what) ||
            SET(r, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, what) || finalize(r, what) ||
            create(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, what, &op) ||
            SET(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, what) ||
            SET(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, what) ||
            SET(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &r, what) ||
            finalize(op, what))
            return -1;
        ops->push_back(op);
        return 0;
    }

    /* c = a · b (batched over the first two dims), float32 accumulation. */
    int matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c, const char *what,
               std::vector<cudnnBackendDescriptor_t> *ops) {
        const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
        cudnnBackendDescriptor_t mm, op;
        if (create(CUDNN_BACKEND_MATMUL_DESCRIPTOR, what, &mm) ||
            SET(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, what) || finalize(mm, what) ||
            create(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, what, &op) ||
            SET(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a, what) ||
            SET(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, what) ||
            SET(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c, what) ||
            SET(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm, what) ||
            finalize(op, what))
            return -1;
        ops->push_back(op);
        return 0;
    }
};

const char *mask_name(m4_cudnn_mask m) {
    return m == m4_cudnn_mask::causal_top_left ? "causal" : m == m4_cudnn_mask::causal_bottom_right ? "causal bottom-right" : "no mask";
}

/* The SDPA operation graph of key k (the file comment's ops), finalized, its descriptors recorded
 * in `owned`; the handle is set where there is one. */
int build_graph(m4_cudnn *c, const m4_cudnn_sdpa_key &k, std::vector<cudnnBackendDescriptor_t> &owned,
                cudnnBackendDescriptor_t *graph, m4_error *err) {
    graph_builder g{c->api, owned, err};
    const int64_t B = k.B, H = k.H, S = k.S, T = k.T, dq = k.dq, dv = k.dv, Sq = k.S_total, Tk = k.T_total;
    const int64_t q_dims[4] = {B, H, S, dq}, q_strides[4] = {H * Sq * dq, Sq * dq, dq, 1};
    const int64_t kt_dims[4] = {B, H, dq, T}, kt_strides[4] = {H * Tk * dq, Tk * dq, 1, dq};   /* Kᵀ */
    const int64_t v_dims[4] = {B, H, T, dv}, v_strides[4] = {Tk * H * dv, dv, H * dv, 1};
    const int64_t o_dims[4] = {B, H, S, dv}, o_strides[4] = {Sq * H * dv, dv, H * dv, 1};
    const int64_t s_dims[4] = {B, H, S, T}, s_strides[4] = {H * S * T, S * T, T, 1};
    const int64_t r_dims[4] = {B, H, S, 1}, r_strides[4] = {H * S, S, 1, 1};
    const int64_t one[4] = {1, 1, 1, 1};
    const cudnnDataType_t bf16 = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT, i32 = CUDNN_DATA_INT32,
                          boolean = CUDNN_DATA_BOOLEAN;
    std::vector<cudnnBackendDescriptor_t> ops;
    cudnnBackendDescriptor_t q, kt, v, o, stats, scale, scores, scaled, masked, row_max, shifted, exps, row_sum, log_sum, probs;
    if (g.tensor(kUidQ, bf16, q_dims, q_strides, false, false, "Q tensor", &q) ||
        g.tensor(kUidK, bf16, kt_dims, kt_strides, false, false, "K tensor (transposed view)", &kt) ||
        g.tensor(kUidV, bf16, v_dims, v_strides, false, false, "V tensor", &v) ||
        g.tensor(kUidO, bf16, o_dims, o_strides, false, false, "O tensor", &o) ||
        g.tensor(kUidStats, f32, r_dims, r_strides, false, false, "softmax statistics tensor", &stats) ||
        g.tensor(kUidScale, f32, one, one, false, true, "softmax scale scalar", &scale) ||
        g.tensor(0, f32, s_dims, s_strides, true, false, "scores tensor", &scores) ||
        g.tensor(0, f32, s_dims, s_strides, true, false, "scaled scores tensor", &scaled) ||
        g.matmul(q, kt, scores, "Q·Kᵀ matmul", &ops) ||
        g.pointwise(CUDNN_POINTWISE_MUL, f32, -1, scores, scale, nullptr, scaled, "scale multiply", &ops))
        return -1;
    masked = scaled;
    if (k.mask != m4_cudnn_mask::none) {
        cudnnBackendDescriptor_t row, col, keep, mask_value;
        if (g.tensor(0, i32, s_dims, s_strides, true, false, "row index tensor", &row) ||
            g.tensor(0, i32, s_dims, s_strides, true, false, "column index tensor", &col) ||
            g.tensor(0, boolean, s_dims, s_strides, true, false, "causal keep tensor", &keep) ||
            g.tensor(kUidMaskValue, f32, one, one, false, true, "mask value scalar", &mask_value) ||
            g.tensor(0, f32, s_dims, s_strides, true, false, "masked scores tensor", &masked) ||
            g.pointwise(CUDNN_POINTWISE_GEN_INDEX, f32, 2, scaled, nullptr, nullptr, row, "row index", &ops) ||
            g.pointwise(CUDNN_POINTWISE_GEN_INDEX, f32, 3, scaled, nullptr, nullptr, col, "column index", &ops))
            return -1;
        if (k.mask == m4_cudnn_mask::causal_bottom_right) {
            /* row + T − S: the diagonal through the last query and the last key */
            cudnnBackendDescriptor_t keys, queries, row_plus_keys, shifted_row;
            if (g.tensor(kUidKeys, i32, one, one, false, true, "key count scalar", &keys) ||
                g.tensor(kUidQueries, i32, one, one, false, true, "query count scalar", &queries) ||
                g.tensor(0, i32, s_dims, s_strides, true, false, "row + T tensor", &row_plus_keys) ||
                g.tensor(0, i32, s_dims, s_strides, true, false, "row + T − S tensor", &shifted_row) ||
                g.pointwise(CUDNN_POINTWISE_ADD, i32, -1, row, keys, nullptr, row_plus_keys, "row + T", &ops) ||
                g.pointwise(CUDNN_POINTWISE_SUB, i32, -1, row_plus_keys, queries, nullptr, shifted_row, "row + T − S", &ops))
                return -1;
            row = shifted_row;
        }
        if (g.pointwise(CUDNN_POINTWISE_CMP_GE, boolean, -1, row, col, nullptr, keep, "row ≥ column", &ops) ||
            g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, f32, -1, scaled, mask_value, keep, masked, "causal select", &ops))
            return -1;
    }
    if (g.tensor(0, f32, r_dims, r_strides, true, false, "row max tensor", &row_max) ||
        g.tensor(0, f32, s_dims, s_strides, true, false, "scores − max tensor", &shifted) ||
        g.tensor(0, f32, s_dims, s_strides, true, false, "exp tensor", &exps) ||
        g.tensor(0, f32, r_dims, r_strides, true, false, "row sum tensor", &row_sum) ||
        g.tensor(0, f32, r_dims, r_strides, true, false, "log row sum tensor", &log_sum) ||
        g.tensor(0, bf16, s_dims, s_strides, true, false, "probabilities tensor", &probs) ||
        g.reduction(CUDNN_REDUCE_TENSOR_MAX, masked, row_max, "softmax max", &ops) ||
        g.pointwise(CUDNN_POINTWISE_SUB, f32, -1, masked, row_max, nullptr, shifted, "softmax subtract", &ops) ||
        g.pointwise(CUDNN_POINTWISE_EXP, f32, -1, shifted, nullptr, nullptr, exps, "softmax exp", &ops) ||
        g.reduction(CUDNN_REDUCE_TENSOR_ADD, exps, row_sum, "softmax sum", &ops) ||
        g.pointwise(CUDNN_POINTWISE_LOG, f32, -1, row_sum, nullptr, nullptr, log_sum, "statistics log", &ops) ||
        g.pointwise(CUDNN_POINTWISE_ADD, f32, -1, row_max, log_sum, nullptr, stats, "statistics add", &ops) ||
        g.pointwise(CUDNN_POINTWISE_DIV, f32, -1, exps, row_sum, nullptr, probs, "softmax divide", &ops) ||
        g.matmul(probs, v, o, "P·V matmul", &ops))
        return -1;

    return g.create(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph", graph) ||
           g.SET(*graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, (int64_t)ops.size(), ops.data(),
                 "operation graph") ||
           (c->handle && g.SET(*graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &c->handle,
                               "operation graph")) ||
           g.finalize(*graph, "operation graph")
               ? -1
               : 0;
}

/* Key k's graph, its engine and execution plan: the heuristics' configurations in order, mode A
 * first; the first that finalizes wins. */
int build_plan(m4_cudnn *c, const m4_cudnn_sdpa_key &k, cudnn_plan *p, m4_error *err) {
    graph_builder g{c->api, p->owned, err};
    const int64_t B = k.B, H = k.H, S = k.S, T = k.T, dq = k.dq, dv = k.dv;
    cudnnBackendDescriptor_t graph;
    if (build_graph(c, k, p->owned, &graph, err)) return -1;
    char last_failure[sizeof(err->msg)] =
        "the heuristics kept no engine configuration (CUDNN_LOGLEVEL_DBG=2 CUDNN_LOGDEST_DBG=stderr shows each "
        "engine's reason; the runtime-compiled ones need NVRTC, libnvrtc.so, in the library path)";
    for (const cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
        cudnnBackendDescriptor_t heur;
        int64_t count = 0;
        if (g.create(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "engine heuristics", &heur) ||
            g.SET(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph,
                  "engine heuristics") ||
            g.SET(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "engine heuristics") ||
            g.finalize(heur, "engine heuristics"))
            return -1;
        cudnnStatus_t s = c->api.cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                          CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr);
        if (s != CUDNN_STATUS_SUCCESS)
            return cudnn_fail(c->api, s, err, "cudnnBackendGetAttribute(engine heuristics, CUDNN_ATTR_ENGINEHEUR_RESULTS count)");
        std::vector<cudnnBackendDescriptor_t> configs((size_t)count);
        for (auto &cfg : configs)
            if (g.create(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine configuration", &cfg)) return -1;
        int64_t returned = 0;
        s = c->api.cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                            &returned, configs.data());
        if (s != CUDNN_STATUS_SUCCESS)
            return cudnn_fail(c->api, s, err, "cudnnBackendGetAttribute(engine heuristics, CUDNN_ATTR_ENGINEHEUR_RESULTS)");
        for (int64_t i = 0; i < returned && i < count; i++) {
            cudnnBackendDescriptor_t plan;
            if (g.create(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, "execution plan", &plan) ||
                g.SET(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &c->handle, "execution plan") ||
                g.SET(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &configs[(size_t)i],
                      "execution plan"))
                return -1;
            m4_error why = {{0}};
            if (graph_builder{c->api, p->owned, &why}.finalize(plan, "execution plan")) {   /* this engine cannot: next */
                snprintf(last_failure, sizeof last_failure, "%s", why.msg);
                continue;
            }
            int64_t n = 0;
            s = c->api.cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                                &p->workspace);
            if (s != CUDNN_STATUS_SUCCESS)
                return cudnn_fail(c->api, s, err, "cudnnBackendGetAttribute(execution plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE)");
            p->plan = plan, p->key = k;
            return 0;
        }
    }
    return m4_fail(err, "cudnn attention: no cuDNN %zu engine runs this attention (B %lld, H %lld, S %lld, T %lld, dq %lld, "
                        "dv %lld, %s) on this GPU; last: %s", c->version, (long long)B, (long long)H, (long long)S,
                   (long long)T, (long long)dq, (long long)dv, mask_name(k.mask), last_failure);
}

void destroy_plan(const cudnn_api &api, cudnn_plan *p) {
    for (auto it = p->owned.rbegin(); it != p->owned.rend(); ++it) api.cudnnBackendDestroyDescriptor(*it);
    p->owned.clear();
}

/* The cached plan of key k, built on first use. */
const cudnn_plan *plan_for(m4_cudnn *c, const m4_cudnn_sdpa_key &k, m4_error *err) {
    for (const cudnn_plan &p : c->plans)
        if (p.key == k) return &p;
    cudnn_plan p;
    if (build_plan(c, k, &p, err)) {
        destroy_plan(c->api, &p);
        return nullptr;
    }
    c->plans.push_back(std::move(p));
    return &c->plans.back();
}

/* y[(r·heads + h)·width + e] = Out(x[r·x_row + h·x_head + e]) for r < rows, h < heads, e < width:
 * one block per (r, h), a thread per value (width ≤ blockDim.x). */
template <typename In, typename Out>
__global__ void convert_rows_kernel(const In *__restrict__ x, int64_t x_row, int64_t x_head, int64_t rows,
                                    int64_t heads, int64_t width, Out *__restrict__ y) {
    for (int64_t rh = blockIdx.x; rh < rows * heads; rh += gridDim.x) {
        const int64_t r = rh / heads, h = rh % heads;
        for (int64_t e = threadIdx.x; e < width; e += blockDim.x) {
            const float v = (float)x[r * x_row + h * x_head + e];
            y[rh * width + e] = Out(v);
        }
    }
}

template <typename In, typename Out>
int convert_rows(const In *x, int64_t x_row, int64_t x_head, int64_t rows, int64_t heads, int64_t width, Out *y,
                 cudaStream_t stream, m4_error *err) {
    if (rows * heads <= 0) return 0;
    const int64_t blocks = rows * heads < 65535 * 16 ? rows * heads : 65535 * 16;
    convert_rows_kernel<In, Out><<<(unsigned)blocks, 128, 0, stream>>>(x, x_row, x_head, rows, heads, width, y);
    M4_CUDA_TRY_LAUNCH(err);
    return 0;
}

size_t align_up(size_t x) { return (x + kScratchAlign - 1) / kScratchAlign * kScratchAlign; }

/* The bf16 copies and the workspace, carved out of one scratch allocation grown to `bytes`. */
int ensure_scratch(m4_cudnn *c, size_t bytes, m4_error *err) {
    if (bytes <= c->scratch_bytes) return 0;
    if (c->scratch) M4_CUDA_TRY(cudaFree(c->scratch), err);
    c->scratch = nullptr, c->scratch_bytes = 0;
    M4_CUDA_TRY(cudaMalloc(&c->scratch, bytes), err);
    c->scratch_bytes = bytes;
    return 0;
}

} // namespace

m4_cudnn_sdpa_key m4_cudnn_key(const m4k_attention_args *a, const m4_cudnn_block &block) {
    m4_cudnn_sdpa_key k;
    k.B = a->block_lo ? 1 : a->B, k.H = a->H, k.S = block.q1 - block.q0, k.T = block.k1 - block.k0;
    k.dq = a->dq, k.dv = a->dv, k.S_total = a->S, k.T_total = a->T;
    /* no mask where the diagonal hides no key (one query at the end of the keys, or one key): the
     * plain graph, which also serves cuDNN ≤ 9.9 where a single query cannot take a mask */
    k.mask = !a->causal || a->causal_past >= a->T - 1 ? m4_cudnn_mask::none
             : a->causal_past == 0                    ? m4_cudnn_mask::causal_top_left
                                                      : m4_cudnn_mask::causal_bottom_right;
    return k;
}

int m4_cudnn_split_blocks(const int32_t *lo, const int32_t *hi, int64_t S, int64_t T,
                          std::vector<m4_cudnn_block> *blocks, m4_error *err) {
    blocks->clear();
    for (int64_t i = 0; i < S; i++) {
        const int64_t k0 = lo[i] > 0 ? lo[i] : 0, k1 = hi[i] < T ? hi[i] : T;
        if (!blocks->empty() && blocks->back().q1 == i && blocks->back().k0 == k0 && blocks->back().k1 == k1) {
            blocks->back().q1 = i + 1;
            continue;
        }
        if ((int64_t)blocks->size() == M4_CUDNN_MAX_BLOCKS)
            return m4_fail(err, "cudnn attention: the block mask has more than %d runs of queries sharing a key range "
                                "(one cuDNN execution each): the flash kernel serves it", M4_CUDNN_MAX_BLOCKS);
        blocks->push_back({i, i + 1, k0, k1});
    }
    return 0;
}

bool m4_cudnn_attention_fits(const m4k_attention_args *a) {
    const bool dims = a->dq > 0 && a->dv > 0 && a->dq % 8 == 0 && a->dv % 8 == 0 && a->dq <= 128 && a->dv <= 128;
    const bool sizes = a->B > 0 && a->H > 0 && a->S > 0 && a->T > 0 && a->S < INT32_MAX && a->T < INT32_MAX;
    const bool blocks = a->block_lo || a->block_hi;
    const bool causal_ok = !a->causal || (!blocks && (a->causal_past == 0 || (a->T > a->S && a->causal_past == a->T - a->S)));
    const bool blocks_ok = !blocks || (a->block_lo && a->block_hi && a->B == 1 && !a->causal);
    return !a->probs && !a->mask && dims && sizes && causal_ok && blocks_ok && isfinite(a->scale);
}

namespace {

/* Opens `library` into c->api and checks its version against `min_version` (and the releases with
 * known SDPA bugs). -1 with err saying what is missing. */
int load_library(m4_cudnn *c, const char *library, size_t min_version, m4_error *err) {
    dlerror();
    c->api.lib = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!c->api.lib) {
        const char *why = dlerror();
        return m4_fail(err, "cudnn attention: cannot open %s (%s). cuDNN 9 is not in the library path: add the folder "
                            "that holds it to LD_LIBRARY_PATH (pip's nvidia-cudnn-cu13 puts it in "
                            "site-packages/nvidia/cudnn/lib; scripts/gpu-check finds it through python3), or leave "
                            "the cuDNN path off: the flash kernel serves prefill attention",
                       library, why ? why : "no reason given");
    }
#define M4_CUDNN_RESOLVE(name)                                                                                 \
    c->api.name = reinterpret_cast<decltype(&::name)>(dlsym(c->api.lib, #name));                              \
    if (!c->api.name) return m4_fail(err, "cudnn attention: %s has no %s: not a cuDNN 9 library", library, #name);
    M4_CUDNN_FUNCTIONS(M4_CUDNN_RESOLVE)
#undef M4_CUDNN_RESOLVE
    const size_t v = c->version = c->api.cudnnGetVersion();
    if (v < min_version || v >= 100000 || v == 91000 || v == 91001)
        return m4_fail(err, "cudnn attention: %s is cuDNN %zu.%zu.%zu; this needs cuDNN %zu.%zu or later 9.x (and not "
                            "9.10.0/9.10.1, whose bf16 SDPA forward has known bugs)", library, v / 10000, v / 100 % 100,
                       v % 100, min_version / 10000, min_version / 100 % 100);
    return 0;
}

} // namespace

int m4_cudnn_create(m4_cudnn **out, const char *library, m4_error *err) {
    *out = nullptr;
    if (!library) library = M4_CUDNN_LIBRARY;
    m4_cudnn *c = new m4_cudnn();
    if (load_library(c, library, 90600, err)) {
        m4_cudnn_destroy(c);
        return -1;
    }
    const cudnnStatus_t s = c->api.cudnnCreate(&c->handle);
    if (s != CUDNN_STATUS_SUCCESS) {
        cudnn_fail(c->api, s, err, "cudnnCreate (cuDNN %zu from %s)", c->version, library);
        c->handle = nullptr;
        m4_cudnn_destroy(c);
        return -1;
    }
    *out = c;
    return 0;
}

int m4_cudnn_check_graph(const char *library, const m4_cudnn_sdpa_key &key, const char *device_json, m4_error *err) {
    m4_cudnn *c = new m4_cudnn();
    std::vector<cudnnBackendDescriptor_t> owned;
    graph_builder g{c->api, owned, err};
    cudnnBackendDescriptor_t device, graph;
    int64_t engines = 0, n = 0;
    int rc = load_library(c, library ? library : M4_CUDNN_LIBRARY, 90800, err) ||
                     g.create(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR, "device properties", &device) ||
                     g.SET(device, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
                           (int64_t)strlen(device_json), device_json, "device properties") ||
                     g.finalize(device, "device properties") || build_graph(c, key, owned, &graph, err)
                 ? -1
                 : 0;
    if (!rc) {
        const cudnnStatus_t s = c->api.cudnnBackendGetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT,
                                                                CUDNN_TYPE_INT64, 1, &n, &engines);
        if (s != CUDNN_STATUS_SUCCESS)
            rc = cudnn_fail(c->api, s, err, "cudnnBackendGetAttribute(operation graph, CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT)");
    }
    /* every engine in turn: engine, configuration, plan for the described device; the
     * configuration's and the plan's finalize run the engine's support checks */
    cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
    for (int64_t i = 0; !rc && i < engines; i++) {
        cudnnBackendDescriptor_t engine, config, plan;
        m4_error ignored = {{0}};
        graph_builder quiet{c->api, owned, &ignored};
        if (quiet.create(CUDNN_BACKEND_ENGINE_DESCRIPTOR, "engine", &engine) ||
            quiet.SET(engine, CUDNN_ATTR_ENGINE_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph, "engine") ||
            quiet.SET(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &i, "engine") ||
            quiet.SET(engine, CUDNN_ATTR_ENGINE_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &device, "engine"))
            continue;
        last = c->api.cudnnBackendFinalize(engine);
        if (last == CUDNN_STATUS_SUCCESS) {
            if (quiet.create(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine configuration", &config) ||
                quiet.SET(config, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &engine, "engine configuration"))
                continue;
            last = c->api.cudnnBackendFinalize(config);
        }
        if (last == CUDNN_STATUS_SUCCESS) {
            if (quiet.create(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, "execution plan", &plan) ||
                quiet.SET(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &config,
                          "execution plan") ||
                quiet.SET(plan, CUDNN_ATTR_EXECUTION_PLAN_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &device,
                          "execution plan"))
                continue;
            last = c->api.cudnnBackendFinalize(plan);
        }
        if (last == CUDNN_STATUS_SUCCESS || last == CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING) rc = 1;
    }
    if (rc == 0)
        m4_fail(err, "cudnn attention: none of cuDNN %zu's %lld engines takes this graph (B %lld, H %lld, S %lld, T %lld, "
                     "dq %lld, dv %lld, %s) on the described device; last: %s", c->version, (long long)engines,
                (long long)key.B, (long long)key.H, (long long)key.S, (long long)key.T, (long long)key.dq,
                (long long)key.dv, mask_name(key.mask), c->api.cudnnGetErrorString(last));
    for (auto it = owned.rbegin(); it != owned.rend(); ++it) c->api.cudnnBackendDestroyDescriptor(*it);
    m4_cudnn_destroy(c);
    return rc;
}

void m4_cudnn_destroy(m4_cudnn *c) {
    if (!c) return;
    for (cudnn_plan &p : c->plans) destroy_plan(c->api, &p);
    if (c->handle) c->api.cudnnDestroy(c->handle);
    if (c->scratch) cudaFree(c->scratch);
    if (c->api.lib) dlclose(c->api.lib);
    delete c;
}

int m4_cudnn_attention(m4_cudnn *c, const m4k_attention_args *a, cudaStream_t stream, m4_error *err) {
    if (!m4_cudnn_attention_fits(a))
        return m4_fail(err, "cudnn attention: unsupported attention (probs %s, mask %s, dq %lld, dv %lld, causal %d with "
                            "past %lld, S %lld, T %lld, blocks %s): see m4_cudnn_attention_fits",
                       a->probs ? "wanted" : "no", a->mask ? "given" : "none", (long long)a->dq, (long long)a->dv,
                       (int)a->causal, (long long)a->causal_past, (long long)a->S, (long long)a->T,
                       a->block_lo ? "given" : "none");
    const int64_t B = a->B, H = a->H, S = a->S, T = a->T, dq = a->dq, dv = a->dv;
    if (a->block_lo) {
        c->lo.resize((size_t)S), c->hi.resize((size_t)S);
        M4_CUDA_TRY(cudaMemcpyAsync(c->lo.data(), a->block_lo, sizeof(int32_t) * (size_t)S, cudaMemcpyDeviceToHost, stream), err);
        M4_CUDA_TRY(cudaMemcpyAsync(c->hi.data(), a->block_hi, sizeof(int32_t) * (size_t)S, cudaMemcpyDeviceToHost, stream), err);
        M4_CUDA_TRY(cudaStreamSynchronize(stream), err);
        if (m4_cudnn_split_blocks(c->lo.data(), c->hi.data(), S, T, &c->blocks, err)) return -1;
    } else {
        c->blocks.assign(1, m4_cudnn_block{0, S, 0, T});
    }

    /* the plans first (each may fail, before anything is enqueued), and the workspace they need */
    std::vector<const cudnn_plan *> plans(c->blocks.size(), nullptr);
    int64_t workspace = 0;
    size_t stats_bytes = 0;
    for (size_t i = 0; i < c->blocks.size(); i++) {
        const m4_cudnn_block &blk = c->blocks[i];
        if (blk.q1 <= blk.q0 || blk.k1 <= blk.k0) continue;          /* no keys: output rows of zeros */
        if (!(plans[i] = plan_for(c, m4_cudnn_key(a, blk), err))) return -1;
        workspace = plans[i]->workspace > workspace ? plans[i]->workspace : workspace;
        stats_bytes += align_up(sizeof(float) * (size_t)(plans[i]->key.B * H * (blk.q1 - blk.q0)));
    }
    /* scratch: Q [B, H, S, dq], K [B, H, T, dq], V [B, T, H, dv], O [B, S, H, dv] in bf16, each
     * execution's statistics [B, H, S_block] (float32, unused), the workspace */
    const size_t q_bytes = align_up(2 * (size_t)(B * H * S * dq)), k_bytes = align_up(2 * (size_t)(B * H * T * dq));
    const size_t v_bytes = align_up(2 * (size_t)(B * T * H * dv)), o_bytes = align_up(2 * (size_t)(B * S * H * dv));
    if (ensure_scratch(c, q_bytes + k_bytes + v_bytes + o_bytes + stats_bytes + align_up((size_t)workspace), err))
        return -1;
    char *base = static_cast<char *>(c->scratch);
    __nv_bfloat16 *q = reinterpret_cast<__nv_bfloat16 *>(base), *k = reinterpret_cast<__nv_bfloat16 *>(base + q_bytes);
    __nv_bfloat16 *v = reinterpret_cast<__nv_bfloat16 *>(base + q_bytes + k_bytes);
    __nv_bfloat16 *o = reinterpret_cast<__nv_bfloat16 *>(base + q_bytes + k_bytes + v_bytes);
    char *stats = base + q_bytes + k_bytes + v_bytes + o_bytes;
    void *ws = workspace > 0 ? stats + stats_bytes : nullptr;
    if (m4k_to_bf16(a->Q, q, B * H * S * dq, stream, err) || m4k_to_bf16(a->K, k, B * H * T * dq, stream, err) ||
        convert_rows(a->V, a->v_row_stride, a->v_head_stride, B * T, H, dv, v, stream, err))
        return -1;

    const cudnnStatus_t st = c->api.cudnnSetStream(c->handle, stream);
    if (st != CUDNN_STATUS_SUCCESS) return cudnn_fail(c->api, st, err, "cudnnSetStream");
    /* by-value scalars: the softmax scale, the masked score (−∞, or the lowest float before 9.10
     * as cudnn-frontend does), the key and query counts of the bottom-right diagonal */
    const float scale = a->scale, mask_value = c->version < 91000 ? -FLT_MAX : -INFINITY;
    for (size_t i = 0; i < c->blocks.size(); i++) {
        const m4_cudnn_block &blk = c->blocks[i];
        __nv_bfloat16 *o_blk = o + blk.q0 * H * dv;
        if (!plans[i]) {                                              /* rows with an empty key range */
            M4_CUDA_TRY(cudaMemsetAsync(o_blk, 0, 2 * (size_t)((blk.q1 - blk.q0) * H * dv), stream), err);
            continue;
        }
        const int32_t keys = (int32_t)(blk.k1 - blk.k0), queries = (int32_t)(blk.q1 - blk.q0);
        int64_t uids[9] = {kUidQ, kUidK, kUidV, kUidO, kUidStats, kUidScale, kUidMaskValue, kUidKeys, kUidQueries};
        void *ptrs[9] = {q + blk.q0 * dq, k + blk.k0 * dq, v + blk.k0 * H * dv, o_blk, stats, (void *)&scale,
                         (void *)&mask_value, (void *)&keys, (void *)&queries};
        stats += align_up(sizeof(float) * (size_t)(plans[i]->key.B * H * queries));
        const m4_cudnn_mask mask = plans[i]->key.mask;
        const int64_t n = mask == m4_cudnn_mask::none ? 6 : mask == m4_cudnn_mask::causal_top_left ? 7 : 9;
        std::vector<cudnnBackendDescriptor_t> owned;
        graph_builder g{c->api, owned, err};
        cudnnBackendDescriptor_t pack;
        int rc = g.create(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, "variant pack", &pack) ||
                 g.SET(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids, "variant pack") ||
                 g.SET(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs, "variant pack") ||
                 g.SET(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws, "variant pack") ||
                 g.finalize(pack, "variant pack");
        if (!rc) {
            const cudnnStatus_t s = c->api.cudnnBackendExecute(c->handle, plans[i]->plan, pack);
            if (s != CUDNN_STATUS_SUCCESS)
                rc = cudnn_fail(c->api, s, err, "cudnnBackendExecute (B %lld, H %lld, S %lld, T %lld, dq %lld, dv %lld, %s)",
                                (long long)plans[i]->key.B, (long long)H, (long long)queries, (long long)keys,
                                (long long)dq, (long long)dv, mask_name(mask));
        }
        for (cudnnBackendDescriptor_t d : owned) c->api.cudnnBackendDestroyDescriptor(d);
        if (rc) return -1;
    }
    return convert_rows(o, dv, 0, B * S * H, 1, dv, a->O, stream, err);
}

#undef SET
