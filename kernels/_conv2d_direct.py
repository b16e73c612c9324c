"""Convolution, version "direct": no column buffer; a register-blocked micro-kernel reads the
padded NHWC input in place (numba, both cores through the pool of kernels/_threads.py).

# N batch, C/Cin input channels, Cout output channels, H W input size, Ho Wo output size,
# kh kw kernel size, T = kh*kw taps, s stride, p padding, M = Ho*Wo output pixels of one image
# P x Q the micro-kernel's tile (P scalars broadcast, Q = 2 vector registers of outputs)

The ladder's CPU rung past "numba" (im2col + BLAS, kernels/_conv2d_numba.py). Each image is copied
once into a small zero-bordered NHWC buffer that stays in L2 (NHWC: the C values a tap needs are
contiguous; the public API stays NCHW), and ``_tile`` keeps P x Q sums in AVX registers:
- forward (and input gradient): P output pixels x Q output channels, summed over taps and input
  channels, against weights packed in panels of Q output channels (``_pack_weights``); NCHW is
  stored straight from the tile. dx at stride 1 is the forward of dy with the flipped kernel
  (kernels/_conv2d_common.py); other strides fall back to "numba"'s col2im.
- weight gradient: the same tile as a direct reduction, P input channels x Q output channels of
  one tap over all output pixels, reading x and dy copied into channel blocks (``_channel_blocks``):
  two sequential streams, where NHWC reads cost a new cache line a pixel.
- 1x1 convolutions go to kernels/_conv2d_pointwise.py, the weight gradient at 8x8 and below to
  kernels/_conv2d_small_dw.py (BLAS beats the tile there).
- threads: the forward splits the batch by images, the weight gradient splits the tiles and each
  tile sums the whole batch in order (n, h, v): no result depends on the thread count (tested in
  tests/test_kernels_conv2d.py).
The tile is generated source (``_tile_source``) compiled with LLVM's SLP vectoriser on
(``_compile_tile``). Timings of every choice: docs/notes/kernels-conv.md.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit
from numba.extending import overload
from numba.core import config as _numba_config

from ._conv2d_common import check_shapes, flipped_padding
from . import _conv2d_pointwise as _pointwise
from . import _conv2d_small_dw as _small_dw
from . import _threads
from ._threads import run as _run, split as _split

U = np.uint64  # unsigned indices: numba adds no wraparound test for negative values
TILE = {np.dtype(np.float32): (5, 16), np.dtype(np.float64): (5, 8)}  # (P, Q) per dtype: Q fills
# two 256-bit registers; P*Q/8 + 2 + 1 <= 16 YMM registers (accumulators, weights, broadcast);
# the best of the tiles tried (docs/notes/kernels-conv.md)


# ------------------------------------------------------------------------------------------------
# The micro-kernel, written out for a given tile (P, Q)
# ------------------------------------------------------------------------------------------------

def _tile_source(P, Q):
    """Python source of the micro-kernel for a P x Q tile:

        acc[p, q] += sum_{r1, r2} a[pa[p] + a1[r1] + r2*sa] * b[b1[r1] + r2*bs + q]

    Forward (P pixels x Q output channels): r1 = tap, r2 = input channel, a = padded NHWC image,
    pa = the pixels' offsets, a1 = the taps' offsets, sa = 1, b = the packed weight panel.
    Weight gradient (P input channels x Q output channels of one tap): r1 = output row, r2 =
    output column, a = the padded image in blocks of P channels, pa = block + tap offset +
    channel, a1 = the rows' offsets, sa = s*P, b = dy in blocks of Q channels, bs = Q.
    The accumulators are P*Q scalars s{p}_{q} so that LLVM can hold them in P*Q/8 registers:
    plain loops over a (P, Q) accumulator array were unrolled and scalarised, never vectorised."""
    L = [f"def _tile_{P}x{Q}(a, pa, a1, sa, n2, b, b1, bs, acc):"]
    for p in range(P):
        L.append("    " + "; ".join(f"s{p}_{q} = acc[{p}, {q}]" for q in range(Q)))
    L.append("    for r1 in range(a1.shape[0]):")
    for p in range(P):
        L.append(f"        o{p} = pa[{p}] + a1[r1]")
    L.append("        for r2 in range(U(n2)):")
    L.append("            k = b1[r1] + r2 * bs")
    L.append("            " + "; ".join(f"w{q} = b[k + U({q})]" for q in range(Q)))
    for p in range(P):
        L.append(f"            x = a[o{p} + r2 * sa]")
        L.append("            " + "; ".join(f"s{p}_{q} += x * w{q}" for q in range(Q)))
    for p in range(P):
        L.append("    " + "; ".join(f"acc[{p}, {q}] = s{p}_{q}" for q in range(Q)))
    return "\n".join(L) + "\n"


def _tile_signature(dtype):
    f = numba.from_dtype(np.dtype(dtype))
    u = numba.uint64
    return (f[::1], u[::1], u[::1], u, numba.int64, f[::1], u[::1], u, f[:, ::1])


def _compile_tile(dtype):
    """Compile the tile of ``dtype`` eagerly with LLVM's SLP vectoriser on (numba's default is
    off), restoring the setting afterwards. The source is compiled under this file's name so
    that numba's on-disk cache (cache=True) can key it to this file, which holds the generator.
    Without SLP the P*Q accumulators stay scalar (vfmadd231ss). The loop vectoriser cannot help:
    it would vectorise the innermost loop, the reduction over channels, whose P*Q vector
    accumulators spill; fastmath={"contract"} (fused multiply-add, no reassociation) keeps it
    off that loop. ``_tile32.inspect_asm(sig)`` then shows 2*P vfmadd231ps on ymm registers plus
    P vbroadcastss per step, the accumulators in registers."""
    P, Q = TILE[np.dtype(dtype)]
    ns = {"U": U, "__name__": __name__}  # the module numba records for its cache
    exec(compile(_tile_source(P, Q), __file__, "exec"), ns)  # noqa: S102 (our own source)
    old = _numba_config.SLP_VECTORIZE
    _numba_config.SLP_VECTORIZE = 1
    try:
        return njit([_tile_signature(dtype)], nogil=True, fastmath={"contract"}, cache=True)(
            ns[f"_tile_{P}x{Q}"])
    finally:
        _numba_config.SLP_VECTORIZE = old


_tile32 = _compile_tile(np.float32)
_tile64 = _compile_tile(np.float64)


def _tile(a, pa, a1, sa, n2, b, b1, bs, acc):
    """The micro-kernel of a's dtype, chosen when numba compiles the caller (overload below)."""
    raise NotImplementedError("called from numba-compiled code only")


