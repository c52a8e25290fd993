"""A decoder's weights as a decode step reads them: ``(w [in, out], b)`` pairs per layer, for each decoder family.

The model's decoders (models/*_decoder.py) are written for the autograd, each in its own family's names. The two
fused decode steps, the CPU's (``cpu/decode_step.py``) and the GPU's kernel step (``cuda/decode_step.py``), run
every family with one loop, so they read the weights through a ``Family``: the same fields for BERT, BART and
GPT-2, each weight a view of the model's own array (no copy, so nothing can go stale when an optimizer updates
the weights in place). Which copies a step wants (the kernel step fuses q|k|v into one matrix, and keeps the tied
word table row-major for its embedding kernel) is the step's own business.

    family          embedding                          layers                     head
    BERT            LayerNorm(word + type 0 + pos)     post-LN, q/k/v separate    LayerNorm(act(h W + b)) E^T + b
    BART            LayerNorm(word * s + pos[t + 2])   post-LN, q/k/v separate    h E^T
    GPT-2           word + pos (then block 0's ln_1)   pre-LN, c_attn fused       ln_f(h) E^T

Weights come as ``[in, out]``: transposed views of the ``[out, in]`` Linear weights (row-major on NumPy, where
Linear keeps its weights column-major for thin products: nn/layers.thin_input_layout), GPT-2's Conv1D weights as
they are stored. Nothing here computes; the readers go by the decoders' attribute names (duck typing), so this
module imports nothing of ``nn/`` or ``models/``.
"""
import dataclasses

ACTIVATION_FIELD = {"bert": "hidden_act", "bart": "activation_function", "gpt2": "activation_function"}
POSITIONS_FIELD = {"bert": "max_position_embeddings", "bart": "max_position_embeddings", "gpt2": "n_positions"}


def in_out(linear):
    """A Linear's ``(weight [in, out], bias)``: a transposed view of its ``[out, in]`` weight, no copy."""
    return linear.weight.data.T, linear.bias.data


def conv1d(conv):
    """A GPT-2 Conv1D's ``(weight [in, out], bias)``, as stored."""
    return conv.weight.data, conv.bias.data


def norm(layer_norm):
    """A LayerNorm's ``(gamma, beta, eps)``."""
    return layer_norm.weight.data, layer_norm.bias.data, layer_norm.eps


@dataclasses.dataclass
class LayerWeights:
    """One decoder layer's weights as ``(w [in, out], b)`` pairs. ``qkv``: the self-attention's projections whose
    outputs, side by side, are q|k|v (three pairs, or GPT-2's one fused pair); ``cross_kv`` likewise k|v of the
    cross-attention (two pairs, or one). ``norms``: the three ``(gamma, beta, eps)`` in order (post-LN: after
    self-attention, cross-attention and FFN; pre-LN: before them); ``scales``: the self- and cross-attention's
    score scales (None: 1/sqrt(hs)); ``act``: the config's activation name (transformers' ``ACT2FN`` key)."""

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


@dataclasses.dataclass
class Family:
    """What one decoder family's step takes from the model.

    ``embedding``: ``word`` (the tied table ``[V, C]`` as the model keeps it), ``position_table``,
    ``position_offset``, ``word_scale``, ``type_table`` (BERT's, row 0 added; or None), and the norm after the sum
    (``gamma``, ``beta``, ``eps``); ``with_sum`` (GPT-2): that norm is the first block's ln_1, and the step keeps
    the sum itself as the residual stream. ``layers``: LayerWeights; ``pre_ln``; ``final_norm`` (GPT-2's ln_f);
    ``transform`` (BERT's LM-head transform: ``((w, b), act, norm)``, or None); ``vocab``: ``(w [C, V], b or
    None)``, the tied word embeddings transposed (a view)."""

    embedding: dict
    layers: list
    vocab: tuple
    pre_ln: bool = False
    final_norm: tuple = None
    transform: tuple = None


