"""Configs: transformers' names and defaults, lossless JSON round trips, transformers reading ours, and every
field the model reads checked for type and range as a config.json is read, before anything is allocated."""
import json
import math
import pathlib
import re
import time
import tracemalloc

import pytest

import seq2seq
from seq2seq.core.errors import CheckpointNotFoundError, ConfigError
from seq2seq.generation.config import GenerationConfig
from seq2seq.models.config import MAX_LAYERS, MAX_PARAMETERS, config_from_dict, load_config

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_bert_defaults_are_bert_base():
    c = seq2seq.BertConfig()
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (768, 12, 12, 3072)
    assert c.hidden_act == "gelu" and c.layer_norm_eps == 1e-12 and c.vocab_size == 30522 and c.pad_token_id == 0


@pytest.mark.oracle
def test_defaults_equal_transformers():
    transformers = pytest.importorskip("transformers")
    ref = transformers.BertConfig().to_dict()
    ours = seq2seq.BertConfig().to_dict()
    for key, value in ours.items():
        if key in ref and key != "architectures":
            assert ref[key] == value, key


def test_unknown_fields_survive_a_round_trip(tmp_path):
    c = seq2seq.BertConfig(hidden_size=64, num_attention_heads=4, some_future_field={"x": 1})
    c.to_json_file(tmp_path / "config.json")
    again = load_config(tmp_path)
    assert again == c and again.some_future_field == {"x": 1}


def test_encoder_decoder_config_nests_and_flags_the_decoder(tmp_path):
    enc = seq2seq.BertConfig(num_hidden_layers=2)
    cfg = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(enc, seq2seq.BertConfig(), pad_token_id=0)
    assert cfg.decoder.is_decoder and cfg.decoder.add_cross_attention and not cfg.encoder.is_decoder
    assert not enc.is_decoder  # the caller's config is left as it was
    d = cfg.to_dict()
    assert d["model_type"] == "encoder-decoder" and d["decoder"]["model_type"] == "bert"
    cfg.to_json_file(tmp_path / "config.json")
    assert load_config(tmp_path) == cfg


@pytest.mark.oracle
def test_transformers_reads_our_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(
        seq2seq.BertConfig(hidden_size=48, num_attention_heads=4), seq2seq.BertConfig(hidden_act="relu"),
        decoder_start_token_id=101, pad_token_id=0)
    cfg.to_json_file(tmp_path / "config.json")
    ref = transformers.EncoderDecoderConfig.from_pretrained(str(tmp_path))
    assert ref.encoder.hidden_size == 48 and ref.decoder.hidden_act == "relu" and ref.decoder.is_decoder
    assert ref.decoder_start_token_id == 101 and ref.pad_token_id == 0


def test_errors():
    with pytest.raises(ConfigError, match="model_type 'llama'"):
        config_from_dict({"model_type": "llama"})
    with pytest.raises(ConfigError, match="positive integer"):
        seq2seq.BertConfig(num_hidden_layers=0)
    with pytest.raises(ConfigError, match="relative_key"):
        seq2seq.BertConfig(position_embedding_type="relative_key")
    with pytest.raises(ConfigError, match="add_cross_attention"):
        seq2seq.EncoderDecoderConfig(encoder=seq2seq.BertConfig(), decoder=seq2seq.BertConfig())
    with pytest.raises(AttributeError, match="no field"):
        seq2seq.BertConfig().n_embd


def test_generation_config_takes_special_ids_from_the_model_config():
    cfg = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(seq2seq.BertConfig(), seq2seq.BertConfig(),
                                                                    decoder_start_token_id=101)
    gen = GenerationConfig.from_model_config(cfg)
    assert gen.decoder_start_token_id == 101 and gen.pad_token_id == 0  # pad from the decoder's config
    assert gen.max_length is None and gen.num_beams is None  # unset, as in transformers 5
    assert gen.to_diff_dict() == {"decoder_start_token_id": 101, "pad_token_id": 0}
    json.dumps(gen.to_dict())


# ---- values checked as a config.json is read -----------------------------------------------------------------------

