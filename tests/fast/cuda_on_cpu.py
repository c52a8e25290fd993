"""Run a ``plans.Launch`` of a float32 kernel on the CPU: the .cu file compiled by g++ after cuda_on_cpu.h (each CUDA
thread an OS thread, see there), called through ctypes with NumPy arrays. Slow (a thread per CUDA thread, blocks
one after another): for small shapes in tests, on machines without a GPU.

    emulator = Emulator(tmp_dir)
    y = emulator.run(plans.bias_activation(x, b, "gelu"))   # x, b float32 NumPy arrays
"""
import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from cuda_testing import HALF_SWITCH, float32_entries
from seq2seq.fast.cuda import kernels

HEADER = Path(__file__).with_name("cuda_on_cpu.h")
SCALAR_TYPES = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
                np.dtype(np.uint64): ctypes.c_uint64, np.dtype(np.float32): ctypes.c_float}


def compiler():
    """The C++ compiler's path, or None."""
    return shutil.which("g++")


def cpp_source(name, entries, **defines):
    """The C++ program for kernels/<name>.cu: the emulation header, the file (float32 only, dynamic shared memory
    as a pointer into the launch's buffer), one ``emu_<entry>`` C function per entry point."""
    code = kernels.source(name, **{HALF_SWITCH[name]: 0, **defines})
    code = re.sub(r"extern __shared__ (\w+) (\w+)\[\];",
                  r"\1* \2 = reinterpret_cast<\1*>(emu::dynamic_shared.data());", code)
    return f'#include "{HEADER}"\n' + code + "".join(f"\nEMU_ENTRY({e})" for e in entries) + "\n"


class Emulator:
    """Compiles each (file, defines) once into ``folder``, its float32 entry points, and runs launches of them."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.libraries = {}

    def library(self, name, defines):
        key = (name, defines)
        if key not in self.libraries:
            stem = "_".join([name] + [f"{k}{v}" for k, v in defines])
            cpp, lib = self.folder / f"{stem}.cpp", self.folder / f"{stem}.so"
            cpp.write_text(cpp_source(name, float32_entries(name), **dict(defines)), encoding="utf-8")
            done = subprocess.run([compiler(), "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread",
                                   f"-I{kernels.KERNELS_DIR}", str(cpp), "-o", str(lib)], capture_output=True,
                                  text=True)
            assert done.returncode == 0, f"g++ failed on {name}.cu:\n{done.stderr}"
            self.libraries[key] = ctypes.CDLL(str(lib))
        return self.libraries[key]

    def run(self, launch):
        """Run the launch on the CPU; its outputs, as ``kernels.run`` returns them."""
        if 0 in launch.grid:
            return launch.outputs
        kernel = getattr(self.library(launch.name, launch.defines), f"emu_{launch.entry}")
        values = [_c_value(a) for a in launch.args]
        args = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        grid = tuple(launch.grid) + (1,) * (3 - len(launch.grid))
        kernel(*(ctypes.c_uint(g) for g in grid), ctypes.c_uint(launch.block[0]), ctypes.c_size_t(launch.shared_mem),
               args)
        return launch.outputs


def _c_value(a):
    """The C object holding argument ``a``: a pointer to an array's data, or a scalar of the parameter's type."""
    if isinstance(a, np.ndarray):
        return ctypes.c_void_p(a.ctypes.data)
    return SCALAR_TYPES[np.asarray(a).dtype](a.item())
