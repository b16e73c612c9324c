"""Gradient checks of every toy layer and the whole MLP, float64, centred differences.

Each check uses a random upstream gradient and random parameters; R = None (one model) and
R = 3 (an ensemble) both run, and an ensemble member's gradient must equal that member trained alone.
"""
import numpy as np
import pytest

from minisims.gradcheck import assert_close, check_gradients
from minisims.nn.layers import Linear, Module, NoiseEmbedding, ReLU, Sequential, SiLU
from minisims.nn.mlp import MLPConfig, MLPDenoiser
from minisims.train import Adam, EMA

F64 = np.float64


@pytest.mark.parametrize("ensemble", [None, 3])
def test_linear_gradients(rng, ensemble):
    layer = Linear(4, 3, rng, ensemble=ensemble, dtype=F64)
    x = rng.standard_normal((3, 5, 4) if ensemble else (5, 4))
    check_gradients(layer, [x], rng, rtol=1e-6, atol=1e-8)  # exact up to eps^2 and rounding


def test_linear_without_ensemble_folds_leading_axes(rng):
    layer = Linear(4, 3, rng, dtype=F64)
    x = rng.standard_normal((2, 5, 4))  # two leading axes, one model
    check_gradients(layer, [x], rng, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("act", [ReLU, SiLU])
def test_activation_gradients(rng, act):
    x = rng.standard_normal((2, 6, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep ReLU away from its kink, where differences are meaningless
    check_gradients(act(), [x], rng, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["raw", "fourier"])
def test_embedding_gradients(rng, kind):
    emb = NoiseEmbedding(kind, num_freqs=3, max_freq=4.0, dtype=F64)
    c = rng.standard_normal((2, 5))
    check_gradients(emb, [c], rng, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("ensemble", [None, 3])
@pytest.mark.parametrize("cfg", [MLPConfig(hidden=6, depth=2),
                                 MLPConfig(hidden=5, depth=1, activation="silu", embedding="fourier", num_freqs=2)])
def test_mlp_gradients(rng, ensemble, cfg):
    net = MLPDenoiser(cfg, rng, ensemble=ensemble, dtype=F64)
    lead = (3, 4) if ensemble else (4,)
    x = rng.standard_normal(lead + (2,))
    c = rng.standard_normal(lead)
    check_gradients(net, [x, c], rng, wrt_inputs=(0, 1), rtol=1e-5, atol=1e-7)


def test_ensemble_member_equals_model_alone(rng):
    """Member r of an ensemble computes (and trains) exactly like a single model with its weights."""
    ens = MLPDenoiser(MLPConfig(hidden=8, depth=2), rng, ensemble=3, dtype=F64)
    one = MLPDenoiser(MLPConfig(hidden=8, depth=2), rng, dtype=F64)
    r = 1
    one.load_state_dict({k: v[r] for k, v in ens.state_dict().items()})
    x, c = rng.standard_normal((3, 7, 2)), rng.standard_normal((3, 7))
    dy = rng.standard_normal((3, 7, 2))
    y_ens, y_one = ens.forward(x, c), one.forward(x[r], c[r])
    assert_close("forward", y_ens[r], y_one, rtol=1e-12, atol=1e-12)
    ens.zero_grad(); one.zero_grad()
    ens.backward(dy); one.backward(dy[r])
    for (name, m, k), (_, m1, k1) in zip(ens.named_parameters(), one.named_parameters()):
        assert_close(name, m.grads[k][r], m1.grads[k1], rtol=1e-12, atol=1e-12)


def test_backward_accumulates_and_zero_grad_resets(rng):
    layer = Linear(3, 2, rng, dtype=F64)
    x, dy = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer.forward(x); layer.backward(dy)
    g1 = layer.grads["W"].copy()
    layer.forward(x); layer.backward(dy)
    assert_close("accumulated", layer.grads["W"], 2 * g1, rtol=1e-12, atol=0)
    layer.zero_grad()
    assert not layer.grads["W"].any()


def test_adam_matches_closed_form_first_step(rng):
    """After one step every entry moves by lr * g / (|g| + eps'), i.e. about lr * sign(g)."""
    layer = Linear(3, 2, rng, dtype=F64)
    W0 = layer.params["W"].copy()
    g = rng.standard_normal(W0.shape)
    layer.grads["W"][...] = g
    Adam(layer, lr=0.1, eps=1e-8).step()
    expected = W0 - 0.1 * g / (np.abs(g) + 1e-8)
    assert_close("W after one Adam step", layer.params["W"], expected, rtol=1e-10, atol=1e-12)


def test_adam_minimises_a_quadratic(rng):
    layer = Linear(2, 1, rng, dtype=F64)
    opt = Adam(layer, lr=0.05)
    target = np.array([[1.5], [-0.5]])
    for _ in range(400):
        layer.zero_grad()
        layer.grads["W"][...] = 2 * (layer.params["W"] - target)
        opt.step()
    assert_close("W", layer.params["W"], target, rtol=0, atol=1e-2)


def test_ema_half_life(rng):
    layer = Linear(2, 2, rng, dtype=F64)
    ema = EMA(layer, half_life_steps=10)
    start = ema.shadow.params["W"].copy()
    layer.params["W"][...] = start + 1.0
    for _ in range(10):
        ema.update()
    # after one half-life the shadow has covered half the distance to the new weights
    assert_close("EMA after one half-life", ema.shadow.params["W"], start + 0.5, rtol=0, atol=1e-12)


def test_sequential_reverses(rng):
    seq = Sequential(Linear(3, 4, rng, dtype=F64), SiLU(), Linear(4, 2, rng, dtype=F64))
    check_gradients(seq, [rng.standard_normal((5, 3))], rng, rtol=1e-6, atol=1e-8)


def test_state_dict_roundtrip_and_mismatch(rng):
    a = MLPDenoiser(MLPConfig(hidden=4, depth=1), rng, ensemble=2)
    b = MLPDenoiser(MLPConfig(hidden=4, depth=1), rng, ensemble=2)
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        assert np.array_equal(v, b.state_dict()[k])
    c = MLPDenoiser(MLPConfig(hidden=5, depth=1), rng, ensemble=2)
    with pytest.raises(ValueError, match="shape"):
        c.load_state_dict(a.state_dict())


# ------------------------------------------------------------------------------------------------
# The module convention: backward returns one gradient per forward argument; children list every
# sub-module; parameter names never change (checkpoints keep loading)
# ------------------------------------------------------------------------------------------------

def test_every_backward_returns_one_gradient_per_argument(rng):
    """Single-input layers return a 1-tuple, the MLP a pair (dx, dc)."""
    x = rng.standard_normal((2, 5, 3))
    for layer in (Linear(3, 4, rng, dtype=F64), ReLU(), SiLU(),
                  Sequential(Linear(3, 4, rng, dtype=F64), ReLU())):
        y = layer.forward(x)
        out = layer.backward(rng.standard_normal(y.shape))
        assert isinstance(out, tuple) and len(out) == 1 and out[0].shape == x.shape, type(layer)
    emb = NoiseEmbedding("fourier", num_freqs=2, dtype=F64)
    c = rng.standard_normal((2, 5))
    out = emb.backward(rng.standard_normal(emb.forward(c).shape))
    assert isinstance(out, tuple) and len(out) == 1 and out[0].shape == c.shape
    net = MLPDenoiser(MLPConfig(hidden=4, depth=1), rng, dtype=F64)
    out = net.backward(rng.standard_normal(net.forward(x[..., :2], c).shape))
    assert isinstance(out, tuple) and [g.shape for g in out] == [(2, 5, 2), (2, 5)]


def test_gradcheck_refuses_a_bare_array(rng):
    """The checker enforces the rule, so every layer it checks follows it."""
    class Bare(Linear):
        def backward(self, dy):
            return super().backward(dy)[0]
    with pytest.raises(AssertionError, match="one gradient per input"):
        check_gradients(Bare(2, 2, rng, dtype=F64), [rng.standard_normal((3, 2))], rng)


def test_children_hold_every_sub_module(rng):
    """Every attribute that is a Module (or a list of them) is a child, so ``modules()`` finds
    parameter-free layers (activations, the embedding) too."""
    net = MLPDenoiser(MLPConfig(hidden=4, depth=2, embedding="fourier"), rng, dtype=F64)
    for mod in net.modules():
        kids = [id(c) for c in mod.children.values()]
        for name, v in vars(mod).items():
            for m in (v if isinstance(v, list) else [v]):
                if isinstance(m, Module):
                    assert id(m) in kids, f"{type(mod).__name__}.{name} is not a child"
    kinds = [type(m).__name__ for m in net.modules()]
    assert kinds == ["MLPDenoiser", "NoiseEmbedding", "Sequential", "Linear", "Linear", "ReLU",
                     "Linear", "ReLU", "Linear"]


@pytest.mark.parametrize("cfg,names", [
    (MLPConfig(hidden=6, depth=2),
     ["net.0.W", "net.0.b", "net.1.W", "net.1.b", "net.3.W", "net.3.b", "net.5.W", "net.5.b"]),
    (MLPConfig(hidden=5, depth=1, activation="silu", embedding="fourier", num_freqs=2),
     ["net.0.W", "net.0.b", "net.1.W", "net.1.b", "net.3.W", "net.3.b"]),
])
def test_mlp_parameter_names_are_pinned(rng, cfg, names):
    """The names (and order) the code produced before parameter-free children were listed:
    checkpoints written then must keep loading."""
    net = MLPDenoiser(cfg, rng, ensemble=2)
    assert [n for n, _, _ in net.named_parameters()] == names
    assert list(net.state_dict()) == names
