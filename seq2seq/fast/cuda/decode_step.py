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
of the array module (one small kernel each on CuPy): ``ctx.elementwise(xp.add, y, b, out=y)``. Weights are the
model's own arrays (``W.T`` views of its ``[out, in]`` Linear weights), read when the step is made, with copies of:
the fused ``[Wq|Wk|Wv]`` and ``[Wk'|Wv']`` of each layer, and the (column-major) tied word table in row-major
order for the embedding kernel. Those copies do not follow later changes of the weights by themselves: ``refill``
writes them again (generate does, each call, for the step a model keeps: generation/kernel_path.py).

Beam search reorders the cache by a gather of rows, ``take`` into the static buffers (array indexing, no kernel of
ours, outside any graph). BART's decoder is built the same way (post-LN; its embeddings scaled and offset, its LM
head the tied product alone); GPT-2's is pre-LN (step_layers.py), its embedding fusing the first block's ln_1, its
LM head reading what the last block's ln_f wrote. A ``Family`` (../decoder_weights.py, shared with the CPU's step)
holds what differs: the embedding, the layers and the head.
"""
import functools

import numpy as np

from ...core.backend import get_array_module
from ...core.errors import InputError
from ..decoder_weights import ACTIVATION_FIELD, FAMILIES, family_of, max_positions
from . import plans
from .step_layers import KERNEL_ACTIVATIONS, PostLNStepLayer, PreLNStepLayer

KERNEL_DTYPES = ("float32", "float16")


def unsupported(model, *, max_length):
    """Why ``model`` cannot decode through ``DecodeStep`` up to ``max_length`` positions, or None if it can."""
    config, decoder = model.config.decoder, model.decoder
    kind = config.model_type
    if kind not in FAMILIES:
        return f"the {kind!r} decoder has no kernel step (only {sorted(FAMILIES)})"
    dtype = model.parameters()[0].data.dtype.name
    act = getattr(config, ACTIVATION_FIELD[kind])
    head_size = decoder.vocab_parameters()[0].data.shape[1] // decoder.layers[0].self_attention.num_heads
    positions = max_positions(model)
    reasons = [(dtype not in KERNEL_DTYPES, f"dtype {dtype} has no kernels (only {KERNEL_DTYPES})"),
               (act not in KERNEL_ACTIVATIONS, f"activation {act!r} has no kernel"),
               (head_size > plans.DA_MAX_HEAD, f"head size {head_size} above {plans.DA_MAX_HEAD}"),
               (max_length > positions, f"max_length {max_length} exceeds the decoder's {positions} positions")]
    return next((reason for bad, reason in reasons if bad), None)


class Context:
    """What every layer of a step shares: the array module, the rows' lengths and sources, ``max_keys`` (the
    self-attention's shared-memory bound: the step's length bucket), and the three ways a step computes on the
    device: ``launch`` (a plans.Launch), ``product`` and ``elementwise`` (a ufunc of the array module).

    Every device operation of ``DecodeStep.run`` goes through these three, so that the CPU's stand-in for a stream
    capture (graphs.Recorder) can set ``tape`` to a list: the operations are then noted with their arguments (the
    arrays, hence the addresses, and the scalars of that moment), not run, and a replay runs that tape as a CUDA
    graph replays its kernels: a step that read anything else from the host would replay wrong on the CPU too."""

    def __init__(self, xp, *, launch, product, rows, max_length, source_of_row, keep):
        self.xp, self._launch, self._product = xp, launch, product
        self.rows, self.max_length = rows, max_length
        self.lengths = xp.zeros((rows,), dtype=np.int32)  # positions filled, the step's own included
        self.positions = xp.zeros((rows,), dtype=np.int64)  # the step's position: lengths - 1
        self.source_of_row, self.keep = source_of_row, keep  # [rows] int32; [sources, S] bool or None
        self.max_keys = max_length
        self.tape = None  # a list while graphs.Recorder captures

    def empty(self, *shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def launch(self, spec):
        """Run a ``plans.Launch``; its outputs."""
        return self._run(spec.outputs, self._launch, spec)

    def product(self, x, w, out=None):
        """``x @ w`` (into ``out``)."""
        if out is None and self.tape is not None:
            raise InputError("a product recorded on a tape needs its output buffer")
        return self._run(out, self._product, x, w, out=out)

    def elementwise(self, ufunc, *inputs, out):
        """``ufunc(*inputs, out=out)``: one elementwise kernel of the array module."""
        return self._run(out, ufunc, *inputs, out=out)

    def _run(self, result, fn, *args, **kwargs):
        if self.tape is None:
            return fn(*args, **kwargs)
        self.tape.append(functools.partial(fn, *args, **kwargs))
        return result

    def linear(self, x, w, b, out):
        """``x @ w + b`` into ``out``: a product, then the bias added in place (none if b is None)."""
        self.product(x, w, out=out)
        if b is not None:
            self.elementwise(self.xp.add, out, b, out=out)
        return out


class DecodeStep:
    """The kernel step of a decoder for ``rows = sources * copies`` rows and up to ``max_length`` positions.

    ``memory`` ``[sources, S, C]`` is the encoder output at the decoder's width (``DecoderCache.memory``, kept once
    per source), ``memory_keep`` its padding mask ``[sources, 1, 1, S]`` or None; each source serves
    ``copies`` adjacent rows (its beams or samples). ``step(ids)`` is one step; ``run()`` is what a graph captures.
    """

    def __init__(self, model, memory, memory_keep, *, copies, max_length, launch, product):
        reason = unsupported(model, max_length=max_length)
        if reason is not None:
            raise InputError(f"DecodeStep: {reason}")
        xp = get_array_module(memory)
        sources = memory.shape[0]
        rows = sources * copies
        self.memory_shape = tuple(memory.shape)  # [sources, S, C]: what refill accepts
        source_of_row = xp.asarray(np.arange(rows) // copies, dtype=np.int32)  # [rows]
        keep = None if memory_keep is None else xp.ascontiguousarray(memory_keep.reshape(sources, -1))  # [B, S]
        self.ctx = Context(xp, launch=launch, product=product, rows=rows, max_length=max_length,
                           source_of_row=source_of_row, keep=keep)
        self.family = family_of(model)
        # embeddings.cu reads rows of the word table, which the model keeps column-major (nn/layers.lm_head_layout):
        # a row-major copy of its own (the vocabulary product reads the original, transposed, as it lies)
        self.word = xp.ascontiguousarray(self.family.embedding["word"])  # [V, C]
        self.dtype, (v, c) = self.word.dtype, self.word.shape
        kind = PreLNStepLayer if self.family.pre_ln else PostLNStepLayer
        self.layers = [kind(weights, memory, self.ctx, dtype=self.dtype) for weights in self.family.layers]
        self.ids = xp.zeros((rows, 1), dtype=np.int64)  # the step's input tokens, written before each step
        self.x0, self.a0, self.head_in, self.head_hidden, self.head_out = (self.ctx.empty(rows, c, dtype=self.dtype)
                                                                           for _ in range(5))
        self.zeros_c = self.ctx.empty(rows, c, dtype=self.dtype)  # BERT's head norm has no residual
        self.zero_bias = self.ctx.empty(c, dtype=self.dtype)
        self.logits = self.ctx.empty(rows, v, dtype=self.dtype)
        self.length = 0  # host-side count of the steps taken (the bucket choice reads it; the device has lengths)

    @property
    def rows(self):
        return self.ctx.rows

    def refill(self, model, memory, memory_keep):
        """Start over for new sources of the same shape (and the same ``memory_keep`` presence), with the model's
        current weights: everything is written into the arrays this step already has, so graphs captured for it
        stay valid. The model's weight arrays must be the ones the step was made from (changed in place at most)."""
        if tuple(memory.shape) != self.memory_shape or (memory_keep is None) != (self.ctx.keep is None):
            raise InputError(f"refill: the step was made for sources {self.memory_shape} "
                             f"{'without' if self.ctx.keep is None else 'with'} a mask, got {tuple(memory.shape)} "
                             f"{'without' if memory_keep is None else 'with'} one")
        # the step's own copies (fused q|k|v and cross k|v, the row-major word table) written in place, with no
        # new copy made first: ~235 MB less to allocate for bert2bert-base
        self.family = family_of(model)
        self.word[...] = self.family.embedding["word"]
        for layer, weights in zip(self.layers, self.family.layers):
            layer.refill(weights, memory, self.ctx)
        if memory_keep is not None:
            self.ctx.keep[...] = memory_keep.reshape(self.ctx.keep.shape)
        self.ctx.lengths[...] = 0
        self.length = 0

    def write_ids(self, token_ids):
        """Copy the step's tokens ``[rows]`` or ``[rows, 1]`` into the static input buffer."""
        self.ids[...] = self.ctx.xp.asarray(token_ids).reshape(self.rows, 1)

    def run(self, *, max_keys=None):
        """One step from the tokens in ``self.ids``: advances ``lengths`` on the device and fills ``self.logits``
        ``[rows, V]``. No host data goes in, so this is what a CUDA graph captures and replays. ``max_keys``: the
        most positions a row reaches while this run is replayed (the length bucket, graphs.py); max_length if None.
        """
        ctx, xp, family = self.ctx, self.ctx.xp, self.family
        ctx.max_keys = ctx.max_length if max_keys is None else max_keys
        ctx.elementwise(xp.add, ctx.lengths, 1, out=ctx.lengths)
        ctx.elementwise(xp.subtract, ctx.lengths, 1, out=ctx.positions)
        rows = self.rows
        if family.pre_ln:  # the residual stream x and its normed copy a, through every block
            x, a = self.x0.reshape(rows, 1, -1), self.a0.reshape(rows, 1, -1)  # [rows, C] -> [rows, 1, C] views
            ctx.launch(plans.embed(self.ids, positions=ctx.positions, out=(x, a), **self._embedding()))
            x, a = self.x0, self.a0
            norms = [layer.norms[0] for layer in family.layers[1:]] + [family.final_norm]
            for layer, next_norm in zip(self.layers, norms):
                x, a = layer(x, a, ctx, next_norm)
            h = a  # ln_f(x)
        else:
            ctx.launch(plans.embed(self.ids, positions=ctx.positions, out=self.x0.reshape(rows, 1, -1),
                                   **self._embedding()))
            h = self.x0
            for layer in self.layers:
                h = layer(h, ctx)
        if family.transform is not None:  # BERT: LayerNorm(act(h @ Wd + bd))
            (w, b), act, head_norm = family.transform
            ctx.product(h, w, out=self.head_in)  # [rows, C] -> [rows, C]
            ctx.launch(plans.bias_activation(self.head_in, b, KERNEL_ACTIVATIONS[act], out=self.head_hidden))
            h = ctx.launch(plans.add_layer_norm(self.head_hidden, self.zeros_c, self.zero_bias, *head_norm,
                                                out=self.head_out))
        return ctx.linear(h, *family.vocab, self.logits)  # [rows, C] -> [rows, V]

    def _embedding(self):
        """plans.embed's keywords: the family's, the word table our row-major copy."""
        return {**self.family.embedding, "word": self.word}

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
