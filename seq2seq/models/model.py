"""``EncoderDecoderModel``: an encoder, a decoder that cross-attends to it, and the loss that trains them.

    memory = encoder(input_ids)                           # [B, S] -> [B, S, C]
    logits = decoder(decoder_input_ids, memory)           # [B, T] -> [B, T, V]
    loss   = cross_entropy(logits, labels)                # labels IGNORE_INDEX (-100) ignored

(The decoder's last step, the projection onto the vocabulary, and the loss run as one op when there are labels:
nn/loss.py says why.)

With ``labels`` and no ``decoder_input_ids``, the decoder reads the labels shifted one step right ("teacher
forcing"): ``[start, y1, y2, ...]`` predicts ``[y1, y2, y3, ...]``. This mirrors transformers'
``EncoderDecoderModel`` and reads and writes its checkpoints: ``encoder.*`` and ``decoder.*`` tensors in
model.safetensors, the two sub-configs nested in config.json.

A model is always built the same way: a ``ParamStore`` over some checkpoint tensors (or none), then the encoder
and decoder classes pull their parameters from it. Random initialisation, loading a full checkpoint and
warm-starting from two separate ones differ only in which tensors the store holds.
"""
import contextlib
import dataclasses
import json
import os
import warnings

import numpy as np

from ..core.autograd import Tensor, no_grad
from ..core.backend import check_dtype, to_backend, to_numpy, xp_for
from ..core.errors import ConfigError, InputError
from ..core.inputs import IGNORE_INDEX, as_mask, check_batch_size, check_labels_shape, token_ids
from ..generation import generate as generation
from ..generation.config import GenerationConfig
from ..nn.attention import padding_mask
from ..nn.cache import DecoderCache
from ..nn.functional import linear
from ..nn.layers import Linear, RunState
from ..nn.loss import linear_cross_entropy
from ..nn.record import NOT_RECORDING, Recording, as_tuple, records_for, reporting
from ..nn.weights import ParamStore
from . import hub
from .bart_decoder import BartDecoder
from .bert_decoder import BertDecoder
from .checkpoint import load_state_dict, save_state_dict
from .config import EncoderDecoderConfig, load_config
from .encoder import BertEncoder
from .gpt2_decoder import Gpt2Decoder

ENCODERS = {"bert": BertEncoder}  # config.model_type -> encoder class
DECODERS = {"bert": BertDecoder, "gpt2": Gpt2Decoder, "bart": BartDecoder}  # decoders with cross-attention


@dataclasses.dataclass
class Seq2SeqOutput:
    """What a forward pass returns: ``logits`` ``[B, T, V]`` and ``encoder_last_hidden_state`` ``[B, S, C]`` as
    arrays of the model's backend; ``loss`` a scalar Tensor (``loss.backward()``) when labels were given.

    With ``output_attentions`` (else None), tuples of one array per layer: ``encoder_attentions`` ``[B, nh, S, S]``,
    ``decoder_attentions`` ``[B, nh, T, T]``, ``cross_attentions`` ``[B, nh, T, S]``; with ``output_hidden_states``,
    ``encoder_hidden_states`` ``[B, S, C]`` and ``decoder_hidden_states`` ``[B, T, C]``, each the embeddings'
    output and then every layer's (num_layers + 1 arrays), as transformers returns them (see nn/record.py).
    """

    logits: object
    loss: Tensor = None
    encoder_last_hidden_state: object = None
    encoder_attentions: tuple = None
    decoder_attentions: tuple = None
    cross_attentions: tuple = None
    encoder_hidden_states: tuple = None
    decoder_hidden_states: tuple = None


