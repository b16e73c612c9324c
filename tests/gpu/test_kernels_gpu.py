"""kernels/ on a real GPU: the "cupy", "igemm", "cuda" and "cuda_naive" convolutions and Heun
stages (and the array-generic "numpy" / "reference" code on CuPy arrays) against the NumPy
references, and the fused sampler step against the plain one on CuPy arrays. Skipped where CuPy
or a GPU is missing.

    PYTHONPATH=. python -m pytest -q tests/gpu/test_kernels_gpu.py

Tolerances: conv float64 agrees to rounding (1e-11); float32 sums K = C*k*k products in another
order than the reference (cuBLAS, no TF32: CuPy does not enable it), ~1e-6 relative per value,
so rtol 1e-5 and atol 2e-6 K ("igemm" is float32 only). The Heun stages are compared bit for
bit (tobytes): the kernels are compiled without multiply-add contraction (--fmad=false for CuPy,
numba's default for cuda).

# N batch, C channels in, O channels out, H W input size, k kernel size, s stride, p padding
"""
import numpy as np
import pytest

from minisims import backend
from minisims.gradcheck import assert_close

pytestmark = pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a GPU")

CONV_CASES = [
    (2, 3, 4, 5, 5, 3, 1, 1),
    (1, 2, 3, 6, 7, 3, 2, 1),
    (2, 3, 2, 7, 6, 3, 2, 0),
    (3, 4, 5, 5, 5, 1, 1, 0),
    (2, 3, 4, 7, 5, 1, 2, 0),
    (2, 2, 3, 4, 5, 1, 1, 1),
    (8, 32, 48, 16, 16, 3, 1, 1),
    (4, 64, 64, 17, 15, 3, 2, 1),
]


@pytest.fixture(scope="module")
def cp():
    import cupy
    return cupy


def _conv_data(rng, N, C, O, H, W, k, s, p, dtype):
    from minisims.kernels.conv2d import out_size
    x = rng.standard_normal((N, C, H, W)).astype(dtype)  # N,C,H,W
    w = rng.standard_normal((O, C, k, k)).astype(dtype)  # O,C,k,k
    b = rng.standard_normal(O).astype(dtype)  # O
    dy = rng.standard_normal((N, O, out_size(H, k, s, p), out_size(W, k, s, p))).astype(dtype)
    return x, w, b, dy


