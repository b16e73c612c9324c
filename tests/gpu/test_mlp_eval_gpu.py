"""kernels/mlp_eval.py on a real GPU: the fused MLP evaluation (one launch per network
evaluation) against MLPDenoiser.forward on CuPy arrays, and the samplers with it against the
samplers without it. Skipped where CuPy or a GPU is missing; tests/test_kernels_mlp_eval.py runs
the same kernel source on the CPU through the emulator.

    PYTHONPATH=. python -m pytest -q tests/gpu/test_mlp_eval_gpu.py

Tolerances (tests/test_kernels_mlp_eval.py derives them): the kernel sums each layer in another
order than cuBLAS and with fused multiply-adds, so it agrees with forward to float32 rounding,
asserted as 1e-5 max|y| (measured under the emulator: 9.5e-7); whole sampler runs from the same
draws, 1e-5 max|x_0|. The guidance endpoints stay exact: w = 0 is the base sampler and w = -1
the aux's, bit for bit, on the fused path.

# R members, N points per member, D data dimension
"""
import numpy as np
import pytest

from minisims import backend, ops
from minisims.gradcheck import assert_close
from minisims.nn.mlp_fused import spec

pytestmark = pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a GPU")

TOL = 1e-5  # times max|reference|


def _net(cp, cfg, rng, ensemble, gain=1.5):
    """An MLP on the GPU with random weights (not its init)."""
    from minisims.nn.layers import Linear
    from minisims.nn.mlp_fused import FusedMLPDenoiser
    net = FusedMLPDenoiser(cfg, rng, ensemble=ensemble)
    for m in net.modules():
        if isinstance(m, Linear):
            W, b = m.params["W"], m.params["b"]
            W[...] = cp.asarray(rng.standard_normal(W.shape) * gain / np.sqrt(W.shape[-2]))
            b[...] = cp.asarray(rng.standard_normal(b.shape) * 0.5)
    return net


def _close(name, mine, ref, tol=TOL):
    mine, ref = backend.to_numpy(mine), backend.to_numpy(ref)
    assert_close(name, mine, ref, rtol=0.0, atol=tol * float(np.abs(ref).max()))


@pytest.mark.parametrize("cfg_kw", [{}, dict(hidden=8, depth=2, activation="silu",
                                             embedding="fourier", num_freqs=3),
                                    dict(embedding="fourier")])
@pytest.mark.parametrize("R,N", [(1, 37), (3, 300), (256, 2000)])
def test_fused_evaluation_matches_forward(gpu, cfg_kw, R, N):
    from minisims.nn.mlp import MLPConfig
    cp, rng = gpu, np.random.default_rng(R + N)
    cfg = MLPConfig(**cfg_kw)
    for ensemble in (R, None) if R == 1 else (R,):
        net = _net(cp, cfg, rng, ensemble)
        fused = net.sampling_forward()
        assert fused != net.forward  # the fused path is taken on CuPy float32 weights
        x = cp.asarray(rng.standard_normal((R, N, 2)) * 3)  # float64, as the DDPM sampler's state
        xin = x if ensemble else x[0]
        for c in (-1.55, 0.3, 1.1, 17.0, 39.0):
            y = fused(xin, c)
            assert isinstance(y, cp.ndarray) and y.dtype == np.float32 and y.shape == xin.shape
            _close(f"{cfg_kw} R={R} N={N} c={c}", y, net.forward(xin, c))


@pytest.mark.parametrize("impl", ["cupy", "tiled"])
@pytest.mark.parametrize("cfg_kw", [{}, dict(hidden=32, depth=2, activation="silu",
                                             embedding="fourier", num_freqs=3)])
def test_both_versions_match_forward(gpu, impl, cfg_kw):
    from minisims.kernels import mlp_eval
    from minisims.nn.layers import Linear
    from minisims.nn.mlp import MLPConfig
    cp, rng = gpu, np.random.default_rng(17)
    cfg = MLPConfig(**cfg_kw)
    net = _net(cp, cfg, rng, 64)
    layers = [m for m in net.net.layers if isinstance(m, Linear)]
    params = mlp_eval.pack([m.params["W"] for m in layers], [m.params["b"] for m in layers])
    x = cp.asarray((rng.standard_normal((64, 2000, 2)) * 3).astype(np.float32))
    for c in (-1.55, 0.3, 17.0):
        y = mlp_eval.mlp_eval(x, c, params, net.embed.freqs, spec(net), impl=impl)
        _close(f"{impl} {cfg_kw} c={c}", y, net.forward(x, c))


def test_fused_evaluation_does_not_synchronise(gpu, no_sync):
    from minisims.nn.mlp import MLPConfig
    cp, rng = gpu, np.random.default_rng(0)
    net = _net(cp, MLPConfig(), rng, 4)
    fused = net.sampling_forward()
    x = cp.asarray(rng.standard_normal((4, 500, 2)))
    fused(x, 3.0)  # compiles the module, reads the device's shared memory limit once
    with no_sync():
        fused(x, 5.0)


@pytest.mark.parametrize("form", ["ddpm", "edm"])
def test_fused_sampler_matches_unfused_and_keeps_the_endpoints(gpu, monkeypatch, form):
    from minisims.diffusion import DDPM, EDM, EDMPrecond
    from minisims.nn.mlp import MLPConfig
    cp, rng = gpu, np.random.default_rng(3)
    f = DDPM(T=40) if form == "ddpm" else EDM(precond=EDMPrecond(1.4), num_steps=16)
    base, aux = _net(cp, MLPConfig(), rng, 8, gain=1.0), _net(cp, MLPConfig(), rng, 8, gain=1.0)
    shape = (8, 500, 2)

    def sample(w, fused, aux_net=aux):
        monkeypatch.setattr(ops, "FUSE_MLP_EVAL", fused)
        return f.sample(base, shape, cp.random.default_rng(11), aux=aux_net, w=w)

    for w in (0.0, 2.0):
        _close(f"{form} w={w}", sample(w, True), sample(w, False))
    same = sample(0.0, True), sample(0.0, True, aux_net=None)
    assert same[0].tobytes() == same[1].tobytes()  # w = 0: the base sampler, bit for bit
    monkeypatch.setattr(ops, "FUSE_MLP_EVAL", True)
    aux_only = f.sample(aux, shape, cp.random.default_rng(11))
    assert sample(-1.0, True).tobytes() == aux_only.tobytes()  # w = -1: the aux's sampler
