"""A padded batch's real tokens as rows (nn/packing.py): which batches are packed, the rows taken and put back
(zeros at the padding) with their gradients, attention told that the padded queries are unused, and the encoder
on packed rows equal to the padded encoder at every real token."""
import contextlib

import numpy as np
import pytest

import seq2seq
from seq2seq.core.gradcheck import check_grad
from seq2seq.fast import cpu as fast_cpu
from seq2seq.nn.attention import causal_mask, combine_masks, padding_mask, scaled_dot_product_attention
from seq2seq.nn.packing import MIN_PADDING_SHARE, Packing
from seq2seq.nn.record import Records, reporting


def padded(xp, lengths, s):
    """A padding keep mask ``[B, 1, 1, s]`` for sources of these lengths (right-padded)."""
    mask = np.zeros((len(lengths), s), np.int64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return padding_mask(xp.asarray(mask))


def test_pack_takes_the_real_rows_in_order_and_unpack_puts_them_back(xp):
    keep = padded(xp, [3, 1, 4], 4)
    x = xp.asarray(np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2))  # [B, S, C]
    packing = Packing(keep)
    rows = packing.pack(x).data
    want = np.concatenate([np.arange(3 * 4 * 2).reshape(3, 4, 2)[i, :n] for i, n in enumerate([3, 1, 4])])
    np.testing.assert_array_equal(seq2seq.to_numpy(rows), want)  # [8, 2]: row-major order of the real tokens
    back = seq2seq.to_numpy(packing.unpack(rows).data)
    real = seq2seq.to_numpy(keep)[:, 0, 0, :]
    assert back.shape == (3, 4, 2)
    np.testing.assert_array_equal(back[real], seq2seq.to_numpy(x)[real])
    assert not back[~real].any()  # zeros at the padding


def test_left_padding_packs_too():
    keep = padding_mask(np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]))
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    rows = Packing(keep).pack(x).data
    np.testing.assert_array_equal(rows, np.concatenate([x[0, 2:], x[1]]))


def test_a_source_without_a_real_token_is_kept_whole():
    keep = padded(np, [3, 0, 1], 4)
    rows = Packing(keep).pack(np.arange(12.0).reshape(3, 4, 1)).data[:, 0]
    np.testing.assert_array_equal(rows, [0, 1, 2, 4, 5, 6, 7, 8])  # every position of the empty source


def test_only_padding_masks_with_enough_padding_are_packed():
    assert Packing.worth_it(None) is None
    assert Packing.worth_it(padded(np, [8, 8], 8)) is None  # no padding
    s = 20
    just_under = padded(np, [s, s - int(2 * s * MIN_PADDING_SHARE) + 1], s)
    assert Packing.worth_it(just_under) is None
    assert isinstance(Packing.worth_it(padded(np, [s, s - int(2 * s * MIN_PADDING_SHARE)], s)), Packing)
    # a mask per query (a causal encoder's): attention needs every position's row as it is
    assert Packing.worth_it(combine_masks(causal_mask(np, 4, 4), padded(np, [4, 1], 4))) is None


@pytest.mark.parametrize("way", ["pack", "unpack"])
def test_gradients_finite_differences(way):
    packing = Packing(padded(np, [2, 3, 1], 3))
    rng = np.random.default_rng(1)
    if way == "pack":
        assert check_grad(packing.pack, rng.standard_normal((3, 3, 2)))
    else:
        assert check_grad(packing.unpack, rng.standard_normal((6, 2)))


def test_attention_with_padded_queries_unused_equals_it_at_the_real_queries(xp, form):
    b, nh, s, hs = 3, 2, 9, 4
    rng = np.random.default_rng(2)
    q, k, v = (xp.asarray(rng.standard_normal((b, nh, s, hs)).astype(np.float32)) for _ in range(3))
    keep = padded(xp, [9, 5, 2], s)
    out = seq2seq.to_numpy(scaled_dot_product_attention(q, k, v, keep, padded_queries_unused=True).data)
    ref = seq2seq.to_numpy(scaled_dot_product_attention(q, k, v, keep).data)
    real = seq2seq.to_numpy(keep)[:, 0, 0, :]  # [B, S]
    for i in range(b):
        np.testing.assert_allclose(out[i][:, real[i]], ref[i][:, real[i]], rtol=1e-5, atol=1e-6)


