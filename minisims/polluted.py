"""Training on data polluted with synthetic samples (paper Section 4.2.2, Figure 5), on the 2D toy.

# R runs, n points, D data dimension (2), P pollution sizes, W guidance values

Four models per run, the paper's definitions with the toy Gaussian in place of CIFAR-10:

    ST-I     standard training on the real data D_r alone (the 'primordial' model G^1)
    SIMS-I   SIMS on ST-I: aux fine-tuned on ST-I's own samples, sampled at the best w
    ST-P     standard training from scratch on D_r u D_p, where D_p are |D_p| samples of ST-I
    SIMS-P   SIMS whose base is trained on the same polluted set (so its base is ST-P)

'Best w' is the w of a small grid with the lowest mean distance over runs, chosen per |D_p| on the
same runs it is reported on (as the paper reports the best FID over w and budget): an optimistic
choice for the SIMS rows. D_p for a smaller |D_p| is a prefix of the one for a larger |D_p|, and
every |D_p| reuses the same random streams, so the curves differ by the pollution, not the noise.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .loops.loop import LoopConfig, generation_model, real_data, rng_for
from .loops.sweeps import map_chunks
from .metrics import gaussian_w2
from .sims import synthesize


def _dist(x, cfg: LoopConfig, squared: bool):
    return gaussian_w2(backend.to_numpy(x), cfg.mean, cfg.cov, squared)  # R


def polluted_chunk(cfg: LoopConfig, pollution, omegas, runs: int, seed: int = 0, first_run: int = 0,
                   squared: bool = False) -> dict:
    """One chunk of runs (first_run .. first_run + runs - 1). Returns {"I": (W,R), "P": (P,W,R)}
    distances; w = 0 is standard training
    (ST-I, ST-P), w > 0 is SIMS. Generation-1 streams for the I models, generation 2 for P."""
    omegas = [float(w) for w in omegas]
    D_r = real_data(cfg, runs, seed, first_run, 1)  # R,n_real,D
    base, aux = generation_model(D_r, cfg.sims, "sims", seed, first_run, 1)  # ST-I and its aux
    dist_I = np.stack([_dist(synthesize(base, cfg.sims, cfg.n_eval, rng_for(seed, 1, "sample", runs, first_run),
                                        aux=aux, w=w), cfg, squared) for w in omegas])  # W,R
    pool = synthesize(base, cfg.sims, max(pollution), rng_for(seed, 2, "data", runs, first_run))  # R,maxP,D: D_p
    xp = backend.xp(pool)
    dist_P = []
    for n_p in pollution:
        data = xp.concatenate([D_r, pool[:, :n_p].astype(D_r.dtype)], axis=1)  # R,n_real+n_p,D
        base_p, aux_p = generation_model(data, cfg.sims, "sims", seed, first_run, 2)  # ST-P and its aux
        dist_P.append(np.stack([_dist(synthesize(base_p, cfg.sims, cfg.n_eval,
                                                 rng_for(seed, 2, "sample", runs, first_run), aux=aux_p, w=w),
                                      cfg, squared) for w in omegas]))  # W,R
    return {"I": dist_I, "P": np.stack(dist_P)}


def polluted_experiment(cfg: LoopConfig, pollution, omegas, runs: int, seed: int = 0,
                        chunk_size: int = 32, squared: bool = False, progress: bool = False,
                        executor=None, blas_threads: int | None = None) -> dict:
    """All runs, in chunks (each one task of ``executor``, default: in this process; see
    minisims.loops.map_chunks). Returns per-run distances and the four curves of Figure 5:

    {"pollution": (P,), "omega": (W,), "I": (W,R), "P": (P,W,R),
     "ST-I": float, "SIMS-I": float, "w_SIMS-I": float, "ST-P": (P,), "SIMS-P": (P,), "w_SIMS-P": (P,)}
    (mean distances over runs; w = 0 must be in ``omegas``: it is standard training)."""
    omegas = sorted({0.0, *map(float, omegas)})
    pollution = sorted(int(p) for p in pollution)
    if pollution[0] < 1:
        raise ValueError("|D_p| values must be >= 1 (|D_p| = 0 is ST-I itself)")
    parts = map_chunks(polluted_chunk, runs, chunk_size, executor, blas_threads, progress, cfg=cfg,
                       pollution=pollution, omegas=omegas, seed=seed, squared=squared)
    I = np.concatenate([p["I"] for p in parts], axis=1)  # W,R
    P = np.concatenate([p["P"] for p in parts], axis=2)  # P,W,R
    mI, mP = I.mean(axis=1), P.mean(axis=2)  # W ; P,W
    i0 = omegas.index(0.0)
    sims = [k for k, w in enumerate(omegas) if w != 0]
    best_I = sims[int(np.argmin(mI[sims]))]
    best_P = [sims[int(np.argmin(row[sims]))] for row in mP]
    return {"pollution": np.array(pollution), "omega": np.array(omegas), "I": I, "P": P,
            "ST-I": float(mI[i0]), "SIMS-I": float(mI[best_I]), "w_SIMS-I": omegas[best_I],
            "ST-P": mP[:, i0], "SIMS-P": np.array([mP[p, k] for p, k in enumerate(best_P)]),
            "w_SIMS-P": np.array([omegas[k] for k in best_P])}
