"""One decoder step of generation on the CPU: the fused forms called directly on arrays, without the autograd.

``model.decode_step`` runs a step through the model's own layers, as Tensor ops under ``no_grad``: about 25 ops a
layer, each a ``Function`` object with its Tensors, checks and broadcasting, a few microseconds of Python each,
around the fused CPU forms that do the work. That is most of a small model's step, and ~7 ms of a bert2bert-base
step of ~31 ms at one row (benchmarks/RESULTS.md). Here the same fused forms are called on the arrays directly,
over buffers made once per generate call:

    x = embed(ids, position)                     # word (* scale) (+ type 0) + position, LayerNorm (GPT-2: no
                                                 #   norm here, its blocks norm their inputs)
    for each layer:                              # post-LN (BERT, BART) / pre-LN (GPT-2): step_layers.py
        q, k, v = ThinProducts(x)                # one prepared call for the three weights (thin.py)
        k, v -> the cache at this position; a = FusedAttention(q, cache)          (attention.py)
        x = LayerNorm(x + a Wo + bo)             # layer_norm.py
        a = FusedAttention(x Wq' + bq', each source's k/v, computed once)
        x = LayerNorm(x + a Wo' + bo')
        x = LayerNorm(x + act(x W1 + b1) W2 + b2)
    logits = head(x)                             # BERT: LayerNorm(act(x Wd + bd)) E^T + b; BART, GPT-2: x E^T

The arithmetic is ``model.decode_step``'s, call for call, so the logits are the same numbers, bit for bit
(tests/fast/test_cpu_decode_step.py): the products in the same column chunks, the attention through the same
``FusedAttention`` (one query per row over the cache laid out as ``nn/cache.py`` lays it out, a source's rows
grouped over its keys as ``nn/source_rows.py`` groups them), the same LayerNorm and activation forms. The
decoder's structure is written a second time here, as the GPU's kernel step writes it (the price of a step without
the autograd, paid once for three families through ``Family``); its arithmetic is not, and a test holds the two
paths to the same bits for every family, so that a change to either shows at once.

The weights are the model's own arrays (``../decoder_weights.py``: views, no copies), so a step made after an
optimizer changed them in place reads the new values; generation makes a step per call (kernel_path.py). Beam
search reorders the cache rows (``reorder_beams``), as ``DecoderCache.reorder_beams`` does.
"""
import math

import numpy as np

from ..decoder_weights import FAMILIES, family_of, max_positions
from .attention import FusedAttention
from .parallel import blas_on_calling_threads
from .step_layers import PostLNLayer, PreLNLayer, encoder_side, norm
from .thin import ThinProducts, is_thin_layout


def unsupported(model, *, max_length):
    """Why ``model`` cannot decode through ``CpuDecodeStep`` up to ``max_length`` positions, or None if it can."""
    if model.config.decoder.model_type not in FAMILIES:
        return f"the {model.config.decoder.model_type!r} decoder has no CPU step"
    if max_length > max_positions(model):  # the eager step raises the position error at the step it happens
        return f"max_length {max_length} exceeds the decoder's {max_positions(model)} positions"
    family = family_of(model)
    weights = [pair[0] for layer in family.layers for pair in (*layer.qkv, layer.self_out, layer.cross_q,
                                                               layer.cross_out, layer.up, layer.down)]
    weights.append(family.vocab[0])
    if not all(is_thin_layout(w) for w in weights):  # weights the model keeps row-major [out, in]
        return "a weight is not laid out [in, out] row-major (nn/layers.thin_input_layout)"
    return None


class CpuDecodeStep:
    """The step of a decoder for ``rows = sources * copies`` rows and up to ``max_length`` positions.

    ``memory`` ``[sources, S, C]`` is the encoder output at the decoder's width (``DecoderCache.memory``),
    ``memory_keep`` its padding mask ``[sources, 1, 1, S]`` or None; each source serves ``copies`` adjacent rows
    (its beams or samples). ``activation(name)`` gives the function of an array that the config's activation name
    stands for (nn/activations.py's forward: this package does not import nn/). ``step(ids)`` is one step.
    """

    def __init__(self, model, memory, memory_keep, *, copies, max_length, activation):
        self.family = family = family_of(model)
        sources = memory.shape[0]
        self.rows, self.max_length, self.length = sources * copies, max_length, 0
        dtype = memory.dtype
        kind = PreLNLayer if family.pre_ln else PostLNLayer
        self.layers = []
        for weights in family.layers:
            hs = weights.self_out[0].shape[0] // weights.heads
            scales = [s if s is not None else 1.0 / math.sqrt(hs) for s in weights.scales]  # as nn/attention's
            k_enc, v_enc = encoder_side(memory, weights)
            self.layers.append(kind(weights, self.rows, max_length, dtype=dtype, act=activation(weights.act),
                                    self_attention=FusedAttention(None, scale=scales[0]),
                                    cross_attention=FusedAttention(memory_keep, scale=scales[1]),
                                    encoder_side=(k_enc, v_enc), copies=copies))
        if family.transform is not None:  # BERT's LM-head transform
            dense, act, self.head_norm = family.transform
            self.head_dense, self.head_act = ThinProducts(self.rows, [dense], dtype=dtype), activation(act)
        self.vocab = ThinProducts(self.rows, [family.vocab], dtype=dtype)  # [rows, C] @ [C, V] -> [rows, V]

    @property
    def batch_size(self):
        return self.rows

    def embed(self, ids):
        """The embedding of ``ids`` ``[rows]`` at this step's position: ``[rows, C]``, as the decoders sum it."""
        e = self.family.embedding
        v = e["word"][ids]  # [rows] -> [rows, C]
        if e["word_scale"] != 1.0:
            v = v * e["word_scale"]
        if e["type_table"] is not None:
            v = v + e["type_table"][0]  # BERT's token type 0
        return v + e["position_table"][self.length + e["position_offset"]]

    def step(self, token_ids):
        """Logits ``[rows, V]`` after the tokens ``[rows]`` (or ``[rows, 1]``): a buffer the next step overwrites
        (copy it to keep it)."""
        ids = np.asarray(token_ids).reshape(self.rows)
        family = self.family
        with blas_on_calling_threads():  # held once for the step, not entered and left by every product
            h = self.embed(ids)  # [rows] -> [rows, C]
            if not family.pre_ln:  # BERT, BART: the embedding's own LayerNorm (GPT-2's blocks norm their input)
                h = norm(h, (family.embedding["gamma"], family.embedding["beta"], family.embedding["eps"]))
            for layer in self.layers:
                h = layer(h, self.length)  # [rows, C] -> [rows, C]
            if family.pre_ln:
                h = norm(h, family.final_norm)  # GPT-2's ln_f
            if family.transform is not None:  # BERT: LayerNorm(act(h Wd + bd))
                h = norm(self.head_act(self.head_dense(h)[0]), self.head_norm)
            (logits,) = self.vocab(h)  # [rows, C] -> [rows, V]
        self.length += 1
        return logits

    def reorder_beams(self, index):
        """Row i takes the history of row ``index[i]`` (beam search: rows of one source only, whose encoder side is
        shared): the filled cache positions of the rows that take another row's."""
        index = np.asarray(index)
        moved = np.nonzero(index != np.arange(index.shape[0]))[0]  # the rows that take another row's history
        if moved.shape[0]:
            for layer in self.layers:
                layer.reorder(moved, index[moved], self.length)
