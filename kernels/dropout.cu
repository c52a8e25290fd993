// dropout.cu -- dropout's keep mask drawn on the device, from a counter-based hash of (seed, element).
//
// The eager path draws dropout's masks with the model's NumPy generator (nn/functional.py Dropout, attention's
// dropout), so that a run repeats from its seed and resumes exactly. On a GPU that means making the uniforms on the
// host and copying a mask of the activations' size to the device at every dropout of a training step (attention's
// [B, nh, T, S] probabilities included). Here the host draws one 64-bit seed per mask from that same generator,
// and the device makes the mask itself: element i is kept when the top 32 bits of
//
//   z = seed + (i + 1) * 0x9E3779B97F4A7C15   (mod 2^64), mixed by splitmix64's finalizer
//
// are at least threshold = round(p * 2^32), so with probability 1 - p. Each element depends on (seed, i) alone:
// the same mask whatever the grid, and a NumPy reference computes it bit for bit. (The NumPy path's masks are
// other draws: a model trained with dropout on the CPU and on a GPU sees different masks, as torch's do.)
//
// Kernel: dropout_mask(unsigned long long seed, long long n, long long threshold, bool* keep)
//   keep  [n] bool, written; threshold in [0, 2^32] (2^32: nothing kept).
//
// Launch: a 1-D grid-stride loop over the n elements.
//   block = (DR_THREADS,)   (256 unless defined)
//   grid  = (min(ceil(n / DR_THREADS), DR_MAX_BLOCKS),)   -- no dynamic shared memory
//
// Compile-time constants (prepend #defines to change them):
//   DR_THREADS      the block size the launcher uses
//   DR_HALF_TYPES   accepted for uniformity with the other files; nothing here depends on a storage type
//
// Reference: seq2seq/fast/cuda/reference.py dropout_mask.
#ifndef DR_THREADS
#define DR_THREADS 256
#endif

namespace {

__device__ __forceinline__ unsigned long long splitmix64(unsigned long long seed, long long i) {
    unsigned long long z = seed + (unsigned long long)(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

}  // namespace

extern "C" __global__ void __launch_bounds__(DR_THREADS)
dropout_mask(unsigned long long seed, long long n, long long threshold, bool* keep) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        keep[i] = (long long)(splitmix64(seed, i) >> 32) >= threshold;
    }
}