TINY = {  # one small, valid config per family; the cases below spoil one field at a time
    "bert": {"model_type": "bert", "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 1,
             "num_attention_heads": 4, "intermediate_size": 37, "max_position_embeddings": 64},
    "gpt2": {"model_type": "gpt2", "vocab_size": 99, "n_embd": 32, "n_layer": 1, "n_head": 4, "n_positions": 64},
    "bart": {"model_type": "bart", "vocab_size": 99, "d_model": 32, "decoder_layers": 1, "decoder_attention_heads": 4,
             "decoder_ffn_dim": 37, "max_position_embeddings": 64},
}
CLASS_NAMES = {"bert": "BertConfig", "gpt2": "GPT2Config", "bart": "BartConfig"}


def pair(decoder="bert"):
    """A valid encoder-decoder config.json (as a dict): a BERT encoder and a ``decoder``-family decoder."""
    return {"model_type": "encoder-decoder", "encoder": dict(TINY["bert"]),
            "decoder": {**TINY[decoder], "is_decoder": True, "add_cross_attention": True},
            "decoder_start_token_id": 2, "pad_token_id": 0}


def write_pair(path, config):
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))  # NaN and Infinity written as JavaScript spells them
    return path


BAD = math.nan
BERT_CASES = [  # (field, bad value)
    ("num_attention_heads", True), ("num_attention_heads", 0), ("num_attention_heads", 4.0),
    ("num_attention_heads", "4"), ("hidden_size", -32), ("hidden_size", None), ("hidden_size", 2 ** 40),
    ("num_hidden_layers", 10 ** 12), ("num_hidden_layers", 0), ("num_hidden_layers", False),
    ("intermediate_size", [37]), ("vocab_size", 99.5), ("vocab_size", 0), ("max_position_embeddings", -1),
    ("type_vocab_size", 0), ("hidden_act", "swiglu9"), ("hidden_act", {"name": "gelu"}), ("hidden_act", None),
    ("hidden_dropout_prob", 1.5), ("hidden_dropout_prob", -0.1), ("hidden_dropout_prob", "0.1"),
    ("hidden_dropout_prob", True), ("attention_probs_dropout_prob", BAD), ("classifier_dropout", 2),
    ("layer_norm_eps", 0), ("layer_norm_eps", -1e-12), ("layer_norm_eps", math.inf), ("initializer_range", -0.02),
    ("initializer_range", "0.02"), ("pad_token_id", -1), ("pad_token_id", 0.0), ("pad_token_id", True),
    ("bos_token_id", "[CLS]"), ("eos_token_id", []), ("eos_token_id", [1, -2]), ("eos_token_id", [[1]]),
    ("is_decoder", "yes"), ("add_cross_attention", 1), ("tie_word_embeddings", "true"), ("use_cache", None),
    ("position_embedding_type", "relative_key"), ("is_encoder_decoder", 0),
]
GPT2_CASES = [
    ("n_head", True), ("n_head", 0), ("n_embd", 0), ("n_embd", "32"), ("n_layer", 10 ** 12), ("n_layer", 2.0),
    ("n_positions", -1), ("vocab_size", "99"), ("n_inner", 0), ("n_inner", 1.5), ("activation_function", "gelu_fancy"),
    ("resid_pdrop", 1.1), ("embd_pdrop", -1), ("attn_pdrop", "x"), ("layer_norm_epsilon", 0),
    ("initializer_range", None), ("scale_attn_weights", 1), ("scale_attn_by_inverse_layer_idx", "false"),
    ("reorder_and_upcast_attn", None), ("bos_token_id", -1), ("eos_token_id", 1.5), ("pad_token_id", [0]),
]
BART_CASES = [
    ("d_model", True), ("d_model", 0), ("decoder_layers", 10 ** 12), ("decoder_attention_heads", 0),
    ("decoder_ffn_dim", -1), ("encoder_layers", "12"), ("encoder_ffn_dim", None), ("encoder_attention_heads", 1.0),
    ("vocab_size", None), ("max_position_embeddings", 0), ("dropout", 1.5), ("attention_dropout", -0.5),
    ("activation_dropout", "0"), ("encoder_layerdrop", 2), ("decoder_layerdrop", BAD), ("activation_function", 7),
    ("init_std", -1), ("scale_embedding", "no"), ("decoder_start_token_id", -2), ("forced_eos_token_id", [2, "x"]),
    ("forced_bos_token_id", 0.5),
]
CASES = ([("bert", "encoder", field, value) for field, value in BERT_CASES]
         + [("bert", "decoder", field, value) for field, value in BERT_CASES if field != "is_decoder"]
         + [("gpt2", "decoder", field, value) for field, value in GPT2_CASES]
         + [("bart", "decoder", field, value) for field, value in BART_CASES])


