"""Diffusion: preconditioning, losses, schedules, samplers, and the two formulations.

Each name is imported from its module on first use, so that a program that needs a few of
them (the 2D toy: the MLP, not the UNet) loads only those.
"""
import importlib

_WHERE = {  # public name -> the module that defines it
    "DDPM": "formulations", "EDM": "formulations",
    "EDMPrecond": "precond", "VPPrecond": "precond",
    "FusedStep": "samplers", "PlainStep": "samplers", "ddpm_sampler": "samplers",
    "edm_sampler": "samplers", "make_step": "samplers",
    "cosine_alpha_bar": "schedules", "ddpm_betas": "schedules", "edm_sigma_steps": "schedules",
}
__all__ = list(_WHERE)


def __getattr__(name):  # PEP 562: a public name loads its module on first use
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
