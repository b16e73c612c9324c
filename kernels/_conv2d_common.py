"""What every version of kernels/conv2d.py shares: shape checks, the array module, the weight
matrix of im2col, the flipped kernel of the input gradient, and reused scratch buffers.

# N batch, C/Cin input channels, Cout output channels, H W input size, Ho Wo output size,
# kh kw kernel size, K = kh*kw*Cin the im2col depth, s stride, p padding

This module sits below the public entry point (kernels/conv2d.py) and the backends
(kernels/_conv2d_numba.py, _conv2d_cuda.py, _conv2d_cupy.py, _conv2d_igemm.py): they all import
it, it imports only NumPy (and CuPy when a CuPy array arrives), so no backend imports the entry
point back.

The input gradient as a convolution (used by "numpy", "numba" and "cupy"): at stride 1,

    dx[n,c,hh,vv] = sum_{o,i,j} dy_pad[n, o, hh + i', vv + j'] w[o, c, kh-1-i', kw-1-j']

with dy padded by q = k-1-p and i' = k-1-i: the forward convolution of dy with the kernel
flipped in space and transposed in channels (Cin,Cout,kh,kw), no scatter-add. At other strides
the versions use col2im instead (the adjoint of im2col), except "igemm", which splits dx by the
parity of the input pixel into s*s stride-1 input gradients with sub-kernels (parity_classes).
"""
from __future__ import annotations

import numpy as np

from ._array import array_module  # noqa: F401  (the versions import it from here)


def out_size(h: int, k: int, stride: int, padding: int) -> int:
    """Output length along one axis: (h + 2p - k) // s + 1."""
    return (h + 2 * padding - k) // stride + 1


def check_shapes(x_shape, w_shape, stride, padding):
    """Validate x (N,C,H,W), w (Cout,Cin,kh,kw), stride and padding; return (Ho, Wo)."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"conv2d wants x (N,C,H,W) and w (Cout,Cin,kh,kw), got {x_shape}, {w_shape}")
    if x_shape[1] != w_shape[1]:
        raise ValueError(f"input has {x_shape[1]} channels, weight expects {w_shape[1]}")
    if stride < 1 or padding < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0, got {stride}, {padding}")
    ho = out_size(x_shape[2], w_shape[2], stride, padding)
    wo = out_size(x_shape[3], w_shape[3], stride, padding)
    if ho < 1 or wo < 1:
        raise ValueError(f"kernel {w_shape[2:]} larger than padded input {x_shape[2:]}")
    return ho, wo


def weight_matrix(w):
    """w (Cout,Cin,kh,kw) -> (Cout, K) with K ordered (i, j, c) to match the columns."""
    Cout = w.shape[0]
    return w.transpose(0, 2, 3, 1).reshape(Cout, -1)  # Cout,K


def flipped_padding(kh, kw, stride, padding):
    """The padding q = k-1-p of dy under which the input gradient is the stride-1 forward
    convolution of dy with the flipped kernel; None where that does not apply (stride > 1, a
    non-square kernel, or p > k-1), and the version falls back to col2im."""
    if stride == 1 and kh == kw and kh - 1 - padding >= 0:
        return kh - 1 - padding
    return None


def parity_classes(k, n, n_out, stride, padding):
    """The input gradient along one axis, split by the parity of the input index: a list, one
    entry per residue r < s, of (r, i0, taps, q, n_sub).

    At stride s the input pixel a = s*alpha + r receives dy[h] w[i] for every (h, i) with
    s*h - p + i = a. s divides a + p - i only for the taps i = i0 + s*t (i0 = (r + p) mod s,
    t < taps = len(range(i0, k, s))), and then h = alpha + q - t with q = (r + p - i0) / s.
    So each class is a stride-1 input gradient with a sub-kernel w[..., i0::s] read at
    dy[alpha + q - t]: no tap multiplies a zero, where the gather over every tap wastes
    (s^2 - 1)/s^2 of them in 2D. n_sub = len(range(r, n, s)) inputs fall in the class; taps = 0
    (s > k) means the class receives nothing: its inputs' gradient is zero. n_out (the dy
    length) is not needed by the split, only checked."""
    if n_out != out_size(n, k, stride, padding):
        raise ValueError(f"dy length {n_out} does not match input {n}, kernel {k}, stride "
                         f"{stride}, padding {padding}")
    classes = []
    for r in range(stride):
        i0 = (r + padding) % stride
        classes.append((r, i0, len(range(i0, k, stride)), (r + padding - i0) // stride,
                        len(range(r, n, stride))))
    return classes


def flipped_weight_matrix(xp, w):
    """w (Cout,Cin,kh,kw) -> contiguous (Cin, kh*kw*Cout): the weight matrix of the kernel
    flipped in space and transposed in channels, for the input gradient as a convolution."""
    w_flip = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # Cin,Cout,kh,kw
    return xp.ascontiguousarray(weight_matrix(w_flip))  # Cin,kh*kw*Cout


_WORKSPACE: dict = {}


def scratch(xp, name, shape, dtype):
    """A scratch array of this shape, reused across calls on NumPy (a fresh 150 MB buffer per
    call pays page faults every time; fresh on CuPy, whose pool already recycles device
    memory). Only ever used for intermediates, never returned. One thread at a time."""
    if xp is not np:
        return xp.empty(shape, dtype=dtype)
    size = int(np.prod(shape))
    key = (name, np.dtype(dtype).str)
    buf = _WORKSPACE.get(key)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        _WORKSPACE[key] = buf
    return buf[:size].reshape(shape)
