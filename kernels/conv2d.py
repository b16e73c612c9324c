"""2-D convolution (cross-correlation, PyTorch semantics): forward, gradient w.r.t. the input,
gradient w.r.t. the weight and bias.

# N batch, C/Cin input channels, Cout output channels, H W input size, Ho Wo output size,
# kh kw kernel size, K = kh*kw*Cin the im2col depth, M = N*Ho*Wo the GEMM rows, s stride, p padding

Public API (NCHW activations, weights (Cout,Cin,kh,kw), square stride and padding)::

    conv2d_forward(x, w, b=None, stride=1, padding=0, impl="auto") -> y            # N,Cout,Ho,Wo
    conv2d_backward_input(dy, w, x_shape, stride=1, padding=0, impl="auto") -> dx  # N,Cin,H,W
    conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, impl="auto") -> (dw, db)

    Ho = (H + 2p - kh) // s + 1, Wo likewise; db = dy.sum((0, 2, 3)).

Versions (``impl=``), a teaching ladder from loops to implicit GEMM, each tested against the
reference: on the CPU in tests/test_kernels_conv2d.py, without a GPU in test_kernels_cudasim.py,
test_kernels_cuda_tiled.py and test_kernels_igemm.py (simulator, emulator), on one in tests/gpu/:
- "reference": one einsum over channels per kernel tap, NumPy only; written to be read.
- "numpy": NHWC im2col + one GEMM for the whole batch (below; array-module generic, so CuPy too).
- "numba": the same over chunks of images, the gathers compiled (kernels/_conv2d_numba.py).
- "direct": no columns; a register-blocked micro-kernel on its own threads (_conv2d_direct.py).
- "cuda_naive", "cuda": numba CUDA, a thread per output value, then shared-memory tiles
  (_conv2d_cuda.py); "cupy": "numpy" with CuPy gathers and cuBLAS (_conv2d_cupy.py);
  "igemm": implicit GEMM in CUDA C, no column buffer, float32 only (_conv2d_igemm.py).
"auto": AUTO_CPU ("direct", the fastest at the UNet's shapes) on NumPy arrays, AUTO_GPU_FLOAT32
("igemm") on float32 CuPy arrays, "cupy" on other CuPy arrays. Backends are imported on first use
(CuPy's only when a CuPy array arrives). The fast CPU versions reuse module-level scratch
buffers: call them from one thread at a time. Timings: docs/notes/kernels-conv.md.
"""
from __future__ import annotations

import numpy as np

# The helpers every version shares live one floor down, in _conv2d_common, which the backends
# import too (they never import this module: tests/test_architecture.py). out_size is part of
# this module's public API.
from ._conv2d_common import (array_module, check_shapes, flipped_padding, flipped_weight_matrix,  # noqa: F401
                             out_size, scratch, weight_matrix)

CPU_IMPLS = ("reference", "numpy", "numba", "direct", "cuda", "cuda_naive")  # "cuda*" on NumPy arrays:
# copies to the device and back, or runs under the CUDA simulator (CI)
GPU_IMPLS = ("cuda", "cuda_naive", "cupy", "igemm", "numpy")  # "numpy" is array-module generic:
# it also runs on CuPy
FLOAT32_ONLY = ("igemm",)  # CUDA C float kernels: float32, the GPU training dtype
AUTO_GPU_FLOAT32 = "igemm"  # "auto" on float32 CuPy arrays; float64 goes to "cupy"
AUTO_CPU = "direct"  # the UNet step at batch 8 7-16% faster than with "numba"; "numba" until
# issue 9, so the CPU UNet's bits changed with it (docs/notes/kernels-conv.md)
OWN_THREADS = ("direct",)  # CPU versions that use the cores through their own threads, not BLAS's


