"""Self-consuming (autophagous) loops, paper Section 2 (Definition 1) and Section 4.2.1.

    loop.py      one loop of Definition 1 for a chunk of runs: each generation trains with
                 Algorithm 1's steps (minisims.sims), samples, and passes its samples on
    sweeps.py    every (cell, chunk) of an experiment through any concurrent.futures executor
                 (in this process, a pool, a Dask cluster); map_chunks for other experiments
    results.py   ratio summaries and the raw results file (npz, reloadable with NumPy alone)
"""
from .loop import (LOOPS, METHODS, STREAMS, Cell, LoopConfig, LoopResult, generation_model,
                   generation_one, real_data, rng_for, run_loop_chunk)
from .results import converged_ratio, load_results, ratio_curve, save_results
from .sweeps import (InlineExecutor, auto_chunk_size, bytes_per_run, chunk_sizes, map_chunks,
                     run_task, sweep)

__all__ = ["LOOPS", "METHODS", "STREAMS", "LoopConfig", "Cell", "LoopResult", "run_loop_chunk",
           "generation_one", "generation_model", "real_data", "rng_for", "sweep", "InlineExecutor",
           "auto_chunk_size", "bytes_per_run", "chunk_sizes", "map_chunks", "run_task", "ratio_curve",
           "converged_ratio",
           "save_results", "load_results"]
