"""Attention's fused CPU form: the same values as ``nn.attention.Attention``'s plain form, computed in blocks.

The plain form makes the whole ``[B, nh, T, S]`` score array, then a few more of its size (the softmax's
temporaries, the dropped probabilities), each pass going through memory. Here the scores are made, softmaxed in
place and consumed one block at a time while they are still in the CPU cache: a block is a few batch elements
(the whole batch of a one-token decode step), or, for long sequences, some heads of one element, or some of a
head's queries (``_blocks``: about ``_CHUNK`` scores a block). The blocks run on every core
(``parallel.for_each_task``), each OpenBLAS product on the thread that calls it. A block works only on the keys its
rows may see: with a padding mask, the keys past the end of the longest of its sources are left out (their
probabilities are 0), so a batch padded to its longest source spends nothing on the padding's keys (torch's
attention computes them).

What backward needs of the probabilities ``[B, nh, T, S]`` depends on their size. Up to ``S = 2 hs`` keys they are
kept (each block softmaxes straight into an array of its own, over its keys): then they are no larger than half
the feed-forward activation ``[B, T, 4C]`` that every layer keeps anyway. Beyond that, as flash attention does,
forward keeps only each score row's maximum and log-sum-exp (``[B, nh, T, 1]`` each) and backward recomputes the
probabilities from q and k, block by block: one more [T, hs] x [hs, S] product and an exp per score, to avoid
keeping the largest activation of training (bert-base at 512 tokens: 12 MiB per sequence and layer). Keeping them
where they are small is faster; where they are as large as the feed-forward activation, memory won: a MiniLM
bert2bert's training step (16 x 128 tokens, hs 32) needs 66 MiB less at its peak without them, for 4 ms more
backward per encoder layer (benchmarks/RESULTS.md).

Every score row is computed on its own, so the results are bit-for-bit the same whatever the number of threads
(the blocks depend on the shapes, never on the threads).
The dropout mask comes in whole, drawn before any block runs (see ``Attention.forward``). Only ever runs on NumPy.

Dimension letters as in ``nn/attention.py``: B batch, nh heads, T queries, S keys, hs head size; lower-case b, h,
tq and sk are a block's share of B, nh, T and S.
"""
import contextlib
from typing import NamedTuple

import numpy as np

from .native import can_set_blas_threads
from .parallel import blas_on_calling_threads, for_each_task, row_dots, scratch

_CHUNK = 1 << 18  # score values per block (1 MiB of float32): a block's scores stay in the cache
_FEW_QUERIES = 16  # inference with up to this many queries a row and head (and few scores) takes _few_queries
_KEEP_PROBABILITIES_UP_TO = 2  # keys per head-size unit up to which forward keeps the probabilities for backward
_BLAS_SPLITS_FROM = 1 << 18  # m * n * k from which OpenBLAS splits one product over its own threads
_ONE_SEQUENCE_SPREAD_FROM = 1 << 22  # one sequence's head products (T * S * hs) this large may use OpenBLAS's threads


