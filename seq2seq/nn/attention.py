"""Multi-head scaled dot-product attention and the masks that say who may attend to whom.

Masks are boolean *keep* arrays, True where a query may look at a key, shaped to broadcast against the scores
``[B, nh, T, S]``: a padding mask is ``[B, 1, 1, S]``, a causal mask ``[1, 1, T, S]``. They are combined with ``&``
and applied inside the fused softmax (``nn_ops.MaskedSoftmax``), which fills left-out scores with the dtype's
lowest finite value rather than -inf.

Dimension letters: B batch, T query length, S key length, C channels, nh heads, hs head size (C = nh * hs).
The projections that produce q, k and v differ between model families (BERT's separate query/key/value, GPT-2's
fused ``c_attn``), so they live with each model; what is common lives here.
"""
import contextlib
import math

import numpy as np

from ..core.autograd import Function
from ..core.backend import get_array_module
from ..core.errors import InputError
from ..core.ops import matmul, reshape, transpose
from ..fast.cpu.native import can_set_blas_threads
from ..fast.cpu.parallel import blas_on_calling_threads, for_each_block, row_dots, scratch
from .functional import dropout_scale, masked_softmax


def padding_mask(attention_mask, *, name="attention_mask"):
    """``[B, S]`` of 1 (real token) / 0 (padding) -> keep ``[B, 1, 1, S]``."""
    if attention_mask.ndim != 2:
        raise InputError(f"{name} must be 2-D [batch, seq], got shape {tuple(attention_mask.shape)}")
    return (attention_mask != 0)[:, None, None, :]


def causal_mask(xp, query_length, key_length):
    """keep ``[1, 1, T, S]``: the query at position i (the last T of S positions) sees keys 0..i."""
    offset = key_length - query_length  # positions already in the KV cache
    rows = xp.arange(query_length)[:, None] + offset
    return (xp.arange(key_length)[None, :] <= rows)[None, None]


def combine_masks(*masks):
    """AND of the masks that are not None (None when all are)."""
    keep = None
    for mask in masks:
        if mask is not None:
            keep = mask if keep is None else keep & mask
    return keep


