"""kernels/_threads.py: the CPU kernels' pool runs every range once, the ranges at the same time,
and hands a range's error to the caller."""
import threading

import pytest

from minisims.kernels import _threads


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("n, k", [(1, 1), (5, 2), (10, 7), (3, 3)])
def test_every_range_runs_once(monkeypatch, threads, n, k):
    monkeypatch.setattr(_threads, "THREADS", threads)
    seen = []
    lock = threading.Lock()

    def fn(n0, n1):
        with lock:
            seen.extend(range(n0, n1))
    _threads.run(fn, _threads.split(n, k))
    assert sorted(seen) == list(range(n))


@pytest.mark.parametrize("threads", [2, 3])
def test_the_ranges_run_at_the_same_time(monkeypatch, threads):
    # each range waits for all the others: run in turn, they would time out (the pool that was
    # here before passed this too: its slow calls were seen with numba kernels only)
    monkeypatch.setattr(_threads, "THREADS", threads)
    for _ in range(50):
        barrier = threading.Barrier(threads, timeout=5)
        _threads.run(lambda n0, n1: barrier.wait(), _threads.split(threads))


@pytest.mark.parametrize("failing", [0, 1])
def test_an_error_in_a_range_reaches_the_caller(monkeypatch, failing):
    # range 0 runs on the calling thread, range 1 on a worker: either's error is raised, after
    # the other range has finished, and the pool still works afterwards
    monkeypatch.setattr(_threads, "THREADS", 2)
    finished = []

    def fn(n0, n1):
        if n0 == failing:
            raise ValueError(f"range {n0}")
        finished.append(n0)
    with pytest.raises(ValueError, match=f"range {failing}"):
        _threads.run(fn, [(0, 1), (1, 2)])
    assert finished == [1 - failing]
    done = []
    _threads.run(lambda n0, n1: done.append(n0), [(0, 1), (1, 2)])
    assert sorted(done) == [0, 1]
