"""Fixtures of the CUDA kernel tests: ``gpu`` (CuPy, or the test is skipped) and ``emulator`` (the float32 kernels
run on the CPU by cuda_on_cpu.py, or the test is skipped where there is no C++ compiler)."""
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