def runs_own_threads(impl="auto"):
    """Whether the CPU version ``impl`` ("auto": AUTO_CPU) runs its own threads over the batch
    instead of BLAS's. Then a caller's other BLAS calls are best kept on one thread: after every
    threaded call an OpenBLAS worker spins for about 0.1 s (2^28 cycles, OPENBLAS_THREAD_TIMEOUT)
    and takes a core from those threads (minisims.ops.network_threads holds BLAS on one
    thread while the image command trains and samples; the cost is measured in docs/notes/kernels-conv.md). Where
    BLAS is on one thread for other reasons (minisims' --blas-threads, bench_unet.py --threads),
    "direct" still runs kernels._threads.THREADS threads (NUMBA_NUM_THREADS)."""
    return (AUTO_CPU if impl == "auto" else impl) in OWN_THREADS


# ------------------------------------------------------------------------------------------------
# Reference: one (Cout,Cin) matrix product per kernel tap (i, j)
# ------------------------------------------------------------------------------------------------

def conv2d_forward_reference(x, w, b=None, stride=1, padding=0):
    """y[n,o,h,v] = b[o] + sum_{c,i,j} x_pad[n, c, s*h + i, s*v + j] w[o,c,i,j]."""
    N, C, H, W = x.shape
    Cout, _, kh, kw = w.shape
    Ho, Wo = check_shapes(x.shape, w.shape, stride, padding)
    s = stride
    xp_ = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))  # N,C,H+2p,W+2p
    y = np.zeros((N, Cout, Ho, Wo), dtype=np.result_type(x, w))  # N,Cout,Ho,Wo
    for i in range(kh):
        for j in range(kw):
            patch = xp_[:, :, i:i + s * Ho:s, j:j + s * Wo:s]  # N,C,Ho,Wo: what tap (i,j) sees
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv2d_backward_input_reference(dy, w, x_shape, stride=1, padding=0):
    """dx = the forward run backwards: each tap scatters dy (N,Cout,Ho,Wo) through w[:,:,i,j]."""
    N, C, H, W = x_shape
    Cout, _, kh, kw = w.shape
    Ho, Wo = check_shapes(x_shape, w.shape, stride, padding)
    s, p = stride, padding
    dx_pad = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=np.result_type(dy, w))  # N,C,H+2p,W+2p
    for i in range(kh):
        for j in range(kw):
            dx_pad[:, :, i:i + s * Ho:s, j:j + s * Wo:s] += np.einsum("nohw,oc->nchw", dy, w[:, :, i, j])
    return dx_pad[:, :, p:p + H, p:p + W].copy()  # N,C,H,W: the padding had no gradient to keep


def conv2d_backward_weight_reference(dy, x, w_shape, stride=1, padding=0):
    """dw[o,c,i,j] = sum_{n,h,v} dy[n,o,h,v] x_pad[n,c,s*h+i,s*v+j]; db[o] = sum_{n,h,v} dy."""
    Cout, C, kh, kw = w_shape
    Ho, Wo = check_shapes(x.shape, w_shape, stride, padding)
    s = stride
    xp_ = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))  # N,C,H+2p,W+2p
    dw = np.zeros(w_shape, dtype=np.result_type(dy, x))  # Cout,Cin,kh,kw
    for i in range(kh):
        for j in range(kw):
            patch = xp_[:, :, i:i + s * Ho:s, j:j + s * Wo:s]  # N,C,Ho,Wo
            dw[:, :, i, j] = np.einsum("nohw,nchw->oc", dy, patch)
    db = dy.sum(axis=(0, 2, 3))  # Cout
    return dw, db


# ------------------------------------------------------------------------------------------------
# "numpy": NHWC im2col + GEMM, buffers reused. Array-module generic (NumPy or CuPy).
# The input is copied once into a zero-padded NHWC buffer and the columns are gathered in
# (kh, kw, C) order, so the innermost copy is C contiguous values (NCHW columns would copy W
# values at a time and dominate the run time); one GEMM (M, K) @ (K, Cout) covers the batch, and
# one copy turns its NHWC result into NCHW. The input gradient at stride 1 is the forward
# convolution of dy, padded by k-1-p, with the flipped, transposed kernel (no scatter-add); at
# other strides it is col2im (a scatter-add per tap). NumPy buffers are reused across calls
# (scratch); on CuPy, CuPy's memory pool does the reuse.
# ------------------------------------------------------------------------------------------------

