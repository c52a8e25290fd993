"""Tests for seq2seq/fast/cpu/thin.py (products of few rows in column chunks) and what feeds it: Linear's
column-major weights (nn.layers.thin_input_layout) and the fused projections (nn.functional.Linears).

The chunked products must equal the plain ``x @ W + b``, be bit-identical for any number of threads and any way
the chunks fall to the threads, and never use a weight as it was before an optimizer updated it in place.
"""
import numpy as np
import pytest

from seq2seq.core.autograd import Tensor, no_grad
from seq2seq.fast import cpu as fast_cpu
from seq2seq.fast.cpu import parallel, thin
from seq2seq.nn import functional
from seq2seq.nn.layers import Linear, thin_input_layout
from seq2seq.nn.weights import ParamStore
from seq2seq.training.optim import AdamW


@pytest.fixture
def threads():
    """Set the number of threads for the test; restored after it."""
    before = parallel.num_threads()
    yield parallel.set_num_threads
    parallel.set_num_threads(before)


def weights(rng, shapes, dtype=np.float32):
    """Row-major ``[in, out]`` weights (as thin products read them) and biases ``[out]``."""
    return [(rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape[1]).astype(dtype))
            for shape in shapes]


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 130, thin.MAX_ROWS])
@pytest.mark.parametrize("shapes", [[(16, 1000)], [(64, 40), (64, 900), (64, 7)], [(300, 300)]],
                         ids=["one", "three", "small"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_thin_products_equal_the_plain_products(rng, rows, shapes, bias):
    pairs = [(w, b if bias else None) for w, b in weights(rng, shapes)]
    x = rng.standard_normal((rows, shapes[0][0])).astype(np.float32)
    got = thin.thin_products(x, pairs)
    for y, (w, b) in zip(got, pairs):
        want = x @ w + (0 if b is None else b)
        assert y.shape == want.shape and y.dtype == want.dtype and y.flags.c_contiguous
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_thin_products_are_bit_identical_for_any_threads(monkeypatch, rng, threads, rows):
    pairs = weights(rng, [(96, 1100), (96, 500), (96, 33)])
    x = rng.standard_normal((rows, 96)).astype(np.float32)
    monkeypatch.setattr(thin, "PIECES", 7)
    monkeypatch.setattr(thin, "MIN_CHUNK", 64)
    monkeypatch.setattr(thin, "SMALL", 1)  # spread even small weights over the threads
    threads(1)
    expected = thin.thin_products(x, pairs)
    for n in (2, 3, 5):
        threads(n)
        for got, want in zip(thin.thin_products(x, pairs), expected):
            np.testing.assert_array_equal(got, want)


def test_one_row_is_one_whole_product_per_weight_on_this_thread(monkeypatch, rng, threads):
    """A single row is bound by reading the weight: each weight whole (one contiguous sweep), no chunks, no worker
    woken, so the result is exactly the plain product's."""
    pairs = weights(rng, [(96, 3000), (96, 700)])
    x = rng.standard_normal((1, 96)).astype(np.float32)
    monkeypatch.setattr(thin, "SMALL", 1)  # large enough to be shared out, were it more than one row
    monkeypatch.setattr(thin, "for_each_task", lambda *args: pytest.fail("one row went to the workers"))
    threads(2)
    for y, (w, b) in zip(thin.thin_products(x, pairs), pairs):
        np.testing.assert_array_equal(y, (x @ w) + b)


@pytest.mark.parametrize("width", [1, 63, 384, 385, 768, 3072, 30522])
def test_chunks_cover_the_columns_in_whole_aligned_pieces(width):
    slices = thin.chunks(width)
    assert [i for s in slices for i in range(s.start, s.stop)] == list(range(width))
    assert len(slices) <= thin.PIECES
    assert all(s.start % thin.ALIGN == 0 for s in slices)
    assert all(s.stop - s.start >= thin.MIN_CHUNK for s in slices[:-1])


def test_thin_products_of_one_weight_equal_those_of_several(rng):
    """A weight's product does not depend on the weights it shares the cores with (fused q/k/v = separate)."""
    pairs = weights(rng, [(48, 700), (48, 300)])
    x = rng.standard_normal((2, 48)).astype(np.float32)
    together = thin.thin_products(x, pairs)
    for pair, y in zip(pairs, together):
        np.testing.assert_array_equal(thin.thin_products(x, [pair])[0], y)


def test_linear_layers_keep_column_major_weights_whose_transpose_is_the_thin_layout():
    store = ParamStore(seed=0)
    layer = Linear(store.view("dense"), 16, 24, std=0.02)
    assert layer.weight.shape == (24, 16) and layer.weight.data.flags.f_contiguous
    assert thin.is_thin_layout(layer.weight.data.T)
    c_ordered = np.ascontiguousarray(layer.weight.data)
    layer.weight.data = c_ordered
    assert thin_input_layout(layer.weight).data.flags.f_contiguous
    np.testing.assert_array_equal(layer.weight.data, c_ordered)  # the same values


@pytest.mark.parametrize("layout", ["column_major", "row_major"])
@pytest.mark.parametrize("rows", [1, 5, thin.MAX_ROWS + 1])
def test_fused_linears_equal_separate_linears_and_the_plain_form(rng, layout, rows):
    order = "F" if layout == "column_major" else "C"
    ws = [np.asarray(rng.standard_normal((out, 32)), dtype=np.float32, order=order) for out in (32, 48, 32)]
    bs = [rng.standard_normal(w.shape[0]).astype(np.float32) for w in ws]
    bs[1] = None  # a layer without a bias
    x = rng.standard_normal((1, rows, 32)).astype(np.float32)
    gys = [rng.standard_normal((1, rows, w.shape[0])).astype(np.float32) for w in ws]

    def run(fused_op):
        tx = Tensor(x, requires_grad=True)
        layers = [type("Layer", (), dict(weight=Tensor(w.copy(order="K"), requires_grad=True),
                                         bias=None if b is None else Tensor(b.copy(), requires_grad=True)))
                  for w, b in zip(ws, bs)]
        if fused_op:
            ys = functional.linears(tx, layers)
        else:
            ys = [functional.linear(tx, layer.weight, layer.bias) for layer in layers]
        sum((y * gy).sum() for y, gy in zip(ys, gys)).backward()  # one backward through the fused op
        grads = [tx.grad]
        for layer in layers:
            grads += [layer.weight.grad, None if layer.bias is None else layer.bias.grad]
        return [y.data for y in ys], grads

    fused, separate = run(True), run(False)
    for got, want in zip(fused[0] + fused[1], separate[0] + separate[1]):
        if want is None:
            assert got is None
        elif got.shape == x.shape:  # the input's gradient: a sum, added up in another order
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
        else:
            np.testing.assert_array_equal(got, want)  # each output and weight gradient: the same arithmetic
    with fast_cpu.disabled():
        plain = run(True)
    for got, want in zip(fused[0] + fused[1], plain[0] + plain[1]):
        if want is not None:  # products and sums: relative to their size
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_thin_products_never_use_a_weight_as_it_was_before_an_optimizer_step(rng):
    """No copy of a weight is kept for the fused or chunked products: after AdamW updates the parameters in place,
    the next decode-sized product uses the new values (what the plain form computes from them)."""
    store = ParamStore(seed=0)
    layers = [Linear(store.view(name), 32, 40, std=0.5) for name in ("q", "k", "v")]
    x = rng.standard_normal((2, 32)).astype(np.float32)
    with no_grad():
        before = [y.data for y in functional.linears(x, layers)]
    params = [p for layer in layers for p in (layer.weight, layer.bias)]
    loss = sum((y * y).sum() for y in functional.linears(Tensor(x), layers))
    loss.backward()
    AdamW(params, lr=0.1).step()
    with no_grad():
        after = [y.data for y in functional.linears(x, layers)]
        with fast_cpu.disabled():
            plain = [y.data for y in functional.linears(x, layers)]
    for b, a, p in zip(before, after, plain):
        assert not np.allclose(a, b)
        np.testing.assert_allclose(a, p, rtol=1e-5, atol=1e-5)


def test_one_row_by_a_weight_past_one_row_spread_goes_in_chunks_on_every_core(monkeypatch, rng, threads):
    """An LM head's product of one row is spread over the cores in fixed chunks: close to the plain product, and
    the same bits for any number of threads."""
    monkeypatch.setattr(thin, "ONE_ROW_SPREAD", 96 * 3000)
    pairs = weights(rng, [(96, 3000), (96, 700)])  # the first that large, the second not
    x = rng.standard_normal((1, 96)).astype(np.float32)
    products = thin.ThinProducts(1, pairs, dtype=np.float32)
    assert products.threaded and len(products.tasks) == len(thin.chunks(3000)) + 1
    threads(1)
    expected = [y.copy() for y in products(x)]
    for (w, b), y in zip(pairs, expected):
        np.testing.assert_allclose(y, x @ w + b, rtol=1e-5, atol=1e-4)
    for n in (2, 3):
        threads(n)
        for got, want in zip(thin.thin_products(x, pairs), expected):
            np.testing.assert_array_equal(got, want)
