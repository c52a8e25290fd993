"""Attention's fused CPU form: the same values as ``nn.attention.Attention``'s plain form, computed in blocks.

The plain form makes the whole ``[B, nh, T, S]`` score array, then a few more of its size (the softmax's
temporaries, the dropped probabilities), each pass going through memory. Here the scores are made, softmaxed in
place and consumed a few batch elements at a time (as many as fit ``_CHUNK`` values: one element for long
sequences, the whole batch for a one-token decode step), while they are still in the CPU cache; the blocks of batch
elements run on every core (``parallel.for_each_block``), each OpenBLAS product on the thread that calls it.

What backward needs of the probabilities ``[B, nh, T, S]`` depends on their size. Up to ``S = 4 hs`` keys they are
kept (written straight into the array that keeps them): then they are no larger than the feed-forward activation
``[B, T, 4C]`` that every layer keeps anyway. Beyond that, as flash attention does, forward keeps only each score
row's maximum and log-sum-exp (``[B, nh, T, 1]`` each) and backward recomputes the probabilities from q and k,
block by block: one more [T, hs] x [hs, S] product and an exp per score, to avoid keeping the largest activation of
training on long inputs (bert-base at 512 tokens: 12 MiB per sequence and layer). Keeping them where they are small
is faster (measured: benchmarks/RESULTS.md).

Every score row is computed on its own, so the results are bit-for-bit the same whatever the number of threads.
The dropout mask comes in whole, drawn before any block runs (see ``Attention.forward``). Only ever runs on NumPy.

Dimension letters as in ``nn/attention.py``: B batch, nh heads, T queries, S keys, hs head size; lower-case b and
tq are a block's share of B and T.
"""
import contextlib

import numpy as np

from .native import can_set_blas_threads
from .parallel import blas_on_calling_threads, for_each_block, row_dots, scratch

_CHUNK = 1 << 18  # score values per block (1 MiB of float32): a block's scores stay in the cache
_KEEP_PROBABILITIES_UP_TO = 4  # keys per head-size unit up to which forward keeps the probabilities for backward
_BLAS_SPLITS_FROM = 1 << 18  # m * n * k from which OpenBLAS splits one product over its own threads
_ONE_SEQUENCE_SPREAD_FROM = 1 << 22  # one sequence's head products (T * S * hs) this large may use OpenBLAS's threads


