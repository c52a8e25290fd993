"""Attention's fused CPU form (seq2seq/fast/cpu/attention.py) against the plain form, without torch: the same
outputs and gradients with every kind of mask, with dropout from the same seed, with the probabilities kept or
recomputed, in any blocks and query chunks; finite differences; bit-identical results on 1 and 2 threads."""
import contextlib

import numpy as np
import pytest

import seq2seq
from seq2seq.core.gradcheck import check_grad
from seq2seq.fast import cpu as fast_cpu
from seq2seq.fast.cpu import parallel
import seq2seq.fast.cpu.attention as fused_attention
from seq2seq.nn.attention import Attention, padding_mask

from attention_cases import KINDS, make_keep


@pytest.fixture(params=["kept", "recomputed"])
def probabilities(request, monkeypatch):
    """Run a test with the probabilities kept for backward (short keys) and recomputed in backward (long keys)."""
    monkeypatch.setattr(fused_attention, "_KEEP_PROBABILITIES_UP_TO", 1 << 20 if request.param == "kept" else 0)
    return request.param


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of one or two batch elements, queries cut in chunks of two (as where OpenBLAS can't be held)."""
    monkeypatch.setattr(fused_attention, "_CHUNK", 40)
    monkeypatch.setattr(fused_attention, "_BLAS_SPLITS_FROM", 30)
    monkeypatch.setattr(fused_attention, "can_set_blas_threads", lambda: False)


def run(keep, q, k, v, gout, *, fused, **options):
    """Attention's output and (q, k, v) gradients for the output gradient ``gout``, in one form."""
    with contextlib.nullcontext() if fused else fast_cpu.disabled():
        ts = [seq2seq.Tensor(x, requires_grad=True) for x in (q, k, v)]
        op = Attention(keep, **options)
        out = op(*ts)
        assert (op.fused is not None) == fused
        out.backward(gout)
    return [out.data] + [t.grad for t in ts]


def inputs(seed, b, nh, t, s, hs, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) * 3).astype(dtype)
            for shape in ((b, nh, t, hs), (b, nh, s, hs), (b, nh, s, hs), (b, nh, t, hs))]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@pytest.mark.parametrize("shape", [(3, 2, 4, 5, 3), (1, 1, 1, 7, 2), (5, 2, 3, 3, 4)],
                         ids=["b3nh2", "one-query", "b5-square"])
def test_fused_equals_plain_forward_and_gradients(kind, dropout_p, shape, probabilities):
    b, nh, t, s, hs = shape
    q, k, v, gout = inputs(0, *shape)
    keep = make_keep(np, kind, b, t, s)
    options = dict(dropout_p=dropout_p, rng=np.random.default_rng(11)) if dropout_p else {}
    want = run(keep, q, k, v, gout, fused=False, **options)
    options = dict(dropout_p=dropout_p, rng=np.random.default_rng(11)) if dropout_p else {}
    got = run(keep, q, k, v, gout, fused=True, **options)
    for name, g, w in zip(("out", "gq", "gk", "gv"), got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("t", [1, 4])
def test_few_queries_inference_equals_plain(kind, dtype, b, t, monkeypatch):
    """A decode step's attention (one query per row, or a source's beams together; no graph) takes the short path;
    the same values as the plain form, the output laid out as q (a head-split view of a [B, T, C] projection)."""
    taken = []
    monkeypatch.setattr(fused_attention, "_few_queries", lambda *a: taken.append(1) or few_queries(*a))
    nh, s, hs = 3, 7, 4
    rng = np.random.default_rng(3)
    q = (rng.standard_normal((b, t, nh * hs)) * 3).astype(dtype).reshape(b, t, nh, hs).transpose(0, 2, 1, 3)
    k, v = ((rng.standard_normal((b, nh, s, hs)) * 3).astype(dtype) for _ in range(2))
    keep = make_keep(np, kind, b, t, s)
    with seq2seq.no_grad():
        got = Attention(keep)(q, k, v).data
        with fast_cpu.disabled():
            want = Attention(keep)(q, k, v).data
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, want, **tol)
    assert [st for st, n in zip(got.strides, got.shape) if n > 1] == [st for st, n in zip(q.strides, q.shape) if n > 1]
    assert taken == [1]


few_queries = fused_attention._few_queries


