"""The training loop, one for every model: the toy MLP ensemble and the UNet on images.

# R ensemble members, n training samples, B batch, S one sample's shape ((D,) points, (C,H,W) images)
The data are (R,n,*S) when the formulation trains an ensemble (``formulation.member_ndim == 1``,
the toy: every member sees its own data in its own shuffled order and all members step together)
and (n,*S) for one model (``member_ndim == 0``, images).

One step: draw a shuffled mini-batch, ``formulation.loss_and_grad`` (forward, loss, backward into
the parameters' grads), Adam, then the EMA of the weights if one is kept. The budget is counted in
epochs (full passes over the data) or in samples seen per member, EDM's "images seen"; the run
stops at the first step boundary where that many have been seen.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from . import backend
from .checkpoint import save_checkpoint
from .nn.optim import EMA, Adam

TRAINABLE = ("all", "decoder")


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained. Give the budget as ``epochs`` or ``images`` (images wins)."""
    lr: float = 1e-3
    batch_size: int = 2048
    epochs: int | None = None               # budget: full passes over the data ...
    images: int | None = None               # ... or samples seen per member (EDM's images seen)
    warmup_images: int = 0                  # the learning rate ramps up linearly over these
    ema_half_life_images: float | None = None  # EMA of the weights, half-life in images (EDM)
    trainable: str = "all"                  # all | decoder: fine-tune the decoder, encoder frozen
    checkpoint_every_images: int | None = None  # with a checkpoint path: save this often

    def __post_init__(self):
        if not self.lr > 0 or self.batch_size < 1:
            raise ValueError(f"need lr > 0 and batch_size >= 1, got {self.lr}, {self.batch_size}")
        if self.images is None and self.epochs is None:
            raise ValueError("give a training budget: epochs or images")
        if (self.images is not None and self.images < 0) or (self.epochs is not None and self.epochs < 0):
            raise ValueError(f"the budget must be >= 0, got epochs={self.epochs}, images={self.images}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {self.trainable!r}")
        if self.ema_half_life_images is not None and not self.ema_half_life_images > 0:
            raise ValueError(f"ema_half_life_images must be positive, got {self.ema_half_life_images}")

    def schedule(self, n: int) -> list[list[int]]:
        """The batch sizes of every epoch over n samples per member: [[B, ..., B, rest], ...].
        With an images budget the last epoch stops at the first step that reaches it."""
        per_epoch = [min(self.batch_size, n - s) for s in range(0, n, self.batch_size)]
        if self.images is None:
            return [per_epoch] * self.epochs
        epochs, seen = [], 0
        while seen < self.images:
            batches = []
            for b in per_epoch:
                if seen >= self.images:
                    break
                batches.append(b)
                seen += b
            epochs.append(batches)
        return epochs


@dataclass
class TrainResult:
    history: np.ndarray      # epochs,R (ensemble) or epochs, the mean loss of each epoch
    ema: object = None       # the EMA model (a copy of the network) when one was kept
    steps: int = 0
    images: int = 0          # samples seen per member


def trainable_part(net, trainable: str):
    """The module whose parameters the optimizer updates. 'decoder' freezes the encoder of a
    network that has one (the UNet): its backward then stops at the decoder."""
    if trainable == "all":
        return net
    if not hasattr(net, "decoder") or not hasattr(net, "train_encoder"):
        raise ValueError(f"trainable='decoder' needs a network with an encoder and a decoder "
                         f"(the UNet); {type(net).__name__} has none: use trainable='all'")
    net.train_encoder = False
    return net.decoder


def _batch(data, perm, start: int, size: int, members: bool):
    idx = perm[..., start:start + size]  # (R,)B
    if members:
        xp = backend.xp(data)
        return data[xp.arange(data.shape[0])[:, None], idx]  # R,B,*S
    return data[idx]  # B,*S


def train(net, formulation, data, cfg: TrainConfig, rng, *, progress: bool | str = False,
          checkpoint: str | None = None, meta: dict | None = None) -> TrainResult:
    """Train ``net`` in place on ``data`` ((R,n,*S) or (n,*S), see the module docstring).

    ``rng`` draws the shuffles and, through the formulation, the noise. With ``checkpoint`` (a
    path) the network, its EMA and the optimizer state are saved atomically every
    ``cfg.checkpoint_every_images`` samples and at the end. Returns a :class:`TrainResult`.
    One toy epoch at batch 2048 over n = 1000 points is one full-batch step, as in the paper's toy.
    """
    xp = backend.xp(data)
    members = formulation.member_ndim == 1
    n = data.shape[1] if members else data.shape[0]
    lead = (data.shape[0],) if members else ()
    if n < 1:
        raise ValueError("cannot train on an empty data set")
    schedule = cfg.schedule(n)
    opt = Adam(trainable_part(net, cfg.trainable), lr=cfg.lr)
    ema = None if cfg.ema_half_life_images is None else \
        EMA(net, beta=0.5 ** (cfg.batch_size / cfg.ema_half_life_images))
    history = np.zeros((len(schedule),) + lead)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=sum(map(len, schedule)), desc=progress if isinstance(progress, str) else "train",
                   unit="step", leave=False)
    seen, steps, next_save, t0 = 0, 0, cfg.checkpoint_every_images, time.perf_counter()
    for epoch, batches in enumerate(schedule):
        perm = xp.argsort(rng.random(lead + (n,)), axis=-1)  # (R,)n, an independent shuffle per member
        total, start = 0.0, 0
        for size in batches:
            y = _batch(data, perm, start, size, members)  # (R,)B,*S
            start += size
            if cfg.warmup_images:  # linear warm-up, counted in images seen after this step
                opt.lr = cfg.lr * min(1.0, (seen + size) / cfg.warmup_images)
            net.zero_grad()
            loss = formulation.loss_and_grad(net, y, rng)  # (R,)
            opt.step()
            if ema is not None:
                ema.update()
            total = total + loss * size
            seen, steps = seen + size, steps + 1
            if checkpoint and next_save and seen >= next_save:
                _save(checkpoint, net, ema, opt, cfg, seen, steps, meta)
                next_save += cfg.checkpoint_every_images
            if bar is not None:
                bar.update(1)
        history[epoch] = backend.to_numpy(total / max(start, 1))
        if bar is not None:
            bar.set_postfix(loss=f"{float(np.mean(history[epoch])):.4g}",
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}")
    if bar is not None:
        bar.close()
    if checkpoint:
        _save(checkpoint, net, ema, opt, cfg, seen, steps, meta)
    return TrainResult(history, ema.shadow if ema is not None else None, steps, seen)


def _save(path, net, ema, opt, cfg, seen, steps, meta):
    extra = {"adam_m": opt.m, "adam_v": opt.v}
    if ema is not None:
        extra["ema"] = ema.shadow.state_dict()
    save_checkpoint(path, net, {**(meta or {}), "train": asdict(cfg), "images_seen": seen,
                                "steps": steps, "adam_t": opt.t}, extra=extra)


__all__ = ["TrainConfig", "TrainResult", "train", "trainable_part", "TRAINABLE"]
