"""One decoder step of generation as CUDA kernel launches and matrix products: what a CUDA graph captures.

The eager path (``model.decode_step``) runs a step as ~40 array operations a layer, each a few kernels and tens of
microseconds of Python; on a GPU a bert-base step is then bound by launches, not by the card (see
../shared/NOTES-transformers.md). Here a step of the BERT decoder of a bert2bert model is 14 launches a layer:

    lengths += 1; positions = lengths - 1                              # on the device: a replay needs no host data
    x = embed(ids, positions)                                          # word + position + type 0, LayerNorm
    for each layer:
        qkv = x @ [Wq|Wk|Wv] + [bq|bk|bv]                              # one product, one bias add: [rows, 3C]
        a = decode_self_attention(q, k, v, cache, lengths)             # appends k, v at lengths - 1
        x = add_layer_norm(a @ Wo, x, bo)                              # the output bias folded into the norm
        a = decode_cross_attention(x @ Wq' + bq', K_enc, V_enc)        # K_enc, V_enc: once per source
        x = add_layer_norm(a @ Wo', x, bo')
        x = add_layer_norm(bias_activation(x @ W1, b1, act) @ W2, x, b2)
    logits = LayerNorm(act(x @ Wd + bd)) @ E^T + b                     # the LM head, E the tied word embeddings

Every array the step touches is allocated once, when the step is made for (rows, max_length): the KV cache
``[rows, heads, max_length, hs]`` per layer, ``lengths`` (int32, on the device), each launch's output, the logits.
The encoder's keys and values are computed once per *source*; the beams (or samples) of a source read them
through ``source_of_row``. A step therefore writes to and reads from the same addresses every time, which is what
a CUDA graph needs to replay it (graphs.py captures ``run``).

Launches and products come in as callables, so that the same code runs on the GPU (``kernels.run`` and a
cuBLAS ``product``, cublas.py) and in the CPU tests (the CPU emulation of the kernels, ``numpy.matmul``):
``launch(plans.X(...))`` runs a launch, ``product(x, w, out=None)`` computes ``x @ w`` for a weight ``w`` ``[in,
out]``. The bias adds of the q/k/v and vocabulary products and the two length updates are elementwise operations
of the array module (one small kernel each on CuPy), written ``xp.add(y, b, out=y)``. Weights are the model's own
arrays (``W.T`` views of its ``[out, in]`` Linear weights; the fused ``[Wq|Wk|Wv]`` is the one copy), read when
the step is made: a step made before the weights change does not see the change.

Beam search reorders the cache by a gather of rows, ``take`` into the static buffers (array indexing, no kernel of
ours, outside any graph). Only the BERT decoder is here: GPT-2's and BART's would share the step, the cache and
the head, and differ in their layers (pre-LN with ``add_layer_norm_pre``, Conv1D weights already ``[in, out]``).
"""
import numpy as np

from ...core.backend import get_array_module
from ...core.errors import InputError
from . import plans

KERNEL_ACTIVATIONS = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh":
                      "gelu_tanh", "gelu_fast": "gelu_tanh", "relu": "relu"}  # hidden_act -> bias_activation.cu
KERNEL_DTYPES = ("float32", "float16")


def unsupported(model, *, max_length):
    """Why ``model`` cannot decode through ``DecodeStep`` up to ``max_length`` positions, or None if it can."""
    config = model.config.decoder
    dtype = model.decoder.embeddings.word.weight.data.dtype.name if config.model_type == "bert" else None
    reasons = [
        (config.model_type != "bert", f"the {config.model_type!r} decoder has no kernel step (only BERT's)"),
        (dtype not in KERNEL_DTYPES, f"dtype {dtype} has no kernels (only {KERNEL_DTYPES})"),
        (config.model_type == "bert" and config.hidden_act not in KERNEL_ACTIVATIONS,
         f"hidden_act {getattr(config, 'hidden_act', None)!r} has no kernel"),
        (config.model_type == "bert" and config.hidden_size // config.num_attention_heads > plans.DA_MAX_HEAD,
         f"head size above {plans.DA_MAX_HEAD}"),
        (config.model_type == "bert" and max_length > config.max_position_embeddings,
         f"max_length {max_length} exceeds max_position_embeddings"),
    ]
    return next((reason for bad, reason in reasons if bad), None)


