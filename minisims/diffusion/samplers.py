"""Samplers, written as the papers' algorithms. Each takes a model callable, the random
generator and an optional :class:`~minisims.guidance.Guidance`; every network evaluation goes
through :func:`~minisims.guidance.evaluate`, so the SIMS combination (eq. 5) is applied in one
place and the random draws do not depend on whether or how the sampler is guided.

# S sample shape, e.g. (R,N,D) for an ensemble of toy models or (N,C,H,W) for images
The ODE/SDE state is kept in float64, as in EDM's reference sampler; models receive it as is and
cast to their own dtype.
"""
from __future__ import annotations

import math

import numpy as np

from ..guidance import Guidance, evaluate
from .schedules import ddpm_betas, edm_sigma_steps


def _progress(it, total, desc, progress):
    if not progress:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, total=total, desc=desc, leave=False)


def edm_sampler(denoise, shape, rng, *, num_steps: int = 18, sigma_min: float = 0.002,
                sigma_max: float = 80.0, rho: float = 7.0, solver: str = "heun",
                S_churn: float = 0.0, S_min: float = 0.0, S_max: float = math.inf,
                S_noise: float = 1.0, guidance: Guidance | None = None, progress: bool = False):
    """EDM Algorithm 2 (Karras et al. 2022): Heun's 2nd order method, optional churn.

    denoise(x, sigma) -> D(x; sigma) with x of shape S. NFE = 2N - 1 for Heun, N for Euler
    (doubled where guidance is active). Returns x_0 of shape S, float64.
    """
    if solver not in ("heun", "euler"):
        raise ValueError(f"unknown solver {solver!r}: use 'heun' or 'euler'")
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
        # Euler step
        denoised = evaluate(denoise, guidance, x_hat, t_hat, i, t_hat)  # S
        d_cur = (x_hat - denoised) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        # 2nd order correction (not at the last step, where t_next = 0)
        if solver == "heun" and i < num_steps - 1:
            denoised = evaluate(denoise, guidance, x_next, t_next, i, t_hat)  # same choice as the step
            d_prime = (x_next - denoised) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


def ddpm_sampler(eps_model, shape, rng, *, alpha_bar, guidance: Guidance | None = None,
                 progress: bool = False):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) with variance beta_t.

    eps_model(x, t) -> epsilon prediction, t the integer step index. With T = len(alpha_bar) it
    runs t = T-1 .. 1 (T-1 network calls) and adds no noise on the last step. The guidance step
    index i counts from 0 at t = T-1; its noise level is sigma_t = sqrt((1 - ab_t) / ab_t).
    """
    T = len(alpha_bar)
    betas = ddpm_betas(alpha_bar)  # T
    alphas = 1 - betas
    x = rng.standard_normal(shape, dtype=np.float64)  # S, x_{T-1} ~ N(0, I)
    steps = _progress(enumerate(range(T - 1, 0, -1)), T - 1, "ddpm", progress)
    for i, t in steps:
        sigma_t = math.sqrt((1 - alpha_bar[t]) / alpha_bar[t])
        eps = evaluate(eps_model, guidance, x, t, i, sigma_t)  # S
        # Posterior mean, Ho et al. eq. 11
        mean = (x - betas[t] / math.sqrt(1 - alpha_bar[t]) * eps) / math.sqrt(alphas[t])
        if t > 1:
            x = mean + math.sqrt(betas[t]) * rng.standard_normal(shape, dtype=np.float64)
        else:
            x = mean
    return x