def test_fused_equals_plain_in_float32():
    q, k, v, gout = inputs(1, 4, 3, 6, 6, 8, np.float32)
    keep = make_keep(np, "causal+padding", 4, 6, 6)
    want = run(keep, q, k, v, gout, fused=False, dropout_p=0.1, rng=np.random.default_rng(2))
    got = run(keep, q, k, v, gout, fused=True, dropout_p=0.1, rng=np.random.default_rng(2))
    for g, w in zip(got, want):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_fused_backward_finite_differences(kind, probabilities):
    b, nh, t, s, hs = 2, 2, 3, 4, 5
    q, k, v, _ = inputs(1, b, nh, t, s, hs)
    keep = make_keep(np, kind, b, t, s)
    assert check_grad(lambda q, k, v: Attention(keep)(q, k, v), q, k, v)


def test_fused_backward_with_dropout_finite_differences(probabilities):
    q, k, v, _ = inputs(2, 2, 2, 3, 3, 4)
    keep = make_keep(np, "padding", 2, 3, 3)

    def f(q, k, v):  # the same dropout mask at every evaluation: a fresh generator with a fixed seed
        return Attention(keep, dropout_p=0.3, rng=np.random.default_rng(7))(q, k, v)

    assert check_grad(f, q, k, v)


# "padding" blocks keys of the last batch element only: blocks of other elements skip the mask's pass
@pytest.mark.parametrize("kind", ["causal+padding", "padding"])
@pytest.mark.parametrize("chunk", [1, 40, 1 << 18], ids=["row-by-row", "few-rows", "whole-batch"])
@pytest.mark.parametrize("splits_from", [1 << 18, 30, 13], ids=["whole-queries", "query-halves", "query-rows"])
def test_chunking_does_not_change_results(monkeypatch, chunk, splits_from, probabilities, kind):
    q, k, v, gout = inputs(4, 5, 2, 3, 3, 4)
    keep = make_keep(np, kind, 5, 3, 3)
    options = dict(dropout_p=0.2)
    want = run(keep, q, k, v, gout, fused=False, rng=np.random.default_rng(1), **options)
    monkeypatch.setattr(fused_attention, "_CHUNK", chunk)
    # products of more than splits_from multiply-adds are cut along the queries (3 x 4 x 3 = 36 per whole product)
    monkeypatch.setattr(fused_attention, "_BLAS_SPLITS_FROM", splits_from)
    monkeypatch.setattr(fused_attention, "can_set_blas_threads", lambda: False)  # the chunks of a BLAS we can't hold
    got = run(keep, q, k, v, gout, fused=True, rng=np.random.default_rng(1), **options)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["none", "causal+padding"])
def test_fused_results_are_bit_identical_on_one_and_two_threads(kind, probabilities, small_blocks):
    q, k, v, gout = inputs(5, 6, 2, 5, 5, 4, np.float32)
    keep = make_keep(np, kind, 6, 5, 5)
    before = parallel.num_threads()
    results = []
    try:
        for threads in (1, 2):
            parallel.set_num_threads(threads)
            results.append(run(keep, q, k, v, gout, fused=True, dropout_p=0.3, rng=np.random.default_rng(3)))
    finally:
        parallel.set_num_threads(before)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_what_is_kept_of_the_scores_size_depends_on_the_number_of_keys():
    """Inference keeps nothing. Training keeps the probabilities when S <= 2 hs (no larger than half a layer's
    feed-forward activation); with more keys it keeps q, k, v and two numbers per score row (backward recomputes
    the probabilities), never a [B, nh, T, S] array."""
    q = seq2seq.Tensor(np.ones((2, 3, 5, 4), np.float32), requires_grad=True)
    k = seq2seq.Tensor(np.ones((2, 3, 9, 4), np.float32), requires_grad=True)  # S = 9 > 2 hs = 8
    with seq2seq.no_grad():
        op = Attention()
        op(q, k, k)
    assert op.fused.probs is None and op.fused.row_max is None and op.fused.log_sum is None
    assert not any(isinstance(a, np.ndarray) for a in vars(op.fused).values())
    op = Attention()
    op(q, k, k)
    assert op.fused.probs is None and op.fused.row_max.shape == op.fused.log_sum.shape == (2, 3, 5, 1)
    saved = [a for a in vars(op.fused).values() if isinstance(a, np.ndarray)]
    assert max(a.size for a in saved) == 2 * 3 * 9 * 4  # k and v: the largest arrays kept
    short = seq2seq.Tensor(np.ones((2, 3, 8, 4), np.float32), requires_grad=True)  # S = 8 = 2 hs
    op = Attention()
    op(q, short, short)
    assert op.fused.row_max is None and op.fused.log_sum is None
    probs = np.concatenate(op.fused.probs)  # one array per block, here blocks of whole batch elements
    assert probs.shape == (2, 3, 5, 8)
    np.testing.assert_allclose(probs.sum(axis=-1), 1, rtol=1e-6)


