"""The fused kernels on a real GPU (CuPy RawModules): GroupNorm + SiLU (and GroupNorm alone, the
SiLU switched off, as attention runs it) against the float64 NumPy reference, Adam + EMA bit for
bit NumPy's float32 arithmetic, and a UNet training step (attention included) fused vs unfused on
CuPy. Skipped where CuPy or a GPU is missing (tests/test_kernels_fused.py runs the same CUDA C
sources in the CPU emulator).

    PYTHONPATH=. python -m pytest -q tests/gpu/test_fused_gpu.py

# N batch, C channels, G groups, H W spatial

Tolerances: GroupNorm+SiLU sums M values in float32 in another order than NumPy's float64, and
the GPU's expf is within 2 ulp: rtol 1e-4 / atol 2e-5 per value, atol 1e-4 for the sums over
N*H*W (dgamma, dbeta) and H*W (dbias), as in the emulated tests (the larger shape: atol scaled by
sqrt(M / 600)). Adam + EMA: compiled with --fmad=false, the bytes equal NumPy's.
"""
import numpy as np
import pytest

cupy = pytest.importorskip("cupy")
try:
    cupy.zeros(1).sum()
except Exception:  # CuPy without a usable GPU
    pytest.skip("needs a GPU", allow_module_level=True)

from minisims.kernels import _adam_ema_cupy, _groupnorm_silu_cupy  # noqa: E402
from minisims.kernels.groupnorm_silu import (groupnorm_silu_backward_reference,  # noqa: E402
                                    groupnorm_silu_forward_reference)

GN_CASES = [(1, 4, 4, 3, 5), (2, 6, 2, 7, 9), (2, 8, 1, 4, 8), (1, 4, 2, 20, 15),
            (8, 64, 16, 32, 32)]  # N, C, G, H, W; the last one a UNet level-0 norm at batch 8


def _close(name, mine, ref, rtol, atol):
    from minisims.gradcheck import assert_close
    assert_close(name, cupy.asnumpy(mine), ref, rtol, atol)


