"""Sweeps: every (cell, chunk of runs) of a self-consuming loop experiment, through any executor.

# R runs, C cells
Runs train together on the ensemble axis in chunks of at most ``chunk_size`` runs (memory grows
linearly with it); the (cell, chunk) tasks of a sweep go through any ``concurrent.futures``
executor: the default runs them in this process one after another, a ThreadPoolExecutor or
ProcessPoolExecutor runs several at once, and a Dask ``client.get_executor()`` spreads them on a
cluster. Tasks are plain picklable data plus a top-level function.
"""
from __future__ import annotations

import os
from concurrent.futures import Executor, Future

import numpy as np

from .. import backend
from .loop import Cell, LoopConfig, LoopResult, run_loop_chunk


class _Deferred(Future):
    """A future that runs its call the first time its result is asked for."""

    def __init__(self, fn, args, kwargs):
        super().__init__()
        self._call = (fn, args, kwargs)

    def result(self, timeout=None):
        if self._call is not None:
            fn, args, kwargs = self._call
            self._call = None
            try:
                self.set_result(fn(*args, **kwargs))
            except BaseException as e:  # the future carries the error to the caller
                self.set_exception(e)
        return super().result(timeout)


class InlineExecutor(Executor):
    """The default executor: runs each task in this process, one after another, when its result
    is asked for (so progress and partial results appear as tasks finish)."""

    def submit(self, fn, /, *args, **kwargs):
        return _Deferred(fn, args, kwargs)


def bytes_per_run(cfg: LoopConfig, n_synth: int) -> int:
    """A rough upper bound of one run's working memory while training (float32 activations of
    every layer, kept for backward, plus the ReLU masks and temporaries)."""
    n = max(cfg.n_real + n_synth, cfg.sims.n_synth, cfg.n_eval, n_synth)
    H, L = cfg.sims.mlp.hidden, cfg.sims.mlp.depth
    return 4 * n * H * (3 * L + 6)


def chunk_sizes(runs: int, chunk_size: int) -> list[int]:
    """Split ``runs`` into chunks of ``chunk_size`` (the last one may be smaller)."""
    if runs < 1 or chunk_size < 1:
        raise ValueError(f"need runs >= 1 and chunk_size >= 1, got {runs}, {chunk_size}")
    return [min(chunk_size, runs - s) for s in range(0, runs, chunk_size)]


def run_chunks(runs: int, chunk_size: int, progress: bool = False, desc: str = "runs"):
    """(first run, size) of each chunk of ``runs`` runs, with a progress bar over the runs when
    ``progress`` (so a long job of many chunks shows how far it is and its ETA)."""
    sizes = chunk_sizes(runs, chunk_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=runs, unit="run", desc=desc)
    start = 0
    try:
        for size in sizes:
            yield start, size
            start += size
            if bar is not None:
                bar.update(size)
    finally:
        if bar is not None:
            bar.close()


def auto_chunk_size(cfg: LoopConfig, cells, memory_mb: float) -> int:
    """The largest chunk whose working memory stays under ``memory_mb`` for every cell."""
    worst = max(bytes_per_run(cfg, c.n_synth) for c in cells)
    return max(1, int(memory_mb * 2 ** 20 // worst))


def _task(cfg: LoopConfig, cell: Cell, runs: int, seed: int, first_run: int, device: str,
          blas_threads: int | None, parent_pid: int) -> LoopResult:
    """One (cell, chunk) of a sweep; top level so process pools can pickle it."""
    if backend.current_device() != device:
        backend.use_device(device)
    in_parent = os.getpid() == parent_pid  # the parent set its own limit
    with backend.blas_threads(None if in_parent else blas_threads):
        return run_loop_chunk(cfg, cell, runs, seed, first_run)


def sweep(cfg: LoopConfig, cells, runs: int, seed: int = 0, chunk_size: int | None = None,
          executor: Executor | None = None, memory_mb: float = 256, blas_threads: int | None = None,
          progress: bool = False, on_cell=None) -> dict:
    """Run the loop for every cell, ``runs`` runs each. Returns {cell: LoopResult (R,G,...)}.

    Tasks are (cell, chunk) pairs submitted to ``executor`` (default: in-process, serial). The
    chunk size is ``chunk_size`` or the largest that fits ``memory_mb``; it changes the memory and
    the speed, not the results (every run has its own random streams). ``blas_threads`` caps the BLAS
    threads of each process (1 is best when several tasks run at once). ``on_cell(results so
    far)`` is called each time a cell's last chunk arrives (e.g. to save partial results of a long
    sweep).
    """
    cells = list(cells)
    if chunk_size is None:
        chunk_size = auto_chunk_size(cfg, cells, memory_mb)
    sizes = chunk_sizes(runs, chunk_size)
    starts = [sum(sizes[:c]) for c in range(len(sizes))]  # each chunk's first run
    executor = executor or InlineExecutor()
    device = backend.current_device()
    out = {}
    # BLAS thread pools are per process: limit this one for inline and thread-pool tasks; process
    # workers limit their own in _task
    with backend.blas_threads(blas_threads):
        futures = {(cell, c): executor.submit(_task, cfg, cell, size, seed, starts[c], device,
                                              blas_threads, os.getpid())
                   for cell in cells for c, size in enumerate(sizes)}
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(futures), desc="sweep tasks")
        for cell in cells:  # wait in submission order; a failure raises here
            chunks = []
            for c in range(len(sizes)):
                chunks.append(futures[(cell, c)].result())
                if bar is not None:
                    bar.update(1)
            out[cell] = LoopResult(cell, np.concatenate([r.mu for r in chunks]),
                                   np.concatenate([r.cov for r in chunks]),
                                   sum(r.seconds for r in chunks))
            if on_cell is not None:
                on_cell(dict(out))
        if bar is not None:
            bar.close()
    return out
