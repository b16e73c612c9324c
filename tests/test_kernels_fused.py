"""The fused elementwise kernels: GroupNorm + SiLU (kernels/groupnorm_silu.py) and Adam + EMA
(kernels/adam_ema.py), against minisims.ops' own code, which they stand in for.

# N batch, C channels, G groups, H W spatial

Each GroupNorm+SiLU check runs twice: with the SiLU, and without it (silu=False: the GroupNorm
alone, as attention uses it).
- The GroupNorm+SiLU reference's backward against centred finite differences, float64.
- The reference against minisims.ops' GroupNorm then SiLU (GroupNorm alone without the SiLU),
  float32: bit for bit, forward and backward, so a model trains the same fused or not on the CPU.
- The CUDA C kernels, run by the CPU emulator (tests/cuda_emu.py) on NumPy arrays, against the
  float64 reference: groups of one and of several channels, H*W below, between and above whole
  warps and the 256-thread block, N = 1. float32 tolerances: sums of M <= 600 values of size ~1
  in another order (each rounding ~6e-8 relative), and the GPU's expf; measured differences are
  below 2e-6, asserted at rtol 1e-4 / atol 2e-5 (per-channel sums over N*H*W: atol 1e-4).
- Both CUDA sources compile with the real nvcc for sm_80 and sm_90 (skipped without nvcc).
- Adam + EMA: the emulated kernel and the numba loop bit for bit the reference over several
  steps, and the fused training step bit for bit ops' own Adam then EMA on a tiny UNet
  (frozen encoder included: its parameters get the EMA update only).
- A tiny UNet's training steps fused (GroupNorm+SiLU and attention's GroupNorm through the
  reference, Adam+EMA numba) bit for bit unfused; and with the CUDA kernels emulated, within
  float32 tolerances. Attention's norm takes the fused path too; its parameter names stay.

- The numba loops (the CPU's float32 default) against the float64 reference with the CUDA
  kernels' tolerances, the same bits on 1, 2 or 3 threads, their sigmoid's accuracy, and a tiny
  UNet trained with them against the layers.

CPU timings that decided the defaults at first (one thread, this project's 2-core machine shared
with other jobs, load average 3.8-4.3, so only the large gaps count; /tmp scripts, not kept):
GroupNorm+SiLU forward + backward on (8,64,32,32), 16 groups: the two layers 8.9 + 7.9 ms, the
fused reference 14.7 + 21.6 ms (it recomputes xhat, z and exp in backward), a numba loop 5.6 ms
for the forward alone (~3x that for both ways: no clear gain, 2x slower at (8,128,16,16)), so on
the CPU the layers stayed and no numba version was kept. Issue 9 kept one: on two threads, with
its sums vectorised (fastmath reassoc) and an exp of its own that vectorises, forward + backward
against the two layers, batch 8 with the embedding's bias, 11 interleaved calls, load 0.4-1.4
(a /tmp script): (8,64,32,32) 5.5 vs 2.8 ms, (8,128,16,16) 2.5 vs 1.7, (8,192,16,16) 3.8 vs
3.0, (8,256,8,8) 1.7 vs 1.6, (8,128,8,8) 0.75 vs 0.91 (the one loss). With libm's exp (not
vectorised) it had tied the layers; with float64 sums that did not vectorise, 1.0-1.5x. In the
UNet step (benchmarks/bench_unet.py --profile) GroupNorm 120 + SiLU 85 ms became 103 ms of
GroupNorm+SiLU; bench_unet.py, 3 A/B pairs: 1097-1303 ms against 1332-1405, faster in every one.
Adam + EMA over the 6.46M-parameter UNet:
unfused 44-98 ms, the numba loops 38-93 ms in alternating runs under that load (one 6.4M array:
NumPy 141 ms, the loop 71 ms): too noisy to call, so the CPU kept the unfused optimiser by
default; the fused one is bit for bit the same either way. Issue 9 shares the loops' pieces
between two threads: the fused step is now the default on NumPy from a million parameters
(minisims.ops.FUSE_ADAM_FROM; its numbers are in docs/notes/core.md).
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from minisims import ops
from minisims.diffusion import EDM, EDMPrecond
from minisims.gradcheck import assert_close, check_gradients
from minisims.kernels import _adam_ema_cupy, _groupnorm_silu_cupy, adam_ema as adam_ema_kernels, groupnorm_silu as gn_kernels
from minisims.kernels.adam_ema import adam_ema_update, float32_scalars
from minisims.kernels.groupnorm_silu import groupnorm_silu_backward_reference, groupnorm_silu_forward_reference
from minisims.nn.attention import SelfAttention2d
from minisims.nn.norm import GroupNorm
from minisims.nn.unet import UNet, UNetConfig
from minisims.train import Adam, EMA

sys.path.insert(0, str(Path(__file__).parent))
import cuda_emu  # noqa: E402

needs_gpp = pytest.mark.skipif(not cuda_emu.available(), reason="needs g++")
F64 = np.float64


def layer(C, G, rng, dtype, silu=True):
    """A GroupNorm (with its SiLU) with random gamma, beta (never 1 and 0: they would hide wrong
    terms)."""
    gn = GroupNorm(C, G, silu=silu, dtype=dtype)
    gn.params["gamma"][...] = rng.standard_normal(C) * 0.5 + 1.0
    gn.params["beta"][...] = rng.standard_normal(C) * 0.5
    return gn


@pytest.fixture
def group_norm_path(monkeypatch):
    """group_norm_path(fused, kernel): minisims.ops' GroupNorm through kernels/groupnorm_silu.py's
    version ``kernel`` (fused) or through ops' own array code (not fused)."""
    def choose(fused, kernel="auto"):
        monkeypatch.setattr(ops, "FUSE_GROUP_NORM", fused)
        monkeypatch.setattr(ops, "GROUP_NORM_KERNEL", kernel)
    return choose


