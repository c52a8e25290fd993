"""Shared pytest fixtures.

The tests mirror the package: ``tests/core/`` tests ``seq2seq/core/``, ``tests/nn/`` tests ``seq2seq/nn/``, and so on;
the files at this level test the whole (the package's shape, errors at the boundary, the shipped model and the
weights/ scripts). Helpers that tests import (``oracle.py``: models built with transformers; ``attention_cases.py``;
``weights_scripts.py``) live here, on the path because this file's folder is.

``xp`` runs a test once per array module: NumPy always, CuPy on a machine with a CUDA device (skipped, not
absent, elsewhere, so a GPU box runs the same tests without a second copy of the suite). ``rng`` is a seeded
NumPy generator, fresh for each test, so tests do not depend on each other's draws.
"""
import numpy as np
import pytest

from seq2seq.core.backend import has_cupy, xp_for
from seq2seq.fast import cpu as fast_cpu
from seq2seq.fast import cuda_enabled


# ---- backends ---------------------------------------------------------------------------------------------------

@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module under test: ``numpy`` or ``cupy``."""
    if request.param == "cupy" and not has_cupy():
        pytest.skip("CuPy with a CUDA device is not available")
    return xp_for(request.param)


@pytest.fixture(params=["fused", "plain"])
def form(request, xp):
    """An op's fused form (NumPy's CPU forms; on CuPy the CUDA forms of fast/cuda/eager.py, for the ops that have
    one: the others run plain there), or its plain form (inside ``fast_cpu.disabled()``)."""
    if request.param == "plain":
        with fast_cpu.disabled():
            yield request.param
    elif not (fast_cpu.enabled(xp) or cuda_enabled(xp, "float32")):
        pytest.skip("no fused form on this backend: the plain form is the one it runs")
    else:
        yield request.param


# ---- randomness -------------------------------------------------------------------------------------------------

@pytest.fixture
def rng():
    """``np.random.default_rng(0)``: host-side random numbers; move them with ``xp.asarray``."""
    return np.random.default_rng(0)
