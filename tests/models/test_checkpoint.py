"""Tests for seq2seq/checkpoint.py: safetensors round trips, BF16 widening, sharding, and every refusal."""
import json
import os
import re
import struct

import numpy as np
import pytest
import safetensors.torch
import torch

from seq2seq.core.config import read_json
from seq2seq.models.checkpoint import load_state_dict, save_state_dict
from seq2seq.core.errors import CheckpointError, CheckpointNotFoundError, ConfigError

rng = np.random.default_rng(0)


def sample_tensors():
    """A small state dict mixing floats, an integer buffer, a scalar and an empty tensor."""
    return {
        "encoder.embeddings.word_embeddings.weight": rng.standard_normal((11, 8)).astype(np.float32),
        "encoder.layer.0.attention.self.query.bias": rng.standard_normal(8).astype(np.float32),
        "encoder.embeddings.position_ids": np.arange(16, dtype=np.int64)[None],
        "decoder.scalar": np.array(2.5, dtype=np.float32),
        "decoder.empty": np.zeros((0, 4), dtype=np.float32),
    }


def assert_same(loaded, expected):
    assert sorted(loaded) == sorted(expected)
    for key, value in expected.items():
        assert loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


# ---- round trips ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (5,), (2, 3, 4)])
def test_round_trip_keeps_dtype_and_shape(tmp_path, dtype, shape):
    tensors = {"w": rng.standard_normal(shape).astype(dtype), "ids": np.arange(int(np.prod(shape)) + 1)}
    save_state_dict(tensors, tmp_path)
    loaded = load_state_dict(tmp_path, dtype=dtype)
    assert loaded["w"].dtype == dtype and loaded["ids"].dtype == np.int64
    assert_same(loaded, tensors)


def test_floats_are_converted_to_requested_dtype_but_integers_are_not(tmp_path):
    tensors = sample_tensors()
    save_state_dict(tensors, tmp_path)
    loaded = load_state_dict(tmp_path, dtype=np.float64)
    assert loaded["encoder.embeddings.word_embeddings.weight"].dtype == np.float64
    assert loaded["encoder.embeddings.position_ids"].dtype == np.int64
    assert_same(loaded, tensors)


def test_non_contiguous_arrays_are_written_correctly(tmp_path):
    base = rng.standard_normal((6, 4)).astype(np.float32)
    tensors = {"transposed": base.T, "strided": base[::2, 1:]}
    save_state_dict(tensors, tmp_path)
    assert_same(load_state_dict(tmp_path / "model.safetensors"), tensors)


def test_bf16_widens_exactly(tmp_path):
    source = torch.randn(7, 5).to(torch.bfloat16)
    source[0, :3] = torch.tensor([float("inf"), -0.0, 1e-40])  # edge values survive the bit shift too
    safetensors.torch.save_file({"w": source}, tmp_path / "model.safetensors")
    loaded = load_state_dict(tmp_path)["w"]
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, source.float().numpy())
    assert np.signbit(loaded[0, 1])


def test_f16_widens_exactly(tmp_path):
    source = torch.randn(4, 6).to(torch.float16)
    safetensors.torch.save_file({"w": source}, tmp_path / "model.safetensors")
    loaded = load_state_dict(tmp_path, dtype="float32")["w"]
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, source.float().numpy())


def test_files_written_by_torch_load_identically(tmp_path):
    source = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.tensor([True, False]), "d": torch.randn(())}
    safetensors.torch.save_file(source, tmp_path / "weights.safetensors", metadata={"format": "pt"})
    loaded = load_state_dict(tmp_path / "weights.safetensors")
    assert loaded["c"].dtype == np.bool_
    assert_same(loaded, {k: v.numpy() for k, v in source.items()})


def test_torch_loads_what_we_save(tmp_path):
    tensors = sample_tensors()
    save_state_dict(tensors, tmp_path, metadata={"note": "hi"})
    path = tmp_path / "model.safetensors"
    loaded = safetensors.torch.load_file(path)
    assert_same({k: v.numpy() for k, v in loaded.items()}, tensors)
    with safetensors.safe_open(path, framework="pt") as f:
        assert f.metadata() == {"format": "pt", "note": "hi"}


# ---- sharding ---------------------------------------------------------------------------------------------------

def test_sharded_round_trip(tmp_path):
    tensors = {f"layer.{i}.weight": rng.standard_normal((10, 10)).astype(np.float32) for i in range(5)}
    tensors["big"] = rng.standard_normal((30, 30)).astype(np.float32)  # bigger than a shard: gets its own
    save_state_dict(tensors, tmp_path, max_shard_size=1000)
    names = sorted(os.listdir(tmp_path))
    assert names == [f"model-{i:05d}-of-00004.safetensors" for i in range(1, 5)] + ["model.safetensors.index.json"]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"] == {"total_size": sum(a.nbytes for a in tensors.values())}
    assert sorted(index["weight_map"]) == sorted(tensors)
    assert_same(load_state_dict(tmp_path), tensors)
    for name in names[:-1]:  # every shard is a plain safetensors file torch can read
        with safetensors.safe_open(tmp_path / name, framework="pt") as f:
            assert f.metadata() == {"format": "pt"}


def test_resave_removes_stale_files(tmp_path):
    small = {"a": np.ones(3, np.float32)}
    big = {f"t{i}": np.full(100, i, np.float32) for i in range(3)}
    save_state_dict(small, tmp_path)
    save_state_dict(big, tmp_path, max_shard_size=400)
    assert "model.safetensors" not in os.listdir(tmp_path)
    assert_same(load_state_dict(tmp_path), big)
    save_state_dict(small, tmp_path, max_shard_size=400)  # fits in one file: shards and index must go
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert_same(load_state_dict(tmp_path), small)


