"""Sweeps: every (cell, chunk of runs) of a self-consuming loop experiment, through any executor.

# R runs, C cells, G generations
Runs train together on the ensemble axis in chunks of at most ``chunk_size`` runs (memory grows
linearly with it); each chunk is one task of a ``concurrent.futures`` executor: the default runs
them in this process one after another, a ThreadPoolExecutor or ProcessPoolExecutor runs several
at once, and a Dask cluster (minisims.executors) spreads them over machines. Tasks are plain
picklable data plus a top-level function, and every run has its own random streams, so the
numbers are the same bit for bit on every executor (for one BLAS thread per task).

    sweep        every (cell, chunk) of a loop experiment; one progress bar over
                 cells x chunks x generations; each cell handed to ``on_cell`` as it finishes
    map_chunks   any experiment's chunk function over the chunks of its runs (figures 5 and 6,
                 autoguidance, figure 4's generation-1 panel)
"""
from __future__ import annotations

import os
import threading
from collections import Counter
from concurrent.futures import Executor, Future, as_completed

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


def _completed(futures):
    """``futures`` as they finish: in order for the default executor (its tasks run only when
    asked for), in the order they complete for any other (a cell that finishes early is saved
    early, whatever runs before it in the list)."""
    if all(isinstance(f, _Deferred) for f in futures):
        return iter(futures)
    return as_completed(futures)


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