@pytest.mark.parametrize("case", GN_CASES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("silu", [True, False])
def test_groupnorm_silu_kernels_match_reference(case, bias, silu):
    N, C, G, H, W = case
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((N, C, H, W)) * 2 + 1).astype(np.float32)
    gamma = (rng.standard_normal(C) * 0.5 + 1).astype(np.float32)
    beta = (rng.standard_normal(C) * 0.5).astype(np.float32)
    b = rng.standard_normal((N, C)).astype(np.float32) if bias else None
    dy = rng.standard_normal((N, C, H, W)).astype(np.float32)
    f64 = [None if a is None else a.astype(np.float64) for a in (x, gamma, beta, b, dy)]
    y_r, mean_r, rstd_r = groupnorm_silu_forward_reference(*f64[:3], G, 1e-5, f64[3], silu)
    grads_r = groupnorm_silu_backward_reference(f64[4], *f64[:3], mean_r, rstd_r, f64[3], silu)
    X, Ga, Be, B, DY = (None if a is None else cupy.asarray(a) for a in (x, gamma, beta, b, dy))
    mod = _groupnorm_silu_cupy.module()
    y, mean, rstd = _groupnorm_silu_cupy.forward(mod, X, Ga, Be, G, 1e-5, B, silu)
    grads = _groupnorm_silu_cupy.backward(mod, DY, X, Ga, Be, mean, rstd, B, silu)
    scale = max(1.0, np.sqrt(C // G * H * W / 600))
    _close("y", y, y_r, 1e-4, 2e-5)
    _close("rstd", rstd, rstd_r, 1e-4, 2e-5)
    _close("dx", grads[0], grads_r[0], 1e-4, 2e-5 * scale)
    for name, mine, ref in zip(["dgamma", "dbeta", "dbias"], grads[1:], grads_r[1:]):
        if ref is None:
            assert mine is None
        else:
            _close(name, mine, ref, 1e-4, 1e-4 * scale * np.sqrt(N))


def test_adam_ema_kernel_is_numpy_float32_bit_for_bit():
    rng = np.random.default_rng(0)
    shapes = [(3,), (5000,), (2, 3, 4), (1,), (64, 64, 3, 3)]
    host = []
    for i, s in enumerate(shapes):
        p, g = (rng.standard_normal(s).astype(np.float32) for _ in range(2))
        m, v = (rng.standard_normal(s) * 0.1).astype(np.float32), (rng.random(s) * 0.01).astype(np.float32)
        e = (p + 0.01 * rng.standard_normal(s)).astype(np.float32)
        host.append([p, None if i == 2 else g, None if i == 2 else m, None if i == 2 else v,
                     None if i == 3 else e])
    dev = [[None if a is None else cupy.asarray(a) for a in entry] for entry in host]
    lr, (b1, b2), eps, beta = 1e-2, (0.9, 0.999), 1e-8, 0.9
    for t in (1, 2, 3):
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        for p, g, m, v, e in host:  # Adam.step then EMA.update, NumPy float32
            if m is not None:
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * g * g
                p -= lr * (m / c1) / (np.sqrt(v / c2) + eps)
            if e is not None:
                e *= beta
                e += (1 - beta) * p
        scalars = tuple(np.float32(s) for s in (lr, b1, 1 - b1, b2, 1 - b2, c1, c2, eps, beta, 1 - beta))
        _adam_ema_cupy.adam_ema(_adam_ema_cupy.module(), _adam_ema_cupy.cached_table(dev), scalars)
    for i, (he, de) in enumerate(zip(host, dev)):
        for a, b in zip(he, de):
            if a is not None:
                assert cupy.asnumpy(b).tobytes() == a.tobytes(), i


def test_attention_norm_fused_on_gpu_by_default():
    """On float32 CuPy arrays SelfAttention2d's GroupNorm takes the fused kernels without being
    asked (FUSE_GROUP_NORM None), and agrees with minisims.ops' own code within float32
    reordering."""
    from minisims import backend, ops
    from minisims.nn.attention import SelfAttention2d
    backend.use_device("gpu")
    try:
        attn = SelfAttention2d(64, 16, np.random.default_rng(0))
        x = cupy.asarray(np.random.default_rng(1).standard_normal((8, 64, 16, 16)).astype(np.float32))
        dy = cupy.asarray(np.random.default_rng(2).standard_normal(x.shape).astype(np.float32))
        out = {}
        for fused in (None, False):
            ops.FUSE_GROUP_NORM = fused
            attn.zero_grad()
            y = attn.forward(x)
            dx, = attn.backward(dy)
            out[fused] = [cupy.asnumpy(a) for a in (y, dx, attn.norm.grads["gamma"],
                                                    attn.norm.grads["beta"])]
            assert (attn.norm.cache[0] == "fused") == (fused is None)
        # float32 sums of M = 4*256 values in another order: rtol 1e-4, atol 1e-4 (x, dy ~ 1;
        # dgamma, dbeta sum over N*H*W = 2048 values: atol 1e-3)
        for name, a, b, atol in zip(["y", "dx", "dgamma", "dbeta"], out[None], out[False],
                                    [1e-4, 1e-4, 1e-3, 1e-3]):
            _close(name, a, b, 1e-4, atol)
    finally:
        ops.FUSE_GROUP_NORM = None
        backend.use_device("cpu")


def test_unet_training_step_fused_vs_unfused_on_gpu():
    """Three EDM steps of a small UNet on CuPy, fused (both kernels) and unfused: the losses agree
    to float32 reordering; the weights within atol 1e-3 (Adam turns gradient entries at the noise
    level into steps of up to lr = 1e-2 times their relative difference; see
    tests/test_kernels_fused.py)."""
    from minisims import backend, ops
    from minisims.diffusion import EDM, EDMPrecond
    from minisims.nn.unet import UNet, UNetConfig
    from minisims.train import Adam, EMA
    backend.use_device("gpu")
    try:
        out = {}
        for fused in (True, False):
            net = UNet(UNetConfig(img_resolution=16, channels=16, channel_mult=(1, 2),
                                  blocks_per_level=1, attn_resolutions=(8,), dropout=0.0),
                       np.random.default_rng(0))
            ops.FUSE_GROUP_NORM = fused  # GroupNorm+SiLU as the kernels, or ops' own code
            opt, ema = Adam(net, lr=1e-2), EMA(net, beta=0.9)
            y = cupy.asarray(np.random.default_rng(2).uniform(-1, 1, (4, 3, 16, 16)).astype(np.float32))
            edm = EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=3)
            losses = []
            for step in range(3):
                net.zero_grad()
                losses.append(float(edm.loss_and_grad(net, y, cupy.random.default_rng(step))))
                fuse_from = ops.FUSE_ADAM_FROM["gpu"]
                ops.FUSE_ADAM_FROM["gpu"] = 0 if fused else np.inf  # the kernel, or ops' own code
                try:
                    opt.step(ema)
                finally:
                    ops.FUSE_ADAM_FROM["gpu"] = fuse_from
            out[fused] = losses, [cupy.asnumpy(m.params[k]) for model in (net, ema.shadow)
                                  for _, m, k in model.named_parameters()]
        np.testing.assert_allclose(out[True][0], out[False][0], rtol=1e-4)
        for a, b in zip(out[True][1], out[False][1]):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-3)
    finally:
        ops.FUSE_GROUP_NORM = None
        backend.use_device("cpu")