def _pad_nhwc(xp, x, padding, name):
    """Copy x (N,C,H,W) into a zero-bordered NHWC buffer (N,H+2p,W+2p,C)."""
    N, C, H, W = x.shape
    p = padding
    xpad = scratch(xp, name, (N, H + 2 * p, W + 2 * p, C), x.dtype)  # N,Hp,Wp,C
    if p:
        xpad[:, :p] = 0
        xpad[:, H + p:] = 0
        xpad[:, :, :p] = 0
        xpad[:, :, W + p:] = 0
    xpad[:, p:p + H, p:p + W, :] = x.transpose(0, 2, 3, 1)
    return xpad


def _im2col_nhwc(xp, xpad, kh, kw, stride, Ho, Wo, name):
    """Columns (N, Ho*Wo, K) with K ordered (i, j, c): cols[n, h*Wo+v, (i*kw+j)*C+c] =
    xpad[n, s*h+i, s*v+j, c]. The innermost copy is C contiguous values."""
    N, Hp, Wp, C = xpad.shape
    s = stride
    cols = scratch(xp, name, (N, Ho, Wo, kh, kw, C), xpad.dtype)  # N,Ho,Wo,kh,kw,C
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xpad[:, i:i + s * Ho:s, j:j + s * Wo:s, :]
    return cols.reshape(N, Ho * Wo, kh * kw * C)  # N,HoWo,K


def _nhwc_to_nchw(xp, y_nhwc, out):
    """Copy y (N,Ho,Wo,Cout) into the NCHW array out (N,Cout,Ho,Wo)."""
    out[...] = y_nhwc.transpose(0, 3, 1, 2)
    return out


def _conv_nhwc_gemm(xp, xpad, wmat, kh, kw, stride, Ho, Wo, out, name):
    """The core of every convolution here: columns of the padded NHWC input, one GEMM
    (M,K) @ (K,Cout) for the whole batch (a single large GEMM runs near the BLAS ceiling; one
    per image with only Cout rows does not), then one copy into the NCHW output."""
    N = xpad.shape[0]
    Cout = wmat.shape[0]
    cols = _im2col_nhwc(xp, xpad, kh, kw, stride, Ho, Wo, name + "_cols")  # N,HoWo,K
    y = scratch(xp, name + "_y", (N * Ho * Wo, Cout), out.dtype)  # M,Cout (NHWC)
    xp.matmul(cols.reshape(N * Ho * Wo, -1), wmat.T, out=y)
    return _nhwc_to_nchw(xp, y.reshape(N, Ho, Wo, Cout), out)


def conv2d_forward_numpy(x, w, b=None, stride=1, padding=0):
    xp = array_module(x)
    N, C, H, W = x.shape
    Cout, _, kh, kw = w.shape
    Ho, Wo = check_shapes(x.shape, w.shape, stride, padding)
    dtype = np.result_type(x.dtype, w.dtype)
    x, w = x.astype(dtype, copy=False), w.astype(dtype, copy=False)
    y = xp.empty((N, Cout, Ho, Wo), dtype=dtype)  # N,Cout,Ho,Wo: returned, so never a scratch buffer
    if kh == 1 and kw == 1 and padding == 0:  # 1x1: no columns, x itself is the GEMM operand
        xs = xp.ascontiguousarray(x[:, :, ::stride, ::stride]).reshape(N, C, Ho * Wo)  # N,C,HoWo
        xp.matmul(w.reshape(Cout, C), xs, out=y.reshape(N, Cout, Ho * Wo))
    else:
        xpad = _pad_nhwc(xp, x, padding, "fwd_pad")  # N,Hp,Wp,C
        wmat = xp.ascontiguousarray(weight_matrix(w))  # Cout,K
        _conv_nhwc_gemm(xp, xpad, wmat, kh, kw, stride, Ho, Wo, y, "fwd")
    if b is not None:
        y += b.astype(dtype, copy=False)[None, :, None, None]
    return y


