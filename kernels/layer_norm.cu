// layer_norm.cu -- layer norm fused with the residual add before it, over the last axis of [N, C] rows.
//
// Kernels (extern "C", one per variant and storage type):
//   add_layer_norm_<T>      post-LN (BERT, BART): v = x + residual + bias;  y = (v - mean) / sqrt(var + eps)
//                           * gamma + beta.  bias is the preceding Linear's bias, folded in here so that Linear
//                           can run without one.
//   add_layer_norm_pre_<T>  pre-LN (GPT-2): s = x + residual is written to sum_out (the residual stream the
//                           next block adds to) and y = LayerNorm(s) * gamma + beta.
//   mean and the biased variance (divided by C, as torch.nn.LayerNorm) are float32 whatever the storage type,
//   the variance computed about the mean (two passes over the row, held in shared memory), not as E[v^2] - mean^2.
//   <T> is the storage type of every buffer: f32 (float), f16 (__half), bf16 (__nv_bfloat16).
//
//   layer_norm_<T>          training (the eager path, fast/cuda/eager.py): y = LayerNorm(x) * gamma + beta, and
//                           each row's float32 mean and rstd = 1 / sqrt(var + eps), which backward reads.
//   layer_norm_backward_<T> gx = rstd (g - mean_c(g) - xhat mean_c(g xhat)), g = gy * gamma, per row; and
//                           gy_xhat = gy * xhat (float32), whose column sums the caller takes as gamma's gradient.
//                           xhat comes from forward's input x (from_output 0: (x - mean) * rstd) or from its output
//                           y (from_output 1: (y - beta) / gamma; see nn.functional.LayerNorm).
//
// Signatures:
//   add_layer_norm_<T>(const T* x, const T* residual, const T* bias, const T* gamma, const T* beta, T* y,
//                      int n_rows, int n_cols, float eps)
//   layer_norm_<T>(const T* x, const T* gamma, const T* beta, T* y, float* mean, float* rstd, int n_rows,
//                  int n_cols, float eps)
//   layer_norm_backward_<T>(const T* gy, const T* kept, const float* mean, const float* rstd, const T* gamma,
//                           const T* beta, int from_output, T* gx, float* gy_xhat, int n_rows, int n_cols)
//     kept: x or y, [n_rows, n_cols]; mean, rstd [n_rows]; gx null when x needs no gradient.
//   add_layer_norm_pre_<T>(const T* x, const T* residual, T* sum_out, const T* gamma, const T* beta, T* y,
//                          int n_rows, int n_cols, float eps)
//   x, residual, sum_out, y  [n_rows, n_cols], row-major and contiguous; y (or sum_out) may alias x or residual.
//   bias, gamma, beta        [n_cols].
//
// Launch: one block per row.
//   grid  = (n_rows,)
//   block = (LN_THREADS,)   (256 unless defined; a multiple of 32, at most 1024)
//   dynamic shared memory = n_cols * 4 bytes (the row's float32 values; n_cols <= 12288 in the default 48 KiB);
//   layer_norm_backward_<T> none (it reads the row twice from memory instead)
//   Each thread strides over the row's columns; sums reduce with warp shuffles (__shfl_xor_sync), then across the
//   block's warps through 32 floats of static shared memory.
//
// Compile-time constants (prepend #defines to change them):
//   LN_THREADS      the block size the launcher uses
//   LN_HALF_TYPES   1 (default): also build the f16 / bf16 kernels (needs cuda_fp16.h and cuda_bf16.h); 0: float32
//
// Reference: seq2seq/fast/cuda/reference.py add_layer_norm, add_layer_norm_pre, layer_norm and
// layer_norm_backward, same layouts.
#ifndef LN_THREADS
#define LN_THREADS 256
#endif
#ifndef LN_HALF_TYPES
#define LN_HALF_TYPES 1
#endif

#define SEQ2SEQ_HALF_TYPES LN_HALF_TYPES
#include "common.cuh"  // load/store of each storage type as float32, block_sum

namespace {

// One row: v[c] = x + residual (+ bias) -> row (shared), optional sum_out; then y = LN(v) * gamma + beta.
template <typename T, bool PRE>
__device__ __forceinline__ void add_ln_row(const T* x, const T* residual, const T* bias, T* sum_out,
                                           const T* __restrict__ gamma, const T* __restrict__ beta, T* y,
                                           int n_cols, float eps) {
    extern __shared__ float row[];
    __shared__ float partial[32];
    const long long base = (long long)blockIdx.x * n_cols;
    float local = 0.0f;
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) {
        float v = load(x, base + c) + load(residual, base + c);
        if (PRE) {
            store(sum_out, base + c, v);
        } else {
            v += load(bias, c);
        }
        row[c] = v;
        local += v;
    }
    normalize_row(row, local, partial, gamma, beta, y, base, n_cols, eps);
}

