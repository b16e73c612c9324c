"""kernels/_conv2d_igemm.py without a GPU: its CUDA C source, compiled for the CPU by
tests/cuda_emu.py, launched by the very glue that launches it through cupy.RawModule on a GPU,
on NumPy float32 arrays, against the float64 NumPy reference; and the same source through the
real nvcc, to PTX for sm_80 (A100) and sm_90 (H100/H200), and through ptxas for the register
count (no spills). Every tile of G.TILES runs every case, forced with ``tile=``.

Tolerance: every output value is a float32 sum of D products of O(1) values (D = Cin*k*k for y,
Cout*k*k for dx, N*Ho*Wo for dw and db), summed in another order than the float64 reference:
rtol 1e-5 and atol 2e-6 D (as tests/test_kernels_conv2d.py; a GPU's fused multiply-adds only
make it more accurate).

# N batch, C channels in, O channels out, H W input size, k kernel size, s stride, p padding
"""
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minisims.kernels import _conv2d_igemm as G
from minisims.kernels._conv2d_common import parity_classes
from minisims.kernels.conv2d import (conv2d_backward_input, conv2d_backward_weight, conv2d_forward,
                            out_size)
from minisims.gradcheck import assert_close

cuda_emu = pytest.importorskip("cuda_emu")
pytestmark = pytest.mark.skipif(not cuda_emu.available(), reason="needs g++")

# (N, C, O, H, W, k, s, p). The block tiles are 64 x 64, 128 x 128 and 128 x 64, 16 deep: these
# have remainders everywhere, and the larger ones several tiles along each axis.
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
    (2, 15, 130, 11, 13, 3, 1, 1),# M = 286, Cout = 130, K = 135: remainders of every tile; dw's
                                  # K spans 2 (3) row tiles, its Cout 2 (3) column tiles
    (1, 20, 7, 14, 10, 3, 2, 1),  # M = 35, dx's M = 140 with 20 columns, stride 2: odd planes
]
TILE_NAMES = list(G.TILES)


@pytest.fixture(scope="module")
def mods():
    return {name: cuda_emu.EmulatedModule(G.source(name)) for name in G.TILES}


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


def _check(mods, case, rng, tile, rows_per_split=None):
    N, C, O, H, W, k, s, p = case
    x, w, b, dy = _data(rng, *case)
    y, y0, dx, dw, db = _reference(x, w, b, dy, s, p)
    M = dy.shape[0] * dy.shape[2] * dy.shape[3]
    got_dw, got_db = G.backward_weight(mods, dy, x, w.shape, s, p, rows_per_split, tile)
    for name, mine, ref, depth in (
            ("y", G.forward(mods, x, w, b, s, p, tile), y, C * k * k),
            ("y without bias", G.forward(mods, x, w, None, s, p, tile), y0, C * k * k),
            ("dx", G.backward_input(mods, dy, w, x.shape, s, p, tile), dx, O * k * k),
            ("dw", got_dw, dw, M),
            ("db", got_db, db, M)):
        assert mine.dtype == np.float32 and mine.shape == ref.shape, (name, mine.dtype, mine.shape)
        assert_close(f"igemm {tile} {name} {case}", mine, ref, rtol=1e-5, atol=2e-6 * depth)


@pytest.mark.parametrize("tile", TILE_NAMES)
@pytest.mark.parametrize("case", CASES)
def test_igemm_matches_reference(mods, rng, case, tile):
    _check(mods, case, rng, tile)


@pytest.mark.parametrize("tile", TILE_NAMES)
@pytest.mark.parametrize("rows_per_split", [16, 32, 48, 10_000])
def test_weight_gradient_split_k(mods, rng, rows_per_split, tile):
    # M = 2*9*9 = 162 rows: 11, 6, 4 splits (the last one partial) and a single split
    _check(mods, (2, 4, 6, 9, 9, 3, 1, 1), rng, tile, rows_per_split)


@pytest.mark.parametrize("tile", TILE_NAMES)
@pytest.mark.parametrize("case", [CASES[-2], CASES[-1]])  # remainders of every tile; stride 2
def test_igemm_is_race_free(mods, rng, case, tile):
    """Every phase gives the same bits when the emulator runs threads and blocks in reverse
    order (tests/cuda_emu.py: a missing barrier or blocks sharing data would show)."""
    N, C, O, H, W, k, s, p = case
    x, w, b, dy = _data(rng, *case)
    cuda_emu.assert_race_free(mods.values(), lambda: (
        G.forward(mods, x, w, b, s, p, tile), G.backward_input(mods, dy, w, x.shape, s, p, tile),
        # an even and an odd number of row tiles per split: the last tile in either shared buffer
        *G.backward_weight(mods, dy, x, w.shape, s, p, rows_per_split=32, tile=tile),
        *G.backward_weight(mods, dy, x, w.shape, s, p, rows_per_split=48, tile=tile)))


