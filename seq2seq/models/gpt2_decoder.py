"""The GPT-2 decoder with cross-attention (bert2gpt2): pre-LN blocks, learned positions, an LM head tied to ``wte``.

    h = wte[ids] + wpe[positions]
    for each block "h.{i}":
        h = h + SelfAttention(ln_1(h))                         # "attn.*": one fused c_attn makes q, k and v
        h = h + CrossAttention(ln_cross_attn(h), encoder_out)  # "crossattention.*": q_attn makes q, c_attn k and v
        h = h + MLP(ln_2(h))                                   # "mlp.c_fc", "mlp.c_proj", gelu_new
    logits = ln_f(h) @ wte^T                                   # tied: no lm_head.weight of its own, no bias

GPT-2 normalises *before* each sub-block (pre-LN) and adds the residual after, where BERT normalises after the
addition; hence a separate class rather than a flag on the BERT layer. Its linear layers are ``Conv1D``: weights
stored ``[in, out]``. This is transformers' ``GPT2LMHeadModel`` with ``add_cross_attention=True``; checkpoints of
``GPT2LMHeadModel`` (keys ``transformer.*``) and ``GPT2Model`` (no prefix) both load, and the causal-mask buffers
they may carry (``attn.bias``, ``attn.masked_bias``) are skipped.
"""
import math

from ..core.backend import get_array_module
from ..nn.activations import get_activation
from ..nn.attention import keys_values, merge_heads, scaled_dot_product_attention, split_heads
from ..nn.cache import run_decoder_layers
from ..nn.functional import linear
from ..nn.layers import Conv1D, Dropout, Embedding, LayerNorm, check_positions, lm_head_layout


