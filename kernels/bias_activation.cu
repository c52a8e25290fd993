// bias_activation.cu -- the feed-forward block's bias add fused with its activation: y = act(x + b).
//
// Kernels (extern "C", one per activation and storage type):
//   bias_gelu_<T>       act(v) = v * Phi(v) = 0.5 v (1 + erf(v / sqrt 2))               (hidden_act "gelu")
//   bias_gelu_tanh_<T>  act(v) = 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3)))        ("gelu_new", GPT-2)
//   bias_relu_<T>       act(v) = max(v, 0)                                               ("relu")
//   <T> is the storage type of x, b and y: f32 (float), f16 (__half), bf16 (__nv_bfloat16). The arithmetic is
//   float32 whatever the storage: each element is widened, biased, activated and rounded once on the way out.
//
// Signature: (const T* x, const T* b, T* y, long long n_rows, int n_features)
//   x, y  [n_rows, n_features], row-major and contiguous (RawKernel ignores strides: call ascontiguousarray);
//         y may be x (in place).
//   b     [n_features].
//
// Launch: a 1-D grid-stride loop over the n_rows * n_features elements, element i taking column i % n_features.
//   block = (BA_THREADS,)  (256 unless defined; any multiple of 32 up to 1024)
//   grid  = (min(ceil(n / BA_THREADS), BA_MAX_BLOCKS),)  -- the loop covers the rest; 0 dynamic shared memory.
//
// Compile-time constants (prepend #defines to change them):
//   BA_THREADS      the block size the launcher uses (the kernels read it only as a launch-bounds hint)
//   BA_HALF_TYPES   1 (default): also build the f16 / bf16 kernels (needs cuda_fp16.h and cuda_bf16.h);
//                   0: float32 only, for compilers without the CUDA headers.
//
// Reference: seq2seq/fast/cuda/reference.py bias_activation(x, b, act), same layouts.
#ifndef BA_THREADS
#define BA_THREADS 256
#endif
#ifndef BA_HALF_TYPES
#define BA_HALF_TYPES 1
#endif

#define SEQ2SEQ_HALF_TYPES BA_HALF_TYPES
#include "common.cuh"  // load/store of each storage type as float32

namespace {

struct Gelu {
    __device__ __forceinline__ float operator()(float v) const { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }
};
struct GeluTanh {
    __device__ __forceinline__ float operator()(float v) const {
        const float u = 0.79788456080286536f * (v + 0.044715f * v * v * v);  // sqrt(2/pi) (v + 0.044715 v^3)
        return 0.5f * v * (1.0f + tanhf(u));
    }
};
struct Relu {
    __device__ __forceinline__ float operator()(float v) const { return fmaxf(v, 0.0f); }
};

template <typename T, typename Act>
__device__ __forceinline__ void bias_act(const T* __restrict__ x, const T* __restrict__ b, T* y,
                                         long long n_rows, int n_features) {
    const long long n = n_rows * (long long)n_features;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const Act act;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        store(y, i, act(load(x, i) + load(b, i % n_features)));
    }
}

}  // namespace

#define BA_KERNEL(NAME, T, ACT)                                                                            \
    extern "C" __global__ void __launch_bounds__(BA_THREADS)                                               \
    NAME(const T* __restrict__ x, const T* __restrict__ b, T* y, long long n_rows, int n_features) {      \
        bias_act<T, ACT>(x, b, y, n_rows, n_features);                                                     \
    }

BA_KERNEL(bias_gelu_f32, float, Gelu)
BA_KERNEL(bias_gelu_tanh_f32, float, GeluTanh)
BA_KERNEL(bias_relu_f32, float, Relu)
#if BA_HALF_TYPES
BA_KERNEL(bias_gelu_f16, __half, Gelu)
BA_KERNEL(bias_gelu_tanh_f16, __half, GeluTanh)
BA_KERNEL(bias_relu_f16, __half, Relu)
BA_KERNEL(bias_gelu_bf16, __nv_bfloat16, Gelu)
BA_KERNEL(bias_gelu_tanh_bf16, __nv_bfloat16, GeluTanh)
BA_KERNEL(bias_relu_bf16, __nv_bfloat16, Relu)
#endif