class FusedAttention:
    """softmax((q * scale) k^T, masked) v on NumPy arrays, in blocks (``_blocks``); ``backward`` after it.

    ``keep`` is the boolean keep-mask broadcastable to ``[B, nh, T, S]`` (or None); ``kept`` the dropout mask of the
    probabilities ``[B, nh, T, S]`` (or None), whose survivors are multiplied by ``kept_scale``. With
    ``for_backward`` False (inference) forward keeps nothing for backward. ``padded_queries_unused`` (inference,
    self-attention under a padding mask): the queries at the padding's positions are not needed, and a block
    leaves out those past its keys (their outputs are zeros), as it leaves out the padding's keys.
    """

    def __init__(self, keep, *, scale, kept=None, kept_scale=1.0, for_backward=False, padded_queries_unused=False):
        self.blocked = None if keep is None or keep.all() else ~keep  # [B or 1, 1, T or 1, S]; None: nothing blocked
        self.scale, self.kept, self.kept_scale, self.for_backward = scale, kept, kept_scale, for_backward
        self.padded_queries_unused = padded_queries_unused and not for_backward
        self.probs = self.row_max = self.log_sum = None

    def forward(self, q, k, v):
        b, nh, t, hs = q.shape
        s = k.shape[2]
        if t <= _FEW_QUERIES and not self.for_backward and self.kept is None and b * nh * t * s <= _CHUNK:
            return _few_queries(q, k, v, self.blocked, self.scale)  # a decode step's: small, on this thread
        # the scale multiplies q (T * hs values) rather than the scores (T * S)
        qs = q * q.dtype.type(self.scale)  # [B, nh, T, hs]
        kt = np.swapaxes(k, -1, -2)  # [B, nh, S, hs] -> [B, nh, hs, S] (a view)
        # Laid out in memory as q is: q is usually a head-split view of a [B, T, C] projection, and then so is the
        # output, which merge_heads turns back into [B, T, C] as a view instead of a copy
        out = np.empty_like(q, shape=(b, nh, t, v.shape[-1]))
        blocks, query_chunks = _blocks(b, nh, t, s, hs, self.blocked)
        keep_probs = self.for_backward and s <= _KEEP_PROBABILITIES_UP_TO * hs
        # kept for backward: each block's probabilities over its keys (a list, a block's array at its index), or,
        # per score row, the maximum and the log of sum(exp(score - maximum)), [B, nh, T, 1] each (kept apart, not
        # added: for a fully masked row both the maximum and the scores are the dtype's lowest value)
        probs = [None] * len(blocks) if keep_probs else None
        keep_row_stats = self.for_backward and not keep_probs
        row_max = np.empty((b, nh, t, 1), dtype=q.dtype) if keep_row_stats else None
        log_sum = np.empty((b, nh, t, 1), dtype=q.dtype) if keep_row_stats else None

        def block(i):
            rows, heads, keys = blocks[i]
            n, h, sk = rows.stop - rows.start, heads.stop - heads.start, keys.stop - keys.start
            ones = np.ones(sk, dtype=q.dtype)  # [sk]: row_dots(p, ones) = the row sums
            if probs is not None:
                probs[i] = np.empty((n, h, t, sk), dtype=q.dtype)
            queries = slice(0, t)
            if self.padded_queries_unused and t == s:  # the queries at the positions of the block's keys
                queries = keys
                out[rows, heads, :keys.start] = 0
                out[rows, heads, keys.stop:] = 0
            for qr in query_chunks:  # slices of the query axis (one, unless the scores must be kept small)
                qr = slice(max(qr.start, queries.start), min(qr.stop, queries.stop))
                tq = qr.stop - qr.start
                if tq <= 0:
                    continue
                if probs is not None:
                    scores = probs[i][:, :, qr]  # softmaxed in place below: the kept probabilities
                else:
                    (scores,) = scratch((n, h, tq, sk), q.dtype, name="attention")
                _masked_scores(qs[rows, heads, qr], kt[rows, heads, :, keys], self.blocked, rows, qr, keys,
                               out=scores)  # [b, h, tq, sk]
                top = _row_max(scores)  # [b, h, tq, 1]
                scores -= top
                p = np.exp(scores, out=scores)
                total = row_dots(p, ones)[..., None]  # row sums, [b, h, tq, 1]
                p *= 1 / total  # probabilities, [b, h, tq, sk]
                if row_max is not None:
                    row_max[rows, heads, qr], log_sum[rows, heads, qr] = top, np.log(total)
                if self.kept is not None:
                    p = self._dropped(p, self.kept[rows, heads, qr, keys])
                # [b, h, tq, sk] @ [b, h, sk, hs] -> [b, h, tq, hs]
                np.matmul(p, v[rows, heads, keys], out=out[rows, heads, qr])

        with _products_on_calling_threads(len(blocks), t * s * hs):
            for_each_task(block, len(blocks))
        if self.for_backward:
            # q, not the scaled copy qs: the graph holds q anyway (backward applies the scale instead)
            self.q, self.k, self.v = q, k, v
            self.probs, self.row_max, self.log_sum = probs, row_max, log_sum
            self.blocks, self.query_chunks = blocks, query_chunks  # backward goes through the same blocks
        return out

    def backward(self, gout):
        q, k, v = self.q, self.k, self.v
        t, hs, s = q.shape[2], q.shape[3], k.shape[2]
        # each in its input's memory layout (see forward's ``out``): the gradients of head-split views reach the
        # [B, T, C] projections as views
        gq, gk, gv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
        blocks, query_chunks = self.blocks, self.query_chunks  # forward's (self.probs[i] is block i's)

        def block(i):
            rows, heads, keys = blocks[i]
            n, h, sk = rows.stop - rows.start, heads.stop - heads.start, keys.stop - keys.start
            for j, qr in enumerate(query_chunks):
                tq = len(range(t)[qr])
                p, gp = scratch((n, h, tq, sk), q.dtype, name="attention", count=2)
                if self.probs is not None:
                    p = self.probs[i][:, :, qr]  # [b, h, tq, sk]
                else:
                    p = self._probabilities(rows, heads, qr, keys, p)
                pd = p if self.kept is None else self._dropped(p, self.kept[rows, heads, qr, keys])
                g = gout[rows, heads, qr]  # [b, h, tq, hs]
                # keys and values collect their gradients from every query chunk
                gv_part = np.swapaxes(pd, -1, -2) @ g  # [b, h, sk, tq] @ [b, h, tq, hs] -> [b, h, sk, hs]
                _collect(gv[rows, heads, keys], gv_part, first=j == 0)
                np.matmul(g, np.swapaxes(v[rows, heads, keys], -1, -2), out=gp)  # [b, h, tq, hs] @ [b, h, hs, sk]
                if self.kept is not None:
                    gp *= self.kept[rows, heads, qr, keys]
                    gp *= gp.dtype.type(self.kept_scale)
                # softmax backward: d score_j = p_j (dp_j - sum_k dp_k p_k)
                gp -= row_dots(gp, p)[..., None]
                gp *= p
                if self.blocked is not None:  # masked scores were replaced by a constant: no gradient
                    _fill_blocked(gp, self.blocked, rows, qr, keys, 0)
                # scores were (scale q) k^T: the scale multiplies both gradients, applied to the products
                # ([tq, hs] and [sk, hs]) rather than to gp ([tq, sk]): fewer values
                gq_part = np.matmul(gp, k[rows, heads, keys], out=gq[rows, heads, qr])  # [b, h, tq, sk] @ [.., sk, hs]
                gq_part *= self.scale
                gk_part = np.swapaxes(gp, -1, -2) @ q[rows, heads, qr]  # [b, h, sk, tq] @ [b, h, tq, hs]
                gk_part *= self.scale
                _collect(gk[rows, heads, keys], gk_part, first=j == 0)  # [b, h, sk, hs]
            # keys left out of the block had probability 0 for every query: no gradient
            for g in (gk, gv):
                g[rows, heads, :keys.start] = 0
                g[rows, heads, keys.stop:] = 0

        with _products_on_calling_threads(len(blocks), t * s * hs):
            for_each_task(block, len(blocks))
        return gq, gk, gv

    def _probabilities(self, rows, heads, qr, keys, out):
        """The forward pass's probabilities for one block's queries ``qr`` over its ``keys``, recomputed into
        ``out``: exp(score - row maximum - log-sum-exp), the scores made again from q and k."""
        q = self.q[rows, heads, qr]
        _masked_scores(q * q.dtype.type(self.scale), np.swapaxes(self.k[rows, heads, keys], -1, -2), self.blocked,
                       rows, qr, keys, out=out)  # [b, h, tq, sk]
        out -= self.row_max[rows, heads, qr]
        out -= self.log_sum[rows, heads, qr]
        return np.exp(out, out=out)

    def _dropped(self, p, kept):
        """Inverted dropout of the probabilities: 0 where dropped, p * kept_scale where kept (a scratch array, not
        ``p``: forward's ``p`` may be the kept probabilities)."""
        (dropped,) = scratch(p.shape, p.dtype, name="attention_dropout")
        np.multiply(p, kept, out=dropped)
        dropped *= p.dtype.type(self.kept_scale)
        return dropped


