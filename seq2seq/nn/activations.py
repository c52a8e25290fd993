"""Activation functions, picked by the name a config.json gives in ``hidden_act``.

Each activation is a fused ``Function`` whose ``backward`` is the closed-form derivative, so the elementwise work
is done in a few passes over the array instead of a chain of primitive ops (the FFN's activation runs on the
largest activation tensor in the model: ``[B, T, 4C]``).

Exact GELU needs ``erf``. NumPy has none, and ``scipy.special.erf`` is about 40x slower than torch's whole GELU,
so ``erf`` below is a rational approximation that is accurate to about 1e-7 in float32 (the one Eigen and XLA use
for float32 ``erf``: an odd degree-13 polynomial over an even degree-8 one, on x clamped to [-4, 4], where
erf(4) = 1 - 1.5e-8 already rounds to 1.0). GELU's float32 forward pass uses a cheaper form of the same accuracy
(see ``Gelu``).
"""
import math

import numpy as np

from ..core.autograd import Function
from ..core.backend import erf_float64, get_array_module
from ..core.errors import ConfigError
from ..fast.cpu.parallel import as_rows, for_each_block, scratch

# erf(x) ~= x * P(x^2) / Q(x^2) for |x| <= 4 (Eigen's generic_fast_erf_float coefficients).
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)  # x^12 ... x^0 terms of P
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)  # x^8 ... x^0 terms of Q
# Phi(x) ~= (1 + tanh(x R(x^2))) / 2 for |x| <= _PHI_CLAMP, R's x^12 ... x^0 terms (fitted in float64 to
# atanh(erf(x / sqrt 2)) / x, weighted by the error each coefficient makes in Phi, to 3e-8 in float64, 1e-7 in
# float32; R(0) = sqrt(2 / pi), as in GELU's tanh approximation, whose R is that times 1 + 0.044715 x^2, 1e-4 off)
_PHI_R = (1.7564174771764433e-09, -1.3227088554836904e-07, 3.9648256879408014e-06, -5.530657407705452e-05,
          -3.2594201668270286e-05, 0.036333083979003804, 0.7978849415736056)
_PHI_CLAMP = 5.5  # erf(5.5 / sqrt 2) = 1 - 4e-8: float32's 1
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def erf(x):
    """The error function, elementwise, to ~1e-7 absolute in float32 (exact to float64 rounding it is not)."""
    xp = get_array_module(x)
    out = xp.empty(x.shape, dtype=x.dtype)  # C order, so as_rows(out) below is a view (empty_like keeps x's)
    x2, out2 = as_rows(xp.ascontiguousarray(x)), as_rows(out)
    for_each_block(lambda rows: _erf_into(xp, x2[rows], out2[rows]), *x2.shape, xp=xp)
    return out


def _erf_into(xp, x, out):
    """Write erf(x) into ``out``: the rational approximation for float32, exact erf for float64."""
    if x.dtype.itemsize > 4:  # float64 (gradient checks): a float32 approximation would be too coarse
        out[...] = erf_float64(x)
    elif x.dtype.itemsize < 4:  # float16: its coefficients would underflow (error 4e-2); compute in float32
        wide = xp.empty(x.shape, dtype=xp.float32)
        _erf_into(xp, x.astype(xp.float32), wide)
        out[...] = wide
    else:
        _erf_float32(xp, x, out)


def _erf_float32(xp, x, out):
    """erf(x) into ``out`` with in-place ufuncs on this thread's scratch buffers (one block of rows)."""
    t, x2, q = scratch(xp, x.shape, x.dtype, name="erf", count=3)
    xp.clip(x, -4.0, 4.0, out=t)
    xp.multiply(t, t, out=x2)
    p = out  # the numerator is built in the output itself
    p.fill(_ERF_P[0])
    for c in _ERF_P[1:]:  # Horner: p = p * x^2 + c
        xp.multiply(p, x2, out=p)
        xp.add(p, c, out=p)
    xp.multiply(p, t, out=p)
    q.fill(_ERF_Q[0])
    for c in _ERF_Q[1:]:
        xp.multiply(q, x2, out=q)
        xp.add(q, c, out=q)
    xp.divide(p, q, out=out)


