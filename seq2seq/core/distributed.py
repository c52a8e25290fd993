"""Processes working together: a communicator over MPI (mpi4py) for NumPy arrays and NCCL for CuPy arrays, with a
one-process default, so that code written for many processes runs unchanged in one.

    comm = get_communicator()          # under `mpirun -n 4`: rank 0..3 of 4; started plainly: rank 0 of 1
    comm.allreduce_(flat_gradients)    # in place: every rank ends holding the sum over the ranks
    state = comm.broadcast(state)      # rank 0's Python object, on every rank
    comm.barrier()

This is ChainerMN's design: the processes are started by ``mpirun`` (Open MPI, MPICH), which also watches them:
when one dies (an exception, ``kill -9``) ``mpirun`` ends the others and exits non-zero, naming the rank. Small
objects travel through MPI (pickled by mpi4py between our own processes; nothing is unpickled from a file), large
arrays through MPI's buffer calls without a copy to Python objects, and CuPy arrays through NCCL, whose unique id
rank 0 makes and hands out over MPI.

Why the environment decides, not an import: importing mpi4py initialises MPI, which a plain ``python`` run should
not pay for (nor depend on: mpi4py is an optional extra). ``mpirun`` sets ``OMPI_COMM_WORLD_SIZE`` (Open MPI) or
``PMI_SIZE`` (MPICH, Intel MPI); only then is mpi4py imported.

Why every rank gets the same sum: the gradients that AdamW then applies must be bit-identical on every rank, or the
copies of the model drift apart. MPI's reductions combine the same operands in an order every rank shares (for two
ranks, ``a + b == b + a`` exactly); the test suite checks that the ranks end with identical weights.
"""
import os
import sys
import traceback

import numpy as np

from .backend import cupy_module, get_array_module
from .errors import InputError

WORLD_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")  # Open MPI; MPICH and Intel MPI (Hydra)
LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK")

_communicator = None


class SingleProcess:
    """The communicator of a process started on its own: rank 0 of 1, every collective the identity."""

    rank, world_size, local_rank = 0, 1, 0

    def allreduce_(self, buffer):
        return buffer

    def broadcast(self, value, *, root=0):
        return value

    def broadcast_array_(self, array, *, root=0):
        return array

    def gather(self, value, *, root=0):
        return [value]

    def barrier(self):
        pass

    def abort(self, code=1):
        os._exit(code)

    def __repr__(self):
        return "SingleProcess()"


class MPICommunicator:
    """The ranks ``mpirun`` started, over mpi4py's ``COMM_WORLD``; CuPy arrays go through NCCL (made on first use)."""

    def __init__(self, mpi):
        self.mpi, self.comm = mpi, mpi.COMM_WORLD
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_rank = _local_rank(default=self.rank)
        self._nccl = None

    def allreduce_(self, buffer):
        """Sum ``buffer`` (a contiguous NumPy or CuPy array) over the ranks, in place; returns it."""
        _check_contiguous(buffer, "allreduce_")
        if get_array_module(buffer) is np:
            self.comm.Allreduce(self.mpi.IN_PLACE, buffer, op=self.mpi.SUM)
        else:
            self._nccl_communicator().all_reduce(buffer)
        return buffer

    def broadcast(self, value, *, root=0):
        """``root``'s Python object (a dict of settings, a list of indices), returned on every rank."""
        return self.comm.bcast(value, root=root)

    def broadcast_array_(self, array, *, root=0):
        """Overwrite ``array`` on every rank with ``root``'s (same shape and dtype everywhere); returns it."""
        _check_contiguous(array, "broadcast_array_")
        if get_array_module(array) is np:
            self.comm.Bcast(array, root=root)
        else:
            self._nccl_communicator().broadcast(array, root=root)
        return array

    def gather(self, value, *, root=0):
        """Every rank's Python object, as a list in rank order on ``root`` (None elsewhere)."""
        return self.comm.gather(value, root=root)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code=1):
        """End every rank of the job now (``MPI_Abort``): what a failing rank does so that none waits forever."""
        self.comm.Abort(code)

    def _nccl_communicator(self):
        if self._nccl is None:
            self._nccl = NCCLCommunicator(self)
        return self._nccl

    def __repr__(self):
        return f"MPICommunicator(rank={self.rank}, world_size={self.world_size})"