@pytest.mark.parametrize("impl", ["cupy", "igemm", "cuda", "cuda_naive", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_versions_on_gpu_match_reference(cp, impl, dtype, case):
    from minisims.kernels.conv2d import (FLOAT32_ONLY, conv2d_backward_input, conv2d_backward_weight,
                                conv2d_forward)
    if impl in FLOAT32_ONLY and dtype != np.float32:
        pytest.skip(f"{impl} is float32 only")
    s, p = case[6], case[7]
    x, w, b, dy = _conv_data(np.random.default_rng(0), *case, dtype)
    X, W_, B, DY = (cp.asarray(a) for a in (x, w, b, dy))
    got = [conv2d_forward(X, W_, B, s, p, impl=impl),
           conv2d_backward_input(DY, W_, x.shape, s, p, impl=impl),
           *conv2d_backward_weight(DY, X, w.shape, s, p, impl=impl)]
    ref = [conv2d_forward(x, w, b, s, p, impl="reference"),
           conv2d_backward_input(dy, w, x.shape, s, p, impl="reference"),
           *conv2d_backward_weight(dy, x, w.shape, s, p, impl="reference")]
    K = case[1] * case[5] ** 2
    rtol, atol = (1e-11, 1e-11) if dtype == np.float64 else (1e-5, 2e-6 * K)
    for name, g, r in zip(("y", "dx", "dw", "db"), got, ref):
        assert isinstance(g, cp.ndarray), f"{impl} {name} came back as {type(g)}"
        assert g.dtype == dtype
        assert_close(f"{impl} {name}", cp.asnumpy(g), r, rtol, atol)


@pytest.mark.parametrize("tile", ["auto", "64", "128", "128x64"])
@pytest.mark.parametrize("case", CONV_CASES + [(4, 15, 130, 11, 13, 3, 1, 1), (16, 128, 128, 16, 16, 3, 1, 1)])
def test_igemm_every_tile_on_gpu(cp, monkeypatch, tile, case):
    """Each of igemm's block tiles forced through the module constant TILE (remainders of the
    128-row tiles included), float32, against the float64 reference."""
    from minisims.kernels import _conv2d_igemm as G
    from minisims.kernels.conv2d import conv2d_backward_input, conv2d_backward_weight, conv2d_forward
    monkeypatch.setattr(G, "TILE", tile)
    s, p = case[6], case[7]
    x, w, b, dy = _conv_data(np.random.default_rng(0), *case, np.float32)
    X, W_, B, DY = (cp.asarray(a) for a in (x, w, b, dy))
    got = [conv2d_forward(X, W_, B, s, p, impl="igemm"),
           conv2d_backward_input(DY, W_, x.shape, s, p, impl="igemm"),
           *conv2d_backward_weight(DY, X, w.shape, s, p, impl="igemm")]
    x, w, b, dy = (a.astype(np.float64) for a in (x, w, b, dy))
    ref = [conv2d_forward(x, w, b, s, p, impl="reference"),
           conv2d_backward_input(dy, w, x.shape, s, p, impl="reference"),
           *conv2d_backward_weight(dy, x, w.shape, s, p, impl="reference")]
    M = case[0] * dy.shape[2] * dy.shape[3]
    for name, g, r, depth in zip(("y", "dx", "dw", "db"), got, ref,
                                 (case[1] * case[5] ** 2, case[2] * case[5] ** 2, M, M)):
        assert_close(f"igemm {tile} {name}", cp.asnumpy(g), r, 1e-5, 2e-6 * depth)


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[6] > 1] + [(2, 4, 5, 10, 11, 5, 3, 2)])
def test_igemm_dx_by_parity_classes_on_gpu(cp, case):
    """At stride > 1 igemm's input gradient runs by parity classes (s*s stride-1 gathers, then
    a strided copy into dx); the gather over every tap beside it: both against the reference."""
    from minisims.kernels import _conv2d_igemm as G
    from minisims.kernels.conv2d import conv2d_backward_input
    N, C, O, H, W, k, s, p = case
    _, w, _, dy = _conv_data(np.random.default_rng(1), *case, np.float32)
    ref = conv2d_backward_input(dy.astype(np.float64), w.astype(np.float64), (N, C, H, W), s, p,
                                impl="reference")
    for split in (True, False):
        got = G.backward_input(G.MODULES, cp.asarray(dy), cp.asarray(w), (N, C, H, W), s, p,
                               parity_split=split)
        assert_close(f"igemm dx split={split}", cp.asnumpy(got), ref, 1e-5, 2e-6 * O * k * k)


def test_igemm_on_gpu_is_deterministic_and_refuses_float64(cp):
    """Split-K weight gradient: the splits are summed in a fixed order, the same bits every run."""
    from minisims.kernels.conv2d import conv2d_backward_weight, conv2d_forward
    x, w, b, dy = (cp.asarray(a) for a in _conv_data(np.random.default_rng(3), 16, 32, 40, 16, 16,
                                                       3, 1, 1, np.float32))
    first = conv2d_backward_weight(dy, x, w.shape, 1, 1, impl="igemm")
    again = conv2d_backward_weight(dy, x, w.shape, 1, 1, impl="igemm")
    for a, c in zip(first, again):
        assert cp.asnumpy(a).tobytes() == cp.asnumpy(c).tobytes()
    with pytest.raises(TypeError, match="float32 only"):
        conv2d_forward(x.astype(cp.float64), w, b, 1, 1, impl="igemm")


def test_conv_auto_on_gpu_arrays_igemm_for_float32(cp):
    from minisims.kernels.conv2d import _resolve
    assert _resolve("auto", cp.zeros(1)) == "cupy"  # float64
    assert _resolve("auto", cp.zeros(1, cp.float32), cp.zeros(1, cp.float32)) == "igemm"
    assert _resolve("auto", cp.zeros(1, cp.float32), cp.zeros(1)) == "cupy"