def conv2d_backward_input_numpy(dy, w, x_shape, stride=1, padding=0):
    xp = array_module(dy)
    N, C, H, W = x_shape
    Cout, _, kh, kw = w.shape
    Ho, Wo = check_shapes(x_shape, w.shape, stride, padding)
    dtype = np.result_type(dy.dtype, w.dtype)
    dy, w = dy.astype(dtype, copy=False), w.astype(dtype, copy=False)
    s, p = stride, padding
    if kh == 1 and kw == 1 and p == 0:  # 1x1: dx = w^T dy on the sampled pixels, zero elsewhere
        dxs = xp.matmul(w.reshape(Cout, C).T, dy.reshape(N, Cout, Ho * Wo))  # N,C,HoWo
        if s == 1:
            return dxs.reshape(N, C, H, W)
        dx = xp.zeros((N, C, H, W), dtype=dtype)
        dx[:, :, ::s, ::s][:, :, :Ho, :Wo] = dxs.reshape(N, C, Ho, Wo)
        return dx
    dx = xp.empty((N, C, H, W), dtype=dtype)  # N,C,H,W
    q = flipped_padding(kh, kw, s, p)
    if q is not None:
        # Stride 1: dx is the forward convolution of dy, padded by q = k-1-p, with the kernel
        # flipped in space and transposed in channels: no scatter-add at all.
        dypad = _pad_nhwc(xp, dy, q, "bwdx_pad")  # N,Ho+2q,Wo+2q,Cout
        wmat = flipped_weight_matrix(xp, w)  # Cin,kh*kw*Cout
        return _conv_nhwc_gemm(xp, dypad, wmat, kh, kw, 1, H, W, dx, "bwdx")
    # General stride: dcols = dy^T w as one GEMM, then col2im adds every tap back into a padded
    # NHWC buffer.
    K = kh * kw * C
    dy_nhwc = scratch(xp, "bwdx_dy", (N, Ho, Wo, Cout), dtype)  # N,Ho,Wo,Cout
    dy_nhwc[...] = dy.transpose(0, 2, 3, 1)
    dcols = scratch(xp, "bwdx_dcols", (N * Ho * Wo, K), dtype)  # M,K
    xp.matmul(dy_nhwc.reshape(-1, Cout), xp.ascontiguousarray(weight_matrix(w)), out=dcols)
    dcols = dcols.reshape(N, Ho, Wo, kh, kw, C)  # N,Ho,Wo,kh,kw,C
    dxpad = scratch(xp, "bwdx_dxpad", (N, H + 2 * p, W + 2 * p, C), dtype)  # N,Hp,Wp,C
    dxpad[...] = 0
    for i in range(kh):
        for j in range(kw):
            dxpad[:, i:i + s * Ho:s, j:j + s * Wo:s, :] += dcols[:, :, :, i, j, :]
    return _nhwc_to_nchw(xp, dxpad[:, p:p + H, p:p + W, :], dx)


