"""Diffusion: preconditioning, losses, schedules, samplers, and the two formulations."""
from .formulations import DDPM, EDM
from .precond import EDMPrecond, VPPrecond
from .samplers import FusedStep, PlainStep, ddpm_sampler, edm_sampler, make_step
from .schedules import cosine_alpha_bar, ddpm_betas, edm_sigma_steps

__all__ = ["DDPM", "EDM", "EDMPrecond", "VPPrecond", "FusedStep", "PlainStep", "ddpm_sampler",
           "edm_sampler", "make_step", "cosine_alpha_bar", "ddpm_betas", "edm_sigma_steps"]
