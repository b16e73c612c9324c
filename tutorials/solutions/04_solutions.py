# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Solutions to tutorial 04's exercises
#
# Each exercise is restated, solved with `minisims` as tutorial 04 does, and its printed result
# read. Every claim that can be checked is asserted. `MINISIMS_TUTORIAL_FAST=1` shrinks the
# training of exercise 3 (the tests do this); exercises 1 and 2 take well under a second.

# %%
import os
import tempfile

import numpy as np

from minisims import backend
from minisims.diffusion import EDM, EDMPrecond, VPPrecond, edm_loss
from minisims.gradcheck import assert_close
from minisims.kernels._conv2d_common import out_size, parity_classes
from minisims.kernels.conv2d import (conv2d_backward_input, conv2d_backward_input_reference,
                                     conv2d_forward_reference)
from minisims.nn.unet import UNet, UNetConfig
from minisims.shared_encoder import SharedEncoderPair
from minisims.sims import SIMSRecipe, synthesize, train_aux, train_base
from minisims.train import TrainConfig

FAST = os.environ.get("MINISIMS_TUTORIAL_FAST") == "1"
OUT = os.environ.get("MINISIMS_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="minisims-sol04-")
os.makedirs(OUT, exist_ok=True)
_blas_limit = backend.blas_threads(1)  # small matrices: one BLAS thread (tutorial 04)
rng = np.random.default_rng(0)

# %% [markdown]
# ## Exercise 1: the input gradient of a stride-2 convolution
# At stride s the forward is y[h] = b + sum_i W[i] x_pad[s h + i] (one spatial axis shown; the
# channels sum as at stride 1). So x_pad[a] is used by the outputs h with s h + i = a:
#
#     dx_pad[a] = sum over (h, i) with s h + i = a of dy[h] W[i].
#
# At stride 1 every tap i finds its h = a - i, and renaming i -> k-1-i makes the sum a
# convolution of dy with the flipped kernel. At stride 2 only the taps with i = a (mod 2) find an
# h: dy lives on every other pixel of the input grid. Written as one convolution, it is the
# convolution of dy *dilated* (a zero inserted between its values, the "transposed
# convolution"), so in 2D most of its products (three in four, for large images) multiply a zero.
#
# **The parity split.** Write the input pixel as a = s alpha + r (r its residue) and count a from
# the unpadded input, so x_pad's index is a + p. The taps that reach it are i = i0 + s t with
# i0 = (r + p) mod s, and then h = alpha + q - t with q = (r + p - i0) / s. So the class r of dx
# is a plain stride-1 input gradient with the sub-kernel W[i0::s], read at dy[alpha + q - t]: a
# convolution of dy with that sub-kernel flipped. In 2D the four (row parity, column parity)
# classes are four stride-1 convolutions with four sub-kernels of the 3x3 kernel (2x2, 2x1, 1x2
# and 1x1 taps at padding 1). We build each one with the library's stride-1 forward convolution
# and compare with the library's stride-2 input gradient, at several shapes; our (i0, q) must be
# `parity_classes`'s.

# %%
def dx_by_parity(dy, w, x_shape, stride, padding):
    """The input gradient of a strided convolution, one stride-1 convolution per parity class."""
    N, C, H, W = x_shape
    Cout, _, k, _ = w.shape
    dx = np.zeros(x_shape)
    classes = {}
    for axis, n, n_out in ((0, H, dy.shape[2]), (1, W, dy.shape[3])):
        mine = []
        for r in range(stride):
            i0 = (r + padding) % stride
            taps, q = len(range(i0, k, stride)), (r + padding - i0) // stride
            mine.append((r, i0, taps, q, len(range(r, n, stride))))
        assert mine == parity_classes(k, n, n_out, stride, padding)  # the library's split
        classes[axis] = mine
    for r_h, i0_h, T_h, q_h, n_h in classes[0]:
        for r_w, i0_w, T_w, q_w, n_w in classes[1]:
            if T_h == 0 or T_w == 0:
                continue  # no tap reaches this class: its gradient is zero
            sub = w[:, :, i0_h::stride, i0_w::stride]  # Cout,Cin,T_h,T_w: the class's taps
            flipped = sub[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # Cin,Cout,T_h,T_w
            # dx_sub[alpha] = sum_t dy[alpha + q - t] sub[t]: place dy so that a stride-1
            # forward convolution with the flipped sub-kernel reads exactly those values
            dyp = np.zeros((N, Cout, n_h + T_h - 1, n_w + T_w - 1))
            for m in range(dyp.shape[2]):
                src_h = m - (T_h - 1) + q_h  # the dy row that padded row m holds
                if not 0 <= src_h < dy.shape[2]:
                    continue
                for v in range(dyp.shape[3]):
                    src_w = v - (T_w - 1) + q_w
                    if 0 <= src_w < dy.shape[3]:
                        dyp[:, :, m, v] = dy[:, :, src_h, src_w]
            dx[:, :, r_h::stride, r_w::stride] = conv2d_forward_reference(dyp, flipped)  # N,Cin,n_h,n_w
    return dx


def dx_dilated(dy, w, x_shape, stride, padding):
    """The same gradient as one stride-1 convolution of dy dilated with zeros, flipped kernel.
    Returns it and the share of zeros in the dilated dy."""
    N, C, H, W = x_shape
    k = w.shape[2]
    L_h, L_w = stride * (dy.shape[2] - 1) + 1, stride * (dy.shape[3] - 1) + 1
    dil = np.zeros((N, dy.shape[1], L_h, L_w))
    dil[:, :, ::stride, ::stride] = dy  # dy on every s-th pixel, zeros between
    # dx_pad[a] = sum_i dil[a - i] W[i] for a < H + 2p: pad by k - 1 in front, fill to the end
    big = np.zeros((N, dy.shape[1], H + 2 * padding + k - 1, W + 2 * padding + k - 1))
    big[:, :, k - 1:k - 1 + L_h, k - 1:k - 1 + L_w] = dil
    flipped = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # Cin,Cout,k,k
    dx_pad = conv2d_forward_reference(big, flipped)  # N,Cin,H+2p,W+2p
    return dx_pad[:, :, padding:padding + H, padding:padding + W], (dil == 0).mean()


grad_rng = np.random.default_rng(1)
for (H, k, p) in ((8, 3, 1), (7, 3, 1), (8, 4, 1), (9, 3, 0), (6, 5, 2)):
    s = 2
    w = grad_rng.standard_normal((4, 3, k, k))  # Cout,Cin,k,k
    x_shape = (2, 3, H, H)
    Ho = out_size(H, k, s, p)
    dy = grad_rng.standard_normal((2, 4, Ho, Ho))  # a random upstream gradient
    ref = conv2d_backward_input_reference(dy, w, x_shape, stride=s, padding=p)  # the scatter
    lib = conv2d_backward_input(dy, w, x_shape, stride=s, padding=p)  # the library's fast path
    split = dx_by_parity(dy, w, x_shape, s, p)
    dil, zeros = dx_dilated(dy, w, x_shape, s, p)
    print(f"H {H}, k {k}, p {p}: parity split vs reference max |diff| {np.abs(split - ref).max():.1e}; "
          f"dilated dy vs reference {np.abs(dil - ref).max():.1e}; library vs reference "
          f"{np.abs(lib - ref).max():.1e}; zeros in the dilated dy {zeros:.0%}")
    assert_close("parity split", split, ref, rtol=1e-12, atol=1e-12)  # the same sums, float64
    assert_close("dilated", dil, ref, rtol=1e-12, atol=1e-12)
    assert_close("library", lib, ref, rtol=1e-12, atol=1e-12)

# %% [markdown]
# **Reading.** Both forms give the reference gradient to rounding at every shape, odd sizes and
# padding 0 and 2 included, and our class parameters equal `parity_classes`'s (asserted inside
# `dx_by_parity`). The dilated form is a plain convolution only of a dy padded with zeros, and
# most of its products (the printed share of zeros) are wasted. The parity split does no wasted
# product: each class is a stride-1 convolution with a smaller kernel, which is what
# `kernels/_conv2d_common.py` uses.

# %% [markdown]
# ## Exercise 2: VP preconditioning on the digits
# `VPPrecond` fixes c_skip = 1 and c_out = -sigma, so F's target (y - x) / (-sigma) = n / sigma
# is the noise itself, of unit variance at every level. Redo section 5's table with it: which
# condition fails for the digits (look at c_in), and how much does c_out amplify F's errors at
# sigma = 80 compared with EDM's choice? We load the digits as tutorial 04 does and measure
# the standard deviations of F's input and target, and the loss weight inside `edm_loss`.

# %%
try:
    from sklearn.datasets import load_digits
    images = load_digits().images.astype(np.float32) / 8.0 - 1.0  # n,8,8 in [-1,1]
    source = "scikit-learn digits"
except ImportError:  # tutorial 04's stand-in
    n = 1800
    images = -np.ones((n, 8, 8), np.float32)
    for img, (a, b, c, d) in zip(images, rng.integers(0, 8, (n, 4))):
        img[min(a, b):max(a, b) + 1, min(c, d):max(c, d) + 1] = 1.0
    source = "synthetic bars and boxes"
images = images[:, None]  # n,1,8,8
rng.shuffle(images)
train_set = images[:-64]
sigma_data = float(train_set.std())
print(f"{source}: sigma_data {sigma_data:.3f}")


class ZeroF:
    """A stand-in network whose output F is 0: D = c_skip x, and the loss exposes its weight."""
    def forward(self, x, c_noise):
        return np.zeros_like(x)


vp, edm_p = VPPrecond(), EDMPrecond(sigma_data)
sigmas = np.array([0.002, 0.1, 0.5, 2.0, 80.0])
chk_rng = np.random.default_rng(5)
y = train_set[:512].astype(np.float64)  # 512,1,8,8
print(f"{'sigma':>7s} {'c_skip':>7s} {'c_out':>8s} {'c_in':>7s}   std: {'input':>6s} {'target':>6s}   "
      f"loss weight: library/(1/c_out^2)   |c_out| VP / EDM")
in_std = {}
for s in sigmas:
    sig = np.full((len(y), 1, 1, 1), s)
    c_skip, c_out, c_in, _ = vp.coefficients(sig)
    n = s * chk_rng.standard_normal(y.shape)
    x = y + n
    target = (y - c_skip * x) / c_out  # = n / sigma
    loss, _ = edm_loss(ZeroF(), vp, y, sig, n, member_ndim=0, data_ndim=3)
    ratio = float(loss) / np.mean((c_skip * x - y) ** 2 / c_out ** 2)
    amp = abs(c_out.flat[0]) / edm_p.coefficients(np.float64(s))[1]
    in_std[s] = np.std(c_in * x)
    print(f"{s:7.3f} {float(np.ravel(c_skip)[0]):7.3f} {c_out.flat[0]:8.3f} {c_in.flat[0]:7.3f}        "
          f"{in_std[s]:6.3f} {np.std(target):6.3f}   {ratio:.12f}                 {amp:10.1f}")
    assert_close("target is the noise", target, n / s, rtol=1e-12, atol=1e-12)
    assert abs(np.std(target) - 1) < 0.05  # the target condition holds at every level
    assert_close("edm_loss weight", ratio, 1.0, rtol=1e-12, atol=0)  # 1 / c_out^2 = 1 / sigma^2
amp80 = 80.0 / edm_p.coefficients(np.float64(80.0))[1]
print(f"at sigma = 80, VP's |c_out| = 80 against EDM's {edm_p.coefficients(np.float64(80.0))[1]:.3f}: "
      f"F's errors reach D {amp80:.0f} times larger")
print(f"input std at sigma = 0.002: {in_std[0.002]:.3f} (= sigma_data / 1 = {sigma_data:.3f}), not 1")
assert abs(in_std[0.002] - sigma_data) < 0.01 and abs(in_std[80.0] - 1) < 0.05

# %% [markdown]
# **Reading.** VP's c_in = 1 / sqrt(sigma^2 + 1) assumes sigma_data = 1. The digits' sigma_data
# is smaller (printed), so at small sigma the input's standard deviation is sigma_data, not 1:
# the *input* condition fails wherever sigma is not much larger than 1. The target condition
# holds at every level (it is the unit-variance noise), and the loss weight 1 / sigma^2 makes the
# effective weight one, as the table's ratio column shows. But nothing chose c_skip to
# minimise c_out: at sigma = 80, D = x - 80 F, and an error in F reaches D about 80 / sigma_data
# times larger than under EDM, where c_out tends to sigma_data (the printed factor). At high
# noise VP's network must predict the noise to a precision that EDM's never needs, since there
# D, not the noise, is what the sampler uses.

# %% [markdown]
# ## Exercise 3: `aux.train_encoder = True`, and why `SharedEncoderPair` must refuse it
# We train a small UNet base (tutorial 04's recipe, shrunk), fine-tune its decoder on its own
# samples as section 8 does, and build the pair: it is accepted. Then the same aux with the flag
# set: refused with a ValueError, although its encoder weights are still the base's. Last, an aux
# fine-tuned whole (`trainable="all"`): refused because its encoder moved; and we show what
# sharing would have computed for it.

# %%
cfg = UNetConfig(img_resolution=8, in_channels=1, out_channels=1, channels=8 if FAST else 16,
                 channel_mult=(1, 2), blocks_per_level=1, attn_resolutions=(4,), dropout=0.0)
edm = EDM(precond=EDMPrecond(sigma_data), member_ndim=0, data_ndim=3, num_steps=4 if FAST else 8)
steps, batch = (20, 32) if FAST else (200, 64)


def recipe(trainable):
    return SIMSRecipe(make_model=lambda data, rng: UNet(cfg, rng), formulation=edm,
                      base=TrainConfig(lr=2e-3, batch_size=batch, images=steps * batch,
                                       ema_half_life_images=steps * batch / 10),
                      aux=TrainConfig(lr=1e-3, batch_size=batch, images=steps // 4 * batch,
                                      trainable=trainable),
                      n_synth=32)


base, _ = train_base(train_set, recipe("decoder"), rng)
S = synthesize(base, recipe("decoder"), 32, rng)  # n_s,1,8,8
aux_dec, _ = train_aux(base, S, recipe("decoder"), np.random.default_rng(2))
SharedEncoderPair(edm, base, aux_dec)
print(f"decoder-only aux: train_encoder = {aux_dec.train_encoder}; SharedEncoderPair accepts it")

def refusal(aux):
    """SharedEncoderPair's error message for this aux, or None when it accepts it."""
    try:
        SharedEncoderPair(edm, base, aux)
    except ValueError as e:
        return str(e)
    return None


aux_dec.train_encoder = True
refused = refusal(aux_dec)
print(f"the same aux with train_encoder = True: refused: {refused}")
assert refused is not None and "train_encoder" in refused
aux_dec.train_encoder = False

aux_all, _ = train_aux(base, S, recipe("all"), np.random.default_rng(2))
refused_all = refusal(aux_all)
print(f"an aux fine-tuned whole: refused: {refused_all}")
assert refused_all is not None

x_in = np.random.default_rng(3).standard_normal((8, 1, 8, 8)).astype(base.dtype)  # N,C,H,W
c_noise = np.full(8, np.log(0.5) / 4, base.dtype)  # sigma = 0.5
true_aux = aux_all.forward(x_in, c_noise)  # the aux's own F
shared = aux_all.decode(base.encode(x_in, c_noise))  # its decoder fed the base's encoder
dec_ok = aux_dec.forward(x_in, c_noise) - aux_dec.decode(base.encode(x_in, c_noise))
print(f"decoder-only aux: own F vs shared encoder, max |diff| {np.abs(dec_ok).max():.1e}; "
      f"whole aux: max |diff| {np.abs(true_aux - shared).max():.1e} "
      f"(F's own size {np.abs(true_aux).max():.2f})")
assert np.abs(dec_ok).max() == 0 and np.abs(true_aux - shared).max() > 0

# %% [markdown]
# **Reading.** The shared pass feeds the aux's decoder with the *base's* encoder features. That
# is the aux model only if the two encoders are the same function: then (printed) the shared
# evaluation equals the aux's own, exactly. For an aux whose encoder was trained, the decoder
# receives features it was not trained with, and the pair would silently sample a model that is
# neither the aux nor the base (the printed difference is of the order of F itself). Comparing
# weights once is not enough either: an aux with `train_encoder = True` may have equal weights
# now and move them at its next training step, after the check, so the pair also refuses the flag.