def test_long_sequences_leave_padded_queries_out_in_the_head_blocks(monkeypatch):
    from seq2seq.fast.cpu import attention as fused  # noqa: PLC0415

    monkeypatch.setattr(fused, "_CHUNK", 40)  # one head of 16 x 16 scores is a block; queries in chunks of 2
    b, nh, s, hs = 2, 3, 16, 4
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((b, nh, s, hs)).astype(np.float32) for _ in range(3))
    keep = padded(np, [16, 7], s)
    out = scaled_dot_product_attention(q, k, v, keep, padded_queries_unused=True).data
    ref = scaled_dot_product_attention(q, k, v, keep).data
    np.testing.assert_allclose(out[0], ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1, :, :7], ref[1, :, :7], rtol=1e-5, atol=1e-6)
    assert not out[1, :, 7:].any()


@pytest.fixture(scope="module")
def model():
    def bert():
        return seq2seq.BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                                  intermediate_size=40, max_position_embeddings=32)

    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(bert(), bert())
    config.decoder_start_token_id, config.pad_token_id = 2, 0
    return seq2seq.EncoderDecoderModel(config, seed=1)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_the_packed_encoder_equals_the_padded_one_at_every_real_token(model, fused):
    rng = np.random.default_rng(4)
    ids = rng.integers(3, 50, (3, 11))
    mask = np.ones_like(ids)
    mask[1, 6:], mask[2, 2:] = 0, 0
    ids_, keep = model._source(ids, mask)
    empty_mask = mask.copy()
    empty_mask[1] = 0  # a source without a real token: read whole by cross-attention, so kept whole
    empty_ids, empty_keep = model._source(ids, empty_mask)
    with contextlib.nullcontext() if fused else fast_cpu.disabled(), seq2seq.no_grad():
        packed = model._run_encoder(ids_, keep, pack_padding=True).data
        padded_ = model._run_encoder(ids_, keep).data
        np.testing.assert_allclose(model._run_encoder(empty_ids, empty_keep, pack_padding=True).data[1],
                                   model._run_encoder(empty_ids, empty_keep).data[1], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(padded_, model.encode(ids, mask).data)  # encode never packs
        records = Records(hidden_states=True)
        with reporting(model.state, records):  # recording: not packed, every position as transformers has it
            np.testing.assert_array_equal(model.encoder(ids_, keep, pack_padding=True).data, padded_)
    real = mask.astype(bool)
    np.testing.assert_allclose(packed[real], padded_[real], rtol=1e-5, atol=1e-5)
    assert not packed[~real].any()
    assert np.abs(padded_[~real]).min() > 0  # the padded encoder computes those positions, as transformers does


def test_generate_encodes_packed_rows_and_decodes_the_same_ids(model, monkeypatch):
    from seq2seq.nn import packing  # noqa: PLC0415

    rng = np.random.default_rng(5)
    ids = rng.integers(3, 50, (3, 12))
    mask = np.ones_like(ids)
    mask[0, 4:], mask[2, 9:] = 0, 0
    made, worth_it = [], packing.Packing.worth_it.__func__

    def counted(cls, keep):
        made.append(worth_it(cls, keep))
        return made[-1]

    monkeypatch.setattr(packing.Packing, "worth_it", classmethod(counted))
    packed = model.generate(ids, mask, max_new_tokens=6, num_beams=2)
    assert len(made) == 1 and made[0] is not None  # encoded once, on packed rows
    monkeypatch.setattr(packing.Packing, "worth_it", classmethod(lambda cls, keep: None))
    np.testing.assert_array_equal(packed, model.generate(ids, mask, max_new_tokens=6, num_beams=2))


def test_training_with_dropout_packed_equals_padded(model):
    """The same dropout masks for every real token, so the same loss and gradients (the Trainer packs)."""
    rng = np.random.default_rng(6)
    ids, labels = rng.integers(3, 50, (3, 10)), rng.integers(3, 50, (3, 4))
    mask = np.ones_like(ids)
    mask[0, 3:], mask[1, 8:] = 0, 0
    model.train()
    try:
        results = []
        for pack in (True, False):
            model.state.rng = np.random.default_rng(7)  # the same draws for both runs
            loss = model(ids, attention_mask=mask, labels=labels, pack_padding=pack).loss
            loss.backward()
            results.append((float(loss), [p.grad.copy() for p in model.parameters()]))
            for p in model.parameters():
                p.grad = None
    finally:
        model.eval()
    (packed, packed_grads), (padded_, padded_grads) = results
    assert abs(packed - padded_) <= 1e-6 * abs(padded_)
    for got, want in zip(packed_grads, padded_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
