"""Adam + EMA (kernels/adam_ema.py), version "cupy": one CUDA C kernel over every parameter array.

# P parameter arrays; B thread blocks, each one CHUNK-value piece of one array; T threads

Multi-tensor apply: the host writes a table of the arrays' device addresses, ptrs (5,P) uint64
(rows p, g, m, v, e; 0 where an entry has no such array), their sizes (P,), and for every block
the array it works on and where its piece starts (B,). One launch then updates all P arrays:
block b walks its piece with stride T. No array is copied or concatenated; the table (a few KB)
is uploaded only when an address or a size changes (``cached_table``).

Compiled with --fmad=false: NVRTC would otherwise contract m * b1 + (1 - b1) * g into a fused
multiply-add and change the last bit. Division and sqrtf are IEEE-rounded (NVRTC's defaults,
-prec-div=true -prec-sqrt=true), so every value is bit for bit NumPy's float32 arithmetic.

The Python side works on NumPy arrays too (addresses of host memory), so tests run SOURCE through
tests/cuda_emu.EmulatedModule; only ``module()`` imports CuPy.
"""
from __future__ import annotations

import numpy as np

from ._array import array_module as _xp

SOURCE = r'''
extern "C" __global__ void adam_ema(
        const unsigned long long* ptrs, const int* sizes, const int* block_array,
        const int* block_start, int P, int chunk,
        float lr, float b1, float omb1, float b2, float omb2, float c1, float c2, float eps,
        float beta, float omb) {
    const int a = block_array[blockIdx.x];
    float* p = (float*)ptrs[a];
    const float* g = (const float*)ptrs[P + a];
    float* m = (float*)ptrs[2 * P + a];
    float* v = (float*)ptrs[3 * P + a];
    float* e = (float*)ptrs[4 * P + a];
    const int start = block_start[blockIdx.x];
    const int end = min(sizes[a], start + chunk);
    for (int i = start + threadIdx.x; i < end; i += blockDim.x) {
        float pi = p[i];
        if (m) {  // Adam, with bias correction
            const float gi = g[i];
            float mi = m[i] * b1;
            mi = mi + omb1 * gi;
            float vi = v[i] * b2;
            vi = vi + omb2 * gi * gi;
            m[i] = mi;
            v[i] = vi;
            pi = pi - lr * (mi / c1) / (sqrtf(vi / c2) + eps);
            p[i] = pi;
        }
        if (e) e[i] = e[i] * beta + omb * pi;  // EMA of the updated weights
    }
}
'''

OPTIONS = ("--fmad=false",)
THREADS = 256
CHUNK = 16 * THREADS  # values per block
_MODULE = None
_CACHE = {}  # the last table: {key: Table}


def module():
    """The compiled CuPy RawModule, built on first use."""
    global _MODULE
    if _MODULE is None:
        import cupy
        _MODULE = cupy.RawModule(code=SOURCE, options=OPTIONS)
    return _MODULE


def _address(a) -> int:
    return 0 if a is None else (a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr)


class Table:
    """The launch table of a list of entries (p, g, m, v, e), on the arrays' device."""

    def __init__(self, entries, chunk: int = CHUNK):
        xp = _xp(entries[0][0])
        P = len(entries)
        ptrs = np.array([[_address(e[r]) for e in entries] for r in range(5)], np.uint64)  # 5,P
        sizes = np.array([e[0].size for e in entries], np.int32)  # P
        if any(int(e[0].size) >= 2 ** 31 for e in entries):
            raise ValueError("an array of 2^31 values or more does not fit the int sizes")
        blocks = [(a, s) for a, n in enumerate(sizes) for s in range(0, int(n), chunk)]  # B
        self.P, self.chunk, self.blocks = P, chunk, len(blocks)
        self.ptrs = xp.asarray(ptrs)
        self.sizes = xp.asarray(sizes)
        self.block_array = xp.asarray(np.array([b[0] for b in blocks], np.int32))
        self.block_start = xp.asarray(np.array([b[1] for b in blocks], np.int32))
        self.keep = entries  # the addresses stay valid while the table lives


def cached_table(entries) -> Table:
    """The Table of these entries: the cached one while every address and size is unchanged."""
    key = tuple((_address(a), a.size) for e in entries for a in e if a is not None) + \
        tuple(a is None for e in entries for a in e)
    table = _CACHE.get(key)
    if table is None:
        _CACHE.clear()
        table = _CACHE[key] = Table(entries)
    return table


def adam_ema(mod, table: Table, scalars):
    """One launch over the table; scalars: kernels.adam_ema.float32_scalars(...)."""
    if table.blocks == 0:
        return
    mod.get_function("adam_ema")(
        (table.blocks,), (THREADS,),
        (table.ptrs, table.sizes, table.block_array, table.block_start, np.int32(table.P),
         np.int32(table.chunk), *scalars))
