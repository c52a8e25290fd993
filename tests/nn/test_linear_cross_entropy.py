"""Tests for seq2seq/nn/linear_cross_entropy.py: the LM head's projection and the loss as one op.

Against torch (``F.linear`` then ``F.cross_entropy``), against finite differences in float64, the fused CPU
backward against the plain (composed) one, the same bits on any number of threads, and the memory the fused
backward does not take.
"""
import contextlib
import tracemalloc

import numpy as np
import pytest

from seq2seq.core.autograd import Tensor
from seq2seq.core.backend import to_numpy
from seq2seq.core.gradcheck import check_grad
from seq2seq.core.ops import reshape
from seq2seq.fast import cpu as fast_cpu
from seq2seq.fast.cpu import cross_entropy as fast_cross_entropy
from seq2seq.fast.cpu import parallel
from seq2seq.nn.functional import cross_entropy, linear
from seq2seq.nn.linear_cross_entropy import LinearCrossEntropy, linear_cross_entropy

try:
    import torch
    F = torch.nn.functional
except ImportError:  # the finite-difference checks run without the oracle
    torch = F = None

needs_torch = pytest.mark.skipif(torch is None, reason="compares with torch, which is not installed")


def case(rng, *, rows=(2, 5), c=6, v=300, order="C", ignored=True):
    """h [*rows, C], W [V, C] (in ``order``), b [V], labels [N] (two of them -100 when ``ignored``)."""
    h = rng.standard_normal(rows + (c,)).astype(np.float32)
    w = np.asarray(rng.standard_normal((v, c)).astype(np.float32), order=order)
    b = rng.standard_normal(v).astype(np.float32)
    labels = rng.integers(0, v, int(np.prod(rows)))
    if ignored:
        labels[[1, -1]] = -100
    return h, w, b, labels


def ours(xp, h, w, b, labels, *, smoothing=0.0, logits_weight=None):
    """Forward and backward of our op: ((logits, loss), [h, W, b] Tensors with their .grad). With
    ``logits_weight``, the loss backpropagated is loss + sum(logits * logits_weight): both outputs used."""
    tensors = [Tensor(xp.asarray(a), requires_grad=True) for a in ((h, w) if b is None else (h, w, b))]
    logits, loss = linear_cross_entropy(*tensors[:2], None if b is None else tensors[2], xp.asarray(labels),
                                        label_smoothing=smoothing)
    total = loss if logits_weight is None else loss + (logits * xp.asarray(logits_weight)).sum()
    total.backward()
    return (to_numpy(logits.data), float(to_numpy(loss.data))), tensors


