"""Masks and the fused attention op: equal to the composed reference, gradients equal to finite differences."""
import numpy as np
import pytest

import seq2seq
from seq2seq.nn.attention import Attention, attention_reference, causal_mask, combine_masks, padding_mask
from seq2seq.core.gradcheck import check_grad


def test_causal_mask_with_a_cache_offset(xp):
    keep = causal_mask(xp, 2, 5)  # the last 2 of 5 positions are queries
    expected = [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    np.testing.assert_array_equal(seq2seq.to_numpy(keep[0, 0]), expected)


def test_padding_and_causal_masks_combine(xp):
    keep = combine_masks(causal_mask(xp, 3, 3), padding_mask(xp.asarray([[1, 1, 0]])), None)
    assert keep.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(seq2seq.to_numpy(keep[0, 0]), [[1, 0, 0], [1, 1, 0], [1, 1, 0]])
    assert combine_masks(None, None) is None


def make_keep(xp, kind, b, t, s):
    if kind == "none":
        return None
    if kind == "padding":
        mask = np.ones((b, s), np.int64)
        mask[-1, s // 2:] = 0
        return padding_mask(xp.asarray(mask))
    if kind == "causal+padding":
        mask = np.ones((b, s), np.int64)
        mask[0, -1] = 0
        return combine_masks(causal_mask(xp, t, s), padding_mask(xp.asarray(mask)))
    keep = np.ones((b, 1, t, s), bool)  # "fully-masked-row": a query that may see nothing
    keep[0, 0, t - 1, :] = False
    return xp.asarray(keep)


KINDS = ["none", "padding", "causal+padding", "fully-masked-row"]


@pytest.fixture(params=["kept", "recomputed"])
def probabilities(request, monkeypatch):
    """Run a test with the probabilities kept for backward (short keys) and recomputed in backward (long keys)."""
    import seq2seq.nn.attention as attention
    monkeypatch.setattr(attention, "_KEEP_PROBABILITIES_UP_TO", 1 << 20 if request.param == "kept" else 0)
    return request.param


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 6), (1, 1, 1, 7, 2)], ids=["b2nh3", "one-query"])
def test_fused_equals_reference(xp, kind, shape):
    b, nh, t, s, hs = shape
    rng = np.random.default_rng(0)
    q, k, v = (xp.asarray(rng.standard_normal(sh, dtype=np.float32) * 3)
               for sh in ((b, nh, t, hs), (b, nh, s, hs), (b, nh, s, hs)))
    keep = make_keep(xp, kind, b, t, s)
    fused = Attention(keep)(q, k, v).data
    ref = attention_reference(q, k, v, keep).data
    assert not np.isnan(seq2seq.to_numpy(fused)).any()
    np.testing.assert_allclose(seq2seq.to_numpy(fused), seq2seq.to_numpy(ref), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_fused_backward_finite_differences(kind, probabilities):
    b, nh, t, s, hs = 2, 2, 3, 4, 5
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal(sh) for sh in ((b, nh, t, hs), (b, nh, s, hs), (b, nh, s, hs)))
    keep = make_keep(np, kind, b, t, s)
    assert check_grad(lambda q, k, v: Attention(keep)(q, k, v), q, k, v)


def test_fused_backward_with_dropout_finite_differences(probabilities):
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, 2, 3, 4)) for _ in range(3))
    keep = make_keep(np, "padding", 2, 3, 3)

    def f(q, k, v):  # the same dropout mask at every evaluation: a fresh generator with a fixed seed
        return Attention(keep, dropout_p=0.3, rng=np.random.default_rng(7))(q, k, v)

    assert check_grad(f, q, k, v)


def test_dropout_changes_outputs_only_in_training_and_repeats_with_seed():
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 2, 6, 4), dtype=np.float32) for _ in range(3))
    plain = Attention()(q, k, v).data
    a = Attention(dropout_p=0.5, rng=np.random.default_rng(5))(q, k, v).data
    b = Attention(dropout_p=0.5, rng=np.random.default_rng(5))(q, k, v).data
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, plain)


