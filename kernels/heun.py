"""The guided Heun step of EDM's sampler (Karras et al. 2022, Algorithm 2) with the SIMS
combination (paper eq. 5), fused: one pass over the arrays per stage.

# S sample shape (any, e.g. N,C,H,W); x state (float64 in the samplers), D denoiser output
# (the model's dtype); w guidance weight; t_hat the step's noise level, t_next the next one

Given the two models' denoiser outputs at one point, a stage computes

    D       = (1 + w) D_base - w D_aux                # paper eq. 5 (D_base alone if unguided)
    stage 1 (Euler step):
        d_cur   = (x_hat - D) / t_hat
        x_next  = x_hat + (t_next - t_hat) d_cur
    stage 2 (2nd order correction, at x_next, t_next):
        d_prime = (x_next - D) / t_next
        x_next  = x_hat + (t_next - t_hat) (0.5 d_cur + 0.5 d_prime)

    heun_stage1(x_hat, base, aux, w, t_hat, t_next, impl="auto") -> (x_next, d_cur)       # S, S
    heun_stage2(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next, impl="auto") -> x_next  # S

``aux=None`` means the step is not guided (outside a guidance interval, or no guidance): D is
D_base itself. Every version performs exactly the operations above, in this order and with the
same roundings: the combination in the models' dtype (w and 1 + w rounded to it first, as NumPy
does with a Python float), the rest in the state's dtype, no fused multiply-add. So every version
is bit-for-bit equal to the reference, and to minisims' unfused sampler arithmetic; at w = 0 the
combination is D_base exactly and at w = -1 it is D_aux exactly (up to the sign of a zero), so
the guided sampler reproduces the base and the auxiliary model's samplers bit for bit.

Versions (``impl=``), each checked bit for bit against the reference in tests/test_kernels_heun.py:
- ``"reference"``: NumPy, unfused: each line above is one array operation with its temporary.
- ``"numba"``: one compiled loop per stage, every element read once and written once.
- ``"cuda"``: the same loop as numba CUDA kernels, one thread per element; every product is
  libdevice's mul_rn, because NVVM contracts a * b + c into a multiply-add by default (numba
  exposes no switch). Runs under NUMBA_ENABLE_CUDASIM=1 in CI.
- ``"cupy"``: CuPy ElementwiseKernels, compiled with --fmad=false (NVRTC fuses by default).
"auto" picks "cupy" for CuPy arrays and "numba" for NumPy arrays.
"""
from __future__ import annotations

import numpy as np
from numba import njit

CPU_IMPLS = ("reference", "numba", "cuda")  # "cuda" on NumPy arrays: the device or the simulator
GPU_IMPLS = ("reference", "cuda", "cupy")  # "reference" is plain array code: it runs on CuPy too


def _scalars(x_hat, base, aux, w, t_hat, t_next):
    """The scalars every version uses, rounded once: (1 + w) and w in the models' dtype, t_hat,
    t_next and the step h = t_next - t_hat in the state's dtype (h from the unrounded levels,
    as the sampler computes it)."""
    if aux is not None and aux.dtype != base.dtype:
        raise ValueError(f"base and aux outputs differ in dtype: {base.dtype} vs {aux.dtype}")
    if base.shape != x_hat.shape or (aux is not None and aux.shape != x_hat.shape):
        raise ValueError(f"shapes differ: x {x_hat.shape}, base {base.shape}, "
                         f"aux {None if aux is None else aux.shape}")
    m, s = base.dtype.type, x_hat.dtype.type
    return m(1 + w), m(w), s(t_hat), s(t_next), s(t_next - t_hat)


# ------------------------------------------------------------------------------------------------
# Reference: NumPy, unfused, EDM Algorithm 2 lines 5-8 with eq. 5
# ------------------------------------------------------------------------------------------------

def _combine(base, aux, one_plus_w, w):
    """Paper eq. 5, written as minisims.guidance.sims_combine: (1 + w) base - w aux."""
    return base if aux is None else one_plus_w * base - w * aux


def heun_stage1_reference(x_hat, base, aux, w, t_hat, t_next):
    opw, wm, t_hat, t_next, h = _scalars(x_hat, base, aux, w, t_hat, t_next)
    denoised = _combine(base, aux, opw, wm)  # S, eq. 5
    # Euler step
    d_cur = (x_hat - denoised) / t_hat  # S
    x_next = x_hat + h * d_cur  # S
    return x_next, d_cur


def heun_stage2_reference(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next):
    opw, wm, t_hat, t_next, h = _scalars(x_hat, base, aux, w, t_hat, t_next)
    half = x_hat.dtype.type(0.5)
    denoised = _combine(base, aux, opw, wm)  # S, eq. 5 at (x_next, t_next)
    # 2nd order correction
    d_prime = (x_next - denoised) / t_next  # S
    return x_hat + h * (half * d_cur + half * d_prime)  # S


# ------------------------------------------------------------------------------------------------
# "numba": one loop per stage over the flattened arrays
# ------------------------------------------------------------------------------------------------

@njit(cache=True)
def _stage1_loop(x_hat, base, aux, guided, opw, w, t_hat, h, x_next, d_cur):
    for k in range(x_hat.size):
        D = opw * base[k] - w * aux[k] if guided else base[k]
        d = (x_hat[k] - D) / t_hat
        d_cur[k] = d
        x_next[k] = x_hat[k] + h * d


@njit(cache=True)
def _stage2_loop(x_hat, x_next, d_cur, base, aux, guided, opw, w, t_next, h, half, out):
    for k in range(x_hat.size):
        D = opw * base[k] - w * aux[k] if guided else base[k]
        d_prime = (x_next[k] - D) / t_next
        out[k] = x_hat[k] + h * (half * d_cur[k] + half * d_prime)


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def heun_stage1_numba(x_hat, base, aux, w, t_hat, t_next):
    opw, wm, t_hat, t_next, h = _scalars(x_hat, base, aux, w, t_hat, t_next)
    x_next = np.empty(x_hat.shape, x_hat.dtype)  # S
    d_cur = np.empty(x_hat.shape, x_hat.dtype)  # S
    b = _flat(base)
    _stage1_loop(_flat(x_hat), b, b if aux is None else _flat(aux), aux is not None, opw, wm,
                 t_hat, h, x_next.reshape(-1), d_cur.reshape(-1))
    return x_next, d_cur


def heun_stage2_numba(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next):
    opw, wm, t_hat, t_next, h = _scalars(x_hat, base, aux, w, t_hat, t_next)
    out = np.empty(x_hat.shape, x_hat.dtype)  # S
    b = _flat(base)
    _stage2_loop(_flat(x_hat), _flat(x_next), _flat(d_cur), b, b if aux is None else _flat(aux),
                 aux is not None, opw, wm, t_next, h, x_hat.dtype.type(0.5), out.reshape(-1))
    return out


# ------------------------------------------------------------------------------------------------
# Dispatch
# ------------------------------------------------------------------------------------------------

def _is_cupy(a):
    return type(a).__module__.split(".")[0] == "cupy"


def _resolve(impl, a):
    gpu = _is_cupy(a)
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
