"""BART's decoder as the decoder of an encoder-decoder model (bert2bart): post-LN layers with encoder attention.

    h = LayerNorm_emb(embed_scale * embed_tokens[ids] + embed_positions[positions + 2])
    for each layer "layers.{i}":
        h = LayerNorm(h + SelfAttention(h))                 # "self_attn.*", causal; "self_attn_layer_norm"
        h = LayerNorm(h + EncoderAttention(h, encoder_out)) # "encoder_attn.*"; "encoder_attn_layer_norm"
        h = LayerNorm(h + fc2(act(fc1(h))))                 # "final_layer_norm"
    logits = h @ embed_tokens^T                             # tied, no bias

Two BART quirks: learned positions are looked up at ``position + 2`` (the table has two extra rows, a leftover
of fairseq, where positions started after the padding index), and token embeddings are multiplied by
sqrt(d_model) when ``scale_embedding`` is set. This is transformers' ``BartForCausalLM`` (keys ``model.decoder.*``);
the decoder half of a ``BartForConditionalGeneration`` checkpoint loads too, its token embeddings then coming from
the shared table ``model.shared.weight``. ``final_logits_bias`` belongs to BartForConditionalGeneration's head, which
BartForCausalLM (and so transformers' bert2bart) does not use: it is reported as unused.
"""
import math

from ..core.backend import get_array_module
from ..nn.activations import get_activation
from ..nn.attention import keys_values, merge_heads, scaled_dot_product_attention, split_heads
from ..nn.cache import run_decoder_layers
from ..nn.functional import linear, linears
from ..nn.layers import Dropout, Embedding, LayerNorm, Linear, check_positions, lm_head_layout

POSITION_OFFSET = 2
LAYER_NORM_EPS = 1e-5  # BART uses torch.nn.LayerNorm's default


class BartAttention:
    """Multi-head attention with separate q/k/v projections and an output projection, no norm inside."""

    def __init__(self, view, config, state):
        c, std = config.d_model, config.init_std
        self.num_heads = config.decoder_attention_heads
        self.q_proj = Linear(view.sub("q_proj"), c, c, std=std)
        self.k_proj = Linear(view.sub("k_proj"), c, c, std=std)
        self.v_proj = Linear(view.sub("v_proj"), c, c, std=std)
        self.out_proj = Linear(view.sub("out_proj"), c, c, std=std)
        self.attention_dropout_p, self.state = config.attention_dropout, state

    def __call__(self, x, keep, *, memory=None, cache=None, start=0):
        if memory is None:  # query, key and value from x: one op (functional.Linears)
            q, k, v = (split_heads(y, self.num_heads) for y in linears(x, [self.q_proj, self.k_proj, self.v_proj]))
            k, v = keys_values(lambda _: (k, v), x, cache=cache, start=start)
        else:
            q = split_heads(self.q_proj(x), self.num_heads)  # [B, T, C] -> [B, nh, T, hs]
            k, v = keys_values(self._project_kv, x, memory=memory, cache=cache)
        p = self.attention_dropout_p if self.state.training else 0.0
        y = scaled_dot_product_attention(q, k, v, keep, dropout_p=p, rng=self.state.rng,
                                         probabilities_to=self.state.records.probabilities(cross=memory is not None))
        return self.out_proj(merge_heads(y))  # [B, nh, T, hs] -> [B, T, C]

    def _project_kv(self, source):
        k, v = linears(source, [self.k_proj, self.v_proj])  # [B, S, C] each
        return split_heads(k, self.num_heads), split_heads(v, self.num_heads)  # -> [B, nh, S, hs] each


