"""The "direct" version's weight gradient for small outputs (at most SMALL_PIXELS per image, 8x8
in the UNet): columns and BLAS, a range of images at a time.

# N batch, C input channels, Cout output channels, M = Ho*Wo output pixels of one image,
# K = kh*kw*C, R images per range

    cols_r  (R*M, K)    = im2col of the range's images, row (n, h, v), column (i, j, c)
    dW_r    (Cout, K)   = dy_r (Cout, R*M) @ cols_r          one BLAS product per range
    dW                  = sum of the dW_r in range order, (Cout, K) -> (Cout, C, kh, kw)

Why: at 8x8 the micro-kernel's weight gradient ran at less than half the rate of its forward
(longer tile calls did not help), while the "numba" version's columns + BLAS beat it; at 16x16
this path gained nothing, hence SMALL_PIXELS, and 4 images a range beat 2 or 8
(docs/notes/kernels-conv.md). The ranges are always RANGE_IMAGES images, so the sums, and the
bits, do not depend on the number of threads. Inside a network's pass, where the caller holds
BLAS on one thread and declares it (kernels/_threads.py's blas_on_one_thread), the ranges are
shared by the kernel threads; elsewhere they run in turn on this thread, each product on BLAS's
own threads.
"""
from __future__ import annotations

import numpy as np

from . import _threads
from ._conv2d_numba import _im2col  # the "numba" version's columns, (B, M, K) a chunk

SMALL_PIXELS = 64  # output pixels per image up to which the weight gradient goes this way
RANGE_IMAGES = 4  # images per product


def applies(w_shape, out_pixels):
    """Whether this path computes the weight gradient: a kernel larger than 1x1 and at most
    SMALL_PIXELS output pixels an image."""
    return w_shape[2] * w_shape[3] > 1 and out_pixels <= SMALL_PIXELS


def backward_weight(dy, x, w_shape, stride, padding):
    """(dW (Cout,C,kh,kw), db (Cout,)); dy (N,Cout,Ho,Wo) and x (N,C,H,W) contiguous, one dtype."""
    N, C = x.shape[0], x.shape[1]
    Cout, _, kh, kw = w_shape
    Ho, Wo = dy.shape[2], dy.shape[3]
    M, K = Ho * Wo, kh * kw * C
    ranges = [(n0, min(N, n0 + RANGE_IMAGES)) for n0 in range(0, N, RANGE_IMAGES)]
    per_range = np.empty((len(ranges), Cout, K), dtype=x.dtype)  # ranges,Cout,K

    def products(r0, r1):
        for r in range(r0, r1):
            n0, n1 = ranges[r]
            B = n1 - n0
            cols = np.empty((B, M, K), dtype=x.dtype)  # R,M,K: row (n, h, v), column (i, j, c)
            _im2col(x, n0, padding, stride, kh, kw, Ho, Wo, cols)
            dyr = np.ascontiguousarray(dy[n0:n1].reshape(B, Cout, M).transpose(1, 0, 2))  # Cout,R,M
            np.matmul(dyr.reshape(Cout, B * M), cols.reshape(B * M, K), out=per_range[r])
    _threads.run_blas(products, len(ranges))
    dw = per_range.sum(axis=0).reshape(Cout, kh, kw, C).transpose(0, 3, 1, 2)  # Cout,C,kh,kw
    return np.ascontiguousarray(dw), dy.sum(axis=(0, 2, 3))