def shift_tokens_right(labels, *, pad_token_id, decoder_start_token_id):
    """``[y1, y2, ..., yT]`` -> ``[start, y1, ..., y(T-1)]``, with IGNORE_INDEX (-100, ignored labels) replaced by the
    pad id."""
    if decoder_start_token_id is None:
        raise ConfigError("labels need decoder inputs, but config.decoder_start_token_id is not set "
                          "(for BERT vocabularies: model.config.decoder_start_token_id = tokenizer.cls_token_id)")
    if pad_token_id is None:
        raise ConfigError("labels need decoder inputs, but config.pad_token_id is not set "
                          "(for BERT vocabularies: model.config.pad_token_id = tokenizer.pad_token_id)")
    shifted = labels.copy()
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    shifted[shifted == IGNORE_INDEX] = pad_token_id
    return shifted


class EncoderDecoderModel:
    """A sequence-to-sequence model built from an encoder and a decoder config (see the module docstring)."""

    def __init__(self, config, *, seed=0, backend="numpy", dtype="float32"):
        store = ParamStore(xp=xp_for(backend), dtype=check_dtype(dtype), seed=seed)
        self._build(config, store, seed=seed)

    # -- construction ----------------------------------------------------------------------------------------
    def _build(self, config, store, *, seed):
        if not isinstance(config, EncoderDecoderConfig):
            raise ConfigError(f"EncoderDecoderModel needs an EncoderDecoderConfig, got {type(config).__name__}")
        enc_cfg, dec_cfg = config.encoder, config.decoder
        if enc_cfg.model_type not in ENCODERS:
            raise ConfigError(f"a {enc_cfg.model_type!r} model cannot serve as the encoder; "
                              f"supported encoders: {sorted(ENCODERS)}")
        if dec_cfg.model_type not in DECODERS:
            raise ConfigError(f"a {dec_cfg.model_type!r} model cannot serve as the decoder (it has no "
                              f"cross-attention here); supported decoders: {sorted(DECODERS)}")
        self.config, self.store, self.xp = config, store, store.xp
        self.state = RunState(training=False, seed=seed)  # dropout draws from a stream of the seed
        self.recording = NOT_RECORDING  # what encoder and decoder runs report to (see ``record``)
        encoder_view = store.view("encoder.")
        self.encoder = ENCODERS[enc_cfg.model_type](encoder_view, enc_cfg, self.state)
        if config.tie_encoder_decoder and enc_cfg.model_type != dec_cfg.model_type:
            raise ConfigError(f"tie_encoder_decoder needs encoder and decoder of one kind, got "
                              f"{enc_cfg.model_type!r} and {dec_cfg.model_type!r}")
        tied_to = encoder_view if config.tie_encoder_decoder else None
        self.decoder = DECODERS[dec_cfg.model_type](store.view("decoder."), dec_cfg, self.state, tied_to=tied_to)
        # Encoder and decoder of different widths: transformers inserts a projection of the encoder's output.
        self.enc_to_dec_proj = None
        if enc_cfg.hidden_size != dec_cfg.hidden_size and getattr(dec_cfg, "cross_attention_hidden_size", None) is None:
            self.enc_to_dec_proj = Linear(store.view("enc_to_dec_proj."), enc_cfg.hidden_size, dec_cfg.hidden_size,
                                          std=enc_cfg.initializer_range)
        self.generation_config = GenerationConfig.from_model_config(config)
        self.loading_info = {"missing_keys": list(store.missing), "unexpected_keys": store.unused()}

    @classmethod
    def _from_store(cls, config, store, *, seed=0):
        model = cls.__new__(cls)
        model._build(config, store, seed=seed)
        return model

    @classmethod
    def from_pretrained(cls, path, *, backend="numpy", dtype="float32", seed=0, revision=None, cache_dir=None):
        """Load a Hub id (``"org/name"``, at ``revision``, through huggingface_hub's cache or ``cache_dir``; see
        hub.py) or a directory saved by transformers' (or this) ``save_pretrained``; ``seed`` seeds dropout (and
        any parameter the checkpoint lacks)."""
        folder = hub.resolve(path, files=hub.MODEL_FILES, revision=revision, cache_dir=cache_dir)
        config = load_config(folder)
        if not isinstance(config, EncoderDecoderConfig):
            raise ConfigError(f"{path} holds a {config.model_type!r} checkpoint, not an encoder-decoder one; "
                              "use EncoderDecoderModel.from_encoder_decoder_pretrained(encoder_dir, decoder_dir)")
        dtype = check_dtype(dtype)
        store = ParamStore(load_state_dict(folder, dtype=dtype), xp=xp_for(backend), dtype=dtype, seed=seed,
                           source=str(path))
        model = cls._from_store(config, store, seed=seed)
        gen_file = os.path.join(folder, "generation_config.json")
        if os.path.exists(gen_file):
            model.generation_config = GenerationConfig.from_json_file(gen_file)
        _warn_loading(model.loading_info, str(path))
        return model

    @classmethod
    def from_encoder_decoder_pretrained(cls, encoder_path, decoder_path, *, backend="numpy", dtype="float32",
                                        tie_encoder_decoder=False, seed=0, encoder_revision=None,
                                        decoder_revision=None, encoder_cache_dir=None, decoder_cache_dir=None):
        """Warm-start: the encoder from one checkpoint (a directory or Hub id), the decoder from another;
        ``encoder_revision``/``decoder_revision``/``*_cache_dir`` as transformers' ``encoder_``/``decoder_`` kwargs.

        The decoder config gets ``is_decoder=True, add_cross_attention=True``; its cross-attention (and any LM-head
        weights the checkpoint lacks) start from random values, and a warning lists them.
        """
        encoder_dir = hub.resolve(encoder_path, files=hub.MODEL_FILES[:2], revision=encoder_revision,
                                  cache_dir=encoder_cache_dir)
        decoder_dir = hub.resolve(decoder_path, files=hub.MODEL_FILES[:2], revision=decoder_revision,
                                  cache_dir=decoder_cache_dir)
        enc_cfg, dec_cfg = load_config(encoder_dir), load_config(decoder_dir)
        config = EncoderDecoderConfig.from_encoder_decoder_configs(enc_cfg, dec_cfg,
                                                                   tie_encoder_decoder=tie_encoder_decoder)
        dtype = check_dtype(dtype)
        tensors = {f"encoder.{k}": v for k, v in load_state_dict(encoder_dir, dtype=dtype).items()}
        tensors.update({f"decoder.{k}": v for k, v in load_state_dict(decoder_dir, dtype=dtype).items()})
        store = ParamStore(tensors, xp=xp_for(backend), dtype=dtype, seed=seed,
                           source=f"{encoder_path} + {decoder_path}")
        model = cls._from_store(config, store, seed=seed)
        _warn_loading(model.loading_info, f"{encoder_path} (encoder) and {decoder_path} (decoder)")
        return model

    # -- forward ---------------------------------------------------------------------------------------------
    def encode(self, input_ids, attention_mask=None):
        """The encoder's last hidden state as a Tensor ``[B, S, C]`` (part of the graph when training)."""
        ids, keep = self._source(input_ids, attention_mask)
        return self._run_encoder(ids, keep)

    def __call__(self, input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                 labels=None, *, label_smoothing=0.0, output_attentions=None, output_hidden_states=None,
                 pack_padding=False):
        """Logits (and the loss, with ``labels``) for the decoder inputs given the sources: a Seq2SeqOutput.

        ``pack_padding=True`` (not in transformers): the encoder works on the sources' real tokens only
        (nn/packing.py), which changes neither the logits nor the loss nor any gradient, but leaves
        ``encoder_last_hidden_state`` zero at the padding's positions (transformers computes values there that
        nothing reads). The Trainer passes it. Dropout draws the same masks either way.

        ``output_attentions`` / ``output_hidden_states``: also return the attention probabilities / hidden states
        of both stacks. As in transformers, when left None each stack takes its own config's field of that name
        (``model.config.encoder.output_attentions``, ``model.config.decoder....``; False when absent): the
        top-level ``model.config.output_attentions`` is not read.
        """
        ids, enc_keep = self._source(input_ids, attention_mask)
        dec_ids, dec_keep, labels = self._decoder_inputs(ids, decoder_input_ids, decoder_attention_mask, labels)
        recording = Recording(encoder=records_for(self.config.encoder, output_attentions, output_hidden_states),
                              decoder=records_for(self.config.decoder, output_attentions, output_hidden_states))
        with self.record(recording):
            memory = self._run_encoder(ids, enc_keep, pack_padding=pack_padding)  # [B, S] -> [B, S, C_enc]
            h = self._run_decoder(dec_ids, dec_keep, self._to_decoder_width(memory), enc_keep, project=False)
        weight, bias = self.decoder.vocab_projection()  # [V, C], [V] or None
        if labels is None:
            logits, loss = linear(h, weight, bias), None  # [B, T, C] -> [B, T, V]
        else:
            # [B, T, C] -> [B, T, V], and [B*T, V] -> () against the labels; label_smoothing as the Trainer's
            # label_smoothing_factor (0: plain NLL). One op, so that backward never holds the logits' gradient whole.
            logits, loss = linear_cross_entropy(h, weight, bias, labels.reshape(-1), IGNORE_INDEX,
                                                label_smoothing=label_smoothing)
        encoder, decoder = recording.encoder, recording.decoder
        return Seq2SeqOutput(logits=logits.data, loss=loss, encoder_last_hidden_state=memory.data,
                             encoder_attentions=as_tuple(encoder.attentions),
                             decoder_attentions=as_tuple(decoder.attentions),
                             cross_attentions=as_tuple(decoder.cross_attentions),
                             encoder_hidden_states=as_tuple(encoder.hidden_states),
                             decoder_hidden_states=as_tuple(decoder.hidden_states))

    @contextlib.contextmanager
    def record(self, recording):
        """Within the block, every run of the encoder and of the decoder appends its attention probabilities and
        hidden states to ``recording`` (an ``nn.record.Recording``): a forward pass, or each step of ``generate``."""
        previous, self.recording = self.recording, recording
        try:
            yield recording
        finally:
            self.recording = previous

    def _run_encoder(self, ids, keep, *, pack_padding=False):
        """The encoder over checked inputs, its layers reporting to ``self.recording.encoder``;
        ``pack_padding``: its padded positions may come out as zeros (BertEncoder)."""
        with reporting(self.state, self.recording.encoder):
            return self.encoder(ids, keep, pack_padding=pack_padding)

    def _run_decoder(self, ids, keep, memory, memory_keep, *, cache=None, project=True):
        """The decoder's logits ``[B, T, V]``, or with ``project=False`` what its vocabulary projection multiplies."""
        with reporting(self.state, self.recording.decoder):
            run = self.decoder if project else self.decoder.hidden
            return run(ids, keep, memory, memory_keep, cache=cache)

    def _to_decoder_width(self, memory):
        """The encoder output as the decoder's cross-attention reads it: ``[B, S, C_enc] -> [B, S, C_dec]``."""
        return memory if self.enc_to_dec_proj is None else self.enc_to_dec_proj(memory)

    # -- step-by-step decoding (generation) -----------------------------------------------------------------
    def start_decoding(self, input_ids, attention_mask=None, *, capacity=64, encoder_outputs=None):
        """Encode the source once (or take ``encoder_outputs``, its encoding ``[B, S, C_enc]`` as an array of the
        model's backend, checked by generate) and return an empty DecoderCache for ``decode_step`` (inference).
        The encoding it makes leaves the padding's positions out (zeros in ``cache.memory``): nn/packing.py."""
        with no_grad():
            if encoder_outputs is None:
                ids, keep = self._source(input_ids, attention_mask)
                # Decoding reads the encoding only through cross-attention, which masks the padding out: the
                # encoder may skip the padded positions' rows (nn/packing.py)
                encoded = self._run_encoder(ids, keep, pack_padding=True)
            else:  # the mask must fit the encoding [B, S] as it would the ids
                encoded = Tensor(encoder_outputs)
                keep = self._keep(attention_mask, encoder_outputs[..., 0], name="attention_mask")
            memory = self._to_decoder_width(encoded).data  # [B, S, C]
        return DecoderCache(len(self.decoder.layers), memory, keep, capacity=capacity)

    def decode_step(self, decoder_input_ids, cache):
        """Logits ``[B, V]`` for the position after ``decoder_input_ids`` (the new positions, ``[B, t]``), given
        everything decoded before them in ``cache``, which advances by ``t``."""
        ids = token_ids(decoder_input_ids, self.xp, vocab_size=self.config.decoder.vocab_size,
                        name="decoder_input_ids")
        if ids.shape[0] != cache.batch_size:
            raise InputError(f"decoder_input_ids has batch size {ids.shape[0]} but the cache holds "
                             f"{cache.batch_size} rows")
        with no_grad():
            logits = self._run_decoder(ids, None, cache.memory, cache.memory_keep, cache=cache)
        return logits.data[:, -1]  # [B, t, V] -> [B, V]

    def generate(self, input_ids=None, attention_mask=None, generation_config=None, **kwargs):
        """Token ids ``[B * num_return_sequences, out_len]`` from greedy decoding, sampling or beam search, with
        transformers' arguments and results (see generate.py); a GenerateOutput with return_dict_in_generate.
        ``cuda_graph=False`` keeps a CuPy model on the eager path (generation/kernel_path.py)."""
        return generation.generate(self, input_ids, attention_mask, generation_config, **kwargs)

    def generate_stream(self, input_ids=None, attention_mask=None, generation_config=None, **kwargs):
        """An iterator of each step's tokens ``[B * num_return_sequences]`` as they are chosen (greedy, sampling)."""
        return generation.generate_stream(self, input_ids, attention_mask, generation_config, **kwargs)

    # -- the boundary: what users pass, checked once here (core/inputs.py); the layers trust it ---------------
    def _source(self, input_ids, attention_mask):
        """``input_ids`` -> int64 ``[B, S]`` inside the encoder's vocabulary; ``attention_mask`` -> keep
        ``[B, 1, 1, S]`` or None."""
        ids = token_ids(input_ids, self.xp, vocab_size=self.config.encoder.vocab_size, name="input_ids")
        return ids, self._keep(attention_mask, ids, name="attention_mask")

    def _decoder_inputs(self, ids, decoder_input_ids, decoder_attention_mask, labels):
        """The decoder's ids ``[B, T]``, its keep mask (or None) and the labels ``[B, T]`` (or None), checked
        against the vocabulary, the sources ``ids`` and each other. Without decoder ids the labels, shifted right,
        are the decoder's inputs, with their pads masked (as transformers)."""
        vocab = self.config.decoder.vocab_size
        if labels is not None:
            labels = token_ids(labels, self.xp, vocab_size=vocab, name="labels", ignore=IGNORE_INDEX)
        if decoder_input_ids is not None:
            dec_ids = token_ids(decoder_input_ids, self.xp, vocab_size=vocab, name="decoder_input_ids")
        elif labels is not None:
            dec_ids = self._shifted_labels(labels)
            if decoder_attention_mask is None:
                decoder_attention_mask = (dec_ids != self.config.pad_token_id).astype(np.int64)
        else:
            raise InputError("pass decoder_input_ids or labels: the decoder needs inputs")
        check_batch_size(dec_ids, ids, name="decoder_input_ids")
        if labels is not None:
            check_labels_shape(labels, dec_ids)
        return dec_ids, self._keep(decoder_attention_mask, dec_ids, name="decoder_attention_mask"), labels

    def _shifted_labels(self, labels):
        """Teacher forcing's decoder inputs. Why no new look at every id: they are the labels, checked already, and
        the two ids the config adds, checked here."""
        config, vocab = self.config, self.config.decoder.vocab_size
        for name in ("decoder_start_token_id", "pad_token_id"):
            value = getattr(config, name)
            if value is not None and not 0 <= value < vocab:
                raise ConfigError(f"config.{name} = {value} is not a token id of the decoder's vocabulary [0, {vocab})")
        return shift_tokens_right(labels, pad_token_id=config.pad_token_id,
                                  decoder_start_token_id=config.decoder_start_token_id)

    def _keep(self, mask, ids, *, name):
        mask = as_mask(mask, ids, self.xp, name=name)
        return None if mask is None else padding_mask(mask, name=name)

    # -- parameters and modes --------------------------------------------------------------------------------
    def named_parameters(self):
        """(name, Tensor) pairs under transformers' key names; a tied tensor appears once, under its owner."""
        return list(self.store.params.items())

    def parameters(self):
        return list(self.store.params.values())

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    def train(self):
        """Training mode: dropout on. Models are created in eval mode (dropout off)."""
        self.state.training = True
        return self

    def eval(self):
        self.state.training = False
        return self

    @property
    def training(self):
        return self.state.training

    def to(self, backend):
        """Move every parameter and buffer to ``backend`` ("numpy" or "cupy"), in place; returns the model."""
        self.xp = self.store.xp = xp_for(backend)
        for p in self.parameters():
            p.data = to_backend(p.data, backend)
            if p.grad is not None:
                p.grad = to_backend(p.grad, backend)
        for key, array in self.store.buffers.items():
            self.store.buffers[key] = to_backend(array, backend)
        return self

    def state_dict(self, *, include_tied_copies=False):
        """``{hf_key: numpy array}`` as transformers names them: parameters, then buffers.

        The LM head tied to the word embeddings is never written (transformers re-ties it on load). Weights shared
        by ``tie_encoder_decoder`` are written once, under the encoder, unless ``include_tied_copies``: then the
        decoder's copies are written too, which transformers 5 needs (it ignores ``tie_encoder_decoder``).
        """
        tensors = {key: to_numpy(p.data) for key, p in self.store.params.items()}
        if include_tied_copies:
            tensors.update({alias: tensors[owner] for alias, owner in self.store.aliases.items()})
        tensors.update({key: to_numpy(a) for key, a in self.store.buffers.items()})
        return tensors

    def save_pretrained(self, path, *, include_tied_copies=False, max_shard_size=None):
        """Write config.json, generation_config.json and model.safetensors, loadable by transformers."""
        os.makedirs(path, exist_ok=True)
        self.config.to_json_file(os.path.join(path, "config.json"))
        with open(os.path.join(path, "generation_config.json"), "w", encoding="utf-8") as f:
            json.dump({**self.generation_config.to_diff_dict(), "_from_model_config": True}, f, indent=2)
        save_state_dict(self.state_dict(include_tied_copies=include_tied_copies), path,
                        max_shard_size=max_shard_size)

    def __repr__(self):
        c = self.config
        return (f"EncoderDecoderModel(encoder={c.encoder.model_type}, decoder={c.decoder.model_type}, "
                f"parameters={self.num_parameters():,}, backend={'cupy' if self.xp is not np else 'numpy'})")


def _warn_loading(info, source):
    """Warn about freshly initialised and unused tensors, as transformers does when loading."""
    if info["missing_keys"]:
        warnings.warn(f"Some weights were not in {source} and are newly initialized: {info['missing_keys']}. "
                      "Fine-tune the model before using it for predictions.", stacklevel=3)
    if info["unexpected_keys"]:
        warnings.warn(f"Some weights of {source} were not used: {info['unexpected_keys']}", stacklevel=3)
