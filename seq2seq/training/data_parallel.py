"""Data parallelism: every rank holds the whole model and computes the gradient of its rows of each batch; one
allreduce of all the gradients sums them, and every rank then takes the same optimizer step.

    start, stop = row_shards(len(batch), comm.world_size)[comm.rank]   # this rank's rows of the global batch
    with dropout_rows(model, start, stop, len(batch)):                 # the masks one process would draw for them
        loss = model(rows of the batch).loss * (rank's labelled tokens / global labelled tokens)
    loss.backward()
    [step_loss] = allreduce_gradients(model.parameters(), comm, extra=[loss])   # sum over ranks = global mean

The result equals one process's with the same arguments, for three reasons:

1. **Weights by token count.** The loss is a mean over labelled tokens. A rank's mean times its share of the
   global labelled tokens, summed over ranks, is the global mean; a mean of the ranks' means is not, whenever ranks
   hold different token counts (rows of different lengths): the gradient would weigh a short row's tokens more.
2. **The same padding.** Every rank cuts its rows out of the batch as one process pads it, so the shapes (and the
   dropout masks below) do not depend on the split. Padded positions are masked: they change no real output.
3. **The same dropout masks.** One process draws each mask for the whole batch from one generator, row after row.
   ``RowsOfGenerator`` draws exactly the values of this rank's rows and *advances* the generator past the other
   rows without computing them (PCG64 jumps ahead in O(log n) steps), so each rank draws only its share, and every
   rank's generator ends where one process's ends: the next step, and a checkpoint, see the same state.

A batch with fewer rows than ranks leaves some ranks nothing to do: they skip the forward pass (their gradient is
zero), and take rank 0's generator state afterwards (rank 0 always holds rows).
"""
import contextlib
import math

import numpy as np

from ..core.backend import get_array_module
from ..core.errors import InputError


def row_shards(rows, world_size):
    """``[(start, stop), ...]``, one contiguous slice of ``rows`` a rank, sizes differing by at most one (the first
    ``rows % world_size`` ranks take one more, as ``numpy.array_split``): rank 0 holds a row whenever there is one."""
    if world_size < 1:
        raise InputError(f"world_size must be >= 1, got {world_size}")
    base, extra = divmod(rows, world_size)
    bounds = [rank * base + min(rank, extra) for rank in range(world_size + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def skip_draws(rng, count):
    """Advance ``rng`` as if ``rng.random(count, dtype=np.float32)`` had been called, without drawing.

    NumPy makes a float32 from 32 random bits and takes them two at a time from one 64-bit output, keeping the
    spare half (``has_uint32``) for the next call. So: use up a kept half, jump over whole 64-bit outputs with
    ``advance`` (PCG64, Philox), and draw one value for an odd count, which keeps its spare half as a draw would.
    """
    if count <= 0:
        return
    bits = rng.bit_generator
    if not hasattr(bits, "advance"):  # a generator that cannot jump (MT19937): draw and discard, in blocks
        for start in range(0, count, 1 << 20):
            rng.random(min(1 << 20, count - start), dtype=np.float32)
        return
    if bits.state.get("has_uint32"):
        rng.random(1, dtype=np.float32)
        count -= 1
    bits.advance(count // 2)
    if count % 2:
        rng.random(1, dtype=np.float32)


class RowsOfGenerator:
    """Stands in for the model's generator while a rank runs rows ``start:stop`` of a ``rows``-row batch.

    ``random(shape, dtype=np.float32)`` with ``shape[0] == stop - start`` returns those rows of what one process's
    ``rng.random((rows, *shape[1:]))`` would return, and leaves ``rng`` where that call leaves it.
    """

    def __init__(self, rng, start, stop, rows):
        self.rng, self.start, self.stop, self.rows = rng, start, stop, rows

    def random(self, shape, dtype=np.float32):
        shape = tuple(shape)
        if np.dtype(dtype) != np.float32 or not shape or shape[0] != self.stop - self.start:
            raise InputError(f"a generator for rows {self.start}:{self.stop} of {self.rows} draws float32 arrays "
                             f"of {self.stop - self.start} rows, asked for {shape} {np.dtype(dtype)}")
        per_row = math.prod(shape[1:])
        skip_draws(self.rng, self.start * per_row)
        values = self.rng.random(shape, dtype=np.float32)
        skip_draws(self.rng, (self.rows - self.stop) * per_row)
        return values

    @property
    def bit_generator(self):
        return self.rng.bit_generator


@contextlib.contextmanager
def dropout_rows(model, start, stop, rows):
    """While the block runs, the model's dropout draws the masks of rows ``start:stop`` of a ``rows``-row batch
    (``RowsOfGenerator``); the whole batch (one process) keeps the generator itself."""
    if (start, stop) == (0, rows):
        yield
        return
    rng = model.state.rng
    model.state.rng = RowsOfGenerator(rng, start, stop, rows)
    try:
        yield
    finally:
        model.state.rng = rng


def allreduce_gradients(params, comm, *, extra=()):
    """Sum every parameter's gradient over the ranks with ONE allreduce of one flat buffer (a collective per tensor
    would pay the network's latency ~200 times a step), plus the floats in ``extra``; returns those summed.

    A parameter no rank computed a gradient for keeps ``grad = None`` (AdamW then leaves it alone, as in one
    process); one that some rank did gets the sum, with zeros from the others. Afterwards each ``p.grad`` is a
    view of the buffer.
    """
    params = list(params)
    if not params:
        raise InputError("allreduce_gradients: no parameters")
    xp = get_array_module(params[0].data)
    dtype = params[0].data.dtype
    sizes = [p.data.size for p in params]
    total = sum(sizes)
    # layout: [every gradient, flattened, in parameter order | one "has a gradient" flag a parameter | extra]
    buffer = xp.zeros(total + len(params) + len(extra), dtype=dtype)
    offset = 0
    for index, (p, size) in enumerate(zip(params, sizes)):
        if p.grad is not None:
            if p.grad.dtype != dtype:
                raise InputError(f"allreduce_gradients: parameters of mixed dtypes ({dtype} and {p.grad.dtype})")
            buffer[offset:offset + size] = p.grad.reshape(-1)
            buffer[total + index] = 1
        offset += size
    buffer[total + len(params):] = xp.asarray(list(extra), dtype=dtype)
    comm.allreduce_(buffer)
    flags = buffer[total:total + len(params)].tolist()
    offset = 0
    for p, size, flag in zip(params, sizes, flags):
        p.grad = buffer[offset:offset + size].reshape(p.data.shape) if flag > 0 else None
        offset += size
    return buffer[total + len(params):].tolist()


def broadcast_parameters(params, comm, *, root=0):
    """Every rank's parameters overwritten with ``root``'s, in place (one broadcast of one flat buffer): the ranks
    start from identical weights, whatever each one loaded or initialised."""
    params = list(params)
    if comm.world_size == 1 or not params:
        return
    xp = get_array_module(params[0].data)
    flat = xp.concatenate([p.data.reshape(-1) for p in params])
    comm.broadcast_array_(flat, root=root)
    offset = 0
    for p in params:
        p.data[...] = flat[offset:offset + p.data.size].reshape(p.data.shape)
        offset += p.data.size
