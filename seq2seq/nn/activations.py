"""Activation functions, picked by the name a config.json gives in ``hidden_act``.

Each activation is a ``Function`` whose ``backward`` is the closed-form derivative, so the elementwise work is done
in a few passes over the array instead of a chain of primitive ops (the FFN's activation runs on the largest
activation tensor in the model: ``[B, T, 4C]``).

Exact GELU needs ``erf``, which NumPy lacks: ``core/special.py`` has it (a rational approximation accurate to
about 1e-7 in float32, exact in float64). GELU and ``erf`` also have a fused CPU form (``fast/cpu/gelu.py``:
blockwise, in place, on every core, with a cheaper float32 Phi), taken on NumPy through one explicit branch,
``if fast_cpu.enabled(xp):``; GELU and its tanh form a fused CUDA form on CuPy (``fast/cuda/eager.py``: one kernel
each way), ``elif cuda_enabled(xp, dtype):``. The other activations are plain only.
"""
import math

from ..core import special
from ..core.autograd import Function
from ..core.backend import get_array_module
from ..core.errors import ConfigError
from ..fast import cpu as fast_cpu
from ..fast import cuda_enabled, cuda_forms
from ..fast.cpu import gelu as fast_gelu

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def erf(x):
    """The error function, elementwise, in x's dtype: to ~1e-7 absolute in float32, exact in float64."""
    xp = get_array_module(x)
    if fast_cpu.enabled(xp):
        return fast_gelu.erf(x)
    return special.erf(x)


class Gelu(Function):
    """Exact GELU: x * Phi(x), Phi the standard normal CDF = (1 + erf(x / sqrt 2)) / 2.

    Its derivative is Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi) the normal density. Forward keeps
    x and y = x Phi(x) (y is the next layer's saved input anyway: keeping it costs nothing); the fused CPU
    backward recovers Phi as y / x from them, the plain one recomputes it.
    """

    def forward(self, x):
        xp = get_array_module(x)
        if fast_cpu.enabled(xp):
            y = fast_gelu.gelu_forward(x)
        elif cuda_enabled(xp, x.dtype):
            y = cuda_forms().activation_forward(x, "gelu")  # one kernel
        else:
            y = x * (0.5 * (1 + special.erf(x * _SQRT_HALF)))  # x Phi(x)
        self.x, self.y = x, y
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        if fast_cpu.enabled(xp):
            return fast_gelu.gelu_backward(gy, self.x, self.y)
        if cuda_enabled(xp, gy.dtype):
            return cuda_forms().activation_backward(gy, self.x, "gelu")
        x = self.x
        cdf = 0.5 * (1 + special.erf(x * _SQRT_HALF))  # Phi(x)
        pdf = xp.exp(-0.5 * x * x) * _INV_SQRT_2PI  # phi(x)
        return gy * (cdf + x * pdf)


class GeluTanh(Function):
    """GELU's tanh approximation ("gelu_new", GPT-2's): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        if cuda_enabled(xp, x.dtype):  # one kernel each way; backward recomputes t
            self.t = None
            return cuda_forms().activation_forward(x, "gelu_tanh")
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
        if t is None:
            return cuda_forms().activation_backward(gy, x, "gelu_tanh")
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


def _factory(name):
    """The Function factory for a ``hidden_act`` name, or ConfigError naming the supported ones."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"hidden_act {name!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def get_activation(name):
    """The activation for a ``hidden_act`` name, as a function of one Tensor."""
    factory = _factory(name)
    return lambda x: factory()(x)


def array_activation(name):
    """The activation for a ``hidden_act`` name as a function of a raw array: its ``forward``, no autograd (what the
    CPU decode step calls, fast/cpu/decode_step.py: the same arithmetic as the Tensor op's)."""
    factory = _factory(name)
    return lambda x: factory().forward(x)
