"""The products of a captured decode step (fast/cuda/cublas.py): the column-major cuBLAS arguments that compute a
row-major ``x @ w``, checked on the CPU by carrying them out in NumPy; on a GPU (marker ``gpu``), the ctypes call
itself against ``cupy.matmul``, outside and inside a stream capture."""
import numpy as np
import pytest

from seq2seq.core.errors import InputError
from seq2seq.fast.cuda import cublas


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def weight(rng, k, n, layout):
    """w [K, N] stored row-major ("C"), or column-major ("F": the transpose of a torch-layout [N, K] weight)."""
    if layout == "C":
        return normal(rng, k, n)
    return np.ascontiguousarray(normal(rng, n, k)).T  # [N, K] -> [K, N], F-contiguous


@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("m, k, n", [(1, 5, 7), (3, 4, 6), (4, 1, 3), (2, 6, 1), (5, 8, 8)])
def test_marshalled_gemm_computes_the_row_major_product(rng, m, k, n, layout):
    x, w = normal(rng, m, k), weight(rng, k, n, layout)
    y = np.full((m, n), np.nan, np.float32)
    args = cublas.gemm_arguments(x, w, y)
    assert (args.m, args.n, args.k) == (n, m, k)
    assert args.a is w and args.b is x and args.c is y  # the operands swapped: y^T = w^T x^T
    assert args.transa == (cublas.OP_N if layout == "C" or (k == 1 or n == 1) else cublas.OP_T)
    cublas.column_major_gemm(args)
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)


def test_a_strided_view_of_a_wider_projection_goes_in_with_its_row_stride(rng):
    wide = normal(rng, 3, 12)  # a fused q|k|v projection [M, 3C]
    x, w = wide[:, 4:8], normal(rng, 4, 5)  # its k columns, [M, C] with row stride 3C
    y = np.empty((3, 5), np.float32)
    args = cublas.gemm_arguments(x, w, y)
    assert args.ldb == 12
    cublas.column_major_gemm(args)
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)


def test_the_emulated_gemm_can_fail():
    """column_major_gemm is not a copy of ``x @ w``: wrong leading dimensions give a wrong product."""
    rng = np.random.default_rng(1)
    x, w = normal(rng, 3, 4), normal(rng, 4, 5)
    y = np.empty((3, 5), np.float32)
    args = cublas.gemm_arguments(x, w, y)
    wrong = cublas.GemmArguments(cublas.OP_T, args.transb, args.m, args.n, args.k, args.a, args.k, args.b,
                                 args.ldb, args.c, args.ldc)  # w read as if column-major
    cublas.column_major_gemm(wrong)
    assert not np.allclose(y, x @ w, atol=1e-3)


@pytest.mark.parametrize("x_shape, w_shape, y_shape, match", [
    ((3, 4), (5, 6), (3, 6), "x \\[M, K\\] @ w"),
    ((3, 4), (4, 6), (3, 5), "x \\[M, K\\] @ w"),
    ((3, 4, 1), (4, 6), (3, 6), "x \\[M, K\\] @ w"),
])
def test_shapes_that_do_not_fit_are_refused(x_shape, w_shape, y_shape, match):
    with pytest.raises(InputError, match=match):
        cublas.gemm_arguments(np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32),
                              np.zeros(y_shape, np.float32))


def test_layouts_cublas_cannot_read_are_refused():
    x, y = np.zeros((3, 4), np.float32), np.zeros((3, 6), np.float32)
    with pytest.raises(InputError, match="w must be C- or F-contiguous"):
        cublas.gemm_arguments(x, np.zeros((4, 12), np.float32)[:, ::2], y)
    with pytest.raises(InputError, match="x must have contiguous rows"):
        cublas.gemm_arguments(np.zeros((3, 8), np.float32)[:, ::2], np.zeros((4, 6), np.float32), y)
    with pytest.raises(InputError, match="out must be C-contiguous"):
        cublas.gemm_arguments(x, np.zeros((4, 6), np.float32), np.zeros((6, 3), np.float32).T)


# ---- on a GPU ---------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cublas_product_equals_cupy_matmul_inside_a_capture(gpu, rng, layout, dtype):
    cp = gpu
    m, k, n = 3, 64, 96
    x = cp.asarray(normal(rng, m, k)).astype(dtype)
    w = cp.asarray(weight(rng, k, n, layout)).astype(dtype)
    w = w if layout == "C" else cp.asfortranarray(w)
    stream = cp.cuda.Stream(non_blocking=True)
    blas = cublas.Cublas(stream)
    tol = 1e-5 if dtype == "float32" else 2e-3
    with stream:
        y = blas.product(x, w)
        stream.synchronize()
        np.testing.assert_allclose(cp.asnumpy(y).astype(np.float32), cp.asnumpy(x @ w).astype(np.float32),
                                   rtol=tol, atol=tol)
        out = cp.zeros((m, n), dtype=dtype)
        stream.begin_capture()
        blas.product(x, w, out=out)
        graph = stream.end_capture()
        graph.launch(stream)
        stream.synchronize()
    np.testing.assert_allclose(cp.asnumpy(out).astype(np.float32), cp.asnumpy(x @ w).astype(np.float32),
                               rtol=tol, atol=tol)
    blas.close()
