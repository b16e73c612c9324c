"""Gradient checks of the image layers, float64, centred differences (minisims.gradcheck).

Every check draws a random upstream gradient dy (L = sum(y * dy)) and random non-trivial
parameters; shapes are tiny so each check runs in milliseconds. Tolerances: centred differences
with eps 1e-6 are exact up to O(eps^2) ~ 1e-12 relative plus rounding ~ 1e-16 / 1e-6 = 1e-10, so
rtol 1e-6 / atol 1e-8 leave a wide margin while any wrong term (errors of order 1) fails.
"""
import numpy as np
import pytest

from minisims import backend
from minisims.gradcheck import assert_close, check_gradients
from minisims.nn.attention import SelfAttention2d
from minisims.nn.blocks import Downsample, ResBlock, Upsample
from minisims.nn.conv import Conv2d
from minisims.nn.dropout import Dropout
from minisims.nn.layers import Module
from minisims.nn.norm import GroupNorm, num_groups_for
from minisims.nn.resample import AvgPool2x, Upsample2x

F64 = np.float64
RTOL, ATOL = 1e-6, 1e-8


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Tiny shapes: one BLAS thread is fastest, a second only spins on a busy machine."""
    with backend.blas_threads(1):
        yield


def randomize(module: Module, rng, scale=0.5):
    """Non-trivial parameters: near-zero inits (conv1, proj) and gamma = 1 / beta = 0 would hide
    wrong terms in a gradient check."""
    for _, mod, k in module.named_parameters():
        p = mod.params[k]
        p[...] = rng.standard_normal(p.shape) * scale + (1.0 if k == "gamma" else 0.0)


@pytest.mark.parametrize("k,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0), (3, 1, 0)])
def test_conv2d_gradients(rng, k, stride, padding):
    conv = Conv2d(3, 4, k, rng, stride=stride, padding=padding, dtype=F64)
    randomize(conv, rng)
    x = rng.standard_normal((2, 3, 6, 5))
    check_gradients(conv, [x], rng, rtol=RTOL, atol=ATOL)


def test_conv2d_matches_kernel_reference(rng):
    """The layer is the kernel: its output equals the NumPy reference convolution."""
    from minisims.kernels.conv2d import conv2d_forward_reference
    conv = Conv2d(3, 5, 3, rng, stride=2, dtype=F64)
    x = rng.standard_normal((2, 3, 7, 7))
    ref = conv2d_forward_reference(x, conv.params["W"], conv.params["b"], 2, 1)
    assert_close("conv", conv.forward(x), ref, rtol=1e-12, atol=1e-12)  # same sums, reordered


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_groupnorm_gradients(rng, groups):
    gn = GroupNorm(4, groups, dtype=F64)
    randomize(gn, rng)
    x = rng.standard_normal((2, 4, 3, 5)) * 2 + 1  # mean and scale far from the normalised ones
    check_gradients(gn, [x], rng, rtol=RTOL, atol=ATOL)


def test_groupnorm_normalises_each_group(rng):
    gn = GroupNorm(6, 3, dtype=F64)
    x = rng.standard_normal((2, 6, 4, 4)) * 3 + 2
    y = gn.forward(x).reshape(2, 3, -1)  # gamma = 1, beta = 0: y is xhat
    assert_close("mean", y.mean(-1), np.zeros((2, 3)), rtol=0, atol=1e-12)
    assert_close("var", y.var(-1), np.full((2, 3), 1.0), rtol=1e-5, atol=0)  # eps 1e-5 / var 9


def test_num_groups_rule():
    assert [num_groups_for(c) for c in (3, 4, 8, 64, 128, 256, 12)] == [1, 1, 2, 16, 32, 32, 3]


@pytest.mark.parametrize("layer", [Upsample2x, AvgPool2x])
def test_resample_gradients(rng, layer):
    check_gradients(layer(), [rng.standard_normal((2, 3, 4, 6))], rng, rtol=RTOL, atol=ATOL)


def test_resample_values(rng):
    x = rng.standard_normal((1, 2, 2, 2))
    up = Upsample2x().forward(x)
    assert up.shape == (1, 2, 4, 4) and np.array_equal(up[:, :, 2:, :2], np.broadcast_to(x[:, :, 1:, :1], (1, 2, 2, 2)))
    assert_close("avg(up(x)) = x", AvgPool2x().forward(up), x, rtol=0, atol=1e-15)


@pytest.mark.parametrize("conv", [True, False])
def test_down_up_blocks_gradients(rng, conv):
    for block, shape in ((Downsample(3, rng, conv, F64), (2, 3, 6, 6)), (Upsample(3, rng, conv, F64), (2, 3, 3, 2))):
        randomize(block, rng)
        check_gradients(block, [rng.standard_normal(shape)], rng, rtol=RTOL, atol=ATOL)


def test_dropout_gradients_with_a_given_mask(rng):
    drop = Dropout(0.4)
    x = rng.standard_normal((3, 4, 5))
    drop.mask = rng.random(x.shape) < 0.6  # given: every forward (the differences too) uses it
    check_gradients(drop, [x], rng, rtol=RTOL, atol=ATOL)
    assert 0 < (drop.scaled_mask == 0).mean() < 1  # the mask did drop some values and keep others
    assert_close("kept values scaled", drop.forward(x)[drop.mask], x[drop.mask] / 0.6, rtol=1e-15, atol=0)


def test_dropout_statistics_and_eval(rng):
    drop = Dropout(0.25)
    x = np.ones((200, 500))
    assert drop.forward(x) is x  # no generator: evaluation, the identity
    drop.rng = np.random.default_rng(0)
    y = drop.forward(x)
    assert abs((y == 0).mean() - 0.25) < 0.01  # 1e5 draws: std of the rate 1.4e-3
    assert set(np.unique(y)) == {0.0, 1 / 0.75}  # kept values scaled so E[y] = x


def test_dropout_given_mask_equals_drawn_mask(rng):
    """A mask given explicitly, equal to the one the generator would draw, gives the same output
    and input gradient bit for bit; a given mask wins over the generator and draws nothing."""
    x, dy = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    drawn = Dropout(0.3)
    drawn.rng = np.random.default_rng(5)
    given = Dropout(0.3)
    given.mask = given.draw_mask(np.random.default_rng(5), x.shape, x.dtype)
    given.rng = g = np.random.default_rng(11)
    state = g.bit_generator.state
    assert np.array_equal(drawn.forward(x), given.forward(x))
    assert np.array_equal(drawn.backward(dy)[0], given.backward(dy)[0])
    assert g.bit_generator.state == state  # the given mask was used: no draw
    given.mask = np.ones((1, 3, 1, 1), bool)  # a per-channel mask broadcasts
    given.forward(x)
    given.mask = np.ones((5, 3, 4, 4), bool)
    with pytest.raises(ValueError, match="does not broadcast"):
        given.forward(x)


@pytest.mark.parametrize("cin,cout,attention,dropout", [(4, 4, False, 0.0), (4, 6, True, 0.0),
                                                        (6, 4, False, 0.3), (4, 6, True, 0.5)])
def test_resblock_gradients(rng, cin, cout, attention, dropout):
    """With dropout, the mask is given explicitly, so the finite differences see the mask the
    analytic backward used."""
    block = ResBlock(cin, cout, 5, rng, groups_in=2, groups_out=2, dropout=dropout,
                     attention=attention, dtype=F64)
    randomize(block, rng)
    x, emb = rng.standard_normal((2, cin, 4, 3)), rng.standard_normal((2, 5))
    if dropout:
        block.dropout.mask = block.dropout.draw_mask(rng, (2, cout, 4, 3), F64)
        assert 0 < block.dropout.mask.mean() < 1
    check_gradients(block, [x, emb], rng, wrt_inputs=(0, 1), rtol=RTOL, atol=ATOL)


def test_per_layer_generators_make_masks_independent_of_order(rng):
    """Two blocks with dropout run in either order: with one generator each (spawned from a seed)
    each block draws the same mask; with one shared generator the masks depend on the order."""
    from minisims.nn.dropout import set_dropout, spawn_rngs

    class Pair(Module):
        def __init__(self):
            super().__init__()
            self.children = {"a": Dropout(0.5), "b": Dropout(0.5)}

    x = rng.standard_normal((2, 3, 4, 4))

    def masks(order, **how):
        pair = Pair()
        set_dropout(pair, **how)
        for name in order:
            pair.children[name].forward(x)
        return [pair.children[name].scaled_mask for name in "ab"]

    ab, ba = masks("ab", seed=3), masks("ba", seed=3)
    assert all(np.array_equal(m, n) for m, n in zip(ab, ba))
    assert not np.array_equal(ab[0], ab[1])  # independent streams, not one stream twice
    ref = Dropout(0.5).draw_mask(spawn_rngs(3, 2)[1], x.shape, x.dtype)  # layer b, child 1
    assert np.array_equal(ab[1] > 0, ref)
    ab, ba = masks("ab", rng=np.random.default_rng(3)), masks("ba", rng=np.random.default_rng(3))
    assert np.array_equal(ab[0], ba[1]) and not np.array_equal(ab[0], ba[0])  # first to run wins
    ab = masks("ab", rngs=[np.random.default_rng(1), np.random.default_rng(2)])
    assert np.array_equal(ab[1] > 0, Dropout(0.5).draw_mask(np.random.default_rng(2), x.shape, x.dtype))
    with pytest.raises(ValueError, match="2 dropout layers"):
        set_dropout(Pair(), rngs=[np.random.default_rng(1)])
    with pytest.raises(ValueError, match="at most one"):
        set_dropout(Pair(), np.random.default_rng(1), seed=2)


def test_attention_gradients(rng):
    attn = SelfAttention2d(4, 2, rng, dtype=F64)
    randomize(attn, rng)
    x = rng.standard_normal((2, 4, 3, 3))
    check_gradients(attn, [x], rng, rtol=RTOL, atol=ATOL)


def test_attention_is_permutation_equivariant(rng):
    """Without positional information, permuting the pixels permutes the output the same way."""
    attn = SelfAttention2d(4, 2, rng, dtype=F64)
    randomize(attn, rng)
    x = rng.standard_normal((1, 4, 2, 3))
    perm = rng.permutation(6)
    y = attn.forward(x).reshape(1, 4, 6)[:, :, perm]
    y_perm = attn.forward(x.reshape(1, 4, 6)[:, :, perm].reshape(1, 4, 2, 3)).reshape(1, 4, 6)
    assert_close("attn(P x) = P attn(x)", y_perm, y, rtol=1e-12, atol=1e-12)


