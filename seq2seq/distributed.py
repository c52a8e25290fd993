"""``seq2seq.distributed``: the communicator of ``core/distributed.py`` (MPI ranks, NCCL for CuPy arrays, one
process by default) and the data-parallel helpers of ``training/data_parallel.py``, under one public name."""
from .core.distributed import MPICommunicator, SingleProcess, get_communicator, launched_by_mpirun  # noqa: F401
from .training.data_parallel import (allreduce_gradients, broadcast_parameters, dropout_rows,  # noqa: F401
                                     row_shards)
