"""Diffusion: preconditioning, losses, schedules, samplers, and the two formulations.

Each name is imported from its module on first use, so that a program that needs a few of
them (the 2D toy: the MLP, not the UNet) loads only those.
"""
from ..lazy import lazy_names

_WHERE = {  # public name -> the module that defines it
    "DDPM": "formulations", "EDM": "formulations",
    "EDMPrecond": "precond", "VPPrecond": "precond",
    "ddpm_sampler": "samplers", "edm_sampler": "samplers",
    "cosine_alpha_bar": "schedules", "ddpm_betas": "schedules", "edm_sigma_steps": "schedules",
}
__all__ = list(_WHERE)
__getattr__, __dir__ = lazy_names(__name__, _WHERE)
