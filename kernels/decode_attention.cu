// decode_attention.cu -- attention of ONE new query per row: the decoder's step during generation, over the row's
// self-attention KV cache and over the encoder's keys and values (cross-attention).
//
// Kernels (extern "C", one per storage type <T>: f32 float, f16 __half, bf16 __nv_bfloat16; float32 arithmetic):
//   decode_self_attention_<T>   writes the step's key and value into the cache at position len - 1, then
//                               out = softmax(scale * q . K[0:len]) V[0:len],   len = lengths[row]
//   decode_cross_attention_<T>  out = softmax(scale * q . K_enc[src], masked by keep[src]) V_enc[src],
//                               src = source_of_row[row]
//
// Signatures:
//   decode_self_attention_<T>(const T* q, const T* k_new, const T* v_new, long long qkv_row_stride,
//                             T* k_cache, T* v_cache, const int* lengths, T* out,
//                             int n_heads, int head_size, int max_len, float scale)
//   decode_cross_attention_<T>(const T* q, long long q_row_stride, const T* k_enc, const T* v_enc,
//                              const int* source_of_row, const bool* keep, T* out,
//                              int n_heads, int head_size, int src_len, float scale)
//   q, k_new, v_new   [rows, n_heads, head_size] with the given row stride (elements from one row to the next):
//                     n_heads * head_size for a [rows, C] projection, 3 C when they are slices of GPT-2's fused
//                     [rows, 3C] c_attn output; the heads and head_size of a row are contiguous.
//                     k_new / v_new may be null: the step's key and value are already in the cache.
//   k_cache, v_cache  [rows, n_heads, max_len, head_size], contiguous; positions >= len are never read.
//   lengths           [rows] int32, in device memory: the positions filled, the new one included (a CUDA graph
//                     replays the step with the lengths the previous step left there). Clamped to [1, max_len]
//                     so that a wrong length cannot write outside the cache; the caller's bookkeeping must keep it
//                     right.
//   k_enc, v_enc      [sources, n_heads, src_len, head_size], contiguous: one encoder side per SOURCE. The beams of
//                     a source share it through source_of_row [rows] int32 (null: row i reads source i), so beam
//                     search never copies the encoder's keys and values per beam.
//   keep              [sources, src_len] bool, true for a real encoder token, or null (all real). A masked key's
//                     score is float32's lowest finite value, as in the CPU path (nn/attention.py): it weighs
//                     exactly 0 unless every key of the source is masked, and then the row is a plain average.
//   out               [rows, n_heads, head_size], contiguous: the [rows, C] the output projection multiplies.
//
// Launch: one block per (head, row): grid = (n_heads, rows), block = (DA_THREADS,), dynamic shared memory =
//   (head_size + n_keys + (DA_THREADS / 32) * head_size) * 4 bytes, n_keys = max_len (self) or src_len (cross).
//   Why a block per (row, head): each is one independent softmax over at most a few thousand keys, and one block
//   holds all its scores in shared memory; no other block needs them. (For very long caches, splitting the keys
//   over several blocks and merging their partial softmaxes -- "flash decoding" -- would add parallelism.)
//   Inside the block, three phases:
//     1. scores: warp w takes keys w, w + n_warps, ...; its 32 lanes split the dot product over head_size
//        (consecutive lanes read consecutive elements of the key: one coalesced read) and a warp shuffle sums it;
//     2. softmax: the block's maximum and sum (block_max, block_sum), scores -> unnormalised exp in place;
//     3. output: warp w again takes keys w, w + n_warps, ...; lane l accumulates elements l, l + 32, ... of
//        sum_j p_j v_j in registers; the warps' partial sums meet in shared memory and are divided by the sum.
//
// Compile-time constants (prepend #defines to change them):
//   DA_THREADS     the block size the launcher uses (a multiple of 32, at most 1024; 128 unless defined)
//   DA_MAX_HEAD    the largest head_size (the registers each lane holds in phase 3: DA_MAX_HEAD / 32; 256)
//   DA_HALF_TYPES  1 (default): also build the f16 / bf16 kernels (needs cuda_fp16.h and cuda_bf16.h); 0: f32
//
// Reference: seq2seq/fast/cuda/reference.py decode_self_attention and decode_cross_attention, same layouts.
#ifndef DA_THREADS
#define DA_THREADS 128
#endif
#ifndef DA_MAX_HEAD
#define DA_MAX_HEAD 256
#endif
#ifndef DA_HALF_TYPES
#define DA_HALF_TYPES 1
#endif

#define SEQ2SEQ_HALF_TYPES DA_HALF_TYPES
#include "common.cuh"  // load/store as float32, warp_sum, block_max, block_sum, LOWEST

