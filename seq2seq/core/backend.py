"""The array module: NumPy on the CPU, CuPy on an NVIDIA GPU.

This is the only file that imports CuPy (the kernel loader, ``fast/cuda/kernels.py``, gets it from here).
Everything else asks for the array module of the array in hand, ``xp = get_array_module(x)``, and writes
``xp.exp(x)`` instead of ``np.exp(x)``: the same line then runs on both devices (the pattern of Chainer's
``backend.get_array_module`` and DeZero's ``cuda.py``). The package imports and runs with NumPy alone; CuPy is
looked up only when ``backend="cupy"`` is asked for or a CuPy array shows up.
"""
import math

import numpy as np

from .errors import InputError

BACKENDS = ("numpy", "cupy")
DTYPES = ("float32", "float64", "float16")

_cupy = None  # the module once imported; None until then (or when it is not installed)


def _import_cupy():
    """Import CuPy on first use; return the module or None when it is not installed."""
    global _cupy
    if _cupy is None:
        try:
            import cupy  # noqa: PLC0415 - deliberately lazy: NumPy-only installs never pay for it
        except ImportError:
            return None
        _cupy = cupy
    return _cupy


def cupy_module():
    """CuPy, imported on first use, or None when it is not installed: for the one other module that touches CuPy's
    raw API, the kernel loader (``fast/cuda/kernels.py``), which gets CuPy here rather than importing it."""
    return _import_cupy()


def has_cupy():
    """True when CuPy imports and sees at least one CUDA device."""
    cupy = _import_cupy()
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CUDA driver missing or broken: treat as no GPU
        return False


def unwrap(x):
    """The array inside a Tensor; arrays (and anything else) pass through unchanged.

    Why not ``getattr(x, "data", x)``: NumPy and CuPy arrays have a ``.data`` attribute of their own (a memoryview,
    a device pointer). The Tensor is recognised by duck typing because backend.py comes before autograd.py.
    """
    if isinstance(x, np.ndarray) or (_cupy is not None and isinstance(x, _cupy.ndarray)):
        return x
    return x.data if type(x).__name__ == "Tensor" else x


def memory_order(array):
    """"F" for an array laid out in column-major (Fortran) order only, else "C": the order in which to make arrays
    that go with it (the tied LM-head table is column-major, see ``layers.lm_head_layout``)."""
    return "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"


def flat_view(array, order):
    """``array`` as 1-D in memory order ``order`` ("C" or "F"): a view when it lies contiguous in that order (an
    empty array too), else None (a reshape would have copied it)."""
    flat = array.reshape(-1, order=order)
    return flat if flat.size == 0 or get_array_module(array).may_share_memory(flat, array) else None


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array (or a Tensor holding one), else ``numpy``."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(unwrap(a), _cupy.ndarray):
                return _cupy
    return np


def xp_for(backend):
    """The array module for a backend name: ``"numpy"`` or ``"cupy"``."""
    if backend == "numpy":
        return np
    if backend == "cupy":
        cupy = _import_cupy()
        if cupy is None:
            raise InputError('backend="cupy" needs CuPy: pip install -e ".[gpu]"')
        return cupy
    raise InputError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


def backend_of(array):
    """The backend name (``"numpy"`` or ``"cupy"``) that holds ``array``."""
    return "cupy" if get_array_module(array) is not np else "numpy"


def check_dtype(dtype):
    """Normalise a dtype argument to a NumPy dtype, refusing anything but the floats the engine computes in."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise InputError(f"unsupported dtype {dtype!r}; expected one of {DTYPES}")
    return np.dtype(name)


def to_numpy(x):
    """Bring an array (NumPy or CuPy) or a Tensor to a NumPy array on the host."""
    x = unwrap(x)
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        return _cupy.asnumpy(x)
    return np.asarray(x)


def to_backend(x, backend):
    """Move an array (or Tensor data) to ``backend``; no copy when it is already there."""
    x = unwrap(x)
    xp = xp_for(backend)
    if xp is np:
        return to_numpy(x)
    return xp.asarray(x)


def erf_float64(x):
    """erf in float64 (for gradient checks): ``math.erf`` elementwise on NumPy, CuPy's own special function on GPU.

    The float32 approximation lives in special.py; this exact one is slow on the CPU and meant for tests.
    """
    if get_array_module(x) is np:
        return np.frompyfunc(math.erf, 1, 1)(x).astype(x.dtype)
    import cupyx.scipy.special  # noqa: PLC0415 - only reached with CuPy arrays
    return cupyx.scipy.special.erf(x)
