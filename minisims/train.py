"""The training loop: epochs of shuffled mini-batches, Adam, optional EMA, a progress bar.

# R ensemble members, n points per member, B batch, D data dimension
Data for an ensemble is (R,n,D): every member sees its own data in its own shuffled order, and
all members take their optimizer steps together.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend
from .nn.optim import EMA, Adam


def batches_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def epochs_for_budget(images: int, n: int) -> int:
    """A budget counted in samples seen (the paper's 'images seen'), as whole epochs over n."""
    return max(1, round(images / n))


def train(net, formulation, data, *, epochs: int, batch_size: int, lr: float, rng,
          ema: EMA | None = None, progress: bool | str = False):
    """Train ``net`` in place on ``data`` (R,n,D). Returns the loss per epoch and member (epochs,R).

    One epoch is ceil(n / batch_size) optimizer steps; with the toy's batch 2048 and n = 1000 that
    is one full-batch step per epoch, as in the toy the paper cites.
    """
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    xp = backend.xp(data)
    R, n = data.shape[0], data.shape[1]
    opt = Adam(net, lr=lr)
    history = np.zeros((epochs, R))
    bar = range(epochs)
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(bar, desc=progress if isinstance(progress, str) else "train", leave=False)
    for epoch in bar:
        perm = xp.argsort(rng.random((R, n)), axis=1)  # R,n, an independent shuffle per member
        total = 0.0
        for start in range(0, n, batch_size):
            idx = perm[:, start:start + batch_size]  # R,B
            y = xp.take_along_axis(data, idx[..., None], axis=1)  # R,B,D
            net.zero_grad()
            loss = formulation.loss_and_grad(net, y, rng)  # R
            opt.step()
            if ema is not None:
                ema.update()
            total = total + loss * idx.shape[1]
        history[epoch] = backend.to_numpy(total / n)
    return history
