"""The numba-CUDA ladder's second rung (impl "cuda", kernels/_conv2d_cuda.py: shared-memory tiles
for the forward and input gradient, a parallel reduction for the weight gradient) under numba's
CUDA simulator, on tiny shapes, against the NumPy reference. Rung 1 ("cuda_naive") is checked in
tests/test_kernels_cudasim.py.

As there, NUMBA_ENABLE_CUDASIM=1 must be set before numba is first imported, so the checks run in
a child process started by the test below. The simulator runs every thread of a block as a Python
thread, so most cases shrink the rung's constants (tiles of 4 x 4 pixels, 3 channels per thread,
32 threads per reduction): several tiles and a partial channel group per axis, in seconds. One
case runs the shipped constants (16 x 16, 8, 256), where every tiny image is one partial tile.

# N batch, C channels in, O channels out, H W input size, k kernel size, s stride, p padding
"""
import os
import time

import numpy as np
from cudasim import run_under_simulator


# (N, C, O, H, W, k, s, p), float64 too for the first two
SMALL_TILE_CASES = [(1, 4, 5, 9, 7, 3, 1, 1), (1, 5, 4, 9, 10, 3, 2, 1), (1, 4, 3, 7, 9, 1, 2, 0),
                    (1, 3, 4, 6, 9, 3, 1, 0), (1, 2, 3, 5, 6, 1, 1, 1), (1, 2, 2, 10, 9, 3, 3, 2)]
SHIPPED_CASE = (1, 3, 2, 5, 6, 3, 1, 1)


def _use_constants(C, tile, group, reduce):
    """Set the rung's tile constants; the kernels read them when compiled, so drop the cached ones."""
    C.TILE, C.GROUP, C.REDUCE = tile, group, reduce
    for factory in (C._tiled_forward_kernel, C._tiled_input_kernel, C._reduce_weight_kernel):
        factory.cache_clear()


def _check(case, dtypes):
    from minisims.kernels.conv2d import (conv2d_backward_input, conv2d_backward_weight, conv2d_forward,
                                out_size)
    from minisims.gradcheck import assert_close
    N, C, O, H, W, k, s, p = case
    rng = np.random.default_rng(sum(case))
    for dtype in dtypes:
        x = rng.standard_normal((N, C, H, W)).astype(dtype)  # N,C,H,W
        w = rng.standard_normal((O, C, k, k)).astype(dtype)  # O,C,k,k
        b = rng.standard_normal(O).astype(dtype)  # O
        dy = rng.standard_normal((N, O, out_size(H, k, s, p), out_size(W, k, s, p))).astype(dtype)
        dw, db = conv2d_backward_weight(dy, x, w.shape, s, p, impl="cuda")
        dw_ref, db_ref = conv2d_backward_weight(dy, x, w.shape, s, p, impl="reference")
        # float32: at most 45 products (y, dx) or N*Ho*Wo <= 110 (dw, db) summed in another
        # order, each rounding at 6e-8 relative; float64: rounding only
        tol = 1e-5 if dtype == np.float32 else 1e-12
        for name, mine, ref in (
                ("y", conv2d_forward(x, w, b, s, p, impl="cuda"),
                 conv2d_forward(x, w, b, s, p, impl="reference")),
                ("dx", conv2d_backward_input(dy, w, x.shape, s, p, impl="cuda"),
                 conv2d_backward_input(dy, w, x.shape, s, p, impl="reference")),
                ("dw", dw, dw_ref), ("db", db, db_ref)):
            assert mine.dtype == dtype, f"cuda {name}: dtype {mine.dtype}"
            assert_close(f"cuda (tiled) {name} {case} {dtype.__name__}", mine, ref, tol, tol)


def check_tiled():
    from minisims.kernels import _conv2d_cuda as C
    shipped = (C.TILE, C.GROUP, C.REDUCE)
    _use_constants(C, 4, 3, 32)
    for i, case in enumerate(SMALL_TILE_CASES):
        t0 = time.perf_counter()
        _check(case, (np.float32, np.float64) if i < 2 else (np.float32,))
        print(f"small tiles {case}: {time.perf_counter() - t0:.1f} s")
    _use_constants(C, *shipped)
    t0 = time.perf_counter()
    _check(SHIPPED_CASE, (np.float32,))
    print(f"shipped tiles {SHIPPED_CASE}: {time.perf_counter() - t0:.1f} s")


def test_tiled_cuda_conv_under_simulator():
    stdout = run_under_simulator(__file__)
    assert "tiled ok" in stdout, stdout


if __name__ == "__main__":
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run through the test, with the simulator"
    check_tiled()
    print("tiled ok")
