/* The host side of the cuDNN attention path (optimized/cudnn_attention.cu), without a GPU:
 *   - m4_cudnn_attention_fits serves the published MLA prompt shape (dq = dv = 128, causal, past 0
 *     or T − S) and Pixtral's block-diagonal attention, and refuses what cuDNN cannot do exactly
 *     (probs, a padding mask, other pasts, dims, causal blocks, batched blocks);
 *   - the plan-cache key: equal for executions that can share a plan, different otherwise;
 *   - the split of block_lo/hi into runs of queries sharing a key range (ragged images, clamping,
 *     empty ranges, the run limit);
 *   - create's messages when libcudnn cannot be opened (a bogus name), is not cuDNN (libm), or
 *     finds no device (the installed cuDNN, where there is one);
 *   - where cuDNN ≥ 9.8 is installed (the CUDA toolkit's, here): every graph the path builds (MLA
 *     prompt top-left and bottom-right, Pixtral blocks, the tiny golden dims) is taken by one of
 *     cuDNN's engines for an H100 and an A100 described by their properties — up to the driver,
 *     which this machine lacks (m4_cudnn_check_graph). This check caught a real refusal: the graph
 *     without the softmax statistics output (see cudnn_attention.cu).
 * Runs without a device. */
#include <string.h>

#include <string>
#include <vector>

extern "C" {
#include "testutil.h"
}
#include "cudnn_attention.cuh"

/* The MLA prompt at the published head dims: B 2, 32 heads, S queries over T keys, V in kv_b's rows. */
static m4k_attention_args mla(int64_t S, int64_t T, int64_t past) {
    static float dummy;
    m4k_attention_args a = {};
    a.Q = a.K = a.V = &dummy, a.O = &dummy;
    a.B = 2, a.H = 32, a.S = S, a.T = T, a.dq = 128, a.dv = 128;
    a.v_row_stride = 32 * 256, a.v_head_stride = 256;
    a.scale = 0.0883883f, a.causal = true, a.causal_past = past;
    return a;
}

/* Pixtral: B 1, 16 heads of 64, P patches, block-diagonal, not causal. */
static m4k_attention_args vision(int64_t P) {
    static float dummy;
    static int32_t lo, hi;                       /* device pointers in real use: fits only tests them for NULL */
    m4k_attention_args a = {};
    a.Q = a.K = a.V = &dummy, a.O = &dummy;
    a.B = 1, a.H = 16, a.S = P, a.T = P, a.dq = 64, a.dv = 64, a.v_row_stride = 1024, a.v_head_stride = 64;
    a.scale = 0.125f, a.block_lo = &lo, a.block_hi = &hi;
    return a;
}

static bool fits(m4k_attention_args a) { return m4_cudnn_attention_fits(&a); }

static void fits_decisions(void **state) {
    (void)state;
    static float probs;
    static int64_t mask;
    assert_true(fits(mla(4096, 4096, 0)));
    assert_true(fits(mla(130, 130, 0)));
    assert_true(fits(mla(3, 300, 297)));     /* bottom-right */
    assert_true(fits(vision(373)));
    m4k_attention_args a = mla(100, 300, 150);                   /* a past that is neither 0 nor T − S */
    assert_false(fits(a));
    a = mla(300, 100, -200);                                     /* S > T: rows with no key */
    assert_false(fits(a));
    a = mla(64, 64, 0), a.probs = &probs;
    assert_false(fits(a));
    a = mla(64, 64, 0), a.mask = &mask;                          /* padding: fully masked rows average all keys */
    assert_false(fits(a));
    a = mla(64, 64, 0), a.dq = 192;                              /* beyond the head dims every cuDNN 9 serves */
    assert_false(fits(a));
    a = mla(64, 64, 0), a.dv = 12;
    assert_false(fits(a));
    a = mla(64, 64, 0), a.scale = NAN;
    assert_false(fits(a));
    a = mla((int64_t)1 << 31, (int64_t)1 << 31, 0);              /* int32 index scalars */
    assert_false(fits(a));
    a = vision(100), a.causal = true;                            /* causal blocks may leave a row no key */
    assert_false(fits(a));
    a = vision(100), a.B = 2;
    assert_false(fits(a));
    a = vision(100), a.block_hi = nullptr;
    assert_false(fits(a));
    /* the call refuses what fits refuses, before touching the (absent) device */
    m4_error err = {{0}};
    a = mla(64, 64, 0), a.probs = &probs;
    assert_int_equal(m4_cudnn_attention(nullptr, &a, 0, &err), -1);
    assert_non_null(strstr(err.msg, "probs wanted"));
}