def auto_chunk_size(cfg: LoopConfig, cells, memory_mb: float) -> int:
    """The largest chunk whose working memory stays under ``memory_mb`` for every cell."""
    worst = max(bytes_per_run(cfg, c.n_synth) for c in cells)
    return max(1, int(memory_mb * 2 ** 20 // worst))


def run_task(fn, kwargs: dict, device: str, blas_threads: int | None, parent_pid: int):
    """``fn(**kwargs)`` as one task, wherever the executor runs it; top level so process pools
    and Dask can pickle it. A task in another process selects the device and limits its own BLAS
    threads; in this process the caller has set the limit already."""
    if backend.current_device() != device:
        backend.use_device(device)
    in_parent = os.getpid() == parent_pid
    with backend.blas_threads(None if in_parent else blas_threads):
        return fn(**kwargs)


def _bar(total: int, desc: str, unit: str):
    from ..progress import bar
    return bar(total=total, desc=desc, unit=unit)


def map_chunks(fn, runs: int, chunk_size: int, executor: Executor | None = None,
               blas_threads: int | None = None, progress: bool = False, desc: str = "runs",
               **kwargs) -> list:
    """``[fn(runs=size, first_run=start, **kwargs) for each chunk of runs]``, each chunk one task
    of ``executor`` (default: in this process, one after another). ``fn`` must be a top-level
    function for a process pool or a cluster. With ``progress``, a bar over the runs moves as each
    chunk's result arrives (on every executor)."""
    sizes = chunk_sizes(runs, chunk_size)
    starts = [0, *np.cumsum(sizes[:-1]).tolist()]  # each chunk's first run
    executor = executor or InlineExecutor()
    device = backend.current_device()
    with backend.blas_threads(blas_threads):
        futures = [executor.submit(run_task, fn, {**kwargs, "runs": size, "first_run": start},
                                   device, blas_threads, os.getpid())
                   for start, size in zip(starts, sizes)]
        bar = _bar(runs, desc, "run") if progress else None
        try:
            out = []
            for future, size in zip(futures, sizes):  # in order: the caller concatenates them
                out.append(future.result())
                if bar is not None:
                    bar.update(size)
        finally:
            if bar is not None:
                bar.close()
    return out


class _Progress:
    """One bar over every generation of every (cell, chunk) task of a sweep.

    A task that runs in this process (the default executor, a thread pool) ticks the bar after
    each of its generations. A bar cannot cross processes: a task sent to a process pool or a
    Dask worker gets no ticker (it pickles to None), and its generations are counted at once
    when its result arrives.
    """

    def __init__(self, tasks: int, generations: int, desc: str):
        self.bar = _bar(tasks * generations, desc, "gen")
        self.generations = generations
        self.ticked = Counter()  # task -> generations ticked from inside the task
        self.lock = threading.Lock()  # thread-pool tasks tick at once

    def ticker(self, task):
        return _Ticker(self, task)

    def tick(self, task):
        with self.lock:
            self.ticked[task] += 1
            self.bar.update(1)

    def task_done(self, task):
        with self.lock:
            self.bar.update(self.generations - self.ticked.pop(task, 0))


class _Ticker:
    """``on_generation`` of one task: ticks its sweep's bar; pickled (sent to another
    process), it becomes None."""

    def __init__(self, progress: _Progress, task):
        self.progress, self.task = progress, task

    def __call__(self):
        self.progress.tick(self.task)

    def __reduce__(self):
        return _none, ()


def _none():
    return None


def sweep(cfg: LoopConfig, cells, runs: int, seed: int = 0, chunk_size: int | None = None,
          executor: Executor | None = None, memory_mb: float = 256, blas_threads: int | None = None,
          progress: bool = False, on_cell=None) -> dict:
    """Run the loop for every cell, ``runs`` runs each. Returns {cell: LoopResult (R,G,...)} in
    the order of ``cells``.

    Tasks are (cell, chunk) pairs submitted to ``executor`` (default: in-process, serial). The
    chunk size is ``chunk_size`` or the largest that fits ``memory_mb``; it changes the memory and
    the speed, not the results (every run has its own random streams). ``blas_threads`` caps the BLAS
    threads of each process (1 is best when several tasks run at once). ``on_cell(cell, result)``
    is called as each cell's last chunk arrives (e.g. to save it: a long sweep that is stopped
    loses only the cells in flight). ``progress`` shows one bar over cells x chunks x generations.
    """
    cells = list(cells)
    if not cells:
        return {}
    if chunk_size is None:
        chunk_size = auto_chunk_size(cfg, cells, memory_mb)
    sizes = chunk_sizes(runs, chunk_size)
    starts = [0, *np.cumsum(sizes[:-1]).tolist()]  # each chunk's first run
    executor = executor or InlineExecutor()
    device = backend.current_device()
    bar = _Progress(len(cells) * len(sizes), cfg.generations,
                    f"{_count(len(cells), 'cell')} x {_count(len(sizes), 'chunk')} x "
                    f"{_count(cfg.generations, 'generation')}") if progress else None
    chunks = {cell: [None] * len(sizes) for cell in cells}
    # BLAS thread pools are per process: limit this one for inline and thread-pool tasks; tasks
    # in other processes limit their own in run_task
    with backend.blas_threads(blas_threads):
        futures = {}
        for cell in cells:
            for c, size in enumerate(sizes):
                kwargs = dict(cfg=cfg, cell=cell, runs=size, seed=seed, first_run=starts[c],
                              on_generation=bar.ticker((cell, c)) if bar is not None else None)
                futures[executor.submit(run_task, run_loop_chunk, kwargs, device, blas_threads,
                                        os.getpid())] = (cell, c)
        try:
            for future in _completed(list(futures)):  # a failure raises here
                cell, c = futures[future]
                chunks[cell][c] = future.result()
                if bar is not None:
                    bar.task_done((cell, c))
                if all(r is not None for r in chunks[cell]) and on_cell is not None:
                    on_cell(cell, _joined(cell, chunks[cell]))
        finally:
            if bar is not None:
                bar.bar.close()
    return {cell: _joined(cell, chunks[cell]) for cell in cells}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("s" if n != 1 else "")


def _joined(cell: Cell, chunks) -> LoopResult:
    """One cell's LoopResult from its chunks' (in run order)."""
    return LoopResult(cell, np.concatenate([r.mu for r in chunks]),    # R,G,D
                      np.concatenate([r.cov for r in chunks]),          # R,G,D,D
                      sum(r.seconds for r in chunks))
