"""Find, compile and launch the CUDA kernels in the repository's ``kernels/`` folder, through CuPy.

``kernels/<name>.cu`` holds one family of kernels with ``extern "C" __global__`` entry points. ``function(name,
entry, **defines)`` reads the file, prepends one ``#define KEY VALUE`` line per keyword (the file's compile-time
constants, as CuPy's gemm example injects them), compiles it with ``cupy.RawModule`` once per (file, defines)
and returns the entry point (CuPy also caches the binary on disk). The launchers below (``bias_activation``,
``add_layer_norm``, ``add_layer_norm_pre``) make their inputs contiguous (RawKernel ignores strides), pick the
grid and block each file's header prescribes, and compute what ``reference.py`` computes.

CuPy comes from ``core.backend`` (this is the only other module allowed to touch it); importing this module costs
nothing, and nothing imports it at package import.
"""
import functools
from pathlib import Path

import numpy as np

from ...core import backend

KERNELS_DIR = Path(__file__).resolve().parents[3] / "kernels"
OPTIONS = ("--std=c++17", f"-I{KERNELS_DIR}")  # kernels/ itself: common.cuh
DTYPE_SUFFIX = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
BA_THREADS = 256  # bias_activation.cu's default block size
BA_MAX_BLOCKS = 65535
LN_THREADS = 256  # layer_norm.cu's default block size


def path(name):
    """The source file of kernel family ``name``: ``kernels/<name>.cu``."""
    return KERNELS_DIR / f"{name}.cu"


def source(name, **defines):
    """The code that is compiled: one ``#define KEY VALUE`` line per keyword (sorted), then the file."""
    lines = [f"#define {key} {value}\n" for key, value in sorted(defines.items())]
    return "".join(lines) + path(name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def header_options():
    """``-I`` options for the CUDA headers the half-precision kernels include (cuda_fp16.h, cuda_bf16.h), found by
    cuda-pathfinder (which comes with CuPy 14) in the nvidia-cuda-runtime wheel or a toolkit; none if not found."""
    try:
        from cuda.pathfinder import find_nvidia_header_directory  # noqa: PLC0415 - optional, only on the GPU path
        include = find_nvidia_header_directory("cudart")
    except Exception:  # not installed, or no headers: CuPy's own include path may still do
        return ()
    return (f"-I{include}",) if include else ()


def available(name=None):
    """Whether kernels can run here: CuPy with a CUDA device (and, given ``name``, the file ``kernels/<name>.cu``)."""
    return backend.has_cupy() and (name is None or path(name).is_file())


@functools.lru_cache(maxsize=None)
def _module(name, defines):
    cupy = backend.cupy_module()
    return cupy.RawModule(code=source(name, **dict(defines)), options=OPTIONS + header_options())


def module(name, **defines):
    """The compiled ``cupy.RawModule`` of ``kernels/<name>.cu`` with ``defines`` prepended, compiled once."""
    return _module(name, tuple(sorted(defines.items())))


def function(name, entry, **defines):
    """The kernel ``entry`` of ``kernels/<name>.cu`` (a ``cupy.RawKernel``, called ``(grid, block, args, ...)``)."""
    return module(name, **defines).get_function(entry)


def _suffix(dtype):
    name = np.dtype(dtype).name if str(dtype) != "bfloat16" else "bfloat16"
    if name not in DTYPE_SUFFIX:
        raise ValueError(f"no kernel for dtype {dtype}; expected one of {sorted(DTYPE_SUFFIX)}")
    return DTYPE_SUFFIX[name]


def bias_activation(x, b, act, *, dtype=None, out=None):
    """``act(x + b)`` on the GPU for CuPy arrays x ``[..., F]`` and b ``[F]``; act ``gelu``, ``gelu_tanh`` or ``relu``.

    dtype names the storage type when it is not x's own (``"bfloat16"`` for arrays of its bits as uint16).
    """
    cupy = backend.cupy_module()
    x, b = cupy.ascontiguousarray(x), cupy.ascontiguousarray(b)
    n_features = x.shape[-1]
    n_rows = x.size // n_features if n_features else 0
    y = cupy.empty_like(x) if out is None else out
    if x.size:
        blocks = min((x.size + BA_THREADS - 1) // BA_THREADS, BA_MAX_BLOCKS)
        kernel = function("bias_activation", f"bias_{act}_{_suffix(dtype or x.dtype)}")
        kernel((blocks,), (BA_THREADS,), (x, b, y, np.int64(n_rows), np.int32(n_features)))
    return y


def _rows(cupy, *arrays):
    return [cupy.ascontiguousarray(a) for a in arrays]


def add_layer_norm(x, residual, bias, gamma, beta, eps, *, dtype=None):
    """Post-LN on the GPU: ``LayerNorm(x + residual + bias) * gamma + beta`` over the last axis."""
    cupy = backend.cupy_module()
    x, residual, bias, gamma, beta = _rows(cupy, x, residual, bias, gamma, beta)
    n_cols = x.shape[-1]
    n_rows = x.size // n_cols if n_cols else 0
    y = cupy.empty_like(x)
    if x.size:
        kernel = function("layer_norm", f"add_layer_norm_{_suffix(dtype or x.dtype)}")
        kernel((n_rows,), (LN_THREADS,), (x, residual, bias, gamma, beta, y, np.int32(n_rows), np.int32(n_cols),
                                          np.float32(eps)), shared_mem=4 * n_cols)
    return y


def add_layer_norm_pre(x, residual, gamma, beta, eps, *, dtype=None):
    """Pre-LN on the GPU: ``(s, LayerNorm(s) * gamma + beta)`` with ``s = x + residual``."""
    cupy = backend.cupy_module()
    x, residual, gamma, beta = _rows(cupy, x, residual, gamma, beta)
    n_cols = x.shape[-1]
    n_rows = x.size // n_cols if n_cols else 0
    s, y = cupy.empty_like(x), cupy.empty_like(x)
    if x.size:
        kernel = function("layer_norm", f"add_layer_norm_pre_{_suffix(dtype or x.dtype)}")
        kernel((n_rows,), (LN_THREADS,), (x, residual, s, gamma, beta, y, np.int32(n_rows), np.int32(n_cols),
                                          np.float32(eps)), shared_mem=4 * n_cols)
    return s, y
