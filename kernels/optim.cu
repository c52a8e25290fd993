// optim.cu -- AdamW's update of one parameter in one pass: the parameter and both moments read and written once.
//
// The plain form (seq2seq/training/optim.py, _adamw_update) is about ten CuPy kernels per parameter, each a pass
// over p, g, m or v, and a model has a couple of hundred parameters: thousands of launches a step. Here it is one
// launch per parameter, in torch.optim.AdamW's order of operations, element by element:
//
//   p *= 1 - lr * weight_decay
//   m += (1 - beta1) * (g - m)
//   v  = beta2 * v + (1 - beta2) * g * g
//   p -= step_size * m / (sqrt(v) / sqrt_bias_correction2 + eps),   step_size = lr / (1 - beta1^t)
//
// Kernels (extern "C", one per storage type <T>: f32, f16, bf16; float32 arithmetic):
//   adamw_<T>(T* p, const T* g, T* m, T* v, long long n, float lr, float beta1, float beta2, float eps,
//             float weight_decay, float step_size, float sqrt_bias_correction2)
//   p, g, m, v  [n] each: the parameter, its gradient and its two moments, flattened in one memory order (the
//               launcher copies a gradient laid out otherwise); p, m and v are updated in place.
//
// Launch: a 1-D grid-stride loop over the n elements.
//   block = (OP_THREADS,)   (256 unless defined)
//   grid  = (min(ceil(n / OP_THREADS), OP_MAX_BLOCKS),)   -- no dynamic shared memory
//
// Compile-time constants (prepend #defines to change them):
//   OP_THREADS      the block size the launcher uses
//   OP_HALF_TYPES   1 (default): also build the f16 / bf16 kernels (needs cuda_fp16.h and cuda_bf16.h); 0: float32
//
// Reference: seq2seq/fast/cuda/reference.py adamw, same layouts.
#ifndef OP_THREADS
#define OP_THREADS 256
#endif
#ifndef OP_HALF_TYPES
#define OP_HALF_TYPES 1
#endif

#define SEQ2SEQ_HALF_TYPES OP_HALF_TYPES
#include "common.cuh"  // load/store of each storage type as float32

namespace {

template <typename T>
__device__ __forceinline__ void adamw_elements(T* p, const T* __restrict__ g, T* m, T* v, long long n, float lr,
                                               float beta1, float beta2, float eps, float weight_decay,
                                               float step_size, float sqrt_bias_correction2) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    const float decay = 1.0f - lr * weight_decay;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float gi = load(g, i);
        float pi = load(p, i), mi = load(m, i), vi = load(v, i);
        if (weight_decay != 0.0f) pi *= decay;
        mi += (1.0f - beta1) * (gi - mi);
        vi = beta2 * vi + (1.0f - beta2) * gi * gi;
        pi -= step_size * mi / (sqrtf(vi) / sqrt_bias_correction2 + eps);
        store(p, i, pi);
        store(m, i, mi);
        store(v, i, vi);
    }
}

}  // namespace

#define OP_KERNELS(SUFFIX, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(OP_THREADS)                                               \
    adamw_##SUFFIX(T* p, const T* g, T* m, T* v, long long n, float lr, float beta1, float beta2,          \
                   float eps, float weight_decay, float step_size, float sqrt_bias_correction2) {          \
        adamw_elements<T>(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, step_size,                   \
                          sqrt_bias_correction2);                                                          \
    }

OP_KERNELS(f32, float)
#if OP_HALF_TYPES
OP_KERNELS(f16, __half)
OP_KERNELS(bf16, __nv_bfloat16)
#endif
