"""The worker threads that ``parallel.for_each_block`` hands runs of blocks to: one per extra core, woken by a lock.

A decode step hands work to the other core about a hundred times (each thin product, ``thin.py``), so the cost of
one hand-over counts. ``concurrent.futures.ThreadPoolExecutor`` goes through a queue, a Future and its condition
variable: about 60 us from ``submit`` to ``result`` on this project's 2-core machines when they are busy, for a
function that does nothing. Here each worker owns two locks used as signals: the caller sets the job and releases
``go``; the worker runs it and releases ``done``, which the caller acquires. About half the time (measured:
benchmarks/RESULTS.md).

One caller at a time uses the workers (``try_claim``); a caller that finds them taken (a second Python thread
running blocks at the same moment, or blocks that run blocks) runs its work itself. Results never depend on which
thread ran a block, so this changes only the time. After a ``fork`` the child has no worker threads: the pool
notices the new process id and starts its own.
"""
import os
import threading


class Worker:
    """A daemon thread that runs ``fn(arg)`` each time ``start`` gives it one; ``wait`` returns ``(result,
    error)``: what it returned, or None and the exception it raised."""

    def __init__(self, name):
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._job = self._result = self._error = None
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def _loop(self):
        while True:
            self._go.acquire()  # sleeps until start() releases it
            fn, arg = self._job
            try:
                self._result = fn(arg)
            except BaseException as error:  # handed to the caller in wait()
                self._error = error
            self._done.release()

    def start(self, fn, arg):
        self._job, self._result, self._error = (fn, arg), None, None
        self._go.release()

    def wait(self):
        self._done.acquire()
        outcome = self._result, self._error
        self._job = self._result = self._error = None
        return outcome


class Workers:
    """Up to ``count`` workers, started when first needed; ``try_claim`` gives them to one caller at a time."""

    def __init__(self):
        self._lock = threading.Lock()  # held by the caller using the workers
        self._workers = []
        self._pid = os.getpid()

    def try_claim(self, count):
        """``count`` started workers, reserved for the calling thread until ``release``; None when another caller
        holds them (then run the work yourself)."""
        if not self._lock.acquire(blocking=False):
            return None
        if self._pid != os.getpid():  # a forked child: its parent's threads do not exist here
            self._workers, self._pid = [], os.getpid()
        while len(self._workers) < count:
            self._workers.append(Worker(f"seq2seq-{len(self._workers) + 1}"))
        return self._workers[:count]

    def release(self):
        self._lock.release()
