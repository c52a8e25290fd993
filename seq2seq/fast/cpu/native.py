"""The CPU's native libraries, tuned from Python: OpenBLAS's threads and the C library's memory allocator.

NumPy hands its matrix products to OpenBLAS and takes its array memory from ``malloc``. Both libraries have
defaults made for other programs than a training loop; this file adjusts them through ``ctypes`` and does nothing
where a library is not there (macOS, musl, a NumPy built on MKL or Accelerate). One more OpenBLAS setting,
``OPENBLAS_THREAD_TIMEOUT``, is made in ``__init__.py``: OpenBLAS reads it once, when NumPy loads it.

**OpenBLAS's threads.** OpenBLAS splits a product of more than 2^18 multiply-adds over threads of its own. Inside
``parallel.for_each_block`` blocks (attention's products, one small one per head), those threads would compete with
ours for the same cores. ``blas_one_thread()`` holds OpenBLAS to one thread while the blocks run, by its
``openblas_set_num_threads`` (about half a microsecond a call), and tells where it can't (see
``attention._query_chunks`` for what is done then).

**malloc.** glibc serves an allocation from 128 KiB up with a fresh ``mmap`` and gives it back to the kernel on
``free``; it raises that threshold as it sees such blocks freed (up to 32 MiB), but keeps trimming the top of the
heap. A training step allocates and frees a few hundred MiB of activations and gradients, so every step touches
fresh pages, and each first touch is a page fault in which the kernel zeroes a 4 KiB page. Measured on 2 AVX2
cores, MiniLM bert2bert at batch 16 x 128 tokens: ~60,000 page faults and ~0.4 s of system time a step (3.4 s).
``keep_freed_memory()`` sets glibc's ``M_MMAP_MAX`` to 0, so no block is served by a mapping of its own (glibc still
maps memory when the heap cannot grow), and ``M_TRIM_THRESHOLD`` to 2 GiB: memory a step frees stays in the process
for the next step. ``M_MMAP_THRESHOLD`` alone (at most 32 MiB) is not enough: the vocabulary-sized arrays (logits
and their gradient, 512 x 30,522 floats = 62 MB; the tied embedding's gradient, 47 MB) are larger, still fresh
pages every step, and faulting them in from two threads at once is slow: softmax-cross-entropy's backward took
0.1 s with a fresh gradient against 0.017 s with a reused one. Measured, median of steps 3-10 (2 AVX2 cores,
2026-12-05):

    a step at batch x source/target   M_MMAP_THRESHOLD = 32 MiB (before)      M_MMAP_MAX = 0 (this)
    16 x 128/32                       2.11 s, 1,700-2,200 faults, 0.12 s sys   2.08 s, 5 faults, 0.06 s sys
    64 x 64/24                        4.89 s, 1,414 faults, 0.98 s sys         4.26 s (-13%), 6 faults, 0.10 s sys

The price: memory freed is not handed back to the system while the process runs (the peak stays the same: 2,088
MiB against 2,097 with the 32 MiB threshold at 64 x 64/24). ``import seq2seq`` calls it, unless
``SEQ2SEQ_SYSTEM_MALLOC=1`` is set; it changes only how later allocations are served.
"""
import contextlib
import ctypes
import ctypes.util
import os
import threading

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, from glibc's malloc.h
_TRIM_THRESHOLD = (1 << 31) - 1  # 2 GiB, the largest value mallopt's int takes

_blas_lock = threading.Lock()
_blas_users = 0  # callers inside blas_one_thread() right now
_blas_saved = None  # OpenBLAS's thread count before the first of them
_blas_calls = None  # (get_num_threads, set_num_threads) of NumPy's OpenBLAS; () when there is none; None: not looked up


def keep_freed_memory():
    """Make glibc's malloc keep freed memory for reuse (see the module's docstring); True when it could."""
    if os.environ.get("SEQ2SEQ_SYSTEM_MALLOC", "") not in ("", "0"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt  # glibc only: musl and macOS have none
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def _openblas_calls():
    """OpenBLAS's thread-count getter and setter, from the shared library this process has loaded, or ``()``.

    The names differ by build: ``openblas_*`` in a system OpenBLAS, ``scipy_openblas_*64_`` in the copy that NumPy's
    wheels bundle (64-bit integers, renamed so as not to clash with another OpenBLAS in the same process).
    """
    global _blas_calls
    if _blas_calls is None:
        import numpy  # noqa: F401, PLC0415 - loads the OpenBLAS to look for (and after OPENBLAS_THREAD_TIMEOUT is set)
        _blas_calls = ()
        try:
            with open("/proc/self/maps") as maps:  # what is mapped into this process: 5 fields, then a path
                mapped = {fields[5].strip() for fields in (line.split(None, 5) for line in maps) if len(fields) == 6}
            # NumPy's own copy first (wheels keep it in numpy.libs/), should another package have loaded one too
            paths = sorted((path for path in mapped if "openblas" in os.path.basename(path).lower()),
                           key=lambda path: ("numpy" not in path, path))
        except OSError:  # not Linux
            paths = []
        for path in paths:
            try:
                library = ctypes.CDLL(path)  # already loaded: this only finds it again
            except OSError:
                continue
            for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", ""), ("openblas", "64_")):
                getter = getattr(library, f"{prefix}_get_num_threads{suffix}", None)
                setter = getattr(library, f"{prefix}_set_num_threads{suffix}", None)
                if getter is not None and setter is not None:
                    getter.restype, setter.argtypes = ctypes.c_int, [ctypes.c_int]
                    _blas_calls = (getter, setter)
                    return _blas_calls
    return _blas_calls


def can_set_blas_threads():
    """True when ``blas_one_thread()`` really holds NumPy's OpenBLAS to one thread."""
    return bool(_openblas_calls())


@contextlib.contextmanager
def blas_one_thread():
    """Inside the ``with`` block, each OpenBLAS product runs on the thread that calls it; OpenBLAS's thread count
    is restored when the last of the callers inside leaves. Does nothing where ``can_set_blas_threads()`` is False."""
    global _blas_users, _blas_saved
    calls = _openblas_calls()
    if not calls:
        yield
        return
    getter, setter = calls
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = getter()
            setter(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                setter(_blas_saved)
