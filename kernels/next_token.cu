// next_token.cu -- choosing the next tokens from a step's scores [rows, vocab]: greedy decoding's argmax, beam
// search's log-softmax and top-k candidates, and sampling's draw (generation/sampling.py and
// generation/beam_search.py on the CPU).
//
// The order used throughout: a larger value first, the lower index on exact ties (torch.argmax's first maximum,
// and the stable sort beam_search.top_k ranks candidates with); NaN counts as larger than any number (torch.argmax
// and numpy.argmax return the first NaN).
//
// Kernels (extern "C"; <T> the storage type of `scores`: f32, f16, bf16; everything else float32 / int64):
//   argmax_<T>(const T* scores, long long* ids, int n_rows, int vocab)
//       ids[r] = the first index of row r's largest score.
//   beam_topk_<T>(const T* scores, const float* beam_scores, int normalise, float* log_probs, float* top_values,
//                 long long* top_ids, int n_rows, int vocab, int k)
//       lp = log_softmax(scores[r]) when normalise (as beam_search.log_softmax: (x - max) - log(sum exp(x - max))),
//       else the scores as they are (already log-probs, e.g. after the logits processors);
//       log_probs[r] = lp when log_probs is not null ([n_rows, vocab] float32: what the processors and
//       output_scores read); then the k best of lp + beam_scores[r] (beam_scores [n_rows] float32, or null for 0),
//       best first, into top_values [n_rows, k] and top_ids [n_rows, k] (token ids). k = 0: log_probs only.
//   beam_merge(const float* top_values, const long long* top_ids, float* values, long long* flat, int n_batch,
//              int n_beams, int k, int vocab)
//       For each batch row b, the k best of its n_beams * k candidates (rows b * n_beams .. of beam_topk's
//       output), ranked by value and then by flat index beam * vocab + token: exactly the k best of the whole
//       [n_beams * vocab] row that beam_search.top_candidates ranks, since each beam's k best contain every one
//       of its candidates that can be among them. values [n_batch, k] float32, flat [n_batch, k] int64 (beam =
//       flat / vocab, token = flat % vocab, as top_candidates splits them).
//   sample_<T>(const T* scores, const double* uniforms, long long* ids, int n_rows, int vocab)
//       One draw per row from softmax(scores[r]) by inverse CDF, as generation/sampling.sample_tokens computes it:
//       in float64, p_j = exp(x_j - max), the first token whose cumulative p exceeds uniforms[r] * sum(p), at most
//       the last token with p > 0. uniforms [n_rows] float64 in [0, 1) come from the host's
//       numpy.random.Generator (rng.random(n_rows), the very numbers sample_tokens draws), so the device picks
//       the CPU path's token, unless u lands within rounding (~1e-16 relative) of a boundary between two tokens:
//       the sums here add in another order. The warpers (temperature, top-k, top-p, ...) run before, on the
//       scores. A row whose scores hold a NaN or +inf, or are all -inf, gets id -1 (sample_tokens raises).
//
// Launch:
//   argmax_<T>, beam_topk_<T>: one block per row, grid = (n_rows,), block = (NT_THREADS,), no dynamic shared
//     memory. Each thread scans the columns t, t + NT_THREADS, ... (neighbouring threads read neighbouring
//     columns: coalesced), keeping its best (argmax) or its k best in a sorted list (beam_topk); then the block
//     combines: argmax with a warp-shuffle reduction of (value, index) pairs; beam_topk with k rounds of that
//     reduction over the heads of the threads' lists, the winner's owner moving to its next entry.
//     k <= NT_MAX_K.
//   sample_<T>: one block per row, grid = (n_rows,), block = (NT_THREADS,). Here each thread takes a contiguous
//     chunk of the row, so that the cumulative sum is its chunk's prefix (an exclusive scan over the threads'
//     chunk sums, by thread 0: NT_THREADS additions) plus a walk through its own chunk.
//   beam_merge: one block per batch row, grid = (n_batch,), block = (NT_THREADS,). Each candidate counts the
//     candidates ahead of it (its rank, distinct because flat indices are) and writes itself to slot rank if
//     rank < k: n_beams * k candidates, (n_beams * k)^2 comparisons, a few thousand at most.
//
// Compile-time constants (prepend #defines to change them):
//   NT_THREADS     the block size the launcher uses (a multiple of 32, at most 1024; 256 unless defined)
//   NT_MAX_K       the largest k of beam_topk (each thread's list: NT_MAX_K floats and int64s; 64 unless defined)
//   NT_HALF_TYPES  1 (default): also build the f16 / bf16 kernels (needs cuda_fp16.h and cuda_bf16.h); 0: f32
//
// Reference: seq2seq/fast/cuda/reference.py argmax, beam_topk, beam_merge and sample, same layouts.
#ifndef NT_THREADS
#define NT_THREADS 256
#endif
#ifndef NT_MAX_K
#define NT_MAX_K 64
#endif
#ifndef NT_HALF_TYPES
#define NT_HALF_TYPES 1
#endif

