"""kernels/mlp_eval.py: the MLP denoiser's fused sampling forward, checked without a GPU.

The CUDA C kernels of both GPU versions (kernels/_mlp_eval_cupy.py, one point per thread, and
kernels/_mlp_eval_tiled.py, register tiles) run here through tests/cuda_emu.py on NumPy float32
arrays and are held against MLPDenoiser.forward; nvcc compiles the same sources for sm_80 and
sm_90. Then the wiring: MLPDenoiser.sampling_forward with the emulated kernel in place of
CuPy's, through the DDPM and EDM samplers, guided and not.

Tolerance. Both sides are float32 but sum each layer's products in another order (BLAS against
the kernel's k order; on a GPU also with fused multiply-adds), so they agree to rounding, not bit
for bit: over these shapes, random weights and noise levels the kernel is within 1.3e-6 max|y|
of forward (measured on this 2-core machine; 9.5e-7 in an earlier run: BLAS picks its summation
order by machine), and each of them within 6e-6 max|y| of a float64 evaluation (the fourier
features at c = 39 dominate that). "tiled" sums each output in the same k order as "cupy", so
under the emulator (no fused multiply-adds) the two give the same bits. Asserted: 1e-5 max|y|.
A whole sampler run (39 DDPM or 19 EDM Heun evaluations, these random networks) keeps that:
asserted 1e-5 max|x_0|.

# R members, N points per member, D data dimension, P packed weights per member
"""
import numpy as np
import pytest

from minisims import ops
from minisims.diffusion import DDPM, EDM, EDMPrecond
from minisims.gradcheck import assert_close
from minisims.kernels import _mlp_eval_cupy, _mlp_eval_tiled, mlp_eval
from minisims.kernels.mlp_eval import MLPSpec
from minisims.nn import mlp_fused
from minisims.nn.layers import Linear
from minisims.nn.mlp import MLPConfig, MLPDenoiser
from minisims.nn.mlp_fused import FusedMLPDenoiser

cuda_emu = pytest.importorskip("cuda_emu")
pytestmark = pytest.mark.skipif(not cuda_emu.available(), reason="needs g++")

CONFIGS = {
    "toy": MLPConfig(),  # the paper's toy: H 64, 4 hidden ReLU layers, raw noise level
    "small-silu-fourier": MLPConfig(hidden=8, depth=2, activation="silu", embedding="fourier",
                                    num_freqs=3),
    "narrow-silu-fourier": MLPConfig(hidden=32, depth=2, activation="silu", embedding="fourier",
                                     num_freqs=3),
}
VERSIONS = {"cupy": _mlp_eval_cupy, "tiled": _mlp_eval_tiled}
LEVELS = [-1.55, 0.3, 1.1, 17.0, 39.0]  # EDM: c_noise = ln(sigma)/4 in [-1.55, 1.1]; DDPM: t 1..39
ATOL_REL = 1e-5  # times max|y|, see the module docstring
SAMPLER_ATOL_REL = 1e-5  # times max|x_0| of a whole sampler run


def _spec(cfg: MLPConfig) -> MLPSpec:
    return MLPSpec(cfg.dim, cfg.hidden, cfg.depth, cfg.activation, cfg.embedding, cfg.num_freqs)


@pytest.fixture(scope="module")
def modules():
    """The kernel source of each version and config it supports, compiled for the emulator once:
    {(version, config name): module}."""
    return {(v, name): cuda_emu.EmulatedModule(mod.source(_spec(cfg)))
            for v, mod in VERSIONS.items() for name, cfg in CONFIGS.items()
            if mod.supported(_spec(cfg)) is None}


def _net(cfg, rng, ensemble, gain=1.5):
    """An MLP with random weights (not its init): W ~ N(0, gain^2 / Din), b ~ N(0, 0.25)."""
    net = FusedMLPDenoiser(cfg, rng, ensemble=ensemble)
    for m in net.modules():
        if isinstance(m, Linear):
            W = m.params["W"]
            W[...] = rng.standard_normal(W.shape) * gain / np.sqrt(W.shape[-2])
            m.params["b"][...] = rng.standard_normal(m.params["b"].shape) * 0.5
    return net