@pytest.mark.parametrize("impl", ["cupy", "reference"])
@pytest.mark.parametrize("model_dtype", [np.float32, np.float64])
def test_heun_stages_on_gpu_bit_for_bit(cp, impl, model_dtype):
    from minisims.kernels.heun import heun_stage1, heun_stage2
    rng = np.random.default_rng(1)
    shape = (16, 3, 8, 8)
    for w in (0.0, -1.0, 0.37, 2.5, 7.0):
        for guided in (True, False):
            x_hat = rng.standard_normal(shape) * 3.0  # S float64
            base, aux, base2, aux2 = (rng.standard_normal(shape).astype(model_dtype) for _ in range(4))
            if not guided:
                aux = aux2 = None
            t_hat, t_next = np.float64(1.61), np.float64(1.2345)
            r1 = heun_stage1(x_hat, base, aux, w, t_hat, t_next, impl="reference")
            r2 = heun_stage2(x_hat, *r1, base2, aux2, w, t_hat, t_next, impl="reference")
            g = lambda a: None if a is None else cp.asarray(a)  # noqa: E731
            c1 = heun_stage1(g(x_hat), g(base), g(aux), w, t_hat, t_next, impl=impl)
            c2 = heun_stage2(g(x_hat), *c1, g(base2), g(aux2), w, t_hat, t_next, impl=impl)
            for name, c, r in (("x_next", c1[0], r1[0]), ("d_cur", c1[1], r1[1]), ("stage 2", c2, r2)):
                c = cp.asnumpy(c)
                assert c.dtype == r.dtype and c.tobytes() == r.tobytes(), \
                    f"{impl} {name} w={w} guided={guided}: max |diff| {np.abs(c - r).max():.3e}"


@pytest.mark.parametrize("impl", ["cupy", "reference"])
@pytest.mark.parametrize("model_dtype", [np.float32, np.float64])
def test_heun_endpoints_with_non_finite_outputs_on_gpu(cp, impl, model_dtype):
    """w = 0 / w = -1 select the base / aux exactly (the other's inf and nan ignored, -0.0 kept),
    as sims_combine does: bit for bit the reference's unguided step of the chosen model."""
    from minisims.kernels.heun import heun_stage1, heun_stage2
    rng = np.random.default_rng(2)
    shape = (4, 3, 8, 8)
    for w in (0.0, -1.0):
        x_hat = rng.standard_normal(shape) * 3.0  # S float64
        x_hat.reshape(-1)[::5] = 0.0
        good = rng.standard_normal(shape).astype(model_dtype)
        good.reshape(-1)[::3] = -0.0
        bad = np.resize(np.array([np.inf, np.nan, -np.inf, -0.0, 1.0], model_dtype), shape)
        base, aux = (good, bad) if w == 0 else (bad, good)
        t_hat, t_next = np.float64(1.61), np.float64(1.2345)
        r1 = heun_stage1(x_hat, good, None, 0.0, t_hat, t_next, impl="reference")
        r2 = heun_stage2(x_hat, *r1, good, None, 0.0, t_hat, t_next, impl="reference")
        g = cp.asarray
        c1 = heun_stage1(g(x_hat), g(base), g(aux), w, t_hat, t_next, impl=impl)
        c2 = heun_stage2(g(x_hat), *c1, g(base), g(aux), w, t_hat, t_next, impl=impl)
        for name, c, r in (("x_next", c1[0], r1[0]), ("d_cur", c1[1], r1[1]), ("stage 2", c2, r2)):
            assert cp.asnumpy(c).tobytes() == r.tobytes(), f"{impl} {name} w={w}"


def test_fused_sampler_on_gpu_equals_edm_sampler(cp, monkeypatch):
    """minisims.ops fuses the Heun step on CuPy arrays; with the fast paths off the sampler runs
    the seam's own lines: the same samples, bit for bit."""
    from minisims import ops
    from minisims.diffusion import edm_sampler
    from minisims.guidance import Guidance, GuidanceInterval

    def fused_edm_sampler(*args, **kw):
        return edm_sampler(*args, **kw)

    def plain_edm_sampler(*args, **kw):
        with monkeypatch.context() as m:
            m.setattr(ops, "FAST", False)
            return edm_sampler(*args, **kw)

    def base(x, sigma):
        return (cp.tanh(x) / (1.0 + sigma)).astype(cp.float32)

    def aux(x, sigma):
        return (0.5 * cp.sin(x) / (1.0 + sigma)).astype(cp.float32)

    for guidance in (None, Guidance(aux, 0.0), Guidance(aux, -1.0),
                     Guidance(aux, 2.3, GuidanceInterval(2, 5))):
        for kw in ({}, dict(S_churn=10.0, S_min=0.05, S_max=20.0)):
            a = plain_edm_sampler(base, (8, 3, 4, 4), cp.random.default_rng(3), num_steps=8,
                                  guidance=guidance, **kw)
            b = fused_edm_sampler(base, (8, 3, 4, 4), cp.random.default_rng(3), num_steps=8,
                                  guidance=guidance, **kw)
            assert isinstance(b, cp.ndarray)
            assert cp.asnumpy(a).tobytes() == cp.asnumpy(b).tobytes(), \
                f"{guidance} {kw}: max |diff| {float(abs(a - b).max()):.3e}"
