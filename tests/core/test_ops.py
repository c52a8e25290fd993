"""Tests for seq2seq/ops.py: every primitive's forward equals its NumPy expression, and its backward passes a
finite-difference check in float64 (seq2seq.core.gradcheck), across shapes, broadcasting and backends.

Each case is one row of ``CASES``: the op applied to Tensors, the same expression in NumPy, and the input shapes.
"""
from typing import Callable, NamedTuple

import numpy as np
import pytest

from seq2seq.core import ops
from seq2seq.core.autograd import Function, Tensor
from seq2seq.core.backend import get_array_module, to_numpy
from seq2seq.core.gradcheck import check_grad, numerical_grad


class Case(NamedTuple):
    op: Callable  # on Tensors
    reference: Callable  # on NumPy arrays
    shapes: tuple
    positive: tuple = ()  # indices of inputs drawn from [0.5, 2] (denominators, log, fractional powers)


def _ids(x, values):
    """An integer index array in the array module of ``x`` (CuPy wants CuPy indices)."""
    return get_array_module(x).asarray(values)


BROADCASTS = [((2, 3), (2, 3)), ((2, 3), (3,)), ((3,), (2, 3)), ((2, 1, 4), (3, 1)), ((2, 3), ()), ((), (2, 3))]


def _binary(name, op, reference, positive=()):
    return {f"{name}-{a}-{b}": Case(op, reference, (a, b), positive) for a, b in BROADCASTS}


CASES = {
    **_binary("add", lambda a, b: a + b, np.add),
    **_binary("sub", lambda a, b: a - b, np.subtract),
    **_binary("mul", lambda a, b: a * b, np.multiply),
    **_binary("div", lambda a, b: a / b, np.divide, positive=(1,)),
    "neg": Case(lambda x: -x, np.negative, ((2, 3),)),
    "pow2": Case(lambda x: x ** 2, lambda x: x ** 2, ((2, 3),)),
    "pow3": Case(lambda x: ops.pow(x, 3), lambda x: x ** 3, ((4,),)),
    "pow-half": Case(lambda x: x ** 0.5, np.sqrt, ((2, 3),), positive=(0,)),
    "pow-minus1": Case(lambda x: x ** -1, np.reciprocal, ((2, 3),), positive=(0,)),
    "exp": Case(ops.exp, np.exp, ((2, 3),)),
    "log": Case(ops.log, np.log, ((2, 3),), positive=(0,)),
    "matmul": Case(lambda a, b: a @ b, np.matmul, ((3, 4), (4, 5))),
    "matmul-batched": Case(ops.matmul, np.matmul, ((2, 3, 4), (2, 4, 5))),
    "matmul-broadcast-rhs": Case(ops.matmul, np.matmul, ((2, 3, 4), (4, 5))),
    "matmul-broadcast-lhs": Case(ops.matmul, np.matmul, ((3, 4), (2, 4, 5))),
    "matmul-broadcast-batch": Case(ops.matmul, np.matmul, ((2, 1, 3, 4), (3, 4, 2))),
    "reshape": Case(lambda x: x.reshape(6, 4), lambda x: x.reshape(6, 4), ((2, 3, 4),)),
    "reshape-minus1": Case(lambda x: ops.reshape(x, (-1,)), lambda x: x.reshape(-1), ((2, 3, 4),)),
    "reshape-tuple": Case(lambda x: x.reshape((4, 3, 2)), lambda x: x.reshape(4, 3, 2), ((2, 3, 4),)),
    "transpose-T": Case(lambda x: x.T, lambda x: x.T, ((3, 4),)),
    "transpose-102": Case(lambda x: x.transpose(1, 0, 2), lambda x: x.transpose(1, 0, 2), ((2, 3, 4),)),
    "transpose-201": Case(lambda x: ops.transpose(x, (2, 0, 1)), lambda x: x.transpose(2, 0, 1), ((2, 3, 4),)),
    "transpose-negative": Case(lambda x: ops.transpose(x, (-1, 0, -2)), lambda x: x.transpose(-1, 0, -2),
                               ((2, 3, 4),)),
    "transpose-heads": Case(lambda x: ops.transpose(x, (0, 2, 1, 3)), lambda x: x.transpose(0, 2, 1, 3),
                            ((2, 3, 2, 2),)),
    "getitem-int": Case(lambda x: x[1], lambda x: x[1], ((3, 4),)),
    "getitem-slices": Case(lambda x: x[:, 1:3], lambda x: x[:, 1:3], ((3, 4),)),
    "getitem-step": Case(lambda x: x[::-2, ::2], lambda x: x[::-2, ::2], ((5, 4),)),
    "getitem-ellipsis": Case(lambda x: x[..., -1], lambda x: x[..., -1], ((2, 3, 4),)),
    "getitem-repeated": Case(lambda x: x[_ids(x, [0, 2, 0, 0])], lambda x: x[[0, 2, 0, 0]], ((3, 4),)),
    "getitem-pairs": Case(lambda x: x[_ids(x, [0, 1, 1]), _ids(x, [2, 2, 2])], lambda x: x[[0, 1, 1], [2, 2, 2]],
                          ((3, 4),)),
    "concat-0": Case(lambda a, b: ops.concat([a, b]), lambda a, b: np.concatenate([a, b]), ((2, 3), (4, 3))),
    "concat-1": Case(lambda a, b, c: ops.concat([a, b, c], axis=1), lambda a, b, c: np.concatenate([a, b, c], 1),
                     ((2, 1), (2, 3), (2, 2))),
    "concat-minus1": Case(lambda a, b: ops.concat([a, b], axis=-1), lambda a, b: np.concatenate([a, b], -1),
                          ((2, 2, 3), (2, 2, 1))),
    "broadcast_to-prepend": Case(lambda x: ops.broadcast_to(x, (2, 3)), lambda x: np.broadcast_to(x, (2, 3)),
                                 ((3,),)),
    "broadcast_to-stretch": Case(lambda x: ops.broadcast_to(x, (2, 4)), lambda x: np.broadcast_to(x, (2, 4)),
                                 ((2, 1),)),
    "broadcast_to-scalar": Case(lambda x: ops.broadcast_to(x, (3, 2)), lambda x: np.broadcast_to(x, (3, 2)),
                                ((),)),
    "broadcast_to-both": Case(lambda x: ops.broadcast_to(x, (4, 2, 3)), lambda x: np.broadcast_to(x, (4, 2, 3)),
                              ((1, 3),)),
}
for _axis in [None, 0, 1, -1, (0, 2)]:
    for _keepdims in [False, True]:
        CASES[f"sum-{_axis}-{_keepdims}"] = Case(lambda x, a=_axis, k=_keepdims: x.sum(a, k),
                                                 lambda x, a=_axis, k=_keepdims: x.sum(axis=a, keepdims=k),
                                                 ((2, 3, 4),))
        CASES[f"mean-{_axis}-{_keepdims}"] = Case(lambda x, a=_axis, k=_keepdims: ops.mean(x, a, k),
                                                  lambda x, a=_axis, k=_keepdims: x.mean(axis=a, keepdims=k),
                                                  ((2, 3, 4),))


