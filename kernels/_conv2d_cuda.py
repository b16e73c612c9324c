"""Convolution, version "cuda": direct convolution as numba CUDA kernels.

# N batch, C input channels, Cout output channels, H W input size, Ho Wo output size,
# kh kw kernel size, s stride, p padding

What changes from the reference: each output value is one GPU thread that loops over its own
inputs, so there is no im2col buffer and no GEMM.
- forward: a thread per y[n, o, h, v] sums x_pad[n, c, s*h+i, s*v+j] w[o, c, i, j] over c, i, j.
- input gradient: a thread per dx[n, c, hh, vv] gathers the dy[n, o, h, v] whose window covers
  (hh, vv): hh + p = s*h + i, so only taps i with (hh + p - i) divisible by s and 0 <= h < Ho.
  A gather instead of the reference's scatter, so no two threads write the same value.
- weight gradient: a thread per dw[o, c, i, j] sums over n, h, v (a long reduction per thread,
  few threads: the simplest correct kernel, far from cuBLAS; see "cupy" for the fast path).
Every thread accumulates in the array dtype, in a different order from the reference and with
fused multiply-adds (NVVM's default), so float32 agrees with it to rounding (tests state the
tolerance).

These kernels run on a GPU, and on the CPU under NUMBA_ENABLE_CUDASIM=1 (CI, tiny shapes only).
They accept CuPy arrays (zero copy through __cuda_array_interface__) and return CuPy arrays, or
NumPy arrays (copied to the device and back) and return NumPy arrays.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ._conv2d_common import array_module, check_shapes

THREADS = 128  # threads per block for these 1-D launches


@cuda.jit
def _forward_kernel(x, w, y, stride, padding, zero):
    t = cuda.grid(1)
    N, Cout, Ho, Wo = y.shape
    if t >= N * Cout * Ho * Wo:
        return
    v = t % Wo
    h = (t // Wo) % Ho
    o = (t // (Wo * Ho)) % Cout
    n = t // (Wo * Ho * Cout)
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    acc = zero
    for c in range(C):
        for i in range(kh):
            hh = stride * h + i - padding
            if hh < 0 or hh >= H:
                continue
            for j in range(kw):
                vv = stride * v + j - padding
                if vv < 0 or vv >= W:
                    continue
                acc += x[n, c, hh, vv] * w[o, c, i, j]
    y[n, o, h, v] = acc


@cuda.jit
def _backward_input_kernel(dy, w, dx, stride, padding, zero):
    t = cuda.grid(1)
    N, C, H, W = dx.shape
    if t >= N * C * H * W:
        return
    vv = t % W
    hh = (t // W) % H
    c = (t // (W * H)) % C
    n = t // (W * H * C)
    Cout, Ho, Wo = dy.shape[1], dy.shape[2], dy.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    acc = zero
    for i in range(kh):
        a = hh + padding - i  # = stride * h
        if a < 0 or a % stride != 0 or a // stride >= Ho:
            continue
        h = a // stride
        for j in range(kw):
            b = vv + padding - j  # = stride * v
            if b < 0 or b % stride != 0 or b // stride >= Wo:
                continue
            v = b // stride
            for o in range(Cout):
                acc += dy[n, o, h, v] * w[o, c, i, j]
    dx[n, c, hh, vv] = acc


@cuda.jit
def _backward_weight_kernel(dy, x, dw, stride, padding, zero):
    t = cuda.grid(1)
    Cout, C, kh, kw = dw.shape
    if t >= Cout * C * kh * kw:
        return
    j = t % kw
    i = (t // kw) % kh
    c = (t // (kw * kh)) % C
    o = t // (kw * kh * C)
    N, Ho, Wo = dy.shape[0], dy.shape[2], dy.shape[3]
    H, W = x.shape[2], x.shape[3]
    acc = zero
    for n in range(N):
        for h in range(Ho):
            hh = stride * h + i - padding
            if hh < 0 or hh >= H:
                continue
            for v in range(Wo):
                vv = stride * v + j - padding
                if vv < 0 or vv >= W:
                    continue
                acc += dy[n, o, h, v] * x[n, c, hh, vv]
    dw[o, c, i, j] = acc


@cuda.jit
def _bias_grad_kernel(dy, db, zero):
    o = cuda.grid(1)
    N, Cout, Ho, Wo = dy.shape
    if o >= Cout:
        return
    acc = zero
    for n in range(N):
        for h in range(Ho):
            for v in range(Wo):
                acc += dy[n, o, h, v]
    db[o] = acc


def _blocks(total):
    return max(1, math.ceil(total / THREADS))


class _Device:
    """Moves arguments to the device and results back to where the inputs came from."""

    def __init__(self, like):
        self.xp = array_module(like)
        self.on_gpu = self.xp is not np

    def put(self, a, dtype):
        if self.on_gpu:
            return cuda.as_cuda_array(self.xp.ascontiguousarray(a, dtype=dtype))
        return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))

    def empty(self, shape, dtype):
        if self.on_gpu:
            return cuda.as_cuda_array(self.xp.empty(shape, dtype=dtype))
        return cuda.device_array(shape, dtype=dtype)

    def get(self, d):
        if self.on_gpu:
            return self.xp.asarray(d)
        return d.copy_to_host()


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    N = x.shape[0]
    Cout = w.shape[0]
    Ho, Wo = check_shapes(x.shape, w.shape, stride, padding)
    dtype = np.result_type(x.dtype, w.dtype)
    dev = _Device(x)
    zero = dtype.type(0)  # typed zero: the accumulators stay in the array dtype
    y = dev.empty((N, Cout, Ho, Wo), dtype)  # N,Cout,Ho,Wo
    _forward_kernel[_blocks(y.size), THREADS](dev.put(x, dtype), dev.put(w, dtype), y, stride, padding,
                                             zero)
    y = dev.get(y)
    if b is not None:
        y += b.astype(dtype, copy=False)[None, :, None, None]
    return y


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0):
    check_shapes(x_shape, w.shape, stride, padding)
    dtype = np.result_type(dy.dtype, w.dtype)
    dev = _Device(dy)
    zero = dtype.type(0)  # typed zero: the accumulators stay in the array dtype
    dx = dev.empty(tuple(x_shape), dtype)  # N,C,H,W
    _backward_input_kernel[_blocks(dx.size), THREADS](dev.put(dy, dtype), dev.put(w, dtype), dx,
                                                      stride, padding, zero)
    return dev.get(dx)


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0):
    check_shapes(x.shape, w_shape, stride, padding)
    dtype = np.result_type(dy.dtype, x.dtype)
    dev = _Device(dy)
    zero = dtype.type(0)  # typed zero: the accumulators stay in the array dtype
    d_dy = dev.put(dy, dtype)
    dw = dev.empty(tuple(w_shape), dtype)  # Cout,Cin,kh,kw
    db = dev.empty((w_shape[0],), dtype)  # Cout
    _backward_weight_kernel[_blocks(dw.size), THREADS](d_dy, dev.put(x, dtype), dw, stride, padding,
                                                       zero)
    _bias_grad_kernel[_blocks(db.size), THREADS](d_dy, db, zero)
    return dev.get(dw), dev.get(db)
