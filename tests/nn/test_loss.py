"""Tests for seq2seq/nn/loss.py: the cross-entropy loss, and the LM head's projection fused with it.

Each against torch (``F.cross_entropy``; ``F.linear`` then ``F.cross_entropy``) and against finite differences in
float64; the fused op's CPU backward against the plain (composed) one, the same bits on any number of threads, and
the memory the fused backward does not take. Ops with a fused CPU form run both forms (the ``form`` fixture).
"""
import contextlib
import tracemalloc

import numpy as np
import pytest

from nn_testing import f32, run
from seq2seq.core.autograd import Tensor
from seq2seq.core.backend import to_numpy
from seq2seq.core.gradcheck import check_grad
from seq2seq.core.ops import reshape
from seq2seq.fast import cpu as fast_cpu
from seq2seq.fast.cpu import cross_entropy as fast_cross_entropy
from seq2seq.fast.cpu import parallel
from seq2seq.core.errors import InputError
from seq2seq.nn import loss as nn_loss
from seq2seq.nn.functional import linear
from seq2seq.nn.loss import LinearCrossEntropy, cross_entropy, linear_cross_entropy

try:
    import torch
    F = torch.nn.functional
except ImportError:  # the finite-difference checks run without the oracle
    torch = F = None

needs_torch = pytest.mark.skipif(torch is None, reason="compares with torch, which is not installed")


# ---- cross-entropy ------------------------------------------------------------------------------------------------

LABELS = {
    "all_valid": [1, 0, 6, 3, 3, 5],
    "some_ignored": [1, -100, 6, -100, 3, 0],
    "one_valid": [-100, -100, 2, -100, -100, -100],
}


def torch_cross_entropy(logits, labels, ignore_index=-100, label_smoothing=0.0):
    x = torch.from_numpy(logits).requires_grad_()
    loss = F.cross_entropy(x, torch.from_numpy(np.asarray(labels)), ignore_index=ignore_index,
                           label_smoothing=label_smoothing)
    loss.backward()
    return loss.detach().numpy(), x.grad.numpy()


@needs_torch
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("labels", sorted(LABELS))
def test_cross_entropy_matches_torch(xp, rng, form, labels, smoothing):
    logits, labels = 3 * f32(rng, 6, 7), np.array(LABELS[labels])

    def loss_of(t):
        return nn_loss.cross_entropy(t, xp.asarray(labels), label_smoothing=smoothing)

    loss, (x,) = run(xp, loss_of, logits)
    loss.backward()
    expected_loss, expected_grad = torch_cross_entropy(logits, labels, label_smoothing=smoothing)
    assert loss.shape == () and loss.dtype == np.float32
    np.testing.assert_allclose(to_numpy(loss.data), expected_loss, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(x.grad), expected_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("labels", sorted(LABELS))
def test_cross_entropy_gradient(xp, rng, form, labels, smoothing):
    logits, labels = 3 * rng.standard_normal((6, 7)), xp.asarray(LABELS[labels])
    assert check_grad(lambda t: nn_loss.cross_entropy(t, labels, label_smoothing=smoothing), xp.asarray(logits))


@pytest.mark.parametrize("smoothing", [-0.1, 1.5])
def test_cross_entropy_refuses_label_smoothing_outside_0_1(xp, rng, smoothing):
    with pytest.raises(InputError, match=r"label_smoothing must be in \[0, 1\], got"):
        nn_loss.cross_entropy(xp.asarray(f32(rng, 2, 3)), xp.asarray([0, 1]), label_smoothing=smoothing)


@needs_torch
def test_cross_entropy_custom_ignore_index(xp, rng, form):
    logits, labels = f32(rng, 5, 4), np.array([0, 3, 3, 1, 2])
    loss, _ = run(xp, lambda t: nn_loss.cross_entropy(t, xp.asarray(labels), ignore_index=3), logits)
    expected_loss, _ = torch_cross_entropy(logits, labels, ignore_index=3)
    np.testing.assert_allclose(to_numpy(loss.data), expected_loss, rtol=1e-5)


@needs_torch
def test_cross_entropy_all_ignored_is_nan_like_torch(xp, rng, form):
    logits, labels = f32(rng, 3, 4), np.full(3, -100)
    loss, (x,) = run(xp, lambda t: nn_loss.cross_entropy(t, xp.asarray(labels)), logits)
    expected_loss, expected_grad = torch_cross_entropy(logits, labels)
    assert np.isnan(to_numpy(loss.data)) and np.isnan(expected_loss)
    loss.backward()
    np.testing.assert_array_equal(to_numpy(x.grad), expected_grad)  # zeros: no row contributes


@needs_torch
def test_cross_entropy_is_stable_for_huge_logits(xp, form):
    logits = np.array([[-1000.0, 0.0, 1000.0], [1000.0, 1000.0, -1000.0]], dtype=np.float32)
    labels = np.array([0, 1])
    loss, (x,) = run(xp, lambda t: nn_loss.cross_entropy(t, xp.asarray(labels)), logits)
    loss.backward()
    expected_loss, expected_grad = torch_cross_entropy(logits, labels)
    np.testing.assert_allclose(to_numpy(loss.data), expected_loss, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(x.grad), expected_grad, atol=1e-7)


def test_cross_entropy_float16_logits_get_float16_gradient(xp, rng, form):
    loss, (x,) = run(xp, lambda t: nn_loss.cross_entropy(t, xp.asarray([1, 2])), f32(rng, 2, 3).astype(np.float16))
    loss.backward()
    assert loss.dtype == np.float16 and x.grad.dtype == np.float16


@pytest.mark.parametrize("bad", [7, -1, 100])
def test_cross_entropy_label_out_of_range(xp, rng, form, bad):
    labels = xp.asarray([0, bad, -100])
    with pytest.raises(InputError, match=str(bad)):
        nn_loss.cross_entropy(Tensor(xp.asarray(f32(rng, 3, 7))), labels)


# ---- the projection and the loss as one op --------------------------------------------------------------------------

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
