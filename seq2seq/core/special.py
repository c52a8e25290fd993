"""The error function, which exact GELU needs and NumPy lacks, in plain ``xp`` arithmetic.

``scipy.special.erf`` is far slower than torch's whole GELU (and SciPy is not a dependency), so float32 uses a
rational approximation accurate to about 1e-7: the one Eigen and XLA use for float32 ``erf``, an odd degree-13
polynomial over an even degree-8 one, on x clamped to [-4, 4], where erf(4) = 1 - 1.5e-8 already rounds to 1.0.
float64 (gradient checks) takes the exact ``backend.erf_float64``; float16 is computed through float32, because
the coefficients would underflow in float16 (an error of 4e-2).

This is the definition of ``erf`` for the activations (``nn/activations.py``) and the only form CuPy runs; the
CPU's blockwise form (``fast/cpu/gelu.py``) evaluates the same polynomials with the same coefficients, in place.
"""
from .backend import erf_float64, get_array_module

# erf(x) ~= x * P(x^2) / Q(x^2) for |x| <= 4 (Eigen's generic_fast_erf_float coefficients).
ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
         -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)  # x^12 ... x^0 terms of P
ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
         -1.42647390514189e-02)  # x^8 ... x^0 terms of Q
ERF_CLAMP = 4.0


def erf(x):
    """The error function, elementwise, in x's dtype: to ~1e-7 absolute in float32, exact in float64."""
    xp = get_array_module(x)
    if x.dtype.itemsize > 4:
        return erf_float64(x)
    if x.dtype.itemsize < 4:  # float16: through float32
        return erf(x.astype(xp.float32)).astype(x.dtype)
    t = xp.clip(x, -ERF_CLAMP, ERF_CLAMP)
    t2 = t * t
    return t * polynomial(ERF_P, t2) / polynomial(ERF_Q, t2)


def polynomial(coefficients, x):
    """sum_i c_i x^(n - i) for coefficients c_0 ... c_n (highest power first), by Horner's rule."""
    value = coefficients[0] * x
    for c in coefficients[1:-1]:
        value = (value + c) * x
    return value + coefficients[-1]
