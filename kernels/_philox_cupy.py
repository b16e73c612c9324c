"""kernels/philox.py's run_words, version "cupy": one ElementwiseKernel, a thread per (run,
Philox block), writing that block's four words. Integer arithmetic only (__umulhi for the high
word of each product), so the bits equal the reference's (tests/gpu/test_streams_gpu.py checks
them). Imported only when CuPy arrays reach kernels.philox.
"""
from __future__ import annotations

import cupy
import numpy as np

_WORDS = cupy.ElementwiseKernel(
    "raw uint64 runs, uint32 k0, uint32 k1, uint32 draw, int64 blocks, int64 per_run",
    "raw uint64 out",
    """
    const long long r = i / blocks, j = i % blocks;
    unsigned int c0 = (unsigned int)j, c1 = draw, c2 = (unsigned int)runs[r], c3 = 0u;
    unsigned int a = k0, b = k1;
    for (int round = 0; round < 10; ++round) {
        const unsigned int hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        const unsigned int hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        const unsigned int n0 = hi1 ^ c1 ^ a, n2 = hi0 ^ c3 ^ b;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
        a += 0x9E3779B9u; b += 0xBB67AE85u;   // the key schedule, mod 2^32
    }
    const long long p = 4 * j, at = r * per_run + p;
    out[at] = c0;
    if (p + 1 < per_run) out[at + 1] = c1;
    if (p + 2 < per_run) out[at + 2] = c2;
    if (p + 3 < per_run) out[at + 3] = c3;
    """,
    "minisims_philox_words")


def run_words(key, runs, draw: int, per_run: int):
    R, blocks = len(runs), -(-per_run // 4)
    out = cupy.empty((R, per_run), np.uint64)  # R,P
    _WORDS(cupy.ascontiguousarray(runs, dtype=np.uint64), np.uint32(key[0]), np.uint32(key[1]),
           np.uint32(draw), np.int64(blocks), np.int64(per_run), out, size=R * blocks)
    return out
