"""2-D convolution (cross-correlation, PyTorch semantics): forward, gradient w.r.t. the input,
gradient w.r.t. the weight and bias.

# N batch, C/Cin input channels, Cout output channels, H W input size, Ho Wo output size,
# kh kw kernel size, K = kh*kw*Cin the im2col depth, M = N*Ho*Wo the GEMM rows, s stride, p padding

Public API (NCHW activations, weights (Cout,Cin,kh,kw), square stride and padding)::

    conv2d_forward(x, w, b=None, stride=1, padding=0, impl="auto") -> y            # N,Cout,Ho,Wo
    conv2d_backward_input(dy, w, x_shape, stride=1, padding=0, impl="auto") -> dx  # N,Cin,H,W
    conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, impl="auto") -> (dw, db)

    Ho = (H + 2p - kh) // s + 1, Wo likewise; db = dy.sum((0, 2, 3)).

Versions (``impl=``), each validated against the reference in tests/test_kernels_conv2d.py:

- ``"reference"``: one small matrix product per kernel tap (einsum over channels), NumPy only.
  Written to be read, not to be fast.
- ``"numpy"``: im2col + one GEMM, NHWC inside. The input is copied once into a zero-padded NHWC
  buffer, the columns are gathered in (kh, kw, C) order (the innermost copy is C contiguous
  values; NCHW columns would copy W values at a time and dominate the run time), one GEMM
  (M, K) @ (K, Cout) covers the whole batch, and one copy turns its NHWC result into NCHW.
  The input gradient at stride 1 is the forward convolution of dy, padded by k-1-p, with the
  flipped, transposed kernel (no scatter-add); at other strides it is col2im (a scatter-add per
  tap). NumPy buffers are allocated once and reused (a fresh 150 MB buffer per call pays page
  faults every time). The same code runs on CuPy arrays (CuPy's memory pool does the reuse).
- ``"numba"``: the same algorithm over chunks of about 8192 GEMM rows (columns stay near the
  cache), the gathers (NCHW -> padded NHWC -> columns, col2im, NHWC -> NCHW) as compiled loops;
  the GEMMs stay in BLAS. About 1.3x faster than "numpy" here. (kernels/_conv2d_numba.py)
- ``"direct"``: no column buffer at all: each image is copied into a small zero-bordered NHWC
  buffer (it stays in L2) and a register-blocked micro-kernel (5 output pixels x 16 output
  channels in 10 AVX registers) reads the taps from it in place and writes the NCHW output
  directly; the weight gradient is the same micro-kernel as a direct reduction over the pixels.
  Both cores through 2 threads over the batch; the input gradient at strides other than 1 falls
  back to "numba"; 1x1 convolutions (stride 1, no padding) are one BLAS product per image on
  the same threads (kernels/_conv2d_pointwise.py: the micro-kernel ran them at half its 3x3 rate),
  and the weight gradient at 8x8 and below is columns + BLAS in ranges of 4 images
  (kernels/_conv2d_small_dw.py). 1.2-1.7x faster than "numba" in benchmarks/bench_conv.py (N 64, 76-80% of
  sgemm on one core at 32x32), and at the UNet's own 24 shapes (batch 8, `bench_conv.py --unet`)
  1128 ms of convolution per training step against "numba"'s 1330 (PyTorch: 856); after the
  kernel threads' own pool, the weights packed block by block and the 1x1 path, 996 against
  1364 (PyTorch: 889; one run, load average 0.8-1.0).
  ``"auto"`` on the CPU since issue 9's per-shape study. Inside the UNet it gained nothing at
  first (1.28-1.49x PyTorch's step time against 1.28-1.41x): after every threaded BLAS call
  (attention's products, the embedding's 256x256 Linear) an OpenBLAS worker spins for about
  0.1 s (2^28 cycles, OPENBLAS_THREAD_TIMEOUT) and takes a core from this version's two
  threads; a direct convolution right after one ran 1.4-1.6x slower (9.8-11.7 vs 7.2 ms, timed
  by a helper's one-off script, not in the repository; no slower with
  OPENBLAS_THREAD_TIMEOUT=4), and the step's convolutions 30% slower (1333 vs
  1040 ms in bench_unet.py --profile, BLAS on two threads vs one). So the UNet runs its BLAS calls on one
  thread while this version is in use (minisims.nn.conv.network_blas_threads; attention on one
  thread: 104 vs 95 ms a step). Then the step, bench_unet.py --rounds 5 with default threads,
  11 interleaved pairs (either order first), load 0.9-1.9: 1297-1500 ms, 1.11-1.34x PyTorch's,
  against "numba"'s 1471-1766 ms, 1.33-1.60x: 4-21% faster in every pair; its --profile: the
  convolutions 934 ms a step (fwd 285, dx 285, dw 364) against 1333 before the one-thread BLAS
  and about 1300 with "numba". (kernels/_conv2d_direct.py)
- ``"cuda_naive"``: direct convolution as numba CUDA kernels, one thread per output value (the
  input gradient a gather over the taps that read each input, no flipped kernel and no GEMM);
  the teaching ladder's first rung. (kernels/_conv2d_cuda.py)
- ``"cuda"``: the ladder's second rung, the same direct convolution with shared-memory tiles
  (a block stages the input patch and weights of a 16x16 output tile, each thread keeps 8
  channels' sums; the weight gradient a parallel reduction per (o, c)). Both numba versions run
  under the CUDA simulator in CI; their module docstring counts each rung's global reads.
- ``"cupy"``: the ``"numpy"`` algorithm on CuPy arrays, the gathers as CuPy ElementwiseKernels
  (im2col straight from NCHW, col2im as a gather) and the GEMMs through cuBLAS (cupy.matmul).
  (kernels/_conv2d_cupy.py)
- ``"igemm"``: implicit GEMM as CuPy raw kernels (CUDA C), float32 only: the im2col GEMM without
  the column buffer, each block gathering its 64x16 piece of the columns into shared memory,
  4x4 register tiles per thread, the bias fused into the forward's store, the input gradient the
  same kernel with a transposed gather, the weight gradient split-K with a deterministic second
  reduction and db fused. Tested on the CPU through tests/cuda_emu.py. (kernels/_conv2d_igemm.py)

Files: this module holds the public entry point, the reference and "numpy"; each other version
is a backend module, imported on first use (CuPy's only when a CuPy array arrives). What the
versions share (the shape check, the array module, the im2col weight matrix, the flipped
kernel and its padding q = k-1-p for the stride-1 input gradient, the reused scratch buffers)
is written once in kernels/_conv2d_common.py. Imports point down only: conv2d imports
_conv2d_common and (lazily) _conv2d_numba, _conv2d_direct, _conv2d_cuda, _conv2d_cupy, _conv2d_igemm; the backends import
_conv2d_common, never this module (tests/test_architecture.py checks it).

The fast CPU versions reuse module-level scratch buffers (_conv2d_common.scratch): call them from
one thread at a time.

``"auto"`` picks ``AUTO_GPU_FLOAT32`` ("igemm") for float32 CuPy arrays, ``"cupy"`` for other
CuPy arrays, and the fastest measured CPU version, ``AUTO_CPU`` ("direct", which was "numba"
until issue 9: the CPU UNet's bits changed with it), for NumPy arrays (benchmarks/bench_conv.py,
benchmarks/bench_unet.py). ``runs_own_threads`` tells a caller that the version uses the cores
through its own threads, so that the caller's BLAS calls should stay on one thread. Where BLAS is
limited to one thread for other reasons (minisims' --blas-threads, bench_unet.py --threads), the
"direct" version still runs kernels._threads.THREADS threads (NUMBA_NUM_THREADS). CuPy is imported only when a CuPy array
arrives. On one H200, "igemm" ran conv fwd + dx + dw 1.2-5.7x faster than "cupy" at the
shapes in kernels/_conv2d_igemm.py's docstring. "cuda" and "cuda_naive" also accept NumPy arrays
(copied to the device and back; under NUMBA_ENABLE_CUDASIM=1 the simulator runs them, which is
how CI checks them).

A note on the layout: the public API is NCHW; the fast versions convert to NHWC inside because
im2col in (kh, kw, C) order copies C contiguous values at a time. Alternatives measured on the
2-core development machine that lost (N 64, C 64, 32x32, float32): one GEMM per image writing NCHW directly
(Cout rows per GEMM: 1.7x slower), dW as a (Cout, M) @ (M, K) product (OpenBLAS 7x slower than
(K, M) @ (M, Cout)), and im2col over one kernel row only (K = 3C, three accumulated GEMMs:
1.5x slower than full im2col).
"""
from __future__ import annotations

