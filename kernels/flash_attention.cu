// flash_attention.cu -- attention of many queries at once (the encoder; the decoder's first step over a prompt),
// fused: the [B, nh, T, S] scores are never written to memory. Each query walks the keys tile by tile keeping a
// running maximum m, a running denominator l and a running output acc (the "online softmax" of FlashAttention):
//
//   for each key j:  s = scale * q . k_j (masked as below);  m' = max(m, s)
//                    l   = l * exp(m - m') + exp(s - m')
//                    acc = acc * exp(m - m') + exp(s - m') v_j;     m = m'
//   out = acc / l
//
// which is softmax(scores) V exactly (up to rounding): rescaling by exp(m - m') turns every earlier term into what
// it would have been with the new maximum.
//
// Masks, as in the CPU path (nn/attention.py): a key masked by key_keep (padding) or by the causal rule gets
// float32's lowest finite score, so it weighs exactly 0 unless all of a query's keys are masked, and then the
// query averages every key (the CPU path's uniform row); the online form gives the same, because a later real score
// rescales whatever masked keys added by exp(LOWEST - real) = 0.  Keys are read in tiles of FA_KEYS.
//
// Kernels (extern "C", one per storage type <T>: f32, f16, bf16; float32 arithmetic and accumulators):
//   flash_attention_<T>(const T* q, const T* k, const T* v, long long q_stride, long long kv_stride,
//                       const bool* key_keep, T* out, int n_heads, int q_len, int kv_len, int causal,
//                       float scale)
//   q        [B, q_len, n_heads, FA_HEAD_SIZE]: the projections' own [B, T, C] layout (no transposes), with
//            q_stride elements from one token to the next (C; or 3 C for a slice of a fused [B, T, 3C] projection)
//   k, v     [B, kv_len, n_heads, FA_HEAD_SIZE], kv_stride elements from one token to the next
//   key_keep [B, kv_len] bool (true: a real token), or null
//   causal   1: query t (the last q_len of kv_len positions) sees keys j <= t + kv_len - q_len; 0: all keys
//   out      [B, q_len, n_heads, FA_HEAD_SIZE], contiguous: the [B, T, C] the output projection multiplies
//
// Launch: grid = (ceil(q_len / FA_QUERIES), n_heads, B), block = (FA_QUERIES,), no dynamic shared memory.
//   One thread per query: its query and its output stay in registers (FA_HEAD_SIZE floats each, which is why the
//   head size is a compile-time constant), and the block's threads share each tile of FA_KEYS keys and values,
//   loaded once into shared memory (coalesced: neighbouring threads load neighbouring elements) and read by all
//   the block's queries (every thread reads the same element at once: a broadcast, no bank conflicts). Plain FMAs
//   on the CUDA cores, no tensor cores: the simplest form that never writes the scores; a tensor-core (mma) form
//   would be the step after it.
//
// Compile-time constants (prepend #defines to change them):
//   FA_HEAD_SIZE   the head size (64 unless defined: BERT-base, GPT-2, BART-base; the loader defines the model's)
//   FA_QUERIES     queries per block = the block size (64 unless defined; a multiple of 32)
//   FA_KEYS        keys per tile (32 unless defined): the shared memory is 2 * FA_KEYS * FA_HEAD_SIZE floats
//   FA_HALF_TYPES  1 (default): also build the f16 / bf16 kernels (needs cuda_fp16.h and cuda_bf16.h); 0: f32
//
// Reference: seq2seq/fast/cuda/reference.py flash_attention, same layouts.
#ifndef FA_HEAD_SIZE
#define FA_HEAD_SIZE 64
#endif
#ifndef FA_QUERIES
#define FA_QUERIES 64
#endif
#ifndef FA_KEYS
#define FA_KEYS 32
#endif
#ifndef FA_HALF_TYPES
#define FA_HALF_TYPES 1
#endif

#define SEQ2SEQ_HALF_TYPES FA_HALF_TYPES
#include "common.cuh"  // load/store as float32, LOWEST, neg_inf