static void plan_keys(void **state) {
    (void)state;
    const m4k_attention_args text = mla(130, 130, 0), past = mla(3, 300, 297);
    const m4_cudnn_sdpa_key whole = m4_cudnn_key(&text, {0, 130, 0, 130});
    assert_int_equal(whole.B, 2), assert_int_equal(whole.S, 130), assert_int_equal(whole.T, 130);
    assert_int_equal(whole.S_total, 130), assert_int_equal(whole.T_total, 130);
    assert_true(whole.mask == m4_cudnn_mask::causal_top_left);
    assert_true(m4_cudnn_key(&past, {0, 3, 0, 300}).mask == m4_cudnn_mask::causal_bottom_right);
    /* one query after its past, or one key: the diagonal hides nothing, no mask */
    const m4k_attention_args last = mla(1, 300, 299), single = mla(1, 1, 0);
    assert_true(m4_cudnn_key(&last, {0, 1, 0, 300}).mask == m4_cudnn_mask::none);
    assert_true(m4_cudnn_key(&single, {0, 1, 0, 1}).mask == m4_cudnn_mask::none);
    assert_true(m4_cudnn_key(&text, {0, 130, 0, 130}) == whole);
    m4k_attention_args other = text;
    other.scale = 0.5f;                                          /* the scale is bound at execution */
    assert_true(m4_cudnn_key(&other, {0, 130, 0, 130}) == whole);
    other = text, other.H = 16;
    assert_false(m4_cudnn_key(&other, {0, 130, 0, 130}) == whole);
    other = text, other.causal = false;
    assert_false(m4_cudnn_key(&other, {0, 130, 0, 130}) == whole);

    /* Pixtral: two images of 100 patches in one prompt share a plan; the same image length in a
     * prompt of another total length has other strides, hence another plan */
    const m4k_attention_args img = vision(257), longer = vision(300);
    const m4_cudnn_sdpa_key first = m4_cudnn_key(&img, {0, 100, 0, 100});
    assert_int_equal(first.B, 1);
    assert_true(first.mask == m4_cudnn_mask::none);
    assert_true(m4_cudnn_key(&img, {100, 200, 100, 200}) == first);
    assert_false(m4_cudnn_key(&img, {200, 257, 200, 257}) == first);
    assert_false(m4_cudnn_key(&longer, {0, 100, 0, 100}) == first);
}

/* lo/hi of images of the given patch counts, one after the other. */
static void images(const std::vector<int64_t> &sizes, std::vector<int32_t> *lo, std::vector<int32_t> *hi) {
    lo->clear(), hi->clear();
    for (int64_t n : sizes)
        for (int64_t t = 0, start = (int64_t)lo->size(); t < n; t++) lo->push_back((int32_t)start), hi->push_back((int32_t)(start + n));
}

