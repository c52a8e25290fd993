"""Multi-head scaled dot-product attention and the masks that say who may attend to whom.

Masks are boolean *keep* arrays, True where a query may look at a key, shaped to broadcast against the scores
``[B, nh, T, S]``: a padding mask is ``[B, 1, 1, S]``, a causal mask ``[1, 1, T, S]``. They are combined with ``&``
and applied inside ``Attention``, which fills left-out scores with the dtype's lowest finite value rather than -inf.

Dimension letters: B batch, T query length, S key length, C channels, nh heads, hs head size (C = nh * hs).
The projections that produce q, k and v differ between model families (BERT's separate query/key/value, GPT-2's
fused ``c_attn``), so they live with each model; what is common lives here.
"""
import math

import numpy as np

from ..core.autograd import Function
from ..core.backend import get_array_module
from ..core.errors import InputError
from ..core.ops import matmul, transpose
from ..fast import cpu as fast_cpu
from ..fast import cuda_enabled, cuda_forms
from ..fast.cpu.attention import FusedAttention
from .functional import dropout_scale, masked_softmax
from .source_rows import group_rows, rows_per_source, ungroup_probabilities, ungroup_rows


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


class SplitHeads(Function):
    """``[B, T, C] -> [B, nh, T, hs]``, a view: a reshape and a transpose as one op (a decode step splits five
    projections a layer, and each op called costs Python time)."""

    def __init__(self, num_heads):
        self.num_heads = num_heads

    def forward(self, x):
        b, t, c = x.shape
        return x.reshape(b, t, self.num_heads, c // self.num_heads).transpose(0, 2, 1, 3)  # -> [B, nh, T, hs]

    def backward(self, gy):
        b, nh, t, hs = gy.shape
        return gy.transpose(0, 2, 1, 3).reshape(b, t, nh * hs)  # [B, nh, T, hs] -> [B, T, C]


class MergeHeads(Function):
    """``[B, nh, T, hs] -> [B, T, C]``: SplitHeads undone (a view when the heads lie as a split [B, T, C])."""

    def forward(self, x):
        b, self.nh, t, hs = x.shape
        return x.transpose(0, 2, 1, 3).reshape(b, t, self.nh * hs)  # -> [B, T, nh, hs] -> [B, T, C]

    def backward(self, gy):
        b, t, c = gy.shape
        return gy.reshape(b, t, self.nh, c // self.nh).transpose(0, 2, 1, 3)  # [B, T, C] -> [B, nh, T, hs]


def split_heads(x, num_heads):
    """``[B, T, C] -> [B, nh, T, hs]``."""
    return SplitHeads(num_heads)(x)


def merge_heads(x):
    """``[B, nh, T, hs] -> [B, T, C]``."""
    return MergeHeads()(x)


class Attention(Function):
    """softmax((q * scale) k^T, masked) v, with dropout of the probabilities (BERT's, in training).

    q ``[B, nh, T, hs]``, k and v ``[B, nh, S, hs]`` -> ``[B, nh, T, hs]``; scale 1/sqrt(hs) unless given. The
    ``xp`` math below is the definition, and what CuPy runs, its softmax and the softmax's backward one kernel each
    (``fast/cuda/eager.py``) where ``cuda_enabled``. On NumPy the work goes to the fused CPU form,
    ``fast/cpu/attention.FusedAttention`` (blocks of batch elements on every core, the scores made and consumed
    while in the CPU cache, the probabilities kept or recomputed for backward), which computes the same values;
    backward takes the form that forward took.

    ``probabilities_to``: a list (``record.Records.probabilities``) to append the probabilities ``[B, nh, T, S]``
    to, as they multiplied v (after the mask and the dropout), or None. The fused form does not keep them in
    inference, so for a recorded call they are computed once more, the plain way: recording costs only when on.

    ``padded_queries_unused``: a promise that nothing reads the outputs at the padding's positions (self-attention
    over packed rows, nn/packing.py); the fused form then leaves those queries out (zeros), the plain form does not.
    """

    def __init__(self, keep=None, *, scale=None, dropout_p=0.0, rng=None, probabilities_to=None,
                 padded_queries_unused=False):
        self.keep, self.scale, self.dropout_p, self.rng = keep, scale, dropout_p, rng
        self.probabilities_to, self.padded_queries_unused = probabilities_to, padded_queries_unused
        self.fused = None  # the fused form, when forward handed the work to it

    def forward(self, q, k, v):
        xp = get_array_module(q)
        b, nh, t, hs = q.shape
        s = k.shape[2]
        if self.scale is None:
            self.scale = 1.0 / math.sqrt(hs)
        kept_scale = dropout_scale(self.dropout_p)
        # The dropout mask is drawn here, whole, before either form runs: the fused form works in blocks on several
        # threads, and the order of the random draws must not depend on which thread runs first (nor on the form).
        # Kept as booleans (1 byte a value).
        kept = None
        if self.dropout_p != 0 and cuda_enabled(xp, q.dtype):  # made on the device from one host-drawn seed
            kept = cuda_forms().dropout_keep(q, (b, nh, t, s), self.dropout_p, self.rng)
        elif self.dropout_p != 0:
            kept = xp.asarray(self.rng.random((b, nh, t, s), dtype=np.float32) >= self.dropout_p)
        if fast_cpu.enabled(xp):
            self.fused = FusedAttention(self.keep, scale=self.scale, kept=kept, kept_scale=kept_scale,
                                        for_backward=self.records, padded_queries_unused=self.padded_queries_unused)
            if self.probabilities_to is not None:
                self.probabilities_to.append(_dropped(self._probabilities(q, k), kept, kept_scale))
            return self.fused.forward(q, k, v)
        p = self._probabilities(q, k)  # [B, nh, T, S]
        pd = _dropped(p, kept, kept_scale)
        # Laid out in memory as q is: q is usually a head-split view of a [B, T, C] projection, and then so is the
        # output, which merge_heads turns back into [B, T, C] as a view instead of a copy
        out = xp.matmul(pd, v, out=xp.empty_like(q, shape=(b, nh, t, v.shape[-1])))  # [B, nh, T, S] @ [B, nh, S, hs]
        if self.records:
            self.saved = q, k, v, p, kept
        if self.probabilities_to is not None:
            self.probabilities_to.append(pd)
        return out

    def _probabilities(self, q, k):
        """softmax((q * scale) k^T, masked): ``[B, nh, T, S]``."""
        xp = get_array_module(q)
        scores = (q * q.dtype.type(self.scale)) @ xp.swapaxes(k, -1, -2)  # [B, nh, T, hs] @ [B, nh, hs, S]
        if cuda_enabled(xp, scores.dtype) and cuda_forms().fits_softmax(scores):  # mask, maximum, exp, sums at once
            return cuda_forms().masked_softmax(scores, self.keep)
        if self.keep is not None:
            # Why the lowest finite value, not -inf: a fully masked row (a padded query) softmaxes to a uniform
            # row instead of exp(-inf - -inf) = NaN
            scores = xp.where(self.keep, scores, scores.dtype.type(xp.finfo(scores.dtype).min))
        e = xp.exp(scores - scores.max(axis=-1, keepdims=True))  # the largest exponent is 0: no overflow
        return e / e.sum(axis=-1, keepdims=True)

    def backward(self, gout):
        if self.fused is not None:
            return self.fused.backward(gout)
        xp = get_array_module(gout)
        q, k, v, p, kept = self.saved
        kept_scale = p.dtype.type(dropout_scale(self.dropout_p))
        scale = q.dtype.type(self.scale)
        # each gradient in its input's memory layout (see forward's ``out``): the gradients of head-split views
        # reach the [B, T, C] projections as views
        pd = _dropped(p, kept, kept_scale)
        gv = xp.matmul(xp.swapaxes(pd, -1, -2), gout, out=xp.empty_like(v))  # [B, nh, S, T] @ [B, nh, T, hs]
        gp = gout @ xp.swapaxes(v, -1, -2)  # [B, nh, T, hs] @ [B, nh, hs, S] -> [B, nh, T, S]
        if kept is not None:
            gp = gp * kept * kept_scale  # through the dropout
        if cuda_enabled(xp, gp.dtype) and cuda_forms().fits_softmax(gp):  # the same, in one kernel
            gs = cuda_forms().softmax_backward(gp, p, self.keep)
        else:
            gs = p * (gp - (gp * p).sum(axis=-1, keepdims=True))  # softmax backward: p_j (dp_j - sum_k dp_k p_k)
            if self.keep is not None:
                gs = xp.where(self.keep, gs, gs.dtype.type(0))  # masked scores were a constant: no gradient
        gq = xp.multiply(gs @ k, scale, out=xp.empty_like(q))  # [B, nh, T, S] @ [B, nh, S, hs] -> [B, nh, T, hs]
        gk = xp.multiply(xp.swapaxes(gs, -1, -2) @ q, scale, out=xp.empty_like(k))  # [B, nh, S, T] @ [B, nh, T, hs]
        return gq, gk, gv


def _dropped(p, kept, kept_scale):
    """Inverted dropout of the probabilities: the kept ones scaled by ``kept_scale``, the others 0."""
    return p if kept is None else p * kept * p.dtype.type(kept_scale)


def scaled_dot_product_attention(q, k, v, keep, *, scale=None, dropout_p=0.0, rng=None, probabilities_to=None,
                                 padded_queries_unused=False):
    """softmax(q k^T * scale, masked) v for q ``[B, nh, T, hs]``, k and v ``[B, nh, S, hs]``; scale 1/sqrt(hs)
    unless given; ``probabilities_to`` a list to append the probabilities to, or None; ``padded_queries_unused``
    see ``Attention``.

    k and v may also hold one row per *source* for ``c`` adjacent query rows each: q ``[B*c, nh, T, hs]`` over k,
    v ``[B, nh, S, hs]`` and a padding mask ``keep`` ``[B, 1, 1, S]`` (cross-attention in beam search and in
    sampling several sequences, whose cache keeps the encoder side once per source: cache.py). Then each source's
    rows attend as one block of ``c*T`` queries (source_rows.py) and the result, and any recorded probabilities,
    come back per row: ``[B*c, nh, T, hs]`` and ``[B*c, nh, T, S]``.
    """
    copies = rows_per_source(q, k)
    if copies == 1:
        return Attention(keep, scale=scale, dropout_p=dropout_p, rng=rng, probabilities_to=probabilities_to,
                         padded_queries_unused=padded_queries_unused)(q, k, v)
    if keep is not None and keep.shape[2] != 1:
        # Why refused: a mask per query (causal) would have to be grouped too; rows sharing keys only come from
        # cross-attention, whose mask is the sources' padding
        raise InputError(f"attention over shared keys takes a padding mask [B, 1, 1, S], got {tuple(keep.shape)}")
    recorded = None if probabilities_to is None else []
    attention = Attention(keep, scale=scale, dropout_p=dropout_p, rng=rng, probabilities_to=recorded)
    y = attention(group_rows(q, copies), k, v)  # [B*c, nh, T, hs] -> [B, nh, c*T, hs] -> [B, nh, c*T, hs]
    if recorded is not None:
        probabilities_to.extend(ungroup_probabilities(p, copies) for p in recorded)  # -> [B*c, nh, T, S]
    return ungroup_rows(y, copies)  # [B, nh, c*T, hs] -> [B*c, nh, T, hs]


def keys_values(project, x, *, memory=None, cache=None, start=0):
    """Keys and values ``[B, nh, S, hs]`` for one attention block, through the KV cache when there is one.

    ``project(source)`` computes (k, v) from a source sequence. Self-attention (``memory`` None) projects ``x`` and,
    with a cache, appends the result at position ``start`` and attends over everything cached so far.
    Cross-attention projects the encoder output ``memory`` ``[B, S, C]`` once; a cache keeps that for every later
    step. With several decoder rows per source (``x`` ``[B*c, T, C]``) they stay per source, ``[B, nh, S, hs]``:
    ``scaled_dot_product_attention`` takes each source's rows together.
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
        # Kept contiguous, [B, nh, S, hs] as they lie (not head-split views of [B, S, C]): every later step reads
        # them, and each head's keys as one block make its products faster (one-query attention over 128 keys,
        # 8 rows: 213 -> 152 us a call; benchmarks/RESULTS.md)
        xp = get_array_module(k.data)
        cache.cross_k, cache.cross_v = xp.ascontiguousarray(k.data), xp.ascontiguousarray(v.data)
    return k, v


def attention_reference(q, k, v, keep):
    """The same attention composed from primitives, differentiated by composition (DeZero's ``softmax_simple``
    rung below its fused ``Softmax``): the oracle the tests hold ``Attention`` to."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = matmul(q, transpose(k, (0, 1, 3, 2)))  # [B, nh, T, hs] @ [B, nh, hs, S] -> [B, nh, T, S]
    return matmul(masked_softmax(scores, keep, scale), v)  # [B, nh, T, S] @ [B, nh, S, hs] -> [B, nh, T, hs]
