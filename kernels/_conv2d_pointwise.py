"""1x1 convolutions (stride 1, no padding) for the "direct" version: one BLAS product per image.

# N batch, C input channels, Cout output channels, M = H*W pixels of one image

In NCHW a 1x1 convolution is already a matrix product, image by image, with nothing to gather:

    forward           y[n]  (Cout, M) = W (Cout, C) @ x[n] (C, M)  + b
    input gradient    dx[n] (C, M)    = W^T (C, Cout) @ dy[n] (Cout, M)
    weight gradient   dW    (Cout, C) = sum_n dy[n] (Cout, M) @ x[n]^T (M, C),  db = sum of dy

So here there is no padded NHWC copy, no packed weights and no scattered output: each image is
one NumPy matmul, on BLAS's own micro-kernels. Inside a network's pass, where the caller holds
BLAS on one thread and says so (kernels/_threads.py's blas_on_one_thread, declared by
minisims.ops.network_threads), the images are shared by the kernel threads, one range
each; elsewhere all the images go to BLAS in one call, on BLAS's own threads (the kernel threads
on top of BLAS's would multiply). The weight gradient's per-image products go to an (N, Cout, C)
buffer and are summed in image order, so no result depends on how the images were shared.

Why: through the direct version's micro-kernel a 1x1 convolution ran far below its 3x3 rate: a
tile's sum has only C terms, so loading, storing and scattering its P x Q results weighs as much
as the multiply-adds. This path is faster at the UNet's 1x1 shapes; the timings, and those of
one product over the whole batch, which lost to its transposing copies, are in
docs/notes/kernels-conv.md.
"""
from __future__ import annotations

import numpy as np

from . import _threads


def applies(w_shape, stride, padding):
    """Whether this path computes the convolution: a 1x1 kernel, stride 1, no padding."""
    return w_shape[2] == 1 and w_shape[3] == 1 and stride == 1 and padding == 0


def forward(x, w, b):
    """y (N,Cout,H,W) = W x[n] + b; x (N,C,H,W) and w (Cout,C,1,1) of one dtype, x contiguous."""
    N, C, H, W = x.shape
    Cout = w.shape[0]
    wm = w.reshape(Cout, C)  # Cout,C
    xm = x.reshape(N, C, H * W)  # N,C,M
    y = np.empty((N, Cout, H * W), dtype=x.dtype)  # N,Cout,M
    bias = None if b is None else np.asarray(b, dtype=x.dtype).reshape(Cout, 1)  # Cout,1

    def images(n0, n1):
        np.matmul(wm, xm[n0:n1], out=y[n0:n1])
        if bias is not None:
            y[n0:n1] += bias
    _threads.run_blas(images, N)
    return y.reshape(N, Cout, H, W)


def backward_input(dy, w):
    """dx (N,C,H,W) = W^T dy[n]; dy (N,Cout,H,W) contiguous, w (Cout,C,1,1) of dy's dtype."""
    N, Cout, H, W = dy.shape
    C = w.shape[1]
    wt = w.reshape(Cout, C).T  # C,Cout (a view: BLAS reads it transposed)
    dym = dy.reshape(N, Cout, H * W)  # N,Cout,M
    dx = np.empty((N, C, H * W), dtype=dy.dtype)  # N,C,M

    def images(n0, n1):
        np.matmul(wt, dym[n0:n1], out=dx[n0:n1])
    _threads.run_blas(images, N)
    return dx.reshape(N, C, H, W)


def backward_weight(dy, x):
    """(dW (Cout,C,1,1), db (Cout,)): the sum over images of dy[n] x[n]^T, in image order."""
    N, C, H, W = x.shape
    Cout = dy.shape[1]
    xm = x.reshape(N, C, H * W)  # N,C,M
    dym = dy.reshape(N, Cout, H * W)  # N,Cout,M
    per_image = np.empty((N, Cout, C), dtype=x.dtype)  # N,Cout,C

    def images(n0, n1):
        np.matmul(dym[n0:n1], xm[n0:n1].transpose(0, 2, 1), out=per_image[n0:n1])
    _threads.run_blas(images, N)
    dw = per_image.sum(axis=0)  # Cout,C: added image after image (axis 0 is not the contiguous one)
    return dw.reshape(Cout, C, 1, 1), dy.sum(axis=(0, 2, 3))