# ------------------------------------------------------------------------------------------------
# GroupNorm + SiLU: the reference
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("C,G,bias", [(4, 4, True), (4, 2, True), (6, 1, True), (4, 2, False)])
@pytest.mark.parametrize("silu", [True, False])
@pytest.mark.parametrize("fused", [True, False], ids=["kernel-reference", "ops"])
def test_reference_backward_matches_finite_differences(rng, group_norm_path, C, G, bias, silu, fused):
    group_norm_path(fused, "reference")
    gn = layer(C, G, rng, F64, silu)
    x = rng.standard_normal((2, C, 3, 5)) * 2 + 1  # N,C,H,W, far from normalised
    b = rng.standard_normal((2, C)) if bias else None  # N,C
    # rtol 1e-6 / atol 1e-8: centred differences at eps 1e-6 are exact to ~1e-10 (test_nn_image)
    check_gradients(gn, [x, b] if bias else [x], rng, wrt_inputs=(0, 1) if bias else (0,),
                    rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape,G", [((2, 4, 3, 5), 2), ((1, 6, 7, 9), 1), ((3, 8, 4, 4), 8)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("silu", [True, False])
def test_fused_reference_is_the_layers_arithmetic_bit_for_bit(rng, group_norm_path, shape, G, bias, silu):
    """float32: the kernels' reference and minisims.ops' own code give y, dx, dgamma, dbeta and
    dbias equal to the bit; the GroupNorm alone without the SiLU likewise."""
    N, C = shape[:2]
    gn = layer(C, G, rng, np.float32, silu)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    b = rng.standard_normal((N, C)).astype(np.float32) if bias else None
    dy = rng.standard_normal(shape).astype(np.float32)
    out = {}
    for fused in (False, True):
        group_norm_path(fused, "reference")
        gn.zero_grad()
        y = gn.forward(x, b)
        grads = gn.backward(dy)
        out[fused] = [y, grads[0], gn.grads["gamma"].copy(), gn.grads["beta"].copy(), *grads[1:]]
    for name, a, r in zip(["y", "dx", "dgamma", "dbeta", "dbias"], out[True], out[False]):
        assert a.dtype == np.float32 and a.tobytes() == r.tobytes(), name


@pytest.mark.parametrize("silu", [True, False])
def test_fused_forward_keeps_only_statistics(rng, silu):
    gn = layer(4, 2, rng, np.float32, silu)
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    gn.forward(x)
    kind, x_kept, bias, mean, rstd, _ = gn.cache
    assert kind == "fused" and x_kept is x and bias is None
    assert mean.shape == rstd.shape == (2, 2)  # nothing of size x beyond the input itself


def test_auto_fuses_float32_arrays_only(rng):
    for dtype, fused, impl in ((np.float32, "fused", "numba"), (F64, "ref", "reference")):
        gn = layer(4, 2, rng, dtype)
        gn.forward(rng.standard_normal((1, 4, 2, 2)).astype(dtype))
        assert ops.FUSE_GROUP_NORM is None and gn.cache[0] == fused  # float64: ops' own code
        assert gn_kernels._resolve("auto", np.zeros((1, 4, 2, 2), dtype)) == impl
    with pytest.raises(ValueError, match="float32 NumPy"):
        gn_kernels.groupnorm_silu_forward(np.zeros((1, 4, 2, 2)), np.ones(4), np.zeros(4), 2,
                                          impl="numba")


def test_attention_norm_is_fused_with_its_names_unchanged(rng, group_norm_path):
    """SelfAttention2d's GroupNorm (no SiLU) takes the fused path in float32 like the ResBlocks';
    with the kernels' reference it is bit for bit ops' own code, and the parameter names
    (checkpoints) are the layer's own."""
    attn = SelfAttention2d(4, 2, rng)
    assert [n for n, _, _ in attn.named_parameters()] == \
        ["norm.gamma", "norm.beta", "qkv.W", "qkv.b", "proj.W", "proj.b"]
    assert attn.norm.silu is False
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    attn.forward(x)
    assert attn.norm.cache[0] == "fused"  # the default in float32
    group_norm_path(False)
    y = attn.forward(x)
    assert attn.norm.cache[0] == "ref"
    group_norm_path(True, "reference")
    y_fused = attn.forward(x)
    assert attn.norm.cache[0] == "fused"
    assert y_fused.tobytes() == y.tobytes()  # the reference is ops' own arithmetic


# ------------------------------------------------------------------------------------------------
# GroupNorm + SiLU: the numba loops (the CPU's float32 default)
# ------------------------------------------------------------------------------------------------

NUMBA_CASES = [  # N, C, G, H, W
    (1, 4, 4, 3, 5),    # groups of one channel, N = 1
    (2, 6, 2, 7, 9),    # 3 channels per group
    (3, 8, 1, 1, 1),    # one value per channel, one group
    (5, 12, 3, 6, 11),  # more images than threads, odd sizes
]


def gn_data(rng, N, C, H, W, bias):
    x = (rng.standard_normal((N, C, H, W)) * 2 + 1).astype(np.float32)
    gamma = (rng.standard_normal(C) * 0.5 + 1).astype(np.float32)
    beta = (rng.standard_normal(C) * 0.5).astype(np.float32)
    b = rng.standard_normal((N, C)).astype(np.float32) if bias else None
    dy = rng.standard_normal((N, C, H, W)).astype(np.float32)
    return x, gamma, beta, b, dy


@pytest.mark.parametrize("case", NUMBA_CASES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("silu", [True, False])
def test_numba_groupnorm_silu_matches_reference(rng, case, bias, silu):
    N, C, G, H, W = case
    x, gamma, beta, b, dy = gn_data(rng, N, C, H, W, bias)
    f64 = [None if a is None else a.astype(F64) for a in (x, gamma, beta, b, dy)]
    y_r, mean_r, rstd_r = groupnorm_silu_forward_reference(*f64[:3], G, 1e-5, f64[3], silu)
    grads_r = groupnorm_silu_backward_reference(f64[4], *f64[:3], mean_r, rstd_r, f64[3], silu)
    y, mean, rstd = gn_kernels.groupnorm_silu_forward(x, gamma, beta, G, 1e-5, b, "numba", silu)
    grads = gn_kernels.groupnorm_silu_backward(dy, x, gamma, beta, mean, rstd, b, "numba", silu)
    # the CUDA kernels' tolerances (float32 values, sums in another order); measured below 5e-7
    for name, mine, ref in (("y", y, y_r), ("mean", mean, mean_r), ("rstd", rstd, rstd_r),
                            ("dx", grads[0], grads_r[0])):
        assert mine.dtype == np.float32, name
        assert_close(name, mine, ref, rtol=1e-4, atol=2e-5)
    for name, mine, ref in zip(["dgamma", "dbeta", "dbias"], grads[1:], grads_r[1:]):
        if ref is None:
            assert mine is None, name
        else:
            assert_close(name, mine, ref, rtol=1e-4, atol=1e-4)


def test_numba_groupnorm_silu_does_not_depend_on_the_thread_count(rng, monkeypatch):
    from minisims.kernels import _threads
    x, gamma, beta, b, dy = gn_data(rng, 5, 12, 6, 11, True)
    out = {}
    for threads in (1, 2, 3):
        monkeypatch.setattr(_threads, "THREADS", threads)
        y, mean, rstd = gn_kernels.groupnorm_silu_forward(x, gamma, beta, 3, 1e-5, b, "numba")
        out[threads] = (y, mean, rstd,
                        *gn_kernels.groupnorm_silu_backward(dy, x, gamma, beta, mean, rstd, b, "numba"))
    for threads in (2, 3):
        assert all(np.array_equal(a, a1) for a, a1 in zip(out[threads], out[1])), threads


def test_numba_sigmoid_is_as_accurate_as_numpys():
    """Its own exp (Cody-Waite reduction, a Taylor polynomial, 2^j through the exponent bits)
    against float64: relative error 1.5e-7 measured where NumPy's float32 1/(1+exp(-z)) has
    2.2e-7 (asserted: 3e-7); the clamp at |z| = 87 keeps s in the normal float32 range."""
    from minisims.kernels._groupnorm_silu_numba import _sigmoid
    z = np.concatenate([np.linspace(-87, 87, 200_001), [-1e4, -88.7, 87.5, 1e4]]).astype(np.float32)
    s, e, k = np.empty_like(z), np.empty_like(z), np.empty(z.size, np.int32)
    _sigmoid(z, s, e, k)
    with np.errstate(over="ignore"):  # exp(1e4): inf, so ref 0 there
        ref = 1 / (1 + np.exp(-z.astype(F64)))
    inside = np.abs(z) <= 87
    assert np.max(np.abs(s - ref)[inside] / ref[inside]) < 3e-7
    assert np.all(s[z > 87] == 1) and np.all((s[z < -87] > 0) & (s[z < -87] < 2e-38))


# ------------------------------------------------------------------------------------------------
# GroupNorm + SiLU: the CUDA C kernels, emulated on the CPU
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gn_module():
    if not cuda_emu.available():
        pytest.skip("needs g++")
    return cuda_emu.EmulatedModule(_groupnorm_silu_cupy.SOURCE)


GN_CASES = [  # N, C, G, H, W
    (1, 4, 4, 3, 5),    # groups of one channel, H*W 15 (one partial warp), N = 1
    (2, 6, 2, 7, 9),    # 3 channels per group, H*W 63 (two warps, the second partial)
    (2, 8, 1, 4, 8),    # one group of all channels, H*W 32 (exactly one warp)
    (1, 4, 2, 20, 15),  # H*W 300 > 256 threads: each thread takes two values per channel
]


@needs_gpp
@pytest.mark.parametrize("case", GN_CASES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("silu", [True, False])
def test_cuda_groupnorm_silu_matches_reference(gn_module, rng, case, bias, silu):
    N, C, G, H, W = case
    x = (rng.standard_normal((N, C, H, W)) * 2 + 1).astype(np.float32)
    gamma = (rng.standard_normal(C) * 0.5 + 1).astype(np.float32)
    beta = (rng.standard_normal(C) * 0.5).astype(np.float32)
    b = rng.standard_normal((N, C)).astype(np.float32) if bias else None
    dy = rng.standard_normal((N, C, H, W)).astype(np.float32)
    f64 = [None if a is None else a.astype(F64) for a in (x, gamma, beta, b, dy)]
    y_r, mean_r, rstd_r = groupnorm_silu_forward_reference(*f64[:3], G, 1e-5, f64[3], silu)
    grads_r = groupnorm_silu_backward_reference(f64[4], *f64[:3], mean_r, rstd_r, f64[3], silu)
    y, mean, rstd = _groupnorm_silu_cupy.forward(gn_module, x, gamma, beta, G, 1e-5, b, silu)
    grads = _groupnorm_silu_cupy.backward(gn_module, dy, x, gamma, beta, mean, rstd, b, silu)
    # float32 sums in another order (module docstring): rtol 1e-4, atol 2e-5 per value
    assert_close("y", y, y_r, rtol=1e-4, atol=2e-5)
    assert_close("mean", mean, mean_r, rtol=1e-4, atol=2e-5)
    assert_close("rstd", rstd, rstd_r, rtol=1e-4, atol=2e-5)
    assert_close("dx", grads[0], grads_r[0], rtol=1e-4, atol=2e-5)
    for name, mine, ref in zip(["dgamma", "dbeta", "dbias"], grads[1:], grads_r[1:]):
        if ref is None:
            assert mine is None, name
        else:  # sums over N*H*W (dgamma, dbeta) or H*W (dbias) values: atol 1e-4
            assert_close(name, mine, ref, rtol=1e-4, atol=1e-4)


@needs_gpp
@pytest.mark.parametrize("case", [GN_CASES[1], GN_CASES[3]])
def test_cuda_groupnorm_silu_is_race_free(gn_module, rng, case):
    """The same bits with threads and blocks run in reverse (tests/cuda_emu.py's race check)."""
    N, C, G, H, W = case
    x, dy = (rng.standard_normal((2, N, C, H, W)) * 2).astype(np.float32)
    gamma, beta = (rng.standard_normal((2, C)) * 0.5 + 1).astype(np.float32)
    b = rng.standard_normal((N, C)).astype(np.float32)

    def run():
        y, mean, rstd = _groupnorm_silu_cupy.forward(gn_module, x, gamma, beta, G, 1e-5, b, True)
        return (y, mean, rstd,
                *_groupnorm_silu_cupy.backward(gn_module, dy, x, gamma, beta, mean, rstd, b, True))
    cuda_emu.assert_race_free(gn_module, run)


@needs_gpp
def test_cuda_groupnorm_silu_refuses_float64(gn_module):
    x = np.zeros((1, 4, 2, 2))
    with pytest.raises(TypeError, match="float32"):
        _groupnorm_silu_cupy.forward(gn_module, x, np.ones(4), np.zeros(4), 2, 1e-5)


@pytest.mark.parametrize("source,options,entries", [
    (_groupnorm_silu_cupy.SOURCE, (), ("groupnorm_silu_forward", "groupnorm_silu_backward")),
    (_adam_ema_cupy.SOURCE, _adam_ema_cupy.OPTIONS, ("adam_ema",))], ids=["groupnorm_silu", "adam_ema"])
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_compiles_the_sources(source, options, entries, arch):
    ptx = cuda_emu.nvcc_ptx(source, arch, options)
    if ptx is None:
        pytest.skip("nvcc not installed")
    for name in entries:
        assert f".entry {name}" in ptx


# ------------------------------------------------------------------------------------------------
# Adam + EMA
# ------------------------------------------------------------------------------------------------

def optimiser_entries(seed):
    """Entries (p, g, m, v, e) of several sizes: Adam + EMA, EMA only (a frozen parameter),
    Adam only (no shadow); one array bigger than a block's chunk of 4096 values."""
    r = np.random.default_rng(seed)
    out = []
    for i, shape in enumerate([(3,), (5000,), (2, 3, 4), (1,), (7, 5)]):
        p, g = (r.standard_normal(shape).astype(np.float32) for _ in range(2))
        m = r.standard_normal(shape).astype(np.float32) * 0.1
        v = r.random(shape).astype(np.float32) * 0.01
        e = (p + 0.01 * r.standard_normal(shape)).astype(np.float32)
        if i == 2:
            g = m = v = None  # EMA only
        if i == 3:
            e = None  # Adam only
        out.append((p, g, m, v, e))
    return out


def run_optimiser(impl, steps=3, module=None):
    entries = optimiser_entries(0)
    for t in range(1, steps + 1):
        for _, g, _, _, _ in entries:
            if g is not None:
                g[...] = np.random.default_rng(t).standard_normal(g.shape)
        if impl == "emulated":
            table = _adam_ema_cupy.Table(entries, chunk=1024)  # 1024: several blocks per array
            _adam_ema_cupy.adam_ema(module, table, float32_scalars(1e-2, (0.9, 0.999), 1e-8, t, 0.9))
        else:
            adam_ema_update(entries, 1e-2, (0.9, 0.999), 1e-8, t, 0.9, impl=impl)
    return [a for e in entries for a in e if a is not None]


@pytest.mark.parametrize("impl", ["numba", "emulated"])
def test_adam_ema_versions_are_the_reference_bit_for_bit(impl):
    if impl == "emulated" and not cuda_emu.available():
        pytest.skip("needs g++")
    module = cuda_emu.EmulatedModule(_adam_ema_cupy.SOURCE) if impl == "emulated" else None
    ref = run_optimiser("reference")
    mine = run_optimiser(impl, module=module)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(mine, ref))
    if module is not None:  # the same bits with threads and blocks run in reverse
        cuda_emu.assert_race_free(module, lambda: tuple(run_optimiser(impl, module=module)))
    assert not all(a.tobytes() == b.tobytes() for a, b in zip(ref, run_optimiser("reference", 2)))


def test_numba_adam_divides_by_zero_as_the_reference_does():
    """b1 = 1 makes c1 = 1 - b1^t zero, and eps = 0 with v = 0 makes 0 / 0: the reference's
    arrays give inf and nan, and so does the numba loop (compiled with error_model="numpy",
    which lets LLVM vectorise its divisions; numba's default raised ZeroDivisionError)."""
    def step(impl):
        r = np.random.default_rng(1)
        p, g, m, e = (r.standard_normal(64).astype(np.float32) for _ in range(4))
        m[:4] = 0.0  # 0 / c1 = 0 / 0
        v = r.random(64).astype(np.float32)
        v[4:8] = 0.0
        g[4:8] = 0.0  # v stays 0: sqrt(0) + eps = 0, a division by zero for eps = 0
        entries = [(p, g, m, v, e)]
        with np.errstate(all="ignore"):
            adam_ema_update(entries, 1e-3, (1.0, 0.999), 0.0, 1, 0.9, impl=impl)
        return entries[0]
    ref, mine = step("reference"), step("numba")
    assert np.isnan(ref[0]).any() and np.isinf(ref[0]).any()  # the case does divide by zero
    assert all(a.tobytes() == b.tobytes() for a, b in zip(mine, ref))


@pytest.mark.parametrize("threads", [1, 3])
def test_numba_adam_ema_shares_pieces_between_threads(monkeypatch, threads):
    """Arrays cut into pieces (PIECE 1000 here: the 5000-value array in five) and shared by 1 or
    3 threads: still the reference bit for bit."""
    from minisims.kernels import _threads
    monkeypatch.setattr(_threads, "THREADS", threads)
    monkeypatch.setattr(adam_ema_kernels, "PIECE", 1000)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(run_optimiser("numba"), run_optimiser("reference")))


def _entries(net):
    return [(m.params[k], m.grads[k], None, None, None) for _, m, k in net.named_parameters()]


def test_the_fused_step_is_the_default_for_large_float32_models(monkeypatch):
    net = UNet(UNetConfig(**TINY), np.random.default_rng(0))
    n = sum(m.params[k].size for _, m, k in net.named_parameters())
    assert not ops.fuse_adam(_entries(net))  # a few thousand values: the unfused step
    monkeypatch.setitem(ops.FUSE_ADAM_FROM, "cpu", n)
    assert ops.fuse_adam(_entries(net))
    net64 = UNet(UNetConfig(**TINY), np.random.default_rng(0), dtype=F64)
    assert not ops.fuse_adam(_entries(net64))  # float64: always the unfused step


def test_adam_ema_checks_its_entries():
    p = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="all be given"):
        adam_ema_update([(p, p.copy(), None, p.copy(), None)], 1e-3, (0.9, 0.999), 1e-8, 1)
    with pytest.raises(ValueError, match="twice"):
        adam_ema_update([(p, None, None, None, p.copy())] * 2, 1e-3, (0.9, 0.999), 1e-8, 1, 0.9)
    with pytest.raises(ValueError, match="shape or dtype"):
        adam_ema_update([(p, None, None, None, np.zeros(4, np.float32))], 1e-3, (0.9, 0.999), 1e-8, 1, 0.9)