namespace {

template <typename T>
__device__ void flash_block(const T* q, const T* k, const T* v, long long q_stride, long long kv_stride,
                            const bool* key_keep, T* out, int n_heads, int q_len, int kv_len, int causal,
                            float scale) {
    __shared__ float k_tile[FA_KEYS][FA_HEAD_SIZE];
    __shared__ float v_tile[FA_KEYS][FA_HEAD_SIZE];
    __shared__ bool key_kept[FA_KEYS];  // exists and is not padding
    const int b = blockIdx.z, head = blockIdx.y, t = blockIdx.x * FA_QUERIES + threadIdx.x;
    const bool has_query = t < q_len;  // the last block's extra threads still help load the tiles
    const int last_key = causal ? t + kv_len - q_len : kv_len - 1;  // the last key this query may see

    float query[FA_HEAD_SIZE], acc[FA_HEAD_SIZE];
    const long long q_at = ((long long)b * q_len + t) * q_stride + (long long)head * FA_HEAD_SIZE;
#pragma unroll
    for (int d = 0; d < FA_HEAD_SIZE; ++d) {
        query[d] = has_query ? scale * load(q, q_at + d) : 0.0f;
        acc[d] = 0.0f;
    }
    float m = neg_inf(), l = 0.0f;

    for (int start = 0; start < kv_len; start += FA_KEYS) {
        __syncthreads();  // every thread is done with the previous tile
        for (int e = threadIdx.x; e < FA_KEYS * FA_HEAD_SIZE; e += blockDim.x) {
            const int jj = e / FA_HEAD_SIZE, d = e % FA_HEAD_SIZE, j = start + jj;
            const long long at = ((long long)b * kv_len + j) * kv_stride + (long long)head * FA_HEAD_SIZE + d;
            k_tile[jj][d] = j < kv_len ? load(k, at) : 0.0f;
            v_tile[jj][d] = j < kv_len ? load(v, at) : 0.0f;
        }
        for (int jj = threadIdx.x; jj < FA_KEYS; jj += blockDim.x) {
            const int j = start + jj;
            key_kept[jj] = j < kv_len && (key_keep == nullptr || key_keep[(long long)b * kv_len + j]);
        }
        __syncthreads();

        // One key at a time; the running sums are rescaled only when the maximum grows (rarely, after the first
        // keys), so the common case costs a dot product and an exponential per key.
        const int n_keys = min(FA_KEYS, kv_len - start);
        for (int jj = 0; jj < n_keys; ++jj) {
            float s = LOWEST;  // masked (padding, or after the causal limit): the CPU path's fill value
            if (key_kept[jj] && start + jj <= last_key) {
                s = 0.0f;
#pragma unroll
                for (int d = 0; d < FA_HEAD_SIZE; ++d) s += query[d] * k_tile[jj][d];
            }
            if (s > m) {  // always at the first key (m = -inf: the factor is 0, and l and acc are 0 anyway)
                const float correction = expf(m - s);
                l *= correction;
#pragma unroll
                for (int d = 0; d < FA_HEAD_SIZE; ++d) acc[d] *= correction;
                m = s;
            }
            const float p = expf(s - m);
            l += p;
#pragma unroll
            for (int d = 0; d < FA_HEAD_SIZE; ++d) acc[d] += p * v_tile[jj][d];
        }
    }
    if (!has_query) return;
    const long long out_at = (((long long)b * q_len + t) * n_heads + head) * FA_HEAD_SIZE;
    const float inv_l = 1.0f / l;
#pragma unroll
    for (int d = 0; d < FA_HEAD_SIZE; ++d) store(out, out_at + d, acc[d] * inv_l);
}

}  // namespace

#define FA_KERNEL(SUFFIX, T)                                                                               \
    extern "C" __global__ void __launch_bounds__(FA_QUERIES)                                               \
    flash_attention_##SUFFIX(const T* q, const T* k, const T* v, long long q_stride, long long kv_stride,  \
                             const bool* key_keep, T* out, int n_heads, int q_len, int kv_len, int causal, \
                             float scale) {                                                                \
        flash_block(q, k, v, q_stride, kv_stride, key_keep, out, n_heads, q_len, kv_len, causal, scale);   \
    }

FA_KERNEL(f32, float)
#if FA_HALF_TYPES
FA_KERNEL(f16, __half)
FA_KERNEL(bf16, __nv_bfloat16)
#endif
