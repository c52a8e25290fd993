"""Tests for seq2seq/fast/cpu/workers.py: tasks shared by whichever threads take them, workers that join only
when idle, and a caller that never waits for a worker with nothing in hand."""
import threading

import pytest

from seq2seq.fast.cpu import parallel
from seq2seq.fast.cpu.workers import Tasks, Worker


@pytest.fixture
def two_threads():
    before = parallel.num_threads()
    parallel.set_num_threads(2)
    yield
    parallel.set_num_threads(before)


def test_tasks_taken_by_two_threads_run_once_each_and_come_back_in_order():
    ran, both = [], threading.Barrier(2, timeout=20)

    def task(i):
        ran.append(i)
        if i in (0, 1):  # the first two tasks can only both finish on two threads
            both.wait()
        return i * i

    tasks = Tasks(task, 9)
    helper = threading.Thread(target=tasks.work)
    helper.start()
    tasks.work()
    assert tasks.wait() == [i * i for i in range(9)]
    helper.join()
    assert sorted(ran) == list(range(9))


def test_the_error_of_the_first_failing_task_is_raised_after_all_finished():
    finished = []

    def task(i):
        if i in (2, 5):
            raise ValueError(f"task {i}")
        finished.append(i)

    tasks = Tasks(task, 7)
    tasks.work()
    with pytest.raises(ValueError, match="task 2"):
        tasks.wait()
    assert sorted(finished) == [0, 1, 3, 4, 6]


def test_no_tasks():
    tasks = Tasks(lambda i: i, 0)
    tasks.work()
    assert tasks.wait() == []


def test_a_worker_takes_a_job_only_while_idle():
    go, done = threading.Event(), threading.Event()
    worker = Worker("test-worker")
    assert worker.offer(lambda: (go.wait(20), done.set()))
    assert not worker.offer(lambda: None)  # still busy with the first job
    go.set()
    assert done.wait(20)
    for _ in range(1000):  # it becomes idle right after the job returns
        if worker.offer(lambda: None):
            break
        threading.Event().wait(0.001)
    else:
        pytest.fail("the worker never became idle again")


def test_a_busy_worker_is_left_out_and_not_waited_for(two_threads):
    (worker,) = parallel._workers.try_claim(1)
    parallel._workers.release()
    go = threading.Event()
    while not worker.offer(lambda: go.wait(20)):  # occupy the worker (it may still be finishing an earlier job)
        threading.Event().wait(0.001)
    try:
        seen = []
        results = parallel.for_each_task(lambda i: (seen.append(threading.get_ident()), i)[1], 6)
        assert results == list(range(6))
        assert set(seen) == {threading.get_ident()}  # every task ran here, and the call did not wait for the worker
    finally:
        go.set()
