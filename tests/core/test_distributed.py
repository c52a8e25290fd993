"""core/distributed.py without mpirun: the one-process communicator, how a launch by mpirun is recognised, the
error when mpi4py is missing there, and exit_together in one process. Two real ranks: tests/cli/test_mpirun.py;
the NCCL path at world size 1 on a GPU: the gpu-marked test below."""
import subprocess
import sys

import numpy as np
import pytest

from seq2seq.core import distributed
from seq2seq.core.errors import InputError


@pytest.fixture
def fresh(monkeypatch):
    """No communicator made yet, and no MPI launcher in the environment."""
    monkeypatch.setattr(distributed, "_communicator", None)
    for name in distributed.WORLD_SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_plain_process_is_rank_0_of_1_and_collectives_are_the_identity(fresh):
    comm = distributed.get_communicator()
    assert isinstance(comm, distributed.SingleProcess) and distributed.get_communicator() is comm
    assert (comm.rank, comm.world_size) == (0, 1) and not distributed.launched_by_mpirun()
    x = np.arange(4.0)
    assert comm.allreduce_(x) is x and comm.broadcast_array_(x) is x
    np.testing.assert_array_equal(x, np.arange(4.0))
    assert comm.broadcast({"a": 1}) == {"a": 1} and comm.gather(3) == [3]
    comm.barrier()
    assert "mpi4py" not in sys.modules or sys.modules["mpi4py"] is not None  # nothing imported it for this


@pytest.mark.parametrize("variable", distributed.WORLD_SIZE_VARIABLES)
def test_mpirun_is_recognised_by_its_environment_and_a_missing_mpi4py_is_named(fresh, variable):
    fresh.setenv(variable, "2")
    assert distributed.launched_by_mpirun()
    fresh.setitem(sys.modules, "mpi4py", None)  # as if not installed
    with pytest.raises(InputError, match=r"mpi4py does not import.*\.\[mpi\]"):
        distributed.get_communicator()


def test_exit_together_in_one_process_is_sys_exit(fresh):
    comm = distributed.made_communicator()
    assert isinstance(comm, distributed.SingleProcess)
    with pytest.raises(SystemExit) as stop:
        distributed.exit_together(comm, "error: bad input")
    assert stop.value.code == "error: bad input"
    with pytest.raises(SystemExit) as stop:
        distributed.exit_together(comm, None)
    assert stop.value.code is None


NCCL_AT_WORLD_SIZE_1 = """
import cupy
from mpi4py import MPI
from seq2seq.core.distributed import MPICommunicator
comm = MPICommunicator(MPI)
x = cupy.arange(1000, dtype=cupy.float32)
assert comm.allreduce_(x) is x and bool((x == cupy.arange(1000, dtype=cupy.float32)).all())
y = cupy.ones(10, dtype=cupy.float16)
comm.broadcast_array_(y)
assert comm._nccl is not None and float(y.sum()) == 10
print("nccl ok")
"""


@pytest.mark.gpu
def test_nccl_allreduce_and_broadcast_at_world_size_1():
    pytest.importorskip("mpi4py")
    from seq2seq.core.backend import has_cupy  # noqa: PLC0415
    if not has_cupy():
        pytest.skip("needs CuPy and a CUDA device")
    done = subprocess.run([sys.executable, "-c", NCCL_AT_WORLD_SIZE_1], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "nccl ok" in done.stdout, done.stderr


def test_use_own_gpu_does_nothing_for_numpy(fresh):
    assert distributed.use_own_gpu(distributed.SingleProcess(), "numpy") is None


@pytest.mark.gpu
def test_use_own_gpu_picks_the_local_ranks_device_modulo_the_count():
    from seq2seq.core.backend import cupy_module, has_cupy  # noqa: PLC0415
    if not has_cupy():
        pytest.skip("needs CuPy and a CUDA device")
    comm = distributed.SingleProcess()
    assert distributed.use_own_gpu(comm, "cupy") == 0 == cupy_module().cuda.Device().id
