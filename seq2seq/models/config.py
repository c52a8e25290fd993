"""Model configurations, read from and written to config.json with transformers' field names and defaults.

A config is a plain object whose attributes are the config.json fields. Each class lists its defaults (those of
the transformers class of the same name, so ``BertConfig()`` is bert-base); fields it does not know are kept as
they are, so a config.json read and written back loses nothing. ``aliases`` lets code ask every config for
``hidden_size`` even where the checkpoint calls it ``n_embd`` or ``d_model`` (transformers' ``attribute_map``).

Every field the model code reads is checked for type and range as the config is made (``checks``; the rules are in
``core/config.py``), and so is the size of the model the config describes: a config.json with ``true`` heads, a
dict as its ``model_type`` or 10^12 layers is refused with a ConfigError naming the field before a single weight is
allocated. The bounds, and why they are where they are:
- ``MAX_LAYERS`` = 1,024 layers per stack. The deepest BERT, GPT-2 or BART has 48 (GPT-2 XL); even the largest
  language models have about a hundred. Layers are checked on their own because a stack of many narrow layers is
  small in parameters yet costs Python objects per layer.
- ``MAX_SIZE`` = 2^24 (16.8M) for every width, vocabulary and position count: over 60 times the largest
  vocabulary of common checkpoints (250k) and 2,600 times the widest layer of these families (GPT-2 XL's 6,400).
- ``MAX_PARAMETERS`` = 10^10 for the model a config describes (its matrices and tables, counted as a decoder with
  cross-attention, the larger case): 40 GB of float32 weights, 160 GB to train them with AdamW (weights,
  gradients, two moments), more than one GPU or workstation holds, and 6 times the largest BERT, GPT-2 or BART
  checkpoint (GPT-2 XL, 1.56B parameters). Past it, allocation would fail after minutes or swap the machine.
"""
import copy
import os

from ..core.config import (Config, boolean, integer, is_int, number, one_of, probability, read_json, shown,
                           token_id)
from ..core.errors import ConfigError
from ..nn.activations import ACTIVATIONS

MAX_LAYERS = 1024
MAX_SIZE = 2 ** 24
MAX_PARAMETERS = 10 ** 10

# Fields every transformers config has (PreTrainedConfig), with their defaults.
_COMMON = {
    "is_decoder": False,
    "add_cross_attention": False,
    "is_encoder_decoder": False,
    "tie_word_embeddings": True,
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
    "architectures": None,
}

# What the fields a model reads may hold (see core/config.py for each check).
size = integer(maximum=MAX_SIZE)
layers = integer(maximum=MAX_LAYERS)
positive = number("a positive number", lambda x: x > 0)  # LayerNorm's eps
std = number("a number >= 0", lambda x: x >= 0)  # initializer_range
activation = one_of(ACTIVATIONS)
_COMMON_CHECKS = {
    "is_decoder": boolean, "add_cross_attention": boolean, "is_encoder_decoder": boolean,
    "tie_word_embeddings": boolean, "tie_encoder_decoder": boolean, "use_cache": boolean,
    "pad_token_id": token_id(), "bos_token_id": token_id(), "eos_token_id": token_id(many=True),
    "decoder_start_token_id": token_id(), "sep_token_id": token_id(), "forced_bos_token_id": token_id(),
    "forced_eos_token_id": token_id(many=True),
    "cross_attention_hidden_size": integer(maximum=MAX_SIZE, optional=True),
}


class ModelConfig(Config):
    """Base class of the model configs: ``model_type``, ``defaults``, ``aliases`` and ``checks`` are set by each
    subclass, which also says roughly how many parameters a model built from it holds (``parameter_estimate``)."""

    common = _COMMON  # fields shared by every model config
    common_checks = _COMMON_CHECKS

    def parameter_estimate(self):
        """Roughly how many parameters this engine builds from the config (0: not estimated)."""
        return 0

    def validate(self):
        super().validate()
        count = self.parameter_estimate()
        if count > MAX_PARAMETERS:
            sizes = ", ".join(f"{name}={shown(getattr(self, name))}" for name in self.checks
                              if is_int(getattr(self, name, None)) and getattr(self, name) > 1)
            raise ConfigError(f"{type(self).__name__} describes a model of about {count:.2g} parameters, more than "
                              f"the {MAX_PARAMETERS:.0e} this engine accepts ({sizes})")


