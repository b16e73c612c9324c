"""Softmax over the last axis (kernels/softmax.py), version "numba": loops over the rows, both
cores through the thread pool of kernels/_threads.py (ranges of images), float32.

# N batch, I rows, J entries per row

Forward, a row s at a time, in place: t_j = scale s_j, m = max_j t_j; u_j = t_j - m, rounded as
the reference rounds them (NumPy multiplies a float32 array by a Python float in float64 and
rounds once; so does this, scale being a float64), so that only the exp and the normalisation
differ (at |t| ~ 200 one ulp of t is 1.5e-5, which exp makes a relative error of A); e_j = exp(u_j)
(kernels/_exp_numba.py: vectorises, |u| clamped to 87), their sum in float64; a_j = e_j times
the sum's reciprocal (rounded to float32 once).
Backward, a row at a time: d = sum_j dA_j a_j (float64, then rounded); dS_j = a_j (dA_j - d) scale.
Each image is one thread's work, so nothing depends on the thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._exp_numba import exp_parts
from ._threads import run, split

F = np.float32
ONE = F(1.0)


@njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def _forward_images(S, scale, n0, n1):
    """S[n] (I, J) -> softmax of scale * S[n] over each row, in place, for n0 <= n < n1."""
    I, J = S.shape[1], S.shape[2]
    e = np.empty(J, dtype=np.float32)  # the exp's two parts (kernels/_exp_numba.py)
    k = np.empty(J, dtype=np.int32)
    two_j = k.view(np.float32)
    for n in range(n0, n1):
        for i in range(I):
            row = S[n, i]
            m = F(row[0] * scale)
            for j in range(J):
                t = F(row[j] * scale)  # in float64, rounded once (scale is a float64)
                row[j] = t
                m = max(m, t)
            for j in range(J):  # a loop apart: no multiply-add, u rounds as the reference's
                row[j] -= m  # u <= 0
            exp_parts(row, ONE, e, k)
            acc = 0.0
            for j in range(J):
                v = e[j] * two_j[j]
                row[j] = v
                acc += v
            r = F(1.0 / acc)
            for j in range(J):
                row[j] *= r


@njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def _backward_images(A, dA, scale, dS, n0, n1):
    """dS[n] = scale A[n] (dA[n] - the row sums of dA[n] A[n]), for n0 <= n < n1."""
    I, J = A.shape[1], A.shape[2]
    for n in range(n0, n1):
        for i in range(I):
            a, da, ds = A[n, i], dA[n, i], dS[n, i]
            acc = 0.0
            for j in range(J):
                acc += da[j] * a[j]
            d = F(acc)
            for j in range(J):
                ds[j] = F(a[j] * (da[j] - d) * scale)


def forward(S, scale):
    """S (N,I,J) float32 C-contiguous -> softmax over the rows of scale * S, written over S."""
    if not S.flags.c_contiguous:
        raise ValueError("softmax_forward writes over S: it must be C-contiguous")
    N = S.shape[0]
    sc = float(scale)  # float64: see the module docstring
    run(lambda n0, n1: _forward_images(S, sc, n0, n1), split(N))
    return S


def backward(A, dA, scale):
    """dS (N,I,J) = scale A (dA - sum_j dA A), float32."""
    A = np.ascontiguousarray(A)
    dA = np.ascontiguousarray(dA, dtype=np.float32)
    dS = np.empty_like(A)  # N,I,J
    sc = float(scale)
    run(lambda n0, n1: _backward_images(A, dA, sc, dS, n0, n1), split(A.shape[0]))
    return dS
