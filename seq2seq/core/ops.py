"""Primitive differentiable operations, each a ``Function`` with its ``forward`` and ``backward`` side by side.

Every op here works on raw arrays of either backend (``xp = get_array_module(x)``). Binary ops broadcast like
NumPy; their backward sums the gradient back to each input's shape with ``sum_to`` (the one broadcasting helper).
The fused neural-network ops (linear, layer norm, softmax, cross-entropy, ...) are in ``nn_ops.py``; the ops here
are what those, and the attention code, are composed of.

At the end of the module the ops are attached to ``Tensor`` as operators, so ``a @ b + c`` builds a graph.
"""
import numpy as np

from .autograd import Function, Tensor, as_tensor
from .backend import get_array_module


def sum_to(g, shape):
    """Sum ``g`` over the axes that broadcasting added or stretched, so that it has ``shape``.

    ``[B, T, C]`` gradient of a bias of shape ``[C]`` -> summed over B and T.
    """
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)  # axes broadcasting prepended
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1)
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape) if lead else g


def _operand(value, like):
    """Turn a Python number or array into a Tensor in ``like``'s array module and float dtype.

    Without this, ``x * 0.5`` would make a float64 0-d array and NumPy would promote the float32 result to float64.
    """
    if isinstance(value, Tensor):
        return value
    xp = get_array_module(like)
    return Tensor(xp.asarray(value, dtype=like.dtype))


# -- elementwise arithmetic -----------------------------------------------------------------------------------
class Add(Function):
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, gy):
        return sum_to(gy, self.a_shape), sum_to(gy, self.b_shape)