TINY = dict(img_resolution=8, channels=4, channel_mult=(1, 2), blocks_per_level=1,
            attn_resolutions=(4,), num_freqs=2, emb_mult=2, dropout=0.1)


def train_tiny(fused_norm, fused_step, steps=3, frozen_encoder=False, ema=True,
               norm_impl="reference"):
    """A few EDM training steps of a tiny UNet (dropout on); every parameter, Adam moment and EMA
    shadow afterwards, and the losses. ``fused_norm``: GroupNorm+SiLU through
    kernels/groupnorm_silu.py's version ``norm_impl`` (the reference: the layers' arithmetic)."""
    net = UNet(UNetConfig(**TINY), np.random.default_rng(0))
    rng = np.random.default_rng(1)
    net.set_dropout(rng)
    trained = net.decoder if frozen_encoder else net
    if frozen_encoder:
        net.train_encoder = False
    opt = Adam(trained, lr=1e-2)
    shadow = EMA(net, beta=0.9) if ema else None
    y = np.random.default_rng(2).uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)
    edm = EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=3)
    losses = []
    saved = dict(ops.FUSE_ADAM_FROM), ops.FUSE_GROUP_NORM, ops.GROUP_NORM_KERNEL
    # fused_step: Adam + EMA as the kernel, or as ops' own code, at any size; fused_norm: every
    # GroupNorm through the kernels' version norm_impl, or ops' own code
    ops.FUSE_ADAM_FROM.update(cpu=0 if fused_step else np.inf, gpu=0 if fused_step else np.inf)
    ops.FUSE_GROUP_NORM, ops.GROUP_NORM_KERNEL = fused_norm, norm_impl
    try:
        for _ in range(steps):
            net.zero_grad()
            losses.append(edm.loss_and_grad(net, y, rng))
            opt.step(shadow)
    finally:
        ops.FUSE_ADAM_FROM.update(saved[0])
        ops.FUSE_GROUP_NORM, ops.GROUP_NORM_KERNEL = saved[1:]
    arrays = [m.params[k] for _, m, k in net.named_parameters()] + list(opt.m.values()) + \
        list(opt.v.values())
    if ema:
        arrays += [m.params[k] for _, m, k in shadow.shadow.named_parameters()]
    return arrays, losses, opt.t