def _few_queries(q, k, v, blocked, scale):
    """Inference with a few queries per row and head (a decode step: one, or the rows of a source's beams taken
    together, nn/source_rows.py): q ``[B, nh, T, hs]`` -> ``[B, nh, T, hs]``.

    The scores are few (``[B, nh, T, S]``), so the blocks, threads and scratch buffers of the general form would
    cost more than the arithmetic; here it is a handful of NumPy calls on this thread. The same arithmetic as the
    blocks' (scaled queries, the row maximum subtracted, probabilities times the reciprocal of their sum), except
    that the row sums are NumPy's ``sum``.
    """
    scores = (q * q.dtype.type(scale)) @ np.swapaxes(k, -1, -2)  # [B, nh, T, hs] @ [B, nh, hs, S] -> [B, nh, T, S]
    if blocked is not None:
        np.copyto(scores, np.finfo(scores.dtype).min, where=blocked)  # finite, as in _masked_scores
    # the ufuncs' own reductions: what .max() and .sum() call, without their Python wrappers (a step makes 24 of these)
    scores -= np.maximum.reduce(scores, axis=-1, keepdims=True)
    p = np.exp(scores, out=scores)
    p *= 1 / np.add.reduce(p, axis=-1, keepdims=True)  # [B, nh, T, S]
    # laid out as q (see FusedAttention.forward)
    return np.matmul(p, v, out=np.empty_like(q, shape=q.shape[:3] + v.shape[-1:]))  # [B, nh, T, S] @ [B, nh, S, hs]


