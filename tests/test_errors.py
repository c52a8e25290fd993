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
    with pytest.raises(InputError, match=f"input_ids holds id {bad_id}, outside the vocabulary"):
        model([[3, bad_id, 4]], decoder_input_ids=[[2, 5]])
    with pytest.raises(InputError, match=f"decoder_input_ids holds id {bad_id}"):
        model([[3, 4]], decoder_input_ids=[[2, bad_id]])


# Every path into the model meets the one boundary (core/inputs.py): the error names the argument and the id.
PATHS = {
    "forward": lambda m, bad: m([[3, bad, 4]], decoder_input_ids=[[2, 5]]),
    "encode": lambda m, bad: m.encode([[3, bad]]),
    "start_decoding": lambda m, bad: m.start_decoding([[bad, 4]]),
    "generate": lambda m, bad: m.generate([[3, bad]], max_new_tokens=2),
    "generate-beams": lambda m, bad: m.generate([[3, bad]], max_new_tokens=2, num_beams=2),
    "generate_stream": lambda m, bad: m.generate_stream([[3, bad]], max_new_tokens=2),  # at the call, not next()
}
DECODER_PATHS = {
    "forward": lambda m, bad: m([[3, 4]], decoder_input_ids=[[2, bad]]),
    "forward-labels": lambda m, bad: m([[3, 4]], decoder_input_ids=[[2, 5]], labels=[[5, bad]]),
    "labels-only": lambda m, bad: m([[3, 4]], labels=[[bad, 5]]),
    "decode_step": lambda m, bad: m.decode_step([[bad]], m.start_decoding([[3, 4]])),
}


@pytest.mark.parametrize("bad_id", [30, -1])
@pytest.mark.parametrize("path", PATHS)
def test_source_id_outside_vocabulary_on_every_path(saved, path, bad_id):
    with pytest.raises(InputError, match=f"^input_ids holds id {bad_id}, outside the vocabulary \\[0, 30\\)"):
        PATHS[path](saved[1], bad_id)


@pytest.mark.parametrize("bad_id", [30, -2])
@pytest.mark.parametrize("path", DECODER_PATHS)
def test_decoder_id_or_label_outside_vocabulary_on_every_path(saved, path, bad_id):
    name = "labels" if "labels" in path else "decoder_input_ids"
    with pytest.raises(InputError, match=f"^{name} holds id {bad_id}, outside the vocabulary"):
        DECODER_PATHS[path](saved[1], bad_id)


def test_ignored_labels_pass_the_boundary(saved):
    out = saved[1]([[3, 4]], labels=[[5, 6, -100]])
    assert np.isfinite(float(out.loss.data))


def test_ids_are_converted_once(saved, monkeypatch):
    """generate converts input_ids once, however deep the call goes; an int64 array is not even copied."""
    from seq2seq.core import inputs
    ids = np.array([[3, 4, 5]], dtype=np.int64)
    assert inputs.token_ids(ids, np, vocab_size=30, name="input_ids") is ids
    calls = []
    convert = inputs.as_int_array
    monkeypatch.setattr(inputs, "as_int_array", lambda x, xp, *, name: calls.append(name) or convert(x, xp, name=name))
    for kwargs in (dict(), dict(num_beams=2), dict(use_cache=False), dict(do_sample=True, seed=0)):
        calls.clear()
        saved[1].generate(ids, max_new_tokens=3, **kwargs)
        assert calls.count("input_ids") == 1, kwargs
    calls.clear()
    saved[1]([[3, 4]], labels=[[5, 6]])  # labels once; the decoder inputs shifted from them not again
    assert calls == ["input_ids", "labels"]


def test_decoder_batch_and_label_shapes_checked_before_any_work(saved):
    with pytest.raises(InputError, match="decoder_input_ids has batch size 2 but input_ids has 1"):
        saved[1]([[3, 4]], decoder_input_ids=[[2, 5], [2, 6]])
    with pytest.raises(InputError, match=r"labels has shape \(1, 3\) but decoder_input_ids has \(1, 2\)"):
        saved[1]([[3, 4]], decoder_input_ids=[[2, 5]], labels=[[5, 6, 7]])
    with pytest.raises(InputError, match="the cache holds 1 rows"):
        saved[1].decode_step([[2], [2]], saved[1].start_decoding([[3, 4]]))


def test_config_ids_outside_vocabulary_for_shifted_labels():
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(
        seq2seq.BertConfig(**ENC), seq2seq.BertConfig(**ENC), decoder_start_token_id=2, pad_token_id=30)
    with pytest.raises(ConfigError, match="pad_token_id = 30"):
        seq2seq.EncoderDecoderModel(config)([[3, 4]], labels=[[5, -100]])


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
    with pytest.raises(InputError, match=r"labels holds id 99, outside the vocabulary \[0, 30\) \(use -100"):
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
