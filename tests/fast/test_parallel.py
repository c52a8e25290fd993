"""Tests for seq2seq/parallel.py: blocks cover every row once, results do not depend on block size or threads,
errors from a block reach the caller, scratch buffers are per name and per thread."""
import threading
import time

import numpy as np
import pytest

from seq2seq.fast.cpu import parallel
from seq2seq.nn.activations import Gelu
from seq2seq.nn.attention import Attention
from seq2seq.nn.functional import LayerNorm
from seq2seq.nn.loss import CrossEntropy


@pytest.fixture
def threads(request):
    before = parallel.num_threads()
    parallel.set_num_threads(request.param)
    yield request.param
    parallel.set_num_threads(before)


@pytest.mark.parametrize("rows,row_values,block_values", [(1, 5, 16), (10, 5, 16), (10, 5, 15), (7, 100, 16),
                                                          (0, 5, 16)])
def test_row_blocks_cover_every_row_once(rows, row_values, block_values):
    blocks = parallel.row_blocks(rows, row_values, block_values=block_values)
    covered = [i for block in blocks for i in range(rows)[block]]
    assert covered == list(range(rows))
    assert all(block.stop - block.start >= 1 for block in blocks)


def test_row_blocks_share_the_rows_evenly_and_give_two_cores_a_block_each_from_a_quarter_block_on():
    assert parallel.row_blocks(128, 3072, block_values=1 << 18) == [slice(0, 64), slice(64, 128)]  # not 85 + 43
    assert parallel.row_blocks(67, 3072, block_values=1 << 18) == [slice(0, 34), slice(34, 67)]  # 206K values
    assert parallel.row_blocks(20, 3072, block_values=1 << 18) == [slice(0, 20)]  # under a quarter: one block
    assert parallel.row_blocks(1, 1 << 20, block_values=1 << 18) == [slice(0, 1)]  # never less than a row


@pytest.mark.parametrize("threads", [1, 2, 4], indirect=True)
def test_for_each_block_returns_results_in_block_order(threads):
    seen = []

    def block(b):
        seen.append(threading.get_ident())
        time.sleep(0.005)  # long enough that no thread can finish its run before the last one is handed out
        return b.start, b.stop

    results = parallel.for_each_block(block, 100, 10, block_values=30)
    assert results == [(i, min(i + 3, 100)) for i in range(0, 100, 3)]
    assert (len(set(seen)) > 1) == (threads > 1)  # the runs of blocks went to other threads too


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
def test_an_error_in_a_block_reaches_the_caller(threads):
    def fail_late(block):
        if block.start >= 90:
            raise ValueError(f"bad block {block.start}")
    with pytest.raises(ValueError, match="bad block"):
        parallel.for_each_block(fail_late, 100, 10, block_values=30)