#define SEQ2SEQ_HALF_TYPES NT_HALF_TYPES
#include "common.cuh"  // load as float32, neg_inf, block_max, block_sum

namespace {

constexpr long long NO_INDEX = 0x7fffffffffffffffLL;  // an empty slot: behind every real entry of equal value

// Is (v, i) ahead of (best_v, best_i) in the order above?
__device__ __forceinline__ bool ahead(float v, long long i, float best_v, long long best_i) {
    const bool nan = v != v, best_nan = best_v != best_v;
    if (nan || best_nan) return nan && (!best_nan || i < best_i);
    return v > best_v || (v == best_v && i < best_i);
}

// The block's best (v, i), returned to every thread. values / indices: 32 entries of shared memory each.
__device__ void block_best(float& v, long long& i, float* values, long long* indices) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float other_v = __shfl_xor_sync(0xffffffffu, v, offset);
        const long long other_i = __shfl_xor_sync(0xffffffffu, i, offset);
        if (ahead(other_v, other_i, v, i)) v = other_v, i = other_i;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n_warps = blockDim.x >> 5;
    __syncthreads();  // the previous call's values may still be being read
    if (lane == 0) values[warp] = v, indices[warp] = i;
    __syncthreads();
    v = lane < n_warps ? values[lane] : neg_inf();
    i = lane < n_warps ? indices[lane] : NO_INDEX;
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float other_v = __shfl_xor_sync(0xffffffffu, v, offset);
        const long long other_i = __shfl_xor_sync(0xffffffffu, i, offset);
        if (ahead(other_v, other_i, v, i)) v = other_v, i = other_i;
    }
}

template <typename T>
__device__ void argmax_row(const T* scores, long long* ids, int vocab) {
    __shared__ float values[32];
    __shared__ long long indices[32];
    const long long at = (long long)blockIdx.x * vocab;
    float best_v = neg_inf();
    long long best_i = NO_INDEX;
    for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
        const float v = load(scores, at + c);
        if (ahead(v, c, best_v, best_i)) best_v = v, best_i = c;
    }
    block_best(best_v, best_i, values, indices);
    if (threadIdx.x == 0) ids[blockIdx.x] = best_i;
}

template <typename T>
__device__ void beam_topk_row(const T* scores, const float* beam_scores, int normalise, float* log_probs,
                              float* top_values, long long* top_ids, int vocab, int k) {
    __shared__ float reduce[32];
    __shared__ float values[32];
    __shared__ long long indices[32];
    const int r = blockIdx.x;
    const long long at = (long long)r * vocab;
    float max_score = 0.0f, log_sum = 0.0f;  // lp = (x - max_score) - log_sum
    if (normalise) {
        float local = neg_inf();
        for (int c = threadIdx.x; c < vocab; c += blockDim.x) local = fmaxf(local, load(scores, at + c));
        max_score = block_max(local, reduce);
        local = 0.0f;
        for (int c = threadIdx.x; c < vocab; c += blockDim.x) local += expf(load(scores, at + c) - max_score);
        log_sum = logf(block_sum(local, reduce));
    }
    const float beam_score = beam_scores != nullptr ? beam_scores[r] : 0.0f;
    // This thread's k best (lp + beam_score, column), best first. Its columns come in increasing order, so a new
    // one goes behind the entries of equal value already there.
    float list_v[NT_MAX_K];
    long long list_i[NT_MAX_K];
    int n = 0;
    for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
        const float lp = normalise ? (load(scores, at + c) - max_score) - log_sum : load(scores, at + c);
        if (log_probs != nullptr) log_probs[at + c] = lp;
        const float v = lp + beam_score;
        if (k == 0 || (n == k && !ahead(v, c, list_v[k - 1], list_i[k - 1]))) continue;
        int slot = n < k ? n++ : k - 1;  // insertion sort: move the entries it beats one place down
        for (; slot > 0 && ahead(v, c, list_v[slot - 1], list_i[slot - 1]); --slot) {
            list_v[slot] = list_v[slot - 1], list_i[slot] = list_i[slot - 1];
        }
        list_v[slot] = v, list_i[slot] = c;
    }
    // k rounds: the best head of all lists is the next best of the row; its owner moves on to its next entry.
    int head = 0;
    for (int round = 0; round < k; ++round) {
        float v = head < n ? list_v[head] : neg_inf();
        long long i = head < n ? list_i[head] : NO_INDEX;
        block_best(v, i, values, indices);
        if (head < n && list_i[head] == i) ++head;  // column indices are unique: one thread owns the winner
        if (threadIdx.x == 0) top_values[(long long)r * k + round] = v, top_ids[(long long)r * k + round] = i;
    }
}

