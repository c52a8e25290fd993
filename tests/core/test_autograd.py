"""Tests for seq2seq/autograd.py: the graph, backward's accumulation rules, no_grad, and operator dispatch.

The first tests are micrograd-style: small scalar expressions whose derivative is worked out by hand in a comment.
"""
import math
import sys
import threading

import numpy as np
import pytest

from seq2seq.core.autograd import Tensor, is_grad_enabled, no_grad
from seq2seq.core.backend import to_numpy
from seq2seq.core.ops import exp, log, sum_to


def scalar(xp, value):
    """A float64 0-d leaf that wants a gradient."""
    return Tensor(xp.asarray(value, dtype=xp.float64), requires_grad=True)


def grad_of(t):
    return float(to_numpy(t.grad))


# ---- scalar graphs with hand-derived derivatives -----------------------------------------------------------------

@pytest.mark.parametrize("x", [-1.5, 0.0, 2.0])
def test_polynomial(xp, x):
    t = scalar(xp, x)
    y = t * t + 3 * t  # y = x^2 + 3x
    y.backward()
    assert float(y) == pytest.approx(x * x + 3 * x)
    assert grad_of(t) == pytest.approx(2 * x + 3)  # dy/dx = 2x + 3


@pytest.mark.parametrize("x", [0.5, 2.0, 3.0])
def test_cubic_through_sub_pow_div(xp, x):
    t = scalar(xp, x)
    y = (t - 1) ** 3 / 2  # y = (x - 1)^3 / 2
    y.backward()
    assert grad_of(t) == pytest.approx(1.5 * (x - 1) ** 2)  # dy/dx = 3 (x - 1)^2 / 2


@pytest.mark.parametrize("x", [-2.0, 0.3, 1.0])
def test_rational_function(xp, x):
    t = scalar(xp, x)
    y = -t / (1 + t * t)  # y = -x / (1 + x^2)
    y.backward()
    assert grad_of(t) == pytest.approx(-(1 - x * x) / (1 + x * x) ** 2)  # quotient rule: -(1 - x^2) / (1 + x^2)^2


@pytest.mark.parametrize("x", [0.5, 2.0])
def test_exp_times_log(xp, x):
    t = scalar(xp, x)
    y = exp(t) * log(t)  # y = e^x ln x
    y.backward()
    assert grad_of(t) == pytest.approx(math.exp(x) * math.log(x) + math.exp(x) / x)  # product rule: e^x ln x + e^x / x


def test_two_variables(xp):
    a, b = scalar(xp, 2.0), scalar(xp, 3.0)
    y = (a * b + b) / a  # y = b + b / a
    y.backward()
    assert float(y) == pytest.approx(4.5)
    assert grad_of(a) == pytest.approx(-3.0 / 4.0)  # dy/da = -b / a^2
    assert grad_of(b) == pytest.approx(1.5)  # dy/db = 1 + 1 / a


def test_micrograd_example(xp):
    # micrograd's README expression, with its printed results: g = 24.7041, dg/da = 138.8338, dg/db = 645.5773
    a, b = scalar(xp, -4.0), scalar(xp, 2.0)
    c = a + b
    d = a * b + b ** 3
    c = c + c + 1
    c = c + 1 + c + (-a)
    d = d + d * 2 + _relu(b + a)
    d = d + 3 * d + _relu(b - a)
    e = c - d
    f = e ** 2
    g = f / 2.0
    g = g + 10.0 / f
    g.backward()
    assert float(g) == pytest.approx(24.7041, abs=1e-4)
    assert grad_of(a) == pytest.approx(138.8338, abs=1e-4)
    assert grad_of(b) == pytest.approx(645.5773, abs=1e-4)


def _relu(t):
    return t * (t.data > 0).astype(t.dtype)  # relu as a Mul by a constant 0/1 mask


# ---- accumulation ----------------------------------------------------------------------------------------------

def test_tensor_used_twice_accumulates(xp):
    t = scalar(xp, 3.0)
    (t * t).backward()  # both inputs of Mul are t: 3 + 3
    assert grad_of(t) == 6.0  # d(x^2)/dx = 2x
    u = scalar(xp, 3.0)
    (u + u + u).backward()
    assert grad_of(u) == 3.0


def test_gradients_accumulate_across_backward_calls(xp):
    t = scalar(xp, 2.0)
    for _ in range(2):  # as torch: .grad adds up until the caller clears it
        (t * t + 3 * t).backward()
    assert grad_of(t) == 2 * 7.0


def test_second_backward_through_a_freed_graph_raises(xp):
    t = scalar(xp, 2.0)
    y = t * t
    y.backward()
    with pytest.raises(RuntimeError, match="already freed"):
        y.backward()  # silently adding nothing would be worse: torch raises too
    assert grad_of(t) == 4.0


def test_backward_on_a_leaf(xp):
    t = Tensor(xp.ones((2, 3)), requires_grad=True)
    t.backward()
    np.testing.assert_array_equal(to_numpy(t.grad), np.ones((2, 3)))


