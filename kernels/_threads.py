"""The CPU kernels' threads: a pool of THREADS threads (NUMBA_NUM_THREADS by default) running
nogil numba kernels over ranges of a batch. Not numba's prange: the module docstring of
kernels/_conv2d_numba.py explains why OpenMP threads lose on this shared machine.

    split(N, k=None) -> [(n0, n1)]      the batch in k ranges (default one per thread)
    run(fn, ranges)                     fn(n0, n1) for each range, on the pool

Used by kernels/_conv2d_direct.py, kernels/_groupnorm_silu_numba.py, kernels/adam_ema.py and
kernels/bmm.py. Their results never depend on THREADS: each range's work is the same whichever
thread does it.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba

THREADS = max(1, int(numba.config.NUMBA_NUM_THREADS))  # threads over the batch
CHUNKS_PER_THREAD = 1  # ranges handed out per thread. 4 were meant to keep a thread on a core
# another process is using from holding the others up (this machine is shared); at batch 8 they
# cost the direct convolution 8-35% of its forward (kernels/_conv2d_direct.py, the UNet's shapes)

_POOL = None


def split(N, k=None):
    """[(n0, n1)]: range(N) in k ranges (default: THREADS * CHUNKS_PER_THREAD, one with one
    thread), at most one range per item."""
    if k is None:
        k = THREADS * CHUNKS_PER_THREAD if THREADS > 1 else 1
    k = max(1, min(N, k))
    edges = [N * r // k for r in range(k + 1)]
    return [(edges[r], edges[r + 1]) for r in range(k)]


def run(fn, ranges):
    """fn(n0, n1) for each range; on a pool of THREADS threads (the kernels release the GIL)
    when there is more than one range and more than one thread, else in order here."""
    global _POOL
    if len(ranges) == 1 or THREADS == 1:
        for n0, n1 in ranges:
            fn(n0, n1)
        return
    if _POOL is None or _POOL._max_workers != THREADS:
        _POOL = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="minisims_kernels")
    for f in [_POOL.submit(fn, n0, n1) for n0, n1 in ranges]:
        f.result()
