"""A loop experiment's results: ratio summaries, and the raw file anyone can reload with NumPy.

# C cells, R runs, G generations, D data dimension
"""
from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import asdict

import numpy as np

from ..atomic import atomic_write
from ..guidance import GuidanceInterval
from ..nn.mlp import MLPConfig
from ..sims import SIMSConfig
from .loop import Cell, LoopConfig, LoopResult


def ratio_curve(result: LoopResult, mean, cov, squared: bool = False) -> np.ndarray:
    """E[dist(G^t)] / E[dist(G^1)] over generations (G,), expectations = means over runs."""
    d = result.distance(mean, cov, squared).mean(axis=0)  # G
    return d / d[0]


def converged_ratio(result: LoopResult, mean, cov, squared: bool = False, start: int = 20,
                    stop: int | None = None, runs=None) -> float:
    """E[dist(G^inf)] / E[dist(G^1)], G^inf = the mean over generations start..stop (1-based,
    inclusive; the paper: 20..100); the expectations over ``runs`` (indices; None: all)."""
    d = result.distance(mean, cov, squared)  # R,G
    d = (d if runs is None else d[runs]).mean(axis=0)  # G
    stop = len(d) if stop is None else stop
    if not 1 <= start <= stop <= len(d):
        raise ValueError(f"generation window {start}..{stop} is outside 1..{len(d)}")
    return float(d[start - 1:stop].mean() / d[0])


def save_results(path: str, cfg: LoopConfig, results: dict, meta: dict | None = None):
    """Write a sweep to an npz anyone can reload with numpy alone: per cell (axis C) its method,
    w and |D_s|, the moments mu (C,R,G,D) and cov (C,R,G,D,D), and W2 / W2^2 (C,R,G); the
    configuration as JSON under 'config'."""
    cells = list(results)
    res = [results[c] for c in cells]
    arrays = dict(
        method=np.array([c.method for c in cells]),
        w=np.array([c.w for c in cells], float),
        n_synth=np.array([c.n_synth for c in cells], int),
        mu=np.stack([r.mu for r in res]),          # C,R,G,D
        cov=np.stack([r.cov for r in res]),        # C,R,G,D,D
        w2=np.stack([r.distance(cfg.mean, cfg.cov) for r in res]),            # C,R,G
        w2sq=np.stack([r.distance(cfg.mean, cfg.cov, squared=True) for r in res]),  # C,R,G
        seconds=np.array([r.seconds for r in res]),
        config=np.array(json.dumps({"loop": asdict(cfg), **(meta or {})})),
    )
    with atomic_write(path) as f:
        np.savez_compressed(f, **arrays)


def load_results(path: str):
    """Read a file written by :func:`save_results`. Returns (LoopConfig, {cell: LoopResult}, meta).

    A file that is empty, truncated, corrupt or not written by save_results raises ValueError
    naming it; one that cannot be opened raises its OSError."""
    if not zipfile.is_zipfile(path):  # also opens it: a missing or unreadable file raises OSError
        raise ValueError(f"{path} is not an npz file (empty, truncated or not written by save_results)")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["config"]))
            lc = meta.pop("loop")
            sims = lc.pop("sims")
            mlp = MLPConfig(**sims.pop("mlp"))
            if sims.get("interval") is not None:
                sims["interval"] = GuidanceInterval(**sims["interval"])
            cfg = LoopConfig(**{**lc, "mean": tuple(lc["mean"]), "cov": tuple(map(tuple, lc["cov"])),
                                "sims": SIMSConfig(mlp=mlp, **sims)})
            results = {}
            for i in range(len(z["w"])):
                cell = Cell(int(z["n_synth"][i]), float(z["w"][i]), str(z["method"][i]))
                results[cell] = LoopResult(cell, z["mu"][i], z["cov"][i], float(z["seconds"][i]))
    except (zipfile.BadZipFile, EOFError, zlib.error, KeyError, IndexError, TypeError, ValueError) as e:
        # ValueError covers bad JSON and numpy's format errors; KeyError/TypeError a missing or
        # unexpected field
        raise ValueError(f"{path} is corrupt or not written by save_results "
                         f"({type(e).__name__}: {e})") from None
    return cfg, results, meta
