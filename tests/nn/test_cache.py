"""The KV cache: decoding step by step with it equals one full forward pass without it."""
import numpy as np
import pytest

import seq2seq


@pytest.fixture(scope="module")
def model():
    enc = seq2seq.BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                             intermediate_size=30, max_position_embeddings=64)
    dec = seq2seq.BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=3, num_attention_heads=4,
                             intermediate_size=20, max_position_embeddings=64)
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec, decoder_start_token_id=2,
                                                                       pad_token_id=0)
    return seq2seq.EncoderDecoderModel(config, seed=1)


def inputs(batch=3, src=7, tgt=9):
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 50, (batch, src))
    mask = np.ones_like(ids)
    mask[1:, src - 2:] = 0
    return ids, mask, rng.integers(3, 50, (batch, tgt))


@pytest.mark.parametrize("capacity", [1, 4, 64], ids=["grows-often", "grows-once", "preallocated"])
@pytest.mark.parametrize("step", [1, 2, 4])
def test_cached_steps_equal_full_forward(model, capacity, step):
    ids, mask, dec = inputs()
    with seq2seq.no_grad():
        full = model(ids, attention_mask=mask, decoder_input_ids=dec).logits  # [B, T, V]
    cache = model.start_decoding(ids, attention_mask=mask, capacity=capacity)
    for start in range(0, dec.shape[1], step):
        chunk = dec[:, start:start + step]
        logits = model.decode_step(chunk, cache)  # logits after the last of these positions
        np.testing.assert_allclose(logits, full[:, start + chunk.shape[1] - 1], rtol=1e-5, atol=1e-6)
    assert cache.length == dec.shape[1]


def test_cross_attention_is_computed_once(model):
    ids, mask, dec = inputs()
    cache = model.start_decoding(ids, attention_mask=mask)
    model.decode_step(dec[:, :1], cache)
    first = [layer.cross_k for layer in cache.layers]
    model.decode_step(dec[:, 1:2], cache)
    assert all(a is layer.cross_k for a, layer in zip(first, cache.layers))


def test_reorder_follows_the_chosen_rows(model):
    ids, mask, dec = inputs()
    with seq2seq.no_grad():
        full = model(ids, attention_mask=mask, decoder_input_ids=dec).logits
    cache = model.start_decoding(ids, attention_mask=mask)
    model.decode_step(dec[:, :3], cache)
    order = np.array([2, 2, 0])  # as beam search does: one row twice, one dropped
    cache.reorder(order)
    logits = model.decode_step(dec[order, 3:4], cache)
    np.testing.assert_allclose(logits, full[order, 3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("order", [[2, 0, 0, 5, 5, 3], [0, 0, 2, 3, 3, 5], [0, 1, 2, 3, 4, 5]],
                         ids=["all_move", "some_stay", "none_move"])
def test_reorder_beams_moves_only_the_self_attention_history(model, order):
    ids, mask, dec = inputs(batch=2)
    beams = 3
    with seq2seq.no_grad():
        full = model(ids[[0, 0, 0, 1, 1, 1]], attention_mask=mask[[0, 0, 0, 1, 1, 1]],
                     decoder_input_ids=dec[[0, 0, 0, 1, 1, 1]]).logits
    cache = model.start_decoding(ids, attention_mask=mask).reorder(np.repeat(np.arange(2), beams))
    model.decode_step(dec[[0, 0, 0, 1, 1, 1], :3], cache)
    cross = [layer.cross_k for layer in cache.layers]
    assert all(k.shape == (2, 4, 7, 6) for k in cross)  # once per source: [B, nh, S, hs]
    order = np.array(order)  # within each source's beams, as beam search does
    cache.reorder_beams(order)
    assert all(a is layer.cross_k for a, layer in zip(cross, cache.layers))
    logits = model.decode_step(dec[[0, 0, 0, 1, 1, 1]][order, 3:4], cache)
    np.testing.assert_allclose(logits, full[order, 3], rtol=1e-5, atol=1e-6)


def test_repeating_rows_keeps_the_encoder_side_once_per_source(model):
    ids, mask, dec = inputs(batch=2)
    cache = model.start_decoding(ids, attention_mask=mask)
    memory, keep = cache.memory, cache.memory_keep
    cache.reorder(np.repeat(np.arange(2), 3))  # [B] -> [B*3] rows, as encode_sources asks for 3 beams
    assert (cache.copies, cache.batch_size) == (3, 6)
    assert cache.memory is memory and cache.memory_keep is keep  # [B, S, C] and [B, 1, 1, S], not repeated
    model.decode_step(dec[[0, 0, 0, 1, 1, 1], :2], cache)
    assert all(layer.cross_k.shape == layer.cross_v.shape == (2, 4, 7, 6) for layer in cache.layers)
    assert all(layer.self_k.shape[0] == 6 for layer in cache.layers)


@pytest.mark.parametrize("order, copies", [([2, 0, 1, 5, 5, 3], 3), ([5, 0, 3, 3], 1), ([3, 4, 5, 0, 1, 2], 1),
                                           ([0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3], 1),
                                           ([0, 2, 2, 1, 1, 0, 3, 3, 5, 5, 4, 3], 6)],
                         ids=["within-sources", "mixed", "sources-swapped", "uneven", "each-source-doubled"])
def test_reorder_of_shared_rows_follows_the_chosen_rows(model, order, copies):
    """Any index: rows that stay with their own source keep one encoder side per source (``copies`` follows);
    any other falls back to a copy per row. Either way decoding goes on as a full forward pass of those rows."""
    ids, mask, dec = inputs(batch=2)
    rows = np.repeat(np.arange(2), 3)  # [B*3]: each row's source
    with seq2seq.no_grad():
        full = model(ids[rows], attention_mask=mask[rows], decoder_input_ids=dec[rows]).logits  # [B*3, T, V]
    cache = model.start_decoding(ids, attention_mask=mask).reorder(rows)
    model.decode_step(dec[rows, :3], cache)
    order = np.array(order)
    cache.reorder(order)
    assert cache.copies == copies and cache.batch_size == len(order)
    assert all(layer.cross_k.shape[0] == len(order) // copies for layer in cache.layers)
    logits = model.decode_step(dec[rows][order, 3:4], cache)
    np.testing.assert_allclose(logits, full[order, 3], rtol=1e-5, atol=1e-6)
