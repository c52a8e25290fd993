"""Finite-difference gradient checks: is an op's hand-written ``backward`` the derivative of its ``forward``?

``check_grad(f, *arrays)`` runs ``f`` on Tensors made from ``arrays``, back-propagates, and compares each input's
gradient with central differences ``(f(x + eps) - f(x - eps)) / (2 eps)``, one element at a time. It is DeZero's
``gradient_check`` (and Chainer's ``check_backward``, torch's ``gradcheck``), usable on your own ops::

    from seq2seq.core.gradcheck import check_grad
    check_grad(lambda x, w: linear(x, w), rng.standard_normal((4, 3)), rng.standard_normal((5, 3)))

Integer or otherwise non-differentiable arguments (labels, ids, masks) are passed by closure, as ``labels`` here:
``check_grad(lambda logits: cross_entropy(logits, labels), logits)``.

Why float64: a central difference has a truncation error of order eps^2 and a rounding error of order
(machine epsilon * |f|) / eps. In float32 (machine epsilon 1e-7) no eps makes both small at once, so the check is
flaky; in float64 (1e-16) eps = 1e-6 gives about 1e-10, far below any real bug. Every input is therefore cast to
float64 here, so the op must compute in the dtype it is given.

A non-scalar output ``y`` is reduced to ``sum(y * r)`` with a fixed random ``r``: every output element then
counts, with a different weight, so a gradient that is wrong for one element (or swaps two) cannot cancel out in a
plain sum. The analytic side is ``y.backward(r)``, the same number without going through other ops' backward.
"""
import numpy as np

from .autograd import Tensor, no_grad
from .backend import get_array_module, to_numpy


def _value(y):
    """The raw array of a Tensor, or the array itself (never ``getattr(y, "data")``: an ndarray's is a memoryview)."""
    return y.data if isinstance(y, Tensor) else y


def numerical_grad(f, inputs, *, eps=1e-6):
    """Central differences of the scalar ``f(*tensors)`` with respect to each array in ``inputs``.

    ``inputs`` are arrays (or Tensors, whose data is used); they are perturbed in place one element at a time and
    restored. Returns one float64 array per input, of its shape. Runs under ``no_grad``: no graph is built.
    """
    arrays = [_value(x) for x in inputs]
    grads = []
    with no_grad():
        def evaluate():
            y = _value(f(*(Tensor(a) for a in arrays)))
            if y.size != 1:
                raise ValueError(f"numerical_grad needs a scalar-valued f, got shape {y.shape}")
            return float(y.reshape(()))

        for x in arrays:
            xp = get_array_module(x)
            grad = xp.zeros(x.shape, dtype=xp.float64)
            for index in np.ndindex(*x.shape):
                original = x[index].item()
                x[index] = original + eps
                plus = evaluate()
                x[index] = original - eps
                minus = evaluate()
                x[index] = original
                grad[index] = (plus - minus) / (2 * eps)  # error O(eps^2) from the Taylor series
            grads.append(grad)
    return grads


def check_grad(f, *arrays, eps=1e-6, rtol=1e-5, atol=1e-7, seed=0):
    """Assert that ``f``'s analytic gradients match finite differences for every input; return True.

    ``f(*tensors)`` returns a Tensor of any shape; ``arrays`` are the points to check at (copied to float64).
    Raises AssertionError showing both gradients and the largest difference when one input's gradient is off.
    """
    xp = get_array_module(*arrays)
    arrays = [xp.array(_value(a), dtype=xp.float64) for a in arrays]  # copies: the caller's arrays stay untouched
    tensors = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    y = f(*tensors)
    shape = _value(y).shape
    # a fixed random projection (ones for a scalar): every output element counts, each with its own weight
    r = np.ones(shape) if len(shape) == 0 else np.random.default_rng(seed).standard_normal(shape)
    r = xp.asarray(r)
    if isinstance(y, Tensor) and y.requires_grad:
        y.backward(r)
    analytic = [xp.zeros(a.shape) if t.grad is None else t.grad for a, t in zip(arrays, tensors)]
    numeric = numerical_grad(lambda *ts: (_value(f(*ts)) * r).sum(), arrays, eps=eps)

    for i, (a, n) in enumerate(zip(analytic, numeric)):
        a, n = to_numpy(a).astype(np.float64), to_numpy(n)
        if a.shape != n.shape or not np.allclose(a, n, rtol=rtol, atol=atol):
            error = np.abs(a - n).max() if a.shape == n.shape else float("nan")
            raise AssertionError(
                f"gradient of input {i} (shape {n.shape}) does not match finite differences: "
                f"max abs error {error:.3e} (rtol={rtol}, atol={atol})\n"
                f"analytic (backward):\n{a}\nnumerical (central differences, eps={eps}):\n{n}")
    return True
