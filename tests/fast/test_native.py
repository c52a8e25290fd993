"""Tests for seq2seq/fast/cpu/native.py: importing the package changes nothing in the process; ``tune()`` lets
OpenBLAS's idle threads sleep (whoever imported NumPy first) and makes glibc's malloc keep freed memory; OpenBLAS
held to one thread and restored; it names the kernels OpenBLAS runs; each doing nothing, and saying why, where its
library is missing."""
import ctypes
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from seq2seq.fast.cpu import native as cpu


def _numpy_uses_openblas_on_linux():
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"].lower()
    return blas.endswith("openblas") and sys.platform.startswith("linux")


def test_the_openblas_lookup_finds_numpys_library_on_linux_wheels():
    if not _numpy_uses_openblas_on_linux():
        pytest.skip("NumPy here is not built on OpenBLAS, or this is not Linux")
    assert cpu.can_set_blas_threads()


def test_blas_one_thread_holds_openblas_to_one_thread_and_restores_it_after_the_last_user():
    if not cpu.can_set_blas_threads():
        pytest.skip("NumPy's BLAS here is not an OpenBLAS whose threads can be set")
    getter, setter = cpu._openblas_calls()
    before = getter()
    setter(2)
    try:
        with cpu.blas_one_thread():
            assert getter() == 1
            with cpu.blas_one_thread():  # nested (another thread's attention, say): still one
                assert getter() == 1
            assert getter() == 1  # the outer user is still inside
        assert getter() == 2
        with pytest.raises(ValueError), cpu.blas_one_thread():
            raise ValueError("a failing block")
        assert getter() == 2  # restored on the way out of an exception too
    finally:
        setter(before)


def test_blas_one_thread_does_nothing_without_an_openblas(monkeypatch):
    monkeypatch.setattr(cpu, "_openblas", ())  # as with Accelerate or MKL
    assert not cpu.can_set_blas_threads()
    with cpu.blas_one_thread():
        pass


def _run(code, **env):
    """``code``'s standard output in a fresh interpreter, run with ``env`` added to (or, with None, taken out of)
    this process's environment."""
    environment = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                          check=True).stdout.strip()


def _where_a_block_comes_from(mib, setup, **env):
    """"heap" or "mmap": where glibc's malloc serves a block of ``mib`` MiB in a fresh interpreter after ``setup``
    (by mallinfo2's count of bytes in mmapped blocks, before and after)."""
    return _run(f"{setup}\n"
                "import ctypes, ctypes.util\n"
                "class Info(ctypes.Structure):\n"
                "    _fields_ = [(name, ctypes.c_size_t) for name in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',"
                " 'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]\n"
                "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
                "libc.mallinfo2.restype = Info\n"
                "libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]\n"
                "libc.free.argtypes = [ctypes.c_void_p]\n"
                f"before = libc.mallinfo2().hblkhd; block = libc.malloc({mib} << 20); after = libc.mallinfo2().hblkhd\n"
                "libc.free(block)\n"
                f"print('mmap' if after - before >= {mib} << 20 else 'heap')\n", **env)


def _glibc():
    return hasattr(ctypes.CDLL(None), "mallinfo2")  # glibc 2.33 or later


# 4 MiB: a mid-sized activation; 64 MiB: above the 32 MiB that M_MMAP_THRESHOLD can reach (a vocabulary-sized
# gradient, 512 x 30,522 floats, is 62 MB)
@pytest.mark.parametrize("mib", [4, 64])
def test_tune_makes_glibc_serve_large_blocks_from_the_heap_unless_told_not_to(mib):
    if not _glibc():
        pytest.skip("not glibc 2.33 or later")
    assert _where_a_block_comes_from(mib, "import seq2seq; seq2seq.tune_cpu()") == "heap"
    # glibc's default: either block is a mapping of its own (nothing was freed yet to raise the threshold)
    assert _where_a_block_comes_from(mib, "import seq2seq; seq2seq.tune_cpu()", SEQ2SEQ_SYSTEM_MALLOC="1") == "mmap"
    assert _where_a_block_comes_from(mib, "import seq2seq") == "mmap"  # importing alone leaves malloc as it was


def test_importing_the_package_changes_neither_the_environment_nor_openblas():
    out = _run("import os, numpy\n"
               "before = dict(os.environ)\n"
               "import seq2seq\n"
               "from seq2seq.fast.cpu import native\n"
               "found = native._find_openblas()\n"
               "timeout = getattr(found[0], 'openblas_thread_timeout', None) if found else None\n"
               "print(dict(os.environ) == before, 'OPENBLAS_THREAD_TIMEOUT' in os.environ,"
               " timeout() if timeout else 'none')", OPENBLAS_THREAD_TIMEOUT=None)
    changed, has_variable, timeout = out.split()
    assert changed == "True" and has_variable == "False"
    assert timeout in ("0", "none")  # OpenBLAS's own default, where there is an OpenBLAS to ask