@pytest.mark.parametrize("threads", [2], indirect=True)
def test_blocks_inside_blocks_and_callers_side_by_side_run_on_their_own_threads(threads):
    """The workers serve one caller at a time (workers.py): a caller that finds them taken runs its blocks itself,
    so blocks that run blocks, and two Python threads running blocks at once, finish with every result."""
    def inner(block):
        return block.start * 2

    def outer(block):
        return parallel.for_each_block(inner, 6, 1, block_values=2)

    assert parallel.for_each_block(outer, 4, 1, block_values=1) == [[0, 4, 8]] * 4
    results = {}

    def caller(name):
        results[name] = parallel.for_each_block(lambda b: (time.sleep(0.002), b.start)[1], 40, 1, block_values=1)

    callers = [threading.Thread(target=caller, args=(name,)) for name in range(4)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join()
    assert results == {name: list(range(40)) for name in range(4)}


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
@pytest.mark.parametrize("threads", [2], indirect=True)
def test_a_forked_child_starts_workers_of_its_own(threads):
    import os  # noqa: PLC0415
    parallel.for_each_block(lambda b: None, 4, 1, block_values=1)  # the parent's workers exist
    pid = os.fork()
    if pid == 0:  # the child: blocks still run on two threads, with workers started here
        seen, both = set(), threading.Barrier(2, timeout=20)  # the first and last blocks wait for each other:
        # they can only both arrive on two threads (a sleep instead would race a busy machine's scheduler)

        def block(b):
            seen.add(threading.get_ident())
            if b.start in (0, 3):
                both.wait()
            return b.start

        try:
            ok = parallel.for_each_block(block, 4, 1, block_values=1) == [0, 1, 2, 3]
        except threading.BrokenBarrierError:
            ok = False
        os._exit(0 if ok and len(seen) == 2 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def test_scratch_is_reused_per_name_and_private_to_a_thread():
    a1, b1 = parallel.scratch((4, 3), np.float32, name="test_a", count=2)
    (a2,) = parallel.scratch((2, 3), np.float32, name="test_a")
    (c,) = parallel.scratch((4, 3), np.float32, name="test_c")
    assert np.shares_memory(a1, a2) and not np.shares_memory(a1, b1) and not np.shares_memory(a1, c)
    other = []
    thread = threading.Thread(target=lambda: other.extend(parallel.scratch((4, 3), np.float32, name="test_a")))
    thread.start()
    thread.join()
    assert not np.shares_memory(a1, other[0])
    (big,) = parallel.scratch((1000, 1000), np.float64, name="test_a")  # another dtype, and larger: grows
    assert big.shape == (1000, 1000) and big.dtype == np.float64


def test_set_num_threads():
    before = parallel.num_threads()
    try:
        parallel.set_num_threads(3)
        assert parallel.num_threads() == 3
        parallel.set_num_threads(0)
        assert parallel.num_threads() == 1
    finally:
        parallel.set_num_threads(before)


def _run_ops(rng):
    """Forward and backward of every blockwise op on arrays spanning many blocks; all outputs and gradients."""
    x = rng.standard_normal((6, 11, 24)).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    gelu = Gelu()
    results += [gelu.forward(x), gelu.backward(gy)]
    norm = LayerNorm(1e-5)
    norm.needs_input_grad = (True, True, True)
    gamma, beta = rng.standard_normal(24).astype(np.float32), rng.standard_normal(24).astype(np.float32)
    results += [norm.forward(x, gamma, beta), *norm.backward(gy)]
    labels = rng.integers(0, 24, 66)
    labels[::5] = -100
    loss = CrossEntropy(labels)
    results += [loss.forward(x.reshape(66, 24)), loss.backward(np.float32(1.0))]
    q, k, v = (rng.standard_normal((6, 2, 5, 4)).astype(np.float32) for _ in range(3))
    attention = Attention(None, dropout_p=0.3, rng=np.random.default_rng(0))
    attention.records = True
    results += [attention.forward(q, k, v), *attention.backward(rng.standard_normal((6, 2, 5, 4)).astype(np.float32))]
    return results


@pytest.mark.parametrize("threads", [1, 2, 3], indirect=True)
@pytest.mark.parametrize("block_values", [24, 100, 1 << 17])
def test_results_are_bit_identical_for_any_blocks_and_threads(monkeypatch, threads, block_values):
    import seq2seq.fast.cpu.attention
    monkeypatch.setattr(seq2seq.fast.cpu.attention, "_BLAS_SPLITS_FROM", 50)  # attention's queries in chunks of 2
    monkeypatch.setattr(seq2seq.fast.cpu.attention, "can_set_blas_threads", lambda: False)  # OpenBLAS not held
    parallel.set_num_threads(2)
    expected = _run_ops(np.random.default_rng(0))  # default blocks, two threads
    parallel.set_num_threads(threads)
    monkeypatch.setattr(parallel, "BLOCK_VALUES", block_values)
    # (attention's own block size stays: it decides where the queries are cut, and so the order of the key and
    # value gradients' sums over query chunks; tests/fast/test_fast_cpu_attention.py varies it and the threads)
    for got, want in zip(_run_ops(np.random.default_rng(0)), expected):
        if got.ndim == 1 and got.shape == (24,):  # gamma/beta gradients: sums over rows, added block by block
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("value", ["0", "two", "-1", ""])
def test_a_bad_thread_count_in_the_environment_is_named(monkeypatch, value):
    from seq2seq.core.errors import InputError
    monkeypatch.setenv("SEQ2SEQ_NUM_THREADS", value)
    monkeypatch.setattr(parallel, "_num_threads", None)
    with pytest.raises(InputError, match="SEQ2SEQ_NUM_THREADS"):
        parallel.num_threads()


def test_the_thread_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("SEQ2SEQ_NUM_THREADS", "3")
    monkeypatch.setattr(parallel, "_num_threads", None)
    assert parallel.num_threads() == 3


@pytest.mark.parametrize("has_vecdot", [True, False])
def test_row_dots_with_and_without_vecdot(rng, has_vecdot, monkeypatch):
    a, b = rng.standard_normal((5, 7, 9)), rng.standard_normal((5, 7, 9))
    if not has_vecdot:  # NumPy before 2.0 has no vecdot
        monkeypatch.setattr(parallel, "_vecdot", None)
    np.testing.assert_allclose(parallel.row_dots(a, b), (a * b).sum(axis=-1), rtol=1e-12)
    np.testing.assert_allclose(parallel.row_dots(a, np.ones(9)), a.sum(axis=-1), rtol=1e-12)  # broadcast row


def test_row_dots_of_a_row_do_not_depend_on_the_rows_around_it(rng):
    x = rng.standard_normal((341, 384)).astype(np.float32)
    whole = parallel.row_dots(x, x)
    for start, stop in [(0, 1), (5, 12), (100, 341)]:
        np.testing.assert_array_equal(parallel.row_dots(x[start:stop], x[start:stop]), whole[start:stop])
