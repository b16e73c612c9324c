"""The one training loop and Algorithm 1's steps on both kinds of model: the toy MLP ensemble
(R,n,D) and the UNet on images (N,C,H,W)."""
import numpy as np
import pytest

from minisims.checkpoint import load_checkpoint
from minisims.data import sample_gaussian
from minisims.diffusion import EDM, EDMPrecond
from minisims.nn import MLPConfig, MLPDenoiser, UNet, UNetConfig
from minisims.sims import SIMSConfig, SIMSRecipe, fit_sims, sample_sims
from minisims.train import TrainConfig, train

TINY_UNET = UNetConfig(img_resolution=8, channels=8, channel_mult=(1, 2), blocks_per_level=1,
                       attn_resolutions=(), dropout=0.0, num_freqs=4)


def image_recipe(aux_trainable="all", ema=None, **aux):
    form = EDM(precond=EDMPrecond(0.5), num_steps=3, member_ndim=0, data_ndim=3)
    return SIMSRecipe(make_model=lambda data, rng: UNet(TINY_UNET, rng), formulation=form,
                      base=TrainConfig(lr=1e-3, batch_size=4, images=16, ema_half_life_images=ema),
                      aux=TrainConfig(lr=1e-3, batch_size=4, trainable=aux_trainable, **aux),
                      n_synth=6, sample_batch=4)


def test_schedule_counts_epochs_or_images():
    assert TrainConfig(batch_size=4, epochs=2).schedule(10) == [[4, 4, 2], [4, 4, 2]]
    # images: stop at the first step boundary that reaches the budget
    assert TrainConfig(batch_size=4, images=13).schedule(10) == [[4, 4, 2], [4]]
    assert TrainConfig(batch_size=4, images=10, epochs=5).schedule(10) == [[4, 4, 2]]  # images wins
    assert TrainConfig(batch_size=4, epochs=0).schedule(10) == []
    for bad in (dict(), dict(epochs=-1), dict(epochs=1, lr=0), dict(epochs=1, trainable="encoder")):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_toy_ensemble_loss_history_and_budget():
    rng = np.random.default_rng(0)
    data = sample_gaussian(50, rng, runs=3)  # R,n,D
    net = MLPDenoiser(MLPConfig(hidden=8, depth=1), rng, ensemble=3)
    res = train(net, SIMSConfig().make_formulation(), data, TrainConfig(batch_size=16, images=120), rng)
    # epochs of [16, 16, 16, 2]: 50, 100, then 116 and 132 >= 120 ends the third epoch early
    assert res.history.shape == (3, 3) and res.steps == 10 and res.images == 132
    assert np.isfinite(res.history).all() and res.ema is None


def test_warmup_ramps_the_learning_rate(monkeypatch):
    from minisims import train as train_module
    seen = []
    real_step = train_module.Adam.step
    monkeypatch.setattr(train_module.Adam, "step", lambda self: seen.append(self.lr) or real_step(self))
    rng = np.random.default_rng(1)
    net = MLPDenoiser(MLPConfig(hidden=8, depth=1), rng, ensemble=1)
    train(net, SIMSConfig().make_formulation(), sample_gaussian(8, rng, runs=1),
          TrainConfig(lr=0.1, batch_size=4, images=24, warmup_images=16), rng)
    assert np.allclose(seen, [0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_decoder_only_needs_an_encoder():
    rng = np.random.default_rng(2)
    net = MLPDenoiser(MLPConfig(hidden=8, depth=1), rng, ensemble=1)
    with pytest.raises(ValueError, match="encoder and a decoder"):
        train(net, SIMSConfig().make_formulation(), sample_gaussian(8, rng, runs=1),
              TrainConfig(epochs=1, trainable="decoder"), rng)


@pytest.mark.parametrize("trainable", ["all", "decoder"])
def test_algorithm1_on_images_with_the_same_steps(trainable):
    """Steps 1-4 on a tiny UNet: the aux is a fine-tuned copy (decoder only when asked), and
    guidance at w = 0 / -1 gives the base / aux samples exactly."""
    rng = np.random.default_rng(3)
    data = rng.standard_normal((10, 3, 8, 8)).astype(np.float32) * 0.5  # N,C,H,W
    r = image_recipe(trainable, images=8)
    fit = fit_sims(data, r, rng)
    assert fit.base_loss.shape == (2,) and fit.aux_loss.shape == (2,)  # 16 images over 10; 8 over 6
    base_w, aux_w = fit.base.state_dict(), fit.aux.state_dict()
    changed = {k for k in base_w if not np.array_equal(base_w[k], aux_w[k])}
    enc = {k for k in base_w if k.startswith("encoder.")}
    assert changed and (changed.isdisjoint(enc) if trainable == "decoder" else changed & enc)
    x = {w: sample_sims(fit.base, fit.aux, r, w, 5, np.random.default_rng(4)) for w in (0.0, -1.0, 1.0)}
    assert x[0.0].shape == (5, 3, 8, 8) and x[0.0].dtype == np.float32  # two sampler batches: 4 + 1
    base_only = sample_sims(fit.base, fit.base, r, 0.0, 5, np.random.default_rng(4))
    aux_only = sample_sims(fit.aux, fit.aux, r, 0.0, 5, np.random.default_rng(4))
    assert np.array_equal(x[0.0], base_only) and np.array_equal(x[-1.0], aux_only)
    assert not np.array_equal(x[1.0], x[0.0])


def test_ema_model_is_the_base_and_checkpoints_are_complete(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
    r = image_recipe(ema=8.0, epochs=1)
    net = r.make_model(data, rng)
    path = str(tmp_path / "base.npz")
    res = train(net, r.formulation, data, TrainConfig(batch_size=4, images=16, ema_half_life_images=8.0,
                                                     checkpoint_every_images=8), rng,
                checkpoint=path, meta={"what": "test"})
    assert res.ema is not None and res.steps == 4
    differs = [k for k, v in net.state_dict().items() if not np.array_equal(v, res.ema.state_dict()[k])]
    assert differs  # the EMA lags the raw weights
    fresh = UNet(TINY_UNET, np.random.default_rng(9))
    meta = load_checkpoint(path, fresh)
    assert meta["what"] == "test" and meta["images_seen"] == 16 and meta["steps"] == 4
    assert all(np.array_equal(v, fresh.state_dict()[k]) for k, v in net.state_dict().items())
    load_checkpoint(path, fresh, group="ema")
    assert all(np.array_equal(v, fresh.state_dict()[k]) for k, v in res.ema.state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == ["base.npz"]  # no temporary files left behind