@pytest.mark.parametrize("decoder, part, field, value", CASES,
                         ids=[f"{d}-{p}-{f}={v!r}"[:60] for d, p, f, v in CASES])
def test_a_bad_value_is_refused_naming_the_class_and_field(tmp_path, decoder, part, field, value):
    config = pair(decoder)
    config[part][field] = value
    path = write_pair(tmp_path / "model", config)
    family = "bert" if part == "encoder" else decoder
    expected = re.escape(f"{path / 'config.json'}: {part}: {CLASS_NAMES[family]}.{field} must be")
    with pytest.raises(ConfigError, match=expected):  # not CheckpointNotFoundError: config.json is read first
        seq2seq.EncoderDecoderModel.from_pretrained(path)


@pytest.mark.parametrize("field, value, message", [
    ("decoder_start_token_id", True, "EncoderDecoderConfig.decoder_start_token_id must be a token id"),
    ("decoder_start_token_id", -1, "EncoderDecoderConfig.decoder_start_token_id must be a token id"),
    ("pad_token_id", "0", "EncoderDecoderConfig.pad_token_id must be a token id"),
    ("eos_token_id", [], "EncoderDecoderConfig.eos_token_id must be a token id"),
    ("tie_encoder_decoder", "yes", "EncoderDecoderConfig.tie_encoder_decoder must be true or false"),
    ("is_encoder_decoder", 1, "EncoderDecoderConfig.is_encoder_decoder must be true or false"),
    ("model_type", {"name": "encoder-decoder"}, "model_type must be a string"),
    ("model_type", None, "model_type must be a string"),
    ("encoder", "bert", "encoder: expected a JSON object, got str"),
    ("decoder", [], "decoder: expected a JSON object, got list"),
    ("encoder", {}, "encoder: model_type must be a string"),
    ("decoder", {"model_type": "bert", "vocab_size": 99}, "decoder config of an encoder-decoder model needs"),
    ("encoder", pair(), "encoder: an encoder-decoder config cannot be the encoder of another"),
    ("to_dict", 1, "cannot hold a field named 'to_dict'"),
    ("__class__", "x", "cannot hold a field named '__class__'"),
])
def test_the_pairs_own_fields_and_its_nesting_are_checked(tmp_path, field, value, message):
    config = pair()
    config[field] = value
    path = write_pair(tmp_path / "model", config)
    with pytest.raises(ConfigError, match=re.escape(message)):
        seq2seq.EncoderDecoderModel.from_pretrained(path)


@pytest.mark.parametrize("part, changes, message", [
    ("encoder", {"hidden_size": 30}, "BertConfig.hidden_size (30) is not a multiple of num_attention_heads (4)"),
    ("decoder", {"n_embd": 30}, "GPT2Config.n_embd (30) is not a multiple of n_head (4)"),
    ("decoder", {"d_model": 30}, "BartConfig.d_model (30) is not a multiple of decoder_attention_heads (4)"),
    # each size allowed on its own, but together 8e11 parameters
    ("encoder", {"vocab_size": 2 ** 24, "hidden_size": 2 ** 14, "num_attention_heads": 4},
     "BertConfig describes a model of about 2.8e+11 parameters"),
    ("decoder", {"n_layer": MAX_LAYERS, "n_embd": 2 ** 13}, "GPT2Config describes a model of about 1.1e+12"),
])
def test_fields_that_must_fit_together(tmp_path, part, changes, message):
    decoder = "gpt2" if "n_embd" in changes or "n_layer" in changes else "bart" if "d_model" in changes else "bert"
    config = pair(decoder)
    config[part].update(changes)
    with pytest.raises(ConfigError, match=re.escape(message)):
        seq2seq.EncoderDecoderModel.from_pretrained(write_pair(tmp_path / "model", config))


