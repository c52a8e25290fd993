"""The BERT decoder of a bert2bert model: BERT layers made causal, with cross-attention, and an LM head.

    h = BertEmbeddings(ids)
    for each layer:
        h = LayerNorm(h + CausalSelfAttention(h))             # "attention.*"
        h = LayerNorm(h + CrossAttention(h, encoder_output))  # "crossattention.*": queries from h, keys/values
        h = LayerNorm(h + FFN(h))                             #   from the encoder's last hidden state
    logits = W_emb LayerNorm(act(W h)) + b                    # "cls.predictions.*", W_emb tied to the word embeddings

This is transformers' ``BertLMHeadModel`` with ``is_decoder=True, add_cross_attention=True``. Its keys are
``bert.*`` and ``cls.predictions.*``; a plain ``BertModel`` checkpoint (keys without ``bert.``) can serve as its
body too, which is how a bert2bert model is warm-started from two BERT checkpoints: the cross-attention blocks and
the LM-head transform are then missing from the checkpoint and start from random values.
"""
from ..nn.activations import get_activation
from ..nn.cache import run_decoder_layers
from ..nn.functional import linear
from ..nn.layers import LayerNorm, Linear, lm_head_layout
from ..nn.weights import zeros
from .encoder import BertAttention, BertEmbeddings, BertFeedForward


class BertDecoderLayer:
    def __init__(self, view, config, state):
        self.self_attention = BertAttention(view.sub("attention"), config, state)
        self.cross_attention = BertAttention(view.sub("crossattention"), config, state)
        self.ffn = BertFeedForward(view, config, state)

    def __call__(self, x, self_keep, memory, memory_keep, *, cache=None, start=0):
        x = self.self_attention(x, self_keep, cache=cache, start=start)
        x = self.cross_attention(x, memory_keep, memory=memory, cache=cache)
        return self.ffn(x)


class BertLMHead:
    """``cls.predictions``: transform (dense, activation, LayerNorm), then a projection onto the vocabulary.

    Why no weight of its own: the projection *is* the word-embedding table (weight tying, as in the original BERT),
    so gradients from the input embedding and from the output projection add up in one tensor, and checkpoints do
    not store ``cls.predictions.decoder.weight`` at all. The output bias is ``cls.predictions.bias``.
    """

    def __init__(self, view, config, word_embeddings):
        c, std = config.hidden_size, config.initializer_range
        self.dense = Linear(view.sub("transform.dense"), c, c, std=std)
        self.act = get_activation(config.hidden_act)
        self.norm = LayerNorm(view.sub("transform.LayerNorm"), c, eps=config.layer_norm_eps)
        self.weight = lm_head_layout(word_embeddings)  # [V, C], shared
        self.bias = view.param("bias", (config.vocab_size,), init=zeros)

    def __call__(self, h):
        return linear(self.transform(h), self.weight, self.bias)  # [B, T, C] @ [C, V] -> [B, T, V]

    def transform(self, h):
        """What the projection onto the vocabulary multiplies: LayerNorm(act(dense(h))), ``[B, T, C]``."""
        return self.norm(self.act(self.dense(h)))


class BertDecoder:
    """Decoder ids ``[B, T]`` + encoder output ``[B, S, C]`` -> logits ``[B, T, V]``."""

    def __init__(self, view, config, state, *, tied_to=None):
        self.config, self.state = config, state
        # Read the body from "bert.*" if the checkpoint has it, else from the top level (a BertModel checkpoint).
        body = view.sub("bert", source_name="bert" if view.store.has_prefix(view.source_prefix + "bert.") else "")
        if tied_to is not None:  # tie_encoder_decoder: reuse the encoder's tensors wherever the names match
            body = body.tie(tied_to)
        self.embeddings = BertEmbeddings(body.sub("embeddings"), config, state)
        self.layers = [BertDecoderLayer(body.sub(f"encoder.layer.{i}"), config, state)
                       for i in range(config.num_hidden_layers)]
        self.lm_head = BertLMHead(view.sub("cls.predictions"), config, self.embeddings.word.weight)

    def vocab_parameters(self):
        """The parameters whose rows are indexed by token id: the word embeddings (also the LM head's weight)
        and the LM head's bias."""
        return [self.embeddings.word.weight, self.lm_head.bias]

    def vocab_projection(self):
        """``(weight [V, C], bias [V])`` of the projection onto the vocabulary, the last step of the LM head."""
        return self.lm_head.weight, self.lm_head.bias

    def __call__(self, ids, keep, memory, memory_keep, *, cache=None):
        """``keep``: decoder padding mask ``[B, 1, 1, T]`` or None; ``memory_keep``: encoder padding mask or None.

        With a ``cache`` (a DecoderCache, inference only), ``ids`` are the next positions after the
        ``cache.length`` already decoded: their keys/values are appended and the cache advances.
        """
        return linear(self.hidden(ids, keep, memory, memory_keep, cache=cache), *self.vocab_projection())

    def hidden(self, ids, keep, memory, memory_keep, *, cache=None):
        """What ``vocab_projection`` multiplies: ``[B, T] -> [B, T, C]``, the LM head's transform included."""
        start = cache.length if cache is not None else 0
        h = self.embeddings(ids, past_length=start, name="decoder_input_ids")  # [B, T] -> [B, T, C]
        h = run_decoder_layers(self.layers, h, keep, memory, memory_keep, cache=cache, records=self.state.records)
        self.state.records.hidden_state(h)  # the last hidden state
        return self.lm_head.transform(h)
