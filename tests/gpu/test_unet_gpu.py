"""The UNet, Adam and the EDM sampler on CuPy arrays, checked against NumPy on a real GPU.

Skipped where CuPy or a GPU is missing. Run: python -m pytest -q tests/gpu/test_unet_gpu.py
(about 10-30 s on an H100, most of it CuPy compiling its kernels on first use).

Tolerances:
- float64: the same arithmetic as NumPy up to summation order inside cuBLAS/OpenBLAS and the
  reductions, ~1e-15 relative per operation; through ~40 layers rtol 1e-9 (atol 1e-11 times the
  array's scale) leaves a wide margin and still catches any wrong term.
- float32 on the GPU against the float64 NumPy reference: rounding ~6e-8 per operation grows
  through the depth of the network; we allow 2e-3 of the array's largest magnitude (a wrong term
  is off by its own size, i.e. 10%+).
"""

import numpy as np
import pytest

from minisims import backend
from minisims.diffusion import EDM, EDMPrecond
from minisims.gradcheck import assert_close
from minisims.nn.unet import UNet, UNetConfig
from minisims.shared_encoder import SharedEncoderPair
from minisims.train import Adam

pytestmark = pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a GPU")

CFG = dict(img_resolution=16, channels=8, channel_mult=(1, 2), blocks_per_level=1,
           attn_resolutions=(8,), num_freqs=4, emb_mult=2, dropout=0.0)


def make_pair(dtype, cupy):
    """The same network on the CPU (float64 reference) and on the GPU (``dtype``)."""
    rng = np.random.default_rng(0)
    backend.use_device("cpu")
    ref = UNet(UNetConfig(**CFG), rng, dtype=np.float64)
    for _, mod, k in ref.named_parameters():  # non-trivial weights (the near-zero inits hide terms)
        p = mod.params[k]
        p[...] = rng.standard_normal(p.shape) * 0.3 + (k == "gamma")
    backend.use_device("gpu")
    net = UNet(UNetConfig(**CFG), rng, dtype=dtype)
    net.load_state_dict({k: cupy.asarray(v) for k, v in ref.state_dict().items()})
    return ref, net


def close(name, mine, ref, dtype):
    mine, ref = backend.to_numpy(mine), backend.to_numpy(ref)
    scale = float(np.abs(ref).max())
    if dtype == np.float64:
        assert_close(name, mine, ref, rtol=1e-9, atol=1e-11 * scale)
    else:
        assert_close(name, mine, ref, rtol=0, atol=2e-3 * scale)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_backward_match_numpy(gpu, dtype):
    ref, net = make_pair(dtype, gpu)
    rng = np.random.default_rng(1)
    x, c, dF = rng.standard_normal((3, 3, 16, 16)), rng.standard_normal(3), rng.standard_normal((3, 3, 16, 16))
    F_ref = ref.forward(x, c)
    ref.zero_grad()
    dx_ref, dc_ref = ref.backward(dF)
    F = net.forward(gpu.asarray(x, dtype), gpu.asarray(c, dtype))
    assert isinstance(F, gpu.ndarray) and F.dtype == dtype
    net.zero_grad()
    dx, dc = net.backward(gpu.asarray(dF, dtype))
    close("F", F, F_ref, dtype)
    close("dx", dx, dx_ref, dtype)
    close("dc_noise", dc, dc_ref, dtype)
    for (name, m_ref, k), (_, m, _) in zip(ref.named_parameters(), net.named_parameters()):
        assert isinstance(m.grads[k], gpu.ndarray)
        close("grad " + name, m.grads[k], m_ref.grads[k], dtype)


class HostNoise:
    """numpy's draws moved to the caller's array module: CPU and GPU runs see the same noise
    (a host -> device copy per draw: for comparisons only, never in the hot loop)."""

    def __init__(self, seed, xp):
        self.g, self.xp = np.random.default_rng(seed), xp

    def standard_normal(self, shape, dtype=np.float64):
        return self.xp.asarray(self.g.standard_normal(shape), dtype=dtype)