class BartDecoderLayer:
    def __init__(self, view, config, state):
        c, std = config.d_model, config.init_std
        self.self_attention = BartAttention(view.sub("self_attn"), config, state)
        self.self_norm = LayerNorm(view.sub("self_attn_layer_norm"), c, eps=LAYER_NORM_EPS)
        self.cross_attention = BartAttention(view.sub("encoder_attn"), config, state)
        self.cross_norm = LayerNorm(view.sub("encoder_attn_layer_norm"), c, eps=LAYER_NORM_EPS)
        self.fc1 = Linear(view.sub("fc1"), c, config.decoder_ffn_dim, std=std)
        self.act = get_activation(config.activation_function)
        self.fc2 = Linear(view.sub("fc2"), config.decoder_ffn_dim, c, std=std)
        self.final_norm = LayerNorm(view.sub("final_layer_norm"), c, eps=LAYER_NORM_EPS)
        self.dropout = Dropout(config.dropout, state)
        self.activation_dropout = Dropout(config.activation_dropout, state)

    def __call__(self, x, self_keep, memory, memory_keep, *, cache=None, start=0):
        x = self.self_norm(x + self.dropout(self.self_attention(x, self_keep, cache=cache, start=start)))
        x = self.cross_norm(x + self.dropout(self.cross_attention(x, memory_keep, memory=memory, cache=cache)))
        h = self.activation_dropout(self.act(self.fc1(x)))  # [B, T, C] -> [B, T, F]
        return self.final_norm(x + self.dropout(self.fc2(h)))  # [B, T, F] -> [B, T, C]


class BartDecoder:
    """Decoder ids ``[B, T]`` + encoder output ``[B, S, C]`` -> logits ``[B, T, V]`` (same interface as BertDecoder)."""

    def __init__(self, view, config, state, *, tied_to=None):
        self.config, self.state = config, state
        body = view.sub("model").sub("decoder")
        c, std = config.d_model, config.init_std
        tokens = body.sub("embed_tokens")
        shared = view.source_prefix + "model.shared."
        if not view.store.has_prefix(tokens.source_prefix) and view.store.has_prefix(shared):
            tokens = tokens.reading_at(shared)  # BartForConditionalGeneration: the table shared with the encoder
        self.embed_tokens = Embedding(tokens, config.vocab_size, c, std=std, padding_idx=config.pad_token_id)
        lm_head_layout(self.embed_tokens.weight)  # also the LM head
        self.embed_scale = math.sqrt(c) if config.scale_embedding else 1.0
        self.embed_positions = Embedding(body.sub("embed_positions"), config.max_position_embeddings + POSITION_OFFSET,
                                         c, std=std)
        self.norm_embedding = LayerNorm(body.sub("layernorm_embedding"), c, eps=LAYER_NORM_EPS)
        self.dropout = Dropout(config.dropout, state)
        self.layers = [BartDecoderLayer(body.sub(f"layers.{i}"), config, state) for i in range(config.decoder_layers)]

    def vocab_parameters(self):
        """The parameters whose rows are indexed by token id: the token embeddings (also the LM head)."""
        return [self.embed_tokens.weight]

    def vocab_projection(self):
        """``(weight [V, C], None)``: the LM head is the token embedding table (tied), no bias."""
        return self.embed_tokens.weight, None

    def __call__(self, ids, keep, memory, memory_keep, *, cache=None):
        h = self.hidden(ids, keep, memory, memory_keep, cache=cache)  # [B, T] -> [B, T, C]
        return linear(h, *self.vocab_projection())  # tied LM head: [B, T, C] @ [C, V] -> [B, T, V]

    def hidden(self, ids, keep, memory, memory_keep, *, cache=None):
        """What ``vocab_projection`` multiplies: ``[B, T] -> [B, T, C]``, the last layer's output."""
        xp = get_array_module(ids)
        start, t = (cache.length if cache is not None else 0), ids.shape[1]
        check_positions(start + t, self.config.max_position_embeddings, name="decoder_input_ids")
        positions = xp.arange(start, start + t)[None, :] + POSITION_OFFSET  # [1, T]
        h = self.embed_tokens(ids)  # [B, T] -> [B, T, C]
        if self.embed_scale != 1.0:
            h = h * self.embed_scale
        h = self.dropout(self.norm_embedding(h + self.embed_positions(positions)))
        h = run_decoder_layers(self.layers, h, keep, memory, memory_keep, cache=cache, records=self.state.records)
        self.state.records.hidden_state(h)  # the last hidden state
        return h