def _blocks(batch, nh, t, s, hs, blocked):
    """The blocks the work is cut into, ``Block(rows, heads, keys)`` slices, and the slices of the query axis that
    each block goes through, one after another.

    A block's scores ``[b, h, tq, sk]`` are to stay in the CPU cache: about ``_CHUNK`` values. Short sequences make
    blocks of whole batch elements, as many as fit (the whole batch of a decode step); a batch element with more
    scores than that is cut by heads, and a head with more than that by queries. The cut depends on the shapes
    (and the BLAS, see ``_query_chunks``) only, never on the number of threads: neither do the results.

    A block's keys are those some query of its rows may see (``_key_spans``): the others get probability 0, so
    skipping them leaves the values as they are (but for the rounding of sums taken over fewer terms) and saves
    their work: a batch padded to its longest source spends nothing on the padding's keys.
    """
    per_element = nh * t * s
    if per_element <= _CHUNK:  # whole batch elements, as many as fit
        n = _CHUNK // per_element
        cuts = [(slice(i, min(i + n, batch)), slice(0, nh)) for i in range(0, batch, n)]
    else:  # one batch element, as many heads as fit (at least one)
        h = max(1, min(nh, _CHUNK // (t * s)))
        cuts = [(slice(i, i + 1), slice(j, min(j + h, nh))) for i in range(batch) for j in range(0, nh, h)]
    spans = _key_spans(blocked, batch, s)
    blocks = [Block(rows, heads, _keys_of(spans, rows, s)) for rows, heads in cuts]
    return blocks, _query_chunks(len(blocks), t, s, hs)


class Block(NamedTuple):
    """One block of attention's work: batch rows, heads and keys (slices)."""

    rows: slice
    heads: slice
    keys: slice


def _key_spans(blocked, batch, s):
    """For a mask of keys only (``[B or 1, 1, 1, S]``, padding): per batch element, the first key and one past the
    last that its queries may see, ``(first [B], stop [B])``; None for other masks. An element whose keys are all
    blocked spans every key: its queries attend uniformly to all of them, as in the plain form."""
    if blocked is None or blocked.shape[2] != 1:
        return None
    seen = ~blocked[:, 0, 0, :]  # [B or 1, S]
    first = np.where(seen.any(axis=-1), seen.argmax(axis=-1), 0)  # [B or 1]
    stop = np.where(seen.any(axis=-1), s - seen[:, ::-1].argmax(axis=-1), s)
    return np.broadcast_to(first, (batch,)), np.broadcast_to(stop, (batch,))


def _keys_of(spans, rows, s):
    """The keys a block of batch ``rows`` works on: every key some row's queries may see."""
    if spans is None:
        return slice(0, s)
    first, stop = spans
    return slice(int(first[rows].min()), int(stop[rows].max()))


def _query_chunks(blocks, t, s, hs):
    """The slices of the query axis that each block goes through, one after another.

    A head with more than ``_CHUNK`` scores goes through its queries in chunks whose scores fit. Besides, each
    product of a block is [tq, hs] x [hs, S] or alike. OpenBLAS splits a product over its own threads from m * n * k
    = 65536 * GEMM_MULTITHREAD_THRESHOLD (4 by default, interface/gemm.c); if our threads ran such products side by
    side, both kinds of thread would share the cores and wait on each other (measured to be much slower:
    benchmarks/RESULTS.md). Where OpenBLAS can be held to one thread while the blocks run
    (``native.blas_one_thread``, see ``_products_on_calling_threads``), that is all. Elsewhere the queries are cut
    further, into chunks whose products stay below that size: more, smaller products, which cost time too. A
    single block runs on this thread, whose whole products OpenBLAS spreads instead.
    """
    size = t if t * s <= _CHUNK else max(1, _CHUNK // s)
    if blocks > 1 and not can_set_blas_threads():
        chunks = -(-t * s * hs // (_BLAS_SPLITS_FROM - 1))  # ceil: enough chunks for every product to stay small
        size = min(size, -(-t // chunks))
    return [slice(i, min(i + size, t)) for i in range(0, t, size)]


def _products_on_calling_threads(blocks, product):
    """While several blocks run on our threads, each OpenBLAS product stays on the thread that calls it. A single
    block runs on this thread: OpenBLAS may spread its products (``product`` multiply-adds a head) when they are
    large; smaller ones stay on this thread too, where waking OpenBLAS's thread costs more than it saves (and on a
    busy machine waits for a core: a 128-token encoder layer's attention took ~20 ms so, ~1 ms without)."""
    one_thread = blocks > 1 or product < _ONE_SEQUENCE_SPREAD_FROM
    return blas_on_calling_threads() if one_thread else contextlib.nullcontext()


def _masked_scores(qs, kt, blocked, rows, queries, keys, *, out):
    """``out = qs @ kt`` (scaled queries ``[b, h, tq, hs]``, keys ``[b, h, hs, sk]``) with the blocked scores of
    batch rows ``rows``, queries ``queries`` and keys ``keys`` replaced by the dtype's lowest value: what forward
    softmaxes and backward rebuilds."""
    np.matmul(qs, kt, out=out)  # [b, h, tq, hs] @ [b, h, hs, sk] -> [b, h, tq, sk]
    if blocked is not None:
        # Why a finite fill instead of -inf: a fully masked row softmaxes to a uniform row, not NaN.
        _fill_blocked(out, blocked, rows, queries, keys, np.finfo(out.dtype).min)
    return out


def _fill_blocked(scores, blocked, rows, queries, keys, value):
    """Write ``value`` where the mask blocks a score of these rows, queries and keys; a block without padding among
    its keys (most of them: see ``_key_spans``) skips the pass over its scores."""
    part = _part_of(blocked, rows, queries)[..., keys]
    if part.any():
        np.copyto(scores, value, where=part)


def _row_max(scores):
    """The maximum of each score row, ``[..., S] -> [..., 1]``. Why argmax and a gather instead of ``max``: NumPy's
    max along a short last axis (S = 128) runs at a fraction of the speed of its argmax there (measured:
    benchmarks/RESULTS.md); the value found is the same."""
    return np.take_along_axis(scores, scores.argmax(axis=-1)[..., None], axis=-1)


def _collect(total, part, *, first):
    """``total[...] = part`` (a block's view of a gradient) for the first query chunk, ``+= part`` for the others."""
    if first:
        total[...] = part
    else:
        total += part


def _part_of(mask, rows, queries):
    """The part of a mask ``[B or 1, 1, T or 1, S]`` for batch rows ``rows`` and query positions ``queries``."""
    mask = mask if mask.shape[0] == 1 else mask[rows]
    return mask if mask.shape[2] == 1 else mask[:, :, queries]