// One row of layer_norm_<T>: the row into shared memory, then normalize_row, which also writes its statistics.
template <typename T>
__device__ __forceinline__ void ln_row_with_stats(const T* x, const T* __restrict__ gamma,
                                                  const T* __restrict__ beta, T* y, float* mean_out,
                                                  float* rstd_out, int n_cols, float eps) {
    extern __shared__ float row[];
    __shared__ float partial[32];
    const long long base = (long long)blockIdx.x * n_cols;
    float local = 0.0f;
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) {
        const float v = load(x, base + c);
        row[c] = v;
        local += v;
    }
    normalize_row(row, local, partial, gamma, beta, y, base, n_cols, eps, mean_out, rstd_out);
}

// One row of layer_norm_backward_<T>: the two row sums (g and g xhat), then gx and gy * xhat.
template <typename T>
__device__ __forceinline__ void ln_backward_row(const T* gy, const T* kept, const float* mean, const float* rstd,
                                                const T* __restrict__ gamma, const T* __restrict__ beta,
                                                int from_output, T* gx, float* gy_xhat, int n_cols) {
    __shared__ float partial[32];
    const long long base = (long long)blockIdx.x * n_cols;
    const float m = mean[blockIdx.x], r = rstd[blockIdx.x];
    float sum_g = 0.0f, sum_gx = 0.0f;
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) {
        const float k = load(kept, base + c), gam = load(gamma, c), gyv = load(gy, base + c);
        const float xhat = from_output ? (k - load(beta, c)) / gam : (k - m) * r;
        const float g = gyv * gam;
        sum_g += g;
        sum_gx += g * xhat;
        gy_xhat[base + c] = gyv * xhat;
    }
    if (gx == nullptr) return;  // the same for every thread of the block: no barrier is skipped by some only
    const float mean_g = block_sum(sum_g, partial) / n_cols;
    const float mean_gx = block_sum(sum_gx, partial) / n_cols;
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) {
        const float k = load(kept, base + c), gam = load(gamma, c);
        const float xhat = from_output ? (k - load(beta, c)) / gam : (k - m) * r;
        store(gx, base + c, r * (load(gy, base + c) * gam - mean_g - xhat * mean_gx));
    }
}

}  // namespace

#define LN_KERNELS(SUFFIX, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(LN_THREADS)                                               \
    add_layer_norm_##SUFFIX(const T* x, const T* residual, const T* bias, const T* gamma, const T* beta,   \
                            T* y, int n_rows, int n_cols, float eps) {                                     \
        if (blockIdx.x < n_rows) add_ln_row<T, false>(x, residual, bias, nullptr, gamma, beta, y, n_cols, eps); \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(LN_THREADS)                                               \
    add_layer_norm_pre_##SUFFIX(const T* x, const T* residual, T* sum_out, const T* gamma, const T* beta,  \
                                T* y, int n_rows, int n_cols, float eps) {                                 \
        if (blockIdx.x < n_rows) add_ln_row<T, true>(x, residual, nullptr, sum_out, gamma, beta, y, n_cols, eps); \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(LN_THREADS)                                               \
    layer_norm_##SUFFIX(const T* x, const T* gamma, const T* beta, T* y, float* mean, float* rstd,         \
                        int n_rows, int n_cols, float eps) {                                               \
        if (blockIdx.x < n_rows) ln_row_with_stats<T>(x, gamma, beta, y, mean, rstd, n_cols, eps);         \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(LN_THREADS)                                               \
    layer_norm_backward_##SUFFIX(const T* gy, const T* kept, const float* mean, const float* rstd,         \
                                 const T* gamma, const T* beta, int from_output, T* gx, float* gy_xhat,    \
                                 int n_rows, int n_cols) {                                                 \
        if (blockIdx.x < n_rows)                                                                           \
            ln_backward_row<T>(gy, kept, mean, rstd, gamma, beta, from_output, gx, gy_xhat, n_cols);       \
    }

LN_KERNELS(f32, float)
#if LN_HALF_TYPES
LN_KERNELS(f16, __half)
LN_KERNELS(bf16, __nv_bfloat16)
#endif
