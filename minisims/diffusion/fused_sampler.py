"""EDM's Heun sampler (Karras et al. 2022, Algorithm 2) with the guided step fused into one pass
per stage (kernels/heun.py): the same sampler as :func:`minisims.diffusion.samplers.edm_sampler`,
faster where the state is large.

# S sample shape, e.g. (N,C,H,W) for images or (R,N,D) for an ensemble of toy models

Same signature, same random draws (x_0 and the churn noise, drawn from ``rng`` in the same
order), same guidance semantics (paper eq. 5, the choice made once per step from t_hat and used
by both evaluations of the step), and the same arithmetic: the fused stages perform the
operations of ``edm_sampler`` + ``sims_combine`` in the same order and rounding, so the output is
bit for bit ``edm_sampler``'s (tests/test_kernels_fused_sampler.py). What differs is only where
the combination happens: here the sampler calls the base and the auxiliary models itself and
hands both outputs to the kernel, instead of combining them with
:func:`~minisims.guidance.evaluate` first.
"""
from __future__ import annotations

import math

import numpy as np

from kernels.heun import heun_stage1, heun_stage2

from ..guidance import Guidance
from .samplers import _progress
from .schedules import edm_sigma_steps


def _denoisers(denoise, guidance, x, sigma, guided):
    """D_base(x; sigma), and D_aux(x; sigma) when this step is guided (else None), called in
    the order :func:`~minisims.guidance.evaluate` calls them."""
    base = denoise(x, sigma)  # S
    aux = guidance.aux(x, sigma) if guided else None  # S or None
    return base, aux


def fused_edm_sampler(denoise, shape, rng, *, num_steps: int = 18, sigma_min: float = 0.002,
                      sigma_max: float = 80.0, rho: float = 7.0, solver: str = "heun",
                      S_churn: float = 0.0, S_min: float = 0.0, S_max: float = math.inf,
                      S_noise: float = 1.0, guidance: Guidance | None = None,
                      progress: bool = False, impl: str = "auto"):
    """EDM Algorithm 2 with the fused guided Heun stages; arguments as ``edm_sampler``.

    denoise(x, sigma) -> D(x; sigma) with x of shape S. ``impl`` picks the kernel version
    (kernels/heun.py: "auto", "numba", "reference", "cuda", "cupy"). Returns x_0 of shape S,
    float64.
    """
    if solver not in ("heun", "euler"):
        raise ValueError(f"unknown solver {solver!r}: use 'heun' or 'euler'")
    w = 0.0 if guidance is None else guidance.w
    t_steps = edm_sigma_steps(num_steps, sigma_min, sigma_max, rho)  # N+1, t_N = 0
    x_next = rng.standard_normal(shape, dtype=np.float64) * t_steps[0]  # S, x_0 ~ N(0, t_0^2 I)
    steps = _progress(enumerate(zip(t_steps[:-1], t_steps[1:])), num_steps, "heun", progress)
    for i, (t_cur, t_next) in steps:
        x_cur = x_next
        # Increase noise temporarily (churn); only drawn when used, whatever the guidance.
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0.0
        t_hat = t_cur + gamma * t_cur
        x_hat = x_cur
        if gamma > 0:
            x_hat = x_cur + math.sqrt(t_hat ** 2 - t_cur ** 2) * S_noise * rng.standard_normal(shape, dtype=np.float64)
        guided = guidance is not None and guidance.active(i, t_hat)  # one choice per step
        # Euler step
        base, aux = _denoisers(denoise, guidance, x_hat, t_hat, guided)  # S, S
        x_next, d_cur = heun_stage1(x_hat, base, aux, w, t_hat, t_next, impl=impl)  # S, S
        # 2nd order correction (not at the last step, where t_next = 0)
        if solver == "heun" and i < num_steps - 1:
            base, aux = _denoisers(denoise, guidance, x_next, t_next, guided)  # S, S
            x_next = heun_stage2(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next, impl=impl)
    return x_next
