"""The key/value cache that makes decoding one token cost one token's work.

Generating token t+1 needs attention over positions 0..t. Without a cache the decoder would recompute the keys and
values of the whole prefix at every step. With it:

- self-attention keys/values of each layer are *appended*: a step computes k, v only for its new position(s) and
  writes them into preallocated arrays ``[B, nh, capacity, hs]`` (no re-allocation, no concatenation);
- cross-attention keys/values depend only on the encoder output, so they are computed *once* per source, at the
  first step, and reused by every later step;
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
        self.cross_k = self.cross_v = None  # [B, nh, S, hs], computed at the first step

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
    """Every layer's LayerCache, the number of positions decoded so far, and the encoder-side inputs."""

    def __init__(self, num_layers, memory, memory_keep, *, capacity=64):
        self.layers = [LayerCache(capacity) for _ in range(num_layers)]
        self.memory = memory  # the encoder's last hidden state [B, S, C]: only read at the first step
        self.memory_keep = memory_keep  # encoder padding mask [B, 1, 1, S] or None
        self.length = 0

    @property
    def batch_size(self):
        return self.memory.shape[0]

    def reorder(self, index):
        """Keep rows ``index`` (an integer array of length B') of everything cached, in that order."""
        xp = get_array_module(self.memory)
        index = xp.asarray(index)
        self.memory = self.memory[index]
        if self.memory_keep is not None:
            self.memory_keep = self.memory_keep[index]
        for layer in self.layers:
            if layer.cross_k is not None:
                layer.cross_k, layer.cross_v = layer.cross_k[index], layer.cross_v[index]
            if layer.self_k is not None:
                layer.self_k, layer.self_v = layer.self_k[index], layer.self_v[index]
        return self

    def reorder_beams(self, index):
        """Like ``reorder``, for beam search, where row i always takes ``index[i]`` from the beams of its own source.

        Why cheaper: those beams share one encoder output, so their cross-attention keys/values and encoder mask
        are already identical and stay put; only the self-attention keys/values move, only the ``length``
        positions filled so far, and only those of the rows that take another row's history (a beam that
        continues itself keeps its own in place).
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
