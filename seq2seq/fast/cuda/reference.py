"""What the kernels in ``kernels/*.cu`` compute, in NumPy (or CuPy) arrays with the same buffer layouts.

Each function mirrors one kernel family: arguments in the kernel's order, rows ``[N, F]`` or ``[N, C]`` over the
last axis, parameters ``[F]`` / ``[C]``. As in the kernels, storage may be float16 but the arithmetic is float32:
inputs are widened, computed on, and the result is rounded once to the input's dtype. (NumPy has no bfloat16; the
GPU parity test rounds float32 to bfloat16 bits itself.) These are definitions, written for reading, not speed.
"""
import math

import numpy as np

from ...core.backend import erf_float64, get_array_module

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")  # the kernel names' activation part
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _erf(v):
    """erf in float32 through float64 (exact enough to be the definition), on NumPy or CuPy."""
    return erf_float64(v.astype(np.float64)).astype(np.float32)


def bias_activation(x, b, act):
    """``act(x + b)`` for x ``[N, F]`` and b ``[F]``, computed in float32, returned in x's dtype.

    act: ``"gelu"`` (erf), ``"gelu_tanh"`` (transformers' "gelu_new") or ``"relu"``.
    """
    xp = get_array_module(x, b)
    v = x.astype(np.float32) + b.astype(np.float32)
    if act == "gelu":
        y = 0.5 * v * (1 + _erf(v * np.float32(_SQRT_HALF)))
    elif act == "gelu_tanh":
        y = 0.5 * v * (1 + xp.tanh(np.float32(_SQRT_2_OVER_PI) * (v + np.float32(0.044715) * v * v * v)))
    elif act == "relu":
        y = xp.maximum(v, 0)
    else:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    return y.astype(x.dtype)


def _layer_norm(v, gamma, beta, eps):
    """Float32 layer norm over the last axis with the biased variance about the mean (torch.nn.LayerNorm)."""
    mean = v.mean(axis=-1, keepdims=True)
    d = v - mean
    var = (d * d).mean(axis=-1, keepdims=True)
    return d / np.sqrt(var + np.float32(eps)) * gamma.astype(np.float32) + beta.astype(np.float32)


def add_layer_norm(x, residual, bias, gamma, beta, eps):
    """Post-LN (BERT, BART): ``LayerNorm(x + residual + bias) * gamma + beta`` over the last axis of ``[N, C]``."""
    v = x.astype(np.float32) + residual.astype(np.float32) + bias.astype(np.float32)
    return _layer_norm(v, gamma, beta, eps).astype(x.dtype)


def add_layer_norm_pre(x, residual, gamma, beta, eps):
    """Pre-LN (GPT-2): ``(s, LayerNorm(s) * gamma + beta)`` with ``s = x + residual``, both in x's dtype.

    The normalised rows are computed from the float32 sum, as the kernel does, not from its rounded copy.
    """
    s = x.astype(np.float32) + residual.astype(np.float32)
    return s.astype(x.dtype), _layer_norm(s, gamma, beta, eps).astype(x.dtype)
