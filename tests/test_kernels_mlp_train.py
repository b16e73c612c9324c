"""kernels/mlp_train.py: the MLP denoiser's fused training step, checked without a GPU.

The two CUDA C kernels (kernels/_mlp_train_cupy.py) run here through tests/cuda_emu.py on NumPy
float32 arrays and are held against the float64 reference; nvcc compiles the same source for
sm_80 and sm_90. Then the wiring: MLPDenoiser.forward and backward with the emulated kernels in
place of CuPy's, against its layers, and whole training runs both ways.

Tolerances. The kernels sum every product in float32 in their own fixed orders (on a GPU also
with fused multiply-adds), so they agree with the float64 reference to float32 rounding: over
the shapes and random networks of test_kernels_match_the_reference, within 5.6e-7 of each array's
max|.| for y, the activations, dh_in and every layer's dW and db (measured; the same reference
evaluated in float32, as the layers compute, is 7.7e-7 off). Asserted: 1e-5 of each array's
max|.|, also between the kernels and the layers' float32 path. Twelve Adam steps trained both
ways (test_training_fused_matches_training_layer_by_layer) drift by what Adam makes of those
rounding differences: measured 1.2e-7 relative in the loss history and 2.3e-5 of max|W| in the
weights; asserted 1e-6 and 1e-4.

# R members, N points per member, DIN network inputs, H hidden width, P packed weights per member
"""
import numpy as np
import pytest

from minisims.kernels import _mlp_train_cupy, mlp_train
from minisims.kernels.mlp_eval import MLPSpec
from minisims import ops
from minisims.diffusion import DDPM
from minisims.gradcheck import assert_close
from minisims.nn import mlp_fused
from minisims.nn.layers import Linear
from minisims.nn.mlp import MLPConfig, MLPDenoiser
from minisims.nn.mlp_fused import FusedMLPDenoiser
from minisims.train import TrainConfig, train

cuda_emu = pytest.importorskip("cuda_emu")
pytestmark = pytest.mark.skipif(not cuda_emu.available(), reason="needs g++")

CONFIGS = {
    "toy": MLPConfig(),  # the paper's toy: H 64, 4 hidden ReLU layers, raw noise level
    "narrow-fourier": MLPConfig(hidden=32, depth=2, embedding="fourier", num_freqs=3),
    "no-hidden": MLPConfig(depth=0),  # Linear(DIN, H), Linear(H, D): no ReLU at all
}
TOL = 1e-5  # times each array's max|.|, see the module docstring


def _spec(cfg: MLPConfig) -> MLPSpec:
    return MLPSpec(cfg.dim, cfg.hidden, cfg.depth, cfg.activation, cfg.embedding, cfg.num_freqs)


@pytest.fixture(scope="module")
def modules():
    """The kernels' source of each config, compiled for the emulator once."""
    return {_spec(cfg): cuda_emu.EmulatedModule(_mlp_train_cupy.source(_spec(cfg)))
            for cfg in CONFIGS.values()}


def _params(spec, R, rng, gain=1.5):
    """Random packed weights (R,P) float32: W ~ N(0, gain^2 / Din), b ~ N(0, 0.25)."""
    rows = []
    for din, dout in spec.layer_shapes():
        rows += [rng.standard_normal((R, din * dout)) * gain / np.sqrt(din),
                 rng.standard_normal((R, dout)) * 0.5]
    return np.concatenate(rows, axis=1).astype(np.float32)  # R,P


def _close(name, mine, ref):
    ref = np.asarray(ref)
    assert_close(name, np.asarray(mine, dtype=np.float64), ref, rtol=0.0,
                 atol=TOL * max(float(np.abs(ref).max()), 1e-30))


def _close_packed(name, mine, ref, spec):
    """Every layer's dW and db on its own scale."""
    for i, ((W, b), (W0, b0)) in enumerate(zip(mlp_train.unpack(mine, spec),
                                               mlp_train.unpack(ref, spec))):
        _close(f"{name} dW_{i}", W, W0)
        _close(f"{name} db_{i}", b, b0)


