"""The CPU's native libraries, tuned from Python: OpenBLAS's threads and the C library's memory allocator.

NumPy hands its matrix products to OpenBLAS and takes its array memory from ``malloc``. Both libraries have
defaults made for other programs than a training loop; this file adjusts them through ``ctypes`` and does nothing
where a library is not there (macOS, musl, a NumPy built on MKL or Accelerate). Importing the package changes
neither: settings of the whole process are something a program asks for, by calling ``tune()`` (also
``seq2seq.tune_cpu()``) once at its start, as the command line and the ``Trainer`` do. What each setting is worth
was measured: benchmarks/RESULTS.md.

**OpenBLAS's idle threads.** After a product, OpenBLAS's worker threads spin for 2^28 cycles (about a tenth of a
second) before they sleep, on the very cores that the elementwise work right after it (``parallel.py``) wants.
``OPENBLAS_THREAD_TIMEOUT=4`` lets them sleep after 2^4 cycles. OpenBLAS reads that variable once, when NumPy loads
it (before any code here runs: importing the package imports NumPy), and its threads take the value when they
start. So ``tune()`` sets the variable for a moment, has OpenBLAS read its environment again
(``openblas_read_env``) and, when the value changed, stops its threads (``blas_thread_shutdown_``, what OpenBLAS
itself does before a ``fork``); the next product starts them again, with the new timeout. A value the user set is
kept, and the environment is left as it was found.

**OpenBLAS's thread count.** OpenBLAS splits a product of more than 2^18 multiply-adds over threads of its own.
Inside ``parallel.for_each_block`` blocks (attention's products, one small one per head), those threads would
compete with ours for the same cores. ``blas_one_thread()`` holds OpenBLAS to one thread while the blocks run, by
its ``openblas_set_num_threads`` (a cheap call), and tells where it can't (see ``attention._query_chunks`` for what
is done then).

**malloc.** glibc serves an allocation from 128 KiB up with a fresh ``mmap`` and gives it back to the kernel on
``free``; it raises that threshold as it sees such blocks freed (up to 32 MiB), but keeps trimming the top of the
heap. A training step allocates and frees a few hundred MiB of activations and gradients, so every step touches
fresh pages, and each first touch is a page fault in which the kernel zeroes a 4 KiB page. ``keep_freed_memory()``
sets glibc's ``M_MMAP_MAX`` to 0, so no block is served by a mapping of its own (glibc still maps memory when the
heap cannot grow), and ``M_TRIM_THRESHOLD`` to 2 GiB: memory a step frees stays in the process for the next step.
``M_MMAP_THRESHOLD`` alone (at most 32 MiB) is not enough: the vocabulary-sized arrays (logits and their gradient,
512 x 30,522 floats = 62 MB; the tied embedding's gradient, 47 MB) are larger, still fresh pages every step, and
faulting them in from two threads at once is slow. The price: memory freed is not handed back to the system while
the process runs (the peak stays about the same). ``SEQ2SEQ_SYSTEM_MALLOC=1`` keeps glibc's defaults; the setting
changes only how later allocations are served.
"""
import contextlib
import ctypes
import ctypes.util
import dataclasses
import os
import sys
import threading

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, from glibc's malloc.h
_TRIM_THRESHOLD = (1 << 31) - 1  # 2 GiB, the largest value mallopt's int takes
BLAS_THREAD_TIMEOUT = "4"  # OPENBLAS_THREAD_TIMEOUT: idle OpenBLAS threads spin 2^4 cycles, then sleep

_blas_lock = threading.Lock()
_blas_users = 0  # callers inside blas_one_thread() right now
_blas_saved = None  # OpenBLAS's thread count before the first of them
_openblas = None  # (library, get_num_threads, set_num_threads) of NumPy's OpenBLAS; () when none; None: not looked up


@dataclasses.dataclass(frozen=True)
class Tuning:
    """What ``tune()`` put in force; ``notes`` says, in words, why a setting is not."""

    keeps_freed_memory: bool  # glibc's malloc keeps the memory a step frees (keep_freed_memory)
    blas_thread_timeout: int | None  # OPENBLAS_THREAD_TIMEOUT as OpenBLAS now holds it; None: no OpenBLAS to set
    blas_kernels: str | None = None  # the table of kernels OpenBLAS runs ("Haswell", "SkylakeX", ...); None: unknown
    notes: tuple = ()


def tune():
    """Set this process's native libraries for training and generation: OpenBLAS's idle threads sleep at once, and
    glibc's malloc keeps freed memory (see the module's docstring). Returns a ``Tuning``; calling it again is cheap.

    Call it at the start of a program, before other threads run matrix products: the first call restarts OpenBLAS's
    threads (unless the timeout was in the environment when the program started), which must not happen under a
    product running on another thread.
    """
    notes = []
    keeps = keep_freed_memory()
    if not keeps:
        notes.append("malloc: SEQ2SEQ_SYSTEM_MALLOC is set" if _system_malloc_wanted() else
                     "malloc: not glibc's (no mallopt)")
    timeout, why_not = _set_blas_thread_timeout()
    if why_not:
        notes.append(f"OpenBLAS thread timeout: {why_not}")
    return Tuning(keeps_freed_memory=keeps, blas_thread_timeout=timeout, blas_kernels=blas_kernels(),
                  notes=tuple(notes))


