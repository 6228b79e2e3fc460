/* device.cuh — device-side helpers shared by the kernel files: warp and block reductions, the
 * activations in the reference's operation order, widening loads. */
#ifndef M4_CUDA_DEVICE_CUH
#define M4_CUDA_DEVICE_CUH

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <float.h>
#include <stdint.h>

extern "C" {
#include "config.h"
}

namespace {

constexpr int kWarp = 32;

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = kWarp / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

/* Block-wide reduction (sum or max) of one value per thread; every thread gets the result.
 * `scratch` holds 32 floats; blockDim.x is a multiple of 32. */
template <bool kMax>
__device__ float block_reduce(float v, float *scratch) {
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, warps = blockDim.x / kWarp;
    v = kMax ? warp_max(v) : warp_sum(v);
    __syncthreads();                           /* scratch may still be read by a previous call */
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : (kMax ? -FLT_MAX : 0.0f);
    return kMax ? warp_max(v) : warp_sum(v);
}

/* ACT2FN, in the reference's operation order (reference/ops.c). */
__device__ __forceinline__ float activate(float x, m4_activation act) {
    switch (act) {
    case M4_ACT_SILU: return x / (1.0f + expf(-x));
    case M4_ACT_GELU: return (x * 0.5f) * (1.0f + erff(x * 0.70710678118654752440f));
    case M4_ACT_GELU_TANH: {
        float inner = 0.79788456080286535588f * (x + 0.044715f * (x * x * x));
        return 0.5f * x * (1.0f + tanhf(inner));
    }
    case M4_ACT_RELU: return x > 0.0f ? x : 0.0f;
    }
    return x;
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

/* Four e4m3 codes, the bytes of `w` (lowest address first, as loaded), → float32. Exact: every
 * e4m3 value is a half and every half a float (cvt.rn.f16x2.e4m3x2 on sm_89+, cuda_fp8.h's
 * emulation before), so out[i] == m4_f8e4m3_to_f32(byte i) bit for bit, NaN codes giving NaN. */
__device__ __forceinline__ void e4m3x4_to_float(uint32_t w, float *out) {
    const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(w & 0xFFFFu), __NV_E4M3);
    const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(w >> 16), __NV_E4M3);
    const float2 a = __half22float2(__half2(lo)), b = __half22float2(__half2(hi));
    out[0] = a.x, out[1] = a.y, out[2] = b.x, out[3] = b.y;
}

/* float32 → the storage type W (round to nearest even for bf16). */
template <typename W> __device__ __forceinline__ W from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

} // namespace

#endif
