"""Self-consuming (autophagous) loops, paper Section 2 (Definition 1) and Section 4.2.1.

    loop.py      one loop of Definition 1 for a chunk of runs: each generation trains with
                 Algorithm 1's steps (minisims.sims), samples, and passes its samples on
    sweeps.py    every (cell, chunk) of an experiment through any concurrent.futures executor
                 (in this process, a pool, a Dask cluster); map_chunks for other experiments
    results.py   ratio summaries and the raw results file (npz, reloadable with NumPy alone)

Each name is imported from its module on first use, so that a program that needs a few of
them (the 2D toy: the MLP, not the UNet) loads only those.
"""
from ..lazy import lazy_names

_WHERE = {  # public name -> the module that defines it
    "LOOPS": "loop", "METHODS": "loop", "STREAMS": "loop", "LoopConfig": "loop", "Cell": "loop",
    "LoopResult": "loop", "run_loop_chunk": "loop", "generation_one": "loop",
    "generation_model": "loop", "real_data": "loop", "rng_for": "loop",
    "sweep": "sweeps", "InlineExecutor": "sweeps", "auto_chunk_size": "sweeps",
    "bytes_per_run": "sweeps", "chunk_sizes": "sweeps", "map_chunks": "sweeps",
    "run_task": "sweeps",
    "ratio_curve": "results", "converged_ratio": "results", "save_results": "results",
    "load_results": "results",
}
__all__ = list(_WHERE)
__getattr__, __dir__ = lazy_names(__name__, _WHERE)
