"""Model configurations, read from and written to config.json with transformers' field names and defaults.

A config is a plain object whose attributes are the config.json fields. Each class lists its defaults (those of
the transformers class of the same name, so ``BertConfig()`` is bert-base); fields it does not know are kept as
they are, so a config.json read and written back loses nothing. ``aliases`` lets code ask every config for
``hidden_size`` even where the checkpoint calls it ``n_embd`` or ``d_model`` (transformers' ``attribute_map``).
"""
import copy
import json
import os

from .checkpoint import read_json
from .errors import ConfigError

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


class Config:
    """Base class: ``model_type``, ``defaults`` and ``aliases`` are set by each subclass."""

    model_type = None
    common = _COMMON  # fields shared by every model config
    defaults = {}
    aliases = {}  # idiomatic name -> the name this model's config.json uses

    def __init__(self, **fields):
        for name, value in {**self.common, **self.defaults}.items():
            setattr(self, name, copy.deepcopy(value))
        fields.pop("model_type", None)
        for name, value in fields.items():
            setattr(self, self.aliases.get(name, name), value)
        self.validate()

    def __getattr__(self, name):  # only called when normal lookup fails: resolve an alias
        aliases = type(self).aliases
        if name in aliases:
            return getattr(self, aliases[name])
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def validate(self):
        """Raise ConfigError for values the model cannot be built from. Subclasses extend it."""

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.__name__}.from_dict expects a dict, got {type(d).__name__}")
        return cls(**d)

    @classmethod
    def from_json_file(cls, path):
        return cls.from_dict(read_json(path, what="config"))

    def to_dict(self):
        d = {name: copy.deepcopy(value) for name, value in vars(self).items()}
        if self.model_type is not None:
            d["model_type"] = self.model_type
        return d

    def to_json_file(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"{type(self).__name__}({json.dumps(self.to_dict(), sort_keys=True)})"


def _require_positive(config, *names):
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{type(config).__name__}.{name} must be a positive integer, got {value!r}")


class BertConfig(Config):
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

    def validate(self):
        _require_positive(self, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                          "intermediate_size", "max_position_embeddings", "type_vocab_size")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"BertConfig.hidden_size ({self.hidden_size}) is not a multiple of "
                              f"num_attention_heads ({self.num_attention_heads})")
        position_type = getattr(self, "position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ConfigError(f"BertConfig.position_embedding_type={position_type!r} is not supported "
                              "(only 'absolute' position embeddings are)")


class GPT2Config(Config):
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

    def validate(self):
        _require_positive(self, "vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
        if self.n_embd % self.n_head:
            raise ConfigError(f"GPT2Config.n_embd ({self.n_embd}) is not a multiple of n_head ({self.n_head})")


class BartConfig(Config):
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

    def validate(self):
        _require_positive(self, "vocab_size", "max_position_embeddings", "d_model", "decoder_layers",
                          "decoder_attention_heads", "decoder_ffn_dim")
        if self.d_model % self.decoder_attention_heads:
            raise ConfigError(f"BartConfig.d_model ({self.d_model}) is not a multiple of "
                              f"decoder_attention_heads ({self.decoder_attention_heads})")


# model_type -> config class
CONFIG_CLASSES = {"bert": BertConfig, "gpt2": GPT2Config, "bart": BartConfig}


def config_from_dict(d, *, source="config"):
    """Build the config class that ``d["model_type"]`` names (``source`` names the file in errors)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")
    model_type = d.get("model_type")
    if model_type == EncoderDecoderConfig.model_type:
        return EncoderDecoderConfig.from_dict(d)
    if model_type not in CONFIG_CLASSES:
        known = sorted(CONFIG_CLASSES) + [EncoderDecoderConfig.model_type]
        raise ConfigError(f"{source}: unknown model_type {model_type!r}; this engine supports {known}")
    return CONFIG_CLASSES[model_type].from_dict(d)


def load_config(path):
    """Read ``path/config.json`` (or a .json file) into the matching config class."""
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    return config_from_dict(read_json(file, what="config"), source=file)


class EncoderDecoderConfig(Config):
    """An encoder config and a decoder config, plus the special ids the pair needs for training and generation."""

    model_type = "encoder-decoder"
    defaults = {
        "decoder_start_token_id": None,
        "is_encoder_decoder": True,
        "tie_encoder_decoder": False,
        "architectures": ["EncoderDecoderModel"],
    }

    def __init__(self, **fields):
        encoder = fields.pop("encoder", None) or BertConfig()
        decoder = fields.pop("decoder", None) or BertConfig(is_decoder=True, add_cross_attention=True)
        self.encoder = encoder if isinstance(encoder, Config) else config_from_dict(encoder, source="encoder config")
        self.decoder = decoder if isinstance(decoder, Config) else config_from_dict(decoder, source="decoder config")
        super().__init__(**fields)

    @classmethod
    def from_encoder_decoder_configs(cls, encoder_config, decoder_config, **fields):
        """Pair two configs, turning the second into a decoder with cross-attention (as transformers does)."""
        decoder_config = copy.deepcopy(decoder_config)
        decoder_config.is_decoder = True
        decoder_config.add_cross_attention = True
        return cls(encoder=copy.deepcopy(encoder_config), decoder=decoder_config, **fields)

    def validate(self):
        if not self.decoder.is_decoder or not self.decoder.add_cross_attention:
            raise ConfigError("the decoder config of an encoder-decoder model needs is_decoder=True and "
                              "add_cross_attention=True (use EncoderDecoderConfig.from_encoder_decoder_configs)")

    def to_dict(self):
        d = super().to_dict()
        d["encoder"], d["decoder"] = self.encoder.to_dict(), self.decoder.to_dict()
        return d


# What generate() uses for a field no config and no argument sets: transformers 5's global defaults.
GENERATION_DEFAULTS = {
    "max_length": 20,  # as the default, it means 20 *new* tokens (see generate._resolve_lengths)
    "max_new_tokens": None,
    "min_length": 0,
    "min_new_tokens": None,
    "do_sample": False,
    "num_beams": 1,
    "num_return_sequences": 1,
    "early_stopping": False,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "length_penalty": 1.0,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
    "decoder_start_token_id": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "use_cache": True,
    "output_scores": False,
    "return_dict_in_generate": False,
}


class GenerationConfig(Config):
    """What ``generate`` uses (generation_config.json), with transformers' names.

    As in transformers 5, a field nobody set is None, so "set" always means "not None" (a config that sets
    ``max_length: 20`` differs from one that leaves it alone); ``generate`` fills the unset fields from
    ``GENERATION_DEFAULTS``.
    """

    common = {}
    defaults = dict.fromkeys(GENERATION_DEFAULTS)
    SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")

    @classmethod
    def from_model_config(cls, config):
        """Special ids from an encoder-decoder config, falling back to its decoder's (as transformers does)."""
        fields = {}
        for name in cls.SPECIAL_IDS:
            value = getattr(config, name, None)
            if value is None:
                value = getattr(getattr(config, "decoder", None), name, None)
            if value is not None:
                fields[name] = value
        return cls(**fields)

    def to_diff_dict(self):
        """Only the fields that are set: what generation_config.json holds."""
        return {k: v for k, v in self.to_dict().items() if v is not None}