@pytest.mark.parametrize("tile", TILE_NAMES)
def test_weight_gradient_splits_are_deterministic(mods, rng, tile):
    x, w, _, dy = _data(rng, 2, 4, 6, 9, 9, 3, 1, 1)
    a = G.backward_weight(mods, dy, x, w.shape, 1, 1, rows_per_split=32, tile=tile)
    b = G.backward_weight(mods, dy, x, w.shape, 1, 1, rows_per_split=32, tile=tile)
    assert all(u.tobytes() == v.tobytes() for u, v in zip(a, b))


def test_tile_choice_rule(monkeypatch):
    # the UNet at batch 128 (M = 128*H*W): 64 channels at 32x32 -> 128 x 64 (1024 blocks);
    # 128 channels at 16x16 -> 128 x 128 (256 blocks); 128 channels at 8x8 -> 64 x 64 (the big
    # tile's 64 blocks would leave half the SMs idle); a 3-channel layer at 8x8 -> 64 x 64
    assert G.choose_tile(128 * 32 * 32, 64) == "128x64"
    assert G.choose_tile(128 * 16 * 16, 128) == "128"
    assert G.choose_tile(128 * 8 * 8, 128) == "64"
    assert G.choose_tile(128 * 8 * 8, 3) == "64"
    assert G.choose_tile_dw(576, 64) == "128x64" and G.choose_tile_dw(1152, 128) == "128"
    assert G.choose_tile_dw(27, 64) == "64"
    for name in G.TILES:  # the module constant forces one tile everywhere
        monkeypatch.setattr(G, "TILE", name)
        assert G.choose_tile(10 ** 6, 128) == G.choose_tile_dw(2304, 128) == name


def test_forced_tile_is_the_one_launched(monkeypatch, rng):
    launched = []

    class Spy(dict):  # records which tile's module is asked for; its kernels do nothing
        def __missing__(self, name):
            launched.append(name)
            self[name] = type("Module", (), {"get_function": lambda _, n: lambda *a: None})()
            return self[name]
    x, w, b, dy = _data(rng, 2, 3, 4, 5, 5, 3, 1, 1)
    for name in G.TILES:
        monkeypatch.setattr(G, "TILE", name)
        G.forward(Spy(), x, w, b, 1, 1)
        G.backward_input(Spy(), dy, w, x.shape, 1, 1)
        G.backward_weight(Spy(), dy, x, w.shape, 1, 1)
        assert launched == [name] * 3, launched
        launched.clear()


