"""The SIMS combination (paper eq. 5), the one place it is written.

    s = (1 + w) s_base - w s_aux

w = 0 gives the base model exactly, w = -1 the auxiliary model exactly. Because
D(x; sigma) = x + sigma^2 s(x; sigma) and the two weights sum to one, the same combination holds
for denoiser outputs D and for epsilon predictions, so every sampler guides in whatever space its
model predicts by calling :func:`sims_combine`. Autoguidance (Karras et al. 2024b) is the same
formula written D_bad + g (D_good - D_bad) with g = 1 + w.

A guidance interval (Kynkaanniemi et al. 2024, paper Appendix A) restricts guidance to a range of
sampler steps or noise levels; outside it, and everywhere at w = 0, only the base model is
evaluated, which saves NFE. The choice is made once per sampler step, so both Heun evaluations of
a step agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


def sims_combine(base_out, aux_out, w: float):
    """Paper eq. 5: (1 + w) base - w aux, elementwise, for scores, denoisers or epsilons.

    base_out, aux_out: floating arrays of one shape S (both NumPy or both CuPy); w: a host number
    (Python or NumPy scalar). Returns a new array of shape S. The contract:

    - w is made a Python float first, so the result's dtype follows the arrays alone:
      ``result_type(base_out, aux_out)`` (float32 outputs stay float32 even for an np.float64
      w; NumPy 2 would otherwise promote them to float64).
    - w == 0: exactly base_out's values; aux_out is not read, so an inf or nan there is ignored,
      and signed zeros are kept. w == -1: exactly aux_out's values, likewise. (This is what
      lets the guided samplers equal the base and aux samplers bit for bit.)
    - any other w: (1 + w) * base_out - w * aux_out with IEEE arithmetic in the arrays' dtype
      (1 + w and w rounded to it), so inf and nan propagate as they do in that expression.
    - always a fresh array, never base_out or aux_out themselves (also at the endpoints, where
      it is a copy), so a caller may write into the result.

    The endpoint test compares the Python float w on the host: no device synchronisation.
    """
    w = float(w)
    if base_out.shape != aux_out.shape:
        raise ValueError(f"base and aux outputs differ in shape: {base_out.shape} vs "
                         f"{aux_out.shape}")
    if w == 0.0 or w == -1.0:
        dtype = np.result_type(base_out.dtype, aux_out.dtype)
        return (base_out if w == 0.0 else aux_out).astype(dtype, copy=True)  # S, exact
    return (1 + w) * base_out - w * aux_out  # S


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

    def __post_init__(self):
        object.__setattr__(self, "w", float(self.w))  # a Python float: see sims_combine

    def active(self, step: int, sigma: float) -> bool:
        """Whether this step needs the auxiliary model: w != 0 and the step is in the interval.
        Where it is not, only the base model is evaluated (at w = 0 eq. 5 is the base anyway)."""
        in_interval = self.interval is None or self.interval.contains(step, float(sigma))
        return self.w != 0.0 and in_interval


def outputs(model: Callable, guidance: Guidance | None, x, level, guided: bool):
    """The base output at (x, level), and the aux output when ``guided`` (else None): the
    evaluations of one sampler point, base first. ``level`` is what the models are called with
    (sigma, or a DDPM index); ``guided`` is ``guidance.active(step, sigma)``, decided once per
    sampler step by the sampler."""
    base = model(x, level)  # S
    aux = guidance.aux(x, level) if guided else None  # S or None
    return base, aux


def evaluate(model: Callable, guidance: Guidance | None, x, level, step: int, step_sigma: float):
    """One network evaluation inside a sampler: the base model alone, or eq. 5 when guidance is
    active at this step (only then is the aux model called)."""
    guided = guidance is not None and guidance.active(step, step_sigma)
    base, aux = outputs(model, guidance, x, level, guided)
    return base if aux is None else sims_combine(base, aux, guidance.w)
