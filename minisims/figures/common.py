"""What the toy figures share: the one function that turns sizes (minisims.toy.ToySizes) and a
formulation into a LoopConfig, atomic writers for their tables and arrays, a reader
for --replot that names the file when it is corrupt, and generation 1 over chunks of runs
(each chunk one task of any executor).

# R runs, W guidance values, D data dimension (2)
"""
from __future__ import annotations

import argparse
import os
import zipfile
import zlib
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import atomic_write
from ..cli_util import fail, writable_dir
from ..toy import sims_config

if TYPE_CHECKING:  # the loops are imported where they run: python -m minisims.toy runs none
    from ..loops.loop import LoopConfig
    from ..toy import ToySizes


def loop_config(sizes: ToySizes, formulation: str, **loop) -> LoopConfig:
    """The LoopConfig of ``sizes``; ``loop`` sets other LoopConfig fields (loop, generations)."""
    from ..loops.loop import LoopConfig
    return LoopConfig(n_real=sizes.n_real, n_eval=sizes.n_eval,
                      sims=sims_config(sizes, formulation), **loop)


def generation_one_runs(cfg: LoopConfig, omegas, runs: int, chunk_size: int, seed: int,
                        aux_factory=None, progress: bool = False, executor=None,
                        blas_threads: int | None = None) -> dict:
    """minisims.loops.loop.generation_one over ``runs`` runs in chunks of ``chunk_size``, each one task
    of ``executor`` (default: in this process). The chunk size and the executor change memory and
    speed, not the results. Returns {w: (mu (R,D), cov (R,D,D))}."""
    from ..loops.loop import generation_one
    from ..loops.sweeps import map_chunks
    omegas = [float(w) for w in omegas]
    parts = map_chunks(generation_one, runs, chunk_size, executor, blas_threads, progress,
                       "generation 1", cfg=cfg, omegas=omegas, seed=seed, aux_factory=aux_factory)
    return {w: (np.concatenate([p[w][0] for p in parts]),   # R,D
                np.concatenate([p[w][1] for p in parts]))   # R,D,D
            for w in omegas}


def replot(prog: str, folder: str, needed: str, report, *args) -> int:
    """--replot: ``report(folder, *args)`` on a finished run's files, written back into ``folder``.
    A folder without ``needed``, or one that cannot be written, exits 2 with one line; a corrupt
    or foreign file (report raises ValueError naming it) exits 1 with one line."""
    if not os.path.exists(os.path.join(folder, needed)):
        fail(prog, f"no {needed} in {folder!r}", 2)
    try:
        writable_dir(folder)  # the tables and figures are written back there
        return report(folder, *args)
    except argparse.ArgumentTypeError as e:
        fail(prog, str(e), 2)
    except ValueError as e:
        fail(prog, str(e), 1)


def write_text(path: str, text: str) -> None:
    """``text`` and a final newline at ``path``, atomically."""
    with atomic_write(path, "w") as f:
        f.write(text + "\n")


def write_npz(path: str, **arrays) -> None:
    """np.savez_compressed at ``path``, atomically (readable with numpy alone)."""
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def read_npz(path: str, required=()) -> dict:
    """All arrays of the npz at ``path`` (read now, not lazily). A file that is empty, truncated,
    not an npz, corrupt or lacks a ``required`` array raises ValueError naming the file; a file
    that cannot be opened raises its OSError (which names it)."""
    if not zipfile.is_zipfile(path):  # also opens it: a missing or unreadable file raises OSError
        raise ValueError(f"{path} is not an npz file (empty, truncated or not written by this command)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, KeyError, zlib.error, ValueError) as e:
        raise ValueError(f"{path} is corrupt ({type(e).__name__}: {e})") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not written by this command's version")
    return arrays


def halves(runs: int):
    """The runs that choose w (0, 2, 4, ...) and the disjoint runs that report it (1, 3, 5, ...).

    Every run trains its own models on its own data, so choosing on one half and measuring on the
    other keeps the choice out of the number reported: a minimum over w taken on the same runs is
    biased low wherever the ratios are noisy."""
    return list(range(0, runs, 2)), list(range(1, runs, 2))
