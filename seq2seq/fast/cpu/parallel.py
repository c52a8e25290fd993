"""Elementwise work in cache-sized blocks of rows, spread over every CPU core.

NumPy runs each ufunc on one core and over the whole array. An expression such as ``gy * (cdf + x * pdf)`` on a
``[N, 4C]`` activation therefore makes several passes over arrays far larger than the CPU cache, each pass
allocating a full-size temporary, all on one core; torch runs the same work as fused kernels on every core. Two
ideas recover most of the difference without leaving NumPy:

1. **Blocks.** Call the same NumPy code on a block of rows at a time, a block small enough that its temporaries
   stay in the CPU cache: the first pass reads from memory, the others from the cache.
2. **Threads.** NumPy releases the GIL inside its ufunc loops, so blocks handed to Python threads (one per core,
   ``workers.py``) run truly in parallel.
3. **Scratch buffers.** The temporaries of a block live in buffers each thread keeps and reuses (``scratch``).
   Why it matters: glibc serves allocations from 128 KiB up with a fresh ``mmap``, so a temporary allocated per
   block costs page faults and the kernel zeroing its pages, and threads then queue on the process's memory map.

Block size: with small blocks (16K values) each ufunc call is shorter than the hand-over of the GIL, so two
threads are *slower* than one; ``BLOCK_VALUES`` = 128K values (512 KiB per float32 array, a few arrays per thread
inside a large L3 cache) lets two threads run about twice as fast as one on CPUs with a large shared cache. Not
every CPU gains as much: where a block's four to six arrays spill a small L2 and smaller blocks make ufunc calls too
short to cover the hand-over of the GIL, two threads gain little (measured on AMD EPYC and Intel Xeon machines:
benchmarks/RESULTS.md).

Every op that uses this computes each row on its own (elementwise work, or reductions along the last axis), so the
result is bit-for-bit the same whatever the number of threads: a training run resumed on a machine with another
core count continues the same curve. (Sums over rows, such as LayerNorm's parameter gradients, add per-block
partial sums in block order: they depend on the block size, a constant, and not on the threads.) Random numbers
(dropout) are never drawn inside a block: the order of draws must not depend on thread timing. Only the fused CPU
forms use this, on NumPy arrays: on a GPU each kernel is parallel already, and CuPy runs nn/'s plain forms.

The number of threads is the number of cores this process may run on, or ``SEQ2SEQ_NUM_THREADS`` when set.
"""
import math
import os
import threading

import numpy as np

from ...core.errors import InputError
from .native import blas_one_thread
from .workers import Tasks, Workers

BLOCK_VALUES = 1 << 17  # values per block: 512 KiB of float32 (see "Block size" above)

_workers = Workers()  # the threads beside the caller's (workers.py)
_num_threads = None


def num_threads():
    """Threads used for blockwise work: ``SEQ2SEQ_NUM_THREADS``, else the cores this process may use."""
    global _num_threads
    if _num_threads is None:
        setting = os.environ.get("SEQ2SEQ_NUM_THREADS")
        if setting is not None:
            if not setting.strip().isdigit() or int(setting) < 1:
                raise InputError(f"SEQ2SEQ_NUM_THREADS must be a whole number of threads >= 1, got {setting!r}")
            _num_threads = int(setting)
        else:
            _num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return _num_threads


def set_num_threads(n):
    """Use ``n`` threads (at least 1) for blockwise work from now on."""
    global _num_threads
    _num_threads = max(1, int(n))


def row_blocks(rows, row_values, *, block_values=None):
    """Slices covering ``range(rows)`` of ``row_values`` values each: as few blocks as hold at most about
    ``block_values`` values each, the rows shared out evenly among them (>= 1 row a block), and two blocks at
    least from a quarter of ``block_values`` on, so that a short input (an encoder's 128 tokens, a GELU of
    [128, 3072]) has a block for each of two cores rather than one block and a remainder (85 + 43 rows there,
    64 + 64 now). A function of the shapes alone, never of the number of threads."""
    block_values = block_values or BLOCK_VALUES
    total = rows * max(row_values, 1)
    count = max(-(-total // block_values), 2 if 4 * total >= block_values else 1)
    step = max(1, -(-rows // count))  # even shares: ceil(rows / blocks)
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def for_each_block(fn, rows, row_values, *, block_values=None):
    """Call ``fn(block)`` for slices ``block`` that cover ``range(rows)``; return their results in order.

    ``fn`` must only read its inputs and write its own rows of an output (blocks run concurrently), and must not
    call ``for_each_block`` itself (it would find the workers taken and run all its blocks on its own thread).
    """
    blocks = row_blocks(rows, row_values, block_values=block_values)
    return for_each_task(lambda i: fn(blocks[i]), len(blocks))


def for_each_task(fn, n):
    """``[fn(i) for i in range(n)]``, the calls shared out over every core: each thread (the caller's first) takes
    the next task until none is left (workers.py), so a thread that starts late takes fewer."""
    threads = min(num_threads(), n)
    workers = _workers.try_claim(threads - 1) if threads > 1 else None
    if workers is None:  # one thread, or another caller has the workers (or these tasks run inside tasks): all here
        return [fn(i) for i in range(n)]
    try:
        tasks = Tasks(fn, n)
        for worker in workers:
            worker.offer(tasks.work)  # an idle worker joins in when it wakes; a busy one is left out
        tasks.work()
        return tasks.wait()  # waits only for tasks a worker took and has not finished
    finally:
        _workers.release()


def blas_on_calling_threads():
    """For blocks that call BLAS themselves: while they run, each OpenBLAS product stays on the thread that calls
    it (``native.blas_one_thread``), so that our threads and OpenBLAS's do not compete for the cores, and a product's
    rounding never depends on how many threads OpenBLAS would have split it over."""
    return blas_one_thread()


def row_dots(a, b, *, out=None):
    """``sum(a * b, axis=-1)`` in one pass, without writing the products out (``vecdot`` from NumPy 2 on;
    ``einsum`` does the same before), into ``out`` when given."""
    if _vecdot is not None:
        return _vecdot(a, b, out=out)
    return np.einsum("...i,...i->...", a, b, out=out)


_vecdot = getattr(np, "vecdot", None)


_local = threading.local()


def scratch(shape, dtype, *, name, count=1):
    """``count`` arrays of ``shape`` and ``dtype`` for temporaries, private to this thread and reused by every later
    call with the same ``name`` (their contents are garbage). Two uses that are alive at once need two names.
    """
    size = math.prod(shape)
    buffers = _local.__dict__.setdefault("buffers", {})
    key = (name, np.dtype(dtype).str)
    buffer = buffers.get(key)
    if buffer is None or buffer.shape[0] < count or buffer.shape[1] < size:
        buffer = buffers[key] = np.empty((count, max(size, BLOCK_VALUES)), dtype=dtype)
    return [buffer[i, :size].reshape(shape) for i in range(count)]


def as_rows(x):
    """A C-contiguous array as ``[N, last]`` (a view); rows are what blocks slice."""
    return x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
