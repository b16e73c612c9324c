"""The SIMS combination (paper eq. 5), the one place it is written.

    s = (1 + w) s_base - w s_aux

w = 0 gives the base model exactly, w = -1 the auxiliary model exactly. Because
D(x; sigma) = x + sigma^2 s(x; sigma) and the two weights sum to one, the same combination holds
for denoiser outputs D and for epsilon predictions, so every sampler guides in whatever space its
model predicts by calling :func:`sims_combine`. Autoguidance (Karras et al. 2024b) is the same
formula written D_bad + g (D_good - D_bad) with g = 1 + w.

A guidance interval (Kynkaanniemi et al. 2024, paper Appendix A) restricts guidance to a range of
sampler steps or noise levels; outside it only the base model is evaluated, which saves NFE. The
choice is made once per sampler step, so both Heun evaluations of a step agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


def sims_combine(base_out, aux_out, w: float):
    """Paper eq. 5: (1 + w) base - w aux, elementwise, for scores, denoisers or epsilons."""
    return (1 + w) * base_out - w * aux_out


@dataclass(frozen=True)
class GuidanceInterval:
    """Guide only on steps first_step..last_step (inclusive, 0 = noisiest) and/or on noise
    levels sigma_lo <= sigma <= sigma_hi, where sigma is the noise level the step starts from.
    Unset bounds do not restrict."""
    first_step: int = 0
    last_step: int | None = None
    sigma_lo: float = 0.0
    sigma_hi: float = math.inf

    def contains(self, step: int, sigma: float) -> bool:
        in_steps = self.first_step <= step and (self.last_step is None or step <= self.last_step)
        return in_steps and self.sigma_lo <= sigma <= self.sigma_hi


@dataclass(frozen=True)
class Guidance:
    """Negative guidance by an auxiliary model: ``aux`` is a callable with the base's signature."""
    aux: Callable
    w: float
    interval: GuidanceInterval | None = None

    def active(self, step: int, sigma: float) -> bool:
        return self.interval is None or self.interval.contains(step, float(sigma))


def evaluate(model: Callable, guidance: Guidance | None, x, level, step: int, step_sigma: float):
    """One network evaluation inside a sampler: the base model alone, or eq. 5 when guidance is
    active at this step. ``level`` is what the model is called with (sigma, or a DDPM index)."""
    if guidance is None or not guidance.active(step, step_sigma):
        return model(x, level)
    return sims_combine(model(x, level), guidance.aux(x, level), guidance.w)
