// common.cuh -- what every kernel family shares: reading and writing each storage type as float32.
//
//   load(p, i)      p[i] as a float, whatever p's storage type (float, __half, __nv_bfloat16)
//   store(p, i, v)  p[i] = v, rounded to nearest for the half types
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

__device__ __forceinline__ float load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ void store(float* p, long long i, float v) { p[i] = v; }
#if SEQ2SEQ_HALF_TYPES
__device__ __forceinline__ float load(const __half* p, long long i) { return __half2float(p[i]); }
__device__ __forceinline__ void store(__half* p, long long i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ float load(const __nv_bfloat16* p, long long i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store(__nv_bfloat16* p, long long i, float v) { p[i] = __float2bfloat16_rn(v); }
#endif

}  // namespace
