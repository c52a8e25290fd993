"""ParamStore / ParamView: prefix views, reading from another prefix, ties, missing and unused reporting."""
import subprocess
import sys

import numpy as np
import pytest

from seq2seq.core.errors import CheckpointError
from seq2seq.nn.weights import ParamStore, normal, ones, zeros

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def store_with(**tensors):
    return ParamStore({k.replace("__", "."): v for k, v in tensors.items()}, source="test.safetensors")


def test_param_takes_the_checkpoint_tensor_and_names_it():
    store = store_with(enc__dense__weight=np.full((3, 2), 7.0, np.float64))
    p = store.view("enc.").sub("dense").param("weight", (3, 2), init=zeros)
    assert p.name == "enc.dense.weight" and p.requires_grad and p.dtype == np.float32
    np.testing.assert_array_equal(p.data, 7.0)
    assert store.missing == [] and store.unused() == []


def test_missing_tensors_are_initialised_and_reported():
    store = store_with(a__weight=np.zeros(2, np.float32), stray=np.zeros(1, np.float32),
                       emb__position_ids=np.arange(4))
    view = store.view()
    view.param("a.weight", (2,), init=zeros)
    b = view.param("b.weight", (50, 40), init=normal(0.5))
    c = view.param("c.bias", (3,), init=ones)
    assert store.missing == ["b.weight", "c.bias"]
    assert abs(float(b.data.std()) - 0.5) < 0.05 and (c.data == 1).all()
    assert store.unused() == ["stray"]  # known buffers like position_ids are not reported


def test_seeded_initialisation_repeats():
    a = ParamStore(seed=3).view().param("w", (4, 4), init=normal(1.0)).data
    b = ParamStore(seed=3).view().param("w", (4, 4), init=normal(1.0)).data
    np.testing.assert_array_equal(a, b)


def test_reading_from_another_prefix_keeps_the_canonical_name():
    store = store_with(embeddings__weight=np.ones((2, 2), np.float32))
    view = store.view("decoder.", source_prefix="").sub("bert", source_name="")
    p = view.sub("embeddings").param("weight", (2, 2), init=zeros)
    assert p.name == "decoder.bert.embeddings.weight" and store.missing == []
    q = store_with(bert__x=np.ones(1, np.float32)).view().reading_from("bert").param("x", (1,), init=zeros)
    assert q.name == "x" and q.data[0] == 1


def test_tied_view_reuses_parameters_and_records_aliases():
    store = ParamStore()
    enc = store.view("encoder.")
    shared = enc.sub("layer").param("weight", (2, 2), init=ones)
    dec = store.view("decoder.").tie(enc)
    assert dec.sub("layer").param("weight", (2, 2), init=zeros) is shared
    own = dec.sub("cross").param("weight", (2, 2), init=zeros)  # the encoder has none: the decoder's own
    assert own is not shared
    assert store.aliases == {"decoder.layer.weight": "encoder.layer.weight"}
    assert list(store.params) == ["encoder.layer.weight", "decoder.cross.weight"]


@pytest.mark.parametrize("bad, match", [(np.zeros((2, 3), np.float32), r"shape \(2, 3\)"),
                                        (np.zeros((3, 2), np.int64), "dtype int64")])
def test_wrong_shape_or_dtype_names_the_tensor(bad, match):
    store = store_with(enc__w=bad)
    with pytest.raises(CheckpointError, match=f"test.safetensors.*'enc.w'.*{match}"):
        store.view("enc.").param("w", (3, 2), init=zeros)


def test_buffers_are_saved_but_not_parameters():
    store = ParamStore()
    store.view("p.").buffer("weight", (2,), init=ones)
    assert "p.weight" in store.buffers and store.params == {}


def test_inspect_tool_runs(tmp_path):
    import seq2seq
    enc = seq2seq.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=12)
    model = seq2seq.EncoderDecoderModel(seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(enc, enc))
    model.save_pretrained(tmp_path)
    out = subprocess.run([sys.executable, "weights/inspect_checkpoint.py", str(tmp_path)], capture_output=True,
                         text=True, check=True, cwd=str(REPO)).stdout
    assert "decoder.cls.predictions.bias" in out and "missing (freshly initialised): none" in out