def _packed(net):
    layers = [m for m in net.net.layers if isinstance(m, Linear)]
    return mlp_eval.pack([m.params["W"] for m in layers], [m.params["b"] for m in layers])  # R,P


def _close(name, mine, ref):
    assert_close(name, mine, ref, rtol=0.0, atol=ATOL_REL * float(np.abs(ref).max()))


# ------------------------------------------------------------------------------------------------
# The kernel against MLPDenoiser.forward
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", list(VERSIONS))
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("R,ensemble", [(1, True), (3, True), (1, False)])
@pytest.mark.parametrize("N", [37, 300])  # neither a multiple of the 128-point tile
def test_kernel_matches_forward(modules, version, name, R, ensemble, N):
    if (version, name) not in modules:
        pytest.skip(f"{version}: {VERSIONS[version].supported(_spec(CONFIGS[name]))}")
    cfg, rng = CONFIGS[name], np.random.default_rng([R, N, ensemble])
    net = _net(cfg, rng, R if ensemble else None)
    params = _packed(net)  # R,P or 1,P
    assert params.shape == (R, _spec(cfg).size)
    x = (rng.standard_normal((R, N, cfg.dim)) * 3).astype(np.float32)  # R,N,D
    for c in LEVELS:
        y = VERSIONS[version].evaluate(modules[version, name], x, c, params, net.embed.freqs,
                                       _spec(cfg))
        ref = net.forward(x if ensemble else x[0], c)  # one model: (N,D)
        _close(f"{name} R={R} N={N} c={c}", y if ensemble else y[0], ref)


@pytest.mark.parametrize("version,name", [("cupy", "toy"), ("cupy", "small-silu-fourier"),
                                          ("tiled", "toy"), ("tiled", "narrow-silu-fourier")])
def test_kernel_is_race_free(modules, version, name):
    """The same bits with threads and blocks run in reverse (tests/cuda_emu.py's race check)."""
    cfg, rng = CONFIGS[name], np.random.default_rng(4)
    net = _net(cfg, rng, 2)
    x = (rng.standard_normal((2, 300, cfg.dim)) * 3).astype(np.float32)
    cuda_emu.assert_race_free(modules[version, name], lambda: VERSIONS[version].evaluate(
        modules[version, name], x, 0.3, _packed(net), net.embed.freqs, _spec(cfg)))


@pytest.mark.parametrize("name", ["toy", "narrow-silu-fourier"])
def test_tiled_sums_as_cupy_does(modules, name):
    """Both versions sum every output in k order and add the bias after: without fused
    multiply-adds (the emulator), the same bits."""
    cfg, rng = CONFIGS[name], np.random.default_rng(9)
    net = _net(cfg, rng, 2)
    x = (rng.standard_normal((2, 200, cfg.dim)) * 3).astype(np.float32)
    for c in LEVELS:
        ys = [VERSIONS[v].evaluate(modules[v, name], x, c, _packed(net), net.embed.freqs,
                                   _spec(cfg)) for v in ("cupy", "tiled")]
        assert np.array_equal(*ys)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_reference_on_packed_weights_is_forward(name):
    cfg, rng = CONFIGS[name], np.random.default_rng(5)
    net = _net(cfg, rng, 3)
    x = rng.standard_normal((3, 20, cfg.dim)).astype(np.float32)
    for c in LEVELS:
        got = mlp_eval.mlp_eval(x, c, _packed(net), net.embed.freqs, _spec(cfg), impl="reference")
        # the same operations on views of the packed copy; BLAS may pick another path for them
        assert_close(f"reference c={c}", got, net.forward(x, c), rtol=1e-6, atol=1e-6)


def test_pack_unpack_round_trip():
    cfg, rng = CONFIGS["small-silu-fourier"], np.random.default_rng(2)
    net = _net(cfg, rng, 2)
    layers = [m for m in net.net.layers if isinstance(m, Linear)]
    for (W, b), m in zip(mlp_eval.unpack(_packed(net), _spec(cfg)), layers):
        assert np.array_equal(W, m.params["W"]) and np.array_equal(b[:, 0], m.params["b"])


