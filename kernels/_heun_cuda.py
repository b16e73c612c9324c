"""The fused Heun stages (kernels/heun.py), version "cuda": numba CUDA kernels, one thread per
element.

# S sample shape; the arrays are flattened, k indexes the elements

Every product is libdevice's mul_rn (below), which the compiler never fuses into a multiply-add,
so every operation rounds as in NumPy and the result is bit for bit the reference (checked in
tests/test_kernels_cudasim.py under the simulator and in tests/gpu/test_kernels_gpu.py on a GPU).

Accepts CuPy arrays (zero copy) and returns CuPy arrays, or NumPy arrays (copied to the device and
back, or run by the simulator) and returns NumPy arrays.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import config, cuda

from ._heun_common import AUX, BASE, is_cupy, scalars

THREADS = 256

# NVVM contracts a * b + c into a fused multiply-add by default, whatever fastmath says (numba
# passes no -fma=0; see numba issue 2834, numba-cuda issue 118), which changes the last bit. A
# product written as libdevice's mul_rn is never fused, so every product goes through these. The
# simulator runs plain Python, where each operation rounds on its own (and libdevice is absent).
if config.ENABLE_CUDASIM:
    @cuda.jit(device=True)
    def _mul32(a, b):
        return a * b

    _mul64 = _mul32
else:
    from numba.cuda import libdevice

    @cuda.jit(device=True, inline=True)
    def _mul32(a, b):
        return libdevice.fmul_rn(a, b)

    @cuda.jit(device=True, inline=True)
    def _mul64(a, b):
        return libdevice.dmul_rn(a, b)


@functools.lru_cache(maxsize=None)
def _kernels(model_dtype, state_dtype):
    """The two stage kernels for one (models' dtype, state's dtype) pair: mul_m and mul_t are
    the unfusable products in each dtype."""
    mul_m = _mul32 if model_dtype == np.float32 else _mul64
    mul_t = _mul32 if state_dtype == np.float32 else _mul64

    @cuda.jit(device=True)
    def pick(mode, b, a, opw, w):  # D: the base, the aux, or eq. 5 (the mode, see _heun_common)
        if mode == BASE:
            return b
        if mode == AUX:
            return a
        return mul_m(opw, b) - mul_m(w, a)

    @cuda.jit
    def stage1(x_hat, base, aux, mode, opw, w, t_hat, h, x_next, d_cur):
        k = cuda.grid(1)
        if k < x_hat.size:
            D = pick(mode, base[k], aux[k], opw, w)  # eq. 5
            d = (x_hat[k] - D) / t_hat  # Euler step
            d_cur[k] = d
            x_next[k] = x_hat[k] + mul_t(h, d)

    @cuda.jit
    def stage2(x_hat, x_next, d_cur, base, aux, mode, opw, w, t_next, h, half, out):
        k = cuda.grid(1)
        if k < x_hat.size:
            D = pick(mode, base[k], aux[k], opw, w)  # eq. 5
            d_prime = (x_next[k] - D) / t_next  # 2nd order correction
            out[k] = x_hat[k] + mul_t(h, mul_t(half, d_cur[k]) + mul_t(half, d_prime))

    return stage1, stage2


class _Flat:
    """Flat device views of the arguments, and the way back to the caller's array type."""

    def __init__(self, like):
        self.gpu = is_cupy(like)
        if self.gpu:
            import cupy
            self.xp = cupy
        else:
            self.xp = np

    def put(self, a):
        a = self.xp.ascontiguousarray(a).reshape(-1)
        return cuda.as_cuda_array(a) if self.gpu else cuda.to_device(a)

    def empty(self, shape, dtype):
        n = int(np.prod(shape))
        if self.gpu:
            return cuda.as_cuda_array(self.xp.empty(n, dtype=dtype))
        return cuda.device_array(n, dtype=dtype)

    def get(self, d, shape):
        out = self.xp.asarray(d) if self.gpu else d.copy_to_host()
        return out.reshape(shape)


def _blocks(n):
    return max(1, math.ceil(n / THREADS))


def heun_stage1(x_hat, base, aux, w, t_hat, t_next):
    mode, opw, wm, t_hat, t_next, h = scalars(x_hat, base, aux, w, t_hat, t_next)
    f = _Flat(x_hat)
    d_base = f.put(base)
    x_next, d_cur = f.empty(x_hat.shape, x_hat.dtype), f.empty(x_hat.shape, x_hat.dtype)
    _kernels(base.dtype, x_hat.dtype)[0][_blocks(x_hat.size), THREADS](
        f.put(x_hat), d_base, d_base if aux is None else f.put(aux), mode, opw, wm, t_hat,
        h, x_next, d_cur)
    return f.get(x_next, x_hat.shape), f.get(d_cur, x_hat.shape)


def heun_stage2(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next):
    mode, opw, wm, t_hat, t_next, h = scalars(x_hat, base, aux, w, t_hat, t_next)
    f = _Flat(x_hat)
    d_base = f.put(base)
    out = f.empty(x_hat.shape, x_hat.dtype)
    _kernels(base.dtype, x_hat.dtype)[1][_blocks(x_hat.size), THREADS](
        f.put(x_hat), f.put(x_next), f.put(d_cur), d_base, d_base if aux is None else f.put(aux),
        mode, opw, wm, t_next, h, x_hat.dtype.type(0.5), out)
    return f.get(out, x_hat.shape)
