"""Tests for seq2seq/cpu.py: OpenBLAS held to one thread and restored, glibc's malloc keeping freed memory, and
both doing nothing where their library is missing."""
import ctypes
import os
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
    monkeypatch.setattr(cpu, "_blas_calls", ())  # as with Accelerate or MKL
    assert not cpu.can_set_blas_threads()
    with cpu.blas_one_thread():
        pass


def _where_a_block_comes_from(mib, env):
    """"heap" or "mmap": where glibc's malloc serves a block of ``mib`` MiB in a fresh interpreter that imported
    seq2seq (by mallinfo2's count of bytes in mmapped blocks, before and after)."""
    code = ("import ctypes, ctypes.util, seq2seq\n"
            "class Info(ctypes.Structure):\n"
            "    _fields_ = [(name, ctypes.c_size_t) for name in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',"
            " 'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]\n"
            "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
            "libc.mallinfo2.restype = Info\n"
            "libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]\n"
            "libc.free.argtypes = [ctypes.c_void_p]\n"
            f"before = libc.mallinfo2().hblkhd; block = libc.malloc({mib} << 20); after = libc.mallinfo2().hblkhd\n"
            "libc.free(block)\n"
            f"print('mmap' if after - before >= {mib} << 20 else 'heap')\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


# 4 MiB: a mid-sized activation; 64 MiB: above the 32 MiB that M_MMAP_THRESHOLD can reach (a vocabulary-sized
# gradient, 512 x 30,522 floats, is 62 MB)
@pytest.mark.parametrize("mib", [4, 64])
def test_import_makes_glibc_serve_large_blocks_from_the_heap_unless_told_not_to(mib):
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc 2.33 or later")
    assert _where_a_block_comes_from(mib, {}) == "heap"
    # glibc's default: either block is a mapping of its own (nothing was freed yet to raise the threshold)
    assert _where_a_block_comes_from(mib, {"SEQ2SEQ_SYSTEM_MALLOC": "1"}) == "mmap"


def test_keep_freed_memory_says_false_when_told_to_keep_the_system_malloc(monkeypatch):
    monkeypatch.setenv("SEQ2SEQ_SYSTEM_MALLOC", "1")
    assert cpu.keep_freed_memory() is False
