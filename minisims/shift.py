"""Distribution shift with SIMS (paper Section 4.3, Figure 6) on a two-group 2D mixture.

# R runs, n points, 2 dimensions, W guidance values

The base model learns real data with a base mix of the two groups (50/50). To steer the model
toward a target mix (70/30), SIMS labels the base model's own samples, builds the auxiliary
training set with the *complement* of the target (30/70) and fine-tunes a copy of the base on it.
The auxiliary model is the negative: sampling with (1 + w) s_base - w s_aux gives

    w = -1   the auxiliary model: the aux mix (30/70)
    w =  0   the base model: the base mix (50/50)
    w >  0   past the base, away from the aux mix, toward the target (paper: 68.5% at w = 1.5)

and, as w grows, each group's own samples may also move closer to (self-improvement) or away
from that group's true distribution, which :func:`shift_sweep` measures per group.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import backend
from .data.mixture import MIX_COV, MIX_MEANS, classify, sample_mixture, select_mix
from .loops.sweeps import map_chunks
from .metrics import gaussian_w2_from_moments, moments
from .nn.mlp import MLPConfig
from .sims import SIMSConfig, fit_sims, synthesize
from .streams import Streams

STREAMS = Streams(("data", "base", "synth", "aux", "sample"))


def _default_sims() -> SIMSConfig:
    # EDM, and a longer budget with mini-batches than the Figure 4 toy: group weights are learned
    # at high noise and need more than 100 full-batch steps
    return SIMSConfig(formulation="edm", mlp=MLPConfig(hidden=64, embedding="fourier"),
                      batch_size=256, base_epochs=100, aux_epochs=50, n_synth=2000,
                      sigma_data=2.0, num_steps=32)


@dataclass
class ShiftConfig:
    sims: SIMSConfig = field(default_factory=_default_sims)
    n_real: int = 2000            # real points per run
    base_frac: float = 0.5        # group-0 fraction of the real data
    target_frac: float = 0.7      # the mix we want; the aux set gets 1 - target_frac of group 0
    pool_factor: float = 3.0      # label this many times n_s base samples to pick the aux set from
    n_eval: int = 2000            # samples per run and w that are measured
    means: tuple = tuple(map(tuple, MIX_MEANS))
    cov: tuple = tuple(map(tuple, MIX_COV))

    @property
    def aux_frac(self) -> float:
        return 1.0 - self.target_frac


def rng_for(seed: int, stream: str, runs: int, first_run: int = 0, numpy: bool = False):
    """The per-run generator of one stream for runs first_run .. first_run + runs - 1 (each run
    its own numbers, whatever chunk it is in)."""
    return STREAMS.rng(seed, stream, runs=range(first_run, first_run + runs), numpy=numpy)


def fit_shift(cfg: ShiftConfig, runs: int, seed: int = 0, first_run: int = 0):
    """Algorithm 1 with a selection step: train the base on the base mix, draw a pool of
    pool_factor * n_s samples, label them and keep n_s with the complement of the target mix as
    the aux set, fine-tune the aux on it. Returns (base, aux, aux set group-0 fraction (R,))."""
    x, _ = sample_mixture(cfg.n_real, rng_for(seed, "data", runs, first_run, numpy=True), runs,
                          cfg.base_frac, cfg.means, cfg.cov)  # R,n,2
    aux_set_frac = []

    def complement_of_target(pool, rng):  # pool R,m,2 -> S R,n_s,2
        labels = classify(pool, cfg.means, cfg.cov)  # R,m
        S = select_mix(pool, labels, cfg.sims.n_synth, cfg.aux_frac, rng)  # R,n_s,2
        aux_set_frac.append(backend.to_numpy((classify(S, cfg.means, cfg.cov) == 0).mean(axis=1)))  # R
        return S

    fit = fit_sims(backend.asarray(x), cfg.sims, rng_for(seed, "base", runs, first_run),
                   synth_rng=rng_for(seed, "synth", runs, first_run),
                   aux_rng=rng_for(seed, "aux", runs, first_run),
                   n_synth=int(cfg.pool_factor * cfg.sims.n_synth), select=complement_of_target)
    return fit.base, fit.aux, aux_set_frac[0]


def group_stats(x, cfg: ShiftConfig, squared: bool = False):
    """Group-0 fraction (R,) and each group's W2 to its own component (R,2) of samples (R,n,2).

    A group's distance uses the points classified into it (NaN where a run has fewer than 3)."""
    x = backend.to_numpy(x)
    labels = backend.to_numpy(classify(x, cfg.means, cfg.cov))  # R,n
    frac0 = (labels == 0).mean(axis=1)  # R
    means, cov = np.asarray(cfg.means, float), np.asarray(cfg.cov, float)
    dist = np.full((x.shape[0], 2), np.nan)
    for r in range(x.shape[0]):
        for k in range(2):
            pts = x[r, labels[r] == k]  # m,2
            if len(pts) >= 3:
                mu, S = moments(pts[None])
                dist[r, k] = gaussian_w2_from_moments(mu, S, means[k], cov, squared)[0]
    return frac0, dist


def measure_shift(base, aux, cfg: ShiftConfig, omegas, seed: int = 0, first_run: int = 0,
                  squared: bool = False):
    """Sample the fitted models at every w with the same random numbers. Returns the group-0
    fraction (W,R) and each group's distance to its component (W,R,2)."""
    fr, di = [], []
    runs = base.sample_shape(1)[0]
    for w in omegas:
        x = synthesize(base, cfg.sims, cfg.n_eval, rng_for(seed, "sample", runs, first_run), aux=aux,
                       w=float(w))
        f, d = group_stats(x, cfg, squared)
        fr.append(f)
        di.append(d)
    return np.stack(fr), np.stack(di)


def shift_chunk(cfg: ShiftConfig, omegas, runs: int, seed: int = 0, first_run: int = 0,
                squared: bool = False):
    """One chunk of runs: fit base and aux, measure every w. Returns (frac0 (W,R), dist (W,R,2),
    aux set group-0 fraction (R,))."""
    base, aux, aux_frac = fit_shift(cfg, runs, seed, first_run)
    return (*measure_shift(base, aux, cfg, omegas, seed, first_run, squared), aux_frac)


def shift_sweep(cfg: ShiftConfig, omegas, runs: int, seed: int = 0, chunk_size: int = 64,
                squared: bool = False, progress: bool = False, executor=None,
                blas_threads: int | None = None) -> dict:
    """Fit base and aux for every run (in chunks, each one task of ``executor``, default: in this
    process), sample at every w with the same random numbers.

    Returns {"omega": (W,), "frac0": (W,R), "dist": (W,R,2), "aux_set_frac": (R,)}."""
    omegas = [float(w) for w in omegas]
    parts = map_chunks(shift_chunk, runs, chunk_size, executor, blas_threads, progress, cfg=cfg,
                       omegas=omegas, seed=seed, squared=squared)
    fr, di, aux_fracs = zip(*parts)
    return {"omega": np.array(omegas), "frac0": np.concatenate(fr, axis=1),
            "dist": np.concatenate(di, axis=1), "aux_set_frac": np.concatenate(aux_fracs)}