# A fresh interpreter that imports NumPy first (as tests/conftest.py and most programs do), holds OpenBLAS to two
# threads, and prints the CPU time the process spends while its main thread sleeps right after each of a few
# products: OpenBLAS's idle worker spinning, or not.
IDLE_CPU = """
import time
import numpy as np
import seq2seq
from seq2seq.fast.cpu import native
native._openblas_calls()[1](2)
if {tune}:
    tuning = seq2seq.tune_cpu()
    assert tuning.blas_thread_timeout == 4, tuning
a = np.random.default_rng(0).random((512, 512), dtype=np.float32)
a @ a  # OpenBLAS's threads start
idle = 0.0
for _ in range(3):
    a @ a
    start = time.process_time()
    time.sleep(0.25)
    idle += time.process_time() - start
print(idle)
"""


def test_tune_lets_openblas_threads_sleep_after_a_product_though_numpy_was_imported_first():
    if not _numpy_uses_openblas_on_linux() or not cpu.can_set_blas_threads():
        pytest.skip("NumPy here is not built on an OpenBLAS this process can set, or this is not Linux")
    untuned = float(_run(IDLE_CPU.format(tune=False), OPENBLAS_THREAD_TIMEOUT=None))
    tuned = float(_run(IDLE_CPU.format(tune=True), OPENBLAS_THREAD_TIMEOUT=None))
    # By default the worker spins 2^28 cycles (about 0.1 s) after each product; tuned, 2^4 cycles
    assert tuned < 0.03 < 0.06 < untuned, (tuned, untuned)


def test_tune_reports_what_it_set_keeps_the_users_timeout_and_leaves_the_environment_as_it_was():
    if not _numpy_uses_openblas_on_linux() or not cpu.can_set_blas_threads():
        pytest.skip("NumPy here is not built on an OpenBLAS this process can set, or this is not Linux")
    code = ("import os, seq2seq\n"
            "before = dict(os.environ)\n"
            "first, again = seq2seq.tune_cpu(), seq2seq.tune_cpu()\n"
            "assert first == again and dict(os.environ) == before, (first, again)\n"
            "print(first.keeps_freed_memory, first.blas_thread_timeout, len(first.notes))")
    assert _run(code, OPENBLAS_THREAD_TIMEOUT=None, SEQ2SEQ_SYSTEM_MALLOC=None).split() == [
        str(_glibc()), "4", "0" if _glibc() else "1"]
    assert _run(code, OPENBLAS_THREAD_TIMEOUT="6").split()[1] == "6"  # the user's value, kept


def test_tune_says_why_a_setting_was_not_applied(monkeypatch):
    monkeypatch.setenv("SEQ2SEQ_SYSTEM_MALLOC", "1")
    monkeypatch.setattr(cpu, "_openblas", ())  # as with Accelerate or MKL
    tuning = cpu.tune()
    assert tuning.keeps_freed_memory is False and tuning.blas_thread_timeout is None
    assert tuning.notes == ("malloc: SEQ2SEQ_SYSTEM_MALLOC is set",
                            "OpenBLAS thread timeout: NumPy's BLAS is not an OpenBLAS that this process can find")


def test_keep_freed_memory_says_false_when_told_to_keep_the_system_malloc(monkeypatch):
    monkeypatch.setenv("SEQ2SEQ_SYSTEM_MALLOC", "1")
    assert cpu.keep_freed_memory() is False


@pytest.mark.parametrize("coretype", ["Nehalem", "Haswell"])  # tables x86-64 OpenBLAS wheels carry
def test_tune_reports_the_kernels_openblas_runs_as_openblas_coretype_names_them(coretype):
    if not _numpy_uses_openblas_on_linux() or platform.machine() != "x86_64":
        pytest.skip("NumPy here is not built on OpenBLAS, or this is not Linux on x86-64")
    code = "import seq2seq; print(seq2seq.tune_cpu().blas_kernels)"
    assert _run(code, OPENBLAS_CORETYPE=coretype).lower() == coretype.lower()
    assert _run(code, OPENBLAS_CORETYPE=None) not in ("", "None")  # OpenBLAS's own pick for this CPU, by name


def test_blas_kernels_is_none_without_an_openblas(monkeypatch):
    monkeypatch.setattr(cpu, "_openblas", ())  # as with Accelerate or MKL
    assert cpu.blas_kernels() is None and cpu.tune().blas_kernels is None
