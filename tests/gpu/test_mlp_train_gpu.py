"""kernels/mlp_train.py on a real GPU: the fused training kernels (forward and backward, one
launch each) against the float64 reference and against MLPDenoiser's layers on CuPy arrays, and
training runs both ways. Skipped where CuPy or a GPU is missing; tests/test_kernels_mlp_train.py
runs the same kernel source on the CPU through the emulator and derives the tolerances (1e-5 of
each array's max|.|; twelve Adam steps: 1e-6 relative in the loss history, 1e-4 of max|W|).

    PYTHONPATH=. python -m pytest -q tests/gpu/test_mlp_train_gpu.py

# R members, N points per member, DIN network inputs, D data dimension
"""
import numpy as np
import pytest

from minisims import backend, ops
from minisims.gradcheck import assert_close

pytestmark = pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a GPU")

TOL = 1e-5  # times each array's max|reference|


def _close(name, mine, ref, tol=TOL):
    mine, ref = backend.to_numpy(mine).astype(np.float64), backend.to_numpy(ref)
    assert_close(name, mine, ref, rtol=0.0, atol=tol * max(float(np.abs(ref).max()), 1e-30))


def _params(spec, R, rng):
    rows = []
    for din, dout in spec.layer_shapes():
        rows += [rng.standard_normal((R, din * dout)) * 1.5 / np.sqrt(din),
                 rng.standard_normal((R, dout)) * 0.5]
    return np.concatenate(rows, axis=1).astype(np.float32)  # R,P


@pytest.mark.parametrize("spec_kw", [{}, dict(hidden=32, depth=2, embedding="fourier", num_freqs=3)])
@pytest.mark.parametrize("R,N", [(1, 37), (3, 300), (64, 2000)])
def test_kernels_match_the_reference(gpu, spec_kw, R, N):
    from minisims.kernels import mlp_train
    from minisims.kernels.mlp_eval import MLPSpec
    cp, rng, spec = gpu, np.random.default_rng(R + N), MLPSpec(**spec_kw)
    params = _params(spec, R, rng)
    h_in = (rng.standard_normal((R, N, spec.dim + spec.emb_dim)) * 2).astype(np.float32)
    dy = rng.standard_normal((R, N, spec.dim)).astype(np.float32)
    y, saved = mlp_train.forward(cp.asarray(h_in), cp.asarray(params), spec)
    assert isinstance(saved, cp.ndarray)  # the "cupy" version ran
    y_ref, acts = mlp_train.forward_reference(h_in.astype(np.float64), params.astype(np.float64),
                                              spec)
    _close("y", y, y_ref)
    for i, (h, h_ref) in enumerate(zip(mlp_train.saved_activations(saved, N), acts)):
        _close(f"h_{i}", h, h_ref)
    grads, dh_in = mlp_train.backward(cp.asarray(dy), cp.asarray(h_in), saved, cp.asarray(params),
                                      spec)
    g_ref, dh_ref = mlp_train.backward_reference(dy.astype(np.float64), h_in.astype(np.float64),
                                                 acts, params.astype(np.float64), spec)
    _close("dh_in", dh_in, dh_ref)
    for i, ((W, b), (W0, b0)) in enumerate(zip(mlp_train.unpack(grads, spec),
                                               mlp_train.unpack(g_ref, spec))):
        _close(f"dW_{i}", W, W0)
        _close(f"db_{i}", b, b0)
    again, _ = mlp_train.backward(cp.asarray(dy), cp.asarray(h_in), saved, cp.asarray(params), spec)
    assert again.tobytes() == grads.tobytes()  # deterministic: no atomics


@pytest.mark.parametrize("ensemble", [6, None])
def test_training_fused_matches_training_layer_by_layer(gpu, monkeypatch, ensemble):
    from minisims.diffusion import DDPM
    from minisims.nn.mlp import MLPConfig, MLPDenoiser
    from minisims.nn.mlp_fused import FusedMLPDenoiser, linears
    from minisims.train import TrainConfig, train
    cp = gpu
    form = DDPM(T=40) if ensemble else DDPM(T=40, member_ndim=0)
    data = np.random.default_rng(2).standard_normal(((ensemble,) if ensemble else ()) + (300, 2))
    data = cp.asarray(data.astype(np.float32))
    runs = {}
    for fused in (True, False):
        monkeypatch.setattr(ops, "FUSE_MLP_TRAIN", True)  # opt-in
        cls = FusedMLPDenoiser if fused else MLPDenoiser
        net = cls(MLPConfig(), np.random.default_rng(5), ensemble=ensemble)
        res = train(net, form, data, TrainConfig(epochs=4, batch_size=128), 11)
        assert (getattr(net, "_fused", None) is not None) == fused  # the path asked for was taken
        runs[fused] = (res.history, [backend.to_numpy(m.params["W"]) for m in linears(net)])
    assert_close("loss history", runs[True][0], runs[False][0], rtol=1e-6, atol=0.0)
    for i, (a, b) in enumerate(zip(runs[True][1], runs[False][1])):
        assert_close(f"W_{i}", a, b, rtol=0.0, atol=1e-4 * float(np.abs(b).max()))


def test_fused_training_step_does_not_synchronise(gpu, no_sync, monkeypatch):
    monkeypatch.setattr(ops, "FUSE_MLP_TRAIN", True)  # opt-in
    from minisims.nn.mlp import MLPConfig
    from minisims.nn.mlp_fused import FusedMLPDenoiser
    cp, rng = gpu, np.random.default_rng(0)
    net = FusedMLPDenoiser(MLPConfig(), rng, ensemble=4)
    x = cp.asarray(rng.standard_normal((4, 500, 2)).astype(np.float32))
    c = cp.asarray(rng.random((4, 500)).astype(np.float32))
    dy = cp.ones((4, 500, 2), dtype=np.float32)
    net.forward(x, c)  # compiles the module, reads the device's shared memory limit once
    net.backward(dy)
    with no_sync():
        net.forward(x, c)
        net.backward(dy)
