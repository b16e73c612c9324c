"""Philox4x32-10, the counter-based random number generator of Salmon et al. (SC'11, "Parallel
random numbers: as easy as 1, 2, 3"): the words behind minisims' per-run random streams.

# R runs, B Philox blocks per run (4 words each), P words wanted per run

A keyed bijection of a 128-bit counter, philox(c, k), with no state carried from one number to
the next: any number of a stream can be computed on its own, in any order, on any device.
minisims.streams.RunGenerator asks for run r's block j of draw n as philox((j, n, r, 0), key), so
run r's numbers cannot depend on which other runs share the arrays. Ten rounds of (Random123's
philox4x32round and constants; tests/test_streams.py checks Random123's known answers):

    hi0:lo0 = M0 * c0        hi1:lo1 = M1 * c2       (32 x 32 -> 64-bit products)
    c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
    k = (k0 + W0, k1 + W1)   (mod 2^32, the Weyl key schedule between rounds)
    philox4x32(counter, key)                          # the bijection, elementwise
    run_words(key, runs, draw, per_run, impl="auto")  # R,P uint64 words (< 2^32) of one draw

Versions (``impl=``); both are integer arithmetic, so they give the same bits:
- "reference": array operations (NumPy or CuPy), one pass over R x B per operation; words held
  in uint64 so that a product of two 32-bit words is exact. minisims.ops.philox_words is the same
  lines (tests/test_streams.py checks them bit for bit) and runs them on NumPy arrays.
- "cupy": one CuPy ElementwiseKernel, a thread per (run, block), __umulhi for the high words: the
  GPU's fast path (about 80 array passes a draw become one launch).
"auto" picks "cupy" for CuPy and "reference" for NumPy. A compiled CPU loop (numba) was removed:
it made no difference to the toy's whole job (docs/performance.md).
"""
from __future__ import annotations

import numpy as np

from ._array import array_module as _xp

M0, M1 = 0xD2511F53, 0xCD9E8D57   # the multipliers
W0, W1 = 0x9E3779B9, 0xBB67AE85   # the key schedule (golden ratio, sqrt(3) - 1)
ROUNDS = 10
MASK = 0xFFFFFFFF
IMPLS = ("reference", "cupy")


# ------------------------------------------------------------------------------------------------
# Reference: array operations, NumPy or CuPy
# ------------------------------------------------------------------------------------------------

def philox4x32(counter, key, rounds: int = ROUNDS):
    """The Philox4x32 bijection. ``counter``: four arrays or ints of 32-bit words (broadcastable
    against each other), ``key``: two words. Returns the four output words as uint64 arrays of
    the broadcast shape, each < 2^32."""
    c0, c1, c2, c3 = (_u64(c) for c in counter)
    k0, k1 = (_u64(k) for k in key)
    for _ in range(rounds):
        p0 = c0 * M0  # exact: both factors < 2^32
        p1 = c2 * M1
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK, (p0 >> 32) ^ c3 ^ k1, p0 & MASK
        k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
    return c0, c1, c2, c3


def _u64(a):
    """A word as uint64 (an array stays on its device; an int becomes a NumPy scalar)."""
    if isinstance(a, (int, np.integer)):
        if not 0 <= int(a) <= MASK:
            raise ValueError(f"a Philox word must be in [0, 2^32), got {a}")
        return np.uint64(a)
    return a.astype(np.uint64, copy=False)


def run_words_reference(key, runs, draw: int, per_run: int):
    xp = _xp(runs)
    blocks = -(-per_run // 4)
    j = xp.arange(blocks, dtype=np.uint64)[None, :]  # 1,B
    out = philox4x32((j, draw, runs.astype(np.uint64)[:, None], 0), key)  # 4 x R,B
    return xp.stack(out, axis=-1).reshape(len(runs), 4 * blocks)[:, :per_run]  # R,P


# ------------------------------------------------------------------------------------------------
# Dispatch
# ------------------------------------------------------------------------------------------------

def run_words(key, runs, draw: int, per_run: int, impl: str = "auto"):
    """The P words of run ``runs[i]`` for draw number ``draw`` under ``key`` (two 32-bit words),
    as an (R,P) uint64 array on the device of ``runs`` (an integer array of run indices < 2^32):
    word p of a run is word p % 4 of philox((p // 4, draw, run, 0), key)."""
    if not 0 <= draw <= MASK:
        raise ValueError(f"the draw counter must be in [0, 2^32), got {draw}")
    gpu = not isinstance(runs, np.ndarray)
    if impl == "auto":
        impl = "cupy" if gpu else "reference"
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}: one of {', '.join(IMPLS)} or auto")
    if impl == "cupy":
        if not gpu:
            raise ValueError('impl="cupy" needs CuPy arrays')
        from ._philox_cupy import run_words as cupy_words
        return cupy_words(key, runs, draw, per_run)
    return run_words_reference(key, runs, draw, per_run)


__all__ = ["philox4x32", "run_words", "run_words_reference", "IMPLS",
           "M0", "M1", "W0", "W1", "ROUNDS"]