def test_what_is_kept_of_the_scores_size_depends_on_the_number_of_keys():
    """Inference keeps nothing. Training keeps the probabilities when S <= 4 hs (no larger than a layer's
    feed-forward activation); with more keys it keeps q, k, v and two numbers per score row (backward recomputes
    the probabilities), never a [B, nh, T, S] array."""
    q = seq2seq.Tensor(np.ones((2, 3, 5, 4), np.float32), requires_grad=True)
    k = seq2seq.Tensor(np.ones((2, 3, 17, 4), np.float32), requires_grad=True)  # S = 17 > 4 hs = 16
    with seq2seq.no_grad():
        op = Attention()
        op(q, k, k)
    assert op.probs is None and op.row_max is None and op.log_sum is None
    op = Attention()
    op(q, k, k)
    assert op.probs is None and op.row_max.shape == op.log_sum.shape == (2, 3, 5, 1)
    saved = [a for a in vars(op).values() if isinstance(a, np.ndarray)]
    assert max(a.size for a in saved) == 2 * 3 * 17 * 4  # k and v: the largest arrays kept
    short = seq2seq.Tensor(np.ones((2, 3, 16, 4), np.float32), requires_grad=True)  # S = 16 = 4 hs
    op = Attention()
    op(q, short, short)
    assert op.probs.shape == (2, 3, 5, 16) and op.row_max is None and op.log_sum is None
    np.testing.assert_allclose(op.probs.sum(axis=-1), 1, rtol=1e-6)


def test_fully_masked_rows_backward_matches_the_reference(probabilities):
    """A query that may see no key softmaxes to a uniform row; the recomputed probabilities must be uniform too."""
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((2, 2, 3, 4)).astype(np.float32) for _ in range(3))
    keep = np.ones((2, 1, 3, 3), bool)
    keep[0, :, 1] = False  # batch 0, query 1: every key masked
    keep[1, :, :, 2] = False
    gout = rng.standard_normal((2, 2, 3, 4)).astype(np.float32)
    grads = []
    for attend in (lambda a, b, c: Attention(keep)(a, b, c), lambda a, b, c: attention_reference(a, b, c, keep)):
        ts = [seq2seq.Tensor(x, requires_grad=True) for x in (q, k, v)]
        (attend(*ts) * seq2seq.Tensor(gout)).sum().backward()
        grads.append([t.grad for t in ts])
    for fused, reference in zip(*grads):
        np.testing.assert_allclose(fused, reference, rtol=1e-5, atol=1e-6)


# "padding" blocks keys of the last batch element only: blocks of other elements skip the mask's pass
@pytest.mark.parametrize("kind", ["causal+padding", "padding"])
@pytest.mark.parametrize("chunk", [1, 40, 1 << 18], ids=["row-by-row", "few-rows", "whole-batch"])
@pytest.mark.parametrize("splits_from", [1 << 18, 30, 13], ids=["whole-queries", "query-halves", "query-rows"])
def test_chunking_does_not_change_results(monkeypatch, chunk, splits_from, probabilities, kind):
    import seq2seq.nn.attention as attention
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((5, 2, 3, 4)) for _ in range(3))
    keep = make_keep(np, kind, 5, 3, 3)
    expected = attention_reference(q, k, v, keep).data
    monkeypatch.setattr(attention, "_CHUNK", chunk)
    # products of more than splits_from multiply-adds are cut along the queries (3 x 4 x 3 = 36 per whole product)
    monkeypatch.setattr(attention, "_BLAS_SPLITS_FROM", splits_from)
    monkeypatch.setattr(attention, "can_set_blas_threads", lambda: False)  # the chunks of a BLAS we can't hold
    np.testing.assert_allclose(Attention(keep)(q, k, v).data, expected, rtol=1e-12)
    assert check_grad(lambda q, k, v: Attention(keep, dropout_p=0.2, rng=np.random.default_rng(1))(q, k, v), q, k, v)
