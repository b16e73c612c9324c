"""Named sizes of the image experiment (paper Section 4.1, Figure 3), as frozen dataclasses.

# N images, H W resolution, B batch
Every preset says what it trains, on how much data, for how long, and how it samples and
measures. Budgets are counted in images seen, as in EDM and the paper. ``tiny`` is for the tests;
``cpu`` takes about 6 minutes per training seed on 2 cores by working on 16x16 images (CIFAR-10
averaged down 2x2) with a small UNet and short budgets (its 40k-image base is under-trained: the
study in docs/images.md); ``gpu`` is sized for about 10 minutes on one H100-class GPU;
``cifar`` is EDM's CIFAR-10 recipe (Karras et al. 2022, Table 7: DDPM++ with VP, batch 512, lr
1e-3, EMA half-life 0.5 Mimg, dropout 0.13, 200 Mimg), far beyond any budget measured here.
Which ones were measured, and how long they took, is in the docs; the others say "unmeasured".
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..nn.unet import UNetConfig


@dataclass(frozen=True)
class ImagePreset:
    name: str
    resolution: int                 # images are averaged down from 32x32 to this (32, 16 or 8)
    n_train: int | None             # real training images (None: all 50000)
    unet: dict = field(default_factory=dict)   # UNetConfig fields (img_resolution is set from resolution)
    formulation: str = "edm"        # edm | vp (EDM preconditioning; VP is the paper's CIFAR-10 base)
    sigma_data: float = 0.5
    batch: int = 64
    lr: float = 1e-3
    base_images: int = 20_000       # the base model's budget
    warmup_images: int = 0
    ema_half_life_images: float | None = None
    hflip: bool = True
    n_synth: int = 1000             # n_s = |S|
    aux_budgets: tuple = (2_000,)   # the auxiliary model's budgets B, images seen (Figure 3's rows)
    aux_lr: float = 1e-3
    aux_trainable: str = "decoder"  # decoder: encoder frozen, shared encoder pass when sampling
    omegas: tuple = (-1.0, 0.0, 0.5, 1.0, 2.0)   # Figure 3's columns; w = 0 base, w = -1 aux
    num_steps: int = 18             # Heun steps N (NFE 2N - 1)
    interval: tuple | None = None   # guide only for sigma_lo <= sigma <= sigma_hi (None: everywhere)
    n_eval: int = 1000              # images per (budget, w) for the FD
    sample_batch: int = 128
    checkpoint_every_images: int = 10_000
    measured: str = "unmeasured"    # what a run of this preset took, and where

    def unet_config(self) -> UNetConfig:
        return UNetConfig(img_resolution=self.resolution, **self.unet)


PRESETS = {
    "tiny": ImagePreset(
        name="tiny", resolution=8, n_train=64,
        unet=dict(channels=8, channel_mult=(1, 2), blocks_per_level=1, attn_resolutions=(),
                  dropout=0.0, num_freqs=4, emb_mult=2),
        batch=16, base_images=128, n_synth=32, aux_budgets=(32, 64), omegas=(-1.0, 0.0, 1.0),
        num_steps=3, n_eval=24, sample_batch=16, checkpoint_every_images=64,
        measured="seconds (the tests run it)"),
    "cpu": ImagePreset(
        name="cpu", resolution=16, n_train=10_000,
        unet=dict(channels=16, channel_mult=(1, 2), blocks_per_level=1, attn_resolutions=(),
                  dropout=0.0, num_freqs=8),
        batch=64, base_images=40_000, ema_half_life_images=5_000, n_synth=2000,
        aux_budgets=(4_000, 12_000), omegas=(-1.0, 0.0, 0.5, 1.0, 2.0), num_steps=10,
        n_eval=1000, sample_batch=250, checkpoint_every_images=10_000,
        measured="about 6 min per training seed on a shared 2-core x86-64 machine (docs/images.md)"),
    "gpu": ImagePreset(
        name="gpu", resolution=32, n_train=None,
        unet=dict(channels=64, channel_mult=(1, 2, 2), blocks_per_level=2, attn_resolutions=(16,),
                  dropout=0.1),
        batch=128, base_images=100_000, warmup_images=10_000, ema_half_life_images=10_000,
        n_synth=5000, aux_budgets=(10_000, 30_000), omegas=(-1.0, 0.0, 0.5, 1.0, 2.0),
        num_steps=18, n_eval=2000, sample_batch=500, checkpoint_every_images=25_000),
    "cifar": ImagePreset(
        name="cifar", resolution=32, n_train=None,
        unet=dict(channels=128, channel_mult=(2, 2, 2), blocks_per_level=4, attn_resolutions=(16,),
                  dropout=0.13),
        formulation="vp", batch=512, lr=1e-3, base_images=200_000_000, warmup_images=10_000_000,
        ema_half_life_images=500_000, n_synth=50_000,
        aux_budgets=(1_000_000, 5_000_000, 20_000_000), omegas=(-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
        num_steps=18, n_eval=50_000, sample_batch=1000, checkpoint_every_images=5_000_000),
}
