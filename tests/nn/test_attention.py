"""Masks and attention's plain form, the definition: equal to the reference composed from primitives, gradients
equal to finite differences (float64, no torch), dropout repeatable, outputs and gradients in their inputs' memory
layouts. The fused CPU form is compared with this one in test_fast_cpu_attention.py."""
import contextlib

import numpy as np
import pytest

import seq2seq
from seq2seq.core.gradcheck import check_grad
from seq2seq.fast import cpu as fast_cpu
from seq2seq.nn.attention import (Attention, attention_reference, causal_mask, combine_masks, merge_heads,
                                  padding_mask, split_heads)

from attention_cases import KINDS, make_keep


def test_causal_mask_with_a_cache_offset(xp):
    keep = causal_mask(xp, 2, 5)  # the last 2 of 5 positions are queries
    expected = [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    np.testing.assert_array_equal(seq2seq.to_numpy(keep[0, 0]), expected)


def test_padding_and_causal_masks_combine(xp):
    keep = combine_masks(causal_mask(xp, 3, 3), padding_mask(xp.asarray([[1, 1, 0]])), None)
    assert keep.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(seq2seq.to_numpy(keep[0, 0]), [[1, 0, 0], [1, 1, 0], [1, 1, 0]])
    assert combine_masks(None, None) is None


def plain(xp):
    """The context in which Attention takes its plain form: always on CuPy, inside ``disabled()`` on NumPy."""
    return fast_cpu.disabled() if xp is np else contextlib.nullcontext()


def qkv(xp, rng, b, nh, t, s, hs, dtype=np.float32):
    return [xp.asarray((rng.standard_normal(shape) * 3).astype(dtype))
            for shape in ((b, nh, t, hs), (b, nh, s, hs), (b, nh, s, hs))]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 6), (1, 1, 1, 7, 2)], ids=["b2nh3", "one-query"])
def test_plain_form_equals_the_composed_reference(xp, kind, shape):
    b, nh, t, s, hs = shape
    q, k, v = qkv(xp, np.random.default_rng(0), *shape)
    keep = make_keep(xp, kind, b, t, s)
    with plain(xp):
        op = Attention(keep)
        out = op(q, k, v).data
    assert op.fused is None
    ref = attention_reference(q, k, v, keep).data
    assert not np.isnan(seq2seq.to_numpy(out)).any()
    np.testing.assert_allclose(seq2seq.to_numpy(out), seq2seq.to_numpy(ref), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_plain_backward_finite_differences(kind):
    b, nh, t, s, hs = 2, 2, 3, 4, 5
    q, k, v = qkv(np, np.random.default_rng(1), b, nh, t, s, hs, np.float64)
    keep = make_keep(np, kind, b, t, s)
    with fast_cpu.disabled():
        assert check_grad(lambda q, k, v: Attention(keep)(q, k, v), q, k, v)


def test_plain_backward_with_dropout_and_a_scale_finite_differences():
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, 2, 3, 4)) for _ in range(3))
    keep = make_keep(np, "causal+padding", 2, 3, 3)

    def f(q, k, v):  # the same dropout mask at every evaluation: a fresh generator with a fixed seed
        return Attention(keep, scale=0.3, dropout_p=0.3, rng=np.random.default_rng(7))(q, k, v)

    with fast_cpu.disabled():
        assert check_grad(f, q, k, v)


@pytest.mark.parametrize("form", ["plain", "fused"])
def test_dropout_changes_outputs_only_in_training_and_repeats_with_seed(form):
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 2, 6, 4), dtype=np.float32) for _ in range(3))
    with plain(np) if form == "plain" else contextlib.nullcontext():
        no_dropout = Attention()(q, k, v).data
        a = Attention(dropout_p=0.5, rng=np.random.default_rng(5))(q, k, v).data
        b = Attention(dropout_p=0.5, rng=np.random.default_rng(5))(q, k, v).data
        everything_dropped = Attention(dropout_p=1.0, rng=np.random.default_rng(5))(q, k, v).data
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, no_dropout)
    np.testing.assert_array_equal(everything_dropped, 0)  # p = 1 drops every probability, as torch


def test_dropout_probability_out_of_range_is_named():
    q = np.ones((1, 1, 2, 4), np.float32)
    with pytest.raises(seq2seq.core.errors.InputError, match="dropout probability"):
        Attention(dropout_p=1.5, rng=np.random.default_rng(0))(q, q, q)


@pytest.mark.parametrize("form", ["plain", "fused"])
def test_fully_masked_rows_backward_matches_the_reference(form, monkeypatch):
    """A query that may see no key softmaxes to a uniform row (the fused form recomputing its probabilities too)."""
    import seq2seq.fast.cpu.attention as fused_attention
    monkeypatch.setattr(fused_attention, "_KEEP_PROBABILITIES_UP_TO", 0)
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((2, 2, 3, 4)).astype(np.float32) for _ in range(3))
    keep = np.ones((2, 1, 3, 3), bool)
    keep[0, :, 1] = False  # batch 0, query 1: every key masked
    keep[1, :, :, 2] = False
    gout = rng.standard_normal((2, 2, 3, 4)).astype(np.float32)
    grads = []
    with plain(np) if form == "plain" else contextlib.nullcontext():
        for attend in (lambda a, b, c: Attention(keep)(a, b, c), lambda a, b, c: attention_reference(a, b, c, keep)):
            ts = [seq2seq.Tensor(x, requires_grad=True) for x in (q, k, v)]
            attend(*ts).backward(gout)
            grads.append([t.grad for t in ts])
    for got, reference in zip(*grads):
        np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ["plain", "fused"])
def test_outputs_and_gradients_keep_their_inputs_memory_layouts(xp, form):
    """q, k, v split from [B, T, C] projections are views; the output is laid out as q (so merge_heads is a view,
    not a copy) and each gradient as its input (so it reaches the projection as a view)."""
    if form == "fused" and xp is not np:
        pytest.skip("the fused form runs on NumPy only")
    rng = np.random.default_rng(5)
    b, t, s, nh, c = 2, 3, 4, 2, 8
    x = seq2seq.Tensor(xp.asarray(rng.standard_normal((b, t, c), dtype=np.float32)), requires_grad=True)
    memory = seq2seq.Tensor(xp.asarray(rng.standard_normal((b, s, c), dtype=np.float32)), requires_grad=True)
    q, k, v = split_heads(x, nh), split_heads(memory, nh), split_heads(memory * 2.0, nh)  # [B, nh, T or S, hs]
    with plain(xp) if form == "plain" else contextlib.nullcontext():
        op = Attention(make_keep(xp, "padding", b, t, s))
        out = op(q, k, v)
    assert out.data.strides == q.data.strides
    merged = merge_heads(out)  # [B, nh, T, hs] -> [B, T, C]
    assert xp.shares_memory(merged.data, out.data)
    gq, gk, gv = op.backward(xp.ones_like(out.data))
    assert gq.strides == q.data.strides and gk.strides == k.data.strides and gv.strides == v.data.strides
