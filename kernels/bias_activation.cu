// bias_activation.cu -- the feed-forward block's bias add fused with its activation: y = act(x + b); and the
// activations' backward, gx = gy * act'(v).
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
// Backward kernels (training: the eager path's activations, fast/cuda/eager.py), one per activation and type:
//   gelu_backward_<T>       gx = gy * (Phi(v) + v phi(v)),  phi(v) = exp(-v^2 / 2) / sqrt(2 pi)
//   gelu_tanh_backward_<T>  gx = gy * (0.5 (1 + t) + 0.5 v (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 v^2)),
//                           t = tanh(sqrt(2/pi) (v + 0.044715 v^3))
//   relu_backward_<T>       gx = gy where v > 0, else 0 (torch's choice at v = 0)
//   Signature: (const T* gy, const T* v, T* gx, long long n): v the activation's input, all three [n]
//   contiguous; gx may be gy (in place).
//
// Launch (every kernel here): a 1-D grid-stride loop over the elements (the forward's element i takes column
// i % n_features).
//   block = (BA_THREADS,)  (256 unless defined; any multiple of 32 up to 1024)
//   grid  = (min(ceil(n / BA_THREADS), BA_MAX_BLOCKS),)  -- the loop covers the rest; 0 dynamic shared memory.
//
// Compile-time constants (prepend #defines to change them):
//   BA_THREADS      the block size the launcher uses (the kernels read it only as a launch-bounds hint)
//   BA_HALF_TYPES   1 (default): also build the f16 / bf16 kernels (needs cuda_fp16.h and cuda_bf16.h);
//                   0: float32 only, for compilers without the CUDA headers.
//
// Reference: seq2seq/fast/cuda/reference.py bias_activation(x, b, act) and activation_backward(gy, v, act), same
// layouts.
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

// The derivatives, d act(v) / dv, for the backward kernels.
struct GeluGrad {
    __device__ __forceinline__ float operator()(float v) const {
        const float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
        return cdf + v * 0.39894228040143268f * expf(-0.5f * v * v);  // Phi(v) + v phi(v), 1 / sqrt(2 pi)
    }
};
struct GeluTanhGrad {
    __device__ __forceinline__ float operator()(float v) const {
        const float t = tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v));
        return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * 0.79788456080286536f * (1.0f + 0.134145f * v * v);
    }
};
struct ReluGrad {
    __device__ __forceinline__ float operator()(float v) const { return v > 0.0f ? 1.0f : 0.0f; }
};

template <typename T, typename Grad>
__device__ __forceinline__ void act_backward(const T* gy, const T* __restrict__ v, T* gx, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    const Grad grad;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        store(gx, i, load(gy, i) * grad(load(v, i)));
    }
}

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

#define BA_BACKWARD(NAME, T, GRAD)                                                                         \
    extern "C" __global__ void __launch_bounds__(BA_THREADS)                                               \
    NAME(const T* gy, const T* __restrict__ v, T* gx, long long n) {                                       \
        act_backward<T, GRAD>(gy, v, gx, n);                                                               \
    }

#define BA_KERNELS(SUFFIX, T)                                                                              \
    BA_KERNEL(bias_gelu_##SUFFIX, T, Gelu)                                                                 \
    BA_KERNEL(bias_gelu_tanh_##SUFFIX, T, GeluTanh)                                                        \
    BA_KERNEL(bias_relu_##SUFFIX, T, Relu)                                                                 \
    BA_BACKWARD(gelu_backward_##SUFFIX, T, GeluGrad)                                                       \
    BA_BACKWARD(gelu_tanh_backward_##SUFFIX, T, GeluTanhGrad)                                              \
    BA_BACKWARD(relu_backward_##SUFFIX, T, ReluGrad)

BA_KERNELS(f32, float)
#if BA_HALF_TYPES
BA_KERNELS(f16, __half)
BA_KERNELS(bf16, __nv_bfloat16)
#endif
