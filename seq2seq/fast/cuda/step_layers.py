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
each norm sits where the residual is formed, so no block normalises separately. The weights come from
../decoder_weights.py (``LayerWeights``: ``[in, out]`` views of the model's arrays); a layer keeps fused copies of
q|k|v and of the cross-attention's k|v (one product each), refilled in place (``refill``).
"""
from ...core.backend import get_array_module
from . import plans

KERNEL_ACTIVATIONS = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh":
                      "gelu_tanh", "gelu_fast": "gelu_tanh", "relu": "relu"}  # config name -> bias_activation.cu


def fuse(pairs, *, into=None):
    """Side by side: ``((w [in, out], b [out]) ...)`` -> ``(w [in, sum of outs], b [sum of outs])``, a copy (or
    written into the pair ``into``: a step's own fused copy, refilled without a new one, ``DecodeStep.refill``).
    One pair (GPT-2's, fused already) is returned as it is."""
    if len(pairs) == 1:
        return pairs[0]
    xp = get_array_module(pairs[0][0])
    w_out, b_out = (None, None) if into is None else into
    return (xp.concatenate([w for w, _ in pairs], axis=1, out=w_out),  # [in, out_i] ... -> [in, sum of outs]
            xp.concatenate([b for _, b in pairs], out=b_out))


class StepLayer:
    """What both kinds of layer hold: weights, static buffers, the KV cache and the encoder's keys/values."""

    def __init__(self, weights, memory, ctx, *, dtype):
        self.w, rows = weights, ctx.rows
        self.act = KERNEL_ACTIVATIONS[weights.act]
        self.qkv_weights, self.cross_kv_weights = fuse(weights.qkv), fuse(weights.cross_kv)  # [C, 3C], [C, 2C]
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
        w, b = self.cross_kv_weights
        kv = ctx.product(memory.reshape(sources * s, c), w) + b  # [sources * S, C] @ [C, 2C] -> [sources * S, 2C]
        kv = kv.reshape(sources, s, 2, self.heads, self.hs)  # -> [sources, S, 2, heads, hs]
        return tuple(ctx.xp.ascontiguousarray(kv[:, :, i].transpose(0, 2, 1, 3)) for i in range(2))

    def self_attention(self, a, ctx):
        """decode_self_attention over this step's q, k, v from ``a`` ``[rows, C]``; its k, v join the cache."""
        rows, c = a.shape
        qkv = ctx.linear(a, *self.qkv_weights, self.qkv)  # [rows, C] -> [rows, 3C]
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
        return ctx.launch(plans.bias_activation(self.hidden, self.w.up[1], self.act, out=self.activated))

    def refill(self, weights, memory, ctx):
        """Take the model's current ``weights`` (views of the same arrays) and new sources (``memory`` of the same
        shape), written into this layer's own arrays in place, so that captured graphs stay valid: the fused copies
        and the encoder side. (The other weights are views of the model's arrays and follow in-place changes.)"""
        self.w = weights
        self.qkv_weights = fuse(weights.qkv, into=self.qkv_weights if len(weights.qkv) > 1 else None)
        self.cross_kv_weights = fuse(weights.cross_kv, into=self.cross_kv_weights if len(weights.cross_kv) > 1
                                     else None)
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
