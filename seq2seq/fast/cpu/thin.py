"""Products of a few rows by large weights (a decode step's): column chunks of the weight on every core.

A decode step multiplies 1 to 16 rows (one per sequence or beam) by every weight of the decoder. Such a product
reads the whole weight once and does little arithmetic per value read, so it should cost what reading the weight
costs, whatever the number of rows. OpenBLAS's threaded products fall well short of that for thin inputs (at 4
rows a [768, 3072] product took twice the time of 1 row; see benchmarks/RESULTS.md). What works better, measured
on this project's 2-core machines:

- **The weight as a row-major ``[in, out]`` matrix,** the product ``x @ W`` (OpenBLAS's ``gemv_n`` for one row,
  its plain-packing GEMM for more). Linear layers store their weights column-major so that ``W^T`` is exactly
  that, without a copy (``nn.layers.thin_input_layout``); GPT-2's ``Conv1D`` weights and the tied LM-head table
  (``nn.layers.lm_head_layout``) are laid out so already.
- **Output columns cut into a fixed number of chunks,** ``PIECES`` per weight, whose products run on every core
  (``parallel.for_each_task``), each on the thread that calls it (OpenBLAS held to one thread meanwhile). The
  threads take chunks one at a time until none is left, so that a thread that starts late (its core busy with
  another program) takes fewer, and the caller never waits long for it. Few
  wide chunks rather than many narrow ones: each chunk is one call, and a narrow chunk of a wide weight reads a
  short piece of each of its rows, a new memory page every row (the LM head in chunks of 384 columns took 1.4x
  the time of one product on one core, in 4 chunks the same time; benchmarks/RESULTS.md).
- **Rows in groups of four.** OpenBLAS's GEMM works on rows four at a time and handles the rest with slower
  kernels: on one core a [768, 3072] weight took 0.94 ms for 2 rows, 1.35 for 3, 0.85 for 4, 1.2-1.5 for 5 to 7
  and 1.02 for 8 (benchmarks/RESULTS.md). So 3 rows are multiplied as 4, 5 to 7 as 8, and so on, the extra
  rows zeros; one row stays one (a matrix-vector product, 0.43 ms), and two rows are two of those, each chunk
  read by both while in the cache (two matrix-vector products of [768, 3072]: 0.36 ms, against 0.70-0.78 ms for
  the 4-row product; over 24 such weights read from memory, 0.63-0.67 against 0.73-0.76 ms each).
- **Several weights that multiply the same rows in one go** (``thin_products``: a self-attention block's query,
  key and value): their chunks are shared out together, so that the cores stay busy over all of them and the
  threads are woken once. No concatenated copy of the weights is made, so none can go stale when an optimizer
  updates them in place.

**One row** (greedy decoding or sampling of one sequence) is the exception: each weight is multiplied whole, one
matrix-vector product on the calling thread. A product of one row is bound by reading the weight from memory, and
the whole weight is one contiguous sweep, while a column chunk reads a short piece of every row of it. Measured
(2026-12-07, 2-vCPU AMD EPYC, the 98 products of a bert2bert-base decode step, 0.49 GB): 25.8 ms whole on one
thread, 32.9 ms in chunks on one thread and 36.3 ms on two; that machine's memory gives one core about 20 GB/s and
two cores barely more (OpenBLAS's own two threads: 22.4 ms). From two rows on the products are bound by
arithmetic and the chunks on every core win (4 rows: 37.7 ms in chunks on two threads, 57.6 ms whole on one).
A weight of ``ONE_ROW_SPREAD`` values or more (an LM head) goes in chunks on every core even for one row: its rows
are long enough that a chunk reads long pieces of each, and then two cores do read faster than one (medians of
repeated products, 2-vCPU AMD EPYC: a [768, 30522] LM head 3.81 ms whole on one thread, 3.24 ms in 4 chunks on
two; [384, 30522] 1.70 against 1.14 ms; the shipped model's [384, 18915] 1.18-1.30 against 0.68-1.22 ms; in a
bert2bert-base step, where it comes from memory, the chunked [768, 30522] head read 27 GB/s).

The same chunks serve products of up to ``MAX_ROWS`` rows (a source, a batch of 8 sources of 128 tokens): there
OpenBLAS splits each product over its own threads, and on a machine whose other core is busy with another program
every product waits for a thread of its to be scheduled (a 128-row [768, 3072] product, that machine: 36.6 ms with
OpenBLAS's threads, 12.3 ms in chunks; 1024 rows 116 against 92 ms; benchmarks/RESULTS.md). Larger products (4096
rows: 339 against 368 ms) stay with OpenBLAS.

Bit for bit the same whatever the number of threads: the chunks depend on the weight's shape only (``PIECES`` is
a constant, not the number of threads), and each chunk is one and the same OpenBLAS call (on one thread) whichever
thread runs it; a bias is added after the product, as the plain form adds it. OpenBLAS's own threads would not
do: its threaded products differ in the last bits with the number of threads (one row by a [768, 30522] weight:
28-52 of the 30,522 values differ between 1 and 2, 3, 4 or 7 threads; four rows: 109,640 of 122,088 between 1
and more threads), although at one row they read memory faster than these chunks on a virtual machine whose idle
cores wake slowly (benchmarks/RESULTS.md).
"""
import functools

