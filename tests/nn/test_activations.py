"""Tests for seq2seq/nn/activations.py: the float32 erf against math.erf, and every ``hidden_act`` name against
torch (forward and gradient in float32) and against finite differences in float64.

erf and GELU run both forms (the ``form`` fixture): the fused CPU one NumPy takes by default, and the plain one
CuPy runs. Only the comparisons with torch need torch.
"""
import math

import numpy as np
import pytest

from seq2seq.fast import cpu as fast_cpu
from seq2seq.fast.cpu import gelu as fast_gelu
from seq2seq.fast.cpu import parallel
from seq2seq.nn.activations import ACTIVATIONS, erf, get_activation
from seq2seq.core.autograd import Tensor
from seq2seq.core.backend import to_numpy
from seq2seq.core.errors import ConfigError
from seq2seq.core.gradcheck import check_grad

try:
    import torch
    F = torch.nn.functional
except ImportError:  # the finite-difference checks and the erf grids run without the oracle
    torch = F = None

needs_torch = pytest.mark.skipif(torch is None, reason="compares with torch, which is not installed")


exact_erf = np.vectorize(math.erf, otypes=[np.float64])


# ---- erf ----------------------------------------------------------------------------------------------------------

def test_erf_float32_grid(xp, form):
    x = np.linspace(-10, 10, 400_001, dtype=np.float32)  # step 5e-5, through the clamp at |x| = 4
    x = np.concatenate([x, [0.0, -0.0, 1e-30, -1e-30, 1e-45, 3.9999998, 4.0, 4.0000005]]).astype(np.float32)
    out = to_numpy(erf(xp.asarray(x)))
    assert out.dtype == np.float32
    assert np.abs(out - exact_erf(x.astype(np.float64))).max() < 1e-6


def test_erf_special_values(xp, form):
    out = to_numpy(erf(xp.asarray([np.inf, -np.inf, np.nan, 0.0, -0.0], dtype=np.float32)))
    assert out[0] == 1.0 and out[1] == -1.0 and np.isnan(out[2]) and out[3] == 0.0 and out[4] == 0.0


@pytest.mark.parametrize("rows", [1, 7, 8, 9, 31])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_erf_across_block_boundaries(monkeypatch, xp, rng, rows, threads):
    monkeypatch.setattr(parallel, "BLOCK_VALUES", 8 * 16)  # blocks of 8 rows
    before = parallel.num_threads()
    parallel.set_num_threads(threads)
    x = (3 * rng.standard_normal((rows, 16))).astype(np.float32)
    try:
        out = to_numpy(erf(xp.asarray(x)))
    finally:
        parallel.set_num_threads(before)
    assert out.shape == (rows, 16)
    assert np.abs(out - exact_erf(x.astype(np.float64))).max() < 1e-6


@pytest.mark.parametrize("layout", ["transposed", "strided", "3d"])
def test_erf_of_non_contiguous_and_shaped_arrays(xp, rng, form, layout):
    base = (2 * rng.standard_normal((40, 30))).astype(np.float32)
    x = {"transposed": base.T, "strided": base[::3, 1::2], "3d": base.reshape(4, 10, 30)}[layout]
    out = to_numpy(erf(xp.asarray(x)))
    assert out.shape == x.shape
    assert np.abs(out - exact_erf(x.astype(np.float64))).max() < 1e-6


def test_erf_float64_is_exact(xp, form, rng):
    x = 3 * rng.standard_normal(1000)
    np.testing.assert_allclose(to_numpy(erf(xp.asarray(x))), exact_erf(x), rtol=1e-15, atol=1e-16)


def test_erf_float16(xp, form):
    x = np.linspace(-5, 5, 2001).astype(np.float16)
    out = to_numpy(erf(xp.asarray(x)))
    assert out.dtype == np.float16
    assert np.abs(out.astype(np.float64) - exact_erf(x.astype(np.float64))).max() < 1e-3  # float16 rounding


