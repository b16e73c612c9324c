"""Diffusion: preconditioning, losses, schedules, samplers, and the two formulations."""
from .formulations import DDPM, EDM
from .precond import EDMPrecond, VPPrecond
from .samplers import ddpm_sampler, edm_sampler
from .schedules import cosine_alpha_bar, ddpm_betas, edm_sigma_steps

__all__ = ["DDPM", "EDM", "EDMPrecond", "VPPrecond", "ddpm_sampler", "edm_sampler",
           "cosine_alpha_bar", "ddpm_betas", "edm_sigma_steps"]