def conv2d_backward_weight_numpy(dy, x, w_shape, stride=1, padding=0):
    xp = array_module(dy)
    Cout, C, kh, kw = w_shape
    N = x.shape[0]
    Ho, Wo = check_shapes(x.shape, w_shape, stride, padding)
    dtype = np.result_type(dy.dtype, x.dtype)
    dy, x = dy.astype(dtype, copy=False), x.astype(dtype, copy=False)
    # dy as (M, Cout), NHWC: OpenBLAS splits a GEMM's work over its output, so the reduction
    # over M must not be the long axis of a 64-row product (7x slower that way:
    # docs/notes/kernels-conv.md)
    dy_m = scratch(xp, "bwdw_dy", (N, Ho, Wo, Cout), dtype)  # N,Ho,Wo,Cout
    dy_m[...] = dy.transpose(0, 2, 3, 1)
    dy_m = dy_m.reshape(N * Ho * Wo, Cout)  # M,Cout
    db = dy_m.sum(axis=0)  # Cout
    if kh == 1 and kw == 1 and padding == 0:
        xs = scratch(xp, "bwdw_x", (N, Ho, Wo, C), dtype)  # N,Ho,Wo,C
        xs[...] = x[:, :, ::stride, ::stride].transpose(0, 2, 3, 1)
        dw = (xs.reshape(-1, C).T @ dy_m).T  # Cout,C
        return xp.ascontiguousarray(dw).reshape(w_shape), db
    xpad = _pad_nhwc(xp, x, padding, "fwd_pad")  # N,Hp,Wp,C
    cols = _im2col_nhwc(xp, xpad, kh, kw, stride, Ho, Wo, "fwd_cols")  # N,HoWo,K
    dwmat = cols.reshape(N * Ho * Wo, -1).T @ dy_m  # K,Cout
    dw = dwmat.reshape(kh, kw, C, Cout).transpose(3, 2, 0, 1)  # Cout,Cin,kh,kw
    return xp.ascontiguousarray(dw), db


# ------------------------------------------------------------------------------------------------
# Dispatch
# ------------------------------------------------------------------------------------------------

def _resolve(impl, a, *others):
    """The version ``impl`` names, checked against where the arrays live; "auto" picks one."""
    is_gpu = array_module(a) is not np
    if impl == "auto":
        if not is_gpu:
            return AUTO_CPU
        float32 = all(o.dtype == np.float32 for o in (a, *others))
        return AUTO_GPU_FLOAT32 if float32 else "cupy"  # igemm has float32 kernels only
    allowed = GPU_IMPLS if is_gpu else CPU_IMPLS
    if impl not in allowed:
        where = "CuPy" if is_gpu else "NumPy"
        raise ValueError(f"impl {impl!r} does not run on {where} arrays: use one of {allowed} or 'auto'")
    return impl


def _table(impl):
    if impl == "reference":
        return (conv2d_forward_reference, conv2d_backward_input_reference,
                conv2d_backward_weight_reference)
    if impl == "numpy":
        return conv2d_forward_numpy, conv2d_backward_input_numpy, conv2d_backward_weight_numpy
    if impl == "numba":
        from . import _conv2d_numba as m
    elif impl == "direct":
        from . import _conv2d_direct as m
    elif impl == "cuda":
        from . import _conv2d_cuda as m
    elif impl == "cuda_naive":
        from . import _conv2d_cuda as m
        return m.conv2d_forward_naive, m.conv2d_backward_input_naive, m.conv2d_backward_weight_naive
    elif impl == "cupy":
        from . import _conv2d_cupy as m
    elif impl == "igemm":
        from . import _conv2d_igemm as m
    else:
        raise ValueError(f"unknown impl {impl!r}")
    return m.conv2d_forward, m.conv2d_backward_input, m.conv2d_backward_weight


def conv2d_forward(x, w, b=None, stride=1, padding=0, impl="auto"):
    """x (N,Cin,H,W), w (Cout,Cin,kh,kw), b (Cout,) or None -> y (N,Cout,Ho,Wo)."""
    return _table(_resolve(impl, x, w))[0](x, w, b, stride, padding)


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0, impl="auto"):
    """dy (N,Cout,Ho,Wo), w (Cout,Cin,kh,kw) -> dx of shape x_shape (N,Cin,H,W)."""
    return _table(_resolve(impl, dy, w))[1](dy, w, tuple(x_shape), stride, padding)


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, impl="auto"):
    """dy (N,Cout,Ho,Wo), x (N,Cin,H,W) -> (dw (Cout,Cin,kh,kw), db (Cout,))."""
    return _table(_resolve(impl, dy, x))[2](dy, x, tuple(w_shape), stride, padding)
