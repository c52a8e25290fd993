// softmax.cu -- attention's masked softmax over the keys, and its backward, one pass over each score row.
//
// The eager path's attention (nn/attention.py, a CuPy model's encoder and training) makes the scores
// [B, nh, T, S] with a batched product and then softmaxes them; written as array code that softmax is six CuPy
// kernels (the mask, the maximum, the subtraction, exp, the sum, the division), each a pass through the scores,
// the largest array of the step at long inputs. Here it is one kernel each way:
//
//   masked_softmax_<T>    p = softmax(where(keep, s, LOWEST)) over the last axis: a masked score gets float32's
//                         lowest finite value, as the CPU path fills it, so it weighs exactly 0 unless every key
//                         of the row is masked, and then the row is uniform (not NaN).
//   softmax_backward_<T>  gs = p (gp - sum_j gp_j p_j), and 0 where keep is false (a masked score was a constant).
//   <T> is the storage type of s, p, gp and gs: f32 (float), f16 (__half), bf16 (__nv_bfloat16); the arithmetic is
//   float32.
//
// Signatures:
//   masked_softmax_<T>(const T* s, const bool* keep, long long kb, long long kh, long long kt, long long ks,
//                      T* p, int n_heads, int q_len, int s_len)
//   softmax_backward_<T>(const T* gp, const T* p, const bool* keep, long long kb, long long kh, long long kt,
//                        long long ks, T* gs, int n_heads, int q_len, int s_len)
//   s, p, gp, gs  [B, n_heads, q_len, s_len], row-major and contiguous; p may be s, gs may be gp (in place).
//   keep          null (nothing masked), or bool read at keep[b * kb + h * kh + t * kt + j * ks]: strides in
//                 elements, 0 along an axis the mask is broadcast over ([B, 1, 1, S] padding, [1, 1, T, S] causal,
//                 [B, 1, T, S] both).
//
// Launch: one block per score row.
//   grid  = (B * n_heads * q_len,)
//   block = (SM_THREADS,)   (256 unless defined; a multiple of 32, at most 1024)
//   dynamic shared memory: masked_softmax s_len * 4 bytes (the row's float32 values; s_len <= 12288 in the default
//   48 KiB); softmax_backward none (it reads its two rows twice instead).
//
// Compile-time constants (prepend #defines to change them):
//   SM_THREADS      the block size the launcher uses
//   SM_HALF_TYPES   1 (default): also build the f16 / bf16 kernels (needs cuda_fp16.h and cuda_bf16.h); 0: float32
//
// Reference: seq2seq/fast/cuda/reference.py masked_softmax and softmax_backward, same layouts.
#ifndef SM_THREADS
#define SM_THREADS 256
#endif
#ifndef SM_HALF_TYPES
#define SM_HALF_TYPES 1
#endif

#define SEQ2SEQ_HALF_TYPES SM_HALF_TYPES
#include "common.cuh"  // load/store of each storage type as float32, block_sum, block_max, LOWEST

namespace {

// Where this block's row starts in keep (the key axis is added per key), from the row index.
__device__ __forceinline__ long long keep_row(long long kb, long long kh, long long kt, int n_heads, int q_len) {
    const long long row = blockIdx.x;
    const long long t = row % q_len, h = (row / q_len) % n_heads, b = row / ((long long)q_len * n_heads);
    return b * kb + h * kh + t * kt;
}

template <typename T>
__device__ __forceinline__ void softmax_row(const T* s, const bool* keep, long long kb, long long kh, long long kt,
                                            long long ks, T* p, int n_heads, int q_len, int s_len) {
    extern __shared__ float row[];
    __shared__ float partial[32];
    const long long base = (long long)blockIdx.x * s_len;
    const long long k0 = keep == nullptr ? 0 : keep_row(kb, kh, kt, n_heads, q_len);
    float local = neg_inf();
    for (int j = threadIdx.x; j < s_len; j += blockDim.x) {
        const float v = (keep == nullptr || keep[k0 + j * ks]) ? load(s, base + j) : LOWEST;
        row[j] = v;
        local = fmaxf(local, v);
    }
    const float top = block_max(local, partial);
    float total = 0.0f;
    for (int j = threadIdx.x; j < s_len; j += blockDim.x) {
        const float e = expf(row[j] - top);
        row[j] = e;
        total += e;
    }
    const float inv = 1.0f / block_sum(total, partial);
    for (int j = threadIdx.x; j < s_len; j += blockDim.x) store(p, base + j, row[j] * inv);
}

template <typename T>
__device__ __forceinline__ void softmax_backward_row(const T* gp, const T* p, const bool* keep, long long kb,
                                                     long long kh, long long kt, long long ks, T* gs, int n_heads,
                                                     int q_len, int s_len) {
    __shared__ float partial[32];
    const long long base = (long long)blockIdx.x * s_len;
    const long long k0 = keep == nullptr ? 0 : keep_row(kb, kh, kt, n_heads, q_len);
    float local = 0.0f;
    for (int j = threadIdx.x; j < s_len; j += blockDim.x) local += load(gp, base + j) * load(p, base + j);
    const float dot = block_sum(local, partial);
    for (int j = threadIdx.x; j < s_len; j += blockDim.x) {
        const bool kept = keep == nullptr || keep[k0 + j * ks];
        store(gs, base + j, kept ? load(p, base + j) * (load(gp, base + j) - dot) : 0.0f);
    }
}

}  // namespace

#define SM_KERNELS(SUFFIX, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(SM_THREADS)                                               \
    masked_softmax_##SUFFIX(const T* s, const bool* keep, long long kb, long long kh, long long kt,        \
                            long long ks, T* p, int n_heads, int q_len, int s_len) {                       \
        softmax_row<T>(s, keep, kb, kh, kt, ks, p, n_heads, q_len, s_len);                                 \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(SM_THREADS)                                               \
    softmax_backward_##SUFFIX(const T* gp, const T* p, const bool* keep, long long kb, long long kh,       \
                              long long kt, long long ks, T* gs, int n_heads, int q_len, int s_len) {      \
        softmax_backward_row<T>(gp, p, keep, kb, kh, kt, ks, gs, n_heads, q_len, s_len);                   \
    }

SM_KERNELS(f32, float)
#if SM_HALF_TYPES
SM_KERNELS(f16, __half)
SM_KERNELS(bf16, __nv_bfloat16)
#endif
