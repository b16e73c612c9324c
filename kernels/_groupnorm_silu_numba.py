"""GroupNorm + SiLU (kernels/groupnorm_silu.py), version "numba": the CPU's fused loops, both
cores through the thread pool of kernels/_threads.py (ranges of images).

# N batch, C channels, G groups, Cg = C/G, HW = H*W, M = Cg*HW values per group

The arithmetic is the CUDA C version's (kernels/_groupnorm_silu_cupy.py), one (image, group) at a
time, the group's M values contiguous in NCHW:
- forward: the sum of u = x + bias (mean), then the sum of (u - mean)^2 (variance: two passes,
  not E[u^2] - mean^2, which cancels), both in float64; a pass writes z = gamma xhat + beta, and
  one more y = z sigmoid(z) (below: why two).
- backward: a pass recomputes xhat, z and s = sigmoid(z), writes dxhat = gamma dz into dx and sums
  dz and dz xhat per channel (this image's dbeta, dgamma; summed over N afterwards in a fixed
  order), giving the group's <dxhat> and <dxhat xhat>; a second pass turns dx into
  (dxhat - <dxhat> - xhat <dxhat xhat>) rstd and sums each channel of it (dbias).
Why the sigmoid has a loop, and an exp, of its own: LLVM vectorises a loop only if every call in
it has a vector form, and numba's exp (libm's) has none here (no SVML); with it the loops ran one
value at a time and were no faster than the two NumPy layers. ``_sigmoid`` uses the float32 exp
of kernels/_exp_numba.py over one channel's HW values at a time, and vectorises; its division
only under ``error_model="numpy"`` (numba's default tests every divisor for zero, a branch that
kept the loop scalar; the divisor here is at least 1): the same bits, faster (the timings:
docs/notes/kernels-other.md). The float64 sums vectorise under fastmath "reassoc".
Sums in another order than NumPy's, and this module's exp (1.5e-7 relative, NumPy's float32
sigmoid 2.2e-7): within float32 tolerances of the reference (tests/test_kernels_fused.py), not
bit for bit. Each image is one thread's work, so nothing depends on the thread count.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._exp_numba import exp_parts
from ._threads import run, split


F = np.float32
ONE, MINUS_ONE = F(1.0), F(-1.0)


@njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _sigmoid(z, s, e, k):
    """s[i] = 1 / (1 + exp(-z[i])), float32, with the exp of kernels/_exp_numba.py, which
    vectorises. e (float32) and k (int32) are scratch of z's length: the second loop reads k as
    float32. Within 1 ulp or so of NumPy's float32 sigmoid (see tests/test_kernels_fused.py);
    |z| is clamped to 87 first, so s is 1 for z > 87 and about 1.6e-38 below -87 (NumPy: 1, and
    below 1.6e-38, 0 once exp overflows at z < -88.7)."""
    exp_parts(z, MINUS_ONE, e, k)  # exp(-z) = e 2^j
    two_j = k.view(np.float32)
    for i in range(z.shape[0]):
        s[i] = ONE / (ONE + e[i] * two_j[i])


@njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _silu_input(xc, b, r, ga, be, z):
    """z = gamma xhat + beta over one channel's values xc, xhat = (xc + b) r, b = bias - mean:
    one function, so that the backward recomputes the forward's z to the bit."""
    for i in range(xc.shape[0]):
        z[i] = (xc[i] + b) * r * ga + be


@njit(cache=True, nogil=True, inline="always")
def _sigmoid_scratch(HW):
    """s (one channel's sigmoid) and _sigmoid's scratch e, k."""
    return (np.empty(HW, dtype=np.float32), np.empty(HW, dtype=np.float32),
            np.empty(HW, dtype=np.int32))


@njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def _forward_images(x, bias, gamma, beta, G, eps, silu, n0, n1, y, mean, rstd):
    """y[n], mean[n], rstd[n] for n0 <= n < n1. x, y (N, C, HW); bias (N, C) (zeros when the
    caller has none); mean, rstd (N, G)."""
    C, HW = x.shape[1], x.shape[2]
    Cg = C // G
    M = Cg * HW
    s, e, k = _sigmoid_scratch(HW)
    for n in range(n0, n1):
        for g in range(G):
            acc = 0.0
            for c in range(g * Cg, (g + 1) * Cg):
                b = bias[n, c]
                for i in range(HW):
                    acc += x[n, c, i] + b
            mu = acc / M
            acc = 0.0
            for c in range(g * Cg, (g + 1) * Cg):
                b = bias[n, c] - mu
                for i in range(HW):
                    d = x[n, c, i] + b
                    acc += d * d
            r = 1.0 / math.sqrt(acc / M + eps)
            mean[n, g] = mu
            rstd[n, g] = r
            for c in range(g * Cg, (g + 1) * Cg):
                b = bias[n, c] - mu
                _silu_input(x[n, c], b, r, gamma[c], beta[c], y[n, c])
                if silu:
                    _sigmoid(y[n, c], s, e, k)
                    for i in range(HW):
                        y[n, c, i] *= s[i]


@njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def _backward_images(dy, x, bias, gamma, beta, mean, rstd, silu, n0, n1, dx, dgamma, dbeta,
                     dbias):
    """dx[n], and this image's per-channel sums dgamma[n], dbeta[n], dbias[n] (N, C), for
    n0 <= n < n1. dy, x, dx (N, C, HW); bias (N, C) (zeros when the caller has none)."""
    C, HW = x.shape[1], x.shape[2]
    G = mean.shape[1]
    Cg = C // G
    M = Cg * HW
    s, e, k = _sigmoid_scratch(HW)
    for n in range(n0, n1):
        for g in range(G):
            mu, r = mean[n, g], rstd[n, g]
            sd = 0.0  # sum of dxhat over the group
            sdx = 0.0  # sum of dxhat xhat
            for c in range(g * Cg, (g + 1) * Cg):
                b, ga = bias[n, c] - mu, gamma[c]
                _silu_input(x[n, c], b, r, ga, beta[c], dx[n, c])  # z, kept in dx for now
                if silu:
                    _sigmoid(dx[n, c], s, e, k)
                sz = 0.0  # sum of dz
                szx = 0.0  # sum of dz xhat
                for i in range(HW):
                    xh = (x[n, c, i] + b) * r
                    if silu:
                        z = dx[n, c, i]
                        dz = dy[n, c, i] * (s[i] + z * s[i] * (ONE - s[i]))
                    else:
                        dz = dy[n, c, i]
                    sz += dz
                    szx += dz * xh
                    dx[n, c, i] = dz * ga  # dxhat
                dbeta[n, c] = sz
                dgamma[n, c] = szx
                sd += ga * sz
                sdx += ga * szx
            md, mdx = sd / M, sdx / M
            for c in range(g * Cg, (g + 1) * Cg):
                b = bias[n, c] - mu
                acc = 0.0
                for i in range(HW):
                    v = (dx[n, c, i] - md - (x[n, c, i] + b) * r * mdx) * r
                    dx[n, c, i] = v
                    acc += v
                dbias[n, c] = acc


def forward(x, gamma, beta, groups, eps, bias=None, silu=True):
    """y (N,C,H,W), mean, rstd (N,G) for float32 NumPy arrays (the sigmoid is float32)."""
    N, C, H, W = x.shape
    dtype = x.dtype
    x3 = np.ascontiguousarray(x).reshape(N, C, H * W)  # N,C,HW
    b = np.zeros((N, C), dtype) if bias is None else np.ascontiguousarray(bias, dtype)  # N,C
    y = np.empty_like(x3)  # N,C,HW
    mean = np.empty((N, groups), dtype)  # N,G
    rstd = np.empty((N, groups), dtype)  # N,G
    gamma, beta = np.ascontiguousarray(gamma, dtype), np.ascontiguousarray(beta, dtype)
    run(lambda n0, n1: _forward_images(x3, b, gamma, beta, groups, eps, silu, n0, n1, y, mean,
                                       rstd), split(N))
    return y.reshape(N, C, H, W), mean, rstd


def backward(dy, x, gamma, beta, mean, rstd, bias=None, silu=True):
    """dx (N,C,H,W), dgamma (C,), dbeta (C,), dbias (N,C) or None, for float32 NumPy arrays."""
    N, C, H, W = x.shape
    dtype = x.dtype
    dy3 = np.ascontiguousarray(dy, dtype).reshape(N, C, H * W)  # N,C,HW
    x3 = np.ascontiguousarray(x).reshape(N, C, H * W)  # N,C,HW
    b = np.zeros((N, C), dtype) if bias is None else np.ascontiguousarray(bias, dtype)  # N,C
    dx = np.empty_like(x3)  # N,C,HW
    dgamma_nc, dbeta_nc, dbias = (np.empty((N, C), dtype) for _ in range(3))  # N,C each
    gamma, beta = np.ascontiguousarray(gamma, dtype), np.ascontiguousarray(beta, dtype)
    run(lambda n0, n1: _backward_images(dy3, x3, b, gamma, beta, mean, rstd, silu, n0, n1, dx,
                                        dgamma_nc, dbeta_nc, dbias), split(N))
    return (dx.reshape(N, C, H, W), dgamma_nc.sum(axis=0), dbeta_nc.sum(axis=0),
            None if bias is None else dbias)
