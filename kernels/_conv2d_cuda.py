"""Convolution, versions "cuda" and "cuda_naive": direct convolution as numba CUDA kernels, the
teaching ladder's first two rungs (the CuPy versions are the next ones: "cupy" im2col + cuBLAS,
"igemm" the implicit GEMM in kernels/_conv2d_igemm.py).

# N batch, C input channels, Cout output channels, H W input size, Ho Wo output size,
# kh kw kernel size, s stride, p padding, T the tile side (16), OB/CB channels per thread (8)

Rung 1, "cuda_naive": one thread per output value (of y, dx or dw), looping over its own inputs
in global memory; no im2col buffer, no GEMM, no shared memory. 2*C*kh*kw global reads per forward
output, and the weight gradient has only Cout*C*kh*kw threads, each a long serial sum.
Rung 2, "cuda": shared-memory tiles. A block of T x T threads owns a T x T tile of pixels for OB
output channels (CB input channels for dx) and stages, channel by channel, the patch and weights
the tile reads: 0.19 global reads per output value and channel at s 1, 3x3, against rung 1's 18.
The weight gradient is a reduction, so its fix is parallelism: a block of 256 threads per (o, c)
and a tree reduction in shared memory. Each kernel's comment or docstring below has the details.
Shared arrays need constant shapes: each (dtype, kh, kw, s) compiles its rung-2 kernels once
(functools.lru_cache), tap loops unrolled. Grid z is N * (channel groups), at most 65535.
Accumulators are in the array dtype, summed in another order than the reference, with fused
multiply-adds (NVVM's default): float32 agrees with it to rounding (tests state the tolerance).
They run on a GPU and, under NUMBA_ENABLE_CUDASIM=1, on the CPU (CI, tiny shapes). CuPy arrays in
(zero copy through __cuda_array_interface__): CuPy out; NumPy in (copied to the device and back):
NumPy out. Timings: docs/notes/kernels-conv.md.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda

from ._conv2d_common import array_module, check_shapes

THREADS = 128  # threads per block for rung 1's 1-D launches
TILE = 16  # rung 2: a block is TILE x TILE threads, one output pixel each
GROUP = 8  # rung 2: output (forward) or input (dx) channels per thread
REDUCE = 256  # rung 2: threads per weight-gradient block (a power of two)


# ------------------------------------------------------------------------------------------------
# Rung 1: one thread per output value
# - forward: a thread per y[n, o, h, v] sums x_pad[n, c, s*h+i, s*v+j] w[o, c, i, j] over c, i, j.
# - input gradient: a thread per dx[n, c, hh, vv] gathers the dy[n, o, h, v] whose window covers
#   (hh, vv): hh + p = s*h + i, so only taps i with (hh + p - i) divisible by s and 0 <= h < Ho.
#   A gather instead of the reference's scatter, so no two threads write the same value.
# - weight gradient: a thread per dw[o, c, i, j] sums over n, h, v.
# Cost, counted by hand: every multiply-add reads its two operands from global memory, 2*C*kh*kw
# reads per forward output (1152 at C 64, 3x3; the caches catch many, as neighbouring threads
# read overlapping pixels); the weight gradient has only Cout*C*kh*kw threads, each a serial sum
# of N*Ho*Wo products (36864 threads of 65536 products at N 64, C 64, 32x32).
# ------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# Rung 2: shared-memory tiles (forward, input gradient), a parallel reduction (weight gradient)
# ------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _tiled_forward_kernel(dtype, kh, kw, stride):
    """The forward kernel for one (dtype, kh, kw, stride): shared arrays need constant shapes.

    A block of TILE x TILE threads owns a TILE x TILE tile of output pixels for GROUP output
    channels (each thread one pixel, GROUP accumulators). Per input channel the block stages in
    shared memory the input patch the tile reads, ((T-1)s + kh) x ((T-1)s + kw) values (zero
    outside x: padding is a bounds check at load time), and the GROUP x kh x kw weights, waits at
    cuda.syncthreads, and every thread does its GROUP*kh*kw multiply-adds from shared memory.
    Global reads per output value and input channel: ((T-1)s+kh)((T-1)s+kw)/(T*T*OB) +
    kh*kw/(T*T) = 324/2048 + 9/256 = 0.19 at s 1, 3x3 (rung 1: 2*kh*kw = 18): about 90x fewer."""
    PH, PW = (TILE - 1) * stride + kh, (TILE - 1) * stride + kw  # the input patch a tile reads
    nbtype = numba.from_dtype(dtype)

    @cuda.jit
    def kernel(x, w, y, padding, zero):
        patch = cuda.shared.array((PH, PW), nbtype)  # x[n, c] under the tile (zero outside x)
        wt = cuda.shared.array((GROUP, kh, kw), nbtype)  # w[o0:o0+GROUP, c]
        acc = cuda.local.array(GROUP, nbtype)  # one output pixel, GROUP output channels
        N, Cout, Ho, Wo = y.shape
        C, H, W = x.shape[1], x.shape[2], x.shape[3]
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        t = ty * TILE + tx
        groups = (Cout + GROUP - 1) // GROUP
        n, o0 = cuda.blockIdx.z // groups, (cuda.blockIdx.z % groups) * GROUP
        h, v = cuda.blockIdx.y * TILE + ty, cuda.blockIdx.x * TILE + tx
        h0 = cuda.blockIdx.y * TILE * stride - padding  # x row of patch row 0
        v0 = cuda.blockIdx.x * TILE * stride - padding
        for q in range(GROUP):
            acc[q] = zero
        for c in range(C):
            for e in range(t, PH * PW, TILE * TILE):  # every thread loads, in range or not
                r, q = e // PW, e % PW
                hh, vv = h0 + r, v0 + q
                patch[r, q] = x[n, c, hh, vv] if 0 <= hh < H and 0 <= vv < W else zero
            for e in range(t, GROUP * kh * kw, TILE * TILE):
                g, i, j = e // (kh * kw), (e // kw) % kh, e % kw
                wt[g, i, j] = w[o0 + g, c, i, j] if o0 + g < Cout else zero
            cuda.syncthreads()
            for i in range(kh):
                for j in range(kw):
                    xv = patch[ty * stride + i, tx * stride + j]
                    for q in range(GROUP):
                        acc[q] += xv * wt[q, i, j]
            cuda.syncthreads()  # before the next channel overwrites the tiles
        if h < Ho and v < Wo:
            for q in range(GROUP):
                if o0 + q < Cout:
                    y[n, o0 + q, h, v] = acc[q]
    return kernel


@functools.lru_cache(maxsize=None)
def _tiled_input_kernel(dtype, kh, kw, stride):
    """The input-gradient kernel for one (dtype, kh, kw, stride).

    The forward's tiling over dx, for GROUP input channels per thread; per output channel o the
    block stages the dy patch its tile gathers from, ((T+kh-2)//s + 1) rows by ((T+kw-2)//s + 1)
    columns (18 x 18 at s 1, 3x3), and w[o, c0:c0+GROUP]; each thread keeps the rung-1 gather
    (taps whose (hh + p - i) divides by s), now from shared memory. The same 0.19 global reads
    per value and channel at stride 1."""
    PH, PW = (TILE + kh - 2) // stride + 1, (TILE + kw - 2) // stride + 1  # dy patch a tile reads
    nbtype = numba.from_dtype(dtype)

    @cuda.jit
    def kernel(dy, w, dx, padding, zero):
        patch = cuda.shared.array((PH, PW), nbtype)  # dy[n, o] over the tile (zero outside dy)
        wt = cuda.shared.array((GROUP, kh, kw), nbtype)  # w[o, c0:c0+GROUP]
        acc = cuda.local.array(GROUP, nbtype)  # one dx pixel, GROUP input channels
        N, C, H, W = dx.shape
        Cout, Ho, Wo = dy.shape[1], dy.shape[2], dy.shape[3]
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        t = ty * TILE + tx
        groups = (C + GROUP - 1) // GROUP
        n, c0 = cuda.blockIdx.z // groups, (cuda.blockIdx.z % groups) * GROUP
        hh, vv = cuda.blockIdx.y * TILE + ty, cuda.blockIdx.x * TILE + tx
        # the first dy row any pixel of the tile reads: ceil((hh + p - i) / s) at the smallest hh
        # and largest i; the numerator is >= -(kh-1), so shifted by s*kh to divide a positive number
        h_lo = (cuda.blockIdx.y * TILE + padding - (kh - 1) + stride * kh + stride - 1) // stride - kh
        v_lo = (cuda.blockIdx.x * TILE + padding - (kw - 1) + stride * kw + stride - 1) // stride - kw
        for q in range(GROUP):
            acc[q] = zero
        for o in range(Cout):
            for e in range(t, PH * PW, TILE * TILE):
                r, q = e // PW, e % PW
                h, v = h_lo + r, v_lo + q
                patch[r, q] = dy[n, o, h, v] if 0 <= h < Ho and 0 <= v < Wo else zero
            for e in range(t, GROUP * kh * kw, TILE * TILE):
                g, i, j = e // (kh * kw), (e // kw) % kh, e % kw
                wt[g, i, j] = w[o, c0 + g, i, j] if c0 + g < C else zero
            cuda.syncthreads()
            for i in range(kh):
                a = hh + padding - i  # = s*h for the dy rows that read hh
                if a < 0 or a % stride != 0:
                    continue
                for j in range(kw):
                    b = vv + padding - j
                    if b < 0 or b % stride != 0:
                        continue
                    g = patch[a // stride - h_lo, b // stride - v_lo]
                    for q in range(GROUP):
                        acc[q] += g * wt[q, i, j]
            cuda.syncthreads()
        if hh < H and vv < W:
            for q in range(GROUP):
                if c0 + q < C:
                    dx[n, c0 + q, hh, vv] = acc[q]
    return kernel


@functools.lru_cache(maxsize=None)
def _reduce_weight_kernel(dtype, kh, kw):
    """The weight (and bias) gradient kernel for one (dtype, kh, kw): block (c, o) of REDUCE
    threads computes dw[o, c, :, :] (and db[o] when c == 0).

    A reduction, so the fix is parallelism, not tiles: each thread walks every REDUCE-th pixel of
    the N*Ho*Wo and keeps kh*kw partial sums in registers (1 dy and kh*kw x reads per pixel for
    kh*kw products: 1.1 reads per product, rung 1 reads 2), then a tree reduction in shared
    memory adds the REDUCE threads' partials."""
    KK, KK1 = kh * kw, kh * kw + 1  # the taps, and the taps + db (constants: array shapes)
    nbtype = numba.from_dtype(dtype)

    @cuda.jit
    def kernel(dy, x, dw, db, stride, padding, zero):
        part = cuda.shared.array((REDUCE, KK1), nbtype)  # each thread's partial sums, + db's
        mine = cuda.local.array(KK1, nbtype)
        N, Cout, Ho, Wo = dy.shape
        H, W = x.shape[2], x.shape[3]
        c, o, t = cuda.blockIdx.x, cuda.blockIdx.y, cuda.threadIdx.x
        for q in range(KK1):
            mine[q] = zero
        for m in range(t, N * Ho * Wo, REDUCE):  # consecutive threads, consecutive pixels
            v, h, n = m % Wo, (m // Wo) % Ho, m // (Wo * Ho)
            g = dy[n, o, h, v]
            mine[KK] += g
            for i in range(kh):
                hh = stride * h + i - padding
                if hh < 0 or hh >= H:
                    continue
                for j in range(kw):
                    vv = stride * v + j - padding
                    if 0 <= vv < W:
                        mine[i * kw + j] += g * x[n, c, hh, vv]
        for q in range(KK1):
            part[t, q] = mine[q]
        cuda.syncthreads()
        half = REDUCE // 2
        while half > 0:  # tree: half the threads add the other half's partials
            if t < half:
                for q in range(KK1):
                    part[t, q] += part[t + half, q]
            cuda.syncthreads()
            half //= 2
        if t < KK:
            dw[o, c, t // kw, t % kw] = part[0, t]
        if t == 0 and c == 0:
            db[o] = part[0, KK]
    return kernel


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


def conv2d_forward_naive(x, w, b=None, stride=1, padding=0):
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


def conv2d_backward_input_naive(dy, w, x_shape, stride=1, padding=0):
    check_shapes(x_shape, w.shape, stride, padding)
    dtype = np.result_type(dy.dtype, w.dtype)
    dev = _Device(dy)
    zero = dtype.type(0)  # typed zero: the accumulators stay in the array dtype
    dx = dev.empty(tuple(x_shape), dtype)  # N,C,H,W
    _backward_input_kernel[_blocks(dx.size), THREADS](dev.put(dy, dtype), dev.put(w, dtype), dx,
                                                      stride, padding, zero)
    return dev.get(dx)


def conv2d_backward_weight_naive(dy, x, w_shape, stride=1, padding=0):
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


def _tiles(width, height, depth):
    """Grid and block of a rung-2 tiled launch over width x height pixels, depth = N * groups."""
    return (math.ceil(width / TILE), math.ceil(height / TILE), depth), (TILE, TILE)


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    N = x.shape[0]
    Cout, _, kh, kw = w.shape
    Ho, Wo = check_shapes(x.shape, w.shape, stride, padding)
    dtype = np.result_type(x.dtype, w.dtype)
    dev = _Device(x)
    y = dev.empty((N, Cout, Ho, Wo), dtype)  # N,Cout,Ho,Wo
    grid, block = _tiles(Wo, Ho, N * math.ceil(Cout / GROUP))
    _tiled_forward_kernel(dtype, kh, kw, stride)[grid, block](
        dev.put(x, dtype), dev.put(w, dtype), y, padding, dtype.type(0))
    y = dev.get(y)
    if b is not None:
        y += b.astype(dtype, copy=False)[None, :, None, None]
    return y


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0):
    N, C, H, W = x_shape
    _, _, kh, kw = w.shape
    check_shapes(x_shape, w.shape, stride, padding)
    dtype = np.result_type(dy.dtype, w.dtype)
    dev = _Device(dy)
    dx = dev.empty(tuple(x_shape), dtype)  # N,C,H,W
    grid, block = _tiles(W, H, N * math.ceil(C / GROUP))
    _tiled_input_kernel(dtype, kh, kw, stride)[grid, block](
        dev.put(dy, dtype), dev.put(w, dtype), dx, padding, dtype.type(0))
    return dev.get(dx)


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0):
    Cout, C, kh, kw = w_shape
    check_shapes(x.shape, w_shape, stride, padding)
    dtype = np.result_type(dy.dtype, x.dtype)
    dev = _Device(dy)
    dw = dev.empty(tuple(w_shape), dtype)  # Cout,Cin,kh,kw
    db = dev.empty((Cout,), dtype)  # Cout
    _reduce_weight_kernel(dtype, kh, kw)[(C, Cout), REDUCE](
        dev.put(dy, dtype), dev.put(x, dtype), dw, db, stride, padding, dtype.type(0))
    return dev.get(dw), dev.get(db)
