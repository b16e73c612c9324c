"""Self-consuming (autophagous) loops, paper Section 2 (Definition 1) and Section 4.2.1.

# R runs (the ensemble axis), G generations, n points, D data dimension (2), C cells of a sweep

Generation 1 trains on real data only, G^1 = A(D_r). Generation t >= 2 trains *from scratch* on

    fully_synthetic   D^t = D_s^{t-1}
    augmentation      D^t = D_r   u D_s^{t-1}      (a fixed real set: the paper's Figure 4 loop)
    fresh             D^t = D_r^t u D_s^{t-1}      (a new real set every generation)

where D_s^{t-1} are |D_s| samples of generation t-1's model. The training algorithm A is either
standard training (the base model alone, ``method="standard"``) or SIMS (Algorithm 1) at guidance
w (``method="sims"``): then the generation's model *is* the SIMS model, and its samples at w are
what it passes on. Every generation's distance to p_r is measured on n_eval of its samples (the
first |D_s| of the same draw feed the next generation); the per-run moments are kept, so any
closed-form distance (W2, W2^2) can be taken from the raw results afterwards.

Random numbers. Every run has its own streams (minisims.streams.RunGenerator), four per
generation, keyed by the seed, the generation and the run's index only, never by w, |D_s|, the
method or the chunk the run is trained in:

    data    the real points (NumPy arrays, so the data are the same on CPU and GPU)
    base    the base model's init and training
    aux     SIMS only: the synthetic set S and the auxiliary fine-tuning
    sample  the samples that are measured and passed on

So every cell of a sweep sees the same real data and the same generation-1 base model for a given
run (common random numbers: differences between cells are the method's, not the noise's), a
SIMS loop at w = 0 reproduces the standard loop bit for bit (its aux stream is simply extra), and
run r's result is the same whether it is trained alone, in a chunk of 4 or of 1000, on any worker
(bit for bit on the CPU for a fixed BLAS thread count).

Runs train together on the ensemble axis (R runs of one chunk at once); sweeps over cells and
chunks are in :mod:`minisims.loops.sweeps`, the results file in :mod:`minisims.loops.results`.
Each generation's training algorithm is Algorithm 1's steps from :mod:`minisims.sims`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import backend
from ..data.toy import GAUSSIAN_COV, GAUSSIAN_MEAN, sample_gaussian
from ..metrics import gaussian_w2_from_moments, moments
from ..sims import SIMSConfig, fit_sims, synthesize, train_base
from ..streams import Streams

LOOPS = ("fully_synthetic", "augmentation", "fresh")
METHODS = ("standard", "sims")
STREAMS = Streams(("data", "base", "aux", "sample"))


@dataclass
class LoopConfig:
    """One self-consuming loop on the 2D Gaussian p_r = N(mean, cov). Defaults: Figure 4."""
    loop: str = "augmentation"      # fully_synthetic | augmentation | fresh
    generations: int = 100
    n_real: int = 1000              # |D_r|
    n_eval: int = 2000              # samples per run and generation that measure dist(G^t, p_r)
    sims: SIMSConfig = field(default_factory=SIMSConfig)
    mean: tuple = tuple(GAUSSIAN_MEAN)
    cov: tuple = tuple(map(tuple, GAUSSIAN_COV))

    def __post_init__(self):
        if self.loop not in LOOPS:
            raise ValueError(f"unknown loop {self.loop!r}: use one of {', '.join(LOOPS)}")
        if self.generations < 1 or self.n_real < 2 or self.n_eval < 2:
            raise ValueError("need generations >= 1, n_real >= 2 and n_eval >= 2")


@dataclass(frozen=True)
class Cell:
    """One point of a sweep: the training method, its guidance w and |D_s^t|."""
    n_synth: int                    # |D_s^t|, synthetic points passed to the next generation
    w: float = 0.0
    method: str = "sims"            # standard | sims

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: use standard or sims")
        if self.method == "standard" and self.w != 0:
            raise ValueError("standard training has no guidance: w must be 0")
        if self.n_synth < 1:
            raise ValueError(f"|D_s| must be >= 1, got {self.n_synth}")

    @property
    def label(self) -> str:
        return "standard" if self.method == "standard" else f"SIMS w={self.w:g}"


@dataclass
class LoopResult:
    """Per-run moments of every generation's samples, and the distances they give."""
    cell: Cell
    mu: np.ndarray        # R,G,D  mean of each run's n_eval samples at each generation
    cov: np.ndarray       # R,G,D,D  their covariance (n-1)
    seconds: float = 0.0

    def distance(self, mean, cov, squared: bool = False) -> np.ndarray:
        """dist(G^t, p_r) per run and generation (R,G): W2 of the Gaussian fit, or W2^2."""
        return gaussian_w2_from_moments(self.mu, self.cov, np.asarray(mean, float),
                                        np.asarray(cov, float), squared)