import numpy as np

from .parallel import blas_on_calling_threads, for_each_task

PIECES = 4  # column chunks per weight (a constant: never the number of threads; see above)
ALIGN = 64  # chunk widths are whole multiples of this many columns (of every SIMD width)
MIN_CHUNK = 384  # no chunk narrower than this (but the last)
MAX_ROWS = 1024  # products of up to this many rows go in chunks (linear.py)
ROW_GROUP = 4  # more than one row are padded with zero rows to a whole number of these (see above)
SMALL = 1 << 18  # weights of fewer values (1 MiB of float32) run on the calling thread: waking a core costs more
ONE_ROW_SPREAD = 1 << 22  # one row's weight of this many values (16 MiB of float32) goes in chunks on every core


def is_thin_layout(w):
    """True when ``w`` (``[in, out]``, as the product reads it) is row-major, the layout thin products want."""
    return w.ndim == 2 and w.flags.c_contiguous


def chunks(width):
    """The column slices a weight ``width`` columns wide is cut into: ``PIECES`` of whole ``ALIGN`` groups, none
    narrower than ``MIN_CHUNK`` but the last. A function of the width alone."""
    return _chunks(width, PIECES, ALIGN, MIN_CHUNK)


def whole(width):
    """The one column slice of a weight multiplied whole."""
    return (slice(0, width),)


@functools.lru_cache(maxsize=None)
def _chunks(width, pieces, align, min_chunk):
    size = max(min_chunk, -(-width // (pieces * align)) * align)
    return tuple(slice(start, min(start + size, width)) for start in range(0, width, size))


def thin_products(x2, pairs):
    """``[x2 @ w + b for w, b in pairs]`` for rows ``x2`` ``[N, in]`` and weights ``w`` ``[in, out]`` (row-major,
    see ``is_thin_layout``), each bias ``b`` ``[out]`` or None: C-ordered ``[N, out]`` arrays, in order."""
    return ThinProducts(x2.shape[0], pairs, dtype=x2.dtype)(x2)


class ThinProducts:
    """``thin_products`` for ``rows`` rows of ``dtype`` by ``pairs``, worked out once: the padded input, the
    outputs and the column tasks. A call computes the products into those outputs: a decode step keeps one of these
    per group of weights (``decode_step.py``) and calls it every step, so its results are overwritten by the next
    call (copy what must outlive it); ``thin_products`` makes a fresh one per call."""

    def __init__(self, rows, pairs, *, dtype):
        self.rows, self.biases = rows, [b for _, b in pairs]
        padded = rows if rows <= 2 else -(-rows // ROW_GROUP) * ROW_GROUP
        self.by_row = rows == 2  # two matrix-vector products per chunk (see "Rows in groups of four")
        # rows of zeros up to a whole group: the product of 4 rows costs less than that of 3 (see above)
        self.x = None if padded == rows else np.zeros((padded, pairs[0][0].shape[0]), dtype=dtype)  # [padded, in]
        self.outs = [np.empty((padded, w.shape[1]), dtype=np.result_type(dtype, w)) for w, _ in pairs]
        # each weight whole on one row (see "One row" above), but one wider than the CPU's cache spread over cores
        cuts = [chunks if rows > 1 or w.size >= ONE_ROW_SPREAD else whole for w, _ in pairs]
        self.tasks = [(w[:, columns], y[:, columns]) for (w, _), y, cut in zip(pairs, self.outs, cuts)
                      for columns in cut(w.shape[1])]
        spread = rows > 1 and sum(w.size for w, _ in pairs) >= SMALL
        self.threaded = spread or (rows == 1 and chunks in cuts)
        self.results = [y[:rows] for y in self.outs]  # [N, out] each (C-ordered: the first rows of C-ordered arrays)

    def __call__(self, x2):
        if self.x is not None:
            self.x[:self.rows] = x2
            x2 = self.x
        else:
            x2 = np.ascontiguousarray(x2)  # once, not in every chunk's product
        tasks = self.tasks

        def product(i):
            w, y = tasks[i]
            if self.by_row:
                for r in range(self.rows):
                    np.matmul(x2[r], w, out=y[r])  # [in] @ [in, chunk] -> [chunk]
            else:
                np.matmul(x2, w, out=y)  # [N, in] @ [in, chunk] -> [N, chunk]

        with blas_on_calling_threads():
            if self.threaded:
                for_each_task(product, len(tasks))  # each thread takes the next chunk until none is left
            else:
                for i in range(len(tasks)):
                    product(i)
        for y, b in zip(self.outs, self.biases):
            if b is not None:
                y += b  # after the product, as the plain form adds it
        return self.results