def _check_divisible(config, width, heads):
    if getattr(config, width) % getattr(config, heads):
        raise ConfigError(f"{type(config).__name__}.{width} ({getattr(config, width)}) is not a multiple of "
                          f"{heads} ({getattr(config, heads)})")


def _decoder_stack(count, width, ffn):
    """Weights of ``count`` decoder layers: self- and cross-attention (4 [C, C] matrices each) and the FFN."""
    return count * (8 * width * width + 2 * width * ffn)


class BertConfig(ModelConfig):
    """BERT: the encoder, and (with ``is_decoder``, ``add_cross_attention``) the bert2bert decoder."""

    model_type = "bert"
    defaults = {
        "vocab_size": 30522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "use_cache": True,
        "classifier_dropout": None,
    }
    checks = {
        "vocab_size": size, "hidden_size": size, "num_hidden_layers": layers, "num_attention_heads": size,
        "intermediate_size": size, "hidden_act": activation, "hidden_dropout_prob": probability(),
        "attention_probs_dropout_prob": probability(), "max_position_embeddings": size, "type_vocab_size": size,
        "initializer_range": std, "layer_norm_eps": positive, "classifier_dropout": probability(optional=True),
        "position_embedding_type": one_of({"absolute"}),  # relative_key(_query) is not implemented here
    }

    def validate(self):
        super().validate()
        _check_divisible(self, "hidden_size", "num_attention_heads")

    def parameter_estimate(self):
        c = self.hidden_size
        tables = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * c
        return tables + _decoder_stack(self.num_hidden_layers, c, self.intermediate_size) + c * c  # + LM head


class GPT2Config(ModelConfig):
    """GPT-2 (as the decoder of bert2gpt2). transformers' names: n_embd, n_layer, n_head, n_positions."""

    model_type = "gpt2"
    aliases = {"hidden_size": "n_embd", "max_position_embeddings": "n_positions", "num_attention_heads": "n_head",
               "num_hidden_layers": "n_layer"}
    defaults = {
        "vocab_size": 50257,
        "n_positions": 1024,
        "n_embd": 768,
        "n_layer": 12,
        "n_head": 12,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": 0.1,
        "embd_pdrop": 0.1,
        "attn_pdrop": 0.1,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "use_cache": True,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
    }
    checks = {
        "vocab_size": size, "n_positions": size, "n_embd": size, "n_layer": layers, "n_head": size,
        "n_inner": integer(maximum=MAX_SIZE, optional=True), "activation_function": activation,
        "resid_pdrop": probability(), "embd_pdrop": probability(), "attn_pdrop": probability(),
        "layer_norm_epsilon": positive, "initializer_range": std, "scale_attn_weights": boolean,
        "scale_attn_by_inverse_layer_idx": boolean, "reorder_and_upcast_attn": boolean,
    }

    def validate(self):
        super().validate()
        _check_divisible(self, "n_embd", "n_head")

    def parameter_estimate(self):
        c = self.n_embd
        inner = self.n_inner if self.n_inner is not None else 4 * c
        return (self.vocab_size + self.n_positions) * c + _decoder_stack(self.n_layer, c, inner)


class BartConfig(ModelConfig):
    """BART (its decoder serves bert2bart). transformers' names: d_model, decoder_layers, decoder_ffn_dim, ..."""

    model_type = "bart"
    aliases = {"hidden_size": "d_model", "num_attention_heads": "encoder_attention_heads",
               "num_hidden_layers": "encoder_layers"}
    defaults = {
        "vocab_size": 50265,
        "max_position_embeddings": 1024,
        "encoder_layers": 12,
        "encoder_ffn_dim": 4096,
        "encoder_attention_heads": 16,
        "decoder_layers": 12,
        "decoder_ffn_dim": 4096,
        "decoder_attention_heads": 16,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "activation_function": "gelu",
        "d_model": 1024,
        "dropout": 0.1,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "init_std": 0.02,
        "classifier_dropout": 0.0,
        "scale_embedding": False,
        "use_cache": True,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "forced_eos_token_id": 2,
        "is_encoder_decoder": True,
    }
    checks = {
        "vocab_size": size, "max_position_embeddings": size, "d_model": size, "encoder_layers": layers,
        "encoder_ffn_dim": size, "encoder_attention_heads": size, "decoder_layers": layers, "decoder_ffn_dim": size,
        "decoder_attention_heads": size, "encoder_layerdrop": probability(), "decoder_layerdrop": probability(),
        "activation_function": activation, "dropout": probability(), "attention_dropout": probability(),
        "activation_dropout": probability(), "init_std": std, "classifier_dropout": probability(optional=True),
        "scale_embedding": boolean,
    }

    def validate(self):
        super().validate()
        _check_divisible(self, "d_model", "decoder_attention_heads")

    def parameter_estimate(self):
        """The decoder only: the part of a BART checkpoint an encoder-decoder model here is built from."""
        c = self.d_model
        tables = (self.vocab_size + self.max_position_embeddings) * c
        return tables + _decoder_stack(self.decoder_layers, c, self.decoder_ffn_dim)


