// cross_entropy.cu -- the cross-entropy loss's work over the logits [N, V]: each row's softmax statistics, and the
// gradient, one block per row.
//
// The logits are the largest array of a training step (a batch of 32 x 64 target tokens and a 30,522-token
// vocabulary: 250 MB in float32); the plain form (seq2seq/nn/loss.py, CrossEntropy) passes over them about six
// times forward (maximum, subtraction, exp, sum, ...) and five backward. Here:
//
//   softmax_statistics_<T>  per row: m = max_j x_j; log_sum = log sum_j exp(x_j - m); with mean_shifted given,
//                           also mean_j(x_j) - m (label smoothing's term). Two passes over the row: the maximum
//                           (and the sum for the mean), then the exponentials.
//   cross_entropy_grad_<T>  g_ij = (exp(x_ij - m_i - log_sum_i) - (1 - eps) [j = label_i] - eps / V) * weight_i:
//                           the gradient of the mean loss (weight_i = gy / count, 0 for ignored rows), one pass.
//   <T> is the storage type of x and g: f32, f16, bf16; statistics and arithmetic in float32.
//
// Signatures:
//   softmax_statistics_<T>(const T* x, float* m, float* log_sum, float* mean_shifted, int n_rows, int n_cols)
//   cross_entropy_grad_<T>(const T* x, const float* m, const float* log_sum, const long long* labels,
//                          const float* weight, float smoothing, T* g, int n_rows, int n_cols)
//   x, g [n_rows, n_cols] row-major, contiguous; m, log_sum, mean_shifted (or null), weight [n_rows];
//   labels [n_rows], each inside [0, n_cols) (the loss checked them; ignored rows carry any label and weight 0).
//
// Launch: one block per row.
//   grid  = (n_rows,)
//   block = (CE_THREADS,)   (256 unless defined; a multiple of 32)
//   no dynamic shared memory (a vocabulary's row does not fit: it is read from memory again instead)
//
// Compile-time constants (prepend #defines to change them):
//   CE_THREADS      the block size the launcher uses
//   CE_HALF_TYPES   1 (default): also build the f16 / bf16 kernels (needs cuda_fp16.h and cuda_bf16.h); 0: float32
//
// Reference: seq2seq/fast/cuda/reference.py softmax_statistics and cross_entropy_grad, same layouts.
#ifndef CE_THREADS
#define CE_THREADS 256
#endif
#ifndef CE_HALF_TYPES
#define CE_HALF_TYPES 1
#endif

#define SEQ2SEQ_HALF_TYPES CE_HALF_TYPES
#include "common.cuh"  // load/store of each storage type as float32, block_sum, block_max

namespace {

template <typename T>
__device__ __forceinline__ void statistics_row(const T* x, float* m, float* log_sum, float* mean_shifted,
                                               int n_cols) {
    __shared__ float partial[32];
    const long long base = (long long)blockIdx.x * n_cols;
    float top = neg_inf(), sum = 0.0f;
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x) {
        const float v = load(x, base + j);
        top = fmaxf(top, v);
        sum += v;
    }
    top = block_max(top, partial);
    const float mean = mean_shifted == nullptr ? 0.0f : block_sum(sum, partial) / n_cols;
    float total = 0.0f;
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x) total += expf(load(x, base + j) - top);
    total = block_sum(total, partial);
    if (threadIdx.x == 0) {
        m[blockIdx.x] = top;
        log_sum[blockIdx.x] = logf(total);
        if (mean_shifted != nullptr) mean_shifted[blockIdx.x] = mean - top;
    }
}

template <typename T>
__device__ __forceinline__ void grad_row(const T* x, const float* m, const float* log_sum, const long long* labels,
                                         const float* weight, float smoothing, T* g, int n_cols) {
    const long long base = (long long)blockIdx.x * n_cols;
    const float shift = m[blockIdx.x] + log_sum[blockIdx.x], w = weight[blockIdx.x];
    const long long label = labels[blockIdx.x];
    const float spread = smoothing / n_cols;
    for (int j = threadIdx.x; j < n_cols; j += blockDim.x) {
        float p = expf(load(x, base + j) - shift);
        if (j == label) p -= 1.0f - smoothing;
        store(g, base + j, (p - spread) * w);
    }
}

}  // namespace

#define CE_KERNELS(SUFFIX, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(CE_THREADS)                                               \
    softmax_statistics_##SUFFIX(const T* x, float* m, float* log_sum, float* mean_shifted, int n_rows,     \
                                int n_cols) {                                                              \
        if (blockIdx.x < n_rows) statistics_row<T>(x, m, log_sum, mean_shifted, n_cols);                   \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(CE_THREADS)                                               \
    cross_entropy_grad_##SUFFIX(const T* x, const float* m, const float* log_sum, const long long* labels,  \
                                const float* weight, float smoothing, T* g, int n_rows, int n_cols) {      \
        if (blockIdx.x < n_rows) grad_row<T>(x, m, log_sum, labels, weight, smoothing, g, n_cols);         \
    }

CE_KERNELS(f32, float)
#if CE_HALF_TYPES
CE_KERNELS(f16, __half)
CE_KERNELS(bf16, __nv_bfloat16)
#endif