@pytest.mark.parametrize("frozen_encoder,ema", [(False, True), (True, True), (False, False)])
def test_fused_optimiser_step_is_adam_then_ema_bit_for_bit(frozen_encoder, ema):
    ref, _, t_ref = train_tiny(False, False, frozen_encoder=frozen_encoder, ema=ema)
    mine, _, t = train_tiny(False, True, frozen_encoder=frozen_encoder, ema=ema)
    assert t == t_ref == 3 and len(mine) == len(ref)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(mine, ref))


def test_unet_training_fused_on_cpu_is_unfused_bit_for_bit():
    ref, loss_ref, _ = train_tiny(False, False)
    mine, loss, _ = train_tiny(True, True)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(mine, ref))
    assert [float(v) for v in loss] == [float(v) for v in loss_ref]


@needs_gpp
def test_unet_training_with_emulated_cuda_kernels(monkeypatch, gn_module):
    """The GPU path end to end without a GPU: every GroupNorm+SiLU and the optimiser step run the
    CUDA C sources in the emulator on NumPy arrays, against the unfused layers and optimiser.

    The first step's gradients agree to float32 reordering (rtol 1e-3 / atol 1e-6: relative
    differences ~1e-6 on values that are sums over the batch). After three Adam steps at lr 1e-2
    (each entry moves by up to 1e-2 a step) the weights agree within atol 1e-3: Adam divides by
    sqrt(v), so where a gradient entry is itself at the float32 noise level a 1e-7 difference
    moves its step by up to ~1e-4 (seen: 1.7e-4), while a wrong term would move whole steps."""
    ae_module = cuda_emu.EmulatedModule(_adam_ema_cupy.SOURCE)
    patches = [(gn_kernels, "_resolve", lambda impl, x: "cupy"),
               (_groupnorm_silu_cupy, "module", lambda: gn_module),
               (adam_ema_kernels, "_resolve", lambda impl, entries: "cupy"),
               (_adam_ema_cupy, "module", lambda: ae_module)]
    runs = {}
    for emulated in (True, False):
        for owner, name, value in patches if emulated else ():
            monkeypatch.setattr(owner, name, value)
        runs[emulated] = (train_tiny(emulated, emulated, steps=1), train_tiny(emulated, emulated))
        monkeypatch.undo()
    assert_trains_alike(runs[True], runs[False])


