"""The seam (minisims.ops): each operation's own code is correct (its backward against finite
differences in float64, its forward against kernels/' reference), and turning the fast paths off
changes no result beyond float rounding, from one operation up to a UNet's training step."""
import os
import subprocess
import sys

import numpy as np
import pytest

from minisims import ops
from minisims.gradcheck import assert_close, check_gradients
from minisims.nn.attention import SelfAttention2d
from minisims.nn.conv import Conv2d
from minisims.nn.unet import UNet, UNetConfig

F64 = np.float64


@pytest.fixture(params=[True, False], ids=["fast", "reference"])
def fast(request, monkeypatch):
    monkeypatch.setattr(ops, "FAST", request.param)
    return request.param


def _randomize(module, rng):
    for _, mod, k in module.named_parameters():
        p = mod.params[k]
        p[...] = rng.standard_normal(p.shape) * 0.5


@pytest.mark.parametrize("k,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (3, 2, 0)])
def test_conv2d_gradients_either_way(rng, fast, k, stride, padding):
    conv = Conv2d(3, 4, k, rng, stride=stride, padding=padding, dtype=F64)
    _randomize(conv, rng)
    check_gradients(conv, [rng.standard_normal((2, 3, 7, 6))], rng, rtol=1e-6, atol=1e-8)


def test_attention_gradients_either_way(rng, fast):
    attn = SelfAttention2d(4, 2, rng, dtype=F64)
    _randomize(attn, rng)
    check_gradients(attn, [rng.standard_normal((2, 4, 3, 3))], rng, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("k,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0)])
def test_the_reference_convolution_is_the_kernels_reference(rng, monkeypatch, k, stride, padding):
    """ops' own code and kernels/conv2d.py's reference: the same sums, tap by tap."""
    from minisims.kernels import conv2d as K
    monkeypatch.setattr(ops, "FAST", False)
    x, W, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, k, k)), rng.standard_normal(4)
    y = ops.conv2d(x, W, b, stride, padding)
    assert np.array_equal(y, K.conv2d_forward_reference(x, W, b, stride, padding))
    dy = rng.standard_normal(y.shape)
    assert np.array_equal(ops.conv2d_backward_input(dy, W, x.shape, stride, padding),
                          K.conv2d_backward_input_reference(dy, W, x.shape, stride, padding))
    for mine, ref in zip(ops.conv2d_backward_weight(dy, x, W.shape, stride, padding),
                         K.conv2d_backward_weight_reference(dy, x, W.shape, stride, padding)):
        assert np.array_equal(mine, ref)


def test_every_operation_fast_or_not_within_float64_rounding(rng, monkeypatch):
    x, W, b = rng.standard_normal((3, 4, 8, 8)), rng.standard_normal((5, 4, 3, 3)), rng.standard_normal(5)
    dy = rng.standard_normal((3, 5, 4, 4))
    a, c = rng.standard_normal((3, 6, 5)), rng.standard_normal((3, 5, 7))
    S, dA = rng.standard_normal((3, 6, 6)), rng.standard_normal((3, 6, 6))
    out = {}
    for fast in (True, False):
        monkeypatch.setattr(ops, "FAST", fast)
        A = ops.softmax(S.copy(), 0.5)
        out[fast] = [ops.conv2d(x, W, b, 2, 1), ops.conv2d_backward_input(dy, W, x.shape, 2, 1),
                     *ops.conv2d_backward_weight(dy, x, W.shape, 2, 1), ops.bmm(a, c), A,
                     ops.softmax_backward(A, dA, 0.5)]
    names = ["conv2d", "dx", "dW", "db", "bmm", "softmax", "softmax_backward"]
    for name, f, r in zip(names, out[True], out[False]):
        assert_close(name, f, r, 1e-12, 1e-12)  # the same sums in another order


def test_a_unet_training_step_fast_or_not_within_float32_rounding(rng, monkeypatch):
    cfg = UNetConfig(img_resolution=8, channels=8, channel_mult=(1, 2), blocks_per_level=1,
                     attn_resolutions=(4,), dropout=0.0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)  # N,C,H,W
    noise = rng.standard_normal(2).astype(np.float32)  # N
    dy = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    out = {}
    for fast in (True, False):
        monkeypatch.setattr(ops, "FAST", fast)
        net = UNet(cfg, np.random.default_rng(7))
        _randomize(net, np.random.default_rng(8))
        net.zero_grad()
        y = net.forward(x, noise)
        dx = net.backward(dy)[0]
        out[fast] = (y, dx, {n: m.grads[k].copy() for n, m, k in net.named_parameters()})
    (y, dx, g), (y_ref, dx_ref, g_ref) = out[True], out[False]
    assert_close("y", y, y_ref, 1e-4, 1e-5)  # float32 sums in another order
    assert_close("dx", dx, dx_ref, 1e-3, 1e-4)
    for name in g_ref:
        assert_close(name, g[name], g_ref[name], 1e-3, 1e-4)


def test_the_environment_variable_turns_the_fast_paths_off():
    code = "from minisims import ops; print(ops.FAST)"
    for value, expected in (("0", "False"), ("1", "True")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "MINISIMS_FAST": value},
                             timeout=60, check=True).stdout.strip()
        assert out == expected, (value, out)