class FusedAttention:
    """softmax((q * scale) k^T, masked) v on NumPy arrays, in blocks of batch elements; ``backward`` after it.

    ``keep`` is the boolean keep-mask broadcastable to ``[B, nh, T, S]`` (or None); ``kept`` the dropout mask of the
    probabilities ``[B, nh, T, S]`` (or None), whose survivors are multiplied by ``kept_scale``. With
    ``for_backward`` False (inference) forward keeps nothing for backward.
    """

    def __init__(self, keep, *, scale, kept=None, kept_scale=1.0, for_backward=False):
        self.blocked = None if keep is None else ~keep  # [B or 1, 1, T or 1, S]
        self.scale, self.kept, self.kept_scale, self.for_backward = scale, kept, kept_scale, for_backward
        self.probs = self.row_max = self.log_sum = None

    def forward(self, q, k, v):
        b, nh, t, hs = q.shape
        s = k.shape[2]
        if t == 1 and not self.for_backward and self.kept is None and b * nh * s <= _CHUNK:
            return _one_query(q, k, v, self.blocked, self.scale)  # a decode step's: small, on this thread
        # the scale multiplies q (T * hs values) rather than the scores (T * S)
        qs = q * q.dtype.type(self.scale)  # [B, nh, T, hs]
        kt = np.swapaxes(k, -1, -2)  # [B, nh, S, hs] -> [B, nh, hs, S] (a view)
        # Laid out in memory as q is: q is usually a head-split view of a [B, T, C] projection, and then so is the
        # output, which merge_heads turns back into [B, T, C] as a view instead of a copy
        out = np.empty_like(q, shape=(b, nh, t, v.shape[-1]))
        keep_probs = self.for_backward and s <= _KEEP_PROBABILITIES_UP_TO * hs
        keep_row_stats = self.for_backward and not keep_probs
        probs = np.empty((b, nh, t, s), dtype=q.dtype) if keep_probs else None  # kept for backward
        # or, per score row, the maximum and the log of sum(exp(score - maximum)), [B, nh, T, 1] each (kept apart,
        # not added: for a fully masked row both the maximum and the scores are the dtype's lowest value)
        row_max = np.empty((b, nh, t, 1), dtype=q.dtype) if keep_row_stats else None
        log_sum = np.empty((b, nh, t, 1), dtype=q.dtype) if keep_row_stats else None
        query_chunks = _query_chunks(b, t, s, hs)
        ones = np.ones(s, dtype=q.dtype)  # [S]: row_dots(p, ones) = the row sums

        def block(rows):
            n = rows.stop - rows.start
            for qr in query_chunks:  # slices of the query axis (one, unless the products must be kept small)
                tq = len(range(t)[qr])
                if probs is not None:
                    scores = probs[rows, :, qr]  # softmaxed in place below: the kept probabilities
                else:
                    (scores,) = scratch((n, nh, tq, s), q.dtype, name="attention")
                _masked_scores(qs[rows, :, qr], kt[rows], self.blocked, rows, qr, out=scores)  # [b, nh, tq, S]
                top = _row_max(scores)  # [b, nh, tq, 1]
                scores -= top
                p = np.exp(scores, out=scores)
                total = row_dots(p, ones)[..., None]  # row sums, [b, nh, tq, 1]
                p *= 1 / total  # probabilities, [b, nh, tq, S]
                if row_max is not None:
                    row_max[rows, :, qr], log_sum[rows, :, qr] = top, np.log(total)
                if self.kept is not None:
                    p = self._dropped(p, self.kept[rows, :, qr])
                if tq == t:
                    np.matmul(p, v[rows], out=out[rows])  # [b, nh, T, S] @ [b, nh, S, hs] -> [b, nh, T, hs]
                else:
                    out[rows, :, qr] = p @ v[rows]  # [b, nh, tq, S] @ [b, nh, S, hs] -> [b, nh, tq, hs]

        with _products_on_calling_threads(b, t * s * hs):
            for_each_block(block, b, nh * t * s, block_values=_CHUNK)
        if self.for_backward:
            # q, not the scaled copy qs: the graph holds q anyway (backward applies the scale instead)
            self.q, self.k, self.v = q, k, v
            self.probs, self.row_max, self.log_sum = probs, row_max, log_sum
        return out

    def backward(self, gout):
        q, k, v = self.q, self.k, self.v
        b, nh, t, _ = q.shape
        s = k.shape[2]
        # each in its input's memory layout (see forward's ``out``): the gradients of head-split views reach the
        # [B, T, C] projections as views
        gq, gk, gv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
        query_chunks = _query_chunks(b, t, s, q.shape[3])

        def block(rows):
            n = rows.stop - rows.start
            for i, qr in enumerate(query_chunks):
                tq = len(range(t)[qr])
                p, gp = scratch((n, nh, tq, s), q.dtype, name="attention", count=2)
                if self.probs is not None:
                    p = self.probs[rows, :, qr]  # [b, nh, tq, S]
                else:
                    p = self._probabilities(rows, qr, p)
                pd = p if self.kept is None else self._dropped(p, self.kept[rows, :, qr])
                g = gout[rows, :, qr]  # [b, nh, tq, hs]
                # keys and values collect their gradients from every query chunk
                gv_part = np.swapaxes(pd, -1, -2) @ g  # [b, nh, S, tq] @ [b, nh, tq, hs] -> [b, nh, S, hs]
                _collect(gv, rows, gv_part, first=i == 0)
                np.matmul(g, np.swapaxes(v[rows], -1, -2), out=gp)  # [b, nh, tq, hs] @ [b, nh, hs, S]
                if self.kept is not None:
                    gp *= self.kept[rows, :, qr]
                    gp *= gp.dtype.type(self.kept_scale)
                # softmax backward: d score_j = p_j (dp_j - sum_k dp_k p_k)
                gp -= row_dots(gp, p)[..., None]
                gp *= p
                if self.blocked is not None:  # masked scores were replaced by a constant: no gradient
                    _fill_blocked(gp, self.blocked, rows, qr, 0)
                # scores were (scale q) k^T: the scale multiplies both gradients, applied to the products
                # ([tq, hs] and [S, hs]) rather than to gp ([tq, S]): fewer values
                gq_part = np.matmul(gp, k[rows], out=gq[rows, :, qr])  # [b, nh, tq, S] @ [b, nh, S, hs]
                gq_part *= self.scale
                gk_part = np.swapaxes(gp, -1, -2) @ q[rows, :, qr]  # [b, nh, S, tq] @ [b, nh, tq, hs]
                gk_part *= self.scale
                _collect(gk, rows, gk_part, first=i == 0)  # [b, nh, S, hs]

        with _products_on_calling_threads(b, t * s * q.shape[3]):
            for_each_block(block, b, nh * t * s, block_values=_CHUNK)
        return gq, gk, gv

    def _probabilities(self, rows, qr, out):
        """The forward pass's probabilities for batch rows ``rows`` and queries ``qr``, recomputed into ``out``:
        exp(score - row maximum - log-sum-exp), the scores made again from q and k."""
        q = self.q[rows, :, qr]
        _masked_scores(q * q.dtype.type(self.scale), np.swapaxes(self.k[rows], -1, -2), self.blocked, rows, qr,
                       out=out)  # [b, nh, tq, S]
        out -= self.row_max[rows, :, qr]
        out -= self.log_sum[rows, :, qr]
        return np.exp(out, out=out)

    def _dropped(self, p, kept):
        """Inverted dropout of the probabilities: 0 where dropped, p * kept_scale where kept (a scratch array, not
        ``p``: forward's ``p`` may be the kept probabilities)."""
        (dropped,) = scratch(p.shape, p.dtype, name="attention_dropout")
        np.multiply(p, kept, out=dropped)
        dropped *= p.dtype.type(self.kept_scale)
        return dropped


