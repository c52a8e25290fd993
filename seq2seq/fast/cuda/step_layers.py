"""The decoder layers of the kernel decode step (decode_step.py): post-LN (BERT, BART) and pre-LN (GPT-2) layers
with cross-attention, each holding its weights in the step's layout, its static buffers and its KV cache.

    post-LN (BERT, BART)                                 pre-LN (GPT-2), a = the normed residual stream
    qkv = x @ [Wq|Wk|Wv] + b                             qkv = a @ c_attn + b
    a = decode_self_attention(q, k, v, cache)            a = decode_self_attention(q, k, v, cache)
    x = add_layer_norm(a @ Wo, x, bo)                    x, a = add_layer_norm_pre(a @ c_proj + b, x)
    a = decode_cross_attention(x @ Wq' + bq', K, V)      a = decode_cross_attention(a @ q_attn + b, K, V)
    x = add_layer_norm(a @ Wo', x, bo')                  x, a = add_layer_norm_pre(a @ c_proj' + b, x)
    x = add_layer_norm(act(x @ W1 + b1) @ W2, x, b2)     x, a = add_layer_norm_pre(act(a @ c_fc + b) @ c_proj'' + b, x)

The post-LN kernel folds the output projection's bias into the norm; the pre-LN one has no bias, so GPT-2 adds it
after the product. GPT-2's ``a`` leaving a block is normed by the *next* block's ln_1 (or ln_f after the last):
each norm sits where the residual is formed, so no block normalises separately. Readers of the model's layer
objects (``bert_layer``, ``bart_layer``, ``gpt2_layer``) gather the weights as ``[in, out]`` matrices: transposed
views of torch-layout ``[out, in]`` Linear weights, GPT-2's Conv1D weights as they are stored.
"""
import dataclasses

from ...core.backend import get_array_module
from . import plans


def in_out(linear):
    """A Linear's ``(weight [in, out], bias)``: a transposed view of its ``[out, in]`` weight, no copy."""
    return linear.weight.data.T, linear.bias.data


def conv1d(conv):
    """A GPT-2 Conv1D's ``(weight [in, out], bias)``, as stored."""
    return conv.weight.data, conv.bias.data


def norm(layer_norm):
    """A LayerNorm's ``(gamma, beta, eps)``."""
    return layer_norm.weight.data, layer_norm.bias.data, layer_norm.eps


def fuse(*pairs, into=None):
    """Side by side: ``(w [in, out] ...), (b [out] ...)`` -> ``(w [in, sum of outs], b [sum of outs])``, written
    into the pair ``into`` when given (a step's own fused copy, refilled without a new one: ``DecodeStep.refill``)."""
    xp = get_array_module(pairs[0][0])
    w_out, b_out = (None, None) if into is None else into
    return (xp.concatenate([w for w, _ in pairs], axis=1, out=w_out),  # [in, out_i] ... -> [in, sum of outs]
            xp.concatenate([b for _, b in pairs], out=b_out))


@dataclasses.dataclass
class LayerWeights:
    """One decoder layer's weights as ``(w [in, out], b)`` pairs; ``norms``: the three ``(gamma, beta, eps)`` in
    order (post-LN: after self-attention, cross-attention and FFN; pre-LN: before them); ``scales``: the self- and
    cross-attention's score scales (None: 1/sqrt(hs)); ``act``: bias_activation.cu's name of the activation."""

    heads: int
    qkv: tuple
    self_out: tuple
    cross_q: tuple
    cross_kv: tuple
    cross_out: tuple
    up: tuple
    down: tuple
    norms: tuple
    act: str
    scales: tuple = (None, None)


def _fused_into(into, name):
    """``into``'s fused pair ``name`` (a LayerWeights field), or None without ``into``."""
    return None if into is None else getattr(into, name)


def bert_layer(layer, act, *, into=None):
    """``into``: the LayerWeights of a step made before, whose fused copies take the new values in place."""
    sa, ca, ffn = layer.self_attention, layer.cross_attention, layer.ffn
    qkv = fuse(in_out(sa.query), in_out(sa.key), in_out(sa.value), into=_fused_into(into, "qkv"))
    cross_kv = fuse(in_out(ca.key), in_out(ca.value), into=_fused_into(into, "cross_kv"))
    return LayerWeights(sa.num_heads, qkv, in_out(sa.out), in_out(ca.query), cross_kv, in_out(ca.out),
                        in_out(ffn.up), in_out(ffn.down), (norm(sa.norm), norm(ca.norm), norm(ffn.norm)), act)


