"""Samplers, written as the papers' algorithms. Each takes a model callable, the random
generator and an optional :class:`~minisims.guidance.Guidance`. The SIMS combination (eq. 5) is
:func:`~minisims.guidance.sims_combine` (or, in the fused EDM step, the kernel that performs the
same operations), the aux model is called only where a step needs it (w != 0, inside the
guidance interval), and the random draws do not depend on whether or how the sampler is guided.

# S sample shape, e.g. (R,N,D) for an ensemble of toy models or (N,C,H,W) for images
The ODE/SDE state is kept in float64, as in EDM's reference sampler; models receive it as is and
cast to their own dtype.

EDM's sampler is one loop (:func:`edm_sampler`) whose per-step arithmetic is a small "step"
object with two methods, the two halves of a Heun step:

    step.euler(x_hat, base, aux, w, t_hat, t_next) -> (x_next, d_cur)
    step.correct(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next) -> x_next

where base and aux are the two models' denoiser outputs at the point (aux None: the step is not
guided). :class:`PlainStep` is eq. 5 and Algorithm 2's lines as array code; :class:`FusedStep`
hands the same operations to kernels/heun.py, one pass over the arrays per stage, bit for bit
the same result (tests/test_kernels_fused_sampler.py).

Both samplers take an optional ``on_step(i, x, level)``: it is called with the state after i
steps (i = 0: the initial noise) and the level the models are called with there (EDM: sigma;
DDPM: the integer step t), e.g. to record a trajectory (minisims/animate.py). It must not modify
x; without it the sampler does nothing more, and with it the samples are the same bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

from ..guidance import Guidance, evaluate, outputs, sims_combine
from .schedules import ddpm_betas, edm_sigma_steps

STEPS = ("plain", "fused")


def _progress(it, total, desc, progress):
    if not progress:
        return it
    from ..progress import bar
    return bar(it, total=total, desc=desc, leave=False)


class PlainStep:
    """EDM Algorithm 2, lines 5-8: eq. 5 by :func:`~minisims.guidance.sims_combine`, then the
    Euler step and the 2nd order correction, one array operation per line."""

    def euler(self, x_hat, base, aux, w, t_hat, t_next):
        denoised = base if aux is None else sims_combine(base, aux, w)  # S, eq. 5
        d_cur = (x_hat - denoised) / t_hat  # S
        x_next = x_hat + (t_next - t_hat) * d_cur  # S
        return x_next, d_cur

    def correct(self, x_hat, x_next, d_cur, base, aux, w, t_hat, t_next):
        denoised = base if aux is None else sims_combine(base, aux, w)  # S, eq. 5 at x_next
        d_prime = (x_next - denoised) / t_next  # S
        return x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)  # S


class FusedStep:
    """The same two stages as :class:`PlainStep`, each one fused pass (kernels/heun.py).
    ``impl`` picks the kernel version: "auto" (numba on NumPy, cupy on CuPy arrays),
    "reference", "numba", "cuda" or "cupy"."""

    def __init__(self, impl: str = "auto"):
        self.impl = impl

    # the kernels are imported where they are called: a program that never asks for a fused
    # step never loads them
    def euler(self, x_hat, base, aux, w, t_hat, t_next):
        from kernels.heun import heun_stage1
        return heun_stage1(x_hat, base, aux, w, t_hat, t_next, impl=self.impl)

    def correct(self, x_hat, x_next, d_cur, base, aux, w, t_hat, t_next):
        from kernels.heun import heun_stage2
        return heun_stage2(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next, impl=self.impl)


def make_step(step: str = "plain", impl: str = "auto"):
    """The step object for ``step`` ("plain" or "fused"; ``impl`` is the fused kernel version)."""
    if step == "plain":
        return PlainStep()
    if step == "fused":
        return FusedStep(impl)
    raise ValueError(f"unknown step {step!r}: use one of {STEPS}")


def edm_sampler(denoise, shape, rng, *, num_steps: int = 18, sigma_min: float = 0.002,
                sigma_max: float = 80.0, rho: float = 7.0, solver: str = "heun",
                S_churn: float = 0.0, S_min: float = 0.0, S_max: float = math.inf,
                S_noise: float = 1.0, guidance: Guidance | None = None, progress: bool = False,
                step: str | PlainStep | FusedStep = "plain", impl: str = "auto", on_step=None):
    """EDM Algorithm 2 (Karras et al. 2022): Heun's 2nd order method, optional churn.

    denoise(x, sigma) -> D(x; sigma) with x of shape S. ``step`` is "plain", "fused" (with
    kernel version ``impl``) or a step object (see the module docstring). NFE = 2N - 1 for
    Heun, N for Euler (doubled where guidance is active). ``on_step``: see the module
    docstring. Returns x_0 of shape S, float64.
    """
    if solver not in ("heun", "euler"):
        raise ValueError(f"unknown solver {solver!r}: use 'heun' or 'euler'")
    if isinstance(step, str):
        step = make_step(step, impl)
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
        x_next, d_cur = step.euler(x_hat, base, aux, w, t_hat, t_next)  # S, S
        # 2nd order correction (not at the last step, where t_next = 0)
        if solver == "heun" and i < num_steps - 1:
            base, aux = outputs(denoise, guidance, x_next, t_next, guided)  # S, S or None
            x_next = step.correct(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next)  # S
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
