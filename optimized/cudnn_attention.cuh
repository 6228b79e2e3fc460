/* cudnn_attention.cuh — prefill softmax attention through cuDNN's fused flash attention (SDPA
 * built as a cuDNN 9 backend operation graph), beside our flash kernel (kernels/flash_attention.cuh,
 * m4k_flash_attention): the same m4k_attention_args and results within bf16 rounding. Q, K and V
 * are rounded to bf16 into scratch, cuDNN computes in bf16 with float32 scores, softmax and
 * accumulation, and the bf16 output is widened back into the float32 O.
 *
 * Compiled only where cuDNN 9's headers were found (M4_HAVE_CUDNN). libcudnn.so.9 is not linked:
 * create opens it with dlopen, so binaries load and run on a machine without cuDNN, where create
 * fails with a message saying what to set (and the caller keeps the flash kernel).
 *
 * Unproven: written without a GPU (no engine has run this graph yet); test_gpu_cudnn_attention
 * is the proof. */
#ifndef M4_CUDA_CUDNN_ATTENTION_CUH
#define M4_CUDA_CUDNN_ATTENTION_CUH

#include <stdint.h>

#include <vector>

#include "kernels/attention.cuh"   /* m4k_attention_args */

/* The library create opens by default (cuDNN 9's soname). */
#define M4_CUDNN_LIBRARY "libcudnn.so.9"

/* The backend's state: the opened library, a cudnnHandle, the plans built so far (one per
 * m4_cudnn_sdpa_key) and device scratch (bf16 Q, K, V, O, the softmax statistics, cuDNN's
 * workspace; grown on demand). */
struct m4_cudnn;

/* Opens `library` (NULL: M4_CUDNN_LIBRARY), resolves the cuDNN functions used, checks the version
 * (9.6 or later, not 9.10.0/9.10.1: the releases whose SDPA forward cudnn-frontend refuses) and
 * creates a handle on the current device. -1 with err saying what is missing. */
int m4_cudnn_create(m4_cudnn **out, const char *library, m4_error *err);
void m4_cudnn_destroy(m4_cudnn *c);

/* Whether m4_cudnn_attention can serve `a` exactly, from what the host can see: no probs, no
 * padding mask (its fully masked rows average every key in the reference, which cuDNN's −∞ mask
 * cannot), dq and dv multiples of 8 up to 128, S and T below 2^31; causal only without
 * block_lo/hi and with causal_past 0 (top-left diagonal) or T − S (bottom-right); block_lo/hi
 * only with B = 1 and not causal. The block ranges themselves live on the device: the call
 * checks them (m4_cudnn_split_blocks). */
bool m4_cudnn_attention_fits(const m4k_attention_args *a);

/* m4k_attention's math for an `a` that fits, enqueued on `stream`. The first call of a shape
 * builds its plan (heuristics, engine compilation: milliseconds to seconds) and may grow the
 * scratch (cudaMalloc): not capturable into a CUDA graph. With block_lo/hi the ranges are copied
 * to the host (a stream synchronisation) and each run of queries sharing one key range is one
 * cuDNN execution (Pixtral: one per image). -1 with err naming the cuDNN call and its status. */
int m4_cudnn_attention(m4_cudnn *c, const m4k_attention_args *a, cudaStream_t stream, m4_error *err);

/* ---- Host logic, exposed for the CPU test ---------------------------------------------------- */

/* One run of consecutive queries [q0, q1) that all see keys [k0, k1) (k0 ≥ k1: none, output 0). */
struct m4_cudnn_block {
    int64_t q0, q1, k0, k1;
};

/* The runs of block_lo/hi (host copies, S queries, each range clamped to [0, T) as the kernels
 * do), in query order. -1 with err when there are more than M4_CUDNN_MAX_BLOCKS (each distinct
 * shape costs a plan; the flash kernel serves such masks). */
#define M4_CUDNN_MAX_BLOCKS 64
int m4_cudnn_split_blocks(const int32_t *lo, const int32_t *hi, int64_t S, int64_t T,
                          std::vector<m4_cudnn_block> *blocks, m4_error *err);

/* The diagonal of the causal mask, when there is one: keys j ≤ i (top_left) or j ≤ i + T − S
 * (bottom_right). */
enum class m4_cudnn_mask : int { none, causal_top_left, causal_bottom_right };

/* Everything a plan depends on (the plan cache's key): one execution over B rows, H heads, S
 * queries and T keys, head dims dq/dv, inside buffers of S_total queries and T_total keys (the
 * strides: Q [B, H, S_total, dq], K [B, H, T_total, dq], V [B, T_total, H, dv] and O
 * [B, S_total, H, dv] in bf16 scratch), and the mask. The softmax scale is passed at execution. */
struct m4_cudnn_sdpa_key {
    int64_t B, H, S, T, dq, dv, S_total, T_total;
    m4_cudnn_mask mask;
    bool operator==(const m4_cudnn_sdpa_key &o) const {
        return B == o.B && H == o.H && S == o.S && T == o.T && dq == o.dq && dv == o.dv && S_total == o.S_total &&
               T_total == o.T_total && mask == o.mask;
    }
};

/* Checks key's operation graph without a GPU (cuDNN ≥ 9.8): built as m4_cudnn_attention builds it
 * and offered to every cuDNN engine for the device that `device_json` describes
 * (CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION: the fields of cudaDeviceProp that cuDNN reads, e.g.
 * "deviceVer": 900 for sm_90). 1 when an engine takes it — its plan finalizes, or stops only for
 * the missing CUDA driver (CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING: the
 * runtime-compiled engines check the graph's pattern first) —, 0 when every engine refuses it
 * (err says the last status), -1 on error (library, device properties, graph) with err set. */
int m4_cudnn_check_graph(const char *library, const m4_cudnn_sdpa_key &key, const char *device_json, m4_error *err);

/* The key of the execution that serves `block` of `a` (the whole problem: {0, S, 0, T}); a causal
 * `a` whose diagonal hides no key (causal_past ≥ T − 1) takes no mask. */
m4_cudnn_sdpa_key m4_cudnn_key(const m4k_attention_args *a, const m4_cudnn_block &block);

#endif
