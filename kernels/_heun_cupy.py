"""The fused Heun stages (kernels/heun.py), version "cupy": CuPy ElementwiseKernels.

# S sample shape; T the state's dtype, M the models' dtype

NVRTC contracts a * b + c into a fused multiply-add by default (--fmad=true), which changes the
last bit of the result; these kernels are compiled with --fmad=false so every operation rounds
as in NumPy, and the result is bit for bit the reference (tests/gpu/test_kernels_gpu.py checks
the bits). Imported only when CuPy arrays reach kernels.heun.
"""
from __future__ import annotations

import cupy
import numpy as np

from ._heun_common import AUX, BASE, scalars

_OPTIONS = ("--fmad=false",)

# D: the base, the aux, or eq. 5, by the mode chosen on the host (see _heun_common)
_PICK = f"""
    const M D = mode == {BASE} ? base : mode == {AUX} ? aux : (M)(opw * base - w * aux);  // eq. 5
"""

_STAGE1 = cupy.ElementwiseKernel(
    "T x_hat, M base, M aux, int32 mode, M opw, M w, T t_hat, T h",
    "T x_next, T d_cur",
    _PICK + """
    const T d = (x_hat - (T)D) / t_hat;                       // Euler step
    d_cur = d;
    x_next = x_hat + h * d;
    """,
    "minisims_heun_stage1", options=_OPTIONS)

_STAGE2 = cupy.ElementwiseKernel(
    "T x_hat, T x_next, T d_cur, M base, M aux, int32 mode, M opw, M w, T t_next, T h",
    "T x_out",
    _PICK + """
    const T d_prime = (x_next - (T)D) / t_next;              // 2nd order correction
    x_out = x_hat + h * ((T)0.5 * d_cur + (T)0.5 * d_prime);
    """,
    "minisims_heun_stage2", options=_OPTIONS)


def heun_stage1(x_hat, base, aux, w, t_hat, t_next):
    mode, opw, wm, t_hat, t_next, h = scalars(x_hat, base, aux, w, t_hat, t_next)
    x_next = cupy.empty_like(x_hat)  # S
    d_cur = cupy.empty_like(x_hat)  # S
    _STAGE1(x_hat, base, base if aux is None else aux, np.int32(mode), opw, wm, t_hat, h,
            x_next, d_cur)
    return x_next, d_cur


def heun_stage2(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next):
    mode, opw, wm, t_hat, t_next, h = scalars(x_hat, base, aux, w, t_hat, t_next)
    out = cupy.empty_like(x_hat)  # S
    _STAGE2(x_hat, x_next, d_cur, base, base if aux is None else aux, np.int32(mode), opw, wm,
            t_next, h, out)
    return out