static void block_split(void **state) {
    (void)state;
    std::vector<int32_t> lo, hi;
    std::vector<m4_cudnn_block> b;
    m4_error err = {{0}};
    images({16, 100, 257}, &lo, &hi);
    assert_int_equal(m4_cudnn_split_blocks(lo.data(), hi.data(), 373, 373, &b, &err), 0);
    assert_int_equal(b.size(), 3);
    const int64_t want[3][4] = {{0, 16, 0, 16}, {16, 116, 16, 116}, {116, 373, 116, 373}};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(b[(size_t)i].q0, want[i][0]), assert_int_equal(b[(size_t)i].q1, want[i][1]);
        assert_int_equal(b[(size_t)i].k0, want[i][2]), assert_int_equal(b[(size_t)i].k1, want[i][3]);
    }
    /* two neighbouring images of equal length stay two runs (their key ranges differ) */
    images({50, 50}, &lo, &hi);
    assert_int_equal(m4_cudnn_split_blocks(lo.data(), hi.data(), 100, 100, &b, &err), 0);
    assert_int_equal(b.size(), 2);
    assert_int_equal(b[1].q0, 50), assert_int_equal(b[1].k0, 50), assert_int_equal(b[1].k1, 100);
    /* clamped to [0, T) as the kernels do; an empty range is its own run (its rows get zeros);
     * queries whose key range is not their own (non-square runs) are served as such */
    const int32_t lo2[6] = {-5, -5, 3, 3, 7, 0}, hi2[6] = {4, 4, 2, 2, 99, 2};
    assert_int_equal(m4_cudnn_split_blocks(lo2, hi2, 6, 10, &b, &err), 0);
    assert_int_equal(b.size(), 4);
    assert_int_equal(b[0].q0, 0), assert_int_equal(b[0].q1, 2), assert_int_equal(b[0].k0, 0), assert_int_equal(b[0].k1, 4);
    assert_int_equal(b[1].q0, 2), assert_int_equal(b[1].q1, 4), assert_true(b[1].k1 <= b[1].k0);
    assert_int_equal(b[2].k0, 7), assert_int_equal(b[2].k1, 10);
    assert_int_equal(b[3].q0, 5), assert_int_equal(b[3].k0, 0), assert_int_equal(b[3].k1, 2);
    /* more runs than the limit: refused with a message (the flash kernel serves it) */
    std::vector<int64_t> many((size_t)M4_CUDNN_MAX_BLOCKS, 2);
    images(many, &lo, &hi);
    assert_int_equal(m4_cudnn_split_blocks(lo.data(), hi.data(), (int64_t)lo.size(), (int64_t)lo.size(), &b, &err), 0);
    many.push_back(3);
    images(many, &lo, &hi);
    assert_int_equal(m4_cudnn_split_blocks(lo.data(), hi.data(), (int64_t)lo.size(), (int64_t)lo.size(), &b, &err), -1);
    assert_non_null(strstr(err.msg, "flash kernel"));
}

