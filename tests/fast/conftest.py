"""Fixtures of the CUDA kernel tests: ``gpu`` (CuPy, or the test is skipped), ``emulator`` (the float32 kernels
run on the CPU by cuda_on_cpu.py, or the test is skipped where there is no C++ compiler) and ``launcher`` (one test
body for both: the emulated float32 kernels, and each storage type on a GPU)."""
import numpy as np
import pytest

from cuda_on_cpu import Emulator, compiler
from seq2seq.core.backend import xp_for
from seq2seq.fast.cuda import kernels


@pytest.fixture
def gpu():
    """CuPy, with a CUDA device to launch on."""
    if not kernels.available():
        pytest.skip("CuPy with a CUDA device is not available")
    return xp_for("cupy")


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """Runs a ``plans.Launch`` of a float32 kernel on the CPU; each file compiled once per session."""
    if compiler() is None:
        pytest.skip("no C++ compiler (g++) to build the CPU emulation of the kernels")
    return Emulator(tmp_path_factory.mktemp("cuda_on_cpu"))


class Launcher:
    """Where a test's kernels run: ``xp`` the arrays' module, ``run(launch)`` the launcher, ``dtype`` the storage
    type of the test's floating arrays (see cuda_testing.storage)."""

    def __init__(self, xp, run, dtype):
        self.xp, self.run, self.dtype = xp, run, dtype


@pytest.fixture(params=["emulated-float32", pytest.param("gpu-float32", marks=pytest.mark.gpu),
                        pytest.param("gpu-float16", marks=pytest.mark.gpu),
                        pytest.param("gpu-bfloat16", marks=pytest.mark.gpu)])
def launcher(request):
    """The float32 kernels on the CPU emulation (NumPy arrays), or each storage type on the GPU (CuPy arrays)."""
    where, dtype = request.param.split("-")
    if where == "emulated":
        return Launcher(np, request.getfixturevalue("emulator").run, dtype)
    return Launcher(request.getfixturevalue("gpu"), kernels.run, dtype)
