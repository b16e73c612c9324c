"""SIMS, Algorithm 1 of the paper, one function per step, for any denoiser.

    1. train_base      train the base model on the real data D            -> s_r
    2. synthesize      draw n_s samples S from the base model
    3. train_aux       fine-tune a *copy* of the base on S alone, budget B  -> s_s; discard S
    4. sample_sims     sample with s = (1 + w) s_r - w s_s   (eq. 5, minisims.guidance)

:func:`fit_sims` runs steps 1-3 and :func:`run_sims` all four. What the steps work on is a
:class:`SIMSRecipe`: a model factory, a diffusion formulation, how the base is trained, how the
auxiliary model is fine-tuned (its budget, and whether all parameters train or the decoder alone)
and n_s. The same functions run the toy MLP ensemble (data (R,n,D), R runs on the ensemble axis)
and the UNet on images (data (N,C,H,W)); the self-consuming loops, distribution shift, polluted
training, autoguidance and the tutorials all call these steps. :class:`SIMSConfig` is the toy's
settings, which build a recipe. The random generator is always passed in.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import backend, ops
from .diffusion import DDPM, EDM, EDMPrecond, VPPrecond
from .guidance import GuidanceInterval
from .nn.mlp import MLPConfig, MLPDenoiser
from .streams import StackedRandomGenerator, derive_seed
from .train import TrainConfig, init_generator, train

SYNTH_SEEDS_FROM = 1_000_000_000  # S drawn with integer seeds uses seeds from here (never 0-49999)


@dataclass
class SIMSRecipe:
    """Everything Algorithm 1 needs to know about the model, for any denoiser."""
    make_model: Callable             # make_model(data, rng) -> a fresh network for these data
    formulation: object              # DDPM | EDM, with member_ndim/data_ndim set for the data
    base: TrainConfig                # step 1
    aux: TrainConfig                 # step 3: the budget B, and trainable="all" | "decoder"
    n_synth: int = 2000              # n_s = |S|
    interval: GuidanceInterval | None = None   # where guidance is applied (None: everywhere)
    sample_batch: int | None = None  # sample at most this many images per sampler call


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

    def make_net(self, runs: int, rng) -> MLPDenoiser:
        return toy_mlp(self.mlp, rng, runs)

    def recipe(self) -> SIMSRecipe:
        """Algorithm 1's recipe: one MLP per run (R = data.shape[0]), trained full-batch-per-epoch."""
        return SIMSRecipe(
            make_model=functools.partial(_toy_mlp, self.mlp), formulation=self.make_formulation(),
            base=TrainConfig(lr=self.lr, batch_size=self.batch_size, epochs=self.base_epochs),
            aux=TrainConfig(lr=self.lr, batch_size=self.batch_size, epochs=self.aux_epochs,
                            images=self.aux_images),
            n_synth=self.n_synth, interval=self.interval)


def _toy_mlp(mlp: MLPConfig, data, rng) -> MLPDenoiser:
    return toy_mlp(mlp, rng, data.shape[0])  # one model per run


def toy_mlp(mlp: MLPConfig, rng, runs: int | None) -> MLPDenoiser:
    """The toy's network, one per run; on the GPU its twin that runs the fused kernels
    (nn/mlp_fused.py: sampling by default, training opt-in)."""
    if ops.FAST and backend.current_device() == "gpu":
        from .nn.mlp_fused import FusedMLPDenoiser
        return FusedMLPDenoiser(mlp, rng, ensemble=runs)
    return MLPDenoiser(mlp, rng, ensemble=runs)


def as_recipe(cfg) -> SIMSRecipe:
    """A :class:`SIMSRecipe` as it is, or the recipe of a settings object such as SIMSConfig."""
    return cfg if isinstance(cfg, SIMSRecipe) else cfg.recipe()


@dataclass
class SIMSResult:
    base: object
    aux: object
    base_loss: np.ndarray   # epochs,R (ensemble) or epochs
    aux_loss: np.ndarray

    @property
    def base_diverged(self) -> np.ndarray:
        """(R,) the epoch (1-based) at which each run's base loss first became NaN or inf, 0 if
        never. With the toy's full-batch epochs, the step."""
        return diverged_epoch(self.base_loss)

    @property
    def aux_diverged(self) -> np.ndarray:
        """(R,) as base_diverged, for the auxiliary model's fine-tuning."""
        return diverged_epoch(self.aux_loss)


def diverged_epoch(history) -> np.ndarray:
    """The first epoch (1-based) with a non-finite mean loss, per run ((epochs,R) -> (R,)); 0 where
    every epoch is finite."""
    bad = ~np.isfinite(np.asarray(history))  # epochs,(R)
    return np.where(bad.any(axis=0), bad.argmax(axis=0) + 1, 0)


def train_base(data, cfg, rng, progress=False, checkpoint=None, resume=False, meta=None):
    """Step 1: a fresh model trained on the real data. Returns (model, loss per epoch); the model
    is the EMA of the weights when the recipe keeps one (as EDM samples from it). ``rng``: a
    generator, or an integer seed (keyed streams: resumable from ``checkpoint``)."""
    r = as_recipe(cfg)
    net = r.make_model(data, init_generator(rng))
    res = train(net, r.formulation, data, r.base, rng, progress=progress and "base",
                checkpoint=checkpoint, resume=resume, meta=meta)
    return (net if res.ema is None else res.ema), res.history


