"""What the toy figures share: the sizes every preset has, the one function that turns sizes and a
formulation into SIMSConfig / LoopConfig, atomic writers for their tables and arrays, and
generation 1 over chunks of runs.

# R runs, W guidance values, D data dimension (2)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..atomic import atomic_write
from ..loops import LoopConfig, generation_one
from ..nn import MLPConfig
from ..sims import SIMSConfig


@dataclass(frozen=True, kw_only=True)
class ToySizes:
    """The world and the budget of one toy experiment; the defaults are the paper's (Sec. 4.2.1)."""
    runs: int                 # independent runs R
    n_real: int = 1000        # |D|, real points per run
    n_eval: int = 2000        # samples per run that are measured
    hidden: int = 64          # MLP width
    base_epochs: int = 100    # the base model's training epochs
    aux_epochs: int = 50      # the aux model's fine-tuning epochs, the budget B
    n_s: int = 2000           # n_s = |S|, the aux model's synthetic set


def sims_config(sizes: ToySizes, formulation: str, **more) -> SIMSConfig:
    """The SIMSConfig of ``sizes``; ``more`` sets other SIMSConfig fields (lr, num_steps, ...)."""
    return SIMSConfig(formulation=formulation, mlp=MLPConfig(hidden=sizes.hidden),
                      base_epochs=sizes.base_epochs, aux_epochs=sizes.aux_epochs,
                      n_synth=sizes.n_s, **more)


def loop_config(sizes: ToySizes, formulation: str, **loop) -> LoopConfig:
    """The LoopConfig of ``sizes``; ``loop`` sets other LoopConfig fields (loop, generations)."""
    return LoopConfig(n_real=sizes.n_real, n_eval=sizes.n_eval,
                      sims=sims_config(sizes, formulation), **loop)


def generation_one_runs(cfg: LoopConfig, omegas, runs: int, chunk_size: int, seed: int,
                        aux_factory=None) -> dict:
    """minisims.loops.generation_one over ``runs`` runs in chunks of ``chunk_size`` (chunk c uses
    chunk c's random streams). Returns {w: (mu (R,D), cov (R,D,D))}."""
    parts = [generation_one(cfg, omegas, min(chunk_size, runs - start), seed, c, aux_factory)
             for c, start in enumerate(range(0, runs, chunk_size))]
    return {w: (np.concatenate([p[w][0] for p in parts]),   # R,D
                np.concatenate([p[w][1] for p in parts]))   # R,D,D
            for w in map(float, omegas)}


def write_text(path: str, text: str) -> None:
    """``text`` and a final newline at ``path``, atomically."""
    with atomic_write(path, "w") as f:
        f.write(text + "\n")


def write_npz(path: str, **arrays) -> None:
    """np.savez_compressed at ``path``, atomically (readable with numpy alone)."""
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, **arrays)