class Sub(Function):
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, gy):
        return sum_to(gy, self.a_shape), sum_to(-gy, self.b_shape)


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        ga = sum_to(gy * self.b, self.a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(gy * self.a, self.b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        ga = sum_to(gy / self.b, self.a.shape) if self.needs_input_grad[0] else None
        # d(a/b)/db = -a / b^2
        gb = sum_to(-gy * self.a / (self.b * self.b), self.b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    """``x ** c`` for a constant exponent ``c``."""

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        self.x = x
        return x ** self.c

    def backward(self, gy):
        return gy * self.c * self.x ** (self.c - 1)  # d(x^c)/dx = c x^(c-1)


class Exp(Function):
    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, gy):
        return gy * self.y  # d(e^x)/dx = e^x, the saved output


class Log(Function):
    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, gy):
        return gy / self.x


# -- linear algebra -------------------------------------------------------------------------------------------
class MatMul(Function):
    """Batched matrix product with NumPy's broadcasting of the leading (batch) axes: ``[..., M, K] @ [..., K, N]``."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b  # [..., M, K] @ [..., K, N] -> [..., M, N]

    def backward(self, gy):
        xp = get_array_module(gy)
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = sum_to(gy @ xp.swapaxes(self.b, -1, -2), self.a.shape)  # [..., M, N] @ [..., N, K] -> [..., M, K]
        if self.needs_input_grad[1]:
            gb = sum_to(xp.swapaxes(self.a, -1, -2) @ gy, self.b.shape)  # [..., K, M] @ [..., M, N] -> [..., K, N]
        return ga, gb


# -- shapes ---------------------------------------------------------------------------------------------------
class Reshape(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy):
        return gy.reshape(self.x_shape)


class Transpose(Function):
    def __init__(self, axes):
        self.axes = tuple(axes)

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, gy):
        return gy.transpose(np.argsort([a % gy.ndim for a in self.axes]))  # the inverse permutation (axes may be < 0)


class GetItem(Function):
    """``x[index]``; backward scatters the gradient back (adding where an index repeats)."""

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.x_shape = x.shape
        return x[self.index]

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.x_shape, dtype=gy.dtype)
        if _is_basic(self.index):  # slices and integers never repeat an element: a plain assignment will do
            gx[self.index] = gy
        else:
            xp.add.at(gx, self.index, gy)
        return gx


def _is_basic(index):
    """True for NumPy "basic" indexing (ints, slices, None, Ellipsis), which selects each element at most once."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, slice)) or p is None or p is Ellipsis for p in parts)


class Concat(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        self.sizes = [x.shape[self.axis] for x in xs]
        return get_array_module(xs[0]).concatenate(xs, axis=self.axis)

    def backward(self, gy):
        xp = get_array_module(gy)
        return tuple(xp.split(gy, np.cumsum(self.sizes)[:-1].tolist(), axis=self.axis))


class Sum(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x_shape = x.shape
        return x.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        if self.axis is not None and not self.keepdims:  # put the summed axes back as size 1, then broadcast
            axes = (self.axis,) if isinstance(self.axis, int) else self.axis
            gy = xp.expand_dims(gy, tuple(a % len(self.x_shape) for a in axes))
        return xp.broadcast_to(gy, self.x_shape)


class BroadcastTo(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.x_shape = x.shape
        return get_array_module(x).broadcast_to(x, self.shape)

    def backward(self, gy):
        return sum_to(gy, self.x_shape)


# -- lowercase wrappers (the public, functional form) ------------------------------------------------------------
def add(a, b):
    a = as_tensor(a)
    return Add()(a, _operand(b, a.data))


def sub(a, b):
    a = as_tensor(a)
    return Sub()(a, _operand(b, a.data))


def mul(a, b):
    a = as_tensor(a)
    return Mul()(a, _operand(b, a.data))


def div(a, b):
    a = as_tensor(a)
    return Div()(a, _operand(b, a.data))


def neg(x):
    return Neg()(x)


def pow(x, c):  # noqa: A001 - mirrors the operator it implements
    return Pow(c)(x)


def exp(x):
    return Exp()(x)


def log(x):
    return Log()(x)


def matmul(a, b):
    return MatMul()(a, b)


def reshape(x, shape):
    return x if as_tensor(x).shape == tuple(shape) else Reshape(shape)(x)


def transpose(x, axes):
    return Transpose(axes)(x)


def getitem(x, index):
    return GetItem(index)(x)


def concat(xs, axis=0):
    return Concat(axis)(*xs)


def sum(x, axis=None, keepdims=False):  # noqa: A001
    return Sum(axis, keepdims)(x)


def mean(x, axis=None, keepdims=False):
    x = as_tensor(x)
    axes = range(x.ndim) if axis is None else ((axis,) if isinstance(axis, int) else axis)
    count = int(np.prod([x.shape[a] for a in axes]))
    return mul(sum(x, axis, keepdims), 1.0 / count)


def broadcast_to(x, shape):
    return BroadcastTo(shape)(x)


# -- operators on Tensor ---------------------------------------------------------------------------------------
def _reshape_method(self, *shape):
    return reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)


def _transpose_method(self, *axes):
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
    return transpose(self, axes or tuple(reversed(range(self.ndim))))


Tensor.__add__ = add
Tensor.__radd__ = lambda self, other: add(_operand(other, self.data), self)
Tensor.__sub__ = sub
Tensor.__rsub__ = lambda self, other: sub(_operand(other, self.data), self)
Tensor.__mul__ = mul
Tensor.__rmul__ = lambda self, other: mul(_operand(other, self.data), self)
Tensor.__truediv__ = div
Tensor.__rtruediv__ = lambda self, other: div(_operand(other, self.data), self)
Tensor.__neg__ = neg
Tensor.__pow__ = pow
Tensor.__matmul__ = matmul
Tensor.__rmatmul__ = lambda self, other: matmul(other, self)
Tensor.__getitem__ = getitem
Tensor.reshape = _reshape_method
Tensor.transpose = _transpose_method
Tensor.T = property(lambda self: transpose(self, tuple(reversed(range(self.ndim)))))
Tensor.sum = sum
Tensor.mean = mean
