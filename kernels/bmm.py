"""Batched matrix products, c[n] = a[n] @ b[n], with the batch shared by the CPU kernels' threads.

# N batch, a (N, I, K), b (N, K, J), c (N, I, J)

    bmm(a, b, impl="auto") -> c

Why: inside a network's pass the CPU UNet keeps BLAS on one thread (its convolutions run their
own threads, and an OpenBLAS worker left spinning after a threaded call takes a core from them;
minisims.ops.network_threads), so attention's batched products ran on one core. Here
they run on both, through the threads that the convolutions use, without waking BLAS's.
Versions (``impl=``):
- "reference": ``a @ b``, NumPy's (or CuPy's) matmul on BLAS's own threads (as many as allowed).
- "threads": the batch in one range of images per thread of kernels/_threads.py, each range one
  NumPy matmul into its slice of c (matmul lets go of the GIL, so the ranges run at once). With
  BLAS on one thread, each image is the reference's BLAS call, so the two agree bit for bit
  (tests/test_kernels_bmm.py); call it with BLAS on one thread, or the threads multiply.
"auto" picks "threads" for NumPy arrays of more than one image, more than one kernel thread and
inside a scope where the caller declares BLAS on one thread (kernels/_threads.py's
blas_on_one_thread: minisims.ops.network_threads), "reference" otherwise (CuPy arrays included).
"""
from __future__ import annotations

import numpy as np

from ._array import array_module as _xp

IMPLS = ("reference", "threads")


def bmm_reference(a, b):
    return a @ b  # N,I,J


def bmm_threads(a, b):
    from . import _threads  # imports numba (for its thread count): on first use

    N, I, _ = a.shape
    c = np.empty((N, I, b.shape[2]), dtype=np.result_type(a, b))  # N,I,J

    def products(n0, n1):
        np.matmul(a[n0:n1], b[n0:n1], out=c[n0:n1])
    _threads.run(products, _threads.split(N))
    return c


def _resolve(impl, a):
    on_gpu = _xp(a) is not np
    if impl == "auto":
        if on_gpu or a.shape[0] < 2:
            return "reference"
        from . import _threads
        return "threads" if _threads.THREADS > 1 and _threads.blas_declared_one_thread() \
            else "reference"
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}: use one of {IMPLS} or 'auto'")
    if impl == "threads" and on_gpu:
        raise ValueError("impl 'threads' runs on NumPy arrays")
    return impl


def bmm(a, b, impl="auto"):
    """c (N,I,J) = a (N,I,K) @ b (N,K,J), image by image."""
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ValueError(f"bmm needs (N,I,K) and (N,K,J) arrays, got {a.shape} and {b.shape}")
    return (bmm_threads if _resolve(impl, a) == "threads" else bmm_reference)(a, b)
