"""The one training loop and Algorithm 1's steps on both kinds of model: the toy MLP ensemble
(R,n,D) and the UNet on images (N,C,H,W)."""
from dataclasses import replace

import numpy as np
import pytest

from minisims.checkpoint import load_checkpoint
from minisims.data.toy import sample_gaussian
from minisims.diffusion import EDM, EDMPrecond
from minisims.nn.mlp import MLPConfig, MLPDenoiser
from minisims.nn.unet import UNet, UNetConfig
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
    from minisims import ops
    seen = []
    real = ops.adam_ema  # every optimiser step, fused or not, is one call of it
    monkeypatch.setattr(ops, "adam_ema", lambda entries, lr, *a: seen.append(lr) or real(entries, lr, *a))
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


class Interrupt(Exception):
    pass


def _image_run(tmp_path, stop_after=None, resume=False, **cfg):
    """A tiny UNet trained with keyed streams (seed 7), optionally interrupted after a step."""
    data = np.random.default_rng(0).standard_normal((10, 3, 8, 8)).astype(np.float32) * 0.5
    form = EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=3)
    calls = []

    class Counting:  # the formulation, raising after `stop_after` steps
        name, member_ndim = form.name, form.member_ndim

        def loss_and_grad(self, net, y, rng):
            if stop_after is not None and len(calls) == stop_after:
                raise Interrupt
            calls.append(1)
            return form.loss_and_grad(net, y, rng)

    net = UNet(replace(TINY_UNET, dropout=0.2), np.random.default_rng(1))  # dropout on in training
    settings = TrainConfig(**{**dict(lr=1e-3, batch_size=4, images=36, hflip=True, warmup_images=8,
                                     ema_half_life_images=8.0, checkpoint_every_images=8), **cfg})
    res = train(net, Counting(), data, settings, 7, checkpoint=str(tmp_path / "run.npz"), resume=resume)
    return net, res


def test_an_interrupted_run_resumes_bit_for_bit(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    whole_net, whole = _image_run(tmp_path / "a")
    # epochs of 4+4+2 images: 36 images take 11 steps; checkpoints every 8 images land after
    # steps 2 (8 seen), 5 (18), 7 (24), ... Interrupting in step 7 leaves the one after step 5:
    # mid-way through epoch 2, with its partial loss sum
    with pytest.raises(Interrupt):
        _image_run(tmp_path / "b", stop_after=6)
    meta = load_checkpoint(str(tmp_path / "b" / "run.npz"),
                           UNet(replace(TINY_UNET, dropout=0.2), np.random.default_rng(2)))
    assert meta["steps"] == 5 and meta["state"]["epoch"] == 1 and meta["state"]["batch"] == 2
    net, res = _image_run(tmp_path / "b", resume=True)
    assert res.steps == whole.steps == 11 and res.images == whole.images == 38
    assert np.array_equal(res.history, whole.history)
    for k, v in whole_net.state_dict().items():
        assert np.array_equal(v, net.state_dict()[k]), k
    for k, v in whole.ema.state_dict().items():
        assert np.array_equal(v, res.ema.state_dict()[k]), k


def test_resume_needs_a_seed_and_a_path():
    rng = np.random.default_rng(0)
    net = MLPDenoiser(MLPConfig(hidden=4, depth=1), rng, ensemble=1)
    with pytest.raises(ValueError, match="integer seed"):
        train(net, SIMSConfig().make_formulation(), sample_gaussian(4, rng, runs=1),
              TrainConfig(epochs=1), rng, checkpoint="x.npz", resume=True)


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    from minisims.train import TrainingDiverged
    data = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    data[5] = np.nan  # the second batch of the second epoch... wherever the shuffle puts it
    form = EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=3)
    net = UNet(TINY_UNET, np.random.default_rng(1))
    path = tmp_path / "run.npz"
    with pytest.raises(TrainingDiverged, match=r"NaN or inf at step \d+") as err:
        train(net, form, data, TrainConfig(batch_size=1, images=8, checkpoint_every_images=1), 3,
              checkpoint=str(path))
    step = int(str(err.value).split("at step ")[1].split(":")[0])
    meta = load_checkpoint(str(path), UNet(TINY_UNET, np.random.default_rng(2)))
    assert meta["steps"] == step - 1  # the last checkpoint is the one before the bad step
    assert all(np.isfinite(np.load(path)[k]).all() for k in np.load(path).files if k != "__meta__")


def test_an_image_depends_on_its_seed_alone_not_on_the_batch():
    """EDM's seeds: image i is drawn with its own generator, so the batch size and the other
    seeds in the batch change nothing (the network treats the images of a batch independently;
    BLAS may still order a sum differently for another batch size: we found it bit-exact here,
    and allow float32 rounding, 1e-6 of the pixel range, should a BLAS build differ)."""
    rng = np.random.default_rng(0)
    r = image_recipe(epochs=1)
    net = r.make_model(None, rng)
    seeds = [5, 17, 2, 40, 3]
    x4 = sample_sims(net, None, replace(r, sample_batch=4), 0.0, 5, seeds)  # batches 4 + 1
    x1 = sample_sims(net, None, replace(r, sample_batch=1), 0.0, 5, seeds)
    x_alone = sample_sims(net, None, replace(r, sample_batch=2), 0.0, 2, [40, 2])  # other company
    assert np.allclose(x4, x1, rtol=0, atol=2e-6) and np.allclose(x4[[3, 2]], x_alone, rtol=0, atol=2e-6)
    other = sample_sims(net, None, r, 0.0, 5, [6, 17, 2, 40, 3])
    assert not np.allclose(other[0], x4[0]) and np.allclose(other[1:], x4[1:], rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="5 samples need 5 seeds"):
        sample_sims(net, None, r, 0.0, 5, [1, 2])
    print("batch-size independence, max |diff|:", np.abs(x4 - x1).max())


def test_parse_seeds():
    from minisims.streams import parse_seeds
    assert parse_seeds("0-3,10") == [0, 1, 2, 3, 10] and parse_seeds("7") == [7]
    for bad in ("", "a", "3-1", "1,,2", "-1", "1,1", "0-2,2"):
        with pytest.raises(ValueError, match="bad seeds"):
            parse_seeds(bad)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the diverged run's NaNs
def test_a_diverged_run_of_an_ensemble_is_reported_and_the_others_train_on():
    from minisims.sims import diverged_epoch
    rng = np.random.default_rng(0)
    data = sample_gaussian(40, rng, runs=3)  # R,n,D
    data[1, 7] = np.inf  # run 1 sees an inf from its first epoch on
    net = MLPDenoiser(MLPConfig(hidden=8, depth=1), rng, ensemble=3)
    res = train(net, SIMSConfig().make_formulation(), data, TrainConfig(batch_size=64, epochs=4), rng)
    assert res.diverged.tolist() == [0, 1, 0]
    assert np.isfinite(res.history[:, [0, 2]]).all() and not np.isfinite(res.history[:, 1]).any()
    assert diverged_epoch(res.history).tolist() == [0, 1, 0]
    W = net.net.layers[0].params["W"]  # R,Din,Dout
    assert np.isfinite(W[[0, 2]]).all() and not np.isfinite(W[1]).all()
