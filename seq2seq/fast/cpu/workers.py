"""The worker threads that ``parallel.for_each_task`` hands tasks to: one per extra core, woken by a lock.

A decode step hands work to the other core about a hundred times (each thin product, ``thin.py``), so the cost of
one hand-over counts. ``concurrent.futures.ThreadPoolExecutor`` goes through a queue, a Future and its condition
variable: about 60 us from ``submit`` to ``result`` on this project's 2-core machines when they are busy, for a
function that does nothing. Here each worker owns two locks: the caller sets the job and releases ``go``; the worker
runs it and releases ``busy``. Waking a sleeping thread is still the dear part: 20-50 us on bare metal, 50-100 us
on some virtual machines, where an idle virtual CPU has to be woken through the hypervisor.

So the caller never waits for a worker to wake up. The work of one call is a list of tasks that every thread takes
from, one at a time, by a shared counter (``Tasks``): the caller offers the list to each idle worker and starts
taking tasks itself at once. A worker that wakes late finds fewer tasks left, or none, and goes back to sleep; the
caller waits only for tasks a worker has actually taken and not yet finished. A worker still busy with an earlier
list (it woke after that call had finished) is simply not offered the next one.

One caller at a time uses the workers (``try_claim``); a caller that finds them taken (a second Python thread
running blocks at the same moment, or tasks that run tasks) runs its tasks itself. Results never depend on which
thread ran a task, so this changes only the time. After a ``fork`` the child has no worker threads: the pool
notices the new process id and starts its own.
"""
import itertools
import os
import threading


class Tasks:
    """``fn(0) .. fn(n - 1)``, each run once by whichever thread takes it next (``work``); ``wait`` returns their
    results in order once every task has finished, or raises the error of the first task (by index) that failed."""

    def __init__(self, fn, n):
        self._fn, self._n = fn, n
        self._next, self._finished = itertools.count(), itertools.count()  # next() of a count is atomic under the GIL
        self._results, self._errors = [None] * n, []
        self._all_done = threading.Lock()
        self._all_done.acquire()  # released by whichever thread finishes the last task
        if n == 0:
            self._all_done.release()

    def work(self):
        """Take tasks until none is left (called by the caller and by each worker the list was offered to)."""
        while (i := next(self._next)) < self._n:
            try:
                self._results[i] = self._fn(i)
            except BaseException as error:  # handed to the caller in wait()
                self._errors.append((i, error))
            finally:
                if next(self._finished) == self._n - 1:
                    self._all_done.release()

    def wait(self):
        self._all_done.acquire()
        if self._errors:
            raise min(self._errors, key=lambda pair: pair[0])[1]
        return self._results


class Worker:
    """A daemon thread that runs a job (a function of no arguments that raises nothing) each time ``offer`` gives
    it one while it is idle."""

    def __init__(self, name):
        self._go, self._busy = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._job = None
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def _loop(self):
        while True:
            self._go.acquire()  # sleeps until offer() releases it
            job, self._job = self._job, None
            try:
                job()
            finally:
                job = None  # not kept while asleep: a job's closure can hold a call's large temporaries
                self._busy.release()

    def offer(self, job):
        """Start ``job`` on this worker if it is idle and return True; False if it is still busy with another."""
        if not self._busy.acquire(blocking=False):
            return False
        self._job = job
        self._go.release()
        return True


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
