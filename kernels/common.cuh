// common.cuh -- what every kernel family shares: reading and writing each storage type as float32, and the
// reductions of a warp and of a block.
//
//   load(p, i)      p[i] as a float, whatever p's storage type (float, __half, __nv_bfloat16)
//   store(p, i, v)  p[i] = v, rounded to nearest for the half types
//   LOWEST, neg_inf()  float32's lowest finite value and -infinity
//   warp_sum(v), warp_max(v)            over the 32 lanes of the calling warp, returned to every lane
//   block_sum(v, partial), block_max(v, partial)
//                   over the whole block, returned to every thread; `partial` is 32 floats of __shared__ memory.
//                   Every thread of the block must call them (they hold __syncthreads), with blockDim.x a multiple
//                   of 32 (full warps: the shuffles name all 32 lanes).
//   normalize_row(row, local, partial, gamma, beta, y, at, n_cols, eps[, mean_out, rstd_out])
//                   LayerNorm of a row the block holds in shared memory (`local`: this thread's share of its sum):
//                   y[at + c] = (row[c] - mean) * rstd * gamma[c] + beta[c], statistics in two float32 passes;
//                   given mean_out and rstd_out, they are written at blockIdx.x too (a row per block).
//
// Why warp shuffles: the 32 lanes of a warp swap registers directly (__shfl_xor_sync), with no shared memory and no
// barrier; five exchanges (offsets 16, 8, 4, 2, 1) leave every lane holding the total ("butterfly" reduction). A
// block adds one round through shared memory: each warp's lane 0 writes its total, then every warp reduces those.
//
// The including file defines SEQ2SEQ_HALF_TYPES (1: also the __half / __nv_bfloat16 overloads, which need the CUDA
// headers cuda_fp16.h and cuda_bf16.h; 0: float only) and includes this file with kernels/ on the include path
// (the loader and the tests pass -I kernels/).
#pragma once

#if SEQ2SEQ_HALF_TYPES
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#endif

namespace {

// float32's lowest finite value (-FLT_MAX) and -infinity, spelled out: NVRTC compiles without <cfloat>/<cmath>.
// The attention kernels fill masked scores with LOWEST, as the CPU path does (nn/attention.py), and keys that do
// not exist at all with neg_inf().
constexpr float LOWEST = -3.40282346638528859812e+38f;
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

__device__ __forceinline__ float load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ void store(float* p, long long i, float v) { p[i] = v; }
#if SEQ2SEQ_HALF_TYPES
__device__ __forceinline__ float load(const __half* p, long long i) { return __half2float(p[i]); }
__device__ __forceinline__ void store(__half* p, long long i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ float load(const __nv_bfloat16* p, long long i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store(__nv_bfloat16* p, long long i, float v) { p[i] = __float2bfloat16_rn(v); }
#endif

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// One warp's results combined across the block through `partial`; `warp_op` is warp_sum or warp_max and `empty`
// its neutral value (what the lanes past the last warp contribute).
template <typename WarpOp>
__device__ __forceinline__ float block_reduce(float v, float* partial, WarpOp warp_op, float empty) {
    v = warp_op(v);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n_warps = (blockDim.x + 31) >> 5;
    __syncthreads();  // `partial` may still be read by the previous call
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    return warp_op(lane < n_warps ? partial[lane] : empty);
}

__device__ __forceinline__ float block_sum(float v, float* partial) {
    return block_reduce(v, partial, [](float x) { return warp_sum(x); }, 0.0f);
}

__device__ __forceinline__ float block_max(float v, float* partial) {
    return block_reduce(v, partial, [](float x) { return warp_max(x); }, neg_inf());
}

// Two passes (the mean, then the mean of squared deviations from it) rather than E[x^2] - E[x]^2: the one-pass form
// loses the variance to cancellation when the mean is large against the spread, as activations' often is.
template <typename T>
__device__ __forceinline__ void normalize_row(const float* row, float local, float* partial, const T* gamma,
                                              const T* beta, T* y, long long at, int n_cols, float eps,
                                              float* mean_out = nullptr, float* rstd_out = nullptr) {
    const float mean = block_sum(local, partial) / n_cols;
    local = 0.0f;
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) {
        const float d = row[c] - mean;
        local += d * d;
    }
    const float rstd = rsqrtf(block_sum(local, partial) / n_cols + eps);
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) {
        store(y, at + c, (row[c] - mean) * rstd * load(gamma, c) + load(beta, c));
    }
    if (mean_out != nullptr && threadIdx.x == 0) {  // the row's statistics, for a backward pass
        mean_out[blockIdx.x] = mean;
        rstd_out[blockIdx.x] = rstd;
    }
}

}  // namespace
