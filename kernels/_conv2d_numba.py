"""Convolution, version "numba": im2col + BLAS GEMM in chunks of images, gathers as @njit loops.

# N batch, C/Cin input channels, Cout output channels, H W input size, Ho Wo output size,
# kh kw kernel size, K = kh*kw*C the im2col depth, B images per chunk, Mc = B*Ho*Wo GEMM rows

What changes from kernels/conv2d.py's "numpy" version:
- The batch is processed in chunks of B images whose columns (B, Ho*Wo, K) stay near the L3
  cache (about 20 MB) instead of one 150 MB array that goes through main memory twice.
- The gathers are compiled loops: each image is transposed into a small zero-bordered NHWC
  scratch (it fits in L2), and the columns are copied out of it in (kh, kw, C) order; the GEMM
  output (Mc, Cout) is transposed back into NCHW by a compiled loop too. The GEMMs stay in BLAS
  (numpy.matmul), the fastest matrix product here.
- The loops are serial on purpose. On the shared 2-core development machine an im2col with
  prange over the images of a chunk ran many times slower than the serial loop under numba's
  default OpenMP threading layer (spinning OpenMP threads against busy cores), and at best
  matched it otherwise (docs/notes/kernels-conv.md). The gathers are memory-bound and small
  next to the GEMMs, which use both cores through BLAS.
- The stride-1 input gradient is the forward convolution of dy with the flipped kernel, as in
  "numpy"; other strides use col2im, also compiled.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._conv2d_common import check_shapes, flipped_padding, flipped_weight_matrix, scratch, weight_matrix

CHUNK_ROWS = 8192  # GEMM rows per chunk: OpenBLAS ran 2048-row products at half the speed of
# 8192-row ones here (N=64, 32x32, C=64: 8 images, 19 MB of columns, inside the 32 MB L3;
# docs/notes/kernels-conv.md)


@njit(cache=True, nogil=True)  # nogil: kernels/_conv2d_small_dw.py runs it on the kernel threads
def _im2col(x, n0, padding, stride, kh, kw, Ho, Wo, cols):
    """cols[b, h*Wo+v, (i*kw+j)*C+c] = x_pad[n0+b, c, s*h+i, s*v+j] for the B images of a chunk.

    x (N,C,H,W) NCHW; cols (B, Ho*Wo, K)."""
    B = cols.shape[0]
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    p, s = padding, stride
    Hp, Wp = H + 2 * p, W + 2 * p
    pad = np.zeros((Hp, Wp, C), dtype=x.dtype)  # Hp,Wp,C: one image, NHWC; the border stays 0
    for b in range(B):
        n = n0 + b
        for c in range(C):
            for h in range(H):
                for v in range(W):
                    pad[h + p, v + p, c] = x[n, c, h, v]
        for h in range(Ho):
            for v in range(Wo):
                row = h * Wo + v
                for i in range(kh):
                    for j in range(kw):
                        k0 = (i * kw + j) * C
                        for c in range(C):
                            cols[b, row, k0 + c] = pad[s * h + i, s * v + j, c]


@njit(cache=True)
def _nhwc_to_nchw(y, n0, out):
    """out[n0+b, o, h, v] = y[b, h, v, o] for the B images of a chunk. y (B,Ho,Wo,Cout)."""
    B, Ho, Wo, Cout = y.shape
    for b in range(B):
        for o in range(Cout):
            for h in range(Ho):
                for v in range(Wo):
                    out[n0 + b, o, h, v] = y[b, h, v, o]


@njit(cache=True)
def _nchw_to_nhwc(dy, n0, out):
    """out[b, h, v, o] = dy[n0+b, o, h, v]. out (B,Ho,Wo,Cout)."""
    B, Ho, Wo, Cout = out.shape
    for b in range(B):
        for o in range(Cout):
            for h in range(Ho):
                for v in range(Wo):
                    out[b, h, v, o] = dy[n0 + b, o, h, v]


@njit(cache=True)
def _col2im(dcols, n0, padding, stride, kh, kw, Ho, Wo, dx):
    """dx[n0+b] = sum over taps of dcols scattered back: the adjoint of _im2col. dx (N,C,H,W)."""
    B = dcols.shape[0]
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    p, s = padding, stride
    Hp, Wp = H + 2 * p, W + 2 * p
    for b in range(B):
        pad = np.zeros((Hp, Wp, C), dtype=dx.dtype)  # Hp,Wp,C: gradient of the padded image
        for h in range(Ho):
            for v in range(Wo):
                row = h * Wo + v
                for i in range(kh):
                    for j in range(kw):
                        k0 = (i * kw + j) * C
                        for c in range(C):
                            pad[s * h + i, s * v + j, c] += dcols[b, row, k0 + c]
        for c in range(C):
            for h in range(H):
                for v in range(W):
                    dx[n0 + b, c, h, v] = pad[h + p, v + p, c]


def _chunk(N, rows_per_image):
    """Images per chunk: at least CHUNK_ROWS GEMM rows, at most the batch."""
    return int(max(1, min(N, -(-CHUNK_ROWS // rows_per_image))))


def _conv(x, wmat, kh, kw, stride, padding, Ho, Wo, out):
    """out (N,Cout,Ho,Wo) = convolution of x (N,C,H,W) with wmat (Cout,K), K ordered (i,j,c)."""
    N, C = x.shape[:2]
    Cout, K = wmat.shape
    B = _chunk(N, Ho * Wo)
    # scratch names start with numba_: the workspace is shared with the "numpy" version
    cols_all = scratch(np, "numba_cols", (B, Ho * Wo, K), x.dtype)  # B,HoWo,K
    y_all = scratch(np, "numba_y", (B, Ho, Wo, Cout), x.dtype)  # B,Ho,Wo,Cout
    wT = wmat.T  # K,Cout (a transposed view: BLAS reads it in place)
    for n0 in range(0, N, B):
        b = min(B, N - n0)
        cols, y = cols_all[:b], y_all[:b]
        _im2col(x, n0, padding, stride, kh, kw, Ho, Wo, cols)
        np.matmul(cols.reshape(b * Ho * Wo, K), wT, out=y.reshape(b * Ho * Wo, Cout))
        _nhwc_to_nchw(y, n0, out)
    return out


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    N, C, H, W = x.shape
    Cout, _, kh, kw = w.shape
    Ho, Wo = check_shapes(x.shape, w.shape, stride, padding)
    dtype = np.result_type(x.dtype, w.dtype)
    x = np.ascontiguousarray(x, dtype=dtype)
    wmat = np.ascontiguousarray(weight_matrix(w.astype(dtype, copy=False)))  # Cout,K
    y = np.empty((N, Cout, Ho, Wo), dtype=dtype)  # N,Cout,Ho,Wo
    _conv(x, wmat, kh, kw, stride, padding, Ho, Wo, y)
    if b is not None:
        y += b.astype(dtype, copy=False)[None, :, None, None]
    return y


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0):
    N, C, H, W = x_shape
    Cout, _, kh, kw = w.shape
    Ho, Wo = check_shapes(x_shape, w.shape, stride, padding)
    dtype = np.result_type(dy.dtype, w.dtype)
    dy = np.ascontiguousarray(dy, dtype=dtype)
    w = w.astype(dtype, copy=False)
    dx = np.empty((N, C, H, W), dtype=dtype)  # N,C,H,W
    s, p = stride, padding
    q = flipped_padding(kh, kw, s, p)
    if q is not None:
        # Stride 1: the forward convolution of dy (padded by q = k-1-p) with the flipped kernel.
        wmat = flipped_weight_matrix(np, w)  # Cin,kh*kw*Cout
        return _conv(dy, wmat, kh, kw, 1, q, H, W, dx)
    # Other strides: dcols = dy^T wmat per chunk, then col2im.
    K = kh * kw * C
    wmat = np.ascontiguousarray(weight_matrix(w))  # Cout,K
    B = _chunk(N, Ho * Wo)
    dy_all = scratch(np, "numba_dy", (B, Ho, Wo, Cout), dtype)  # B,Ho,Wo,Cout
    dcols_all = scratch(np, "numba_cols", (B, Ho * Wo, K), dtype)  # B,HoWo,K
    for n0 in range(0, N, B):
        b = min(B, N - n0)
        dyc, dcols = dy_all[:b], dcols_all[:b]
        _nchw_to_nhwc(dy, n0, dyc)
        np.matmul(dyc.reshape(b * Ho * Wo, Cout), wmat, out=dcols.reshape(b * Ho * Wo, K))
        _col2im(dcols, n0, p, s, kh, kw, Ho, Wo, dx)
    return dx


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0):
    Cout, C, kh, kw = w_shape
    N = x.shape[0]
    Ho, Wo = check_shapes(x.shape, w_shape, stride, padding)
    dtype = np.result_type(dy.dtype, x.dtype)
    dy = np.ascontiguousarray(dy, dtype=dtype)
    x = np.ascontiguousarray(x, dtype=dtype)
    K = kh * kw * C
    B = _chunk(N, Ho * Wo)
    cols_all = scratch(np, "numba_cols", (B, Ho * Wo, K), dtype)  # B,HoWo,K
    dy_all = scratch(np, "numba_dy", (B, Ho, Wo, Cout), dtype)  # B,Ho,Wo,Cout
    part = scratch(np, "numba_dwpart", (K, Cout), dtype)  # K,Cout
    dwT = np.zeros((K, Cout), dtype=dtype)  # K,Cout: dw transposed, rows ordered (i,j,c)
    for n0 in range(0, N, B):
        b = min(B, N - n0)
        cols, dyc = cols_all[:b], dy_all[:b]
        _im2col(x, n0, padding, stride, kh, kw, Ho, Wo, cols)
        _nchw_to_nhwc(dy, n0, dyc)
        # (K, Mc) @ (Mc, Cout): the long axis Mc is the reduction; BLAS splits over K rows
        np.matmul(cols.reshape(b * Ho * Wo, K).T, dyc.reshape(b * Ho * Wo, Cout), out=part)
        dwT += part
    dw = dwT.reshape(kh, kw, C, Cout).transpose(3, 2, 0, 1)  # Cout,Cin,kh,kw
    db = dy.sum(axis=(0, 2, 3))  # Cout
    return np.ascontiguousarray(dw), db