# ------------------------------------------------------------------------------------------------
# The kernels against the float64 reference
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("R,N", [(1, 37), (3, 300), (2, 128)])  # a part tile, 3 tiles, 1 full
def test_kernels_match_the_reference(modules, name, R, N):
    spec, rng = _spec(CONFIGS[name]), np.random.default_rng([R, N])
    mod, din = modules[spec], spec.dim + spec.emb_dim
    params = _params(spec, R, rng)
    h_in = (rng.standard_normal((R, N, din)) * 2).astype(np.float32)  # R,N,DIN
    dy = rng.standard_normal((R, N, spec.dim)).astype(np.float32)  # R,N,D
    y, saved = _mlp_train_cupy.forward(mod, h_in, params, spec)
    f64 = (h_in.astype(np.float64), params.astype(np.float64))
    y_ref, acts = mlp_train.forward_reference(*f64, spec)
    _close("y", y, y_ref)
    assert saved.shape == (R, _mlp_train_cupy.tiles(N), spec.depth + 1, spec.hidden, 128)
    for i, (h, h_ref) in enumerate(zip(mlp_train.saved_activations(saved, N), acts)):
        _close(f"h_{i}", h, h_ref)
    dparts, dh_in = _mlp_train_cupy.backward(mod, dy, h_in, saved,
                                             mlp_train.pack_transposed(params, spec), spec)
    grads_ref, dh_ref = mlp_train.backward_reference(dy.astype(np.float64), f64[0], acts, f64[1],
                                                     spec)
    _close_packed("grads", dparts.sum(axis=1), grads_ref, spec)
    _close("dh_in", dh_in, dh_ref)
    # the same inputs give the same bits
    again = _mlp_train_cupy.backward(mod, dy, h_in, saved, mlp_train.pack_transposed(params, spec),
                                     spec)
    assert np.array_equal(again[0], dparts) and np.array_equal(again[1], dh_in)


@pytest.mark.parametrize("name", ["toy", "narrow-fourier"])
def test_kernels_are_race_free(modules, name):
    """The same bits with threads and blocks run in reverse (tests/cuda_emu.py's race check):
    every barrier of the layer loop is in place."""
    spec, rng = _spec(CONFIGS[name]), np.random.default_rng(3)
    mod, din = modules[spec], spec.dim + spec.emb_dim
    params = _params(spec, 2, rng)
    params_t = mlp_train.pack_transposed(params, spec)
    h_in = rng.standard_normal((2, 300, din)).astype(np.float32)
    dy = rng.standard_normal((2, 300, spec.dim)).astype(np.float32)

    def run():
        y, saved = _mlp_train_cupy.forward(mod, h_in, params, spec)
        return (y, saved, *_mlp_train_cupy.backward(mod, dy, h_in, saved, params_t, spec))
    cuda_emu.assert_race_free(mod, run)


def test_every_barrier_is_needed_and_a_removal_is_caught():
    """Remove each __syncthreads of the two kernels in turn: the race check above must catch
    every one (tests/check_barriers.py; so the check is not blind to this kernel's races)."""
    import check_barriers
    found = check_barriers.barrier_removals(*check_barriers.mlp_train_case())
    assert len(found) >= 9 and all(caught for _, caught in found), found


def test_reference_backward_is_the_layers_backward():
    """backward_reference on packed weights computes what MLPDenoiser's layers compute."""
    cfg, rng = CONFIGS["toy"], np.random.default_rng(4)
    net = MLPDenoiser(cfg, rng, ensemble=2, dtype=np.float64)
    x, c = rng.standard_normal((2, 30, 2)), rng.random((2, 30))
    dy = rng.standard_normal((2, 30, 2))
    y = net.forward(x, c)
    net.zero_grad()
    net.backward(dy)
    h_in = np.concatenate([x, net.embed.forward(c)], axis=-1)  # R,N,DIN
    layers = mlp_fused.linears(net)
    params = np.concatenate([a.reshape(2, -1) for m in layers
                             for a in (m.params["W"], m.params["b"])], axis=1)  # R,P float64
    y_ref, acts = mlp_train.forward_reference(h_in, params, _spec(cfg))
    assert_close("y", y_ref, y, rtol=1e-12, atol=1e-12)
    grads, _ = mlp_train.backward_reference(dy, h_in, acts, params, _spec(cfg))
    for (dW, db), m in zip(mlp_train.unpack(grads, _spec(cfg)), layers):
        assert_close("dW", dW, m.grads["W"], rtol=1e-12, atol=1e-12)
        assert_close("db", db[:, 0], m.grads["b"], rtol=1e-12, atol=1e-12)


