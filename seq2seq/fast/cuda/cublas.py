"""Row-major products ``y = x @ w`` through a cuBLAS handle of our own, called with ctypes: the products of a decode
step that is captured into a CUDA graph.

Why not ``cupy.matmul``: CuPy refuses every cuBLAS call while a stream is capturing ("calling cuBLAS API during
stream capture is currently unsupported", cupy/cupy#6290), its own bindings included. The library itself captures
fine when its handle is bound to the capturing stream, so this module opens the libcublas that cuda-pathfinder
finds (it comes with CuPy 14), creates a handle, binds it to a stream and calls ``cublasGemmEx``:

    blas = Cublas(stream)                 # cublasCreate_v2, cublasSetStream_v2, cublasSetWorkspace_v2, ...
    blas.product(x, w, out=y)             # y [M, N] = x [M, K] @ w [K, N], all on the device

cuBLAS is column-major; a row-major ``[R, C]`` array read column-major is its transpose ``[C, R]``. So the row-major
``y = x @ w`` is the column-major ``y^T = w^T x^T``: cuBLAS's A is w's memory and B is x's, with m = N, n = M,
k = K. A weight stored column-major (``W.T`` of a ``[N, K]`` torch-layout weight, ``nn/layers.thin_input_layout``)
is read column-major as ``w`` itself and goes in transposed (``CUBLAS_OP_T``). ``gemm_arguments`` works this out
in plain Python, and the CPU tests check it against NumPy by carrying out the column-major product it describes
(``column_major_gemm``); only ``Cublas`` needs a GPU.

Arithmetic is float32 (``CUBLAS_COMPUTE_32F``) for every storage type, without TF32 unless asked for, as
``numpy.matmul`` computes: the kernel path's logits should be the eager path's.
"""
import ctypes
import dataclasses

import numpy as np

from ...core import backend
from ...core.errors import InputError

OP_N, OP_T = 0, 1  # cublasOperation_t
POINTER_MODE_HOST = 0  # cublasPointerMode_t: alpha and beta are read from host memory
DEFAULT_MATH = 0  # cublasMath_t: no reduced-precision shortcuts unless the compute type asks for them
COMPUTE_32F, COMPUTE_32F_FAST_TF32 = 68, 77  # cublasComputeType_t
DATA_TYPES = {"float32": 0, "float16": 2, "bfloat16": 14}  # cudaDataType_t: CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF
GEMM_DEFAULT = -1  # cublasGemmAlgo_t: cuBLAS picks
WORKSPACE_BYTES = 32 << 20  # what cuBLAS recommends for Hopper (32 MiB); 4 MiB would do before it


@dataclasses.dataclass(frozen=True)
class GemmArguments:
    """One column-major ``C = op(A) op(B)`` (``C`` m x n, ``op(A)`` m x k, ``op(B)`` k x n) over arrays' memory."""

    transa: int
    transb: int
    m: int
    n: int
    k: int
    a: object
    lda: int
    b: object
    ldb: int
    c: object
    ldc: int


def _row_stride(a, name):
    """Elements from one row of a row-major ``[R, C]`` matrix to the next (at least C); its elements must be
    contiguous (a view of a wider projection's columns is fine)."""
    item = a.itemsize
    rows, cols = a.shape
    ld = a.strides[0] // item if rows > 1 else cols
    if (cols > 1 and a.strides[1] != item) or a.strides[0] % item or ld < cols:
        raise InputError(f"product: {name} must have contiguous rows, got shape {tuple(a.shape)} and strides "
                         f"{tuple(a.strides)}")
    return max(ld, 1)


def gemm_arguments(x, w, y):
    """The column-major gemm that computes row-major ``y = x @ w``: x ``[M, K]`` (rows contiguous, any row stride:
    a view of a wider projection is fine), w ``[K, N]`` C- or F-contiguous, y ``[M, N]`` C-contiguous."""
    if x.ndim != 2 or w.ndim != 2 or y.ndim != 2 or x.shape[1] != w.shape[0] or y.shape != (x.shape[0], w.shape[1]):
        raise InputError(f"product: x [M, K] @ w [K, N] -> out [M, N], got x {tuple(x.shape)}, w {tuple(w.shape)}, "
                         f"out {tuple(y.shape)}")
    m_rows, k = x.shape
    n = w.shape[1]
    if not y.flags.c_contiguous:
        raise InputError(f"product: out must be C-contiguous, got strides {tuple(y.strides)}")
    if w.flags.c_contiguous:  # w's memory read column-major is w^T [N, K], leading dimension N
        transa, lda = OP_N, max(n, 1)
    elif w.flags.f_contiguous:  # read column-major it is w [K, N] itself (leading dimension K): transpose it
        transa, lda = OP_T, max(k, 1)
    else:
        raise InputError(f"product: w must be C- or F-contiguous, got strides {tuple(w.strides)}")
    ldb = _row_stride(x, "x")  # x's memory read column-major is x^T [K, M], leading dimension its row stride
    return GemmArguments(transa, OP_N, n, m_rows, k, w, lda, x, ldb, y, max(n, 1))