def assert_trains_alike(runs, runs_ref):
    """(one step, three steps) of train_tiny with float32 kernels against the layers': see
    test_unet_training_with_emulated_cuda_kernels for the tolerances."""
    (grads1, loss1, _), (mine, loss, _) = runs
    (grads1_ref, loss1_ref, _), (ref, loss_ref, _) = runs_ref
    # one step: Adam's first update is lr * sign(g) up to eps, so compare the moments m = 0.1 g
    n = len(grads1) // 4  # parameters, then m, v and the EMA shadows
    for i, (a, b) in enumerate(zip(grads1[n:2 * n], grads1_ref[n:2 * n])):
        assert_close(f"m {i} after one step", a, b, rtol=1e-3, atol=1e-6)
    assert_close("losses", np.array(loss, F64), np.array(loss_ref, F64), rtol=1e-5, atol=1e-7)
    for i, (a, b) in enumerate(zip(mine, ref)):
        assert_close(f"array {i}", a, b, rtol=0, atol=1e-3)


def test_unet_training_with_the_numba_norm():
    """The CPU's default: every GroupNorm+SiLU through the numba loops, against the layers, with
    the emulated CUDA kernels' tolerances."""
    runs = train_tiny(True, False, steps=1, norm_impl="numba"), train_tiny(True, False, norm_impl="numba")
    assert_trains_alike(runs, (train_tiny(False, False, steps=1), train_tiny(False, False)))
