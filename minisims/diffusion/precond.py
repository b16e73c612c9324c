"""Network preconditioning (EDM, Karras et al. 2022, Table 1).

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))

Each class returns the four coefficients for an array (or scalar) of noise levels.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import backend


@dataclass(frozen=True)
class EDMPrecond:
    """EDM: unit-variance network inputs and targets for data of std sigma_data."""
    sigma_data: float = 0.5

    def coefficients(self, sigma):
        xp = backend.xp(sigma)
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / xp.sqrt(sigma ** 2 + sd2)
        c_in = 1 / xp.sqrt(sigma ** 2 + sd2)
        c_noise = xp.log(sigma) / 4
        return c_skip, c_out, c_in, c_noise


@dataclass(frozen=True)
class VPPrecond:
    """VP (Song et al. 2021) written in EDM's form. With c_skip = 1 and c_out = -sigma, F's target
    (y - c_skip x) / c_out = (x - y) / sigma is +epsilon, the unit-variance noise itself."""
    beta_d: float = 19.9
    beta_min: float = 0.1
    M: int = 1000

    def sigma_to_t(self, sigma):
        xp = backend.xp(sigma)
        return (xp.sqrt(self.beta_min ** 2 + 2 * self.beta_d * xp.log1p(sigma ** 2)) - self.beta_min) / self.beta_d

    def coefficients(self, sigma):
        xp = backend.xp(sigma)
        c_skip = xp.ones_like(sigma) if hasattr(sigma, "shape") else 1.0
        c_out = -sigma
        c_in = 1 / xp.sqrt(sigma ** 2 + 1)
        c_noise = (self.M - 1) * self.sigma_to_t(sigma)
        return c_skip, c_out, c_in, c_noise