def blas_kernels():
    """The table of kernels NumPy's OpenBLAS runs, by OpenBLAS's name for it ("Haswell", "SkylakeX", ...): the one
    it picked for this CPU when it loaded, or the one ``OPENBLAS_CORETYPE`` named; None without such an OpenBLAS."""
    found = _find_openblas()
    corename = _openblas_function(found[0], "get_corename") if found else None
    if corename is None:
        return None
    corename.restype = ctypes.c_char_p
    return corename().decode().strip()


def _system_malloc_wanted():
    return os.environ.get("SEQ2SEQ_SYSTEM_MALLOC", "") not in ("", "0")


def keep_freed_memory():
    """Make glibc's malloc keep freed memory for reuse (see the module's docstring); True when it could."""
    if _system_malloc_wanted():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt  # glibc only: musl and macOS have none
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def _set_blas_thread_timeout():
    """Put ``OPENBLAS_THREAD_TIMEOUT`` (the user's value, else 4) in force in NumPy's OpenBLAS, loaded and running;
    returns (the value OpenBLAS now holds, or None; why it could not be set, or None)."""
    found = _find_openblas()
    if not found:
        return None, "NumPy's BLAS is not an OpenBLAS that this process can find"
    timeout, read_env, shutdown = (getattr(found[0], name, None) for name in
                                   ("openblas_thread_timeout", "openblas_read_env", "blas_thread_shutdown_"))
    if timeout is None or read_env is None or shutdown is None:
        return None, "this OpenBLAS lacks openblas_thread_timeout, openblas_read_env or blas_thread_shutdown_"
    timeout.restype, read_env.restype = ctypes.c_uint, None
    with _blas_lock:
        before = timeout()
        if _blas_users:  # our blocks are running products on other threads: stopping OpenBLAS's is not safe
            return before, "OpenBLAS was busy on other threads; call tune() before starting them"
        with _environment_default("OPENBLAS_THREAD_TIMEOUT", BLAS_THREAD_TIMEOUT):
            read_env()  # OpenBLAS's settings, read from the environment again (it read them once, at load)
        now = timeout()
        if now != before:
            # Its threads took the old timeout when they started: stop them; the next product starts them again
            shutdown()
    return now, None


@contextlib.contextmanager
def _environment_default(name, value):
    """Within the block, ``os.environ[name]`` is ``value`` unless it was set already; afterwards, as it was."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        del os.environ[name]


def _find_openblas():
    """NumPy's OpenBLAS, from the shared library this process has loaded: (library, get_num_threads,
    set_num_threads), or ``()``.

    The names differ by build: ``openblas_*`` in a system OpenBLAS, ``scipy_openblas_*64_`` in the copy that NumPy's
    wheels bundle (64-bit integers, renamed so as not to clash with another OpenBLAS in the same process).
    """
    global _openblas
    if _openblas is None:
        import numpy  # noqa: F401, PLC0415 - loads the OpenBLAS to look for (where nothing has yet)
        _openblas = ()
        for path in _mapped_openblas_paths():
            try:
                library = ctypes.CDLL(path)  # already loaded: this only finds it again
            except OSError:
                continue
            getter, setter = (_openblas_function(library, name) for name in ("get_num_threads", "set_num_threads"))
            if getter is not None and setter is not None:
                getter.restype, setter.argtypes = ctypes.c_int, [ctypes.c_int]
                _openblas = (library, getter, setter)
                return _openblas
    return _openblas


def _mapped_openblas_paths():
    """The OpenBLAS libraries mapped into this process, NumPy's own copy first (wheels keep it in numpy.libs/)."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        with open("/proc/self/maps") as maps:  # what is mapped into this process: 5 fields, then a path
            mapped = {fields[5].strip() for fields in (line.split(None, 5) for line in maps) if len(fields) == 6}
    except OSError:
        return []
    return sorted((path for path in mapped if "openblas" in os.path.basename(path).lower()),
                  key=lambda path: ("numpy" not in path, path))


def _openblas_function(library, name):
    """OpenBLAS's ``openblas_<name>`` under whichever of its builds' names ``library`` has (see ``_find_openblas``),
    or None."""
    for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", ""), ("openblas", "64_")):
        function = getattr(library, f"{prefix}_{name}{suffix}", None)
        if function is not None:
            return function
    return None


def _openblas_calls():
    """OpenBLAS's thread-count getter and setter, or ``()``."""
    found = _find_openblas()
    return found[1:] if found else ()


def can_set_blas_threads():
    """True when ``blas_one_thread()`` really holds NumPy's OpenBLAS to one thread."""
    return bool(_openblas_calls())


def blas_one_thread():
    """Inside the ``with`` block, each OpenBLAS product runs on the thread that calls it; OpenBLAS's thread count
    is restored when the last of the callers inside leaves. Does nothing where ``can_set_blas_threads()`` is False.

    A small class rather than a generator-based context manager: a decode step enters it about a hundred times
    (``thin.py``), and the generator's machinery cost more than the two OpenBLAS calls."""
    return _BLAS_ONE_THREAD


class _BlasOneThread:
    def __enter__(self):
        global _blas_users, _blas_saved
        calls = _openblas_calls()
        if calls:
            with _blas_lock:
                if _blas_users == 0:
                    _blas_saved = calls[0]()  # the getter
                    calls[1](1)  # the setter
                _blas_users += 1
        return self

    def __exit__(self, *exc_info):
        global _blas_users
        calls = _openblas_calls()
        if calls:
            with _blas_lock:
                _blas_users -= 1
                if _blas_users == 0:
                    calls[1](_blas_saved)


_BLAS_ONE_THREAD = _BlasOneThread()  # holds no state of its own: one object serves every caller
