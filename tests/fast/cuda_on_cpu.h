// cuda_on_cpu.h -- just enough of CUDA to run the float32 kernels of kernels/*.cu on the CPU, for tests on machines
// without a GPU (tests/fast/cuda_on_cpu.py compiles a .cu file with g++ after this header).
//
// Each CUDA thread of a block is an OS thread (std::thread), so the kernels' own code runs as written, barriers and
// all; the blocks of the grid run one after another.
//   __syncthreads()    a std::barrier of the block's threads
//   __shfl_xor_sync    each lane writes its value to the warp's slots, a barrier of the warp's 32 threads, each
//                      reads its partner's, a second barrier (every lane of the warp must call it, as on a GPU)
//   __shared__         `static`: one copy shared by every thread, which is right because one block runs at a time;
//                      `extern __shared__ T name[];` (dynamic shared memory) is rewritten by the loader into a
//                      pointer to a buffer of the launch's size
//   a thread that returns drops out of its block's and warp's barriers (std::barrier::arrive_and_drop), as an
//   exited thread stops counting for __syncthreads on a GPU.
// Not emulated: the half types (compile with <PREFIX>_HALF_TYPES=0), warps that are not full, memory-ordering
// subtleties beyond what the barriers give, speed.
#pragma once

#include <atomic>
#include <barrier>
#include <math.h>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace emu {
struct Block {
    std::barrier<> all;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<long long> lanes;  // one 8-byte slot per thread, for shuffles
    explicit Block(unsigned n) : all(n), lanes(n) {
        for (unsigned w = 0; w < (n + 31) / 32; ++w) warps.emplace_back(new std::barrier<>(std::min(32u, n - 32 * w)));
    }
};
inline Block* block = nullptr;
inline std::vector<char> dynamic_shared;
}  // namespace emu

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static

inline void __syncthreads() { emu::block->all.arrive_and_wait(); }

template <typename V>
inline V __shfl_xor_sync(unsigned, V v, int offset) {
    static_assert(sizeof(V) <= sizeof(long long));
    const unsigned t = threadIdx.x, warp = t / 32;
    std::memcpy(&emu::block->lanes[t], &v, sizeof(V));
    emu::block->warps[warp]->arrive_and_wait();
    V other;
    std::memcpy(&other, &emu::block->lanes[warp * 32 + ((t % 32) ^ offset)], sizeof(V));
    emu::block->warps[warp]->arrive_and_wait();  // nobody overwrites a slot before its partner has read it
    return other;
}

// atomicMin / atomicMax: a compare-and-swap loop (std::atomic_ref has no fetch_min before C++26)
template <typename Keep>
inline int atomic_keep(int* p, int v, Keep keep_old) {
    std::atomic_ref<int> a(*p);
    int old = a.load();
    while (!keep_old(old, v) && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
inline int atomicMin(int* p, int v) { return atomic_keep(p, v, [](int old, int x) { return old <= x; }); }
inline int atomicMax(int* p, int v) { return atomic_keep(p, v, [](int old, int x) { return old >= x; }); }

inline float __int_as_float(unsigned bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
using std::max, std::min;  // erff, expf, fmaxf, logf, tanhf: <math.h>'s, in the global namespace

namespace emu {
// Runs kernel f over the grid with its arguments given as cuLaunchKernel takes them: args[i] points at argument i.
template <typename... A, std::size_t... I>
void launch(void (*f)(A...), dim3 grid, dim3 block_dim, std::size_t shared_bytes, void** args,
            std::index_sequence<I...>) {
    gridDim = grid;
    blockDim = block_dim;
    dynamic_shared.assign(shared_bytes, 0);
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                Block state(block_dim.x);
                block = &state;
                std::vector<std::thread> threads;
                for (unsigned t = 0; t < block_dim.x; ++t)
                    threads.emplace_back([=] {
                        threadIdx = dim3{t, 0, 0};
                        blockIdx = dim3{x, y, z};
                        f(*static_cast<std::remove_reference_t<A>*>(args[I])...);
                        block->warps[t / 32]->arrive_and_drop();
                        block->all.arrive_and_drop();
                    });
                for (auto& thread : threads) thread.join();
            }
}
}  // namespace emu

// One C entry point per kernel: emu_<name>(grid x, y, z, block x, dynamic shared bytes, args).
#define EMU_ENTRY(name)                                                                                    \
    extern "C" void emu_##name(unsigned gx, unsigned gy, unsigned gz, unsigned bx, std::size_t shared,     \
                               void** args) {                                                              \
        emu::launch(name, dim3{gx, gy, gz}, dim3{bx, 1, 1}, shared, args,                                  \
                    std::make_index_sequence<emu::arity(name)>());                                         \
    }

namespace emu {
template <typename... A>
constexpr std::size_t arity(void (*)(A...)) { return sizeof...(A); }
}  // namespace emu