@pytest.mark.parametrize("as_tensor", [False, True], ids=["array", "tensor"])
def test_backward_with_explicit_gradient(xp, as_tensor):
    x = Tensor(xp.arange(6.0).reshape(2, 3), requires_grad=True)
    y = x * 2
    g = xp.arange(6.0).reshape(2, 3) + 1  # a plain ndarray must work: its .data is a memoryview, not the array
    y.backward(Tensor(g) if as_tensor else g)
    np.testing.assert_array_equal(to_numpy(x.grad), 2 * to_numpy(g))


def test_leaf_gradient_does_not_alias_the_seed(xp):
    a = Tensor(xp.zeros(3), requires_grad=True)
    b = Tensor(xp.zeros(3), requires_grad=True)
    g = xp.ones(3)
    (a + b).backward(g)
    g[0] = 5.0  # the caller's array is the caller's
    assert to_numpy(a.grad).tolist() == [1.0, 1.0, 1.0]


def test_leaves_given_the_same_array_get_distinct_gradients(xp):
    a = Tensor(xp.zeros((2, 3)), requires_grad=True)
    b = Tensor(xp.zeros((2, 3)), requires_grad=True)
    (a + b).sum().backward()  # Add hands the same gradient array to both inputs
    assert a.grad is not b.grad
    a.grad += 1  # an optimizer or clip_grad_norm updating in place
    np.testing.assert_array_equal(to_numpy(b.grad), np.ones((2, 3)))


def test_leaf_gradients_are_writable_arrays_of_their_own(xp):
    a = Tensor(xp.zeros((2, 3)), requires_grad=True)
    b = Tensor(xp.zeros((3, 2)), requires_grad=True)
    c = Tensor(xp.zeros((2, 3)), requires_grad=True)
    (a + b.reshape(2, 3) + c.sum()).sum().backward()  # Sum: a read-only broadcast view; Reshape: a view of a's
    a.grad *= 3
    c.grad *= 3
    np.testing.assert_array_equal(to_numpy(b.grad), np.ones((3, 2)))
    np.testing.assert_array_equal(to_numpy(c.grad), np.full((2, 3), 18.0))  # 6 terms of c.sum(), times 3


# ---- graph lifetime ---------------------------------------------------------------------------------------------

def test_intermediate_tensors_dropped_by_the_caller_still_get_gradients(xp):
    def loss_of(a, b):
        h = a * b  # only the graph refers to h once this returns
        return (h + 1).sum()

    a = Tensor(xp.asarray([1.0, 2.0]), requires_grad=True)
    b = Tensor(xp.asarray([3.0, 4.0]), requires_grad=True)
    loss_of(a, b).backward()
    assert to_numpy(a.grad).tolist() == [3.0, 4.0]  # d/da sum(a b + 1) = b
    assert to_numpy(b.grad).tolist() == [1.0, 2.0]


def test_intermediate_with_two_consumers_survives_the_first_release(xp):
    def loss_of(x):
        h = x * 2  # consumed by Exp and by Mul; whichever runs backward first is released before h's creator runs
        return (exp(h) + h * h).sum()

    x = Tensor(xp.asarray([0.5, -1.0]), requires_grad=True)
    loss_of(x).backward()
    xs = np.array([0.5, -1.0])
    np.testing.assert_allclose(to_numpy(x.grad), 2 * np.exp(2 * xs) + 8 * xs)  # y = e^{2x} + 4x^2


def test_long_chain_does_not_hit_the_recursion_limit(xp):
    x = scalar(xp, 1.0)
    y = x
    n = max(5000, 2 * sys.getrecursionlimit())
    for _ in range(n):
        y = y + 1.0
    y.backward()
    assert float(y) == n + 1 and grad_of(x) == 1.0


def test_only_inputs_that_require_grad_receive_one(xp):
    a = Tensor(xp.ones(3), requires_grad=True)
    frozen = Tensor(xp.full(3, 2.0))
    (a * frozen).sum().backward()
    assert frozen.grad is None and to_numpy(a.grad).tolist() == [2.0, 2.0, 2.0]
    y = Tensor(xp.ones(3)) * frozen
    assert not y.requires_grad and y.creator is None


def test_backward_without_grad_raises(xp):
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(xp.ones(())).backward()


# ---- no_grad ----------------------------------------------------------------------------------------------------

def test_no_grad_records_nothing(xp):
    x = Tensor(xp.ones(3), requires_grad=True)
    with no_grad():
        y = (x * 2 + 1).sum()
    assert y.creator is None and not y.requires_grad
    with pytest.raises(RuntimeError):
        y.backward()


def test_no_grad_is_reentrant_and_restores_state_after_an_exception():
    assert is_grad_enabled()
    with no_grad():
        with no_grad():
            assert not is_grad_enabled()
        assert not is_grad_enabled()  # the inner exit restores the outer state, not "enabled"
    assert is_grad_enabled()
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert is_grad_enabled()