import numpy as np

# The helpers every version shares live one floor down, in _conv2d_common, which the backends
# import too (they never import this module). out_size is part of this module's public API.
from ._conv2d_common import (array_module, check_shapes, flipped_padding, flipped_weight_matrix,  # noqa: F401
                             out_size, scratch, weight_matrix)

CPU_IMPLS = ("reference", "numpy", "numba", "direct", "cuda", "cuda_naive")  # "cuda*" on NumPy arrays:
# copies to the device and back, or runs under the CUDA simulator (CI)
GPU_IMPLS = ("cuda", "cuda_naive", "cupy", "igemm", "numpy")  # "numpy" is array-module generic:
# it also runs on CuPy
FLOAT32_ONLY = ("igemm",)  # CUDA C float kernels: float32, the GPU training dtype
AUTO_GPU_FLOAT32 = "igemm"  # "auto" on float32 CuPy arrays; float64 goes to "cupy"
AUTO_CPU = "direct"  # the UNet step at batch 8 7-16% faster than with "numba" (see "direct" above)
OWN_THREADS = ("direct",)  # CPU versions that use the cores through their own threads, not BLAS's


def runs_own_threads(impl="auto"):
    """Whether the CPU version ``impl`` ("auto": AUTO_CPU) runs its own threads over the batch
    instead of BLAS's. Then a caller's other BLAS calls are best kept on one thread: after every
    threaded call an OpenBLAS worker spins for about 0.1 s (2^28 cycles, OPENBLAS_THREAD_TIMEOUT)
    and takes a core from those threads (see "direct" in the module docstring)."""
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
    # over M must not be the long axis of a 64-row product (measured 7x slower that way)
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