@needs_torch
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("order", ["C", "F"])  # F: the tied LM-head table's layout (nn.layers.lm_head_layout)
@pytest.mark.parametrize("both_used", [False, True], ids=["loss", "loss_and_logits"])
def test_matches_torch_linear_then_cross_entropy(xp, rng, form, smoothing, bias, order, both_used):
    h, w, b, labels = case(rng, order=order)
    r = rng.standard_normal((2, 5, 300)).astype(np.float32) if both_used else None
    (logits, loss), tensors = ours(xp, h, w, b if bias else None, labels, smoothing=smoothing, logits_weight=r)
    targs = [torch.from_numpy(np.ascontiguousarray(a)).requires_grad_() for a in ((h, w, b) if bias else (h, w))]
    t_logits = F.linear(*targs)
    t_loss = F.cross_entropy(t_logits.reshape(-1, 300), torch.from_numpy(labels), label_smoothing=smoothing)
    (t_loss if r is None else t_loss + (t_logits * torch.from_numpy(r)).sum()).backward()
    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss, t_loss.item(), rtol=1e-5)
    for mine, theirs in zip(tensors, targs):
        np.testing.assert_allclose(to_numpy(mine.grad), theirs.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("both_used", [False, True], ids=["loss", "loss_and_logits"])
def test_gradient(xp, rng, form, smoothing, both_used):
    h, w, b, labels = (a.astype(np.float64) if a.dtype.kind == "f" else a for a in case(rng, rows=(3,), v=9))
    r = xp.asarray(rng.standard_normal((3, 9)))

    def f(*t):
        logits, loss = linear_cross_entropy(*t, xp.asarray(labels), label_smoothing=smoothing)
        return (loss + (logits * r).sum()) if both_used else loss

    assert check_grad(f, *(xp.asarray(a) for a in (h, w, b)))


def test_only_the_logits_used_is_the_projections_gradient(xp, rng, form):
    h, w, b, labels = case(rng)
    gy = xp.asarray(rng.standard_normal((2, 5, 300)).astype(np.float32))
    fused = [Tensor(xp.asarray(a), requires_grad=True) for a in (h, w, b)]
    logits, _ = linear_cross_entropy(*fused, xp.asarray(labels))
    logits.backward(gy)
    plain = [Tensor(xp.asarray(a), requires_grad=True) for a in (h, w, b)]
    linear(*plain).backward(gy)
    for a, e in zip(fused, plain):
        np.testing.assert_array_equal(to_numpy(a.grad), to_numpy(e.grad))


def test_equals_the_two_ops_composed(xp, rng, form):
    """The loss and logits are Linear's and CrossEntropy's, bit for bit; the gradients equal theirs composed (the
    fused backward's input gradient sums the vocabulary in slices: equal to float32 rounding)."""
    h, w, b, labels = case(rng, order="F")
    (logits, loss), tensors = ours(xp, h, w, b, labels)
    composed = [Tensor(xp.asarray(a), requires_grad=True) for a in (h, w, b)]
    c_logits = linear(*composed)
    c_loss = cross_entropy(reshape(c_logits, (-1, 300)), xp.asarray(labels))
    c_loss.backward()
    np.testing.assert_array_equal(logits, to_numpy(c_logits.data))
    assert loss == float(to_numpy(c_loss.data))
    for a, e in zip(tensors, composed):
        np.testing.assert_allclose(to_numpy(a.grad), to_numpy(e.grad), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(to_numpy(tensors[2].grad), to_numpy(composed[2].grad))  # the bias: same sums


def test_frozen_weight_and_bias_get_no_gradient(xp, rng, form):
    h, w, b, labels = case(rng)
    th = Tensor(xp.asarray(h), requires_grad=True)
    tw, tb = Tensor(xp.asarray(w)), Tensor(xp.asarray(b))
    _, loss = linear_cross_entropy(th, tw, tb, xp.asarray(labels))
    loss.backward()
    assert tw.grad is None and tb.grad is None and th.grad.shape == h.shape


def test_a_float16_projection_gets_float16_gradients(rng, form):
    h, w, b, labels = (a.astype(np.float16) if a.dtype.kind == "f" else a for a in case(rng, v=40))
    (logits, _), tensors = ours(np, h, w, b, labels)
    assert logits.dtype == np.float16 and all(t.grad.dtype == np.float16 for t in tensors)


@pytest.mark.parametrize("rows", [(3, 40), (1, 7)])
def test_fused_gradients_are_the_same_bits_on_any_number_of_threads(rng, rows):
    h, w, b, labels = case(rng, rows=rows, c=32, v=5000, order="F")
    results = []
    previous = parallel.num_threads()
    try:
        for threads in (1, 2, 3):
            parallel.set_num_threads(threads)
            _, tensors = ours(np, h, w, b, labels, smoothing=0.1)
            results.append([t.grad for t in tensors])
    finally:
        parallel.set_num_threads(previous)
    for other in results[1:]:
        for a, e in zip(other, results[0]):
            np.testing.assert_array_equal(a, e)


def test_the_fused_backward_never_holds_the_logits_gradient_whole(rng):
    """The composed backward makes an [N, V] gradient; the fused one works on slices of the vocabulary."""
    h, w, b, labels = case(rng, rows=(8, 64), c=16, v=20000, ignored=False)  # logits: 512 x 20,000 = 41 MB
    logits_bytes = 512 * 20000 * 4
    peaks = {}
    for form in ("fused", "plain"):
        tensors = [Tensor(a, requires_grad=True) for a in (h, w, b)]
        with fast_cpu.disabled() if form == "plain" else contextlib.nullcontext():
            logits, loss = linear_cross_entropy(*tensors, labels)
            del logits
            tracemalloc.start()
            loss.backward()
            peaks[form] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    assert peaks["fused"] < peaks["plain"] - 0.9 * logits_bytes
    assert peaks["fused"] < 0.5 * logits_bytes  # the gradients of W (1.3 MB) and h, and a 4 MiB slice a thread


def test_vocabulary_slices_cover_the_vocabulary_in_whole_groups_of_columns():
    for rows, vocab in ((512, 30522), (1, 7), (4096, 100), (3, 1 << 20)):
        slices = fast_cross_entropy.vocabulary_slices(rows, vocab)
        assert slices[0].start == 0 and slices[-1].stop == vocab
        assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))
        assert all((s.stop - s.start) % fast_cross_entropy.ALIGN == 0 for s in slices[:-1])


def test_an_unused_logits_output_gets_none_not_zeros():
    """fills_missing_grads is off: backward receives None for the logits when only the loss was used."""
    seen = {}

    class Spy(LinearCrossEntropy):
        def backward(self, g_logits, g_loss):
            seen["g_logits"] = g_logits
            return super().backward(g_logits, g_loss)

    h, w, b, labels = case(np.random.default_rng(0))
    tensors = [Tensor(a, requires_grad=True) for a in (h, w, b)]
    _, loss = Spy(labels)(*tensors)
    loss.backward()
    assert seen["g_logits"] is None