def bert_layer(layer, act):
    sa, ca, ffn = layer.self_attention, layer.cross_attention, layer.ffn
    return LayerWeights(sa.num_heads, (in_out(sa.query), in_out(sa.key), in_out(sa.value)), in_out(sa.out),
                        in_out(ca.query), (in_out(ca.key), in_out(ca.value)), in_out(ca.out), in_out(ffn.up),
                        in_out(ffn.down), (norm(sa.norm), norm(ca.norm), norm(ffn.norm)), act)


def bart_layer(layer, act):
    sa, ca = layer.self_attention, layer.cross_attention
    return LayerWeights(sa.num_heads, (in_out(sa.q_proj), in_out(sa.k_proj), in_out(sa.v_proj)),
                        in_out(sa.out_proj), in_out(ca.q_proj), (in_out(ca.k_proj), in_out(ca.v_proj)),
                        in_out(ca.out_proj), in_out(layer.fc1), in_out(layer.fc2),
                        (norm(layer.self_norm), norm(layer.cross_norm), norm(layer.final_norm)), act)


def gpt2_layer(block, act):  # GPT-2's projections come fused (c_attn): one pair each for q|k|v and k|v
    sa, ca, mlp = block.self_attention, block.cross_attention, block.mlp
    return LayerWeights(sa.num_heads, (conv1d(sa.qkv_attn),), conv1d(sa.proj), conv1d(ca.q_attn),
                        (conv1d(ca.kv_attn),), conv1d(ca.proj), conv1d(mlp.up), conv1d(mlp.down),
                        (norm(block.ln_1), norm(block.ln_cross), norm(block.ln_2)), act, (sa.scale, ca.scale))


def bert_family(decoder):
    act = decoder.config.hidden_act
    emb, head = decoder.embeddings, decoder.lm_head
    gamma, beta, eps = norm(emb.norm)
    return Family(dict(word=emb.word.weight.data, position_table=emb.position.weight.data, position_offset=0,
                       word_scale=1.0, type_table=emb.token_type.weight.data, gamma=gamma, beta=beta, eps=eps,
                       with_sum=False),
                  [bert_layer(layer, act) for layer in decoder.layers], (head.weight.data.T, head.bias.data),
                  transform=(in_out(head.dense), act, norm(head.norm)))


def bart_family(decoder):
    act = decoder.config.activation_function
    gamma, beta, eps = norm(decoder.norm_embedding)
    table = decoder.embed_tokens.weight.data
    offset = decoder.embed_positions.num - decoder.config.max_position_embeddings  # BART's 2
    return Family(dict(word=table, position_table=decoder.embed_positions.weight.data, position_offset=offset,
                       word_scale=decoder.embed_scale, type_table=None, gamma=gamma, beta=beta, eps=eps,
                       with_sum=False),
                  [bart_layer(layer, act) for layer in decoder.layers], (table.T, None))


def gpt2_family(decoder):
    act = decoder.config.activation_function
    layers = [gpt2_layer(block, act) for block in decoder.layers]
    gamma, beta, eps = layers[0].norms[0]  # the first block's ln_1, right after the embedding
    table = decoder.wte.weight.data
    return Family(dict(word=table, position_table=decoder.wpe.weight.data, position_offset=0, word_scale=1.0,
                       type_table=None, gamma=gamma, beta=beta, eps=eps, with_sum=True),
                  layers, (table.T, None), pre_ln=True, final_norm=norm(decoder.ln_f))


FAMILIES = {"bert": bert_family, "bart": bart_family, "gpt2": gpt2_family}


def family_of(model):
    """The ``Family`` of ``model``'s decoder (its ``model_type`` one of ``FAMILIES``)."""
    return FAMILIES[model.config.decoder.model_type](model.decoder)


def max_positions(model):
    """The most positions the decoder's position table holds."""
    config = model.config.decoder
    return getattr(config, POSITIONS_FIELD[config.model_type])
