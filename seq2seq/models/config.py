"""Model configurations, read from and written to config.json with transformers' field names and defaults.

A config is a plain object whose attributes are the config.json fields. Each class lists its defaults (those of
the transformers class of the same name, so ``BertConfig()`` is bert-base); fields it does not know are kept as
they are, so a config.json read and written back loses nothing. ``aliases`` lets code ask every config for
``hidden_size`` even where the checkpoint calls it ``n_embd`` or ``d_model`` (transformers' ``attribute_map``).
"""
import copy
import os

from ..core.config import Config, read_json
from ..core.errors import ConfigError

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


class ModelConfig(Config):
    """Base class of the model configs: ``model_type``, ``defaults`` and ``aliases`` are set by each subclass."""

    common = _COMMON  # fields shared by every model config


def _require_positive(config, *names):
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{type(config).__name__}.{name} must be a positive integer, got {value!r}")


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

    def validate(self):
        _require_positive(self, "vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
        if self.n_embd % self.n_head:
            raise ConfigError(f"GPT2Config.n_embd ({self.n_embd}) is not a multiple of n_head ({self.n_head})")


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
