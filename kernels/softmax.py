"""Softmax over the last axis, scaled, forward and backward: attention's (minisims/nn/attention.py).

# N batch, I rows (queries), J entries per row (keys)

    A  = softmax_j(scale * S)                          N,I,J   each row sums to 1
    dS = scale * A * (dA - sum_j dA A)                 N,I,J   the backward, from A and dA

    softmax_forward(S, scale, impl="auto") -> A        A is written over S (S's buffer, returned)
    softmax_backward(A, dA, scale, impl="auto") -> dS  a new array

Versions (``impl=``):
- "reference": NumPy (or CuPy) array code, the arithmetic attention had inline: scale, take each
  row's maximum off (softmax does not change, and exp stays finite), exp, divide by the row's
  sum; a pass over the N*I*J values each, on one core.
- "numba" (_softmax_numba.py, which gives the loops): rows in loops, images shared by the threads
  of kernels/_threads.py, float32 only, sums in float64; kernels/_exp_numba.py's exp, which
  vectorises (numba's does not), with |scale S - max| clamped to 87, so entries under exp(-87)
  of their row's largest come out about 1.6e-38 times it instead of 0. Within float32 tolerances
  of the reference (tests/test_kernels_softmax.py), the same bits on any number of threads.
"auto" picks "numba" for float32 NumPy arrays, "reference" otherwise (CuPy arrays included).
"""
from __future__ import annotations

import numpy as np

from ._array import array_module as _xp

IMPLS = ("reference", "numba")


def softmax_forward_reference(S, scale):
    xp = _xp(S)
    S *= scale
    S -= S.max(axis=-1, keepdims=True)  # softmax is shift invariant; this keeps exp finite
    A = xp.exp(S, out=S)  # N,I,J
    A /= A.sum(axis=-1, keepdims=True)
    return A


def softmax_backward_reference(A, dA, scale):
    dS = A * (dA - (dA * A).sum(axis=-1, keepdims=True))  # N,I,J
    dS *= scale
    return dS


def _resolve(impl, a):
    if impl == "auto":
        return "numba" if _xp(a) is np and a.dtype == np.float32 else "reference"
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}: use one of {IMPLS} or 'auto'")
    if impl == "numba" and (_xp(a) is not np or a.dtype != np.float32):
        raise ValueError("impl 'numba' runs on float32 NumPy arrays")
    return impl


def _check(name, *arrays):
    a = arrays[0]
    if a.ndim != 3 or any(b.shape != a.shape for b in arrays[1:]):
        raise ValueError(f"{name} needs (N,I,J) arrays of one shape, got "
                         f"{', '.join(str(b.shape) for b in arrays)}")


def softmax_forward(S, scale, impl="auto"):
    """A (N,I,J) = softmax over the last axis of scale * S, written over S (C-contiguous)."""
    _check("softmax_forward", S)
    if _resolve(impl, S) == "numba":
        from . import _softmax_numba
        return _softmax_numba.forward(S, scale)
    return softmax_forward_reference(S, scale)


def softmax_backward(A, dA, scale, impl="auto"):
    """dS (N,I,J) = scale * A * (dA - sum_j dA A), A the forward's result."""
    _check("softmax_backward", A, dA)
    if _resolve(impl, A) == "numba":
        from . import _softmax_numba
        return _softmax_numba.backward(A, dA, scale)
    return softmax_backward_reference(A, dA, scale)
