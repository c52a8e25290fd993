"""The BERT encoder: embeddings, then a stack of post-LN transformer layers.

    h = LayerNorm(word[ids] + token_type[0] + position[0..T))
    for each layer:
        h = LayerNorm(h + SelfAttention(h))      # "attention.output.LayerNorm": the residual is inside the norm
        h = LayerNorm(h + W2 act(W1 h))          # "output.LayerNorm"

BERT normalises *after* each residual addition (post-LN), unlike GPT-2's pre-LN blocks. ``BertAttention`` and
``BertFeedForward`` are shared with the BERT decoder (``bert_decoder.py``), whose layers add causal masking and a
cross-attention block between the two. Checkpoint names (``attention.self.query``, ``attention.output.dense``, ...)
are those of transformers' ``BertModel``.
"""
from ..core.backend import get_array_module
from ..nn.activations import get_activation
from ..nn.functional import linears
from ..nn.attention import (causal_mask, combine_masks, keys_values, merge_heads, scaled_dot_product_attention,
                            split_heads)
from ..nn.layers import Dropout, Embedding, LayerNorm, Linear, check_positions
from ..nn.packing import Packing
from ..nn.record import NOTHING
from ..nn.weights import normal, zeros


class BertEmbeddings:
    """Word + token-type + absolute position embeddings, then LayerNorm and dropout."""

    def __init__(self, view, config, state):
        c, std = config.hidden_size, config.initializer_range
        self.word = Embedding(view.sub("word_embeddings"), config.vocab_size, c, std=std,
                              padding_idx=config.pad_token_id)
        self.position = Embedding(view.sub("position_embeddings"), config.max_position_embeddings, c, std=std)
        self.token_type = Embedding(view.sub("token_type_embeddings"), config.type_vocab_size, c, std=std)
        self.norm = LayerNorm(view.sub("LayerNorm"), c, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob, state)

    def __call__(self, ids, *, past_length=0, name="input_ids"):
        xp = get_array_module(ids)
        t = ids.shape[1]
        check_positions(past_length + t, self.position.num, name=name)
        positions = xp.arange(past_length, past_length + t)[None, :]  # [1, T]
        token_types = positions * 0  # BERT's segment ids: all 0 for a single-segment input, [1, T]
        h = self.word(ids) + self.token_type(token_types)  # [B, T] -> [B, T, C]
        h = h + self.position(positions)  # [B, T, C] + [1, T, C]
        return self.dropout(self.norm(h))


class BertAttention:
    """Multi-head attention with BERT's output block: LayerNorm(x + dropout(Wo attn(x, memory))).

    Self-attention when ``memory`` is None, cross-attention over ``memory`` (the encoder's output) otherwise.
    """

    def __init__(self, view, config, state):
        c, std = config.hidden_size, config.initializer_range
        self.num_heads = config.num_attention_heads
        self.query = Linear(view.sub("self.query"), c, c, std=std)
        self.key = Linear(view.sub("self.key"), c, c, std=std)
        self.value = Linear(view.sub("self.value"), c, c, std=std)
        self.out = Linear(view.sub("output.dense"), c, c, std=std)
        self.norm = LayerNorm(view.sub("output.LayerNorm"), c, eps=config.layer_norm_eps)
        self.attention_dropout_p, self.state = config.attention_probs_dropout_prob, state
        self.dropout = Dropout(config.hidden_dropout_prob, state)

    def __call__(self, x, keep, *, memory=None, cache=None, start=0, packing=None):
        """``cache`` (a LayerCache, inference only): self-attention appends this step's keys/values at position
        ``start``; cross-attention computes its keys/values from ``memory`` once and reuses them afterwards.
        ``packing`` (an nn.packing.Packing, self-attention only): x holds the real tokens' rows ``[N, C]``."""
        if memory is None:  # query, key and value from x: one op (functional.Linears)
            q, k, v = linears(x, [self.query, self.key, self.value])  # [B, T, C] (or [N, C]) each
            if packing is not None:
                q, k, v = (packing.unpack(y) for y in (q, k, v))  # [N, C] -> [B, T, C], zeros at the padding
            q, k, v = (split_heads(y, self.num_heads) for y in (q, k, v))  # [B, T, C] -> [B, nh, T, hs] each
            k, v = keys_values(lambda _: (k, v), x, cache=cache, start=start)  # [B, nh, S, hs] each
        else:
            q = split_heads(self.query(x), self.num_heads)  # [B, T, C] -> [B, nh, T, hs]
            k, v = keys_values(self._project_kv, x, memory=memory, cache=cache)  # [B, nh, S, hs] each
        p = self.attention_dropout_p if self.state.training else 0.0  # BERT drops attention probabilities too
        y = scaled_dot_product_attention(q, k, v, keep, dropout_p=p, rng=self.state.rng,  # -> [B, nh, T, hs]
                                         probabilities_to=self.state.records.probabilities(cross=memory is not None),
                                         padded_queries_unused=packing is not None)
        y = merge_heads(y)  # [B, nh, T, hs] -> [B, T, C]
        if packing is not None:
            y = packing.pack(y)  # [B, T, C] -> [N, C]
        return self.norm(x + self.dropout(self.out(y), packing=packing))

    def _project_kv(self, source):
        k, v = linears(source, [self.key, self.value])  # [B, S, C] each
        return split_heads(k, self.num_heads), split_heads(v, self.num_heads)  # -> [B, nh, S, hs] each


