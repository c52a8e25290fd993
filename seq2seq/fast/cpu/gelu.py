"""The fused CPU forms of ``erf`` and exact GELU: blockwise, in place, on every core, with a cheaper float32 Phi.

GELU runs on the largest activation of the model, ``[B, T, 4C]``. The plain form (``nn/activations.py``) writes
x Phi(x) = x (1 + erf(x / sqrt 2)) / 2 as whole-array expressions; here the same work runs on blocks of rows
(``parallel.for_each_block``) whose temporaries are this thread's scratch buffers, so that each pass reads from
the cache, and on every core. The blocks are ``BLOCK_FACTOR`` times the usual size: a block makes ~30 NumPy calls,
each with ~1.5 us of its own, and larger blocks spend less of their time on that while still inside a large L3
(2-vCPU AMD EPYC, two threads, a [4096, 3072] forward: 34.8 ms in blocks of 128K values, 27.0 in 256K, 30.4 in
512K; backward 24.7, 23.1, 23.8 ms; benchmarks/RESULTS.md). GELU works value by value: the blocks change no result.

**erf** is ``core.special``'s rational approximation, evaluated in place: in float32 the same values, bit for bit.

**GELU's float32 forward does not go through erf**: it evaluates Phi itself, one of two ways, whichever is faster
on the machine (both within 1.5e-6 of the float64 GELU, as erf's is):

- ``rational``: erf's rational approximation with the 1/sqrt(2), the halving and the 1/2 folded into its
  coefficients, Phi(x) = 1/2 + x P(x^2) / Q(x^2) (``_PHI_P``, ``_PHI_Q``), clipped to [0, 1]: 27 cheap
  elementwise passes, against 30 through erf itself.
- ``tanh``: Phi(x) = (1 + tanh(x R(x^2))) / 2, R a degree-6 polynomial fitted to atanh(erf(x / sqrt 2)) / x on
  |x| <= 5.5 (``_PHI_R``; clamped at 5.75): about 20 passes, one of them NumPy's ``tanh``.

Which is faster is a matter of NumPy's ``tanh``: with its AVX-512 loop (an AVX-512 Xeon) the ``tanh`` form took a
[2048, 1536] activation in 7.1 ms on 2 cores against erf's 11.6; where ``tanh`` runs 256 bits wide at best (an
AVX2 AMD EPYC: 4-5 ns a value, 25 times a multiplication) the ``rational`` form takes a [1024, 3072] one in 12.9 ms
on one core against 16.8 through erf and the ``tanh`` form's 23.1 (benchmarks/RESULTS.md). ``PHI_FORM`` is
chosen once, from the CPU features NumPy dispatches ``tanh`` on, never by timing: a machine computes the same values
on every run. float64 (gradient checks) goes through the exact erf, float16 through float32's.

**GELU's backward recovers Phi as y / x** instead of keeping it from forward: storing it would hold one more
``[N, 4C]`` array per layer until backward. Phi(0) = 1/2.
"""
import math

import numpy as np

from ...core.backend import erf_float64
from ...core.special import ERF_CLAMP, ERF_P, ERF_Q
from . import parallel
from .parallel import as_rows, scratch

# Phi(x) ~= (1 + tanh(x R(x^2))) / 2 for |x| <= _PHI_CLAMP, R's x^12 ... x^0 terms (fitted in float64 to
# atanh(erf(x / sqrt 2)) / x, weighted by the error each coefficient makes in Phi, to 3e-8 in float64, 1e-7 in
# float32; R(0) = sqrt(2 / pi), as in GELU's tanh approximation, whose R is that times 1 + 0.044715 x^2, 1e-4 off)
_PHI_R = (1.7564174771764433e-09, -1.3227088554836904e-07, 3.9648256879408014e-06, -5.530657407705452e-05,
          -3.2594201668270286e-05, 0.036333083979003804, 0.7978849415736056)