def bart_layer(layer, act, *, into=None):
    sa, ca = layer.self_attention, layer.cross_attention
    qkv = fuse(in_out(sa.q_proj), in_out(sa.k_proj), in_out(sa.v_proj), into=_fused_into(into, "qkv"))
    cross_kv = fuse(in_out(ca.k_proj), in_out(ca.v_proj), into=_fused_into(into, "cross_kv"))
    return LayerWeights(sa.num_heads, qkv, in_out(sa.out_proj), in_out(ca.q_proj), cross_kv, in_out(ca.out_proj),
                        in_out(layer.fc1), in_out(layer.fc2),
                        (norm(layer.self_norm), norm(layer.cross_norm), norm(layer.final_norm)), act)


def gpt2_layer(block, act, *, into=None):  # GPT-2's weights come fused (c_attn): nothing to copy, ``into`` unused
    sa, ca, mlp = block.self_attention, block.cross_attention, block.mlp
    return LayerWeights(sa.num_heads, conv1d(sa.qkv_attn), conv1d(sa.proj), conv1d(ca.q_attn), conv1d(ca.kv_attn),
                        conv1d(ca.proj), conv1d(mlp.up), conv1d(mlp.down),
                        (norm(block.ln_1), norm(block.ln_cross), norm(block.ln_2)), act, (sa.scale, ca.scale))


class StepLayer:
    """What both kinds of layer hold: weights, static buffers, the KV cache and the encoder's keys/values."""

    def __init__(self, weights, memory, ctx, *, dtype):
        self.w, rows = weights, ctx.rows
        c = weights.self_out[0].shape[1]
        f = weights.up[0].shape[1]
        self.heads, self.hs = weights.heads, c // weights.heads
        self.k_enc, self.v_enc = self._encoder_side(memory, ctx)
        cache_shape = (rows, self.heads, ctx.max_length, self.hs)
        self.k_cache, self.v_cache = ctx.empty(*cache_shape, dtype=dtype), ctx.empty(*cache_shape, dtype=dtype)
        self.qkv = ctx.empty(rows, 3 * c, dtype=dtype)
        self.attention, self.cross_attention = (ctx.empty(rows, self.heads, self.hs, dtype=dtype) for _ in range(2))
        self.projected, self.q, self.down_out = (ctx.empty(rows, c, dtype=dtype) for _ in range(3))
        self.hidden, self.activated = ctx.empty(rows, f, dtype=dtype), ctx.empty(rows, f, dtype=dtype)
        self.x1, self.x2, self.x3 = (ctx.empty(rows, c, dtype=dtype) for _ in range(3))  # the residual stream
        self.a1, self.a2, self.a3 = (ctx.empty(rows, c, dtype=dtype) for _ in range(3))  # pre-LN: normed copies

    def _encoder_side(self, memory, ctx):
        """The cross-attention keys and values of each source, once: ``[sources, S, C] -> [sources, heads, S, hs]``
        each (outside any graph)."""
        sources, s, c = memory.shape
        w, b = self.w.cross_kv
        kv = ctx.product(memory.reshape(sources * s, c), w) + b  # [sources * S, C] @ [C, 2C] -> [sources * S, 2C]
        kv = kv.reshape(sources, s, 2, self.heads, self.hs)  # -> [sources, S, 2, heads, hs]
        return tuple(ctx.xp.ascontiguousarray(kv[:, :, i].transpose(0, 2, 1, 3)) for i in range(2))

    def self_attention(self, a, ctx):
        """decode_self_attention over this step's q, k, v from ``a`` ``[rows, C]``; its k, v join the cache."""
        rows, c = a.shape
        qkv = ctx.linear(a, *self.w.qkv, self.qkv)  # [rows, C] -> [rows, 3C]
        q, k, v = (qkv[:, i * c:(i + 1) * c].reshape(rows, self.heads, self.hs) for i in range(3))  # views
        return ctx.launch(plans.decode_self_attention(q, k, v, self.k_cache, self.v_cache, ctx.lengths,
                                                      scale=self.w.scales[0], out=self.attention,
                                                      max_keys=ctx.max_keys)).reshape(rows, c)

    def cross_attention_of(self, a, ctx):
        """decode_cross_attention of the queries from ``a`` ``[rows, C]`` over each row's source."""
        rows, c = a.shape
        q = ctx.linear(a, *self.w.cross_q, self.q).reshape(rows, self.heads, self.hs)  # -> [rows, heads, hs]
        return ctx.launch(plans.decode_cross_attention(q, self.k_enc, self.v_enc, source_of_row=ctx.source_of_row,
                                                       keep=ctx.keep, scale=self.w.scales[1],
                                                       out=self.cross_attention)).reshape(rows, c)

    def feed_forward_hidden(self, a, ctx):
        """``act(a @ W1 + b1)`` ``[rows, F]``: the product, then the bias and activation in one launch."""
        ctx.product(a, self.w.up[0], out=self.hidden)  # [rows, C] -> [rows, F]
        return ctx.launch(plans.bias_activation(self.hidden, self.w.up[1], self.w.act, out=self.activated))

    def refill(self, memory, ctx):
        """Take new sources (``memory`` of the same shape), written into this layer's own arrays in place, so that
        captured graphs stay valid. (The fused weight copies are written in place by the family's builder,
        ``DecodeStep.refill``; the other weights are views of the model's arrays and follow in-place changes.)"""
        for mine, theirs in zip((self.k_enc, self.v_enc), self._encoder_side(memory, ctx)):
            mine[...] = theirs

    def reorder(self, index, filled):
        """Row i of the self-attention cache takes row ``index[i]``'s first ``filled`` positions."""
        for cache in (self.k_cache, self.v_cache):
            cache[:, :, :filled] = cache[index, :, :filled]  # the right side is a copy: safe in place