template <typename T>
__device__ void sample_row(const T* scores, const double* uniforms, long long* ids, int vocab) {
    __shared__ float reduce[32];
    __shared__ double chunk_start[NT_THREADS + 1];  // the cumulative sum before each thread's chunk, then the total
    __shared__ int first_above, last_possible;
    const int r = blockIdx.x, t = threadIdx.x;
    const long long at = (long long)r * vocab;
    const int chunk = (vocab + blockDim.x - 1) / blockDim.x;
    const int begin = min(t * chunk, vocab), end = min(begin + chunk, vocab);

    float local_max = neg_inf(), nans = 0.0f;
    for (int c = begin; c < end; ++c) {
        const float x = load(scores, at + c);
        local_max = fmaxf(local_max, x);  // fmaxf skips NaN: counted apart
        nans += x != x;
    }
    const double top = block_max(local_max, reduce);
    if (block_sum(nans, reduce) > 0.0f || !(top > -1e308 && top < 1e308)) {  // NaN, +inf, or all -inf: no draw
        if (t == 0) ids[r] = -1;
        return;  // the same for the whole block
    }
    double sum = 0.0;
    for (int c = begin; c < end; ++c) sum += exp((double)load(scores, at + c) - top);
    chunk_start[t] = sum;
    if (t == 0) first_above = vocab, last_possible = 0;
    __syncthreads();
    if (t == 0) {  // exclusive scan of the chunk sums, in order
        double running = 0.0;
        for (int i = 0; i < blockDim.x; ++i) {
            const double s = chunk_start[i];
            chunk_start[i] = running;
            running += s;
        }
        chunk_start[blockDim.x] = running;
    }
    __syncthreads();
    const double target = uniforms[r] * chunk_start[blockDim.x];
    double cumulative = chunk_start[t];
    for (int c = begin; c < end; ++c) {
        const double p = exp((double)load(scores, at + c) - top);
        cumulative += p;
        if (p > 0.0) atomicMax(&last_possible, c);
        if (cumulative > target) {  // this chunk's first crossing; the block keeps the earliest
            atomicMin(&first_above, c);
            break;
        }
    }
    // Why the min is right although chunks stop early: with no crossing at all (u * sum rounded up to the sum),
    // every chunk walked to its end and last_possible is the last token with p > 0; with one, the earliest crossing
    // has p > 0 (the cumulative sum grew there), so it is in last_possible's max too and the min keeps it.
    __syncthreads();
    if (t == 0) ids[r] = min(first_above, last_possible);
}

}  // namespace

extern "C" __global__ void __launch_bounds__(NT_THREADS)
beam_merge(const float* top_values, const long long* top_ids, float* values, long long* flat, int n_batch,
           int n_beams, int k, int vocab) {
    const int b = blockIdx.x, n = n_beams * k;
    if (b >= n_batch) return;
    const float* cand_v = top_values + (long long)b * n;  // the batch row's n_beams rows of k, one after another
    const long long* cand_ids = top_ids + (long long)b * n;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float v = cand_v[c];
        const long long f = (long long)(c / k) * vocab + cand_ids[c];  // beam * vocab + token
        int rank = 0;
        for (int o = 0; o < n; ++o) rank += ahead(cand_v[o], (long long)(o / k) * vocab + cand_ids[o], v, f);
        if (rank < k) values[(long long)b * k + rank] = v, flat[(long long)b * k + rank] = f;
    }
}

#define NT_KERNELS(SUFFIX, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(NT_THREADS)                                               \
    argmax_##SUFFIX(const T* scores, long long* ids, int n_rows, int vocab) {                              \
        if (blockIdx.x < n_rows) argmax_row(scores, ids, vocab);                                           \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(NT_THREADS)                                               \
    beam_topk_##SUFFIX(const T* scores, const float* beam_scores, int normalise, float* log_probs,         \
                       float* top_values, long long* top_ids, int n_rows, int vocab, int k) {              \
        if (blockIdx.x < n_rows)                                                                           \
            beam_topk_row(scores, beam_scores, normalise, log_probs, top_values, top_ids, vocab, k);       \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(NT_THREADS)                                               \
    sample_##SUFFIX(const T* scores, const double* uniforms, long long* ids, int n_rows, int vocab) {       \
        if (blockIdx.x < n_rows) sample_row(scores, uniforms, ids, vocab);                                 \
    }

NT_KERNELS(f32, float)
#if NT_HALF_TYPES
NT_KERNELS(f16, __half)
NT_KERNELS(bf16, __nv_bfloat16)
#endif
