"""Noise schedules: the DDPM cosine schedule and EDM's sigma discretisation.

# T DDPM steps, N sampler steps
"""
from __future__ import annotations

import numpy as np


def cosine_alpha_bar(T: int = 40, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal (2021) cosine schedule at t = 0..T-1, normalised so alpha_bar_0 = 1.

    alpha_bar_t = f(t) / f(0), f(t) = cos^2(((t/T) + s) / (1 + s) * pi/2).  Returns (T,) float64.
    """
    t = np.arange(T, dtype=np.float64)
    f = np.cos(((t / T) + s) / (1 + s) * np.pi / 2) ** 2  # T
    return f / f[0]  # T


def ddpm_betas(alpha_bar: np.ndarray, max_beta: float = 0.999) -> np.ndarray:
    """beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} for t >= 1 (beta_0 = 0), clipped. (T,)"""
    betas = np.zeros_like(alpha_bar)
    betas[1:] = np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], max_beta)
    return betas


def edm_sigma_steps(num_steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
                    rho: float = 7.0) -> np.ndarray:
    """EDM eq. 5: sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho for
    i = 0..N-1, then sigma_N = 0. Returns (N+1,) float64."""
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}")
    i = np.arange(num_steps, dtype=np.float64)
    t = (sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return np.append(t, 0.0)  # N+1
