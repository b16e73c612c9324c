"""The UNet: whole-network gradient check (float64), EDM plumbing, the frozen encoder and the
shared encoder pass of paper Appendix A."""
import numpy as np
import pytest

from minisims import backend, ops
from minisims.diffusion import EDM, EDMPrecond
from minisims.gradcheck import assert_close, numerical_grad
from minisims.guidance import GuidanceInterval
from minisims.nn.blocks import ResBlock
from minisims.nn.unet import UNet, UNetConfig
from minisims.shared_encoder import SharedEncoderPair
from minisims.train import Adam

F64 = np.float64


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Tiny shapes: one BLAS thread is fastest, a second only spins on a busy machine."""
    with backend.blas_threads(1):
        yield
TINY = dict(img_resolution=8, channels=4, channel_mult=(1, 2), blocks_per_level=1,
            attn_resolutions=(4,), num_freqs=2, emb_mult=2)


def randomize(net, rng, scale=0.3):
    for _, mod, k in net.named_parameters():
        p = mod.params[k]
        p[...] = rng.standard_normal(p.shape) * scale + (1.0 if k == "gamma" else 0.0)


@pytest.mark.parametrize("cfg", [UNetConfig(**TINY, dropout=0.2),
                                 UNetConfig(**TINY, dropout=0.0, resample_conv=False)])
def test_unet_gradients(rng, cfg):
    """Every parameter tensor (2 entries each: the layers' own tests check every entry), a
    sample of the image's entries and the noise levels, against centred differences. The loss
    sums 384 terms of order 1-10, so its rounding noise over 2 eps is ~1e-16 * 1e2 / 1e-6 = 1e-8:
    the gradcheck defaults rtol 1e-5, atol 1e-7 sit above it; wrong terms are of order 1e-2+."""
    net = UNet(cfg, rng, dtype=F64)
    randomize(net, rng)
    drops = net.set_dropout(seed=5)  # one generator per layer
    assert len(drops) == 2 + 2 + 2 * 2  # one per ResBlock: encoder 2, mid 2, decoder 2 levels x 2
    x, c = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal(2)

    def forward():
        return net.forward(x, c)

    dF = rng.standard_normal((2, 3, 8, 8))
    forward()
    if cfg.dropout:
        for d in drops:  # keep the masks just drawn: every forward below reuses them
            d.mask = d.scaled_mask > 0
    net.zero_grad()
    dx, dc = net.backward(dF)

    def loss():
        return float((forward() * dF).sum())

    def check(name, grad, value, k):
        """Compare k entries spread over the tensor; ``value`` is perturbed through a view."""
        step = max(1, value.size // k)
        view = value.reshape(-1)[step // 2::step][:k]  # a view: perturbing it perturbs the array
        assert_close(name, grad.reshape(-1)[step // 2::step][:k], numerical_grad(loss, view),
                     rtol=1e-5, atol=1e-7)

    check("dx", dx, x, 24)
    check("dc_noise", dc, c, 2)
    names = []
    for name, mod, k in net.named_parameters():
        check(name, mod.grads[k], mod.params[k], 2)
        names.append(name)
    assert len(names) > 50 and any("decoder.mid0.attn" in n for n in names)


def test_unet_32x32_shapes(rng):
    cfg = UNetConfig(channels=16, dropout=0.0)  # the default architecture, narrower
    net = UNet(cfg, rng)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    F = net.forward(x, 0.3)
    assert F.shape == (2, 3, 32, 32) and F.dtype == np.float32
    assert [s.shape[2] for s in net.encoder.forward(x, np.zeros(2, np.float32)).skips] == \
        [32, 32, 32, 16, 16, 16, 8, 8, 8]
    dx, dc = net.backward(rng.standard_normal(F.shape).astype(np.float32))
    assert dx.shape == x.shape and dx.dtype == np.float32 and dc.shape == (2,)


@pytest.mark.parametrize("impl, inside", [("direct", 1), ("numba", 2)])
def test_blas_on_one_thread_while_the_convolutions_run_their_own(rng, monkeypatch, impl, inside):
    """minisims.ops.network_threads, the scope the image command runs its networks in."""
    # "direct" uses the cores through its own threads: the UNet's other BLAS calls (attention,
    # Linear) run on one thread meanwhile (an OpenBLAS worker left spinning after a threaded call
    # took a core from them); "numba" works through BLAS's threads, which stay as they were
    from minisims.kernels import conv2d as K
    from minisims.nn.attention import SelfAttention2d
    monkeypatch.setattr(K, "AUTO_CPU", impl)
    seen, forward = [], SelfAttention2d.forward
    monkeypatch.setattr(SelfAttention2d, "forward",
                        lambda self, x: (seen.append(backend.blas_thread_count()), forward(self, x))[1])
    net = UNet(UNetConfig(**TINY, dropout=0.0), rng)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    with backend.blas_threads(2):
        if backend.blas_thread_count() != 2:
            pytest.skip("BLAS runs one thread here")
        with ops.network_threads(x):  # as the image command runs its networks
            net.forward(x, 0.3)
        assert backend.blas_thread_count() == 2  # restored after the pass
        n = len(seen)
        net.forward(x, 0.3)  # outside the scope: BLAS's own threads
    assert n and seen[:n] == [inside] * n and seen[n:] == [2] * n, seen


def test_scalar_noise_level_broadcasts(rng):
    net = UNet(UNetConfig(**TINY, dropout=0.0), rng, dtype=F64)
    randomize(net, rng)
    x = rng.standard_normal((3, 3, 8, 8))
    assert_close("scalar c", net.forward(x, 0.7), net.forward(x, np.full(3, 0.7)), rtol=0, atol=0)


def test_dropout_only_with_a_generator(rng):
    net = UNet(UNetConfig(**TINY, dropout=0.5), rng, dtype=F64)
    randomize(net, rng)
    x = rng.standard_normal((2, 3, 8, 8))
    y0, y1 = net.forward(x, 0.1), net.forward(x, 0.1)
    assert np.array_equal(y0, y1)  # no generator: deterministic, as sampling needs
    net.set_dropout(np.random.default_rng(1))
    assert not np.allclose(net.forward(x, 0.1), y0)
    net.set_dropout(None)
    assert np.array_equal(net.forward(x, 0.1), y0)


def test_dropouts_walk_finds_every_block_in_forward_order(rng):
    net = UNet(UNetConfig(**TINY, dropout=0.1), rng)
    blocks = [s for s in net.encoder.stages + net.decoder.mid + net.decoder.stages
              if isinstance(s, ResBlock)]
    assert [id(d) for d in net.dropouts()] == [id(b.dropout) for b in blocks]


def _masks_after_forward(net, x):
    net.forward(x, 0.3)
    return [d.scaled_mask > 0 for d in net.dropouts()]


def test_shared_dropout_generator_draws_in_forward_order(rng):
    """``set_dropout(rng)``, as always: one generator, one mask per layer in forward order."""
    net = UNet(UNetConfig(**TINY, dropout=0.3), rng)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    net.set_dropout(np.random.default_rng(6))
    masks = _masks_after_forward(net, x)
    ref = np.random.default_rng(6)
    for d, m in zip(net.dropouts(), masks):
        assert np.array_equal(m, d.draw_mask(ref, m.shape, np.float32))


def test_per_layer_dropout_generators(rng):
    """``set_dropout(seed=s)``: layer i draws from child i of SeedSequence(s).spawn(n), so its
    mask does not depend on the other layers; ``rngs=`` gives the same generators directly."""
    from minisims.nn.dropout import spawn_rngs
    net = UNet(UNetConfig(**TINY, dropout=0.3), rng)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    n = len(net.set_dropout(seed=8))
    masks = _masks_after_forward(net, x)
    for d, m, g in zip(net.dropouts(), masks, spawn_rngs(8, n)):
        assert np.array_equal(m, d.draw_mask(g, m.shape, np.float32))
    net.set_dropout(rngs=spawn_rngs(8, n))
    assert all(np.array_equal(a, b) for a, b in zip(_masks_after_forward(net, x), masks))
    net.set_dropout(None)
    assert all(d.rng is None and d.mask is None for d in net.dropouts())


@pytest.mark.parametrize("cfg,count,digest", [
    (UNetConfig(**TINY), 128, "68159621b62dae4b"),
    (UNetConfig(**TINY, resample_conv=False), 124, "525f30153f60b0bf"),
    (UNetConfig(channels=8), 244, "876cc2630becba14"),
])
def test_unet_parameter_names_are_pinned(rng, cfg, count, digest):
    """sha256 of the names, in order, as the code produced them before parameter-free layers
    (activations, Dropout, the embedding, nearest up-sampling) became children: checkpoints
    written then keep loading."""
    import hashlib
    names = [n for n, _, _ in UNet(cfg, rng).named_parameters()]
    assert len(names) == count and names[:2] == ["encoder.map0.W", "encoder.map0.b"]
    assert hashlib.sha256("\n".join(names).encode()).hexdigest()[:16] == digest


def edm_images():
    return EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=3, num_steps=4)


def test_edm_gradient_points_downhill(rng):
    """The EDM loss (member_ndim 0, data_ndim 3) drives the UNet: Adam on one fixed draw of
    (images, sigma, noise) lowers that draw's loss by a third within 20 steps (measured: 1.05 to
    0.51)."""
    net = UNet(UNetConfig(**TINY, dropout=0.0), rng)
    edm = edm_images()
    y = (rng.random((4, 3, 8, 8)) > 0.5).astype(np.float32) - 0.5  # binary images, std 0.5
    opt = Adam(net, lr=1e-2)
    losses = []
    for _ in range(20):
        net.zero_grad()
        losses.append(float(edm.loss_and_grad(net, y, np.random.default_rng(0))))
        opt.step()
    assert losses[-1] < 0.67 * losses[0], losses


def test_frozen_encoder_trains_only_the_decoder(rng):
    base = UNet(UNetConfig(**TINY, dropout=0.0), rng)
    aux = base.copy()
    aux.train_encoder = False
    y = rng.standard_normal((4, 3, 8, 8)).astype(np.float32) * 0.5
    opt = Adam(aux, lr=1e-2)
    for _ in range(3):
        aux.zero_grad()
        edm_images().loss_and_grad(aux, y, rng)
        opt.step()
    assert aux.backward(np.ones((4, 3, 8, 8), np.float32)) == (None, None)  # no gradient reaches x, c
    for (name, mb, k), (_, ma, _) in zip(base.named_parameters(), aux.named_parameters()):
        same = np.array_equal(mb.params[k], ma.params[k])
        assert same == name.startswith("encoder."), name  # encoder bit-identical, decoder moved


def tuned_pair(rng, freeze=True):
    base = UNet(UNetConfig(**TINY, dropout=0.0), rng, dtype=F64)
    randomize(base, rng)
    aux = base.copy()
    aux.train_encoder = not freeze
    for name, mod, k in aux.named_parameters():  # a stand-in for fine-tuning
        if name.startswith("decoder.") or not freeze:
            mod.params[k] += 0.1 * rng.standard_normal(mod.params[k].shape)
    return base, aux


@pytest.mark.parametrize("interval", [None, GuidanceInterval(first_step=1, last_step=2)])
def test_shared_encoder_equals_two_separate_models(rng, interval):
    base, aux = tuned_pair(rng)
    edm = edm_images()
    pair = SharedEncoderPair(edm, base, aux)
    shape = (2, 3, 8, 8)
    ref = edm.sample(base, shape, np.random.default_rng(3), aux=aux, w=1.5, interval=interval)
    out = pair.sample(shape, np.random.default_rng(3), w=1.5, interval=interval)
    # the same operations on the same numbers: equal up to BLAS summation order (none here)
    assert_close("shared vs separate", out, ref, rtol=1e-12, atol=1e-12)
    guided_evals = 2 * 4 - 1 if interval is None else 4  # Heun, N=4: 7 evaluations, steps 1-2: 4
    n_eval = 2 * 4 - 1
    assert pair.decoder_passes == n_eval + guided_evals
    assert pair.encoder_passes == n_eval  # one encoder pass per evaluation point, shared
    if interval is None:
        assert pair.decoder_passes + pair.encoder_passes == 3 * n_eval  # 1.5x of 2 half-networks


def test_shared_encoder_w0_is_the_base_model(rng):
    base, aux = tuned_pair(rng)
    edm = edm_images()
    ref = edm.sample(base, (2, 3, 8, 8), np.random.default_rng(4))
    out = SharedEncoderPair(edm, base, aux).sample((2, 3, 8, 8), np.random.default_rng(4), w=0.0)
    assert_close("w = 0", out, ref, rtol=1e-12, atol=1e-12)


def test_shared_encoder_refuses_a_tuned_encoder(rng):
    base, aux = tuned_pair(rng, freeze=False)
    with pytest.raises(ValueError, match="encoder parameter"):
        SharedEncoderPair(edm_images(), base, aux)
