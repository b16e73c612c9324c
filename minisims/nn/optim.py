"""Adam and an exponential moving average (EMA) of weights, both elementwise.

Both work on any leading ensemble axis: every entry of every parameter is updated on its own, so
R models in one array are R independent optimisations.

A training step runs :func:`adam_ema_step`: Adam.step then EMA.update (the reference), or on the
GPU both at once, one kernel launch over every parameter (kernels/adam_ema.py, bit for bit the
same numbers: tests/test_kernels_fused.py).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .module import Module


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction; updates the parameters in place."""

    def __init__(self, model: Module, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.model, self.lr, self.betas, self.eps = model, lr, betas, eps
        self.t = 0
        self.m = {n: backend.xp(m.params[k]).zeros_like(m.params[k]) for n, m, k in model.named_parameters()}
        self.v = {n: backend.xp(m.params[k]).zeros_like(m.params[k]) for n, m, k in model.named_parameters()}

    def step(self):
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t  # the bias corrections
        for name, mod, k in self.model.named_parameters():
            p, g, m, v = mod.params[k], mod.grads[k], self.m[name], self.v[name]
            xp = backend.xp(p)
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= self.lr * (m / c1) / (xp.sqrt(v / c2) + self.eps)

    def fused_step(self, ema: "EMA | None" = None):
        """step() and then ema.update(), as one pass over every parameter entry
        (kernels/adam_ema.py: one kernel launch on the GPU, one loop per array on the CPU).

        The EMA may cover more than the optimiser trains (the whole UNet while Adam trains its
        decoder): its other parameters get the EMA update alone, as ema.update() gives them.
        """
        from kernels.adam_ema import adam_ema_update  # the fast path, loaded on first use
        self.t += 1
        entries = {id(mod.params[k]): (mod.params[k], mod.grads[k], self.m[name], self.v[name], None)
                   for name, mod, k in self.model.named_parameters()}  # p, g, m, v, shadow
        if ema is not None:
            for (_, src, k), (_, dst, _) in zip(ema.model.named_parameters(), ema.shadow.named_parameters()):
                p = src.params[k]
                p_, g, m, v, _ = entries.get(id(p), (p, None, None, None, None))
                entries[id(p)] = (p_, g, m, v, dst.params[k])
        adam_ema_update(list(entries.values()), self.lr, self.betas, self.eps, self.t,
                        None if ema is None else ema.beta)


class EMA:
    """Shadow weights theta_ema <- beta theta_ema + (1 - beta) theta after each step.

    ``beta`` may be given directly or as a half-life in optimizer steps (EDM's convention counts
    images; divide by the batch size to get steps).
    """

    def __init__(self, model: Module, beta: float | None = None, half_life_steps: float | None = None):
        if (beta is None) == (half_life_steps is None):
            raise ValueError("give exactly one of beta, half_life_steps")
        self.beta = beta if beta is not None else 0.5 ** (1.0 / half_life_steps)
        self.model = model
        self.shadow = model.copy()

    def update(self):
        for (_, m_src, k), (_, m_dst, _) in zip(self.model.named_parameters(), self.shadow.named_parameters()):
            dst = m_dst.params[k]
            dst *= self.beta
            dst += (1 - self.beta) * m_src.params[k]


FUSED_CPU_MIN_VALUES = 1 << 20  # NumPy parameters: the fused step from a million values on


def use_fused_step(opt: Adam) -> bool:
    """Whether :func:`adam_ema_step` fuses by default: on float32 parameters, on NumPy from
    FUSED_CPU_MIN_VALUES of them. On CuPy one launch replaces some twenty per parameter array.
    On NumPy the numba loops beat the unfused step on large models, but below about a million
    values the fused step's Python bookkeeping costs more than it saves (timings:
    docs/notes/core.md). The same bits either way."""
    entries = [mod.params[k] for _, mod, k in opt.model.named_parameters()]
    if not entries or not all(p.dtype == np.float32 for p in entries):
        return False
    return backend.xp(entries[0]) is not np or sum(p.size for p in entries) >= FUSED_CPU_MIN_VALUES


def adam_ema_step(opt: Adam, ema: EMA | None = None, fused: bool | None = None):
    """What a training step runs after backward: Adam's step, then the EMA update when one is
    kept. ``fused`` (None: :func:`use_fused_step`) runs both as one pass, with the same result
    bit for bit."""
    if fused is None:
        fused = use_fused_step(opt)
    if fused:
        opt.fused_step(ema)
        return
    opt.step()
    if ema is not None:
        ema.update()