def test_kept_probabilities_cover_only_the_keys_seen():
    """With padding the kept probabilities of a block span the keys its rows may see, not every key."""
    q, k, v, _ = inputs(8, 2, 3, 5, 16, 8, np.float32)  # S = 16 = 2 hs: kept
    mask = np.ones((2, 16), np.int64)
    mask[:, 10:] = 0  # both sources padded after 10 keys
    op = Attention(padding_mask(mask))
    op(*(seq2seq.Tensor(x, requires_grad=True) for x in (q, k, v)))
    assert np.concatenate(op.fused.probs).shape == (2, 3, 5, 10)


def padded_keys(kind, b, s):
    """A padding mask ``[b, s]`` with its keys left out in one of several ways."""
    mask = np.ones((b, s), np.int64)
    if kind == "right":
        mask[1:, s - 3:] = 0
    elif kind == "left":  # GPT-2-style left padding
        mask[0, :2] = 0
    elif kind == "both-and-holes":
        mask[0, :1], mask[0, s - 2:], mask[1, 3] = 0, 0, 0
    elif kind == "a-source-all-padding":  # its queries attend to every key, uniformly, as in the plain form
        mask[1] = 0
    return mask


@pytest.mark.parametrize("kind", ["right", "left", "both-and-holes", "a-source-all-padding"])
@pytest.mark.parametrize("chunk", [1, 40, 1 << 18], ids=["by-heads-and-queries", "by-heads", "whole-elements"])
def test_padding_keys_are_skipped_with_the_same_results(monkeypatch, kind, chunk, probabilities):
    """Blocks work only on the keys their rows may see (``_key_spans``): the same outputs and gradients as the plain
    form (zero gradients for keys no query sees), whatever the cut of the blocks."""
    b, nh, t, s, hs = 3, 2, 4, 9, 3
    q, k, v, gout = inputs(9, b, nh, t, s, hs)
    keep = padding_mask(padded_keys(kind, b, s))
    want = run(keep, q, k, v, gout, fused=False, dropout_p=0.2, rng=np.random.default_rng(4))
    monkeypatch.setattr(fused_attention, "_CHUNK", chunk)
    got = run(keep, q, k, v, gout, fused=True, dropout_p=0.2, rng=np.random.default_rng(4))
    for name, g, w in zip(("out", "gq", "gk", "gv"), got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=name)


def test_blocks_cut_long_sequences_by_heads_then_queries_and_trim_padding(monkeypatch):
    monkeypatch.setattr(fused_attention, "can_set_blas_threads", lambda: True)
    keep = padding_mask(padded_keys("right", 2, 512))
    blocks, queries = fused_attention._blocks(2, 12, 512, 512, 64, ~keep)  # one head's scores: _CHUNK values
    assert len(blocks) == 24 and queries == [slice(0, 512)]
    assert {(b.heads.stop - b.heads.start) for b in blocks} == {1}
    assert [b.keys for b in blocks[:2]] + [blocks[-1].keys] == [slice(0, 512)] * 2 + [slice(0, 509)]
    blocks, queries = fused_attention._blocks(1, 12, 1024, 1024, 64, None)
    assert len(blocks) == 12 and queries == [slice(0, 256), slice(256, 512), slice(512, 768), slice(768, 1024)]
    blocks, queries = fused_attention._blocks(8, 12, 1, 128, 64, None)  # a decode step's: the whole batch
    assert blocks == [fused_attention.Block(slice(0, 8), slice(0, 12), slice(0, 128))]


def test_backward_takes_the_form_forward_took():
    """Forward under ``disabled()`` records the plain form; its backward stays plain outside the block."""
    q, k, v, gout = inputs(6, 2, 2, 3, 3, 4)
    with fast_cpu.disabled():
        op = Attention()
        op.records = True
        out = op.forward(q, k, v)
    assert op.fused is None
    want = run(None, q, k, v, gout, fused=False)
    np.testing.assert_array_equal(out, want[0])
    for g, w in zip(op.backward(gout), want[1:]):
        np.testing.assert_array_equal(g, w)
