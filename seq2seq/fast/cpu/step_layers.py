"""The decoder layers of the CPU decode step (decode_step.py): post-LN (BERT, BART) and pre-LN (GPT-2), each
holding its prepared products, its KV cache and its sources' cross-attention keys and values.

    post-LN (BERT, BART)                          pre-LN (GPT-2)
    x = LN(x + SelfAttention(x))                  x = x + SelfAttention(ln_1(x))
    x = LN(x + CrossAttention(x, memory))         x = x + CrossAttention(ln_cross(x), memory)
    x = LN(x + act(x W1 + b1) W2 + b2)            x = x + act(ln_2(x) W1 + b1) W2 + b2

Every call is the one the model's layers make under ``no_grad`` (models/*_decoder.py through nn/), in the same
order and on arrays of the same layouts, so the results are the same bits: the products are ``ThinProducts``
(thin.py) over the same weight views, the attention a ``FusedAttention`` over a cache ``[rows, heads, max_length,
hs]`` as nn/cache.py allocates it, the norms ``layer_norm_forward``. What is gone is the autograd's bookkeeping.
"""
import numpy as np

from .layer_norm import layer_norm_forward
from .linear import linear_forward
from .thin import ThinProducts


def norm(x, params):
    """LayerNorm of rows ``x`` ``[N, C]`` with ``params`` = (gamma, beta, eps): layer_norm.py's form."""
    return layer_norm_forward(x, *params)[0]


def split_heads(y, heads):
    """``[N, C] -> [N, heads, 1, hs]``: nn/attention.split_heads's view of a one-position projection."""
    n, c = y.shape
    return y.reshape(n, 1, heads, c // heads).transpose(0, 2, 1, 3)  # [N, 1, nh, hs] -> [N, nh, 1, hs]


def merge_heads(y):
    """``[N, heads, 1, hs] -> [N, C]``: nn/attention.merge_heads."""
    n, nh, _, hs = y.shape
    return y.transpose(0, 2, 1, 3).reshape(n, nh * hs)  # [N, nh, 1, hs] -> [N, 1, nh, hs] -> [N, C]


def _side_by_side(outputs, parts):
    """The ``parts`` arrays q|k|v (or k|v) from the outputs of their products: one each, or one fused output cut
    into ``parts`` column views (GPT-2's c_attn)."""
    if len(outputs) == parts:
        return outputs
    c = outputs[0].shape[-1] // parts
    return [outputs[0][..., i * c:(i + 1) * c] for i in range(parts)]


def encoder_side(memory, weights):
    """Each source's cross-attention keys and values, ``[sources, S, C] -> [sources, heads, S, hs]`` each,
    contiguous: computed as the model computes them at its first step (nn/attention.keys_values)."""
    sources, s, c = memory.shape
    memory2 = memory.reshape(sources * s, c)  # [sources * S, C]
    outputs = [linear_forward(memory2, w, b, in_out=True) for w, b in weights.cross_kv]  # [sources * S, C or 2C]
    hs = c // weights.heads
    return [np.ascontiguousarray(y.reshape(sources, s, weights.heads, hs).transpose(0, 2, 1, 3))  # [B, nh, S, hs]
            for y in _side_by_side(outputs, 2)]


class StepLayer:
    """What both kinds of layer hold: the prepared products, the KV cache and the encoder's keys/values."""

    def __init__(self, weights, rows, max_length, *, dtype, act, self_attention, cross_attention, encoder_side,
                 copies):
        self.w, self.heads, self.act, self.copies = weights, weights.heads, act, copies
        c = weights.self_out[0].shape[0]
        self.qkv = ThinProducts(rows, list(weights.qkv), dtype=dtype)  # [rows, C] -> [rows, C] x 3 (or [rows, 3C])
        self.self_out, self.cross_q, self.cross_out, self.up, self.down = (
            ThinProducts(rows, [pair], dtype=dtype) for pair in (weights.self_out, weights.cross_q,
                                                                 weights.cross_out, weights.up, weights.down))
        hs = c // self.heads
        # as nn/cache.LayerCache allocates it for generate (capacity max_length): the same strides, the same products
        self.k_cache, self.v_cache = (np.empty((rows, self.heads, max_length, hs), dtype=dtype) for _ in range(2))
        self.self_attention, self.cross_attention = self_attention, cross_attention
        self.k_enc, self.v_enc = encoder_side  # [sources, nh, S, hs] each

    def attend_self(self, a, position):
        """Causal self-attention of rows ``a`` ``[rows, C]`` at ``position``: their k, v join the cache."""
        q, k, v = (split_heads(y, self.heads) for y in _side_by_side(self.qkv(a), 3))  # [rows, nh, 1, hs] each
        self.k_cache[:, :, position:position + 1] = k
        self.v_cache[:, :, position:position + 1] = v
        seen = slice(0, position + 1)  # the one query sees every cached position: no mask
        y = self.self_attention.forward(q, self.k_cache[:, :, seen], self.v_cache[:, :, seen])  # [rows, nh, 1, hs]
        return self.self_out(merge_heads(y))[0]  # [rows, C] @ Wo + bo

    def attend_cross(self, a):
        """Cross-attention of rows ``a`` ``[rows, C]`` over each one's source."""
        q = split_heads(self.cross_q(a)[0], self.heads)  # [rows, C] -> [rows, nh, 1, hs]
        c = self.copies
        if c > 1:  # a source's rows as one block of queries over its keys (nn/source_rows.py)
            n, nh, _, hs = q.shape
            q = q.reshape(n // c, c, nh, 1, hs).transpose(0, 2, 1, 3, 4).reshape(n // c, nh, c, hs)  # [B, nh, c, hs]
        y = self.cross_attention.forward(q, self.k_enc, self.v_enc)  # -> [B, nh, c, hs] (or [rows, nh, 1, hs])
        if c > 1:
            b, nh, _, hs = y.shape
            y = y.reshape(b, nh, c, 1, hs).transpose(0, 2, 1, 3, 4).reshape(b * c, nh, 1, hs)  # [rows, nh, 1, hs]
        return self.cross_out(merge_heads(y))[0]  # [rows, C] @ Wo' + bo'

    def feed_forward(self, a):
        """``act(a W1 + b1) W2 + b2``: ``[rows, C] -> [rows, F] -> [rows, C]``."""
        return self.down(self.act(self.up(a)[0]))[0]

    def reorder(self, rows, sources, filled):
        """Rows ``rows`` of the self-attention cache take rows ``sources``' first ``filled`` positions."""
        for cache in (self.k_cache, self.v_cache):
            cache[rows, :, :filled] = cache[sources, :, :filled]  # the right side is a copy: safe in place


class PostLNLayer(StepLayer):
    """BERT's and BART's layer: each sub-block's output added to its input, then normed."""

    def __call__(self, x, position):
        norms = self.w.norms
        x = norm(x + self.attend_self(x, position), norms[0])
        x = norm(x + self.attend_cross(x), norms[1])
        return norm(x + self.feed_forward(x), norms[2])


class PreLNLayer(StepLayer):
    """GPT-2's block: each sub-block reads the normed stream and adds its output to the residual stream."""

    def __call__(self, x, position):
        norms = self.w.norms
        x = x + self.attend_self(norm(x, norms[0]), position)
        x = x + self.attend_cross(norm(x, norms[1]))
        return x + self.feed_forward(norm(x, norms[2]))