namespace {

// out[0:head_size] = softmax(scale * q . K[j] for j < n_keys, masked by keep) V[0:n_keys], for one (row, head).
// K and V point at this head's [n_keys, head_size] keys and values; keep at its [n_keys] flags, or null.
template <typename T>
__device__ void attend_one_query(const T* q, const T* K, const T* V, const bool* keep, int n_keys, int head_size,
                                 float scale, T* out) {
    extern __shared__ float shared[];
    float* query = shared;                  // [head_size] the query, already scaled
    float* scores = query + head_size;      // [n_keys] scores, then exp(score - max)
    float* partial = scores + n_keys;       // [n_warps, head_size] each warp's share of the output
    __shared__ float reduce[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;

    for (int d = threadIdx.x; d < head_size; d += blockDim.x) query[d] = scale * load(q, d);
    __syncthreads();

    // 1. scores, one key per warp at a time
    float local_max = neg_inf();
    for (int j = warp; j < n_keys; j += n_warps) {
        float s = LOWEST;  // a masked key: the CPU path's fill value
        if (keep == nullptr || keep[j]) {  // the same for the whole warp: no divergence
            s = 0.0f;
            for (int d = lane; d < head_size; d += 32) s += query[d] * load(K, (long long)j * head_size + d);
            s = warp_sum(s);
        }
        if (lane == 0) scores[j] = s;
        local_max = fmaxf(local_max, s);
    }
    const float max_score = block_max(local_max, reduce);  // its __syncthreads also publishes scores[]

    // 2. softmax's numerators and denominator (exp(LOWEST - max) is exactly 0 unless every key is masked)
    float local_sum = 0.0f;
    for (int j = threadIdx.x; j < n_keys; j += blockDim.x) {
        const float e = expf(scores[j] - max_score);
        scores[j] = e;
        local_sum += e;
    }
    const float inv_sum = 1.0f / block_sum(local_sum, reduce);  // ... and publishes the exponentials

    // 3. sum_j e_j v_j: lane l holds elements l, l + 32, ... (the loop over i is unrolled: acc stays in registers)
    float acc[DA_MAX_HEAD / 32];
#pragma unroll
    for (int i = 0; i < DA_MAX_HEAD / 32; ++i) acc[i] = 0.0f;
    for (int j = warp; j < n_keys; j += n_warps) {
        const float e = scores[j];
#pragma unroll
        for (int i = 0; i < DA_MAX_HEAD / 32; ++i) {
            const int d = lane + 32 * i;
            if (d < head_size) acc[i] += e * load(V, (long long)j * head_size + d);
        }
    }
#pragma unroll
    for (int i = 0; i < DA_MAX_HEAD / 32; ++i) {
        const int d = lane + 32 * i;
        if (d < head_size) partial[warp * head_size + d] = acc[i];
    }
    __syncthreads();
    for (int d = threadIdx.x; d < head_size; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < n_warps; ++w) o += partial[w * head_size + d];
        store(out, d, o * inv_sum);
    }
}

template <typename T>
__device__ void self_attention(const T* q, const T* k_new, const T* v_new, long long qkv_row_stride, T* k_cache,
                               T* v_cache, const int* lengths, T* out, int n_heads, int head_size, int max_len,
                               float scale) {
    const int head = blockIdx.x, row = blockIdx.y;
    const int len = min(max(lengths[row], 1), max_len);
    const long long at = (long long)row * qkv_row_stride + (long long)head * head_size;  // this head's q, k, v
    const long long cache_at = ((long long)row * n_heads + head) * max_len * head_size;
    T* K = k_cache + cache_at;
    T* V = v_cache + cache_at;
    if (k_new != nullptr) {  // append the step's key and value (copied as stored: no rounding)
        for (int d = threadIdx.x; d < head_size; d += blockDim.x) {
            K[(long long)(len - 1) * head_size + d] = k_new[at + d];
            V[(long long)(len - 1) * head_size + d] = v_new[at + d];
        }
        __syncthreads();  // the block reads them back below
    }
    attend_one_query(q + at, K, V, nullptr, len, head_size, scale,
                     out + ((long long)row * n_heads + head) * head_size);
}

template <typename T>
__device__ void cross_attention(const T* q, long long q_row_stride, const T* k_enc, const T* v_enc,
                                const int* source_of_row, const bool* keep, T* out, int n_heads, int head_size,
                                int src_len, float scale) {
    const int head = blockIdx.x, row = blockIdx.y;
    const int source = source_of_row != nullptr ? source_of_row[row] : row;
    const long long enc_at = ((long long)source * n_heads + head) * src_len * head_size;
    attend_one_query(q + (long long)row * q_row_stride + (long long)head * head_size, k_enc + enc_at,
                     v_enc + enc_at, keep != nullptr ? keep + (long long)source * src_len : nullptr, src_len,
                     head_size, scale, out + ((long long)row * n_heads + head) * head_size);
}

}  // namespace

#define DA_KERNELS(SUFFIX, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(DA_THREADS)                                               \
    decode_self_attention_##SUFFIX(const T* q, const T* k_new, const T* v_new, long long qkv_row_stride,   \
                                   T* k_cache, T* v_cache, const int* lengths, T* out, int n_heads,        \
                                   int head_size, int max_len, float scale) {                              \
        self_attention(q, k_new, v_new, qkv_row_stride, k_cache, v_cache, lengths, out, n_heads, head_size, \
                       max_len, scale);                                                                    \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(DA_THREADS)                                               \
    decode_cross_attention_##SUFFIX(const T* q, long long q_row_stride, const T* k_enc, const T* v_enc,    \
                                    const int* source_of_row, const bool* keep, T* out, int n_heads,       \
                                    int head_size, int src_len, float scale) {                             \
        cross_attention(q, q_row_stride, k_enc, v_enc, source_of_row, keep, out, n_heads, head_size,       \
                        src_len, scale);                                                                   \
    }

DA_KERNELS(f32, float)
#if DA_HALF_TYPES
DA_KERNELS(f16, __half)
DA_KERNELS(bf16, __nv_bfloat16)
#endif
