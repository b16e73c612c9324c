"""The CPU kernels' threads: a pool of THREADS threads (NUMBA_NUM_THREADS by default) running
nogil numba kernels over ranges of a batch. Not numba's prange: the module docstring of
kernels/_conv2d_numba.py explains why OpenMP threads lose on this shared machine.

    split(N, k=None) -> [(n0, n1)]      the batch in k ranges (default one per thread)
    run(fn, ranges)                     fn(n0, n1) for each range, on the pool
    run_blas(fn, n)                     fn over range(n) for work made of BLAS calls: on the
                                        pool inside a blas_on_one_thread scope, else fn(0, n)
    blas_on_one_thread()                context manager: the caller declares BLAS held on one
                                        thread (kernels may then call BLAS on the pool's threads)
    blas_declared_one_thread() -> bool  whether such a scope is open

Used by kernels/_conv2d_direct.py (and its _conv2d_pointwise.py, _conv2d_small_dw.py),
_groupnorm_silu_numba.py, _softmax_numba.py, adam_ema.py and bmm.py. Their results never depend
on THREADS: each range's work is the same whichever thread does it.
"""
from __future__ import annotations

import contextlib
import queue
import threading

import numba

THREADS = max(1, int(numba.config.NUMBA_NUM_THREADS))  # threads over the batch
CHUNKS_PER_THREAD = 1  # ranges handed out per thread. 4 were meant to keep a thread on a core
# another process is using from holding the others up (this machine is shared); at batch 8 they
# cost the direct convolution 8-35% of its forward (the UNet's shapes: docs/notes/kernels-conv.md)

_POOL = None
_BLAS_ONE_THREAD = 0  # how many blas_on_one_thread scopes are open
_BLAS_LOCK = threading.Lock()  # for that count (scopes may open on several Python threads)


def split(N, k=None):
    """[(n0, n1)]: range(N) in k ranges (default: THREADS * CHUNKS_PER_THREAD, one with one
    thread), at most one range per item."""
    if k is None:
        k = THREADS * CHUNKS_PER_THREAD if THREADS > 1 else 1
    k = max(1, min(N, k))
    edges = [N * r // k for r in range(k + 1)]
    return [(edges[r], edges[r + 1]) for r in range(k)]


class _Pool:
    """THREADS - 1 worker threads, each with a queue of its own; the calling thread is the
    THREADS-th, so a call with two threads wakes one worker. It replaced a
    concurrent.futures.ThreadPoolExecutor of THREADS workers (the caller waiting), under which
    the direct convolution's forward ranges at times started one after the other and at times
    each ran longer than alone; this pool is faster at every shape timed
    (docs/notes/kernels-conv.md)."""

    def __init__(self, threads):
        self.threads = threads
        self.inboxes = [queue.SimpleQueue() for _ in range(threads - 1)]
        for inbox in self.inboxes:
            threading.Thread(target=self._work, args=(inbox,), daemon=True,
                             name="minisims_kernels").start()

    @staticmethod
    def _work(inbox):
        while True:
            task = inbox.get()
            if task is None:  # the pool was replaced (THREADS changed)
                return
            fn, ranges, done = task
            try:
                for n0, n1 in ranges:
                    fn(n0, n1)
                done.put(None)
            except BaseException as e:  # handed to the caller, which raises it
                done.put(e)

    def run(self, fn, ranges):
        """Range r goes to thread r % THREADS (0: the caller); each worker gets its ranges as one
        task, so one put wakes it. Returns when all are done; raises the first error seen."""
        done = queue.SimpleQueue()
        shares = [ranges[t::self.threads] for t in range(self.threads)]
        busy = [(inbox, share) for inbox, share in zip(self.inboxes, shares[1:]) if share]
        for inbox, share in busy:
            inbox.put((fn, share, done))
        error = None
        try:
            for n0, n1 in shares[0]:
                fn(n0, n1)
        except BaseException as e:
            error = e
        for _ in busy:  # wait for every worker even after an error: none may run on unseen
            e = done.get()
            error = error or e
        if error is not None:
            raise error

    def close(self):
        for inbox in self.inboxes:
            inbox.put(None)


@contextlib.contextmanager
def blas_on_one_thread():
    """Declares, for the scope, that the caller holds NumPy's BLAS on one thread; it does not
    set it (kernels/ imports no threadpoolctl: minisims.nn.conv.network_blas_threads both holds
    BLAS on one thread and declares it). Inside such a scope a kernel may run BLAS calls on the
    pool's threads (kernels/_conv2d_pointwise.py); outside, the threads would multiply (each
    range's call spreading over BLAS's own threads), so it makes one call on BLAS's threads."""
    global _BLAS_ONE_THREAD
    with _BLAS_LOCK:
        _BLAS_ONE_THREAD += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_ONE_THREAD -= 1


def blas_declared_one_thread():
    """Whether a :func:`blas_on_one_thread` scope is open."""
    return _BLAS_ONE_THREAD > 0


def run_blas(fn, n):
    """fn(i0, i1) over range(n), where fn's work is BLAS calls: shared by the pool's threads
    inside a :func:`blas_on_one_thread` scope; elsewhere one call fn(0, n), on BLAS's own threads
    (the pool's threads on top of BLAS's would multiply)."""
    if blas_declared_one_thread():
        run(fn, split(n))
    else:
        fn(0, n)


def run(fn, ranges):
    """fn(n0, n1) for each range; on THREADS threads, the caller one of them (the kernels release
    the GIL), when there is more than one range and more than one thread, else in order here."""
    global _POOL
    if len(ranges) == 1 or THREADS == 1:
        for n0, n1 in ranges:
            fn(n0, n1)
        return
    if _POOL is None or _POOL.threads != THREADS:
        if _POOL is not None:
            _POOL.close()
        _POOL = _Pool(THREADS)
    _POOL.run(fn, ranges)