class PostLNStepLayer(StepLayer):
    """BERT's and BART's layer: each sub-block's output added to its input, then normed."""

    def __call__(self, x, ctx):
        """x ``[rows, C]`` -> the layer's output buffer ``[rows, C]``."""
        launch, w = ctx.launch, self.w
        ctx.product(self.self_attention(x, ctx), w.self_out[0], out=self.projected)
        x1 = launch(plans.add_layer_norm(self.projected, x, w.self_out[1], *w.norms[0], out=self.x1))
        ctx.product(self.cross_attention_of(x1, ctx), w.cross_out[0], out=self.projected)
        x2 = launch(plans.add_layer_norm(self.projected, x1, w.cross_out[1], *w.norms[1], out=self.x2))
        ctx.product(self.feed_forward_hidden(x2, ctx), w.down[0], out=self.down_out)  # [rows, F] -> [rows, C]
        return launch(plans.add_layer_norm(self.down_out, x2, w.down[1], *w.norms[2], out=self.x3))


class PreLNStepLayer(StepLayer):
    """GPT-2's block: each sub-block reads the normed stream and adds its output to the residual stream."""

    def __call__(self, x, a, ctx, next_norm):
        """x the residual stream ``[rows, C]``, a = ln_1(x); returns (x', next_norm(x')), ``next_norm`` being the
        next block's ln_1 or the final ln_f."""
        launch, w = ctx.launch, self.w
        ctx.linear(self.self_attention(a, ctx), *w.self_out, self.projected)
        x1, a1 = launch(plans.add_layer_norm_pre(self.projected, x, *w.norms[1], out=(self.x1, self.a1)))
        ctx.linear(self.cross_attention_of(a1, ctx), *w.cross_out, self.projected)
        x2, a2 = launch(plans.add_layer_norm_pre(self.projected, x1, *w.norms[2], out=(self.x2, self.a2)))
        ctx.linear(self.feed_forward_hidden(a2, ctx), *w.down, self.down_out)  # [rows, F] -> [rows, C]
        return launch(plans.add_layer_norm_pre(self.down_out, x2, *next_norm, out=(self.x3, self.a3)))
