"""The key/value cache that makes decoding one token cost one token's work.

Generating token t+1 needs attention over positions 0..t. Without a cache the decoder would recompute the keys and
values of the whole prefix at every step. With it:

- self-attention keys/values of each layer are *appended*: a step computes k, v only for its new position(s) and
  writes them into preallocated arrays ``[B, nh, capacity, hs]`` (no re-allocation, no concatenation);
- cross-attention keys/values depend only on the encoder output, so they are computed *once* per source, at the
  first step, and reused by every later step;
- beam search and sampling with ``num_return_sequences`` decode ``copies`` rows per source, adjacent (row0, row0,
  row1, row1, ...). The encoder side (``memory``, ``memory_keep``, the cross keys/values) is kept once per
  *source*, ``[B, ...]``, and only the self-attention keys/values once per decoder row, ``[B*copies, ...]``;
  cross-attention takes each source's rows together (``attention.scaled_dot_product_attention``);
- beam search keeps the best beams after each step; ``reorder(index)`` makes row i of every cached array a copy
  of row ``index[i]`` so that each surviving beam carries its own history (transformers' ``_reorder_cache``).

The cache is for inference (``no_grad``): it holds raw arrays, not Tensors.
"""
from ..core.backend import get_array_module
from .attention import causal_mask, combine_masks
from .record import NOTHING


class LayerCache:
    """One decoder layer's cached keys and values."""

    def __init__(self, capacity):
        self.capacity = capacity  # positions to allocate room for at once
        self.self_k = self.self_v = None  # [B, nh, capacity, hs], filled up to DecoderCache.length
        self.cross_k = self.cross_v = None  # [B, nh, S, hs], one row per source, computed at the first step

    def append(self, k, v, start):
        """Write new self-attention keys/values ``[B, nh, t, hs]`` at ``start``; return the filled prefix."""
        xp = get_array_module(k)
        b, nh, t, hs = k.shape
        if self.self_k is None or self.self_k.shape[2] < start + t:
            grown = max(self.capacity, 2 * (start + t)) if self.self_k is not None else max(self.capacity, t)
            new_k, new_v = (xp.empty((b, nh, grown, hs), dtype=k.dtype) for _ in range(2))
            if self.self_k is not None:  # a longer sequence than planned: grow, keeping what is there
                new_k[:, :, :start], new_v[:, :, :start] = self.self_k[:, :, :start], self.self_v[:, :, :start]
            self.self_k, self.self_v = new_k, new_v
        self.self_k[:, :, start:start + t] = k
        self.self_v[:, :, start:start + t] = v
        return self.self_k[:, :, :start + t], self.self_v[:, :, :start + t]  # [B, nh, start + t, hs]


class DecoderCache:
    """Every layer's LayerCache, the number of positions decoded so far, and the encoder-side inputs, once per
    source for ``copies`` adjacent decoder rows each."""

    def __init__(self, num_layers, memory, memory_keep, *, capacity=64, copies=1):
        self.layers = [LayerCache(capacity) for _ in range(num_layers)]
        self.memory = memory  # the encoder's last hidden state [B, S, C]: only read at the first step
        self.memory_keep = memory_keep  # encoder padding mask [B, 1, 1, S] or None
        self.copies = copies  # decoder rows per source: batch_size = B * copies
        self.length = 0

    @property
    def batch_size(self):
        """The number of decoder rows."""
        return self.memory.shape[0] * self.copies

    def reorder(self, index):
        """Keep decoder rows ``index`` (an integer array of length N') of everything cached, in that order.

        When every source keeps its place and serves the same number of rows, ``k``, adjacent (the new row i
        reads from source ``i // k``: the rows repeated for beams or samples, as ``encode_sources`` asks, or
        reordered within their sources), the per-source side stays put and ``copies`` becomes ``k``. Any other
        index (rows dropped, sources reordered or mixed) gives each row its own copy of the encoder side
        (``copies`` 1): correct for every index, and no caller in generation asks for one.
        """
        xp = get_array_module(self.memory)
        index = xp.asarray(index)
        sources = index // self.copies  # [N']: the source each new row reads
        b, rows = self.memory.shape[0], index.shape[0]
        k = rows // b if b else 0
        if k and k * b == rows and bool((sources == xp.arange(rows) // k).all()):
            self.copies = k  # every source in place: its encoder side serves k rows now
        else:
            self._one_source_per_row(sources)
        for layer in self.layers:
            if layer.self_k is not None:
                layer.self_k, layer.self_v = layer.self_k[index], layer.self_v[index]  # [N, ...] -> [N', ...]
        return self

    def _one_source_per_row(self, sources):
        """Copy the encoder side of source ``sources[i]`` into row i: ``[B, ...] -> [N', ...]``, ``copies`` 1."""
        self.memory = self.memory[sources]  # [B, S, C] -> [N', S, C]
        if self.memory_keep is not None:
            self.memory_keep = self.memory_keep[sources]  # [B, 1, 1, S] -> [N', 1, 1, S]
        for layer in self.layers:
            if layer.cross_k is not None:
                layer.cross_k, layer.cross_v = layer.cross_k[sources], layer.cross_v[sources]  # -> [N', nh, S, hs]
        self.copies = 1

    def reorder_beams(self, index):
        """Like ``reorder``, for beam search, where row i always takes ``index[i]`` from the beams of its own source.

        Why cheaper: those beams share one encoder output, so the encoder side (kept once per source) stays put;
        only the self-attention keys/values move, only the ``length`` positions filled so far, and only those of
        the rows that take another row's history (a beam that continues itself keeps its own in place).
        """
        xp = get_array_module(self.memory)
        index = xp.asarray(index)
        rows = xp.nonzero(index != xp.arange(index.shape[0]))[0]  # the rows that take another row's history
        if rows.shape[0] == 0:
            return self
        sources, n = index[rows], self.length
        for layer in self.layers:
            if layer.self_k is not None:
                layer.self_k[rows, :, :n] = layer.self_k[sources, :, :n]  # the right side is a copy: safe in place
                layer.self_v[rows, :, :n] = layer.self_v[sources, :, :n]
        return self


def run_decoder_layers(layers, h, keep, memory, memory_keep, *, cache=None, records=NOTHING):
    """Run decoder layers over ``h`` ``[B, T, C]``, the positions after the ``cache.length`` already decoded (0
    without a cache), with causal self-attention; the cache, if any, then advances by T. Shared by every decoder.

    ``keep``: decoder padding mask or None; ``memory_keep``: encoder padding mask or None; ``records`` (the
    state's, record.py) gets what enters each layer; the decoder adds its last hidden state.
    """
    xp = get_array_module(h)
    start, t = (cache.length if cache is not None else 0), h.shape[1]
    # One new query sees every cached position: no causal mask needed then.
    self_keep = combine_masks(causal_mask(xp, t, start + t) if t > 1 else None, keep)  # [B, 1, T, start+T]
    for i, layer in enumerate(layers):
        records.hidden_state(h)
        h = layer(h, self_keep, memory, memory_keep, cache=cache.layers[i] if cache else None, start=start)
    if cache is not None:
        cache.length += t
    return h