static void library_missing(void **state) {
    (void)state;
    m4_cudnn *c = nullptr;
    m4_error err = {{0}};
    assert_int_equal(m4_cudnn_create(&c, "libcudnn-not-installed.so.9", &err), -1);
    assert_null(c);
    fprintf(stderr, "missing library: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "libcudnn-not-installed.so.9"));
    assert_non_null(strstr(err.msg, "LD_LIBRARY_PATH"));
    /* a library that opens but is not cuDNN */
    assert_int_equal(m4_cudnn_create(&c, "libm.so.6", &err), -1);
    assert_null(c);
    fprintf(stderr, "not cuDNN: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "has no cudnnGetVersion"));
    /* the installed cuDNN, where there is one: without a device, cudnnCreate's failure is named */
    if (m4_cudnn_create(&c, nullptr, &err) == 0) {
        m4_cudnn_destroy(c);                                     /* a device is present */
    } else if (!strstr(err.msg, "cannot open") && !strstr(err.msg, "this needs cuDNN")) {
        fprintf(stderr, "no device: %s\n", err.msg);
        assert_non_null(strstr(err.msg, "cudnnCreate"));
    }
    m4_cudnn_destroy(nullptr);
}

/* An H100 SXM's and an A100 SXM's properties as cuDNN reads them (the cudaDeviceProp fields cuDNN
 * 9.19's libcudnn_graph names; values from the data sheets; deviceVer = 100 × compute capability). */
static const char h100_json[] =
    "{\"deviceName\": \"NVIDIA H100 80GB HBM3\", \"deviceVer\": 900, \"driverVer\": 13000, \"cudaDeviceId\": 0, "
    "\"multiProcessorCount\": 132, \"maxGridSize\": [2147483647, 65535, 65535], \"maxBlockSize\": [1024, 1024, 64], "
    "\"maxThreadsPerBlock\": 1024, \"maxThreadsPerSM\": 2048, \"maxCtasPerSM\": 32, \"regsPerBlock\": 65536, "
    "\"maxRegistersPerSM\": 65536, \"warpSize\": 32, \"maxSharedMemoryPerBlock\": 49152, "
    "\"maxSharedMemoryPerBlockOptin\": 232448, \"reservedSharedMemoryPerBlock\": 1024, \"l2CacheSize\": 52428800, "
    "\"smClockRateKHz\": 1980000, \"memClockRateKHz\": 2619000, \"totalGlobalMem\": 85520809984, "
    "\"pciDeviceId\": 0, \"isTccDriver\": 0, \"supportCoopLaunch\": 1}";
static const char a100_json[] =
    "{\"deviceName\": \"NVIDIA A100-SXM4-80GB\", \"deviceVer\": 800, \"driverVer\": 13000, \"cudaDeviceId\": 0, "
    "\"multiProcessorCount\": 108, \"maxGridSize\": [2147483647, 65535, 65535], \"maxBlockSize\": [1024, 1024, 64], "
    "\"maxThreadsPerBlock\": 1024, \"maxThreadsPerSM\": 2048, \"maxCtasPerSM\": 32, \"regsPerBlock\": 65536, "
    "\"maxRegistersPerSM\": 65536, \"warpSize\": 32, \"maxSharedMemoryPerBlock\": 49152, "
    "\"maxSharedMemoryPerBlockOptin\": 166912, \"reservedSharedMemoryPerBlock\": 1024, \"l2CacheSize\": 41943040, "
    "\"smClockRateKHz\": 1410000, \"memClockRateKHz\": 1593000, \"totalGlobalMem\": 85899345920, "
    "\"pciDeviceId\": 0, \"isTccDriver\": 0, \"supportCoopLaunch\": 1}";

static void graphs_taken_by_an_engine(void **state) {
    (void)state;
    const m4_cudnn_sdpa_key keys[] = {
        {1, 32, 4096, 4096, 128, 128, 4096, 4096, m4_cudnn_mask::causal_top_left},   /* MLA prompt, real width */
        {2, 32, 129, 700, 128, 128, 129, 700, m4_cudnn_mask::causal_bottom_right},   /* after a cached past */
        {1, 16, 100, 100, 64, 64, 373, 373, m4_cudnn_mask::none},                    /* one Pixtral image of three */
        {2, 4, 7, 7, 16, 16, 7, 7, m4_cudnn_mask::causal_top_left},                  /* tiny golden dims */
        {1, 2, 9, 9, 16, 16, 43, 43, m4_cudnn_mask::none},
    };
    for (const char *device : {h100_json, a100_json})
        for (const m4_cudnn_sdpa_key &k : keys) {
            m4_error err = {{0}};
            const int rc = m4_cudnn_check_graph(nullptr, k, device, &err);
            if (rc < 0 && (strstr(err.msg, "cannot open") || strstr(err.msg, "this needs cuDNN"))) {
                fprintf(stderr, "graphs_taken_by_an_engine: skipped: %s\n", err.msg);
                return;
            }
            if (rc != 1)
                fail_msg("%s, S %lld T %lld dq %lld: %s", device == h100_json ? "H100" : "A100", (long long)k.S,
                         (long long)k.T, (long long)k.dq, err.msg);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fits_decisions),
        cmocka_unit_test(plan_keys),
        cmocka_unit_test(block_split),
        cmocka_unit_test(library_missing),
        cmocka_unit_test(graphs_taken_by_an_engine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