def inputs(rng, case):
    """Host float64 arrays for a case: standard normal, or in [0.5, 2] where the op needs positive inputs."""
    return [rng.uniform(0.5, 2.0, shape) if i in case.positive else rng.standard_normal(shape)
            for i, shape in enumerate(case.shapes)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_numpy(xp, rng, name, dtype):
    case = CASES[name]
    arrays = [a.astype(dtype) for a in inputs(rng, case)]
    y = case.op(*(Tensor(xp.asarray(a)) for a in arrays))
    expected = case.reference(*arrays)
    assert y.shape == expected.shape and y.dtype == dtype
    np.testing.assert_allclose(to_numpy(y.data), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_matches_finite_differences(xp, rng, name):
    case = CASES[name]
    assert check_grad(case.op, *(xp.asarray(a) for a in inputs(rng, case)))


def test_sum_to_shape_of_gradients_for_broadcast_inputs(xp, rng):
    # the gradient of each input has the input's shape, whatever broadcasting did in the forward pass
    a = Tensor(xp.asarray(rng.standard_normal((2, 1, 4))), requires_grad=True)
    b = Tensor(xp.asarray(rng.standard_normal((3, 1))), requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (2, 1, 4) and b.grad.shape == (3, 1)


def test_reshape_to_the_same_shape_adds_no_node(xp):
    x = Tensor(xp.ones((2, 3)), requires_grad=True)
    assert ops.reshape(x, (2, 3)) is x


def test_wrappers_accept_python_numbers(xp):
    x = Tensor(xp.ones(3, dtype=xp.float32), requires_grad=True)
    for y in (ops.add(x, 2), ops.sub(x, 2.0), ops.mul(x, 0.5), ops.div(x, 4)):
        assert y.dtype == np.float32 and y.requires_grad


# ---- the checker itself ---------------------------------------------------------------------------------------------

class _WrongSquare(Function):
    """x^2 with the classic mistake in backward: x instead of 2x."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy):
        return gy * self.x


class _SwappedIdentity(Function):
    """The identity, with a backward that sends each gradient to the wrong element; a plain sum() cannot tell."""

    def forward(self, x):
        return x.copy()

    def backward(self, gy):
        return gy[::-1].copy()


@pytest.mark.parametrize("op", [_WrongSquare, _SwappedIdentity])
def test_check_grad_catches_a_wrong_backward(xp, rng, op):
    with pytest.raises(AssertionError, match="max abs error") as info:
        check_grad(lambda x: op()(x), xp.asarray(rng.standard_normal(4)))
    assert "analytic" in str(info.value) and "numerical" in str(info.value)


def test_numerical_grad_of_a_closed_form(xp):
    x, w = xp.asarray([1.0, -2.0, 3.0]), xp.asarray([0.5, 0.25, 2.0])
    gx, gw = numerical_grad(lambda a, b: (a * a * b).sum(), [x, w])  # d/da = 2 a b, d/db = a^2
    np.testing.assert_allclose(to_numpy(gx), [1.0, -1.0, 12.0], rtol=1e-8)
    np.testing.assert_allclose(to_numpy(gw), [1.0, 4.0, 9.0], rtol=1e-8)
    assert to_numpy(x).tolist() == [1.0, -2.0, 3.0]  # perturbed in place, then restored
