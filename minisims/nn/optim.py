"""Adam and an exponential moving average (EMA) of weights, both elementwise.

Both work on any leading ensemble axis: every entry of every parameter is updated on its own, so
R models in one array are R independent optimisations.

A training step runs ``opt.step(ema)``: Adam's update of every parameter, then the EMA of the new
weights, written out in :func:`minisims.ops.adam_ema` (one pass over each parameter, or one
kernel launch over all of them on the GPU, on the fast path: the same numbers bit for bit,
tests/test_kernels_fused.py).
"""
from __future__ import annotations

from .. import backend, ops
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

    def step(self, ema: "EMA | None" = None):
        """One Adam step on every parameter, then ``ema``'s update when one is given. The EMA may
        cover more than the optimiser trains (the whole UNet while Adam trains its decoder): its
        other parameters get the EMA update alone, as ``ema.update()`` gives them."""
        self.t += 1
        entries = {id(mod.params[k]): (mod.params[k], mod.grads[k], self.m[name], self.v[name], None)
                   for name, mod, k in self.model.named_parameters()}  # p, g, m, v, shadow
        if ema is not None:
            for (_, src, k), (_, dst, _) in zip(ema.model.named_parameters(), ema.shadow.named_parameters()):
                p = src.params[k]
                p_, g, m, v, _ = entries.get(id(p), (p, None, None, None, None))
                entries[id(p)] = (p_, g, m, v, dst.params[k])
        ops.adam_ema(list(entries.values()), self.lr, self.betas, self.eps, self.t,
                     None if ema is None else ema.beta)


class EMA:
    """Shadow weights theta_ema <- beta theta_ema + (1 - beta) theta after each step.

    ``beta`` may be given directly or as a half-life in optimizer steps (EDM's convention counts
    images; divide by the batch size to get steps). A training step updates it through
    ``Adam.step(ema)``; :meth:`update` alone is the same update for a model trained otherwise.
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
