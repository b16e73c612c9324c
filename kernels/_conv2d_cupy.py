"""Convolution, version "cupy": im2col + cuBLAS GEMM on CuPy arrays.

# N batch, C input channels, Cout output channels, H W input size, Ho Wo output size,
# kh kw kernel size, K = kh*kw*C, M = N*Ho*Wo, s stride, p padding

The "numpy" algorithm of kernels/conv2d.py on the GPU, with its gathers as single CuPy kernels:
- im2col reads the NCHW input directly (no padded copy) and writes the columns (M, K), K ordered
  (i, j, c), one thread per column entry, zero outside the image;
- the products are cupy.matmul (cuBLAS): y (M, Cout) = cols @ wmat^T, dw^T (K, Cout) = cols^T dy;
- the input gradient at stride 1 is the forward convolution of dy with the flipped kernel; at other
  strides col2im is a gather (one thread per dx value sums the column entries that read it), so
  no atomics are needed.
Imported only when CuPy arrays reach kernels.conv2d; CPU-only installs never import it.
"""
from __future__ import annotations

import cupy
import numpy as np

from ._conv2d_common import check_shapes, flipped_padding, flipped_weight_matrix, weight_matrix

_IM2COL = cupy.ElementwiseKernel(
    "raw T x, int32 C, int32 H, int32 W, int32 Ho, int32 Wo, int32 kh, int32 kw, int32 s, int32 p",
    "T col",
    """
    const long long K = (long long)kh * kw * C;
    const long long k = i % K, m = i / K;              // col is (M, K): row m, depth k
    const int c = k % C, j = (k / C) % kw, ti = k / ((long long)C * kw);
    const int v = m % Wo, h = (m / Wo) % Ho;
    const long long img = m / ((long long)Wo * Ho);
    const int hh = s * h + ti - p, vv = s * v + j - p;
    col = (hh >= 0 && hh < H && vv >= 0 && vv < W) ? x[((img * C + c) * H + hh) * W + vv] : (T)0;
    """,
    "minisims_conv_im2col")
# (i is the element index that ElementwiseKernel provides; n and names starting with _ are
# reserved, hence img for the image index)

_COL2IM = cupy.ElementwiseKernel(
    "raw T dcols, int32 C, int32 H, int32 W, int32 Ho, int32 Wo, int32 kh, int32 kw, int32 s, int32 p",
    "T dx",
    """
    const long long K = (long long)kh * kw * C;
    const int vv = i % W, hh = (i / W) % H, c = (i / ((long long)W * H)) % C;
    const long long img = i / ((long long)W * H * C);   // dx is NCHW
    T acc = 0;
    for (int ti = 0; ti < kh; ++ti) {
        const int a = hh + p - ti;                       // = s * h for the rows that read hh
        if (a < 0 || a % s != 0 || a / s >= Ho) continue;
        for (int j = 0; j < kw; ++j) {
            const int b = vv + p - j;
            if (b < 0 || b % s != 0 || b / s >= Wo) continue;
            acc += dcols[((img * Ho + a / s) * Wo + b / s) * K + ((long long)ti * kw + j) * C + c];
        }
    }
    dx = acc;
    """,
    "minisims_conv_col2im")


def _im2col(x, kh, kw, stride, padding, Ho, Wo):
    N, C, H, W = x.shape
    cols = cupy.empty((N * Ho * Wo, kh * kw * C), dtype=x.dtype)  # M,K
    _IM2COL(x, C, H, W, Ho, Wo, kh, kw, stride, padding, cols)
    return cols


def _nhwc(a):
    """(N,C,H,W) -> contiguous (N*H*W, C)."""
    return cupy.ascontiguousarray(a.transpose(0, 2, 3, 1)).reshape(-1, a.shape[1])


def _conv(x, wmat, kh, kw, stride, padding, Ho, Wo):
    N = x.shape[0]
    Cout = wmat.shape[0]
    cols = _im2col(x, kh, kw, stride, padding, Ho, Wo)  # M,K
    y = cupy.matmul(cols, wmat.T)  # M,Cout (NHWC)
    return cupy.ascontiguousarray(y.reshape(N, Ho, Wo, Cout).transpose(0, 3, 1, 2))  # N,Cout,Ho,Wo


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    Cout, _, kh, kw = w.shape
    Ho, Wo = check_shapes(x.shape, w.shape, stride, padding)
    dtype = np.result_type(x.dtype, w.dtype)
    x = cupy.ascontiguousarray(x, dtype=dtype)
    wmat = cupy.ascontiguousarray(weight_matrix(w.astype(dtype, copy=False)))  # Cout,K
    y = _conv(x, wmat, kh, kw, stride, padding, Ho, Wo)  # N,Cout,Ho,Wo
    if b is not None:
        y += b.astype(dtype, copy=False)[None, :, None, None]
    return y


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0):
    N, C, H, W = x_shape
    Cout, _, kh, kw = w.shape
    Ho, Wo = check_shapes(x_shape, w.shape, stride, padding)
    dtype = np.result_type(dy.dtype, w.dtype)
    dy = cupy.ascontiguousarray(dy, dtype=dtype)
    w = w.astype(dtype, copy=False)
    q = flipped_padding(kh, kw, stride, padding)
    if q is not None:  # stride 1: dy (padded by q = k-1-p) convolved with the flipped kernel
        wmat = flipped_weight_matrix(cupy, w)  # Cin,kh*kw*Cout
        return _conv(dy, wmat, kh, kw, 1, q, H, W)  # N,C,H,W
    wmat = cupy.ascontiguousarray(weight_matrix(w))  # Cout,K
    dcols = cupy.ascontiguousarray(cupy.matmul(_nhwc(dy), wmat))  # M,K
    dx = cupy.empty((N, C, H, W), dtype=dtype)  # N,C,H,W
    _COL2IM(dcols, C, H, W, Ho, Wo, kh, kw, stride, padding, dx)
    return dx


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0):
    Cout, C, kh, kw = w_shape
    Ho, Wo = check_shapes(x.shape, w_shape, stride, padding)
    dtype = np.result_type(dy.dtype, x.dtype)
    dy = cupy.ascontiguousarray(dy, dtype=dtype)
    x = cupy.ascontiguousarray(x, dtype=dtype)
    cols = _im2col(x, kh, kw, stride, padding, Ho, Wo)  # M,K
    dy_m = _nhwc(dy)  # M,Cout
    dwT = cupy.matmul(cols.T, dy_m)  # K,Cout
    dw = dwT.reshape(kh, kw, C, Cout).transpose(3, 2, 0, 1)  # Cout,Cin,kh,kw
    db = dy_m.sum(axis=0)  # Cout
    return cupy.ascontiguousarray(dw), db
