"""Find, compile and launch the CUDA kernels in the repository's ``kernels/`` folder, through CuPy.

``kernels/<name>.cu`` holds one family of kernels with ``extern "C" __global__`` entry points. ``function(name,
entry, **defines)`` reads the file, prepends one ``#define KEY VALUE`` line per keyword (the file's compile-time
constants, as CuPy's gemm example injects them), compiles it with ``cupy.RawModule`` once per (file, defines)
and returns the entry point (CuPy also caches the binary on disk). ``run(launch)`` launches what a function of
``plans.py`` worked out (entry point, grid, block, shared memory, arguments) and returns its outputs::

    y = kernels.run(plans.bias_activation(x, b, "gelu"))   # on CuPy arrays: what reference.bias_activation computes

CuPy comes from ``core.backend`` (this is the only other module allowed to touch it); importing this module costs
nothing, and nothing imports it at package import.
"""
import functools
from pathlib import Path

from ...core import backend

KERNELS_DIR = Path(__file__).resolve().parents[3] / "kernels"
OPTIONS = ("--std=c++17", f"-I{KERNELS_DIR}")  # kernels/ itself: common.cuh


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


def run(launch):
    """Launch a ``plans.Launch`` on the current CUDA stream (a stream being captured into a CUDA graph included)
    and return its outputs. A grid with no blocks launches nothing."""
    if 0 not in launch.grid:
        kernel = function(launch.name, launch.entry, **dict(launch.defines))
        kernel(launch.grid, launch.block, launch.args, shared_mem=launch.shared_mem)
    return launch.outputs
