"""Tests for seq2seq/fast/cuda/eager.py: the eager path's fused CUDA forms (activations, layer norm, attention's
softmax, the cross-entropy; forward and backward; AdamW) against the plain forms of nn/ and training/.

Without a GPU the forms run on NumPy arrays through the CPU emulation of the float32 kernels (``run=``), which
tests everything around the launches: the statistics' shapes, the column sums, the zero bias; and a tiny model
trains through the ops' CUDA branches themselves, taken on NumPy arrays with the emulated kernels
(``emulated_cuda_forms``). With a GPU (marker ``gpu``) a CuPy model trains through them, against the same model
with every fused form off.
"""
import contextlib
import functools
from types import SimpleNamespace

import numpy as np
import pytest

import seq2seq
from cuda_testing import ACTIVATIONS, tiny_bert2bert
from seq2seq.core.autograd import Tensor
from seq2seq.core.backend import to_numpy
from seq2seq.fast import cpu as fast_cpu
from seq2seq.fast import cuda_enabled
from seq2seq.fast.cuda import eager, eager_plans, plans, reference
from seq2seq.nn import activations, attention, functional
from seq2seq.nn import loss as nn_loss
from seq2seq.nn.activations import get_activation
from seq2seq.training import optim

HIDDEN_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


def plain_activation(act, x, gy):
    """(y, gx) of the package's plain activation, float32."""
    t = Tensor(x, requires_grad=True)
    with fast_cpu.disabled():
        y = get_activation(HIDDEN_ACT[act])(t)
        y.backward(gy)
    return y.data, t.grad


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(3, 7), (2, 3, 40)])
def test_activations_forward_and_backward_equal_the_plain_ones(emulator, act, shape, rng):
    x, gy = (rng.standard_normal(shape).astype(np.float32) * 3 for _ in range(2))
    y = eager.activation_forward(x, act, run=emulator.run)
    gx = eager.activation_backward(gy, x, act, run=emulator.run)
    want_y, want_gx = plain_activation(act, x, gy)
    assert y.shape == gx.shape == shape
    np.testing.assert_allclose(y, want_y, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(gx, want_gx, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("kept", ["x", "y"])
@pytest.mark.parametrize("needs", [(True, True, True), (True, False, False), (False, True, True)],
                         ids=["all", "x_only", "params_only"])
def test_layer_norm_forward_and_backward_equal_the_plain_ones(emulator, kept, needs, rng):
    x = rng.standard_normal((2, 3, 40)).astype(np.float32) * 2 + 1
    gamma, beta = rng.uniform(0.5, 1.5, 40).astype(np.float32), rng.uniform(-1, 1, 40).astype(np.float32)
    gy = rng.standard_normal((2, 3, 40)).astype(np.float32)
    y, mean, rstd = eager.layer_norm_forward(x, gamma, beta, 1e-5, run=emulator.run)
    assert y.shape == x.shape and mean.shape == rstd.shape == (2, 3, 1) and mean.dtype == np.float32
    saved = {"x": x, "y": None, "beta": None} if kept == "x" else {"x": None, "y": y, "beta": beta}
    gx, ggamma, gbeta = eager.layer_norm_backward(gy, mean, rstd, gamma, needs=needs, run=emulator.run, **saved)
    tensors = [Tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    with fast_cpu.disabled():
        plain = functional.layer_norm(*tensors, eps=1e-5)
        plain.backward(gy)
    np.testing.assert_allclose(y, plain.data, rtol=1e-5, atol=1e-5)
    for got, want, needed in zip((gx, ggamma, gbeta), tensors, needs):
        if needed:
            assert got.shape == want.data.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, want.grad, rtol=1e-4, atol=1e-5)
        else:
            assert got is None


def test_cuda_forms_are_off_for_numpy_and_inside_disabled():
    assert not cuda_enabled(np, "float32")
    with fast_cpu.disabled():
        assert fast_cpu.forced_plain()
    assert not fast_cpu.forced_plain()


@pytest.fixture
def cupy_model():
    if not seq2seq.core.backend.has_cupy():
        pytest.skip("CuPy with a CUDA device is not available")
    return tiny_bert2bert(backend="cupy")


@pytest.mark.gpu
def test_cuda_forms_are_on_for_cupy_float32_and_float16_only(cupy_model):
    cupy = seq2seq.core.backend.xp_for("cupy")
    assert cuda_enabled(cupy, "float32") and cuda_enabled(cupy, "float16")
    assert not cuda_enabled(cupy, "float64")
    with fast_cpu.disabled():
        assert not cuda_enabled(cupy, "float32")


@pytest.mark.gpu
@pytest.mark.parametrize("decoder", ["bert", "gpt2", "bart"])
def test_a_cupy_training_step_through_the_cuda_forms_equals_the_plain_one(decoder):
    if not seq2seq.core.backend.has_cupy():
        pytest.skip("CuPy with a CUDA device is not available")
    rng = np.random.default_rng(0)
    ids, labels = rng.integers(3, 97, (3, 9)), rng.integers(3, 97, (3, 6))
    mask = np.ones_like(ids)
    mask[1:, 6:] = 0
    grads = []
    for plain in (False, True):
        model = tiny_bert2bert(backend="cupy", decoder=decoder)
        with fast_cpu.disabled() if plain else contextlib.nullcontext():
            out = model(ids, attention_mask=mask, labels=labels)
            out.loss.backward()
        grads.append((float(out.loss), {n: to_numpy(p.grad) for n, p in model.named_parameters()}))
    (loss, fused), (plain_loss, plain_grads) = grads
    assert abs(loss - plain_loss) <= 1e-5 * abs(plain_loss)
    floor = 1e-5 * max(np.abs(g).max() for g in plain_grads.values())  # as the emulated test below
    for name, g in plain_grads.items():
        np.testing.assert_allclose(fused[name], g, rtol=1e-3, atol=floor, err_msg=name)


MODULES_WITH_CUDA_FORMS = (functional, activations, attention, nn_loss, optim)  # each asks cuda_enabled(xp, dtype)


@pytest.fixture
def emulated_cuda_forms(monkeypatch, emulator):
    """The ops' CUDA branches taken on NumPy float32 arrays, their kernels run by the CPU emulation: the wiring in
    nn/ (which branch, what is kept for backward) tested without a GPU. Use inside ``fast_cpu.disabled()``."""
    forms = SimpleNamespace(**{name: functools.partial(getattr(eager, name), run=emulator.run) for name in (
        "activation_forward", "activation_backward", "layer_norm_forward", "layer_norm_backward", "masked_softmax",
        "softmax_backward", "softmax_statistics", "cross_entropy_grad", "adamw_update", "dropout_keep")})
    forms.fits_softmax = eager.fits_softmax
    for module in MODULES_WITH_CUDA_FORMS:
        monkeypatch.setattr(module, "cuda_enabled", lambda xp, dtype: np.dtype(dtype) == np.float32)
        monkeypatch.setattr(module, "cuda_forms", lambda: forms)
    # blocks of one warp, and one block for the elementwise kernels (their loops cover the rest): the emulation's
    # threads are OS threads, and the rows here are short
    for module, constant, value in ((plans, "BA_THREADS", 32), (plans, "BA_MAX_BLOCKS", 1),
                                    (eager_plans, "BA_THREADS", 32), (eager_plans, "BA_MAX_BLOCKS", 1),
                                    (eager_plans, "LN_THREADS", 32), (eager_plans, "SM_THREADS", 32),
                                    (eager_plans, "OP_THREADS", 32), (eager_plans, "OP_MAX_BLOCKS", 1),
                                    (eager_plans, "CE_THREADS", 32), (eager_plans, "DR_THREADS", 32),
                                    (eager_plans, "DR_MAX_BLOCKS", 1)):
        monkeypatch.setattr(module, constant, value)
    return forms


@pytest.mark.parametrize("decoder", ["bert", "gpt2"])
def test_a_training_step_through_the_emulated_cuda_forms_equals_the_plain_one(emulated_cuda_forms, decoder):
    """A tiny bert2bert (GELU, post-LN) and bert2gpt2 (tanh-GELU, pre-LN, causal + padding masks) on NumPy:
    forward, backward and AdamW's step through the ops' CUDA branches, against the plain forms."""
    rng = np.random.default_rng(0)
    ids, labels = rng.integers(3, 97, (2, 4)), rng.integers(3, 97, (2, 3))  # few rows: each a block of OS threads
    mask = np.ones_like(ids)
    mask[1, 3:] = 0
    results = []
    for emulated in (True, False):
        model = tiny_bert2bert(decoder=decoder)
        with fast_cpu.disabled():
            if not emulated:  # the plain forms: the fixture's patches off for this run
                for module in MODULES_WITH_CUDA_FORMS:
                    module.cuda_enabled = lambda xp, dtype: False
            out = model(ids, attention_mask=mask, labels=labels)
            out.loss.backward()
            grads = {n: p.grad.copy() for n, p in model.named_parameters()}
            optim.AdamW(model.parameters(), lr=1e-2).step()
        results.append((out.logits, float(out.loss), grads, {n: p.data for n, p in model.named_parameters()}))
    (logits, loss, grads, params), (plain_logits, plain_loss, plain_grads, plain_params) = results
    np.testing.assert_allclose(logits, plain_logits, rtol=1e-5, atol=1e-5)
    assert abs(loss - plain_loss) <= 1e-5 * abs(plain_loss)
    # float32 roundings apart (the emulated kernels' expf/tanhf against NumPy's), through a model whose weights are
    # spread 5x: as tests/models/test_model.py holds our gradients to torch's
    floor = 1e-5 * max(np.abs(g).max() for g in plain_grads.values())
    for name, g in plain_grads.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-3, atol=floor, err_msg=name)
    # AdamW's first step moves each value by about lr * sign(g): the same where the gradient is more than rounding
    # (a key bias's true gradient is exactly 0, and its rounding noise takes either sign)
    for name, p in plain_params.items():
        signal = np.abs(plain_grads[name]) > floor
        np.testing.assert_allclose(params[name][signal], p[signal], rtol=1e-4, atol=1e-5, err_msg=name)


def test_a_row_too_long_for_the_softmax_kernel_takes_the_plain_form():
    assert eager.fits_softmax(np.empty((1, 1, 2, 12288), np.float32))
    assert not eager.fits_softmax(np.empty((1, 1, 2, 12289), np.float32))


def test_dropout_takes_its_mask_from_one_seed_of_the_models_generator(emulated_cuda_forms):
    """Dropout and attention's dropout through their CUDA branches: the mask is the kernel's for one seed drawn
    from the generator they are given, so a run repeats from its seed (and a resumed one continues the stream)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 40)).astype(np.float32)
    seed = int(np.random.default_rng(5).integers(0, 2 ** 63, dtype=np.int64))  # the first draw of rng(5)
    with fast_cpu.disabled():
        y = functional.dropout(Tensor(x), 0.3, np.random.default_rng(5), training=True)
        np.testing.assert_allclose(y.data, x * reference.dropout_mask(x.shape, 0.3, seed) / 0.7, rtol=1e-6)
        q, k, v = (rng.standard_normal((2, 2, 3, 4)).astype(np.float32) for _ in range(3))
        op = attention.Attention(dropout_p=0.2, rng=np.random.default_rng(5))
        op(*(Tensor(a, requires_grad=True) for a in (q, k, v)))  # recording: the mask is kept
        np.testing.assert_array_equal(op.saved[4], reference.dropout_mask((2, 2, 3, 3), 0.2, seed))
