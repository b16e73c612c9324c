"""Adam and an exponential moving average (EMA) of weights, both elementwise.

Both work on any leading ensemble axis: every entry of every parameter is updated on its own, so
R models in one array are R independent optimisations.
"""
from __future__ import annotations

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
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for name, mod, k in self.model.named_parameters():
            p, g, m, v = mod.params[k], mod.grads[k], self.m[name], self.v[name]
            xp = backend.xp(p)
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= self.lr * (m / c1) / (xp.sqrt(v / c2) + self.eps)


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