@pytest.mark.parametrize("form, error, one_from", [("tanh", 7e-7, 5.75), ("rational", 1.5e-6, 4 * math.sqrt(2))])
def test_fused_gelu_float32_grid(form, error, one_from, monkeypatch):
    """Both fused float32 forwards (fast/cpu/gelu.py: Phi not through erf) on a dense grid through their clamps,
    and far out in the tails, where Phi is exactly 0 and 1."""
    monkeypatch.setattr(fast_gelu, "PHI_FORM", form)
    x = np.linspace(-12, 12, 480_001, dtype=np.float32)  # step 5e-5
    tails = [-1e30, -100.0, 100.0, 1e30, -np.float32(one_from), np.float32(one_from)]
    x = np.concatenate([x, tails, [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    op = get_activation("gelu")
    out = op(Tensor(x)).data
    x64 = x.astype(np.float64)
    exact = 0.5 * x64 * (1 + exact_erf(x64 / math.sqrt(2)))
    assert out.dtype == np.float32
    assert np.abs(out - exact).max() < error
    assert out[-4] == 0 and out[-3] == 0 and np.signbit(out[-3]) == np.signbit(np.float32(-0.0) * 0.5)
    assert np.all(out[x <= -one_from] == 0) and np.all(np.signbit(out[x <= -one_from]))  # -0: x times Phi = 0
    np.testing.assert_array_equal(out[x >= one_from], x[x >= one_from])  # Phi is 1 there


def test_plain_gelu_float32_grid(xp):
    """The plain float32 forward, x (1 + erf(x / sqrt 2)) / 2, on the same grid: through erf, within 1.5e-6."""
    x = np.concatenate([np.linspace(-12, 12, 480_001), [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    with fast_cpu.disabled():
        out = to_numpy(get_activation("gelu")(Tensor(xp.asarray(x))).data)
    x64 = x.astype(np.float64)
    assert out.dtype == np.float32
    assert np.abs(out - 0.5 * x64 * (1 + exact_erf(x64 / math.sqrt(2)))).max() < 1.5e-6


def test_gelu_propagates_nan(xp, form):
    out = to_numpy(get_activation("gelu")(Tensor(xp.asarray([np.nan, 1.0], dtype=np.float32))).data)
    assert np.isnan(out[0]) and abs(out[1] - 0.8413447) < 1e-6


# ---- every hidden_act name ------------------------------------------------------------------------------------------

TORCH_ACTIVATIONS = {} if torch is None else {
    "gelu": F.gelu,
    "gelu_python": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # transformers' QuickGELUActivation
    "tanh": torch.tanh,
}


@needs_torch
def test_every_activation_has_a_reference():
    assert sorted(ACTIVATIONS) == sorted(TORCH_ACTIVATIONS)


def inputs(rng, n=2000):
    """float32 points: normal ones, a spread to +-12 (saturation), and exact zero."""
    x = np.concatenate([rng.standard_normal(n), rng.uniform(-12, 12, n), [0.0, -0.0, 1e-3, -1e-3]])
    return x.astype(np.float32).reshape(-1, 2)


@needs_torch
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_torch(xp, rng, form, name):
    x = inputs(rng)
    t = Tensor(xp.asarray(x), requires_grad=True)
    y = get_activation(name)(t)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    y.backward(xp.asarray(gy))

    tx = torch.from_numpy(x).requires_grad_()
    ty = TORCH_ACTIVATIONS[name](tx)
    ty.backward(torch.from_numpy(gy))
    assert y.dtype == np.float32 and t.grad.dtype == np.float32
    exact = TORCH_ACTIVATIONS[name](torch.from_numpy(x.astype(np.float64))).numpy()
    np.testing.assert_allclose(to_numpy(y.data), exact, rtol=1e-6, atol=1e-6)
    # torch's float32 GELU differs by CPU: on AVX-512 machines its vectorised erf is off from the float64 value by
    # up to 1e-6 in the tail (x ~ -3.4, where GELU is ~1e-3); ours stays within 8e-7 there
    np.testing.assert_allclose(to_numpy(y.data), ty.detach().numpy(), rtol=1e-6, atol=2e-6)
    # gradients: near saturation 1 - tanh^2 cancels in float32, and torch's own float32 gradient is off from the
    # float64 one by 1e-6 * |gy| there too (|gy| up to ~4 here)
    np.testing.assert_allclose(to_numpy(t.grad), tx.grad.numpy(), rtol=1e-5, atol=5e-6)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_gradient(xp, rng, form, name):
    x = np.concatenate([rng.standard_normal(12), [-5.0, -2.5, 2.5, 5.0]]).reshape(4, 4)
    assert check_grad(get_activation(name), xp.asarray(x))


def test_unknown_activation_is_a_config_error():
    with pytest.raises(ConfigError, match="gelu_fancy"):
        get_activation("gelu_fancy")
    with pytest.raises(ValueError):  # ConfigError is also a ValueError
        get_activation("")
