"""Tests for seq2seq/nn/functional.py: each op against torch's functional equivalent (forward in float32, and
gradients where torch has them) and against finite differences in float64 (seq2seq.core.gradcheck).

Ops with a fused CPU form run both forms (the ``form`` fixture): the fused one NumPy takes by default, and the
plain one CuPy runs. Only the comparisons with torch need torch; the finite-difference checks run without it.
"""
import numpy as np
import pytest

from nn_testing import f32, run
from seq2seq.nn import functional as nn_ops
from seq2seq.core.autograd import Tensor, no_grad
from seq2seq.core.backend import to_numpy
from seq2seq.core.errors import InputError
from seq2seq.core.gradcheck import check_grad

try:
    import torch
    F = torch.nn.functional
except ImportError:  # the finite-difference checks run without the oracle
    torch = F = None

needs_torch = pytest.mark.skipif(torch is None, reason="compares with torch, which is not installed")


# ---- linear -------------------------------------------------------------------------------------------------------

LINEAR_SHAPES = [(4, 3), (2, 4, 3), (1, 1, 3), (70, 3)]  # 70 rows: past the fused form's thin-input order


@needs_torch
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("x_shape", LINEAR_SHAPES)
def test_linear_matches_torch(xp, rng, form, x_shape, bias):
    x, w, b = f32(rng, *x_shape), f32(rng, 5, 3), f32(rng, 5)
    args = (x, w, b) if bias else (x, w)
    y, tensors = run(xp, nn_ops.linear, *args)
    gy = f32(rng, *y.shape)
    y.backward(xp.asarray(gy))
    targs = [torch.from_numpy(a).requires_grad_() for a in args]
    expected = F.linear(*targs)
    expected.backward(torch.from_numpy(gy))
    assert y.dtype == np.float32
    np.testing.assert_allclose(to_numpy(y.data), expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(tensors, targs):
        np.testing.assert_allclose(to_numpy(ours.grad), theirs.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("x_shape", LINEAR_SHAPES)
def test_linear_gradient(xp, rng, form, x_shape, bias):
    args = [rng.standard_normal(s) for s in (x_shape, (5, 3), (5,))[:3 if bias else 2]]
    assert check_grad(nn_ops.linear, *(xp.asarray(a) for a in args))


def test_linear_frozen_weight_gets_no_gradient(xp, rng, form):
    x = Tensor(xp.asarray(f32(rng, 4, 3)), requires_grad=True)
    w, b = Tensor(xp.asarray(f32(rng, 5, 3))), Tensor(xp.asarray(f32(rng, 5)))
    nn_ops.linear(x, w, b).sum().backward()
    assert w.grad is None and b.grad is None and x.grad.shape == (4, 3)


# ---- layer norm ---------------------------------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("eps", [1e-12, 1e-5, 0.1])
@pytest.mark.parametrize("x_shape", [(4, 7), (2, 3, 6)])
def test_layer_norm_matches_torch(xp, rng, form, x_shape, eps):
    c = x_shape[-1]
    x, gamma, beta = 3 * f32(rng, *x_shape) + 1, f32(rng, c), f32(rng, c)
    y, tensors = run(xp, lambda *t: nn_ops.layer_norm(*t, eps=eps), x, gamma, beta)
    gy = f32(rng, *x_shape)
    y.backward(xp.asarray(gy))
    targs = [torch.from_numpy(a).requires_grad_() for a in (x, gamma, beta)]
    expected = F.layer_norm(targs[0], (c,), targs[1], targs[2], eps)
    expected.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(to_numpy(y.data), expected.detach().numpy(), rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(tensors, targs):
        np.testing.assert_allclose(to_numpy(ours.grad), theirs.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("eps", [1e-12, 1e-5, 0.1])
@pytest.mark.parametrize("x_shape", [(4, 7), (2, 3, 6)])
def test_layer_norm_gradient(xp, rng, form, x_shape, eps):
    c = x_shape[-1]
    x, gamma, beta = 3 * rng.standard_normal(x_shape) + 1, rng.standard_normal(c), rng.standard_normal(c)
    assert check_grad(lambda *t: nn_ops.layer_norm(*t, eps=eps), *(xp.asarray(a) for a in (x, gamma, beta)))


LAYER_NORM_KEEPS = {  # gamma, beta -> what forward keeps for backward (see nn_ops.recovers_xhat)
    "output": (lambda g, b: (g, b), "y"),
    "input_as_a_gamma_is_0": (lambda g, b: (np.where(np.arange(g.size) == 1, 0, g), b), "x"),
    "input_as_beta_dwarfs_gamma": (lambda g, b: (g, np.where(np.arange(b.size) == 2, 65 * np.abs(g), b)), "x"),
}


@pytest.mark.parametrize("case", list(LAYER_NORM_KEEPS))
def test_layer_norm_keeps_its_output_where_xhat_comes_back_from_it(xp, rng, form, case):
    """Backward rebuilds xhat from the output y (which the next layer keeps anyway) unless a gamma is 0 or some
    |beta / gamma| exceeds RECOVERY_LIMIT: then from the input, as before; on CuPy always from the input (the check
    would wait for the device). Gradients match torch's either way."""
    adjust, kept = LAYER_NORM_KEEPS[case]
    kept = kept if xp is np else "x"
    x = 3 * f32(rng, 2, 3, 6) + 1
    gamma, beta = (a.astype(np.float32) for a in adjust(rng.uniform(0.5, 1.5, 6), rng.uniform(-2, 2, 6)))
    op = nn_ops.LayerNorm(1e-5)
    tensors = [Tensor(xp.asarray(a), requires_grad=True) for a in (x, gamma, beta)]
    y = op(*tensors)
    assert (op.x is None and op.y is y.data) if kept == "y" else (op.y is None and op.x is tensors[0].data)
    if torch is not None:
        gy = f32(rng, *y.shape)
        y.backward(xp.asarray(gy))
        targs = [torch.from_numpy(a).requires_grad_() for a in (x, gamma, beta)]
        F.layer_norm(targs[0], (6,), targs[1], targs[2], 1e-5).backward(torch.from_numpy(gy))
        for ours, theirs in zip(tensors, targs):
            np.testing.assert_allclose(to_numpy(ours.grad), theirs.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert check_grad(lambda *t: nn_ops.layer_norm(*t, eps=1e-5),
                      *(xp.asarray(a.astype(np.float64)) for a in (x, gamma, beta)))


def test_layer_norm_keeps_nothing_large_of_its_own_in_inference(xp, rng, form):
    """Under no_grad nothing asks for xhat back: no check of gamma and beta is made (the input is referenced,
    as forward's argument, not copied)."""
    x = xp.asarray(f32(rng, 4, 6))
    op = nn_ops.LayerNorm(1e-5)
    with no_grad():
        op(x, xp.asarray(np.ones(6, np.float32)), xp.asarray(np.zeros(6, np.float32)))
    assert op.y is None and op.x is x


# ---- masked softmax -----------------------------------------------------------------------------------------------

B, H, T, S = 2, 2, 3, 4


def padding_keep():
    keep = np.ones((B, 1, 1, S), dtype=bool)  # [B, 1, 1, S]: the second sequence has one padded key
    keep[1, ..., -1] = False
    return keep


def causal_keep():
    return np.tril(np.ones((T, S), dtype=bool), k=S - T)[None, None]  # [1, 1, T, S]


def fully_masked_keep():
    keep = np.ones((B, 1, T, S), dtype=bool)
    keep[0, 0, 1] = False  # query 1 of sequence 0 may attend to nothing (a padded query)
    return keep


MASKS = {"none": lambda: None, "padding": padding_keep, "causal": causal_keep, "fully_masked_row": fully_masked_keep}


def torch_masked_softmax(scores, keep, scale):
    """transformers' eager attention: masked scores set to the dtype's lowest value, then softmax."""
    s = torch.from_numpy(scores) * scale
    if keep is not None:
        s = s.masked_fill(~torch.from_numpy(keep), torch.finfo(s.dtype).min)
    return torch.softmax(s, dim=-1)


@needs_torch
@pytest.mark.parametrize("scale", [1.0, 0.125])
@pytest.mark.parametrize("mask", sorted(MASKS))
def test_masked_softmax(xp, rng, mask, scale):
    scores, keep = f32(rng, B, H, T, S), MASKS[mask]()
    xp_keep = None if keep is None else xp.asarray(keep)
    y, _ = run(xp, lambda s: nn_ops.masked_softmax(s, xp_keep, scale), scores)
    out = to_numpy(y.data)
    expected = torch_masked_softmax(scores, keep, scale)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-6)
    if keep is not None:
        assert np.all(out[~np.broadcast_to(keep, out.shape) & np.broadcast_to(keep.any(-1, keepdims=True), out.shape)]
                      == 0)  # masked keys get nothing (unless the whole row is masked)


@pytest.mark.parametrize("scale", [1.0, 0.125])
@pytest.mark.parametrize("mask", sorted(MASKS))
def test_masked_softmax_gradient(xp, rng, mask, scale):
    scores, keep = rng.standard_normal((B, H, T, S)), MASKS[mask]()
    xp_keep = None if keep is None else xp.asarray(keep)
    assert check_grad(lambda s: nn_ops.masked_softmax(s, xp_keep, scale), xp.asarray(scores))


def test_fully_masked_row_is_uniform_without_nan(xp, rng):
    keep = fully_masked_keep()
    y, (s,) = run(xp, lambda s: nn_ops.masked_softmax(s, xp.asarray(keep)), f32(rng, B, H, T, S))
    y.backward(xp.asarray(f32(rng, B, H, T, S)))
    out, grad = to_numpy(y.data), to_numpy(s.grad)
    assert np.isfinite(out).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(out[0, :, 1], 1.0 / S)  # every key equally (un)attended
    assert np.all(grad[0, :, 1] == 0)  # the scores were replaced by a constant: no gradient reaches them


HUGE_SCORES = [[-1000.0, 0.0, 1000.0], [-1000.0, -1000.0, -999.0], [1000.0, 1000.0, 1000.0]]


@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_is_stable_for_huge_logits(xp, dtype):
    scores = np.array(HUGE_SCORES, dtype=dtype)
    y, (s,) = run(xp, nn_ops.softmax, scores)
    y.backward(xp.asarray(np.arange(9.0, dtype=dtype).reshape(3, 3)))
    out = to_numpy(y.data)
    assert np.isfinite(out).all() and np.isfinite(to_numpy(s.grad)).all()
    np.testing.assert_allclose(out, torch.softmax(torch.from_numpy(scores), -1).numpy(), rtol=1e-6, atol=1e-30)


def test_softmax_gradient_for_huge_logits(xp):
    assert check_grad(nn_ops.softmax, xp.asarray(np.array(HUGE_SCORES)))


# ---- embedding ----------------------------------------------------------------------------------------------------

EMBEDDING_IDS = {"1x5": [[1, 4, 1, 1, 0]], "3x2": [[2, 2], [5, 2], [0, 5]], "1": [3]}


@needs_torch
@pytest.mark.parametrize("ids", sorted(EMBEDDING_IDS))
def test_embedding_scatter_adds_repeated_ids(xp, rng, ids):
    ids, weight = np.array(EMBEDDING_IDS[ids]), f32(rng, 6, 4)
    y, (w,) = run(xp, lambda t: nn_ops.embedding(xp.asarray(ids), t), weight)
    gy = f32(rng, *ids.shape, 4)
    y.backward(xp.asarray(gy))
    tw = torch.from_numpy(weight).requires_grad_()
    expected = F.embedding(torch.from_numpy(ids), tw)
    expected.backward(torch.from_numpy(gy))
    np.testing.assert_array_equal(to_numpy(y.data), expected.detach().numpy())
    np.testing.assert_allclose(to_numpy(w.grad), tw.grad.numpy(), rtol=1e-6)  # a repeated id sums its rows


@pytest.mark.parametrize("ids", sorted(EMBEDDING_IDS))
def test_embedding_gradient(xp, rng, ids):
    ids = xp.asarray(EMBEDDING_IDS[ids])
    assert check_grad(lambda t: nn_ops.embedding(ids, t), xp.asarray(rng.standard_normal((6, 4))))


# ---- dropout ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p, training", [(0.0, True), (0.5, False), (0.0, False)])
def test_dropout_identity(xp, rng, p, training):
    x = Tensor(xp.asarray(f32(rng, 3, 4)), requires_grad=True)
    assert nn_ops.dropout(x, p, np.random.default_rng(0), training=training) is x


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_in_training(xp, p):
    x = Tensor(xp.ones((200, 250), dtype=xp.float32), requires_grad=True)
    y = nn_ops.dropout(x, p, np.random.default_rng(0), training=True)
    out = to_numpy(y.data)
    kept = out != 0
    assert y.dtype == np.float32
    assert abs(kept.mean() - (1 - p)) < 0.01  # 50,000 draws: the standard deviation is at most 0.0023
    np.testing.assert_allclose(out[kept], 1 / (1 - p), rtol=1e-6)  # inverted dropout: the rest scaled up
    y.backward(xp.ones((200, 250), dtype=xp.float32))
    np.testing.assert_array_equal(to_numpy(x.grad), out)  # backward uses the forward's mask and scale


def test_dropout_is_deterministic_for_a_seed(xp, rng):
    x = Tensor(xp.asarray(f32(rng, 8, 9)))
    first, second, other = (to_numpy(nn_ops.dropout(x, 0.3, np.random.default_rng(s), training=True).data)
                            for s in (7, 7, 8))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_dropout_gradient(xp, rng):
    # a fresh generator with the same seed on every call: the finite differences see the same mask
    assert check_grad(lambda t: nn_ops.dropout(t, 0.4, np.random.default_rng(3), training=True),
                      xp.asarray(rng.standard_normal((3, 5))))


def test_dropout_of_one_drops_everything_and_bad_probabilities_are_refused():
    x = Tensor(np.ones((3, 4), np.float32), requires_grad=True)
    y = nn_ops.dropout(x, 1.0, np.random.default_rng(0), training=True)
    assert not y.data.any()  # torch: p=1 gives zeros
    y.sum().backward()
    assert not x.grad.any()
    with pytest.raises(InputError, match="dropout probability"):
        nn_ops.dropout(x, 1.5, np.random.default_rng(0), training=True)