def test_pack_transposed():
    spec, rng = _spec(CONFIGS["narrow-fourier"]), np.random.default_rng(1)
    params = _params(spec, 2, rng)
    flat_t = mlp_train.pack_transposed(params, spec)  # R,P
    at = 0
    for (W, b), (din, dout) in zip(mlp_train.unpack(params, spec), spec.layer_shapes()):
        Wt = flat_t[:, at:at + din * dout].reshape(2, dout, din)  # R,Dout,Din
        assert np.array_equal(Wt, W.swapaxes(-1, -2))
        at += din * dout
        assert np.array_equal(flat_t[:, at:at + dout], b[:, 0])
        at += dout


def test_arguments_are_checked(modules):
    spec = _spec(CONFIGS["toy"])
    mod, params = modules[spec], _params(spec, 2, np.random.default_rng(0))
    with pytest.raises(TypeError, match="float32"):
        _mlp_train_cupy.forward(mod, np.zeros((2, 5, 3)), params, spec)
    with pytest.raises(ValueError, match="shape"):
        _mlp_train_cupy.forward(mod, np.zeros((2, 5, 4), np.float32), params, spec)
    with pytest.raises(ValueError, match="shape"):
        _mlp_train_cupy.forward(mod, np.zeros((3, 5, 3), np.float32), params, spec)
    assert _mlp_train_cupy.supported(MLPSpec(activation="silu")) is not None
    assert _mlp_train_cupy.supported(MLPSpec(hidden=48)) is not None  # not a multiple of 32
    assert _mlp_train_cupy.supported(MLPSpec(hidden=128)) is not None
    assert _mlp_train_cupy.supported(MLPSpec(hidden=32, embedding="fourier", num_freqs=16)) \
        is not None  # 34 inputs > 32
    assert _mlp_train_cupy.supported(spec) is None
    # the toy: W and b of one layer, two tiles of 64 rows of 128 + 4 floats, 4 bytes each
    assert _mlp_train_cupy.shared_bytes(spec) == 4 * (64 * 64 + 64 + 2 * 64 * 132) == 84_224


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", ["toy", "narrow-fourier"])
def test_nvcc_compiles_the_kernels(arch, name):
    try:
        ptx = cuda_emu.nvcc_ptx(_mlp_train_cupy.source(_spec(CONFIGS[name])), arch)
    except RuntimeError as e:  # pragma: no cover - a real failure shows nvcc's message
        pytest.fail(str(e))
    if ptx is None:
        pytest.skip("nvcc not installed")
    assert ".entry mlp_train_forward" in ptx and ".entry mlp_train_backward" in ptx


# ------------------------------------------------------------------------------------------------
# The wiring: MLPDenoiser.forward / backward and train(), the emulated kernels standing in for
# CuPy's
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def emulated_gpu(monkeypatch, modules):
    """MLPDenoiser takes its fused training path on NumPy float32 weights, with emulated kernels."""
    monkeypatch.setattr(mlp_train, "is_cupy", lambda a: True)
    monkeypatch.setattr(ops, "FUSE_MLP_TRAIN", True)  # opt-in
    monkeypatch.setattr(mlp_train, "gpu_ready", lambda spec: _mlp_train_cupy.supported(spec) is None)
    monkeypatch.setattr(_mlp_train_cupy, "module", lambda spec: modules[spec])


def _layers(net):
    """The plain MLPDenoiser with net's weights (a copy)."""
    plain = MLPDenoiser(net.cfg, np.random.default_rng(0), ensemble=mlp_fused.linears(net)[0].ensemble)
    plain.load_state_dict(net.state_dict())
    return plain


def _random_net(cfg, rng, ensemble):
    net = FusedMLPDenoiser(cfg, rng, ensemble=ensemble)
    for m in net.modules():
        if isinstance(m, Linear):
            W = m.params["W"]
            W[...] = rng.standard_normal(W.shape) * 1.5 / np.sqrt(W.shape[-2])
            m.params["b"][...] = rng.standard_normal(m.params["b"].shape) * 0.5
    return net


