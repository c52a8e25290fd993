"""Several decoder rows per source: the queries of a source's rows taken together, and put back.

Beam search and sampling with ``num_return_sequences`` decode ``c`` rows per source, adjacent (row0, row0, row1,
row1, ...). Their cross-attention keys and values depend only on the source, so the cache keeps them once per
source, ``[B, nh, S, hs]``, not once per row. Cross-attention has no causal mask, so a source's ``c`` rows of
``T`` queries each can attend as one block of ``c*T`` queries over that source's keys: the same numbers, one
``[c*T, hs] x [hs, S]`` product per source and head instead of ``c`` products of ``T`` rows over ``c`` copies.

    q [B*c, nh, T, hs] --group_rows--> [B, nh, c*T, hs] --attention over k, v [B, nh, S, hs]--> [B, nh, c*T, hs]
                                                                  --ungroup_rows--> [B*c, nh, T, hs]

Both moves are a reshape and a transpose: views (no copy) when the heads lie as a split ``[B*c*T, C]``, as
``split_heads`` leaves them and as attention's output is laid out. Letters as in ``attention.py``; c the rows per
source ("copies").
"""
from ..core.autograd import Function
from ..core.errors import InputError


def _grouped(x, copies):
    """``[B*c, nh, T, d] -> [B, nh, c*T, d]``."""
    n, nh, t, d = x.shape
    x = x.reshape(n // copies, copies, nh, t, d)  # [B*c, nh, T, d] -> [B, c, nh, T, d]
    return x.transpose(0, 2, 1, 3, 4).reshape(n // copies, nh, copies * t, d)  # -> [B, nh, c, T, d] -> [B, nh, c*T, d]


def _ungrouped(x, copies):
    """``[B, nh, c*T, d] -> [B*c, nh, T, d]``: ``_grouped`` undone."""
    b, nh, ct, d = x.shape
    x = x.reshape(b, nh, copies, ct // copies, d)  # [B, nh, c*T, d] -> [B, nh, c, T, d]
    return x.transpose(0, 2, 1, 3, 4).reshape(b * copies, nh, ct // copies, d)  # -> [B, c, nh, T, d] -> [B*c, nh, T, d]


class GroupRows(Function):
    """``[B*c, nh, T, hs] -> [B, nh, c*T, hs]``: the queries of each source's ``c`` adjacent rows as one block."""

    def __init__(self, copies):
        self.copies = copies

    def forward(self, x):
        return _grouped(x, self.copies)

    def backward(self, gy):
        return _ungrouped(gy, self.copies)


class UngroupRows(Function):
    """``[B, nh, c*T, hs] -> [B*c, nh, T, hs]``: GroupRows undone."""

    def __init__(self, copies):
        self.copies = copies

    def forward(self, x):
        return _ungrouped(x, self.copies)

    def backward(self, gy):
        return _grouped(gy, self.copies)


def rows_per_source(queries, keys):
    """How many query rows share each row of keys (1 when they match): ``q [B*c, ...]`` over ``k [B, ...]``."""
    n, b = queries.shape[0], keys.shape[0]
    if n == b:
        return 1
    if b == 0 or n % b:
        raise InputError(f"attention: {n} query rows cannot share {b} rows of keys and values")
    return n // b


def group_rows(x, copies):
    """``[B*c, nh, T, hs] -> [B, nh, c*T, hs]`` (a Tensor op)."""
    return GroupRows(copies)(x)


def ungroup_rows(x, copies):
    """``[B, nh, c*T, hs] -> [B*c, nh, T, hs]`` (a Tensor op)."""
    return UngroupRows(copies)(x)


def ungroup_probabilities(p, copies):
    """Recorded probabilities ``[B, nh, c*T, S] -> [B*c, nh, T, S]``: the per-row shape transformers returns."""
    return _ungrouped(p, copies)