@overload(_tile, jit_options={"cache": True, "nogil": True})
def _tile_for_dtype(a, pa, a1, sa, n2, b, b1, bs, acc):
    return (lambda a, pa, a1, sa, n2, b, b1, bs, acc: _tile32(a, pa, a1, sa, n2, b, b1, bs, acc)) \
        if a.dtype == numba.float32 else \
        (lambda a, pa, a1, sa, n2, b, b1, bs, acc: _tile64(a, pa, a1, sa, n2, b, b1, bs, acc))


# ------------------------------------------------------------------------------------------------
# Image -> padded buffer in channel blocks; the forward (and stride-1 input gradient) over images
# ------------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _channel_blocks(x, n, p, B, out, c0, c1):
    """out[c // B, (h+p)*Wp + v+p, c % B] = x[n, c, h, v] for c0 <= c < c1, Wp = W + 2p; out is
    flat, its border and its channels past C stay zero. B = C: one padded NHWC image (the
    forward). B < C (the weight gradient): blocks of B channels, each block's pixels B floats
    apart, so a tile that reads B channels pixel after pixel reads one sequential stream.
    A transpose, channel by channel: x[n, c] is read in order, the writes are B floats apart
    (faster than row by row 8 channels at a time, as this was: docs/notes/kernels-conv.md)."""
    H, W = x.shape[2], x.shape[3]
    Wp = W + 2 * p
    S = (H + 2 * p) * Wp  # padded pixels per block
    for c in range(c0, c1):
        base = (c // B) * S * B + c % B
        for h in range(H):
            r = base + ((h + p) * Wp + p) * B
            for v in range(W):
                out[r + v * B] = x[n, c, h, v]


@njit(cache=True, nogil=True)
def _forward_images(x, n0, n1, wpk, b, kh, kw, s, p, P, Q, y):
    """y[n] (Cout, Ho*Wo), NCHW, for n0 <= n < n1: y[n, o, m] = b[o] + sum_{i,j,c}
    pad[(s*h + i)*Wp + s*v + j, c] * w[o, c, i, j], m = h*Wo + v.

    x (N,C,H,W); wpk (Cout/Q, kh*kw*C*Q) the weights packed in blocks of Q output channels,
    wpk[ob, (t*C + c)*Q + q] = w[ob*Q + q, c, i, j], t = i*kw + j; y (N, Cout, Ho*Wo).
    Every pixel tile runs against one weight panel (L1/L2) before the next panel; NCHW is
    stored from the tile (P*Q scattered stores per T*C*P*Q multiply-adds), no NHWC pass."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Cout, M = y.shape[1], y.shape[2]
    Wp = W + 2 * p
    Wo = (W + 2 * p - kw) // s + 1
    T = kh * kw
    pad = np.zeros((H + 2 * p) * Wp * C, dtype=x.dtype)  # one image, NHWC, flat; border 0
    toff = np.empty(T, dtype=U)  # where tap (i, j) starts, relative to a pixel's corner
    b1 = np.empty(T, dtype=U)  # where tap t's weights start in a packed panel
    for i in range(kh):
        for j in range(kw):
            toff[i * kw + j] = (i * Wp + j) * C
            b1[i * kw + j] = (i * kw + j) * C * Q
    nt = -(-M // P)  # pixel tiles per image; the last one may be partial
    pa = np.empty((nt, P), dtype=U)  # each tile's pixels: offsets of their top-left corners in pad
    for mt in range(nt):
        for k in range(P):
            m = min(mt * P + k, M - 1)  # past the image's end: repeat the last pixel (dropped)
            pa[mt, k] = (s * (m // Wo) * Wp + s * (m % Wo)) * C
    acc = np.empty((P, Q), dtype=x.dtype)  # P,Q
    for n in range(n0, n1):
        _channel_blocks(x, n, p, C, pad, 0, C)  # NHWC: one block of all C channels
        for ob in range(wpk.shape[0]):  # one weight panel (T*C*Q) at a time, over all pixels
            for mt in range(nt):
                m0 = mt * P
                acc[:] = 0
                _tile(pad, pa[mt], toff, U(1), C, wpk[ob], b1, U(Q), acc)
                for q in range(min(Q, Cout - ob * Q)):
                    o = ob * Q + q
                    for k in range(min(P, M - m0)):
                        y[n, o, m0 + k] = acc[k, q] + b[o]


# ------------------------------------------------------------------------------------------------
# Weight gradient: dw[t] (C, Cout) = sum over the batch of x_tap^T dy, a direct reduction
# ------------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _weight_grad_groups(x, dy, g0, g1, kh, kw, s, p, P, Q, dwp):
    """dwp[t, cb, ob, k, q] = sum_{n,h,v} x_pad[n, c, s*h + i, s*v + j] dy[n, o, h, v] for the
    tile groups g0 <= g < g1, g = cb*(Coutp/Q) + ob, c = cb*P + k, o = ob*Q + q, t = i*kw + j.
    x (N,C,H,W), dy (N,Cout,Ho,Wo); dwp (T, Cp/P, Coutp/Q, P, Q) zeroed, each [t, cb, ob] one
    tile's accumulators (C and Cout rounded up to multiples of P and Q; the extra rows and
    columns are scratch).
    Image by image, the blocks these groups read are copied (x in blocks of P channels, dy in
    blocks of Q, see _channel_blocks; they stay in this core's cache), then every group's tiles
    run over the whole image. Each sum runs over n, then the pixels (h, v), in order: one order
    for any split of the groups, so dw does not depend on how many threads share them."""
    N, C, H, W = x.shape
    Cout, Ho, Wo = dy.shape[1], dy.shape[2], dy.shape[3]
    Wp = W + 2 * p
    S = (H + 2 * p) * Wp  # padded pixels of one image
    M = Ho * Wo
    ncb, nob = dwp.shape[1], dwp.shape[2]
    cb0, cb1 = g0 // nob, (g1 - 1) // nob + 1  # the channel blocks these groups read
    ob0, ob1 = (g0 % nob, (g1 - 1) % nob + 1) if cb1 - cb0 == 1 else (0, nob)  # and dy's blocks
    xb = np.zeros(ncb * S * P, dtype=x.dtype)  # one image in blocks of P channels (Cp/P, S, P)
    dyb = np.zeros(nob * M * Q, dtype=x.dtype)  # its dy in blocks of Q channels (Coutp/Q, M, Q)
    a1 = np.empty(Ho, dtype=U)  # where output row h's pixels start in a block of xb
    for h in range(Ho):
        a1[h] = s * h * Wp * P
    b1 = np.empty((nob, Ho), dtype=U)  # where output row h of block ob starts in dyb
    for ob in range(nob):
        for h in range(Ho):
            b1[ob, h] = (ob * M + h * Wo) * Q
    pa = np.empty(P, dtype=U)
    for n in range(N):
        _channel_blocks(x, n, p, P, xb, cb0 * P, min(C, cb1 * P))
        _channel_blocks(dy, n, 0, Q, dyb, ob0 * Q, min(Cout, ob1 * Q))
        for g in range(g0, g1):  # one tile per (channel block, output block, tap), over the
            cb, ob = g // nob, g % nob  # whole image: two sequential streams, xb's cb, dyb's ob
            for i in range(kh):
                for j in range(kw):
                    for k in range(P):  # channels past C read xb's zeros (dropped)
                        pa[k] = (cb * S + i * Wp + j) * P + k
                    _tile(xb, pa, a1, U(s * P), Wo, dyb, b1[ob], U(Q), dwp[i * kw + j, cb, ob])


def _pack_weights(w, Q):
    """w (Cout,Cin,kh,kw) -> (Coutp/Q, kh*kw*Cin*Q), zero-filled past Cout (Coutp = Cout rounded
    up to a multiple of Q): block ob holds w[ob*Q + q, c, i, j] at ((i*kw + j)*Cin + c)*Q + q.
    One copy a block, from a (kh, kw, Cin, Cout) view: faster than one transposing copy of the
    whole, and it runs in every forward and input gradient (docs/notes/kernels-conv.md)."""
    Cout, C, kh, kw = w.shape
    nb = -(-Cout // Q)
    wt = w.transpose(2, 3, 1, 0)  # kh,kw,C,Cout (a view)
    out = np.empty((nb, kh, kw, C, Q), dtype=w.dtype)  # Coutp/Q,kh,kw,C,Q
    for ob in range(nb):
        q1 = min(Q, Cout - ob * Q)
        out[ob, ..., :q1] = wt[..., ob * Q:ob * Q + q1]
        out[ob, ..., q1:] = 0
    return out.reshape(nb, -1)


def _conv(x, w, b, stride, padding, Ho, Wo):
    """y (N,Cout,Ho,Wo) = b + the convolution of x (N,C,H,W) with w (Cout,C,kh,kw)."""
    N = x.shape[0]
    Cout, _, kh, kw = w.shape
    P, Q = TILE[x.dtype]
    y = np.empty((N, Cout, Ho * Wo), dtype=x.dtype)  # N,Cout,HoWo
    b = np.zeros(Cout, dtype=x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    wpk = _pack_weights(w, Q)  # Cout/Q, T*C*Q
    _run(lambda n0, n1: _forward_images(x, n0, n1, wpk, b, kh, kw, stride, padding, P, Q, y),
         _split(N))
    return y.reshape(N, Cout, Ho, Wo)


# ------------------------------------------------------------------------------------------------
# The three public functions (signatures as in kernels/conv2d.py)
# ------------------------------------------------------------------------------------------------

def conv2d_forward(x, w, b=None, stride=1, padding=0):
    Ho, Wo = check_shapes(x.shape, w.shape, stride, padding)
    dtype = np.result_type(x.dtype, w.dtype)
    x = np.ascontiguousarray(x, dtype=dtype)
    if _pointwise.applies(w.shape, stride, padding):  # 1x1: one BLAS product per image
        return _pointwise.forward(x, w.astype(dtype, copy=False), b)
    return _conv(x, w.astype(dtype, copy=False), b, stride, padding, Ho, Wo)


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0):
    Cout, C, kh, kw = w.shape
    check_shapes(x_shape, w.shape, stride, padding)
    if _pointwise.applies(w.shape, stride, padding):
        dtype = np.result_type(dy.dtype, w.dtype)
        return _pointwise.backward_input(np.ascontiguousarray(dy, dtype=dtype),
                                         w.astype(dtype, copy=False))
    q = flipped_padding(kh, kw, stride, padding)
    if q is None:  # stride > 1 (or p > k-1, or a non-square kernel): the "numba" col2im path
        from . import _conv2d_numba
        return _conv2d_numba.conv2d_backward_input(dy, w, x_shape, stride, padding)
    dtype = np.result_type(dy.dtype, w.dtype)
    dy = np.ascontiguousarray(dy, dtype=dtype)
    w_flip = w.astype(dtype, copy=False)[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # Cin,Cout,kh,kw
    # stride 1: dx is dy (padded by q = k-1-p) convolved with the flipped, transposed kernel
    return _conv(dy, w_flip, None, 1, q, x_shape[2], x_shape[3])


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0):
    Cout, C, kh, kw = w_shape
    check_shapes(x.shape, w_shape, stride, padding)
    dtype = np.result_type(dy.dtype, x.dtype)
    dy = np.ascontiguousarray(dy, dtype=dtype)
    x = np.ascontiguousarray(x, dtype=dtype)
    if _pointwise.applies(w_shape, stride, padding):
        return _pointwise.backward_weight(dy, x)
    if _small_dw.applies(w_shape, dy.shape[2] * dy.shape[3]):  # 8x8: columns and BLAS
        return _small_dw.backward_weight(dy, x, w_shape, stride, padding)
    P, Q = TILE[np.dtype(dtype)]
    ncb, nob = -(-C // P), -(-Cout // Q)
    dwp = np.zeros((kh * kw, ncb, nob, P, Q), dtype=dtype)  # T,Cp/P,Coutp/Q,P,Q: the sums
    _run(lambda g0, g1: _weight_grad_groups(x, dy, g0, g1, kh, kw, stride, padding, P, Q, dwp),
         _split(ncb * nob, _threads.THREADS))  # one chunk of tiles per thread, each over the whole batch:
    # each chunk copies every image's blocks it reads (dy's, all of them), so more chunks copy
    # more (4 or 8 chunks on 2 threads: up to 45% slower at 32x32, docs/notes/kernels-conv.md)
    dwp = dwp.transpose(0, 1, 3, 2, 4).reshape(kh * kw, ncb * P, nob * Q)  # T,Cp,Coutp
    dw = dwp[:, :C, :Cout].reshape(kh, kw, C, Cout).transpose(3, 2, 0, 1)  # Cout,Cin,kh,kw
    db = dy.sum(axis=(0, 2, 3))  # Cout
    return np.ascontiguousarray(dw), db