def synthesize(net, cfg, n: int, rng, aux=None, w: float = 0.0, progress=False):
    """Step 2 (and the final sampling of step 4 when ``aux`` is given): n samples, float32,
    shaped ``net.sample_shape(n)``: (R,n,D) for a toy ensemble, (n,C,H,W) for images.

    ``rng`` is a generator, or a list of n integer seeds, one per image (EDM's convention: image
    i depends on seeds[i] alone, not on the batch it is drawn in). With the recipe's
    ``sample_batch`` the images are drawn batch after batch. When the recipe fine-tunes the aux's
    decoder only, guided sampling shares the base's encoder pass (SharedEncoderPair)."""
    r = as_recipe(cfg)
    seeds = None if hasattr(rng, "standard_normal") else [int(s) for s in rng]
    if seeds is not None and len(seeds) != n:
        raise ValueError(f"{n} samples need {n} seeds, got {len(seeds)}")
    step = n if r.sample_batch is None else r.sample_batch
    if aux is not None and w != 0 and r.aux.trainable == "decoder":
        # a decoder-only aux shares the base's encoder pass (paper App. A): the same samples, one
        # encoder pass fewer (1.5x NFE counted in passes; the decoder holds most of the compute)
        from .shared_encoder import SharedEncoderPair  # the UNet's: the toy never loads it
        pair = SharedEncoderPair(r.formulation, net, aux)

        def sample(shape, g):
            return pair.sample(shape, g, w, r.interval, progress=progress)
    else:
        def sample(shape, g):
            return r.formulation.sample(net, shape, g, aux=aux, w=w, interval=r.interval,
                                        progress=progress)
    parts = []
    for start in range(0, n, step):
        shape = net.sample_shape(min(step, n - start))
        batch_rng = rng if seeds is None else StackedRandomGenerator(seeds[start:start + step])
        parts.append(sample(shape, batch_rng).astype(np.float32))
    if len(parts) == 1:
        return parts[0]
    return backend.xp(parts[0]).concatenate(parts, axis=0)  # n,C,H,W


def train_aux(base, synthetic, cfg, rng, progress=False, checkpoint=None, resume=False, meta=None):
    """Step 3: fine-tune a copy of the base on the synthetic set S alone (the base is untouched),
    with the recipe's aux budget and trainable part. Returns (aux model, loss per epoch)."""
    r = as_recipe(cfg)
    aux = base.copy()
    res = train(aux, r.formulation, synthetic, r.aux, rng, progress=progress and "aux",
                checkpoint=checkpoint, resume=resume, meta=meta)
    return (aux if res.ema is None else res.ema), res.history


def sample_sims(base, aux, cfg, w: float, n: int, rng, progress=False):
    """Step 4: n samples from the SIMS score (1 + w) s_r - w s_s."""
    return synthesize(base, cfg, n, rng, aux=aux, w=w, progress=progress)


def fit_sims(data, cfg, rng, progress=False, *, synth_rng=None, aux_rng=None, n_synth=None,
             select=None) -> SIMSResult:
    """Steps 1-3: the base and auxiliary models, ready for guided sampling at any w.

    Random streams: ``rng`` trains the base; ``synth_rng`` (default ``rng``) draws S; ``aux_rng``
    (default ``synth_rng``) fine-tunes the aux. With an integer seed as ``rng`` the defaults are
    seeds too: S uses the seeds from :data:`SYNTH_SEEDS_FROM` on, the aux a seed derived from
    ``rng``. ``select(S, synth_rng) -> S'`` optionally picks the aux training set from the
    n_synth samples drawn (distribution shift builds the complement of its target mix this way);
    ``n_synth`` overrides the recipe's.
    """
    r = as_recipe(cfg)
    n_s = r.n_synth if n_synth is None else n_synth
    if isinstance(rng, (int, np.integer)):
        synth_rng = range(SYNTH_SEEDS_FROM, SYNTH_SEEDS_FROM + n_s) if synth_rng is None else synth_rng
        aux_rng = derive_seed(rng, 1) if aux_rng is None else aux_rng
    synth_rng = rng if synth_rng is None else synth_rng
    aux_rng = synth_rng if aux_rng is None else aux_rng
    base, base_loss = train_base(data, r, rng, progress)
    S = synthesize(base, r, n_s, synth_rng, progress=progress)
    if select is not None:
        S = select(S, synth_rng)
    aux, aux_loss = train_aux(base, S, r, aux_rng, progress)
    del S  # Algorithm 1: discard S
    return SIMSResult(base, aux, base_loss, aux_loss)


def run_sims(data, cfg, w: float, n: int, rng, progress=False):
    """All of Algorithm 1: returns (SIMSResult, n SIMS samples)."""
    fit = fit_sims(data, cfg, rng, progress)
    return fit, sample_sims(fit.base, fit.aux, cfg, w, n, rng, progress)


__all__ = ["SIMSRecipe", "SIMSConfig", "SIMSResult", "diverged_epoch", "as_recipe", "train_base", "synthesize",
           "train_aux", "sample_sims", "fit_sims", "run_sims"]