def _forward_backward(net, x, c, dy, fused, monkeypatch):
    net = net.copy() if fused else _layers(net)
    net.zero_grad()
    for m in mlp_fused.linears(net):  # start from non-zero grads: backward must add into them
        m.grads["W"][...] = 0.25
        m.grads["b"][...] = -0.5
    y = net.forward(x, c)
    dx, dc = net.backward(dy)
    return y, dx, dc, [{k: g.copy() for k, g in m.grads.items()} for m in mlp_fused.linears(net)], net


@pytest.mark.parametrize("name", ["toy", "narrow-fourier"])
@pytest.mark.parametrize("ensemble", [3, None])
def test_denoiser_fused_matches_its_layers(emulated_gpu, monkeypatch, name, ensemble):
    cfg, rng = CONFIGS[name], np.random.default_rng(7)
    net = _random_net(cfg, rng, ensemble)
    lead = (3, 150) if ensemble else (2, 75)  # one model: any leading shape, 150 points in all
    x = rng.standard_normal(lead + (2,)).astype(np.float32)
    c = (rng.random(lead) * 3).astype(np.float32)  # a level per point, as training draws them
    dy = rng.standard_normal(lead + (2,)).astype(np.float32)
    fused = _forward_backward(net, x, c, dy, True, monkeypatch)
    assert fused[4]._fused is not None  # it did take the fused path
    layers = _forward_backward(net, x, c, dy, False, monkeypatch)
    assert isinstance(layers[4], MLPDenoiser) and not isinstance(layers[4], FusedMLPDenoiser)
    for what, a, b in zip(("y", "dx", "dc"), fused[:3], layers[:3]):
        assert a.shape == b.shape
        _close(what, a, b)
    for i, (ga, gb) in enumerate(zip(fused[3], layers[3])):
        for k in ga:
            _close(f"layer {i} grad {k}", ga[k] - (0.25 if k == "W" else -0.5),
                   gb[k] - (0.25 if k == "W" else -0.5))


def test_denoiser_keeps_its_layers_where_the_kernels_do_not_apply(emulated_gpu):
    rng = np.random.default_rng(0)
    silu = FusedMLPDenoiser(MLPConfig(activation="silu"), rng, ensemble=2)
    silu.forward(np.zeros((2, 4, 2), np.float32), 0.5)
    assert silu._fused is None  # the fused backward knows the ReLU only
    f64 = FusedMLPDenoiser(MLPConfig(), rng, ensemble=2, dtype=np.float64)
    f64.forward(np.zeros((2, 4, 2)), 0.5)
    assert f64._fused is None  # float32 only


@pytest.mark.parametrize("ensemble", [3, None])
def test_training_fused_matches_training_layer_by_layer(emulated_gpu, monkeypatch, ensemble):
    """Twelve Adam steps from the same seed both ways: the losses and weights stay within a
    float32-rounding-sized drift (Adam normalises each step, so rounding differences in a
    gradient entry near zero can move its weight by up to lr; the module docstring has the
    measured drift and the bounds)."""
    cfg, form = CONFIGS["toy"], DDPM(T=40)
    data = np.random.default_rng(2).standard_normal(((ensemble,) if ensemble else ()) + (300, 2))
    data = data.astype(np.float32)
    if not ensemble:
        form = DDPM(T=40, member_ndim=0)
    runs = {}
    for fused in (True, False):
        net = (FusedMLPDenoiser if fused else MLPDenoiser)(cfg, np.random.default_rng(5), ensemble=ensemble)
        res = train(net, form, data, TrainConfig(epochs=4, batch_size=128), 11)
        runs[fused] = (res.history, [m.params["W"].copy() for m in mlp_fused.linears(net)])
    assert_close("loss history", runs[True][0], runs[False][0], rtol=1e-6, atol=0.0)
    for i, (a, b) in enumerate(zip(runs[True][1], runs[False][1])):
        assert_close(f"W_{i}", a, b, rtol=0.0, atol=1e-4 * float(np.abs(b).max()))
    assert not np.array_equal(runs[True][1][1], runs[False][1][1])  # two paths were taken