def _in_out(linear):
    """A Linear's weight as ``[in, out]`` (a transposed view of its ``[out, in]``, no copy) and its bias."""
    return linear.weight.data.T, linear.bias.data


def _norm(layer_norm):
    return layer_norm.weight.data, layer_norm.bias.data, layer_norm.eps


class Context:
    """What every layer of a step shares: the array module, the launch and product callables, the rows' lengths
    and sources, and ``max_keys``, the self-attention's shared-memory bound (the step's length bucket)."""

    def __init__(self, xp, *, launch, product, rows, max_length, source_of_row, keep):
        self.xp, self.launch, self.product = xp, launch, product
        self.rows, self.max_length = rows, max_length
        self.lengths = xp.zeros((rows,), dtype=np.int32)  # positions filled, the step's own included
        self.positions = xp.zeros((rows,), dtype=np.int64)  # the step's position: lengths - 1
        self.source_of_row, self.keep = source_of_row, keep  # [rows] int32; [sources, S] bool or None
        self.max_keys = max_length

    def empty(self, *shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def linear(self, x, w, b, out):
        """``x @ w + b`` into ``out``: a product, then the bias added in place."""
        self.product(x, w, out=out)
        self.xp.add(out, b, out=out)
        return out


class BertStepLayer:
    """One BERT decoder layer (post-LN, cross-attention) of a kernel step, with its static buffers and KV cache."""

    def __init__(self, layer, memory, ctx, *, dtype, act):
        xp, rows = ctx.xp, ctx.rows
        sa, ca, ffn = layer.self_attention, layer.cross_attention, layer.ffn
        self.heads = sa.num_heads
        c = sa.query.weight.data.shape[0]
        self.hs = c // self.heads
        self.qkv_w = xp.concatenate([_in_out(sa.query)[0], _in_out(sa.key)[0], _in_out(sa.value)[0]], axis=1)
        self.qkv_b = xp.concatenate([sa.query.bias.data, sa.key.bias.data, sa.value.bias.data])  # [3C]
        self.self_out, self.self_norm = _in_out(sa.out), _norm(sa.norm)
        self.cross_q, self.cross_out, self.cross_norm = _in_out(ca.query), _in_out(ca.out), _norm(ca.norm)
        self.up, self.down, self.ffn_norm = _in_out(ffn.up), _in_out(ffn.down), _norm(ffn.norm)
        self.k_enc, self.v_enc = (self._encoder_side(memory, _in_out(linear), ctx) for linear in (ca.key, ca.value))
        cache_shape = (rows, self.heads, ctx.max_length, self.hs)
        self.k_cache, self.v_cache = ctx.empty(*cache_shape, dtype=dtype), ctx.empty(*cache_shape, dtype=dtype)
        f = self.up[0].shape[1]
        self.qkv = ctx.empty(rows, 3 * c, dtype=dtype)
        self.attention, self.cross_attention = (ctx.empty(rows, self.heads, self.hs, dtype=dtype) for _ in range(2))
        self.projected, self.q, self.down_out = (ctx.empty(rows, c, dtype=dtype) for _ in range(3))
        self.x1, self.x2, self.x3 = (ctx.empty(rows, c, dtype=dtype) for _ in range(3))
        self.hidden, self.activated = ctx.empty(rows, f, dtype=dtype), ctx.empty(rows, f, dtype=dtype)
        self.act = act  # bias_activation.cu's name for the config's hidden_act

    def _encoder_side(self, memory, weight_bias, ctx):
        """The cross-attention keys or values of each source, once: ``[sources, S, C] -> [sources, heads, S, hs]``."""
        xp = ctx.xp
        sources, s, c = memory.shape
        w, b = weight_bias
        y = ctx.product(memory.reshape(sources * s, c), w) + b  # [sources * S, C] @ [C, C] -> [sources * S, C]
        return xp.ascontiguousarray(y.reshape(sources, s, self.heads, self.hs).transpose(0, 2, 1, 3))

    def __call__(self, x, ctx):
        """The layer over x ``[rows, C]`` (a static buffer); returns its output buffer ``[rows, C]``."""
        launch, rows, c = ctx.launch, ctx.rows, x.shape[1]
        qkv = ctx.linear(x, self.qkv_w, self.qkv_b, self.qkv)  # [rows, C] -> [rows, 3C]
        q, k, v = (qkv[:, i * c:(i + 1) * c].reshape(rows, self.heads, self.hs) for i in range(3))  # views
        launch(plans.decode_self_attention(q, k, v, self.k_cache, self.v_cache, ctx.lengths, out=self.attention,
                                           max_keys=ctx.max_keys))  # -> [rows, heads, hs]
        ctx.product(self.attention.reshape(rows, c), self.self_out[0], out=self.projected)
        x1 = launch(plans.add_layer_norm(self.projected, x, self.self_out[1], *self.self_norm, out=self.x1))
        q = ctx.linear(x1, *self.cross_q, self.q).reshape(rows, self.heads, self.hs)  # [rows, C] -> [rows, nh, hs]
        launch(plans.decode_cross_attention(q, self.k_enc, self.v_enc, source_of_row=ctx.source_of_row,
                                            keep=ctx.keep, out=self.cross_attention))
        ctx.product(self.cross_attention.reshape(rows, c), self.cross_out[0], out=self.projected)
        x2 = launch(plans.add_layer_norm(self.projected, x1, self.cross_out[1], *self.cross_norm, out=self.x2))
        ctx.product(x2, self.up[0], out=self.hidden)  # [rows, C] -> [rows, F]
        launch(plans.bias_activation(self.hidden, self.up[1], self.act, out=self.activated))
        ctx.product(self.activated, self.down[0], out=self.down_out)  # [rows, F] -> [rows, C]
        return launch(plans.add_layer_norm(self.down_out, x2, self.down[1], *self.ffn_norm, out=self.x3))

    def reorder(self, index, filled):
        """Row i of the self-attention cache takes row ``index[i]``'s first ``filled`` positions."""
        for cache in (self.k_cache, self.v_cache):
            cache[:, :, :filled] = cache[index, :, :filled]  # the right side is a copy: safe in place


class DecodeStep:
    """The kernel step of a BERT decoder for ``rows = sources * copies`` rows and up to ``max_length`` positions.

    ``memory`` ``[sources, S, C]`` is the encoder output at the decoder's width (``DecoderCache.memory`` before it
    is repeated per beam), ``memory_keep`` its padding mask ``[sources, 1, 1, S]`` or None; each source serves
    ``copies`` adjacent rows (its beams or samples). ``step(ids)`` is one step; ``run()`` is what a graph captures.
    """

    def __init__(self, model, memory, memory_keep, *, copies, max_length, launch, product):
        reason = unsupported(model, max_length=max_length)
        if reason is not None:
            raise InputError(f"DecodeStep: {reason}")
        decoder, xp = model.decoder, get_array_module(memory)
        sources = memory.shape[0]
        rows = sources * copies
        source_of_row = xp.asarray(np.arange(rows) // copies, dtype=np.int32)  # [rows]
        keep = None if memory_keep is None else xp.ascontiguousarray(memory_keep.reshape(sources, -1))  # [B, S]
        self.ctx = Context(xp, launch=launch, product=product, rows=rows, max_length=max_length,
                           source_of_row=source_of_row, keep=keep)
        emb = decoder.embeddings
        # The tied table is kept column-major (nn/layers.lm_head_layout) and embeddings.cu reads rows: one row-major
        # copy per step object (the vocabulary product reads the original, transposed, as it lies).
        self.word = xp.ascontiguousarray(emb.word.weight.data)  # [V, C]
        self.dtype = self.word.dtype
        self.position, self.token_type, self.embed_norm = emb.position.weight.data, emb.token_type.weight.data, \
            _norm(emb.norm)
        act = KERNEL_ACTIVATIONS[decoder.config.hidden_act]
        self.layers = [BertStepLayer(layer, memory, self.ctx, dtype=self.dtype, act=act) for layer in decoder.layers]
        head = decoder.lm_head
        self.head_dense, self.head_norm, self.head_act = _in_out(head.dense), _norm(head.norm), act
        self.vocab_w, self.vocab_b = head.weight.data.T, head.bias.data  # [C, V]: the tied embeddings, transposed
        c, v = self.word.shape[1], self.word.shape[0]
        self.ids = xp.zeros((rows, 1), dtype=np.int64)  # the step's input tokens, written before each step
        self.x0, self.head_in, self.head_hidden, self.head_out = (self.ctx.empty(rows, c, dtype=self.dtype)
                                                                  for _ in range(4))
        self.zeros_c = self.ctx.empty(rows, c, dtype=self.dtype)  # the head's LayerNorm has no residual
        self.zero_bias = self.ctx.empty(c, dtype=self.dtype)
        self.logits = self.ctx.empty(rows, v, dtype=self.dtype)
        self.length = 0  # host-side count of the steps taken (the bucket choice reads it; the device has lengths)

    @property
    def rows(self):
        return self.ctx.rows

    def write_ids(self, token_ids):
        """Copy the step's tokens ``[rows]`` or ``[rows, 1]`` into the static input buffer."""
        self.ids[...] = self.ctx.xp.asarray(token_ids).reshape(self.rows, 1)

    def run(self, *, max_keys=None):
        """One step from the tokens in ``self.ids``: advances ``lengths`` on the device and fills ``self.logits``
        ``[rows, V]``. No host data goes in, so this is what a CUDA graph captures and replays. ``max_keys``: the
        most positions a row reaches while this run is replayed (the length bucket, graphs.py); max_length if None.
        """
        ctx, xp, launch = self.ctx, self.ctx.xp, self.ctx.launch
        ctx.max_keys = ctx.max_length if max_keys is None else max_keys
        xp.add(ctx.lengths, 1, out=ctx.lengths)
        xp.subtract(ctx.lengths, 1, out=ctx.positions)
        g, b, eps = self.embed_norm
        launch(plans.embed(self.ids, self.word, self.position, positions=ctx.positions, type_table=self.token_type,
                           gamma=g, beta=b, eps=eps, out=self.x0.reshape(self.rows, 1, -1)))  # [rows, 1] -> [.., C]
        x = self.x0
        for layer in self.layers:
            x = layer(x, ctx)
        ctx.product(x, self.head_dense[0], out=self.head_in)  # [rows, C] -> [rows, C]
        launch(plans.bias_activation(self.head_in, self.head_dense[1], self.head_act, out=self.head_hidden))
        launch(plans.add_layer_norm(self.head_hidden, self.zeros_c, self.zero_bias, *self.head_norm,
                                    out=self.head_out))
        return ctx.linear(self.head_out, self.vocab_w, self.vocab_b, self.logits)  # [rows, C] -> [rows, V]

    def step(self, token_ids):
        """Logits ``[rows, V]`` (the static buffer: copy it to keep it) after the tokens ``[rows]``, run eagerly."""
        self.write_ids(token_ids)
        self.length += 1
        return self.run()

    def reorder_beams(self, index):
        """Row i takes the history of row ``index[i]`` (beam search; rows of one source only, so the encoder side
        stays): a gather of the filled cache positions into the static buffers."""
        index = self.ctx.xp.asarray(index)
        for layer in self.layers:
            layer.reorder(index, self.length)
        self.ctx.lengths[...] = self.ctx.lengths[index]
