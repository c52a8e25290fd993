// embeddings.cu -- the embedding layer of every model in one kernel: token (word) row, times a scale, plus token
// type and position rows, then an optional LayerNorm.
//
//   v = word[ids[r]] * word_scale (+ type_table[token_types[r]]) + position_table[position(r)]     (float32)
//   y = LayerNorm(v) * gamma + beta   with gamma, beta given;   y = v without them
//   sum_out = v                       when sum_out is given
//
// How each model uses it (models/encoder.py, bert_decoder.py, gpt2_decoder.py, bart_decoder.py):
//   BERT (encoder and decoder)  word_scale 1, type_table (token type 0 unless token_types given), LayerNorm.
//   GPT-2                       word_scale 1, no type_table, no LayerNorm of its own: gamma/beta may be the first
//                               block's ln_1 with sum_out the residual stream, saving that LayerNorm's launch.
//   BART                        word_scale sqrt(d_model) with scale_embedding (else 1), position_offset 2 (the
//                               table's two extra rows), LayerNorm = layernorm_embedding.
// The adds go in the CPU path's order: (word * scale + type) + position. Dropout is not here (inference).
//
// Kernels (extern "C", one per storage type <T> of the tables and outputs: f32, f16, bf16; float32 arithmetic):
//   embed_<T>(const long long* ids, const long long* positions, const long long* token_types,
//             const T* word, const T* position_table, const T* type_table, const T* gamma, const T* beta,
//             T* sum_out, T* y, int n_rows, int n_cols, int seq_len, int position_offset, float word_scale,
//             float eps)
//   ids          [n_rows] int64, the flattened [B, T] token ids (in range: the caller checks them)
//   positions    [n_rows] int64, or null: then position(r) = r % seq_len (rows of a [B, seq_len] batch); either way
//                position_offset is added (BART's 2; or the past length of an eager decode step). A CUDA graph
//                passes a device array it updates in place.
//   token_types  [n_rows] int64, or null (type 0); read only with a type_table.
//   word         [vocab, n_cols]; position_table [max_positions, n_cols]; type_table [n_types, n_cols] or null.
//   gamma, beta  [n_cols], or both null (no LayerNorm).   sum_out [n_rows, n_cols] or null; y [n_rows, n_cols].
//
// Launch: one block per row (a row is one token's n_cols values; the LayerNorm needs the whole row).
//   grid = (n_rows,), block = (EM_THREADS,), dynamic shared memory = n_cols * 4 bytes (the row in float32)
//   The LayerNorm is layer_norm.cu's: two passes over the row in shared memory, float32 mean and biased variance.
//
// Compile-time constants (prepend #defines to change them):
//   EM_THREADS     the block size the launcher uses (a multiple of 32, at most 1024; 256 unless defined)
//   EM_HALF_TYPES  1 (default): also build the f16 / bf16 kernels (needs cuda_fp16.h and cuda_bf16.h); 0: f32
//
// Reference: seq2seq/fast/cuda/reference.py embed, same layouts.
#ifndef EM_THREADS
#define EM_THREADS 256
#endif
#ifndef EM_HALF_TYPES
#define EM_HALF_TYPES 1
#endif

#define SEQ2SEQ_HALF_TYPES EM_HALF_TYPES
#include "common.cuh"  // load/store as float32, block_sum

namespace {

template <typename T>
__device__ void embed_row(const long long* ids, const long long* positions, const long long* token_types,
                          const T* word, const T* position_table, const T* type_table, const T* gamma,
                          const T* beta, T* sum_out, T* y, int n_cols, int seq_len, int position_offset,
                          float word_scale, float eps) {
    extern __shared__ float row[];
    __shared__ float partial[32];
    const int r = blockIdx.x;
    const long long out_at = (long long)r * n_cols;
    const long long word_at = ids[r] * n_cols;
    const long long position = (positions != nullptr ? positions[r] : r % seq_len) + position_offset;
    const long long position_at = position * n_cols;
    const long long type_at = (token_types != nullptr ? token_types[r] : 0) * n_cols;
    float local = 0.0f;
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) {
        float v = load(word, word_at + c) * word_scale;
        if (type_table != nullptr) v += load(type_table, type_at + c);
        v += load(position_table, position_at + c);
        if (sum_out != nullptr) store(sum_out, out_at + c, v);
        if (gamma == nullptr) {
            store(y, out_at + c, v);
        } else {
            row[c] = v;
            local += v;
        }
    }
    if (gamma == nullptr) return;  // the same for the whole block: no thread is left waiting at a barrier
    normalize_row(row, local, partial, gamma, beta, y, out_at, n_cols, eps);
}

}  // namespace

#define EM_KERNEL(SUFFIX, T)                                                                               \
    extern "C" __global__ void __launch_bounds__(EM_THREADS)                                               \
    embed_##SUFFIX(const long long* ids, const long long* positions, const long long* token_types,         \
                   const T* word, const T* position_table, const T* type_table, const T* gamma,            \
                   const T* beta, T* sum_out, T* y, int n_rows, int n_cols, int seq_len,                   \
                   int position_offset, float word_scale, float eps) {                                     \
        if (blockIdx.x < n_rows)                                                                           \
            embed_row(ids, positions, token_types, word, position_table, type_table, gamma, beta, sum_out, \
                      y, n_cols, seq_len, position_offset, word_scale, eps);                               \
    }

EM_KERNEL(f32, float)
#if EM_HALF_TYPES
EM_KERNEL(f16, __half)
EM_KERNEL(bf16, __nv_bfloat16)
#endif