class NCCLCommunicator:
    """NCCL over the GPUs of the ranks, one GPU a rank (the local rank's): rank 0 makes the unique id that names
    the clique and MPI hands it to the others (as ChainerMN and CuPy's own tests do)."""

    DTYPES = {"float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64", "float16": "NCCL_FLOAT16"}

    def __init__(self, mpi_communicator):
        cupy = cupy_module()
        if cupy is None:
            raise InputError("CuPy arrays need CuPy for NCCL: pip install -e '.[gpu]'")
        self.cupy, self.nccl = cupy, cupy.cuda.nccl
        unique_id = self.nccl.get_unique_id() if mpi_communicator.rank == 0 else None
        unique_id = mpi_communicator.broadcast(unique_id)
        self.comm = self.nccl.NcclCommunicator(mpi_communicator.world_size, unique_id, mpi_communicator.rank)

    def _dtype(self, array):
        name = self.DTYPES.get(array.dtype.name)
        if name is None:
            raise InputError(f"NCCL collectives take {sorted(self.DTYPES)} arrays, got {array.dtype}")
        return getattr(self.nccl, name)

    def all_reduce(self, buffer):
        stream = self.cupy.cuda.get_current_stream().ptr
        self.comm.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size, self._dtype(buffer), self.nccl.NCCL_SUM,
                            stream)

    def broadcast(self, array, *, root=0):
        stream = self.cupy.cuda.get_current_stream().ptr
        self.comm.bcast(array.data.ptr, array.size, self._dtype(array), root, stream)


def _check_contiguous(array, what):
    if not getattr(array, "flags", None) or not array.flags.c_contiguous:
        raise InputError(f"{what} needs a C-contiguous array, got {type(array).__name__}")


def _local_rank(*, default):
    for name in LOCAL_RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return default


def launched_by_mpirun():
    """True when an MPI launcher started this process (its environment names a world size)."""
    return any(os.environ.get(name) for name in WORLD_SIZE_VARIABLES)


def get_communicator():
    """The process's communicator, made once: MPI's ranks under ``mpirun``, else ``SingleProcess()``.

    Under ``mpirun`` an uncaught exception on any rank ends the whole job (``fail_together``): MPI has no other way
    to tell the ranks waiting in a collective for the one that died."""
    global _communicator
    if _communicator is None:
        if not launched_by_mpirun():
            _communicator = SingleProcess()
        else:
            try:
                from mpi4py import MPI  # noqa: PLC0415 - optional, and only under mpirun (see the module doc)
            except ImportError as err:
                raise InputError(f"started by mpirun, but mpi4py does not import ({err}): pip install -e '.[mpi]' "
                                 "(and an MPI library, e.g. apt-get install openmpi-bin libopenmpi-dev)") from err
            _communicator = MPICommunicator(MPI)
            if _communicator.world_size > 1:
                fail_together(_communicator)
    return _communicator


def use_own_gpu(comm, backend):
    """With ``backend="cupy"``, make this rank's GPU the current one: the local rank's, modulo the GPUs there are
    (one GPU a rank, as NCCL wants; several ranks on one GPU only when there are more ranks than GPUs)."""
    if backend != "cupy":
        return None
    cupy = cupy_module()
    if cupy is None:
        raise InputError("backend 'cupy' needs CuPy: pip install -e '.[gpu]'")
    device = cupy.cuda.Device(comm.local_rank % cupy.cuda.runtime.getDeviceCount())
    device.use()
    return device.id


def made_communicator():
    """The communicator ``get_communicator`` made, or ``SingleProcess()`` when none was made (nothing to end)."""
    return _communicator if _communicator is not None else SingleProcess()


def fail_together(comm):
    """Make an uncaught exception on this rank print its traceback, say which rank failed, and end every rank
    (``MPI_Abort``) instead of leaving the others blocked in their next collective."""
    def hook(kind, error, tb):
        traceback.print_exception(kind, error, tb)
        print(f"seq2seq: rank {comm.rank} of {comm.world_size} failed ({kind.__name__}); ending all ranks",
              file=sys.stderr, flush=True)
        comm.abort(1)
    sys.excepthook = hook


def exit_together(comm, code):
    """``sys.exit(code)`` for a command under ``mpirun``: a failure (code not 0 / None) ends every rank, naming this
    one, since ranks that carry on would wait for it forever; a plain process just exits."""
    if code in (None, 0) or comm.world_size == 1:
        sys.exit(code)
    if not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    print(f"seq2seq: rank {comm.rank} of {comm.world_size} stopped with exit status {code}; ending all ranks",
          file=sys.stderr, flush=True)
    comm.abort(code)