@pytest.mark.parametrize("version", list(VERSIONS))
def test_arguments_are_checked(modules, version):
    cfg, mod = CONFIGS["toy"], VERSIONS[version]
    net = _net(cfg, np.random.default_rng(0), 2)
    x = np.zeros((2, 5, 2), np.float32)
    with pytest.raises(TypeError, match="float32"):
        mod.evaluate(modules[version, "toy"], x.astype(np.float64), 0.5, _packed(net),
                     net.embed.freqs, _spec(cfg))
    with pytest.raises(ValueError, match="shapes"):
        mod.evaluate(modules[version, "toy"], np.zeros((2, 5, 3), np.float32), 0.5,
                     _packed(net), net.embed.freqs, _spec(cfg))
    assert mod.supported(MLPSpec(hidden=128)) is not None  # would spill registers
    assert mod.supported(MLPSpec(hidden=30)) is not None  # rows not float4-aligned


def test_shared_memory_and_widths():
    toy = _spec(CONFIGS["toy"])
    # "cupy": 17,026 weights (padded to 17,028) and 64 activations of 128 points, 4 bytes each
    assert _mlp_eval_cupy.shared_bytes(toy) == 4 * (17_028 + 64 * 128) == 100_880
    # "tiled": one layer's W and b, two tiles of 64 rows of 128 + 4 floats
    assert _mlp_eval_tiled.shared_bytes(toy) == 4 * (64 * 64 + 64 + 2 * 64 * 132) == 84_224
    assert _mlp_eval_cupy.supported(MLPSpec(hidden=8)) is None
    assert _mlp_eval_tiled.supported(MLPSpec(hidden=8)) is not None  # the tiles need 32 | H


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("version,name", [("cupy", "toy"), ("cupy", "small-silu-fourier"),
                                          ("tiled", "toy"), ("tiled", "narrow-silu-fourier")])
def test_nvcc_compiles_the_kernel(arch, version, name):
    try:
        ptx = cuda_emu.nvcc_ptx(VERSIONS[version].source(_spec(CONFIGS[name])), arch)
    except RuntimeError as e:  # pragma: no cover - a real failure shows nvcc's message
        pytest.fail(str(e))
    if ptx is None:
        pytest.skip("nvcc not installed")
    assert ".entry mlp_eval" in ptx


# ------------------------------------------------------------------------------------------------
# The wiring: MLPDenoiser.sampling_forward and the samplers, the emulated kernel standing in
# for CuPy's
# ------------------------------------------------------------------------------------------------

@pytest.fixture(params=list(VERSIONS))
def emulated_gpu(request, monkeypatch, modules):
    """sampling_forward takes its fused path on NumPy weights, launching the emulated kernel of
    each version in turn."""
    version = request.param
    by_spec = {_spec(cfg): modules[version, name] for name, cfg in CONFIGS.items()
               if (version, name) in modules}
    monkeypatch.setattr(mlp_eval, "is_cupy", lambda a: True)
    monkeypatch.setattr(mlp_eval, "gpu_ready", lambda spec: True)
    monkeypatch.setattr(mlp_fused, "on_gpu", lambda a: True)

    def launch(x, c, params, freqs, spec):
        return VERSIONS[version].evaluate(by_spec[spec], x, c, params, freqs, spec)
    monkeypatch.setattr(mlp_eval, "mlp_eval", launch)


@pytest.mark.parametrize("auto_gpu, toy_version", [("cupy", "cupy"), ("tiled", "tiled")])
def test_auto_picks_cupy_and_tiled_only_where_opted_in(monkeypatch, modules, auto_gpu, toy_version):
    """mlp_eval's dispatch on a GPU: "cupy" by default (the version that has run on a GPU);
    with AUTO_GPU = "tiled", "tiled" where 32 | H, else "cupy" (each version's module stands in
    for CuPy's; which one launched is recorded)."""
    monkeypatch.setattr(mlp_eval, "AUTO_GPU", auto_gpu)
    launched = []
    monkeypatch.setattr(mlp_eval, "is_cupy", lambda a: True)
    for v, mod in VERSIONS.items():
        monkeypatch.setattr(mod, "fits", lambda spec, mod=mod: mod.supported(spec) is None)
        by_spec = {_spec(cfg): modules[v, name] for name, cfg in CONFIGS.items()
                   if (v, name) in modules}
        monkeypatch.setattr(mod, "module", lambda spec, v=v, by_spec=by_spec:
                            launched.append(v) or by_spec[spec])
    for name, expected in (("toy", toy_version), ("small-silu-fourier", "cupy")):
        cfg, rng = CONFIGS[name], np.random.default_rng(0)
        net = _net(cfg, rng, 2)
        x = rng.standard_normal((2, 30, cfg.dim)).astype(np.float32)
        y = mlp_eval.mlp_eval(x, 0.3, _packed(net), net.embed.freqs, _spec(cfg))
        assert launched.pop() == expected
        _close(name, y, net.forward(x, 0.3))