def test_encoder_and_decoder_together_are_bounded():
    half = seq2seq.BertConfig(vocab_size=2 ** 20, hidden_size=4096, num_attention_heads=16, intermediate_size=16384)
    assert MAX_PARAMETERS / 2 < half.parameter_estimate() <= MAX_PARAMETERS  # each alone is accepted
    with pytest.raises(ConfigError, match=r"EncoderDecoderConfig describes a model of about 1\.5e\+10 parameters "
                                          r"\(encoder 7\.5e\+09, decoder 7\.5e\+09\)"):
        seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(half, half)


def test_absurd_sizes_fail_fast_without_allocating(tmp_path):
    config = pair("gpt2")
    config["decoder"]["n_layer"] = 10 ** 12
    path = write_pair(tmp_path / "model", config)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ConfigError, match="GPT2Config.n_layer must be at most 1,024, got 1000000000000"):
            seq2seq.EncoderDecoderModel.from_pretrained(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2 and peak < 10 * 2 ** 20
    (path / "config.json").write_text('{"model_type": "bert", "vocab_size": ' + "9" * 5000 + "}")
    with pytest.raises(ConfigError, match="cannot be read"):  # past Python's 4,300-digit limit on int()
        load_config(path)


def test_python_made_configs_and_later_changes_are_checked_too():
    with pytest.raises(ConfigError, match=re.escape("BertConfig.num_attention_heads must be a positive integer, "
                                                    "got True")):
        seq2seq.BertConfig(num_attention_heads=True)
    with pytest.raises(ConfigError, match="GPT2Config.n_head must be a positive integer"):
        seq2seq.GPT2Config(num_attention_heads=0)  # an alias: the error names the field config.json holds
    config = seq2seq.EncoderDecoderConfig()
    config.decoder.num_hidden_layers = 10 ** 6
    with pytest.raises(ConfigError, match="num_hidden_layers must be at most"):
        config.validate()  # an encoder-decoder config checks both its parts again


@pytest.mark.parametrize("decoder", ["bert", "gpt2", "bart"])
def test_valid_configs_still_load_and_build(tmp_path, decoder):
    config = pair(decoder)
    config["encoder"]["some_future_field"] = {"nested": [1, None, "x"]}  # unknown fields: kept as they are
    config["decoder"]["eos_token_id"] = [2, 3]
    path = write_pair(tmp_path / "model", config)
    with pytest.raises(CheckpointNotFoundError):  # the config passed; the (absent) weights are next
        seq2seq.EncoderDecoderModel.from_pretrained(path)
    loaded = load_config(path)
    assert loaded.encoder.some_future_field == {"nested": [1, None, "x"]} and loaded.decoder.eos_token_id == [2, 3]
    model = seq2seq.EncoderDecoderModel(loaded)
    assert model.num_parameters() < loaded.encoder.parameter_estimate() + loaded.decoder.parameter_estimate() + 10_000


def test_the_shipped_models_config_loads():
    config = load_config(REPO / "weights" / "minilm-l6-debian-synopsis")
    assert config.encoder.hidden_size == 384 and config.decoder.is_decoder


@pytest.mark.oracle
@pytest.mark.parametrize("decoder", ["BertConfig", "GPT2Config", "BartConfig"])
def test_transformers_default_configs_load(tmp_path, decoder):
    transformers = pytest.importorskip("transformers")
    reference = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
        transformers.BertConfig(), getattr(transformers, decoder)(), decoder_start_token_id=101, pad_token_id=0)
    reference.save_pretrained(str(tmp_path))
    ours, saved = load_config(tmp_path), json.loads((tmp_path / "config.json").read_text())
    assert ours.encoder.hidden_size == 768 and ours.decoder.model_type == reference.decoder.model_type
    mine = ours.to_dict()
    for part in ("encoder", "decoder"):  # every field as transformers wrote it
        assert {key: mine[part].get(key) for key in saved[part]} == saved[part]
    assert {key: mine.get(key) for key in saved if key not in ("encoder", "decoder")} == \
        {key: value for key, value in saved.items() if key not in ("encoder", "decoder")}
