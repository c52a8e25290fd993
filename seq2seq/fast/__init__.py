"""Fast forms of the ops in ``nn/``, in rooms of their own: ``cpu/`` (fused NumPy ops, BLAS threads, malloc)
and ``cuda/`` (CUDA kernels through CuPy, with NumPy references; imported only where CuPy is in use).

Each fast form computes what the plain form in ``nn/`` computes, and is chosen there by one explicit branch;
tests check it against the plain form. Nothing here imports anything above ``core/``. Both rooms also hold a fused
decoder step of generation (``cpu/decode_step.py``, ``cuda/decode_step.py``), which read the model's weights
through ``decoder_weights.py``."""
import functools

import numpy as np

from . import cpu

_KERNEL_DTYPES = ("float32", "float16")  # the storage types the eager kernels are given here (cuda/eager.py)


def cuda_enabled(xp, dtype):
    """True when an op on ``dtype`` arrays of ``xp`` should take its fused CUDA form (``cuda/eager.py``): CuPy, a
    CUDA device and the kernels found, a dtype the kernels store (not float64: gradient checks stay plain), and not
    inside ``cpu.disabled()``, which turns every fused form off in its thread. Imports nothing of ``cuda/`` for
    NumPy arrays."""
    if xp is np or cpu.forced_plain() or np.dtype(dtype).name not in _KERNEL_DTYPES:
        return False
    return _kernels_available()


def cuda_forms():
    """The fused CUDA forms (``cuda/eager.py``), imported on first use: only an op that ``cuda_enabled`` sent there
    asks for them."""
    from .cuda import eager  # noqa: PLC0415 - the GPU side only
    return eager


@functools.lru_cache(maxsize=None)
def _kernels_available():
    from .cuda import kernels  # noqa: PLC0415 - reached with CuPy arrays only
    return kernels.available()