def split_heads(x, num_heads):
    """``[B, T, C] -> [B, nh, T, hs]``."""
    b, t, c = x.shape
    x = reshape(x, (b, t, num_heads, c // num_heads))  # [B, T, C] -> [B, T, nh, hs]
    return transpose(x, (0, 2, 1, 3))  # [B, T, nh, hs] -> [B, nh, T, hs]


def merge_heads(x):
    """``[B, nh, T, hs] -> [B, T, C]``."""
    b, nh, t, hs = x.shape
    x = transpose(x, (0, 2, 1, 3))  # [B, nh, T, hs] -> [B, T, nh, hs]
    return reshape(x, (b, t, nh * hs))  # [B, T, nh, hs] -> [B, T, C]


class Attention(Function):
    """softmax(q k^T / sqrt(hs), masked) v, fused, one batch element at a time.

    q ``[B, nh, T, hs]``, k and v ``[B, nh, S, hs]`` -> ``[B, nh, T, hs]``. The same arithmetic as
    ``attention_reference`` below, rearranged for speed: the scale multiplies q (T * hs values) instead of the
    scores (T * S), and the scores are made, softmaxed in place and consumed a few batch elements at a time (as
    many as fit ``_CHUNK`` values: one element for long sequences, the whole batch for a one-token decode step),
    while they are still in the CPU cache; the blocks of batch elements run on every core
    (``parallel.for_each_block``).

    What backward needs of the probabilities ``[B, nh, T, S]`` depends on their size. Up to ``S = 4 hs`` keys they
    are kept (written straight into the array that keeps them): then they are no larger than the feed-forward
    activation ``[B, T, 4C]`` that every layer keeps anyway. Beyond that, as flash attention does, forward keeps
    only each score row's maximum and log-sum-exp (``[B, nh, T, 1]`` each) and backward recomputes the
    probabilities from q and k, block by block: one more [T, hs] x [hs, S] product and an exp per score, to avoid
    keeping the largest activation of training on long inputs (bert-base at 512 tokens: 12 MiB per sequence and
    layer). Keeping them made MiniLM's backward attention (S = 128 = 4 hs) 28 -> 18 ms a layer at batch 16 on two
    AVX2 cores. Attention-probability dropout (BERT applies it in training) happens inside, with the mask kept for
    backward.
    """

    def __init__(self, keep=None, *, scale=None, dropout_p=0.0, rng=None):
        self.keep, self.scale, self.p, self.rng = keep, scale, dropout_p, rng

    def forward(self, q, k, v):
        xp = get_array_module(q)
        b, nh, t, hs = q.shape
        s = k.shape[2]
        if self.scale is None:
            self.scale = 1.0 / math.sqrt(hs)
        qs = q * q.dtype.type(self.scale)  # [B, nh, T, hs]
        kt = xp.swapaxes(k, -1, -2)  # [B, nh, S, hs] -> [B, nh, hs, S] (a view)
        blocked = None if self.keep is None else ~self.keep  # [B or 1, 1, T or 1, S]
        # Laid out in memory as q is: q is usually a head-split view of a [B, T, C] projection, and then so is the
        # output, which merge_heads turns back into [B, T, C] as a view instead of a copy
        out = xp.empty_like(q, shape=(b, nh, t, v.shape[-1]))
        keep_probs = self.records and s <= _KEEP_PROBABILITIES_UP_TO * hs
        keep_row_stats = self.records and not keep_probs
        probs = xp.empty((b, nh, t, s), dtype=q.dtype) if keep_probs else None  # kept for backward
        # or, per score row, the maximum and the log of sum(exp(score - maximum)), [B, nh, T, 1] each (kept apart,
        # not added: for a fully masked row both the maximum and the scores are the dtype's lowest value)
        row_max = xp.empty((b, nh, t, 1), dtype=q.dtype) if keep_row_stats else None
        log_sum = xp.empty((b, nh, t, 1), dtype=q.dtype) if keep_row_stats else None
        # The dropout mask is drawn here, whole, not inside the blocks: blocks run on several threads, and the
        # order of the random draws must not depend on which thread runs first. Kept as booleans (1 byte a value).
        kept = None if self.p == 0 else xp.asarray(self.rng.random((b, nh, t, s), dtype=np.float32) >= self.p)

        query_chunks = _query_chunks(xp, b, t, s, hs)
        ones = xp.ones(s, dtype=q.dtype)  # [S]: row_dots(p, ones) = the row sums

        def block(rows):
            n = rows.stop - rows.start
            for qr in query_chunks:  # slices of the query axis (one, unless the products must be kept small)
                tq = len(range(t)[qr])
                if probs is not None:
                    scores = probs[rows, :, qr]  # softmaxed in place below: the kept probabilities
                else:
                    (scores,) = scratch(xp, (n, nh, tq, s), q.dtype, name="attention")
                _masked_scores(xp, qs[rows, :, qr], kt[rows], blocked, rows, qr, out=scores)  # [b, nh, tq, S]
                top = _row_max(xp, scores)  # [b, nh, tq, 1]
                scores -= top
                p = xp.exp(scores, out=scores)
                total = row_dots(xp, p, ones)[..., None]  # row sums, [b, nh, tq, 1]
                p *= 1 / total  # probabilities, [b, nh, tq, S]
                if row_max is not None:
                    row_max[rows, :, qr], log_sum[rows, :, qr] = top, xp.log(total)
                if kept is not None:
                    p = self._dropped(xp, p, kept[rows, :, qr])
                if tq == t:
                    xp.matmul(p, v[rows], out=out[rows])  # [b, nh, T, S] @ [b, nh, S, hs] -> [b, nh, T, hs]
                else:
                    out[rows, :, qr] = p @ v[rows]  # [b, nh, tq, S] @ [b, nh, S, hs] -> [b, nh, tq, hs]

        with _products_on_calling_threads(xp, b):
            for_each_block(block, b, nh * t * s, xp=xp, block_values=_CHUNK)
        # q, not the scaled copy qs: the graph holds q anyway (backward applies the scale instead)
        self.q, self.k, self.v, self.kept, self.blocked = q, k, v, kept, blocked
        self.probs, self.row_max, self.log_sum = probs, row_max, log_sum
        return out

    def _probabilities(self, xp, rows, qr, out):
        """The forward pass's probabilities for batch rows ``rows`` and queries ``qr``, recomputed into ``out``:
        exp(score - row maximum - log-sum-exp), the scores made again from q and k."""
        q = self.q[rows, :, qr]
        _masked_scores(xp, q * q.dtype.type(self.scale), xp.swapaxes(self.k[rows], -1, -2), self.blocked, rows, qr,
                       out=out)  # [b, nh, tq, S]
        out -= self.row_max[rows, :, qr]
        out -= self.log_sum[rows, :, qr]
        return xp.exp(out, out=out)

    def _dropped(self, xp, p, kept):
        """Inverted dropout of the probabilities: 0 where dropped, p / (1 - p_drop) where kept (a new array)."""
        (dropped,) = scratch(xp, p.shape, p.dtype, name="attention_dropout")
        xp.multiply(p, kept, out=dropped)
        dropped *= p.dtype.type(dropout_scale(self.p))
        return dropped

    def backward(self, gout):
        xp = get_array_module(gout)
        q, k, v = self.q, self.k, self.v
        b, nh, t, _ = q.shape
        s = k.shape[2]
        # each in its input's memory layout (see forward's ``out``): the gradients of head-split views reach the
        # [B, T, C] projections as views
        gq, gk, gv = xp.empty_like(q), xp.empty_like(k), xp.empty_like(v)

        query_chunks = _query_chunks(xp, b, t, s, q.shape[3])

        def block(rows):
            n = rows.stop - rows.start
            for i, qr in enumerate(query_chunks):
                tq = len(range(t)[qr])
                p, gp = scratch(xp, (n, nh, tq, s), q.dtype, name="attention", count=2)
                if self.probs is not None:
                    p = self.probs[rows, :, qr]  # [b, nh, tq, S]
                else:
                    p = self._probabilities(xp, rows, qr, p)
                pd = p if self.kept is None else self._dropped(xp, p, self.kept[rows, :, qr])
                g = gout[rows, :, qr]  # [b, nh, tq, hs]
                # keys and values collect their gradients from every query chunk
                gv_part = xp.swapaxes(pd, -1, -2) @ g  # [b, nh, S, tq] @ [b, nh, tq, hs] -> [b, nh, S, hs]
                _collect(gv, rows, gv_part, first=i == 0)
                xp.matmul(g, xp.swapaxes(v[rows], -1, -2), out=gp)  # [b, nh, tq, hs] @ [b, nh, hs, S]
                if self.kept is not None:
                    gp *= self.kept[rows, :, qr]
                    gp *= gp.dtype.type(dropout_scale(self.p))
                # softmax backward: d score_j = p_j (dp_j - sum_k dp_k p_k)
                gp -= row_dots(xp, gp, p)[..., None]
                gp *= p
                if self.blocked is not None:  # masked scores were replaced by a constant: no gradient
                    _fill_blocked(xp, gp, self.blocked, rows, qr, 0)
                # scores were (scale q) k^T: the scale multiplies both gradients, applied to the products
                # ([tq, hs] and [S, hs]) rather than to gp ([tq, S]): fewer values
                gq_part = xp.matmul(gp, k[rows], out=gq[rows, :, qr])  # [b, nh, tq, S] @ [b, nh, S, hs]
                gq_part *= self.scale
                gk_part = xp.swapaxes(gp, -1, -2) @ q[rows, :, qr]  # [b, nh, S, tq] @ [b, nh, tq, hs]
                gk_part *= self.scale
                _collect(gk, rows, gk_part, first=i == 0)  # [b, nh, S, hs]

        with _products_on_calling_threads(xp, b):
            for_each_block(block, b, nh * t * s, xp=xp, block_values=_CHUNK)
        return gq, gk, gv


_CHUNK = 1 << 18  # score values per block (1 MiB of float32): a block's scores stay in the cache
_KEEP_PROBABILITIES_UP_TO = 4  # keys per head-size unit up to which forward keeps the probabilities for backward
_BLAS_SPLITS_FROM = 1 << 18  # m * n * k from which OpenBLAS splits one product over its own threads


def _query_chunks(xp, batch, t, s, hs):
    """The slices of the query axis that each block of batch elements goes through, one after another.

    Each product of a block is [tq, hs] x [hs, S] or alike. OpenBLAS splits a product over its own threads from
    m * n * k = 65536 * GEMM_MULTITHREAD_THRESHOLD (4 by default, interface/gemm.c); if our threads ran such
    products side by side, both kinds of thread would share the cores and wait on each other (measured: 2x
    slower). Where OpenBLAS can be held to one thread while the blocks run (``cpu.blas_one_thread``, see
    ``_products_on_calling_threads``), the whole queries go at once. Elsewhere they are cut into chunks whose
    products stay below that size: more, smaller products, which cost time too (a 16 x 128-token batch of MiniLM:
    attention 20.7 + 36.3 ms forward + backward in chunks of 43 queries, 15.4 + 27.3 ms whole, on 2 AVX2 cores).
    One sequence is one block, on this thread, whose whole products OpenBLAS spreads instead. The choice depends
    on the shapes and the BLAS only, never on the number of threads: the results must not either. On a GPU there
    is one block and no cutting: its matrix products are parallel already.
    """
    if batch == 1 or xp is not np or can_set_blas_threads():
        return [slice(0, t)]
    chunks = -(-t * s * hs // (_BLAS_SPLITS_FROM - 1))  # ceil: enough chunks for every product to stay small
    size = -(-t // chunks)
    return [slice(i, min(i + size, t)) for i in range(0, t, size)]


def _products_on_calling_threads(xp, batch):
    """While the blocks of a batch run on our threads, each OpenBLAS product stays on the thread that calls it
    (one sequence is one block, on this thread, whose products OpenBLAS may spread)."""
    return blas_on_calling_threads(xp) if batch > 1 else contextlib.nullcontext()


def _masked_scores(xp, qs, kt, blocked, rows, queries, *, out):
    """``out = qs @ kt`` (scaled queries ``[b, nh, tq, hs]``, keys ``[b, nh, hs, S]``) with the blocked scores of
    batch rows ``rows`` and queries ``queries`` replaced by the dtype's lowest value: what forward softmaxes and
    backward rebuilds."""
    xp.matmul(qs, kt, out=out)  # [b, nh, tq, hs] @ [b, nh, hs, S] -> [b, nh, tq, S]
    if blocked is not None:
        # Why a finite fill instead of -inf: a fully masked row softmaxes to a uniform row, not NaN.
        _fill_blocked(xp, out, blocked, rows, queries, xp.finfo(out.dtype).min)
    return out


def _fill_blocked(xp, scores, blocked, rows, queries, value):
    """Write ``value`` where the mask blocks a score of these rows and queries; a block of batch elements without
    padding (most of them, in length-bucketed batches) skips the pass over its scores."""
    part = _part_of(blocked, rows, queries)
    if xp is not np or part.any():
        xp.copyto(scores, value, where=part)


def _row_max(xp, scores):
    """The maximum of each score row, ``[..., S] -> [..., 1]``. Why argmax and a gather instead of ``max``: NumPy's
    max along a short last axis (S = 128) runs at a third of the speed of its argmax there (164 against 54 us for
    12 x 128 rows on a Xeon core); the value found is the same."""
    if xp is not np:
        return scores.max(axis=-1, keepdims=True)
    return xp.take_along_axis(scores, scores.argmax(axis=-1)[..., None], axis=-1)


def _collect(total, rows, part, *, first):
    """``total[rows] = part`` for the first query chunk, ``+= part`` for the others."""
    if first:
        total[rows] = part
    else:
        total[rows] += part


def _part_of(mask, rows, queries):
    """The part of a mask ``[B or 1, 1, T or 1, S]`` for batch rows ``rows`` and query positions ``queries``."""
    mask = mask if mask.shape[0] == 1 else mask[rows]
    return mask if mask.shape[2] == 1 else mask[:, :, queries]


def scaled_dot_product_attention(q, k, v, keep, *, scale=None, dropout_p=0.0, rng=None):
    """softmax(q k^T * scale, masked) v for q ``[B, nh, T, hs]``, k and v ``[B, nh, S, hs]``; scale 1/sqrt(hs)
    unless given."""
    return Attention(keep, scale=scale, dropout_p=dropout_p, rng=rng)(q, k, v)


def keys_values(project, x, *, memory=None, cache=None, start=0):
    """Keys and values ``[B, nh, S, hs]`` for one attention block, through the KV cache when there is one.

    ``project(source)`` computes (k, v) from a source sequence. Self-attention (``memory`` None) projects ``x`` and,
    with a cache, appends the result at position ``start`` and attends over everything cached so far.
    Cross-attention projects the encoder output ``memory`` once; a cache keeps that for every later step.
    """
    if memory is None:
        k, v = project(x)
        if cache is not None:
            k, v = cache.append(k.data, v.data, start)  # -> [B, nh, start + T, hs]
        return k, v
    if cache is not None and cache.cross_k is not None:
        return cache.cross_k, cache.cross_v  # computed at the first step
    k, v = project(memory)
    if cache is not None:
        cache.cross_k, cache.cross_v = k.data, v.data
    return k, v


def attention_reference(q, k, v, keep):
    """The same attention composed from primitives: the readable definition, and the oracle for the fused op."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = matmul(q, transpose(k, (0, 1, 3, 2)))  # [B, nh, T, hs] @ [B, nh, hs, S] -> [B, nh, T, S]
    return matmul(masked_softmax(scores, keep, scale), v)  # [B, nh, T, S] @ [B, nh, S, hs] -> [B, nh, T, hs]