class Gelu(Function):
    """Exact GELU: x * Phi(x), Phi the standard normal CDF = (1 + erf(x / sqrt 2)) / 2.

    Both passes run blockwise (``parallel.for_each_block``) on the largest activation of the model, in passes that
    stay in the cache and use every core. In float32, forward does not go through ``erf``: Phi itself is written
    as (1 + tanh(x R(x^2))) / 2, R a degree-6 polynomial fitted to atanh(erf(x / sqrt 2)) / x on |x| <= 5.5
    (see ``_PHI_R``), which takes about 20 elementwise passes where 0.5 (1 + erf(x / sqrt 2)) takes 30: NumPy's
    ``tanh`` is one vectorised pass, and the scaling by 1/sqrt(2) and the halving fold into the coefficients.
    Measured on 2 Xeon cores, a [2048, 1536] activation: 11.6 -> 7.1 ms. The error is below erf's: GELU within
    6e-7 of the float64 value everywhere (1.4e-6 through erf), Phi within 1e-7.
    """

    def forward(self, x):
        xp = get_array_module(x)
        x = xp.ascontiguousarray(x)
        y = xp.empty(x.shape, dtype=x.dtype)
        x2, y2 = as_rows(x), as_rows(y)  # [..., F] -> [N, F] views
        for_each_block(lambda rows: self._forward_block(xp, x2[rows], y2[rows]), *x2.shape, xp=xp)
        self.x, self.y = x, y  # y is the next layer's saved input anyway: keeping it here costs nothing
        return y

    @staticmethod
    def _forward_block(xp, x, out):
        if x.dtype != xp.float32:  # float64 (gradient checks) through the exact erf; float16 through float32's
            (u,) = scratch(xp, x.shape, x.dtype, name="gelu")
            xp.multiply(x, x.dtype.type(_SQRT_HALF), out=u)
            _erf_into(xp, u, out)
            out += 1
            out *= 0.5  # Phi(x)
            out *= x  # x Phi(x)
            return
        t, s = scratch(xp, x.shape, x.dtype, name="gelu", count=2)
        xp.clip(x, -_PHI_CLAMP, _PHI_CLAMP, out=t)  # beyond it Phi rounds to 1 (or to ~0: GELU's error < 1e-6)
        xp.multiply(t, t, out=s)
        r = out  # R(t^2), by Horner, built in the output itself
        xp.multiply(s, xp.float32(_PHI_R[0]), out=r)
        r += xp.float32(_PHI_R[1])
        for c in _PHI_R[2:]:
            r *= s
            r += xp.float32(c)
        r *= t
        xp.tanh(r, out=r)  # 2 Phi(x) - 1
        r += 1
        r *= x
        r *= 0.5  # x Phi(x)

    def backward(self, gy):
        xp = get_array_module(gy)
        gy = xp.ascontiguousarray(gy)
        gx = xp.empty(gy.shape, dtype=gy.dtype)
        x2, y2, gy2, gx2 = as_rows(self.x), as_rows(self.y), as_rows(gy), as_rows(gx)
        for_each_block(lambda rows: self._backward_block(xp, x2[rows], y2[rows], gy2[rows], gx2[rows]),
                       *x2.shape, xp=xp)
        return gx

    @staticmethod
    def _backward_block(xp, x, y, gy, out):
        # Why Phi is recovered as y / x instead of kept from forward: storing it would hold one more [N, 4C]
        # array per layer until backward (the largest activations of the model). Phi(0) = 1/2.
        cdf, slope = scratch(xp, x.shape, x.dtype, name="gelu", count=2)
        with np.errstate(invalid="ignore"):
            xp.divide(y, x, out=cdf)  # Phi(x); 0 / 0 = NaN where x = 0, replaced next
        xp.copyto(cdf, x.dtype.type(0.5), where=x == 0)
        xp.multiply(x, x, out=slope)  # d/dx x Phi(x) = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
        slope *= -0.5
        xp.exp(slope, out=slope)
        slope *= _INV_SQRT_2PI
        slope *= x
        slope += cdf
        xp.multiply(gy, slope, out=out)


class GeluTanh(Function):
    """GELU's tanh approximation ("gelu_new", GPT-2's): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        inner = x * x
        inner *= 0.044715
        inner += 1
        inner *= x
        inner *= _SQRT_2_OVER_PI  # u = sqrt(2/pi) (x + 0.044715 x^3)
        self.t = xp.tanh(inner, out=inner)
        y = self.t + 1
        y *= x
        y *= 0.5
        return y

    def backward(self, gy):
        x, t = self.x, self.t
        du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
        return gy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)


class Relu(Function):
    def forward(self, x):
        self.positive = x > 0
        return x * self.positive

    def backward(self, gy):
        return gy * self.positive


class SigmoidGated(Function):
    """x * sigmoid(a x): SiLU/swish for a = 1, "quick_gelu" for a = 1.702."""

    def __init__(self, a):
        self.a = a

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        self.s = 1 / (1 + xp.exp(-self.a * x))
        return x * self.s

    def backward(self, gy):
        s = self.s
        return gy * (s + self.a * self.x * s * (1 - s))


class Tanh(Function):
    def forward(self, x):
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, gy):
        return gy * (1 - self.y * self.y)


# hidden_act name (transformers' ACT2FN keys) -> a factory of the Function
ACTIVATIONS = {
    "gelu": Gelu,
    "gelu_python": Gelu,
    "gelu_new": GeluTanh,
    "gelu_pytorch_tanh": GeluTanh,
    "gelu_fast": GeluTanh,
    "relu": Relu,
    "silu": lambda: SigmoidGated(1.0),
    "swish": lambda: SigmoidGated(1.0),
    "quick_gelu": lambda: SigmoidGated(1.702),
    "tanh": Tanh,
}


def get_activation(name):
    """The activation for a ``hidden_act`` name, as a function of one Tensor."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"hidden_act {name!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
    factory = ACTIVATIONS[name]
    return lambda x: factory()(x)
