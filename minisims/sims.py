"""SIMS, Algorithm 1 of the paper, one function per step.

    1. train_base      train the base model on the real data D            -> s_r
    2. synthesize      draw n_s samples S from the base model
    3. train_aux       fine-tune a *copy* of the base on S alone, budget B  -> s_s; discard S
    4. sample_sims     sample with s = (1 + w) s_r - w s_s   (eq. 5, minisims.guidance)

:func:`run_sims` runs all four. Every function works on an ensemble of R independent runs at once
(data (R,n,D), one model per run on the ensemble axis) and takes the random generator as a
parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .diffusion import DDPM, EDM, EDMPrecond, VPPrecond
from .guidance import GuidanceInterval
from .nn import MLPConfig, MLPDenoiser
from .train import epochs_for_budget, train


@dataclass
class SIMSConfig:
    """Settings of one SIMS experiment on point data. Defaults: the paper's 2D toy (Sec. 4.2.1)."""
    formulation: str = "ddpm"        # ddpm (paper-faithful toy) | edm | vp
    mlp: MLPConfig = field(default_factory=MLPConfig)
    lr: float = 1e-3
    batch_size: int = 2048
    base_epochs: int = 100           # paper: base trained 100 epochs on D
    aux_epochs: int = 50             # paper: aux fine-tuned 50 epochs on S
    aux_images: int | None = None    # alternative budget: samples seen (overrides aux_epochs)
    n_synth: int = 2000              # n_s = |S|
    sigma_data: float = 1.4          # EDM: data std (the toy Gaussian's is about 1.41)
    num_steps: int = 32              # EDM sampler steps N (NFE 2N-1)
    ddpm_T: int = 40                 # DDPM noise levels (T-1 sampler steps)
    interval: GuidanceInterval | None = None

    def make_formulation(self):
        if self.formulation == "ddpm":
            return DDPM(T=self.ddpm_T)
        if self.formulation == "edm":
            return EDM(precond=EDMPrecond(self.sigma_data), num_steps=self.num_steps)
        if self.formulation == "vp":
            return EDM(precond=VPPrecond(), num_steps=self.num_steps)
        raise ValueError(f"unknown formulation {self.formulation!r}: use ddpm, edm or vp")

    def make_net(self, runs: int, rng: np.random.Generator) -> MLPDenoiser:
        return MLPDenoiser(self.mlp, rng, ensemble=runs)


@dataclass
class SIMSResult:
    base: MLPDenoiser
    aux: MLPDenoiser
    base_loss: np.ndarray   # epochs,R
    aux_loss: np.ndarray    # epochs,R


def train_base(data, cfg: SIMSConfig, rng, progress=False):
    """Step 1: a fresh model per run, trained on that run's data (R,n,D). Returns (net, losses)."""
    net = cfg.make_net(data.shape[0], rng)
    loss = train(net, cfg.make_formulation(), data, epochs=cfg.base_epochs,
                 batch_size=cfg.batch_size, lr=cfg.lr, rng=rng, progress=progress and "base")
    return net, loss


def synthesize(net, cfg: SIMSConfig, n: int, rng, aux=None, w: float = 0.0, progress=False):
    """Step 2 (and the final sampling of step 4 when ``aux`` is given): n points per run,
    (R,n,D) float32."""
    shape = (net_runs(net), n, cfg.mlp.dim)
    x = cfg.make_formulation().sample(net, shape, rng, aux=aux, w=w, interval=cfg.interval,
                                      progress=progress)
    return x.astype(np.float32)


def train_aux(base, synthetic, cfg: SIMSConfig, rng, progress=False):
    """Step 3: fine-tune a copy of the base on the synthetic set S alone (the base is untouched).
    The budget is cfg.aux_images samples seen if set, else cfg.aux_epochs epochs."""
    aux = base.copy()
    epochs = cfg.aux_epochs if cfg.aux_images is None else epochs_for_budget(cfg.aux_images, synthetic.shape[1])
    loss = train(aux, cfg.make_formulation(), synthetic, epochs=epochs, batch_size=cfg.batch_size,
                 lr=cfg.lr, rng=rng, progress=progress and "aux")
    return aux, loss


def sample_sims(base, aux, cfg: SIMSConfig, w: float, n: int, rng, progress=False):
    """Step 4: n points per run from the SIMS score (1 + w) s_r - w s_s."""
    return synthesize(base, cfg, n, rng, aux=aux, w=w, progress=progress)


def fit_sims(data, cfg: SIMSConfig, rng, progress=False) -> SIMSResult:
    """Steps 1-3: the base and auxiliary models, ready for guided sampling at any w."""
    base, base_loss = train_base(data, cfg, rng, progress)
    S = synthesize(base, cfg, cfg.n_synth, rng, progress=progress)
    aux, aux_loss = train_aux(base, S, cfg, rng, progress)
    del S  # Algorithm 1: discard S
    return SIMSResult(base, aux, base_loss, aux_loss)


def run_sims(data, cfg: SIMSConfig, w: float, n: int, rng, progress=False):
    """All of Algorithm 1: returns (SIMSResult, n SIMS samples per run (R,n,D))."""
    fit = fit_sims(data, cfg, rng, progress)
    return fit, sample_sims(fit.base, fit.aux, cfg, w, n, rng, progress)


def net_runs(net) -> int:
    """The ensemble size R of a toy network (1 when it has no ensemble axis)."""
    return net.net.layers[0].ensemble or 1