class Gpt2Attention:
    """Multi-head attention, causal self-attention or cross-attention, followed by the ``c_proj`` projection."""

    def __init__(self, view, config, state, *, cross, layer_index):
        c, std = config.n_embd, config.initializer_range
        self.num_heads, self.width = config.n_head, c
        if cross:
            self.q_attn = Conv1D(view.sub("q_attn"), c, c, std=std)
            self.kv_attn = Conv1D(view.sub("c_attn"), c, 2 * c, std=std)  # [C] -> [2C]: keys, then values
        else:
            self.qkv_attn = Conv1D(view.sub("c_attn"), c, 3 * c, std=std)  # [C] -> [3C]: q, k, v side by side
        # GPT-2's initialisation scales the projections into the residual stream by 1/sqrt(2 * layers).
        self.proj = Conv1D(view.sub("c_proj"), c, c, std=std / math.sqrt(2 * config.n_layer))
        self.scale = (c // self.num_heads) ** -0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scale /= layer_index + 1
        self.attention_dropout_p, self.state = config.attn_pdrop, state
        self.dropout = Dropout(config.resid_pdrop, state)

    def __call__(self, x, keep, *, memory=None, cache=None, start=0):
        c, nh = self.width, self.num_heads
        if memory is None:
            qkv = self.qkv_attn(x)  # [B, T, C] -> [B, T, 3C]
            q = split_heads(qkv[..., :c], nh)  # [B, T, C] -> [B, nh, T, hs]
            own_kv = (split_heads(qkv[..., c:2 * c], nh), split_heads(qkv[..., 2 * c:], nh))
            k, v = keys_values(lambda _: own_kv, x, cache=cache, start=start)
        else:
            q = split_heads(self.q_attn(x), nh)  # [B, T, C] -> [B, nh, T, hs]
            k, v = keys_values(self._project_kv, x, memory=memory, cache=cache)
        p = self.attention_dropout_p if self.state.training else 0.0
        y = scaled_dot_product_attention(q, k, v, keep, scale=self.scale, dropout_p=p, rng=self.state.rng,
                                         probabilities_to=self.state.records.probabilities(cross=memory is not None))
        return self.dropout(self.proj(merge_heads(y)))  # [B, nh, T, hs] -> [B, T, C]

    def _project_kv(self, memory):
        kv = self.kv_attn(memory)  # [B, S, C] -> [B, S, 2C]
        c = self.width
        return split_heads(kv[..., :c], self.num_heads), split_heads(kv[..., c:], self.num_heads)


class Gpt2Mlp:
    def __init__(self, view, config, state):
        c, std = config.n_embd, config.initializer_range
        inner = config.n_inner if config.n_inner is not None else 4 * c
        self.up = Conv1D(view.sub("c_fc"), c, inner, std=std)
        self.act = get_activation(config.activation_function)
        self.down = Conv1D(view.sub("c_proj"), inner, c, std=std / math.sqrt(2 * config.n_layer))
        self.dropout = Dropout(config.resid_pdrop, state)

    def __call__(self, x):
        return self.dropout(self.down(self.act(self.up(x))))  # [B, T, C] -> [B, T, 4C] -> [B, T, C]


class Gpt2Block:
    def __init__(self, view, config, state, *, layer_index):
        c, eps = config.n_embd, config.layer_norm_epsilon
        self.ln_1 = LayerNorm(view.sub("ln_1"), c, eps=eps)
        self.self_attention = Gpt2Attention(view.sub("attn"), config, state, cross=False, layer_index=layer_index)
        self.ln_cross = LayerNorm(view.sub("ln_cross_attn"), c, eps=eps)
        self.cross_attention = Gpt2Attention(view.sub("crossattention"), config, state, cross=True,
                                             layer_index=layer_index)
        self.ln_2 = LayerNorm(view.sub("ln_2"), c, eps=eps)
        self.mlp = Gpt2Mlp(view.sub("mlp"), config, state)

    def __call__(self, x, self_keep, memory, memory_keep, *, cache=None, start=0):
        x = x + self.self_attention(self.ln_1(x), self_keep, cache=cache, start=start)
        x = x + self.cross_attention(self.ln_cross(x), memory_keep, memory=memory, cache=cache)
        return x + self.mlp(self.ln_2(x))


class Gpt2Decoder:
    """Decoder ids ``[B, T]`` + encoder output ``[B, S, C]`` -> logits ``[B, T, V]`` (same interface as BertDecoder)."""

    def __init__(self, view, config, state, *, tied_to=None):
        self.config, self.state = config, state
        body = view.sub("transformer",
                        source_name="transformer" if view.store.has_prefix(view.source_prefix + "transformer.") else "")
        c, std = config.n_embd, config.initializer_range
        self.wte = Embedding(body.sub("wte"), config.vocab_size, c, std=std)
        lm_head_layout(self.wte.weight)  # also the LM head
        self.wpe = Embedding(body.sub("wpe"), config.n_positions, c, std=std)
        self.dropout = Dropout(config.embd_pdrop, state)
        self.layers = [Gpt2Block(body.sub(f"h.{i}"), config, state, layer_index=i) for i in range(config.n_layer)]
        self.ln_f = LayerNorm(body.sub("ln_f"), c, eps=config.layer_norm_epsilon)

    def vocab_parameters(self):
        """The parameters whose rows are indexed by token id: the token embeddings (also the LM head)."""
        return [self.wte.weight]

    def vocab_projection(self):
        """``(weight [V, C], None)``: the LM head is the token embedding table itself (weight tying), no bias."""
        return self.wte.weight, None

    def __call__(self, ids, keep, memory, memory_keep, *, cache=None):
        h = self.hidden(ids, keep, memory, memory_keep, cache=cache)  # [B, T] -> [B, T, C]
        return linear(h, *self.vocab_projection())  # tied LM head: [B, T, C] @ [C, V] -> [B, T, V]

    def hidden(self, ids, keep, memory, memory_keep, *, cache=None):
        """What ``vocab_projection`` multiplies: ``[B, T] -> [B, T, C]``, after ln_f."""
        xp = get_array_module(ids)
        start, t = (cache.length if cache is not None else 0), ids.shape[1]
        check_positions(start + t, self.wpe.num, name="decoder_input_ids")
        positions = xp.arange(start, start + t)[None, :]  # [1, T]
        h = self.wte(ids) + self.wpe(positions)  # [B, T] -> [B, T, C]
        h = self.dropout(h)
        h = run_decoder_layers(self.layers, h, keep, memory, memory_keep, cache=cache, records=self.state.records)
        h = self.ln_f(h)
        self.state.records.hidden_state(h)  # the last hidden state, after ln_f (as transformers')
        return h
