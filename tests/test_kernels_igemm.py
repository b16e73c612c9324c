"""kernels/_conv2d_igemm.py without a GPU: its CUDA C source, compiled for the CPU by
tests/cuda_emu.py, launched by the very glue that launches it through cupy.RawModule on a GPU,
on NumPy float32 arrays, against the float64 NumPy reference; and the same source through the
real nvcc, to PTX for sm_80 (A100) and sm_90 (H100/H200).

Tolerance: every output value is a float32 sum of D products of O(1) values (D = Cin*k*k for y,
Cout*k*k for dx, N*Ho*Wo for dw and db), summed in another order than the float64 reference:
rtol 1e-5 and atol 2e-6 D (as tests/test_kernels_conv2d.py; a GPU's fused multiply-adds only
make it more accurate).

# N batch, C channels in, O channels out, H W input size, k kernel size, s stride, p padding
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kernels import _conv2d_igemm as G
from kernels.conv2d import (conv2d_backward_input, conv2d_backward_weight, conv2d_forward,
                            out_size)
from minisims.gradcheck import assert_close

cuda_emu = pytest.importorskip("cuda_emu")
pytestmark = pytest.mark.skipif(not cuda_emu.available(), reason="needs g++")

# (N, C, O, H, W, k, s, p). The block tile is 64 rows x 64 columns x 16 deep: these have
# remainders everywhere, and the larger ones several tiles along each axis.
CASES = [
    (2, 3, 5, 6, 7, 3, 1, 1),     # one tile, K = 27 (two depth steps, the second partial)
    (1, 5, 3, 7, 6, 3, 2, 1),     # batch 1, stride 2: dx's gather skips 3/4 of the taps
    (2, 3, 4, 5, 5, 1, 2, 0),     # 1x1 stride 2: dx is zero on the pixels never read
    (1, 2, 3, 4, 5, 3, 1, 0),     # no padding, non-square
    (2, 2, 3, 4, 5, 1, 1, 1),     # 1x1 with padding: the border outputs see only zeros
    (2, 9, 8, 9, 9, 3, 2, 0),     # stride 2 without padding, K = 81
    (3, 10, 70, 9, 7, 3, 1, 1),   # M = 189 (3 row tiles), Cout = 70 (2 column tiles), K = 90
    (2, 66, 5, 5, 4, 1, 1, 0),    # dx has 66 columns (2 tiles); dw's K = 66
    (4, 16, 24, 12, 12, 3, 1, 1), # UNet-like: K = 144, M = 576
]


@pytest.fixture(scope="module")
def mod():
    return cuda_emu.EmulatedModule(G.SOURCE)


def _data(rng, N, C, O, H, W, k, s, p):
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)  # N,C,H,W
    w = rng.standard_normal((O, C, k, k)).astype(np.float32)  # O,C,k,k
    b = rng.standard_normal(O).astype(np.float32)  # O
    dy = rng.standard_normal((N, O, out_size(H, k, s, p), out_size(W, k, s, p))).astype(np.float32)
    return x, w, b, dy


def _reference(x, w, b, dy, s, p):
    """The NumPy reference in float64, on the float32 inputs."""
    x, w, b, dy = (a.astype(np.float64) for a in (x, w, b, dy))
    y = conv2d_forward(x, w, b, s, p, impl="reference")
    y0 = conv2d_forward(x, w, None, s, p, impl="reference")
    dx = conv2d_backward_input(dy, w, x.shape, s, p, impl="reference")
    dw, db = conv2d_backward_weight(dy, x, w.shape, s, p, impl="reference")
    return y, y0, dx, dw, db


def _check(mod, case, rng, rows_per_split=None):
    N, C, O, H, W, k, s, p = case
    x, w, b, dy = _data(rng, *case)
    y, y0, dx, dw, db = _reference(x, w, b, dy, s, p)
    M = dy.shape[0] * dy.shape[2] * dy.shape[3]
    got_dw, got_db = G.backward_weight(mod, dy, x, w.shape, s, p, rows_per_split=rows_per_split)
    for name, mine, ref, depth in (
            ("y", G.forward(mod, x, w, b, s, p), y, C * k * k),
            ("y without bias", G.forward(mod, x, w, None, s, p), y0, C * k * k),
            ("dx", G.backward_input(mod, dy, w, x.shape, s, p), dx, O * k * k),
            ("dw", got_dw, dw, M),
            ("db", got_db, db, M)):
        assert mine.dtype == np.float32 and mine.shape == ref.shape, (name, mine.dtype, mine.shape)
        assert_close(f"igemm {name} {case}", mine, ref, rtol=1e-5, atol=2e-6 * depth)


@pytest.mark.parametrize("case", CASES)
def test_igemm_matches_reference(mod, rng, case):
    _check(mod, case, rng)


@pytest.mark.parametrize("rows_per_split", [16, 32, 48, 10_000])
def test_weight_gradient_split_k(mod, rng, rows_per_split):
    # M = 2*9*9 = 162 rows: 11, 6, 4 splits (the last one partial) and a single split
    _check(mod, (2, 4, 6, 9, 9, 3, 1, 1), rng, rows_per_split)


def test_weight_gradient_splits_are_deterministic(mod, rng):
    x, w, _, dy = _data(rng, 2, 4, 6, 9, 9, 3, 1, 1)
    a = G.backward_weight(mod, dy, x, w.shape, 1, 1, rows_per_split=32)
    b = G.backward_weight(mod, dy, x, w.shape, 1, 1, rows_per_split=32)
    assert all(u.tobytes() == v.tobytes() for u, v in zip(a, b))


def test_split_rows_cover_m_and_fill_the_gpu():
    # the benchmark's shape: N 64, C 64 -> 64, 32x32, 3x3: 9 output tiles, M = 65536
    rows = G.split_rows(65536, 64, 576)
    splits = -(-65536 // rows)
    assert rows % G.BK == 0 and rows >= G.SPLIT_MIN_STEPS * G.BK
    assert 9 * splits >= G.SPLIT_TARGET_BLOCKS * 0.9, (rows, splits)
    # a tiny problem gets one split
    assert G.split_rows(50, 4, 9) >= 50


@settings(max_examples=20, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 5), O=st.integers(1, 5), H=st.integers(1, 8),
       W=st.integers(1, 8), k=st.sampled_from([1, 3]), s=st.sampled_from([1, 2, 3]),
       p=st.sampled_from([0, 1, 2]), seed=st.integers(0, 2 ** 16))
def test_igemm_any_small_shape(mod, N, C, O, H, W, k, s, p, seed):
    if H + 2 * p < k or W + 2 * p < k:
        return
    _check(mod, (N, C, O, H, W, k, s, p), np.random.default_rng(seed), rows_per_split=16)


def test_float64_is_refused_with_a_pointer_to_cupy(mod, rng):
    x, w, b, dy = _data(rng, 1, 2, 3, 4, 4, 3, 1, 1)
    with pytest.raises(TypeError, match="float32 only"):
        G.forward(mod, x.astype(np.float64), w, b, 1, 1)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_compiles_the_source(arch):
    try:
        ptx = cuda_emu.nvcc_ptx(G.SOURCE, arch=arch)
    except RuntimeError as e:  # pragma: no cover - a real failure shows nvcc's message
        pytest.fail(str(e))
    if ptx is None:
        pytest.skip("nvcc not installed")
    for name in ("conv_igemm", "conv_igemm_dw", "sum_splits"):
        assert f".entry {name}(" in ptx, name