def test_single_file_is_preferred_over_index(tmp_path):
    save_state_dict({"x": np.zeros(2, np.float32)}, tmp_path / "sharded", max_shard_size=4)
    save_state_dict({"y": np.ones(2, np.float32)}, tmp_path / "single")
    os.replace(tmp_path / "single" / "model.safetensors", tmp_path / "sharded" / "model.safetensors")
    assert list(load_state_dict(tmp_path / "sharded")) == ["y"]


def test_loads_sharded_checkpoint_written_by_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37)
    model = transformers.BertModel(config)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    loaded = load_state_dict(tmp_path)
    # save_pretrained leaves out non-persistent buffers, so compare on what it wrote.
    expected = {k: v.numpy() for k, v in model.state_dict().items() if k in loaded}
    assert set(loaded) <= set(model.state_dict()) and len(loaded) == len(expected) > 30
    assert_same(loaded, expected)


# ---- refusals ---------------------------------------------------------------------------------------------------

def valid_file(tmp_path, tensors=None):
    path = tmp_path / "model.safetensors"
    save_state_dict(tensors or {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, tmp_path)
    return path


def hand_made_file(path, header, data=b""):
    """Write a safetensors file from a header dict (or raw header bytes) and data bytes."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="nowhere.*does not exist"):
        load_state_dict(tmp_path / "nowhere")


def test_directory_without_weights_lists_its_contents(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointNotFoundError, match=r"model\.safetensors.*config\.json"):
        load_state_dict(tmp_path)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt"])
def test_pickle_checkpoints_are_refused(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointNotFoundError, match=f"(?s){re.escape(name)}.*pickle.*execute.*safetensors"):
        load_state_dict(tmp_path)
    with pytest.raises(CheckpointError, match=f"(?s){re.escape(name)}.*pickle"):
        load_state_dict(tmp_path / name)


W = {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}


@pytest.mark.parametrize("header, data, message", [
    (None, b"\x01\x02\x03\x04", "only 4 bytes"),
    (2**60, b"", "header of 1152921504606846976 bytes"),
    (b"\xff\xfe{garbage", b"", "corrupt safetensors header"),
    (b"[1, 2]", b"", "not a JSON object"),
    ({"w": {"dtype": "F32", "shape": [2, 3]}}, b"\0" * 24, "'w'.*data_offsets"),
    ({"w": {**W, "dtype": "F7"}}, b"\0" * 24, "'w'.*unknown or unsupported dtype 'F7'"),
    ({"w": {**W, "shape": [2, -3]}}, b"\0" * 24, "'w'.*shape"),
    ({"w": {**W, "data_offsets": [24, 0]}}, b"\0" * 24, "'w'.*data_offsets"),
    ({"w": {**W, "data_offsets": [0, 20]}}, b"\0" * 24, r"'w'.*20 bytes.*\[2, 3\].*24"),
    ({"w": W, "v": {**W, "data_offsets": [8, 32]}}, b"\0" * 32, "'v' overlaps.*'w'"),
    ({"w": W}, b"\0" * 20, "'w'.*truncated"),
], ids=["4-byte-file", "absurd-length", "not-utf8", "not-object", "missing-field", "unknown-dtype",
        "bad-shape", "reversed-offsets", "wrong-byte-length", "overlap", "short-data"])
def test_corrupt_files_are_refused(tmp_path, header, data, message):
    path = tmp_path / "broken.safetensors"
    if header is None:
        path.write_bytes(data)
    elif isinstance(header, int):
        path.write_bytes(struct.pack("<Q", header) + b"{}")
    else:
        hand_made_file(path, header, data)
    with pytest.raises(CheckpointError, match=f"broken\\.safetensors.*{message}"):
        load_state_dict(path)


def test_truncated_file_is_refused(tmp_path):
    path = valid_file(tmp_path)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(CheckpointError, match="model.safetensors, tensor 'w'.*truncated"):
        load_state_dict(tmp_path)


def write_sharded(tmp_path):
    save_state_dict({"a": np.zeros(4, np.float32), "b": np.ones(4, np.float32)}, tmp_path, max_shard_size=16)
    return tmp_path / "model.safetensors.index.json"


def test_index_naming_a_missing_shard(tmp_path):
    write_sharded(tmp_path)
    os.remove(tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(CheckpointNotFoundError, match="model-00002-of-00002.safetensors.*does not exist"):
        load_state_dict(tmp_path)


def test_index_listing_a_key_its_shard_lacks(tmp_path):
    index_path = write_sharded(tmp_path)
    index = json.loads(index_path.read_text())
    index["weight_map"]["ghost"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model-00001-of-00002.safetensors lacks tensor 'ghost'"):
        load_state_dict(tmp_path)


@pytest.mark.parametrize("text, message", [("{not json", "not valid JSON"), ('{"metadata": {}}', "no weight_map")])
def test_broken_index(tmp_path, text, message):
    (tmp_path / "model.safetensors.index.json").write_text(text)
    with pytest.raises(CheckpointError, match=f"index.json.*{message}"):
        load_state_dict(tmp_path)


# ---- read_json --------------------------------------------------------------------------------------------------

def test_read_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "bert"}')
    assert read_json(path) == {"model_type": "bert"}


def test_read_json_missing(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="config file .*absent.json does not exist"):
        read_json(tmp_path / "absent.json", what="config file")


@pytest.mark.parametrize("text, message", [('{\n  "a": 1,\n  oops\n}', "line 3"), ("[1]", "JSON object")])
def test_read_json_invalid(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"config.json.*{message}"):
        read_json(path)