def column_major_gemm(args, *, alpha=1.0, beta=0.0):
    """Carry out ``args`` as cuBLAS would, in NumPy, on the arrays' own memory: the CPU tests' check that the
    marshalling computes ``x @ w``. Writes C in place and returns it."""
    def matrix(array, rows, cols, ld):  # a column-major rows x cols matrix at the array's first element
        item = array.itemsize
        return np.lib.stride_tricks.as_strided(array, shape=(rows, cols), strides=(item, ld * item))

    a_rows, a_cols = (args.m, args.k) if args.transa == OP_N else (args.k, args.m)
    b_rows, b_cols = (args.k, args.n) if args.transb == OP_N else (args.n, args.k)
    a = matrix(args.a, a_rows, a_cols, args.lda)
    b = matrix(args.b, b_rows, b_cols, args.ldb)
    op_a = a if args.transa == OP_N else a.T  # [m, k]
    op_b = b if args.transb == OP_N else b.T  # [k, n]
    c = matrix(args.c, args.m, args.n, args.ldc)
    product = alpha * (op_a.astype(np.float32) @ op_b.astype(np.float32))  # [m, k] @ [k, n] -> [m, n]
    c[...] = product if beta == 0 else product + beta * c  # as cuBLAS: C is not read when beta is 0
    return args.c


def _library():
    """libcublas as cuda-pathfinder finds it (the nvidia-cublas wheel or a toolkit), opened with ctypes."""
    from cuda.pathfinder import load_nvidia_dynamic_lib  # noqa: PLC0415 - only on the GPU path
    return ctypes.CDLL(load_nvidia_dynamic_lib("cublas").abs_path)


class Cublas:
    """A cuBLAS handle bound to ``stream`` (a ``cupy.cuda.Stream``) with a workspace of its own; ``product`` is a
    capturable ``y = x @ w`` on CuPy arrays. ``tf32=True`` lets float32 products use TF32 tensor cores."""

    def __init__(self, stream, *, tf32=False, workspace_bytes=WORKSPACE_BYTES):
        self.cupy = backend.cupy_module()
        if self.cupy is None:
            raise InputError("Cublas needs CuPy with a CUDA device")
        self.lib, self.stream = _library(), stream
        self.handle = ctypes.c_void_p()
        self._call("cublasCreate_v2", ctypes.byref(self.handle))
        self._call("cublasSetStream_v2", self.handle, ctypes.c_void_p(stream.ptr))
        # after the stream: cublasSetStream resets a workspace set before it to cuBLAS's default
        self.workspace = self.cupy.empty((workspace_bytes,), dtype=np.uint8)  # kept: cuBLAS holds its pointer
        self._call("cublasSetWorkspace_v2", self.handle, ctypes.c_void_p(self.workspace.data.ptr),
                   ctypes.c_size_t(workspace_bytes))
        self._call("cublasSetPointerMode_v2", self.handle, POINTER_MODE_HOST)
        self._call("cublasSetMathMode", self.handle, DEFAULT_MATH)
        self.compute = COMPUTE_32F_FAST_TF32 if tf32 else COMPUTE_32F
        self._alpha, self._beta = ctypes.c_float(1.0), ctypes.c_float(0.0)

    def _call(self, name, *args):
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise RuntimeError(f"{name} failed with cublasStatus_t {status}")

    def product(self, x, w, out=None):
        """``x [M, K] @ w [K, N]`` into ``out`` (or a new ``[M, N]`` array), on the handle's stream."""
        if out is None:
            out = self.cupy.empty((x.shape[0], w.shape[1]), dtype=x.dtype)
        if not (x.dtype == w.dtype == out.dtype) or x.dtype.name not in DATA_TYPES:
            raise InputError(f"product: x, w and out must share one of {sorted(DATA_TYPES)}, got {x.dtype}, "
                             f"{w.dtype}, {out.dtype}")
        args = gemm_arguments(x, w, out)
        if 0 in (args.m, args.n):
            return out
        kind = DATA_TYPES[x.dtype.name]
        self._call("cublasGemmEx", self.handle, args.transa, args.transb, args.m, args.n, args.k,
                   ctypes.byref(self._alpha), ctypes.c_void_p(args.a.data.ptr), kind, args.lda,
                   ctypes.c_void_p(args.b.data.ptr), kind, args.ldb, ctypes.byref(self._beta),
                   ctypes.c_void_p(args.c.data.ptr), kind, args.ldc, self.compute, GEMM_DEFAULT)
        return out

    def close(self):
        """Destroy the handle (its workspace goes with this object)."""
        if self.handle:
            self._call("cublasDestroy_v2", self.handle)
            self.handle = ctypes.c_void_p()
