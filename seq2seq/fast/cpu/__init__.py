"""The CPU's fast paths: fused, blockwise, multi-threaded forms of nn/'s ops, and the native settings they need.

The plain form of each op in ``nn/`` is its definition, and the only form CuPy runs. On NumPy arrays an op hands
its work to the fused form here through one explicit branch, as Chainer hands work to cuDNN::

    if fast_cpu.enabled(xp):
        y = fused_form(...)        # this package
    else:
        y = plain xp math          # nn/

Each fused form computes the same values as the plain one (tests compare them, without torch). ``disabled()``
turns the branch off in the calling thread: tests run whole models through the plain forms on NumPy with it,
which is the arithmetic CuPy runs.

``native.py``   OpenBLAS's threads and glibc's malloc, tuned from Python through ctypes
``parallel.py`` elementwise work in cache-sized blocks of rows, on every CPU core (``workers.py``: its threads)
``thin.py``     products of a few rows (a decode step's) in column chunks of the weight, on every core
``linear.py``, ``layer_norm.py``, ``cross_entropy.py``, ``gelu.py``  fused forms of nn/'s ops (and of ``erf``)
``attention.py`` attention in blocks of batch elements, scores consumed while in the cache (nn/attention.py's)
``optim.py``    AdamW's update and gradient clipping's scaling, blockwise (training/optim.py's plain forms)
``decode_step.py``, ``step_layers.py``  a decoder step of generation as the forms above called on arrays, without
                the autograd: the model's eager step, bit for bit, for what generate needs (generation/kernel_path.py)
"""
import contextlib
import threading

import numpy as np


class _Switch(threading.local):
    disabled = False  # every thread starts with the fused forms on


_switch = _Switch()


def enabled(xp):
    """True when an op on arrays of ``xp`` should take its fused CPU form: NumPy, and not inside ``disabled()``."""
    return xp is np and not _switch.disabled


def forced_plain():
    """True inside ``disabled()`` in this thread: every op takes its plain form (the CUDA forms too)."""
    return _switch.disabled


@contextlib.contextmanager
def disabled():
    """Within the block, ops in this thread take their plain forms, on NumPy as on CuPy (for tests and comparisons):
    the CUDA forms (``fast.cuda_enabled``) are off too."""
    previous, _switch.disabled = _switch.disabled, True
    try:
        yield
    finally:
        _switch.disabled = previous
