"""What every version of the fused Heun stages (kernels/heun.py) shares: the argument checks, the
scalars rounded once, which denoiser output D is, and how to tell a CuPy array.

# S sample shape; x state (float64 in the samplers), D denoiser output (the models' dtype)

This module sits below heun.py and _heun_cupy.py (each imports it, it imports
none of them), and, like all of kernels/, it imports nothing of minisims.
"""
from __future__ import annotations

from ._array import is_cupy  # noqa: F401  (the versions ask it here)

# What D is, chosen once per call on the host (the rule of minisims.guidance.sims_combine):
# the base output alone (unguided, or w = 0: aux is ignored, even inf or nan, and signed zeros
# are kept), the aux output alone (w = -1, exactly), or eq. 5 (1 + w) D_base - w D_aux.
BASE, AUX, COMBINE = 0, 1, 2


def combine_mode(aux, w: float) -> int:
    """BASE, AUX or COMBINE for these arguments (``aux=None``: the step is not guided)."""
    if aux is None or w == 0.0:
        return BASE
    return AUX if w == -1.0 else COMBINE


def scalars(x_hat, base, aux, w, t_hat, t_next):
    """The scalars every version uses, rounded once: the mode (above), (1 + w) and w in the
    models' dtype, t_hat, t_next and the step h = t_next - t_hat in the state's dtype (h from the
    unrounded levels, as the sampler computes it). w is made a Python float first, as
    sims_combine does, so a NumPy scalar w rounds exactly as a Python float would."""
    if aux is not None and aux.dtype != base.dtype:
        raise ValueError(f"base and aux outputs differ in dtype: {base.dtype} vs {aux.dtype}")
    if base.shape != x_hat.shape or (aux is not None and aux.shape != x_hat.shape):
        raise ValueError(f"shapes differ: x {x_hat.shape}, base {base.shape}, "
                         f"aux {None if aux is None else aux.shape}")
    w = float(w)
    m, s = base.dtype.type, x_hat.dtype.type
    return combine_mode(aux, w), m(1 + w), m(w), s(t_hat), s(t_next), s(t_next - t_hat)
