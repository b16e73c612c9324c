"""Adam then the EMA of the weights, fused: one pass over every parameter entry per training step
(Kingma & Ba 2015, with bias correction; the EMA as in EDM's training loop).

# P parameter arrays; for each: p the parameter, g its gradient, m v Adam's moments, e the EMA's
# shadow copy, all float32 arrays of one size; t the step number (already counted)

    m = m * b1;  m = m + (1 - b1) * g               per entry, in this order, every scalar
    v = v * b2;  v = v + (1 - b2) * g * g           rounded once to the arrays' dtype (as NumPy
    p = p - lr * (m / c1) / (sqrt(v / c2) + eps)    rounds a Python float): Adam.step, then
    e = e * beta;  e = e + (1 - beta) * p           EMA.update; c1 = 1 - b1^t, c2 = 1 - b2^t
    adam_ema_update(entries, lr, betas, eps, t, ema_beta, impl="auto")     # updates in place
        entries [(p, g, m, v, e)]: g m v None together (not trained: the EMA only); e None: no EMA

Versions (``impl=``), each bit for bit the reference (tests/test_kernels_fused.py; the same IEEE
float32 operations as minisims.train's Adam and EMA, no multiply-add contraction):
- "reference": NumPy or CuPy, the lines above as array operations, one temporary each.
- "numba": a compiled loop per array, each value read and written once, in pieces of at most PIECE
  values shared by kernels/_threads.py's threads; ``error_model="numpy"`` (the default's zero test
  of every divisor kept LLVM from vectorising; a zero divisor gives inf or nan, as in the
  reference), the same bits, faster: docs/notes/kernels-other.md.
- "cupy" (_adam_ema_cupy.py): one launch for all P arrays, from a table of their device addresses
  and sizes ("multi-tensor apply"); --fmad=false, so bit for bit.
"auto" picks "cupy" for float32 CuPy arrays, "numba" for float32 NumPy arrays, else "reference".
Why a table, not one flat buffer with every parameter a view into it: a view breaks when a
parameter array is replaced (Module.copy, the EMA's shadow and SIMS's auxiliary model are copies,
other code may assign new arrays, ensembles carry a run axis) and would silently train a stale
copy; the table is rebuilt whenever an address or a size changes, so it cannot go stale.
"""
from __future__ import annotations

import functools

import numpy as np

from ._array import array_module as _xp

IMPLS = ("reference", "numba", "cupy")


def bias_corrections(betas, t: int):
    """(1 - b1^t, 1 - b2^t), as Python floats: Adam's bias corrections at step t."""
    b1, b2 = betas
    return 1 - b1 ** t, 1 - b2 ** t


def check_entries(entries):
    """Every entry (p, g, m, v, e): float arrays of one size, g m v all given or all None, no
    parameter twice (two updates of one array in one launch would race)."""
    seen = set()
    for i, (p, g, m, v, e) in enumerate(entries):
        moments = (g, m, v)
        if any(a is None for a in moments) and not all(a is None for a in moments):
            raise ValueError(f"entry {i}: g, m and v must all be given or all be None")
        arrays = [a for a in (p, g, m, v, e) if a is not None]
        if any(a.shape != p.shape or a.dtype != p.dtype for a in arrays):
            raise ValueError(f"entry {i}: arrays differ in shape or dtype "
                             f"{[(a.shape, str(a.dtype)) for a in arrays]}")
        if id(p) in seen:
            raise ValueError(f"entry {i}: the same parameter array appears twice")
        seen.add(id(p))


# ------------------------------------------------------------------------------------------------
# Reference: Adam.step's and EMA.update's array operations, entry by entry
# ------------------------------------------------------------------------------------------------

def adam_ema_reference(entries, lr, betas, eps, t, ema_beta):
    b1, b2 = betas
    c1, c2 = bias_corrections(betas, t)
    for p, g, m, v, e in entries:
        if m is not None:  # Adam
            xp = _xp(p)
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= lr * (m / c1) / (xp.sqrt(v / c2) + eps)
        if e is not None:  # EMA
            e *= ema_beta
            e += (1 - ema_beta) * p


# ------------------------------------------------------------------------------------------------
# "numba": one loop per array; scalars arrive rounded to float32, every operation is float32
# ------------------------------------------------------------------------------------------------