def test_training_steps_match_numpy_and_stay_on_the_device(gpu, no_sync):
    """EDM loss + backward + Adam: three steps with the same noise give the same parameters as
    NumPy (float64); then five steps with CuPy's generator run without one host synchronisation."""
    ref, net = make_pair(np.float64, gpu)
    edm = EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=3)
    y_host = np.random.default_rng(2).uniform(-0.5, 0.5, (4, 3, 16, 16))
    y = gpu.asarray(y_host)
    runs = ((ref, Adam(ref, lr=1e-3), y_host, HostNoise(4, np)),
            (net, Adam(net, lr=1e-3), y, HostNoise(4, gpu)))
    for model, opt, yy, noise in runs:
        for _ in range(3):
            model.zero_grad()
            edm.loss_and_grad(model, yy, noise)
            opt.step()
    for (name, m_ref, k), (_, m, _) in zip(ref.named_parameters(), net.named_parameters()):
        close(name, m.params[k], m_ref.params[k], np.float64)

    opt, rng = runs[1][1], backend.default_rng(3)
    with no_sync():  # the hot loop: nothing comes back to the host
        for _ in range(5):
            net.zero_grad()
            loss = edm.loss_and_grad(net, y, rng)
            opt.step()
    assert isinstance(loss, gpu.ndarray) and np.isfinite(float(loss))


class FixedNoise:
    """A generator whose only draw is a given array (already on the right device): the
    deterministic Heun sampler draws x_0 and nothing else, so CPU and GPU runs start alike."""

    def __init__(self, z):
        self.z = z

    def standard_normal(self, shape, dtype=np.float64):
        assert tuple(shape) == self.z.shape and dtype == self.z.dtype
        return self.z


def test_edm_sampler_on_cupy_matches_numpy(gpu, no_sync):
    """Guided Heun sampling (eq. 5 through minisims.guidance), separate and shared-encoder, on
    CuPy with no host synchronisation; equal to NumPy's from the same x_0 (float64)."""
    ref, net = make_pair(np.float64, gpu)
    edm = EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=3, num_steps=6)
    z = np.random.default_rng(6).standard_normal((2, 3, 16, 16))
    aux_ref = ref.copy()
    for _, mod, k in aux_ref.decoder.named_parameters():  # a stand-in for decoder fine-tuning
        mod.params[k] += 0.05 * np.random.default_rng(7).standard_normal(mod.params[k].shape)
    aux = net.copy()
    aux.train_encoder = False  # a decoder-only aux, as SharedEncoderPair requires
    aux.load_state_dict({k: gpu.asarray(v) for k, v in aux_ref.state_dict().items()})
    pair = SharedEncoderPair(edm, net, aux)  # compares the encoders once, on the host
    z_dev = gpu.asarray(z)
    with no_sync():
        x = edm.sample(net, z.shape, FixedNoise(z_dev), aux=aux, w=1.0)
        x_shared = pair.sample(z.shape, FixedNoise(z_dev), w=1.0)
    assert isinstance(x, gpu.ndarray) and x.dtype == np.float64
    backend.use_device("cpu")
    x_ref = edm.sample(ref, z.shape, FixedNoise(z), aux=aux_ref, w=1.0)
    close("guided sample", x, x_ref, np.float64)
    close("shared-encoder sample", x_shared, x_ref, np.float64)


def test_float32_training_runs_with_dropout(gpu, no_sync):
    """The float32 path as training uses it: dropout masks from CuPy's generator, a few steps."""
    backend.use_device("gpu")
    net = UNet(UNetConfig(**{**CFG, "dropout": 0.1}), np.random.default_rng(8))
    rng = backend.default_rng(9)
    net.set_dropout(rng)
    edm = EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=3)
    y = gpu.asarray(np.random.default_rng(10).uniform(-0.5, 0.5, (8, 3, 16, 16)).astype(np.float32))
    opt = Adam(net, lr=1e-3)
    with no_sync():
        losses = []
        for _ in range(5):
            net.zero_grad()
            losses.append(edm.loss_and_grad(net, y, rng))
            opt.step()
    losses = [float(v) for v in losses]
    assert all(np.isfinite(losses)), losses
