"""Self-consuming (autophagous) loops, paper Section 2 (Definition 1) and Section 4.2.1.

    loop.py      one loop of Definition 1 for a chunk of runs: each generation trains with
                 Algorithm 1's steps (minisims.sims), samples, and passes its samples on
    sweeps.py    every (cell, chunk) of an experiment through any concurrent.futures executor
                 (in this process, a pool, a Dask cluster); map_chunks for other experiments
    results.py   ratio summaries and the raw results file (npz, reloadable with NumPy alone)
"""