class BertFeedForward:
    """LayerNorm(x + dropout(W2 act(W1 x))): "intermediate.dense" then "output.dense" + "output.LayerNorm"."""

    def __init__(self, view, config, state):
        c, f, std = config.hidden_size, config.intermediate_size, config.initializer_range
        self.up = Linear(view.sub("intermediate.dense"), c, f, std=std)
        self.act = get_activation(config.hidden_act)
        self.down = Linear(view.sub("output.dense"), f, c, std=std)
        self.norm = LayerNorm(view.sub("output.LayerNorm"), c, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob, state)

    def __call__(self, x, *, packing=None):
        """x ``[B, T, C]``, or the real tokens' rows ``[N, C]`` of ``packing`` (which only dropout needs)."""
        h = self.act(self.up(x))  # [B, T, C] -> [B, T, 4C]
        return self.norm(x + self.dropout(self.down(h), packing=packing))  # [B, T, 4C] -> [B, T, C]


class BertEncoderLayer:
    def __init__(self, view, config, state):
        self.attention = BertAttention(view.sub("attention"), config, state)
        self.ffn = BertFeedForward(view, config, state)

    def __call__(self, x, keep, *, packing=None):
        x = self.attention(x, keep, packing=packing)
        return self.ffn(x, packing=packing)  # row by row: the same on packed rows


class BertEncoder:
    """transformers' ``BertModel`` as an encoder: ids ``[B, S]`` -> hidden states ``[B, S, C]``.

    The pooler (``pooler.dense``) is kept as a buffer only so that checkpoints round-trip: a sequence-to-sequence
    model never uses it, and it is not a trainable parameter here.
    """

    def __init__(self, view, config, state):
        self.config, self.state = config, state
        if not view.store.has_prefix(view.source_prefix + "embeddings.") and \
                view.store.has_prefix(view.source_prefix + "bert.embeddings."):
            view = view.reading_from("bert")  # a BertForMaskedLM / BertLMHeadModel checkpoint as the encoder
        self.embeddings = BertEmbeddings(view.sub("embeddings"), config, state)
        self.layers = [BertEncoderLayer(view.sub(f"encoder.layer.{i}"), config, state)
                       for i in range(config.num_hidden_layers)]
        c, std = config.hidden_size, config.initializer_range
        view.sub("pooler.dense").buffer("weight", (c, c), init=normal(std))
        view.sub("pooler.dense").buffer("bias", (c,), init=zeros)

    def vocab_parameters(self):
        """The parameters whose rows are indexed by token id (what trimming a vocabulary slices)."""
        return [self.embeddings.word.weight]

    def __call__(self, ids, keep, *, pack_padding=False):
        """Hidden states ``[B, S, C]``. ``pack_padding=True``: the layers run on the real tokens' rows only
        (nn/packing.py) and the padded positions come out as zeros, for a caller that never reads them; done
        where the padding is worth it, and never while hidden states or attentions are being recorded."""
        if self.config.is_decoder:
            # Why: transformers' from_encoder_decoder_configs(cfg, cfg) flags the *shared* config object as a
            # decoder, and a BertModel with is_decoder=True attends causally even as an encoder. Such checkpoints
            # exist; computing what transformers computes means honouring the flag.
            xp = get_array_module(ids)
            keep = combine_masks(causal_mask(xp, ids.shape[1], ids.shape[1]), keep)
        h = self.embeddings(ids)  # [B, S] -> [B, S, C]
        packing = Packing.worth_it(keep) if pack_padding and self.state.records is NOTHING else None
        if packing is not None:
            h = packing.pack(h)  # [B, S, C] -> [N, C]
        for layer in self.layers:
            self.state.records.hidden_state(h)  # what enters each layer (output_hidden_states)
            h = layer(h, keep, packing=packing)
        self.state.records.hidden_state(h)
        return h if packing is None else packing.unpack(h)  # [N, C] -> [B, S, C]