# erf(5.5 / sqrt 2) = 1 - 4e-8 is float32's 1 already; the clamp is a little further out, where tanh, too, rounds
# to exactly -1 (at 5.5 it misses by 6e-8, which x = -1e30 would make -3e22 instead of -0)
_PHI_CLAMP = 5.75
# Phi(x) = 1/2 + erf(x / sqrt 2) / 2 ~= 1/2 + x P(x^2) / Q(x^2) for |x| <= 4 sqrt 2: erf's x P(x^2) / Q(x^2) at x /
# sqrt 2, each power of x^2 in P and Q divided by 2 and P by 2 sqrt 2 as well (highest power first, as ERF_P/ERF_Q)
_PHI_P = tuple(c * 0.5 ** (len(ERF_P) - 1 - i) / (2 * math.sqrt(2)) for i, c in enumerate(ERF_P))
_PHI_Q = tuple(c * 0.5 ** (len(ERF_Q) - 1 - i) for i, c in enumerate(ERF_Q))
_RATIONAL_CLAMP = ERF_CLAMP * math.sqrt(2)
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


try:  # the ufunc np.clip calls (NumPy 2; NumPy 1 kept it in numpy.core); None: _clamp uses maximum and minimum
    from numpy._core.umath import clip as _CLIP
except ImportError:  # pragma: no cover - older NumPy
    try:
        from numpy.core.umath import clip as _CLIP
    except ImportError:
        _CLIP = None

BLOCK_FACTOR = 2  # GELU's and erf's blocks hold this many times parallel.BLOCK_VALUES values (see above)


def _for_each_block(fn, rows, row_values):
    """``parallel.for_each_block`` in GELU's larger blocks."""
    return parallel.for_each_block(fn, rows, row_values, block_values=BLOCK_FACTOR * parallel.BLOCK_VALUES)


# ---- erf ----------------------------------------------------------------------------------------------------------

def erf(x):
    """``core.special.erf``, blockwise: the same values (bit for bit in float32)."""
    out = np.empty(x.shape, dtype=x.dtype)  # C order, so as_rows(out) below is a view (empty_like keeps x's)
    x2, out2 = as_rows(np.ascontiguousarray(x)), as_rows(out)
    _for_each_block(lambda rows: _erf_into(x2[rows], out2[rows]), *x2.shape)
    return out


def _erf_into(x, out):
    """Write erf(x) into ``out``: the rational approximation for float32, exact erf for float64."""
    if x.dtype.itemsize > 4:
        out[...] = erf_float64(x)
    elif x.dtype.itemsize < 4:  # float16: through float32
        wide = np.empty(x.shape, dtype=np.float32)
        _erf_into(x.astype(np.float32), wide)
        out[...] = wide
    else:
        _erf_float32(x, out)


def _erf_float32(x, out):
    """erf(x) into ``out``: x P(x^2) / Q(x^2) on x clamped (one block of rows)."""
    _odd_rational(x, ERF_P, ERF_Q, ERF_CLAMP, out=out, name="erf")


def _odd_rational(x, numerator, denominator, clamp, *, out, name):
    """t P(t^2) / Q(t^2) into ``out``, t = x clamped to [-clamp, clamp], P and Q by their coefficients (highest
    power first), with in-place ufuncs on this thread's scratch buffers ``name``."""
    t, s, q = scratch(x.shape, x.dtype, name=name, count=3)
    _clamp(x, -clamp, clamp, out=t)
    np.multiply(t, t, out=s)
    _horner(numerator, s, out=out)  # the numerator, built in the output itself
    out *= t
    _horner(denominator, s, out=q)
    np.divide(out, q, out=out)


def _clamp(x, low, high, *, out):
    """``np.clip(x, low, high, out=out)``, the bounds in x's dtype (NaN stays NaN), through the ufunc behind
    ``np.clip`` without its Python wrapper, which costs more than the pass itself on a decode step's few values.
    Why not ``np.minimum(np.maximum(...))``, the same values: on the AVX2 EPYC measured, float32 ``maximum`` with a
    scalar runs at ~0.7 ns a value, three times ``clip``'s whole pass (benchmarks/RESULTS.md)."""
    kind = x.dtype.type
    if _CLIP is not None:
        return _CLIP(x, kind(low), kind(high), out=out)
    return np.minimum(np.maximum(x, kind(low), out=out), kind(high), out=out)