def test_no_grad_belongs_to_the_thread_that_enters_it():
    """As in torch: one thread inside no_grad (generating, say) leaves another's graph recording, and a new thread
    starts with grad enabled whatever the thread that started it is doing."""
    inside, checked = threading.Event(), threading.Event()
    seen = {}

    def generating_thread():
        with no_grad():
            inside.set()
            checked.wait(timeout=10)
            seen["other thread, inside"] = is_grad_enabled()
        seen["other thread, after"] = is_grad_enabled()

    worker = threading.Thread(target=generating_thread)
    worker.start()
    assert inside.wait(timeout=10)
    try:
        assert is_grad_enabled()  # this thread is not inside the other's no_grad
        x = Tensor(np.ones(3), requires_grad=True)
        (x * 2).sum().backward()  # so it records, and backward works
        np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])
    finally:
        checked.set()
        worker.join()
    assert seen == {"other thread, inside": False, "other thread, after": True}

    with no_grad():
        started = []
        thread = threading.Thread(target=lambda: started.append(is_grad_enabled()))
        thread.start()
        thread.join()
    assert started == [True]


# ---- operators, dtypes, detach ------------------------------------------------------------------------------------

@pytest.mark.parametrize("op, expected_grad", [
    (lambda arr, t: arr * t, lambda arr: arr),  # Tensor.__rmul__: d(c x)/dx = c
    (lambda arr, t: arr + t, lambda arr: np.ones_like(arr)),
    (lambda arr, t: arr - t, lambda arr: -np.ones_like(arr)),
    (lambda arr, t: arr / t, lambda arr: -arr / 4.0),  # d(c / x)/dx = -c / x^2 at x = 2
], ids=["mul", "add", "sub", "div"])
def test_ndarray_on_the_left_reaches_the_tensor_operator(xp, op, expected_grad):
    arr = xp.asarray([1.0, -2.0, 3.0])
    t = Tensor(xp.full(3, 2.0), requires_grad=True)
    y = op(arr, t)  # __array_priority__ makes NumPy defer to Tensor's reflected operator
    assert isinstance(y, Tensor) and y.requires_grad
    y.sum().backward()
    np.testing.assert_allclose(to_numpy(t.grad), expected_grad(to_numpy(arr)))


def test_ndarray_matmul_tensor(xp):
    a = xp.asarray(np.arange(6.0).reshape(2, 3))
    t = Tensor(xp.ones((3, 4)), requires_grad=True)
    y = a @ t
    assert isinstance(y, Tensor)
    y.sum().backward()
    np.testing.assert_allclose(to_numpy(t.grad), np.repeat(to_numpy(a).sum(0)[:, None], 4, axis=1))


@pytest.mark.parametrize("op", [
    lambda t: t * 0.5, lambda t: 0.5 * t, lambda t: t + 1.0, lambda t: 1.0 - t, lambda t: t / 3.0,
    lambda t: 2.0 / t, lambda t: t ** 2, lambda t: t.mean(), lambda t: np.float64(2.0) * t,
    lambda t: np.ones(3) * t,
], ids=["mul", "rmul", "add", "rsub", "div", "rdiv", "pow", "mean", "np_scalar", "np_float64_array"])
def test_float32_stays_float32_with_python_numbers(op):
    t = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    y = op(t)
    assert y.dtype == np.float32
    y.sum().backward()
    assert t.grad.dtype == np.float32


def test_detach_cuts_the_graph_and_shares_data(xp):
    x = Tensor(xp.asarray([1.0, 2.0]), requires_grad=True)
    h = x * 3
    d = h.detach()
    assert d.creator is None and not d.requires_grad and d.data is h.data
    (x * d).sum().backward()  # d is a constant: d/dx sum(x * d) = d, nothing flows back through h
    assert to_numpy(x.grad).tolist() == [3.0, 6.0]


# ---- sum_to ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("g_shape, shape", [
    ((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 1)), ((2, 3, 4), (1, 3, 4)),
    ((2, 3, 4), (2, 1, 4)), ((2, 3, 4), (1, 1, 1)), ((2, 3, 4), ()), ((5,), (1,)), ((1, 5), (5,)),
])
def test_sum_to_is_the_adjoint_of_broadcasting(xp, rng, g_shape, shape):
    g = rng.standard_normal(g_shape)
    v = rng.standard_normal(shape)
    out = to_numpy(sum_to(xp.asarray(g), shape))
    assert out.shape == shape
    # <sum_to(g), v> = <g, broadcast(v)> for every v: sum_to undoes exactly what broadcasting did
    assert np.sum(out * v) == pytest.approx(np.sum(g * np.broadcast_to(v, g_shape)))
    reduced = g.sum(axis=tuple(range(len(g_shape) - len(shape))))
    reduced = reduced.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)
    np.testing.assert_allclose(out, reduced.reshape(shape))
