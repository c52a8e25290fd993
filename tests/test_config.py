"""Configs: transformers' names and defaults, lossless JSON round trips, and transformers reading ours."""
import json

import pytest

import seq2seq
from seq2seq.generation.config import GenerationConfig
from seq2seq.models.config import config_from_dict, load_config
from seq2seq.core.errors import ConfigError


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