@pytest.mark.parametrize("tile", TILE_NAMES)
def test_split_rows_cover_m_and_fill_the_gpu(tile):
    # the benchmark's shape: N 64, C 64 -> 64, 32x32, 3x3: M = 65536, K = 576
    t = G.TILES[tile]
    tiles = -(-576 // t.bm) * -(-64 // t.bn)
    rows = G.split_rows(65536, 64, 576, tile)
    splits = -(-65536 // rows)
    assert rows % t.bk == 0 and rows >= G.SPLIT_MIN_STEPS * t.bk
    assert tiles * splits >= t.split_blocks * 0.9, (rows, splits)
    # a tiny problem gets one split
    assert G.split_rows(50, 4, 9, tile) >= 50


@settings(max_examples=20, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 5), O=st.integers(1, 5), H=st.integers(1, 8),
       W=st.integers(1, 8), k=st.sampled_from([1, 3]), s=st.sampled_from([1, 2, 3]),
       p=st.sampled_from([0, 1, 2]), seed=st.integers(0, 2 ** 16))
def test_igemm_any_small_shape(mods, N, C, O, H, W, k, s, p, seed):
    if H + 2 * p < k or W + 2 * p < k:
        return
    tile = TILE_NAMES[seed % len(TILE_NAMES)]
    _check(mods, (N, C, O, H, W, k, s, p), np.random.default_rng(seed), tile, rows_per_split=16)


@pytest.mark.parametrize("tile", TILE_NAMES)
@pytest.mark.parametrize("case", [c for c in CASES if c[6] > 1] + [(2, 4, 5, 10, 11, 5, 3, 2)])
def test_dx_by_parity_classes_equals_the_gather_over_every_tap(mods, rng, case, tile):
    """At stride > 1 the input gradient runs as s*s stride-1 gathers with sub-kernels; the
    gather over every tap (dividing by s) stays beside it: both against the reference."""
    N, C, O, H, W, k, s, p = case
    _, w, _, dy = _data(rng, *case)
    dx = conv2d_backward_input(dy.astype(np.float64), w.astype(np.float64), (N, C, H, W), s, p,
                               impl="reference")
    for split in (True, False):
        got = G.backward_input(mods, dy, w, (N, C, H, W), s, p, tile, parity_split=split)
        assert_close(f"igemm {tile} dx split={split} {case}", got, dx, rtol=1e-5,
                     atol=2e-6 * O * k * k)


def test_dx_by_parity_classes_multiplies_no_zero_tap(rng):
    """The split's launches do 1/s^2 of the gather's multiply-adds (rows M times depth K):
    3x3, stride 2, 32x32 (the UNet's downsampling): 4 launches, a quarter of the work."""
    launches = []

    class Spy(dict):  # records each conv_igemm launch's M and K; its kernels do nothing
        def __missing__(self, name):
            def conv_igemm(grid, block, args):
                N, Cs, Ho, Wo, Cd, Hd, Wd, kh, kw = (int(a) for a in args[4:13])
                launches.append((N * Hd * Wd, Cs * kh * kw))
            self[name] = type("Module", (), {"get_function": lambda _, n: conv_igemm})()
            return self[name]
    x, w, _, dy = _data(rng, 2, 8, 16, 32, 32, 3, 2, 1)
    G.backward_input(Spy(), dy, w, x.shape, 2, 1, parity_split=False)
    (gather,) = launches
    launches.clear()
    G.backward_input(Spy(), dy, w, x.shape, 2, 1, parity_split=True)
    assert len(launches) == 4
    assert sum(m * k for m, k in launches) * 4 == gather[0] * gather[1]


def test_float64_is_refused_with_a_pointer_to_cupy(mods, rng):
    x, w, b, dy = _data(rng, 1, 2, 3, 4, 4, 3, 1, 1)
    with pytest.raises(TypeError, match="float32 only"):
        G.forward(mods, x.astype(np.float64), w, b, 1, 1)


@pytest.mark.parametrize("tile", TILE_NAMES)
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_compiles_the_source(arch, tile):
    try:
        ptx = cuda_emu.nvcc_ptx(G.source(tile), arch=arch)
    except RuntimeError as e:  # pragma: no cover - a real failure shows nvcc's message
        pytest.fail(str(e))
    if ptx is None:
        pytest.skip("nvcc not installed")
    for name in ("conv_igemm", "conv_igemm_dw", "sum_splits"):
        assert f".entry {name}(" in ptx, name


def ptxas_report(code, arch):
    """{kernel: (registers, spill store bytes)} from ``nvcc -cubin -Xptxas -v``; None without nvcc."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.cu"
        src.write_text(code)
        done = subprocess.run([nvcc, "-cubin", f"-arch={arch}", "-Xptxas", "-v", str(src), "-o",
                               str(Path(d) / "k.cubin")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    found = re.findall(r"entry function '(\w+)'.*?(\d+) bytes spill stores.*?Used (\d+) registers",
                       done.stderr, re.S)
    return {name: (int(regs), int(spill)) for name, spill, regs in found}


@pytest.mark.parametrize("tile", TILE_NAMES)
def test_ptxas_no_spills_within_the_launch_bounds(tile):
    # sm_90 only (sm_80's counts differ by a few): the __launch_bounds__ blocks per SM cap the
    # registers at 65536 / (threads * blocks); ptxas must fit them without spilling
    report = ptxas_report(G.source(tile), "sm_90")
    if report is None:
        pytest.skip("nvcc not installed")
    t = G.TILES[tile]
    print(tile, report)
    for name, blocks in (("conv_igemm", t.sm_blocks), ("conv_igemm_dw", t.sm_blocks_dw)):
        regs, spill = report[name]
        assert spill == 0, (tile, name, report)
        assert regs * t.threads * blocks <= 65536, (tile, name, report)


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 6), n=st.integers(1, 12), s=st.integers(1, 4), p=st.integers(0, 3))
def test_parity_classes_cover_every_product_once(k, n, s, p):
    """Along one axis, the forward pairs input a, tap i and output h when s*h - p + i = a. The
    classes must list every such (a, i, h) exactly once, as a = s*alpha + r, i = i0 + s*t,
    h = alpha + q - t, and no other."""
    n_out = out_size(n, k, s, p)
    if n + 2 * p < k:
        return
    want = sorted((s * h - p + i, i, h) for h in range(n_out) for i in range(k)
                  if 0 <= s * h - p + i < n)
    got = sorted((s * alpha + r, i0 + s * t, alpha + q - t)
                 for r, i0, taps, q, n_sub in parity_classes(k, n, n_out, s, p)
                 for alpha in range(n_sub) for t in range(taps) if 0 <= alpha + q - t < n_out)
    assert got == want
    assert sorted(s * alpha + r for r, _, _, _, n_sub in parity_classes(k, n, n_out, s, p)
                  for alpha in range(n_sub)) == list(range(n))  # the classes partition the inputs