@functools.cache
def _numba_loops():
    """The three compiled loops (numba is imported on first use: the GPU path needs none)."""
    from numba import njit

    @njit(cache=True, inline="always", error_model="numpy")
    def _adam_entry(i, p, g, m, v, lr, b1, omb1, b2, omb2, c1, c2, eps):
        """Adam on entry i, in the reference's order of operations; returns the new p_i."""
        gi = g[i]
        mi = m[i] * b1
        mi = mi + omb1 * gi
        vi = v[i] * b2
        vi = vi + omb2 * gi * gi
        m[i] = mi
        v[i] = vi
        pi = p[i] - lr * (mi / c1) / (np.sqrt(vi / c2) + eps)
        p[i] = pi
        return pi

    @njit(cache=True, nogil=True, error_model="numpy")
    def _adam(p, g, m, v, lr, b1, omb1, b2, omb2, c1, c2, eps):
        for i in range(p.size):
            _adam_entry(i, p, g, m, v, lr, b1, omb1, b2, omb2, c1, c2, eps)

    @njit(cache=True, nogil=True, error_model="numpy")
    def _adam_ema(p, g, m, v, e, lr, b1, omb1, b2, omb2, c1, c2, eps, beta, omb):
        for i in range(p.size):  # Adam, then the EMA of the new p_i
            pi = _adam_entry(i, p, g, m, v, lr, b1, omb1, b2, omb2, c1, c2, eps)
            e[i] = e[i] * beta + omb * pi

    @njit(cache=True, nogil=True)
    def _ema(p, e, beta, omb):
        for i in range(p.size):
            e[i] = e[i] * beta + omb * p[i]

    return _adam, _adam_ema, _ema


def float32_scalars(lr, betas, eps, t, ema_beta):
    """lr, b1, 1 - b1, b2, 1 - b2, c1, c2, eps, beta, 1 - beta, each a Python float rounded once
    to float32 (as NumPy rounds it next to a float32 array)."""
    b1, b2 = betas
    c1, c2 = bias_corrections(betas, t)
    beta = 0.0 if ema_beta is None else ema_beta
    return tuple(np.float32(s) for s in (lr, b1, 1 - b1, b2, 1 - b2, c1, c2, eps, beta, 1 - beta))


PIECE = 1 << 16  # values per piece of work: the threads share pieces of the arrays


def adam_ema_numba(entries, lr, betas, eps, t, ema_beta):
    # three loops, not one with two flags: LLVM vectorises only a loop without branches (the
    # docstring: a division's zero test was one)
    from . import _threads  # imports numba: on first use, as _numba_loops does

    lr, b1, omb1, b2, omb2, c1, c2, eps, beta, omb = float32_scalars(lr, betas, eps, t, ema_beta)
    _adam, _adam_ema, _ema = _numba_loops()
    pieces = []  # (p, g, m, v, e) views of at most PIECE values each
    for entry in entries:
        flat = [None if a is None else a.reshape(-1) for a in entry]  # views
        for i in range(0, flat[0].size, PIECE):
            pieces.append([None if a is None else a[i:i + PIECE] for a in flat])

    def update(k0, k1):
        for p, g, m, v, e in pieces[k0:k1]:
            if m is not None and e is not None:
                _adam_ema(p, g, m, v, e, lr, b1, omb1, b2, omb2, c1, c2, eps, beta, omb)
            elif m is not None:
                _adam(p, g, m, v, lr, b1, omb1, b2, omb2, c1, c2, eps)
            elif e is not None:
                _ema(p, e, beta, omb)
    if not pieces:  # only empty arrays
        return
    ends = np.cumsum([piece[0].size for piece in pieces])  # values up to each piece
    cuts = np.searchsorted(ends, ends[-1] * np.arange(1, _threads.THREADS) / _threads.THREADS)
    edges = [0, *sorted(set(int(c) + 1 for c in cuts)), len(pieces)]  # ranges of ~equal values
    _threads.run(update, [(a, b) for a, b in zip(edges[:-1], edges[1:]) if a < b])


# ------------------------------------------------------------------------------------------------
# Dispatch
# ------------------------------------------------------------------------------------------------

def _resolve(impl, entries):
    p = entries[0][0]
    gpu = _xp(p) is not np
    f32 = all(e[0].dtype == np.float32 for e in entries)
    contiguous = all(a.flags.c_contiguous for e in entries for a in e if a is not None)
    if impl == "auto":
        if not (f32 and contiguous):
            return "reference"
        return "cupy" if gpu else "numba"
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}: use one of {IMPLS} or 'auto'")
    if impl != "reference" and not (f32 and contiguous and gpu == (impl == "cupy")):
        raise ValueError(f"impl {impl!r} needs contiguous float32 "
                         f"{'CuPy' if impl == 'cupy' else 'NumPy'} arrays")
    return impl


def adam_ema_update(entries, lr, betas, eps, t, ema_beta=None, impl="auto"):
    """Adam's step t (counted by the caller) and then the EMA update, in place, for every entry
    (p, g, m, v, e) (the module docstring); ``ema_beta`` None when no entry has a shadow."""
    entries = list(entries)
    if not entries:
        return
    check_entries(entries)
    if ema_beta is None and any(e[4] is not None for e in entries):
        raise ValueError("entries carry EMA shadows but ema_beta is None")
    impl = _resolve(impl, entries)
    if impl == "reference":
        adam_ema_reference(entries, lr, betas, eps, t, ema_beta)
    elif impl == "numba":
        adam_ema_numba(entries, lr, betas, eps, t, ema_beta)
    else:
        from . import _adam_ema_cupy as gpu
        gpu.adam_ema(gpu.module(), gpu.cached_table(entries), float32_scalars(lr, betas, eps, t, ema_beta))