def test_on_the_cpu_sampling_forward_is_forward():
    net = FusedMLPDenoiser(MLPConfig(), np.random.default_rng(0), ensemble=2)
    assert net.sampling_forward() == net.forward  # NumPy weights: the samplers' path is unchanged


def test_sampling_forward_fused_and_its_fallbacks(emulated_gpu):
    cfg, rng = CONFIGS["toy"], np.random.default_rng(1)
    net = _net(cfg, rng, 3)
    fused = net.sampling_forward()
    assert fused != net.forward
    x = rng.standard_normal((3, 40, 2))  # float64, as the DDPM sampler passes its state
    _close("fused, scalar level", fused(x, 7), net.forward(x, 7))
    c = rng.random((3, 40)).astype(np.float32)  # a level per point: not a sampler's call
    assert np.array_equal(fused(x, c), net.forward(x, c))
    one = _net(cfg, rng, None)  # one model: any leading shape
    x1 = rng.standard_normal((2, 5, 2)).astype(np.float32)
    _close("fused, one model", one.sampling_forward()(x1, 0.4), one.forward(x1, 0.4))


FORMULATIONS = {"ddpm": DDPM(T=40), "edm": EDM(precond=EDMPrecond(1.4), num_steps=10)}


@pytest.mark.parametrize("form", list(FORMULATIONS))
def test_fused_sampler_matches_unfused(emulated_gpu, monkeypatch, form):
    f, rng = FORMULATIONS[form], np.random.default_rng(3)
    base, aux = _net(CONFIGS["toy"], rng, 2, gain=1.0), _net(CONFIGS["toy"], rng, 2, gain=1.0)
    shape = (2, 25, 2)

    def sample(w, fused, aux_net=aux):
        monkeypatch.setattr(ops, "FUSE_MLP_EVAL", fused)
        return f.sample(base, shape, np.random.default_rng(11), aux=aux_net, w=w)

    for w in (0.0, 2.0):
        ref = sample(w, False)
        assert_close(f"{form} w={w}", sample(w, True), ref, rtol=0.0,
                     atol=SAMPLER_ATOL_REL * np.abs(ref).max())
    # the endpoints stay exact on the fused path: w = 0 is the base sampler, w = -1 the aux's
    assert np.array_equal(sample(0.0, True), sample(0.0, True, aux_net=None))
    monkeypatch.setattr(ops, "FUSE_MLP_EVAL", True)
    assert np.array_equal(sample(-1.0, True), f.sample(aux, shape, np.random.default_rng(11)))


def test_the_toy_makes_the_fused_twin_on_the_gpu_only(monkeypatch):
    """minisims.sims.toy_mlp: the plain MLPDenoiser on the CPU and with the fast paths off, the
    FusedMLPDenoiser (the same layers and parameter names) on the GPU."""
    from minisims import backend, sims
    cfg = MLPConfig(hidden=8, depth=1)
    plain = sims.toy_mlp(cfg, np.random.default_rng(0), 2)
    assert type(plain) is MLPDenoiser
    monkeypatch.setattr(backend, "current_device", lambda: "gpu")
    twin = sims.toy_mlp(cfg, np.random.default_rng(0), 2)
    assert type(twin) is FusedMLPDenoiser
    assert all(np.array_equal(a, b) for a, b in zip(plain.state_dict().values(), twin.state_dict().values()))
    assert list(plain.state_dict()) == list(twin.state_dict())
    monkeypatch.setattr(ops, "FAST", False)
    assert type(sims.toy_mlp(cfg, np.random.default_rng(0), 2)) is MLPDenoiser
