"""The numba CUDA kernel "cuda_naive" of kernels/conv2d.py, the ladder's first rung, runs under
numba's CUDA simulator, on tiny shapes, against the NumPy reference. The conv's tiled rung ("cuda") has its own file, tests/test_kernels_cuda_tiled.py.

NUMBA_ENABLE_CUDASIM=1 must be set before numba is first imported, and the rest of the suite
imports numba normally, so the checks run in a child process: the test below starts this file
as a script with the variable set, and the script's checks raise on any mismatch.

# N batch, C channels in, O channels out, H W input size, k kernel size, s stride, p padding
"""
import os

import numpy as np
from cudasim import run_under_simulator



def check_conv():
    from minisims.kernels.conv2d import (conv2d_backward_input, conv2d_backward_weight, conv2d_forward,
                                out_size)
    from minisims.gradcheck import assert_close
    rng = np.random.default_rng(0)
    # (N, C, O, H, W, k, s, p): the simulator runs one Python thread per output value
    cases = [(2, 3, 4, 5, 5, 3, 1, 1), (2, 3, 2, 6, 5, 3, 2, 1), (1, 2, 3, 5, 4, 1, 2, 0),
             (1, 2, 2, 4, 5, 3, 1, 0)]
    for N, C, O, H, W, k, s, p in cases:
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal((N, C, H, W)).astype(dtype)  # N,C,H,W
            w = rng.standard_normal((O, C, k, k)).astype(dtype)  # O,C,k,k
            b = rng.standard_normal(O).astype(dtype)  # O
            dy = rng.standard_normal((N, O, out_size(H, k, s, p), out_size(W, k, s, p))).astype(dtype)
            # float32: at most 36 products summed in another order; float64: rounding only
            tol = 1e-5 if dtype == np.float32 else 1e-12
            pairs = [
                ("y", conv2d_forward(x, w, b, s, p, impl="cuda_naive"),
                 conv2d_forward(x, w, b, s, p, impl="reference")),
                ("dx", conv2d_backward_input(dy, w, x.shape, s, p, impl="cuda_naive"),
                 conv2d_backward_input(dy, w, x.shape, s, p, impl="reference")),
            ]
            dw, db = conv2d_backward_weight(dy, x, w.shape, s, p, impl="cuda_naive")
            dw_ref, db_ref = conv2d_backward_weight(dy, x, w.shape, s, p, impl="reference")
            pairs += [("dw", dw, dw_ref), ("db", db, db_ref)]
            for name, mine, ref in pairs:
                assert mine.dtype == dtype, f"cuda_naive {name}: dtype {mine.dtype}"
                assert_close(f"cuda_naive {name} {(N, C, O, H, W, k, s, p)}", mine, ref, tol, tol)


def test_cuda_kernels_under_simulator():
    stdout = run_under_simulator(__file__)
    assert "conv ok" in stdout, stdout


if __name__ == "__main__":
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run through the test, with the simulator"
    check_conv()
    print("conv ok")
