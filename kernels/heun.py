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
for bit the reference and minisims' plain sampler step (minisims.diffusion.samplers.PlainStep), and
the guided sampler at w = 0 and w = -1 reproduces the base and the auxiliary model's samplers bit
for bit.
Versions (``impl=``), each checked bit for bit against the reference in tests/test_kernels_heun.py:
- "reference": NumPy, unfused: each line above is one array operation with its temporary.
- "numba": one compiled loop per stage, every element read once and written once.
- "cuda": that loop as numba CUDA kernels, a thread per element, every product libdevice's mul_rn
  (NVVM contracts a * b + c, numba has no switch); runs under NUMBA_ENABLE_CUDASIM=1 in CI.
- "cupy": CuPy ElementwiseKernels, compiled with --fmad=false (NVRTC fuses by default).
"auto" picks "cupy" for CuPy arrays, "numba" for NumPy; _heun_common.py, below all of them,
holds what the versions share (checks, scalars, the mode).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._heun_common import AUX, BASE, is_cupy, scalars

CPU_IMPLS = ("reference", "numba", "cuda")  # "cuda" on NumPy arrays: the device or the simulator
GPU_IMPLS = ("reference", "cuda", "cupy")  # "reference" is plain array code: it runs on CuPy too


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
# "numba": one loop per stage over the flattened arrays
# ------------------------------------------------------------------------------------------------

@njit(cache=True)
def _pick(mode, b, a, opw, w):
    """D for one element: the base, the aux, or eq. 5 (the mode, see _heun_common)."""
    if mode == BASE:
        return b
    if mode == AUX:
        return a
    return opw * b - w * a


@njit(cache=True)
def _stage1_loop(x_hat, base, aux, mode, opw, w, t_hat, h, x_next, d_cur):
    for k in range(x_hat.size):
        D = _pick(mode, base[k], aux[k], opw, w)
        d = (x_hat[k] - D) / t_hat
        d_cur[k] = d
        x_next[k] = x_hat[k] + h * d


@njit(cache=True)
def _stage2_loop(x_hat, x_next, d_cur, base, aux, mode, opw, w, t_next, h, half, out):
    for k in range(x_hat.size):
        D = _pick(mode, base[k], aux[k], opw, w)
        d_prime = (x_next[k] - D) / t_next
        out[k] = x_hat[k] + h * (half * d_cur[k] + half * d_prime)


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def heun_stage1_numba(x_hat, base, aux, w, t_hat, t_next):
    mode, opw, wm, t_hat, t_next, h = scalars(x_hat, base, aux, w, t_hat, t_next)
    x_next = np.empty(x_hat.shape, x_hat.dtype)  # S
    d_cur = np.empty(x_hat.shape, x_hat.dtype)  # S
    b = _flat(base)
    _stage1_loop(_flat(x_hat), b, b if aux is None else _flat(aux), mode, opw, wm, t_hat, h,
                 x_next.reshape(-1), d_cur.reshape(-1))
    return x_next, d_cur


def heun_stage2_numba(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next):
    mode, opw, wm, t_hat, t_next, h = scalars(x_hat, base, aux, w, t_hat, t_next)
    out = np.empty(x_hat.shape, x_hat.dtype)  # S
    b = _flat(base)
    _stage2_loop(_flat(x_hat), _flat(x_next), _flat(d_cur), b, b if aux is None else _flat(aux),
                 mode, opw, wm, t_next, h, x_hat.dtype.type(0.5), out.reshape(-1))
    return out


# ------------------------------------------------------------------------------------------------
# Dispatch
# ------------------------------------------------------------------------------------------------

def _resolve(impl, a):
    gpu = is_cupy(a)
    if impl == "auto":
        return "cupy" if gpu else "numba"
    allowed = GPU_IMPLS if gpu else CPU_IMPLS
    if impl not in allowed:
        raise ValueError(f"impl {impl!r} does not run on {'CuPy' if gpu else 'NumPy'} arrays: "
                         f"use one of {allowed} or 'auto'")
    return impl


def _versions(impl):
    if impl == "reference":
        return heun_stage1_reference, heun_stage2_reference
    if impl == "numba":
        return heun_stage1_numba, heun_stage2_numba
    if impl == "cuda":
        from . import _heun_cuda as m
    elif impl == "cupy":
        from . import _heun_cupy as m
    else:
        raise ValueError(f"unknown impl {impl!r}")
    return m.heun_stage1, m.heun_stage2


def heun_stage1(x_hat, base, aux, w, t_hat, t_next, impl="auto"):
    """Euler step from (x_hat, t_hat) to t_next with D = eq. 5. Returns (x_next, d_cur), both S."""
    return _versions(_resolve(impl, x_hat))[0](x_hat, base, aux, w, t_hat, t_next)


def heun_stage2(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next, impl="auto"):
    """2nd order correction with D = eq. 5 evaluated at (x_next, t_next). Returns x_next, S."""
    return _versions(_resolve(impl, x_hat))[1](x_hat, x_next, d_cur, base, aux, w, t_hat, t_next)
