"""The image pipeline on CuPy: training steps and the seeded sampler loop with no host round
trip, and the tiny preset end to end. Skipped where CuPy or a GPU is missing.

Run: python -m pytest -q tests/gpu/test_images_gpu.py
"""
import json

import numpy as np
import pytest

from minisims import backend, train as train_module
from minisims.diffusion import EDM, EDMPrecond
from minisims.nn.unet import UNet, UNetConfig
from minisims.sims import SIMSRecipe, synthesize
from minisims.train import TrainConfig, train

pytestmark = pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a GPU")

CFG = UNetConfig(img_resolution=8, channels=8, channel_mult=(1, 2), blocks_per_level=1,
                 attn_resolutions=(4,), dropout=0.1, num_freqs=4, emb_mult=2)


def test_training_steps_stay_on_the_device(gpu, monkeypatch, no_sync):
    """A whole run (flips, dropout, EMA, warm-up, keyed streams) with the loop's only host syncs
    (the NaN check and the loss history, at the end) stubbed out: no step synchronises."""
    monkeypatch.setattr(train_module, "_check_finite", lambda *args: None)
    monkeypatch.setattr(train_module, "_host", lambda history, lead: np.zeros((len(history),) + lead))
    net = UNet(CFG, np.random.default_rng(0))
    data = gpu.asarray(np.random.default_rng(1).uniform(-1, 1, (12, 3, 8, 8)).astype(np.float32))
    form = EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=3)
    cfg = TrainConfig(batch_size=4, images=24, hflip=True, warmup_images=8, ema_half_life_images=8.0)
    with no_sync():
        res = train(net, form, data, cfg, 5)
    assert res.steps == 6 and isinstance(res.ema.state_dict()["decoder.conv_out.W"], gpu.ndarray)
    assert all(bool(gpu.isfinite(v).all()) for v in net.state_dict().values())


def test_seeded_sampling_stays_on_the_device_and_depends_on_the_seed_alone(gpu, no_sync):
    net = UNet(CFG, np.random.default_rng(0))
    form = EDM(precond=EDMPrecond(0.5), num_steps=4, member_ndim=0, data_ndim=3)
    recipe = SIMSRecipe(make_model=None, formulation=form, base=TrainConfig(epochs=1),
                        aux=TrainConfig(epochs=1), sample_batch=3)
    with no_sync():
        x = synthesize(net, recipe, 5, [4, 8, 15, 16, 23])  # batches of 3 + 2
    assert isinstance(x, gpu.ndarray) and x.shape == (5, 3, 8, 8)
    alone = synthesize(net, recipe, 1, [16])
    # float32 on the GPU: another batch shape may change cuBLAS's summation order (1e-5 of range)
    assert np.allclose(backend.to_numpy(x[3:4]), backend.to_numpy(alone), rtol=0, atol=1e-5)


def test_tiny_preset_end_to_end_on_the_gpu(gpu, tmp_path):
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent.parent))
    from cifar_like import make_cifar_like
    from minisims.images.pipeline import run_sims
    from minisims.images.presets import PRESETS
    archive = make_cifar_like(str(tmp_path / "data")).archive
    res = run_sims(PRESETS["tiny"], str(archive), str(tmp_path / "out"), md5=None, progress=False,
                   log=lambda *a: None)
    assert res["device"] == "gpu" and np.isfinite(res["base_fd"])
    assert json.loads((tmp_path / "out" / "results.json").read_text())["label"].startswith("FD_")
