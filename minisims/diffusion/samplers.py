"""Samplers, written as the papers' algorithms. Each takes a model callable, the random
generator and an optional :class:`~minisims.guidance.Guidance`. The SIMS combination (eq. 5) is
:func:`~minisims.guidance.sims_combine` (or, in the fused EDM step, the kernel that performs the
same operations), the aux model is called only where a step needs it (w != 0, inside the
guidance interval), and the random draws do not depend on whether or how the sampler is guided.

# S sample shape, e.g. (R,N,D) for an ensemble of toy models or (N,C,H,W) for images
The ODE/SDE state is kept in float64, as in EDM's reference sampler; models receive it as is and
cast to their own dtype.

The two halves of EDM's Heun step (eq. 5, then the Euler step; eq. 5 again, then the correction)
are :func:`minisims.ops.heun_euler` and :func:`minisims.ops.heun_correct`, a few array lines each
(one fused pass on the GPU).

Both samplers take an optional ``on_step(i, x, level)``: it is called with the state after i
steps (i = 0: the initial noise) and the level the models are called with there (EDM: sigma;
DDPM: the integer step t), e.g. to record a trajectory (minisims/animate.py). It must not modify
x; without it the sampler does nothing more, and with it the samples are the same bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..guidance import Guidance, evaluate, outputs
from .schedules import ddpm_betas, edm_sigma_steps


def _progress(it, total, desc, progress):
    if not progress:
        return it
    from ..progress import bar
    return bar(it, total=total, desc=desc, leave=False)


def edm_sampler(denoise, shape, rng, *, num_steps: int = 18, sigma_min: float = 0.002,
                sigma_max: float = 80.0, rho: float = 7.0, solver: str = "heun",
                S_churn: float = 0.0, S_min: float = 0.0, S_max: float = math.inf,
                S_noise: float = 1.0, guidance: Guidance | None = None, progress: bool = False,
                on_step=None):
    """EDM Algorithm 2 (Karras et al. 2022): Heun's 2nd order method, optional churn.

    denoise(x, sigma) -> D(x; sigma) with x of shape S. NFE = 2N - 1 for Heun, N for Euler
    (doubled where guidance is active). ``on_step``: see the module docstring. Returns x_0 of
    shape S, float64.
    """
    if solver not in ("heun", "euler"):
        raise ValueError(f"unknown solver {solver!r}: use 'heun' or 'euler'")
    t_steps = edm_sigma_steps(num_steps, sigma_min, sigma_max, rho)  # N+1, t_N = 0
    x_next = rng.standard_normal(shape, dtype=np.float64) * t_steps[0]  # S, x_0 ~ N(0, t_0^2 I)
    if on_step is not None:
        on_step(0, x_next, t_steps[0])
    steps = _progress(enumerate(zip(t_steps[:-1], t_steps[1:])), num_steps, "heun", progress)
    for i, (t_cur, t_next) in steps:
        x_cur = x_next
        # Increase noise temporarily (churn); only drawn when used, whatever the guidance.
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0.0
        t_hat = t_cur + gamma * t_cur
        x_hat = x_cur
        if gamma > 0:
            x_hat = x_cur + math.sqrt(t_hat ** 2 - t_cur ** 2) * S_noise * rng.standard_normal(shape, dtype=np.float64)
        # Guide this step? Decided once, from t_hat, for both evaluations; if not, the aux model
        # is not called at all (w = 0, or outside the guidance interval).
        guided = guidance is not None and guidance.active(i, t_hat)
        w = guidance.w if guided else 0.0
        # Euler step
        base, aux = outputs(denoise, guidance, x_hat, t_hat, guided)  # S, S or None
        x_next, d_cur = ops.heun_euler(x_hat, base, aux, w, t_hat, t_next)  # S, S
        # 2nd order correction (not at the last step, where t_next = 0)
        if solver == "heun" and i < num_steps - 1:
            base, aux = outputs(denoise, guidance, x_next, t_next, guided)  # S, S or None
            x_next = ops.heun_correct(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next)  # S
        if on_step is not None:
            on_step(i + 1, x_next, t_next)
    return x_next


def ddpm_sampler(eps_model, shape, rng, *, alpha_bar, guidance: Guidance | None = None,
                 progress: bool = False, on_step=None):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) with variance beta_t.

    eps_model(x, t) -> epsilon prediction, t the integer step index. With T = len(alpha_bar) it
    runs t = T-1 .. 1 (T-1 network calls) and adds no noise on the last step. The guidance step
    index i counts from 0 at t = T-1; its noise level is sigma_t = sqrt((1 - ab_t) / ab_t). The
    aux model is called only on guided steps (w != 0, inside the interval). ``on_step``: see the
    module docstring.
    """
    T = len(alpha_bar)
    betas = ddpm_betas(alpha_bar)  # T
    alphas = 1 - betas
    x = rng.standard_normal(shape, dtype=np.float64)  # S, x_{T-1} ~ N(0, I)
    if on_step is not None:
        on_step(0, x, T - 1)
    steps = _progress(enumerate(range(T - 1, 0, -1)), T - 1, "ddpm", progress)
    for i, t in steps:
        sigma_t = math.sqrt((1 - alpha_bar[t]) / alpha_bar[t])
        eps = evaluate(eps_model, guidance, x, t, i, sigma_t)  # S, eq. 5 where guided
        # Posterior mean, Ho et al. eq. 11
        mean = (x - betas[t] / math.sqrt(1 - alpha_bar[t]) * eps) / math.sqrt(alphas[t])
        if t > 1:
            x = mean + math.sqrt(betas[t]) * rng.standard_normal(shape, dtype=np.float64)
        else:
            x = mean
        if on_step is not None:
            on_step(i + 1, x, t - 1)
    return x
