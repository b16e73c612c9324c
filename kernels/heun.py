"""The guided Heun step of EDM's sampler (Karras et al. 2022, Algorithm 2) with the SIMS
combination (paper eq. 5), fused: one pass over the arrays per stage.

# S sample shape (any, e.g. N,C,H,W); x state (float64 in the samplers), D denoiser output
# (the model's dtype); w guidance weight; t_hat the step's noise level, t_next the next one

    D = (1 + w) D_base - w D_aux     # eq. 5 (exactly D_base if unguided or w = 0, D_aux if w = -1)
    stage 1 (Euler):   d_cur = (x_hat - D) / t_hat;  x_next = x_hat + (t_next - t_hat) d_cur
    stage 2, with D at (x_next, t_next):   d_prime = (x_next - D) / t_next
                       x_next = x_hat + (t_next - t_hat) (0.5 d_cur + 0.5 d_prime)
    heun_stage1(x_hat, base, aux, w, t_hat, t_next, impl="auto") -> (x_next, d_cur)       # S, S
    heun_stage2(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next, impl="auto") -> x_next  # S

``aux=None``: not guided, D is D_base. As minisims.guidance.sims_combine: at w = 0 D is D_base (aux
ignored, even inf or nan; signed zeros kept), at w = -1 D_aux, else eq. 5, chosen once per call on
the host (``_heun_common.combine_mode``). Every version performs exactly these operations in this
order: the combination in the models' dtype (w made a Python float, then w and 1 + w rounded to
that dtype, as NumPy does), the rest in the state's dtype, no fused multiply-add; so each is bit
for bit the reference and minisims' own step (minisims.ops.heun_euler, heun_correct), and
the guided sampler at w = 0 and w = -1 reproduces the base and the auxiliary model's samplers bit
for bit.
Versions (``impl=``), each checked bit for bit against the reference (tests/test_kernels_heun.py,
tests/gpu/test_kernels_gpu.py):
- "reference": NumPy (or CuPy), unfused: each line above is one array operation with its temporary.
- "cupy": CuPy ElementwiseKernels, one pass per stage, compiled with --fmad=false (NVRTC fuses by
  default). minisims.ops runs it for CuPy arrays; on the CPU the step is a sliver of a sampler's
  time, and minisims runs the reference's lines there.
"auto" picks "cupy" for CuPy arrays, "reference" for NumPy; _heun_common.py, below both, holds what
they share (checks, scalars, the mode).
"""
from __future__ import annotations

from ._heun_common import AUX, BASE, is_cupy, scalars

CPU_IMPLS = ("reference",)
GPU_IMPLS = ("reference", "cupy")  # "reference" is plain array code: it runs on CuPy too


# ------------------------------------------------------------------------------------------------
# Reference: NumPy, unfused, EDM Algorithm 2 lines 5-8 with eq. 5
# ------------------------------------------------------------------------------------------------

def _combine(mode, base, aux, one_plus_w, w):
    """Paper eq. 5 with minisims.guidance.sims_combine's endpoints: D_base at w = 0 (or
    unguided), D_aux at w = -1, else (1 + w) base - w aux."""
    if mode == BASE:
        return base
    if mode == AUX:
        return aux
    return one_plus_w * base - w * aux


def heun_stage1_reference(x_hat, base, aux, w, t_hat, t_next):
    mode, opw, wm, t_hat, t_next, h = scalars(x_hat, base, aux, w, t_hat, t_next)
    denoised = _combine(mode, base, aux, opw, wm)  # S, eq. 5
    # Euler step
    d_cur = (x_hat - denoised) / t_hat  # S
    x_next = x_hat + h * d_cur  # S
    return x_next, d_cur


def heun_stage2_reference(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next):
    mode, opw, wm, t_hat, t_next, h = scalars(x_hat, base, aux, w, t_hat, t_next)
    half = x_hat.dtype.type(0.5)
    denoised = _combine(mode, base, aux, opw, wm)  # S, eq. 5 at (x_next, t_next)
    # 2nd order correction
    d_prime = (x_next - denoised) / t_next  # S
    return x_hat + h * (half * d_cur + half * d_prime)  # S


# ------------------------------------------------------------------------------------------------
# Dispatch
# ------------------------------------------------------------------------------------------------

def _resolve(impl, a):
    gpu = is_cupy(a)
    if impl == "auto":
        return "cupy" if gpu else "reference"
    allowed = GPU_IMPLS if gpu else CPU_IMPLS
    if impl not in allowed:
        raise ValueError(f"impl {impl!r} does not run on {'CuPy' if gpu else 'NumPy'} arrays: "
                         f"use one of {allowed} or 'auto'")
    return impl


def _versions(impl):
    if impl == "reference":
        return heun_stage1_reference, heun_stage2_reference
    from . import _heun_cupy as m
    return m.heun_stage1, m.heun_stage2


def heun_stage1(x_hat, base, aux, w, t_hat, t_next, impl="auto"):
    """Euler step from (x_hat, t_hat) to t_next with D = eq. 5. Returns (x_next, d_cur), both S."""
    return _versions(_resolve(impl, x_hat))[0](x_hat, base, aux, w, t_hat, t_next)


def heun_stage2(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next, impl="auto"):
    """2nd order correction with D = eq. 5 evaluated at (x_next, t_next). Returns x_next, S."""
    return _versions(_resolve(impl, x_hat))[1](x_hat, x_next, d_cur, base, aux, w, t_hat, t_next)