def _one_query(q, k, v, blocked, scale):
    """Inference with one query per row and head (a decode step): q ``[B, nh, 1, hs]`` -> ``[B, nh, 1, hs]``.

    The scores are few (``[B, nh, 1, S]``), so the blocks, threads and scratch buffers of the general form would
    cost more than the arithmetic; here it is a handful of NumPy calls on this thread. The same arithmetic as the
    blocks' (scaled queries, the row maximum subtracted, probabilities times the reciprocal of their sum), except
    that the row sums are NumPy's ``sum``.
    """
    scores = (q * q.dtype.type(scale)) @ np.swapaxes(k, -1, -2)  # [B, nh, 1, hs] @ [B, nh, hs, S] -> [B, nh, 1, S]
    if blocked is not None and blocked.any():
        np.copyto(scores, np.finfo(scores.dtype).min, where=blocked)  # finite, as in _masked_scores
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores, out=scores)
    p *= 1 / p.sum(axis=-1, keepdims=True)  # [B, nh, 1, S]
    # laid out as q (see FusedAttention.forward)
    return np.matmul(p, v, out=np.empty_like(q, shape=q.shape[:3] + v.shape[-1:]))  # [B, nh, 1, S] @ [B, nh, S, hs]


def _query_chunks(batch, t, s, hs):
    """The slices of the query axis that each block of batch elements goes through, one after another.

    Each product of a block is [tq, hs] x [hs, S] or alike. OpenBLAS splits a product over its own threads from
    m * n * k = 65536 * GEMM_MULTITHREAD_THRESHOLD (4 by default, interface/gemm.c); if our threads ran such
    products side by side, both kinds of thread would share the cores and wait on each other (measured to be much
    slower: benchmarks/RESULTS.md). Where OpenBLAS can be held to one thread while the blocks run
    (``native.blas_one_thread``, see ``_products_on_calling_threads``), the whole queries go at once. Elsewhere they
    are cut into chunks whose products stay below that size: more, smaller products, which cost time too. One
    sequence is one block, on this thread, whose whole products OpenBLAS spreads instead. The choice depends on the
    shapes and the BLAS only, never on the number of threads: the results must not either.
    """
    if batch == 1 or can_set_blas_threads():
        return [slice(0, t)]
    chunks = -(-t * s * hs // (_BLAS_SPLITS_FROM - 1))  # ceil: enough chunks for every product to stay small
    size = -(-t // chunks)
    return [slice(i, min(i + size, t)) for i in range(0, t, size)]


def _products_on_calling_threads(batch, product):
    """While the blocks of a batch run on our threads, each OpenBLAS product stays on the thread that calls it. One
    sequence is one block, on this thread: OpenBLAS may spread its products (``product`` multiply-adds a head) when
    they are large; smaller ones stay on this thread too, where waking OpenBLAS's thread costs more than it saves
    (and on a busy machine waits for a core: a 128-token encoder layer's attention took ~20 ms so, ~1 ms without)."""
    one_thread = batch > 1 or product < _ONE_SEQUENCE_SPREAD_FROM
    return blas_on_calling_threads() if one_thread else contextlib.nullcontext()


def _masked_scores(qs, kt, blocked, rows, queries, *, out):
    """``out = qs @ kt`` (scaled queries ``[b, nh, tq, hs]``, keys ``[b, nh, hs, S]``) with the blocked scores of
    batch rows ``rows`` and queries ``queries`` replaced by the dtype's lowest value: what forward softmaxes and
    backward rebuilds."""
    np.matmul(qs, kt, out=out)  # [b, nh, tq, hs] @ [b, nh, hs, S] -> [b, nh, tq, S]
    if blocked is not None:
        # Why a finite fill instead of -inf: a fully masked row softmaxes to a uniform row, not NaN.
        _fill_blocked(out, blocked, rows, queries, np.finfo(out.dtype).min)
    return out


def _fill_blocked(scores, blocked, rows, queries, value):
    """Write ``value`` where the mask blocks a score of these rows and queries; a block of batch elements without
    padding (most of them, in length-bucketed batches) skips the pass over its scores."""
    part = _part_of(blocked, rows, queries)
    if part.any():
        np.copyto(scores, value, where=part)


def _row_max(scores):
    """The maximum of each score row, ``[..., S] -> [..., 1]``. Why argmax and a gather instead of ``max``: NumPy's
    max along a short last axis (S = 128) runs at a fraction of the speed of its argmax there (measured:
    benchmarks/RESULTS.md); the value found is the same."""
    return np.take_along_axis(scores, scores.argmax(axis=-1)[..., None], axis=-1)


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