def _horner(coefficients, s, *, out):
    """``out`` = sum_i c_i s^(n - i), highest power first, in float32 in place: two passes a coefficient, in the
    order of ``core.special.polynomial`` (so the same values, bit for bit)."""
    np.multiply(s, np.float32(coefficients[0]), out=out)
    out += np.float32(coefficients[1])
    for c in coefficients[2:]:
        out *= s
        out += np.float32(c)
    return out


# ---- GELU ---------------------------------------------------------------------------------------------------------

def gelu_forward(x):
    """x Phi(x), elementwise, as a new C-ordered array."""
    x = np.ascontiguousarray(x)
    y = np.empty(x.shape, dtype=x.dtype)
    x2, y2 = as_rows(x), as_rows(y)  # [..., F] -> [N, F] views
    _for_each_block(lambda rows: _forward_block(x2[rows], y2[rows]), *x2.shape)
    return y


def _forward_block(x, out):
    if x.dtype != np.float32:  # float64 (gradient checks) through the exact erf; float16 through float32's
        (u,) = scratch(x.shape, x.dtype, name="gelu")
        np.multiply(x, x.dtype.type(_SQRT_HALF), out=u)
        _erf_into(u, out)
        out += 1
        out *= 0.5  # Phi(x)
        out *= x  # x Phi(x)
    elif PHI_FORM == "rational":
        _rational_block(x, out)
    else:
        _tanh_block(x, out)


def _rational_block(x, out):
    _odd_rational(x, _PHI_P, _PHI_Q, _RATIONAL_CLAMP, out=out, name="gelu")  # Phi(x) - 1/2
    out += np.float32(0.5)  # Phi(x)
    # Why clip: at the clamp the approximation, rounded, misses 0 and 1 by ~6e-8, which x far out in the tails
    # (-1e30) would magnify; clipped, Phi is exactly 0 and 1 there, and GELU -0 and x
    _clamp(out, 0, 1, out=out)
    out *= x  # x Phi(x)


def _tanh_block(x, out):
    t, s = scratch(x.shape, x.dtype, name="gelu", count=2)
    _clamp(x, -_PHI_CLAMP, _PHI_CLAMP, out=t)  # beyond it Phi rounds to exactly 1 (or 0)
    np.multiply(t, t, out=s)
    r = out  # R(t^2), by Horner, built in the output itself
    _horner(_PHI_R, s, out=r)
    r *= t
    np.tanh(r, out=r)  # 2 Phi(x) - 1
    r += 1
    r *= x
    r *= 0.5  # x Phi(x)


def _tanh_is_wide():
    """Whether NumPy runs float32 ``tanh`` on its AVX-512 loop here (NumPy >= 2.1 says; older: assume not)."""
    try:
        from numpy.lib.introspect import opt_func_info  # noqa: PLC0415
        target = opt_func_info(func_name="^tanh$", signature="float32")["tanh"]["ff"]["current"]
    except (ImportError, KeyError, TypeError):
        return False
    return "AVX512" in target or target == "X86_V4"


PHI_FORM = "tanh" if _tanh_is_wide() else "rational"  # see the module's docstring


def gelu_backward(gy, x, y):
    """gy * (Phi(x) + x phi(x)), given forward's input ``x`` and output ``y`` = x Phi(x)."""
    gy, x = np.ascontiguousarray(gy), np.ascontiguousarray(x)
    gx = np.empty(gy.shape, dtype=gy.dtype)
    x2, y2, gy2, gx2 = as_rows(x), as_rows(y), as_rows(gy), as_rows(gx)
    _for_each_block(lambda rows: _backward_block(x2[rows], y2[rows], gy2[rows], gx2[rows]), *x2.shape)
    return gx


def _backward_block(x, y, gy, out):
    cdf, slope = scratch(x.shape, x.dtype, name="gelu", count=2)
    with np.errstate(invalid="ignore"):
        np.divide(y, x, out=cdf)  # Phi(x); 0 / 0 = NaN where x = 0, replaced next
    np.copyto(cdf, x.dtype.type(0.5), where=x == 0)
    np.multiply(x, x, out=slope)  # d/dx x Phi(x) = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    slope *= -0.5
    np.exp(slope, out=slope)
    slope *= _INV_SQRT_2PI
    slope *= x
    slope += cdf
    np.multiply(gy, slope, out=out)
