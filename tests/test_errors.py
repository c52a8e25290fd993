"""Bad input gets a clear exception naming the culprit: never a NumPy traceback, a hang or a wrong answer."""
import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import seq2seq
from seq2seq.core.errors import CheckpointError, CheckpointNotFoundError, ConfigError, InputError

ENC = dict(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=12,
           max_position_embeddings=16)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(
        seq2seq.BertConfig(**ENC), seq2seq.BertConfig(**ENC), decoder_start_token_id=2, pad_token_id=0)
    model = seq2seq.EncoderDecoderModel(config)
    model.save_pretrained(path)
    return path, model


def copy_of(saved, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(saved[0], path)
    return path


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="nope"):
        seq2seq.EncoderDecoderModel.from_pretrained(tmp_path / "nope")


def test_missing_weights_file(saved, tmp_path):
    path = copy_of(saved, tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="copy"):
        seq2seq.EncoderDecoderModel.from_pretrained(path)


def test_pickle_checkpoint_is_refused(saved, tmp_path):
    path = copy_of(saved, tmp_path)
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    with pytest.raises(CheckpointNotFoundError, match="pickle"):
        seq2seq.EncoderDecoderModel.from_pretrained(path)


def test_truncated_weights(saved, tmp_path):
    path = copy_of(saved, tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        seq2seq.EncoderDecoderModel.from_pretrained(path)


def test_absurd_header_length(saved, tmp_path):
    path = copy_of(saved, tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes((2 ** 62).to_bytes(8, "little") + data[8:])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        seq2seq.EncoderDecoderModel.from_pretrained(path)


@pytest.mark.parametrize("bad", ["shape", "dtype"])
def test_tensor_of_wrong_shape_or_dtype(saved, tmp_path, bad):
    path = copy_of(saved, tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    key = "decoder.bert.encoder.layer.0.attention.self.query.weight"
    tensors[key] = np.zeros((8, 9), np.float32) if bad == "shape" else np.zeros((8, 8), np.int32)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        seq2seq.EncoderDecoderModel.from_pretrained(path)


def test_unknown_model_type(saved, tmp_path):
    path = copy_of(saved, tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["decoder"]["model_type"] = "mamba"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="mamba"):
        seq2seq.EncoderDecoderModel.from_pretrained(path)


def test_corrupt_config_json(saved, tmp_path):
    path = copy_of(saved, tmp_path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json"):
        seq2seq.EncoderDecoderModel.from_pretrained(path)


def test_single_model_checkpoint_given_to_from_pretrained(tmp_path):
    seq2seq.BertConfig(**ENC).to_json_file(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="from_encoder_decoder_pretrained"):
        seq2seq.EncoderDecoderModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("bad_id", [30, 1000, -1])
def test_input_id_outside_vocabulary(saved, bad_id):
    model = saved[1]
    with pytest.raises(InputError, match=f"id {bad_id}"):
        model([[3, bad_id, 4]], decoder_input_ids=[[2, 5]])
    with pytest.raises(InputError, match="decoder_input_ids"):
        model([[3, 4]], decoder_input_ids=[[2, bad_id]])


def test_attention_mask_shape_mismatch(saved):
    with pytest.raises(InputError, match=r"attention_mask has shape \(1, 2\)"):
        saved[1]([[3, 4, 5]], attention_mask=[[1, 1]], decoder_input_ids=[[2, 5]])
    with pytest.raises(InputError, match="decoder_attention_mask"):
        saved[1]([[3, 4, 5]], decoder_input_ids=[[2, 5]], decoder_attention_mask=[[1, 1, 1]])


def test_sequence_longer_than_positions(saved):
    with pytest.raises(InputError, match="max_position_embeddings=16"):
        saved[1]([list(range(3, 20))], decoder_input_ids=[[2, 5]])


@pytest.mark.parametrize("ids, match", [([3, 4], "2-D"), ([[3.5, 4.0]], "integers"), ([[]], "empty")])
def test_malformed_ids(saved, ids, match):
    with pytest.raises(InputError, match=match):
        saved[1](ids, decoder_input_ids=[[2, 5]])


def test_label_outside_vocabulary(saved):
    with pytest.raises(InputError, match="label 99"):
        saved[1]([[3, 4]], labels=[[5, 99]])


def test_labels_without_decoder_start_token(saved):
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(seq2seq.BertConfig(**ENC),
                                                                       seq2seq.BertConfig(**ENC))
    with pytest.raises(ConfigError, match="decoder_start_token_id"):
        seq2seq.EncoderDecoderModel(config)([[3, 4]], labels=[[5, 6]])


def test_bad_config_values():
    with pytest.raises(ConfigError, match="not a multiple"):
        seq2seq.BertConfig(hidden_size=10, num_attention_heads=3)
    with pytest.raises(ConfigError, match="hidden_act"):
        config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(
            seq2seq.BertConfig(**ENC, hidden_act="swiglu9"), seq2seq.BertConfig(**ENC))
        seq2seq.EncoderDecoderModel(config)


def test_bad_backend_and_dtype(saved):
    with pytest.raises(InputError, match="backend"):
        seq2seq.EncoderDecoderModel(saved[1].config, backend="tpu")
    with pytest.raises(InputError, match="dtype"):
        seq2seq.EncoderDecoderModel(saved[1].config, dtype="int8")