def rng_for(seed: int, generation: int, stream: str, runs: int, first_run: int = 0,
            numpy: bool = False):
    """The per-run generator of one stream for runs first_run .. first_run + runs - 1: its draws
    (R, ...) give each run its own numbers."""
    return STREAMS.rng(seed, generation, stream, runs=range(first_run, first_run + runs), numpy=numpy)


def real_data(cfg: LoopConfig, runs: int, seed: int, first_run: int, generation: int):
    """|D_r| fresh points per run from p_r, on the current device. (R,n_real,D)"""
    x = sample_gaussian(cfg.n_real, rng_for(seed, generation, "data", runs, first_run, numpy=True),
                        runs, mean=np.asarray(cfg.mean), cov=np.asarray(cfg.cov))  # R,n,D
    return backend.asarray(x)


def generation_model(data, cfg: SIMSConfig, method: str, seed: int, first_run: int, generation: int):
    """A(D): Algorithm 1 on ``data`` (R,n,D) of runs first_run.. : the base alone for standard
    training (step 1), the base and its auxiliary model for SIMS (steps 1-3; the aux stream draws
    S and fine-tunes). Returns (base, aux or None)."""
    runs = data.shape[0]
    base_rng = rng_for(seed, generation, "base", runs, first_run)
    if method == "standard":
        return train_base(data, cfg, base_rng)[0], None
    fit = fit_sims(data, cfg, base_rng, synth_rng=rng_for(seed, generation, "aux", runs, first_run))
    return fit.base, fit.aux


def run_loop_chunk(cfg: LoopConfig, cell: Cell, runs: int, seed: int = 0, first_run: int = 0,
                   progress: bool = False, on_generation=None) -> LoopResult:
    """Run one loop for runs first_run .. first_run + runs - 1 at once (one chunk). Returns
    moments (R,G,...); run r's rows do not depend on which chunk it is in. ``on_generation()``,
    if given, is called after each generation (a sweep's progress bar)."""
    t0 = time.perf_counter()
    G, D = cfg.generations, len(cfg.mean)
    mu = np.zeros((runs, G, D))
    cov = np.zeros((runs, G, D, D))
    n_draw = max(cfg.n_eval, cell.n_synth)
    xp = backend.xp()
    D_r = D_s = None
    gens = range(1, G + 1)
    if progress:
        from ..progress import bar
        gens = bar(gens, desc=f"{cell.label} |D_s| {cell.n_synth} runs {first_run}+", leave=False)
    for t in gens:
        # the training set D^t of this loop type
        if t == 1 or cfg.loop == "fresh":
            D_r = real_data(cfg, runs, seed, first_run, t)  # R,n_real,D
        if t == 1:
            data = D_r
        elif cfg.loop == "fully_synthetic":
            data = D_s
        else:
            data = xp.concatenate([D_r, D_s], axis=1)  # R,n_real+n_synth,D
        base, aux = generation_model(data, cfg.sims, cell.method, seed, first_run, t)
        x = synthesize(base, cfg.sims, n_draw, rng_for(seed, t, "sample", runs, first_run), aux=aux,
                       w=cell.w if aux is not None else 0.0)  # R,n_draw,D
        mu[:, t - 1], cov[:, t - 1] = moments(backend.to_numpy(x[:, :cfg.n_eval]))
        D_s = x[:, :cell.n_synth]  # R,n_synth,D: what generation t passes on
        if on_generation is not None:
            on_generation()
    return LoopResult(cell, mu, cov, time.perf_counter() - t0)


def generation_one(cfg: LoopConfig, omegas, runs: int, seed: int = 0, first_run: int = 0,
                   aux_factory=None) -> dict:
    """Generation 1 of every SIMS loop at once: one base and aux per run, sampled at each w.

    Uses the loop's generation-1 streams, so the distances equal those of run_loop_chunk's first
    generation at the same w whenever |D_s| <= n_eval (then both draw n_eval points; a test
    checks it). ``aux_factory(D_r, base, rng)`` may replace the
    SIMS auxiliary (e.g. autoguidance's bad model). Returns {w: (mu (R,D), cov (R,D,D))}.
    """
    D_r = real_data(cfg, runs, seed, first_run, 1)  # R,n_real,D
    if aux_factory is None:
        base, aux = generation_model(D_r, cfg.sims, "sims", seed, first_run, 1)
    else:
        base, _ = train_base(D_r, cfg.sims, rng_for(seed, 1, "base", runs, first_run))  # step 1
        aux = aux_factory(D_r, base, rng_for(seed, 1, "aux", runs, first_run))
    out = {}
    for w in omegas:
        x = synthesize(base, cfg.sims, cfg.n_eval, rng_for(seed, 1, "sample", runs, first_run), aux=aux,
                       w=float(w))  # R,n_eval,D
        out[float(w)] = moments(backend.to_numpy(x))
    return out