# model_type -> config class
CONFIG_CLASSES = {"bert": BertConfig, "gpt2": GPT2Config, "bart": BartConfig}


def config_from_dict(d, *, source="config"):
    """Build the config class that ``d["model_type"]`` names; errors start with ``source`` (the file, or the
    part of one: ``config.json: encoder: BertConfig.vocab_size must be ...``)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")
    classes = {**CONFIG_CLASSES, EncoderDecoderConfig.model_type: EncoderDecoderConfig}
    model_type = d.get("model_type")
    if not isinstance(model_type, str):
        raise ConfigError(f"{source}: model_type must be a string, one of {sorted(classes)}; got {shown(model_type)}")
    if model_type not in classes:
        raise ConfigError(f"{source}: unknown model_type {shown(model_type)}; this engine supports {sorted(classes)}")
    try:
        return classes[model_type].from_dict(d)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load_config(path):
    """Read ``path/config.json`` (or a .json file) into the matching config class."""
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    return config_from_dict(read_json(file, what="config"), source=file)


class EncoderDecoderConfig(ModelConfig):
    """An encoder config and a decoder config, plus the special ids the pair needs for training and generation."""

    model_type = "encoder-decoder"
    defaults = {
        "decoder_start_token_id": None,
        "is_encoder_decoder": True,
        "tie_encoder_decoder": False,
        "architectures": ["EncoderDecoderModel"],
    }

    def __init__(self, **fields):
        self.encoder = _part(fields.pop("encoder", None), "encoder", BertConfig)
        self.decoder = _part(fields.pop("decoder", None), "decoder",
                             lambda: BertConfig(is_decoder=True, add_cross_attention=True))
        super().__init__(**fields)

    @classmethod
    def from_encoder_decoder_configs(cls, encoder_config, decoder_config, **fields):
        """Pair two configs, turning the second into a decoder with cross-attention (as transformers does)."""
        decoder_config = copy.deepcopy(decoder_config)
        decoder_config.is_decoder = True
        decoder_config.add_cross_attention = True
        return cls(encoder=copy.deepcopy(encoder_config), decoder=decoder_config, **fields)

    def validate(self):
        """The pair's own fields, both parts again (they may have changed since they were made), the two together."""
        self.encoder.validate()
        self.decoder.validate()
        super().validate()
        if not self.decoder.is_decoder or not self.decoder.add_cross_attention:
            raise ConfigError("the decoder config of an encoder-decoder model needs is_decoder=True and "
                              "add_cross_attention=True (use EncoderDecoderConfig.from_encoder_decoder_configs)")
        encoder, decoder = self.encoder.parameter_estimate(), self.decoder.parameter_estimate()
        if encoder + decoder > MAX_PARAMETERS:
            raise ConfigError(f"EncoderDecoderConfig describes a model of about {encoder + decoder:.2g} parameters "
                              f"(encoder {encoder:.2g}, decoder {decoder:.2g}), more than the {MAX_PARAMETERS:.0e} "
                              "this engine accepts")

    def to_dict(self):
        d = super().to_dict()
        d["encoder"], d["decoder"] = self.encoder.to_dict(), self.decoder.to_dict()
        return d


def _part(value, role, default):
    """The encoder or decoder config of a pair: ``value`` if it is a model config, built from it if it is a dict
    (a nested config.json object), ``default()`` if it is None."""
    if value is None:
        return default()
    if isinstance(value, dict) and value.get("model_type") == EncoderDecoderConfig.model_type or \
            isinstance(value, EncoderDecoderConfig):
        raise ConfigError(f"{role}: an encoder-decoder config cannot be the {role} of another")
    if isinstance(value, ModelConfig):
        return value
    return config_from_dict(value, source=role)
