# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Tutorial 04: backpropagation through a convolution and a residual block, then a UNet
#
# The image models of SIMS are UNets: convolutions, group normalisation, residual blocks into which
# the noise level is injected, attention at low resolution. In minisims every one of them has a
# backward pass written by hand. This tutorial derives three of them, the convolution, group
# normalisation and the residual block, and checks each against finite differences. It then
# derives EDM's preconditioning (c_skip, c_out, c_in and the loss weight) from "unit variance in
# and out", checks it against `minisims.diffusion`, and trains a small UNet with the EDM loss to
# denoise (and generate) 8x8 digits. It ends with the trick of the SIMS paper's Appendix A: an
# auxiliary model that fine-tunes only the decoder shares the encoder pass with the base model,
# so a guided evaluation runs one encoder and two decoders instead of two whole networks. That is
# 1.5x the passes of one model, but not 1.5x its compute: the decoder holds the middle blocks and
# the blocks widened by the concatenated skips, most of the UNet's work (section 8 measures it).
#
# The digits are scikit-learn's (1797 images of 8x8 pixels, `pip install scikit-learn`); without
# it a synthetic set of bars and boxes is used. `MINISIMS_TUTORIAL_FAST=1` runs it in seconds.

# %%
import os
import time

import numpy as np

from minisims import backend
from minisims.diffusion import EDM, EDMPrecond, edm_loss
from minisims.gradcheck import assert_close, gradients
from minisims.kernels.conv2d import conv2d_forward
from minisims.nn.blocks import ResBlock
from minisims.nn.conv import Conv2d
from minisims.nn.norm import GroupNorm
from minisims.nn.unet import UNet, UNetConfig
from minisims.plots import pyplot, show, tutorial_dir
from minisims.shared_encoder import SharedEncoderPair
from minisims.sims import SIMSRecipe, synthesize, train_aux, train_base
from minisims.train import TrainConfig

FAST = os.environ.get("MINISIMS_TUTORIAL_FAST") == "1"
OUT = tutorial_dir("04")  # figures: shown inline in Jupyter, saved here (runs/tutorials/04/)
plt = pyplot()
rng = np.random.default_rng(0)
# 8x8 images make small matrices: one BLAS thread is fastest, and a second one only spins (and
# slows everything down badly when the machine is busy). Applied from here on.
_blas_limit = backend.blas_threads(1)

# %% [markdown]
# ## 1. A convolution, forward and backward
# A 2-D convolution layer (cross-correlation, as in PyTorch) with input x (N, Cin, H, W), weight
# W (Cout, Cin, k, k), bias b, stride 1 and padding p computes
#
#     y[n,o,h,v] = b[o] + sum_{c,i,j} W[o,c,i,j] x_pad[n, c, h+i, v+j].
#
# Given the upstream gradient dy = dL/dy, the chain rule gives three sums over the same index set:
#
# - **bias**: each b[o] touches every output of channel o, so db[o] = sum_{n,h,v} dy[n,o,h,v];
# - **weight**: W[o,c,i,j] multiplies x_pad[n,c,h+i,v+j], so
#   dW[o,c,i,j] = sum_{n,h,v} dy[n,o,h,v] x_pad[n,c,h+i,v+j]: a correlation of x with dy;
# - **input**: x_pad[n,c,a,e] is used by every output (h, v) = (a-i, e-j), so
#   dx_pad[n,c,a,e] = sum_{o,i,j} dy[n,o,a-i,e-j] W[o,c,i,j]. Renaming i -> k-1-i turns this into
#   a forward convolution of dy (padded by k-1-p) with the kernel **flipped in space and
#   transposed in channels**. At stride 1 that is how minisims computes it: no scatter at all.
#
# The layer `minisims.nn.conv.Conv2d` keeps x in its forward (dW needs it) and calls the kernels in
# `kernels/conv2d.py`. Below, the input gradient it returns is compared with that flipped-kernel
# convolution, and all three gradients with centred finite differences in float64, using a random
# upstream gradient (never all ones, which would hide transposition errors).

# %%
conv = Conv2d(3, 4, 3, rng, padding=1, dtype=np.float64)
x = rng.standard_normal((2, 3, 6, 6))  # N,Cin,H,W
y = conv.forward(x)  # N,Cout,H,W
dy = rng.standard_normal(y.shape)
dx, = conv.backward(dy)  # N,Cin,H,W (one gradient per input: a 1-tuple)
W_flip = conv.params["W"][:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # Cin,Cout,k,k
dx_as_conv = conv2d_forward(dy, np.ascontiguousarray(W_flip), padding=3 - 1 - 1)  # N,Cin,H,W
print(f"dx vs conv(dy, flipped W^T): max |diff| = {np.abs(dx - dx_as_conv).max():.1e}")
assert_close("dx as a flipped-kernel convolution", dx, dx_as_conv, rtol=1e-12, atol=1e-12)  # same sums

# Tolerances of every finite-difference check below: float64 centred differences with h = 1e-6
# err by ~h^2 (truncation) plus ~1e-16/h = 1e-10 (rounding) on values of order 1.
for name, (mine, ref) in gradients(conv, [x], rng).items():
    err = np.abs(mine - ref).max() / np.abs(ref).max()
    print(f"conv {name:8s} {str(mine.shape):15s} max relative error vs finite differences {err:.1e}")
    assert_close(f"conv {name}", mine, ref, rtol=1e-6, atol=1e-8)

# %% [markdown]
# ## 2. Group normalisation, forward and backward
# GroupNorm (Wu & He 2018) splits each image's C channels into G groups and standardises each group
# with its own statistics. Take one group of one image, with its M = (C/G) H W values x_1..x_M:
#
#     mu = <x>,   var = <(x - mu)^2>,   r = 1 / sqrt(var + eps),   xhat_i = (x_i - mu) r,
#     y_i = gamma_c xhat_i + beta_c                    (c the channel of value i; <.> the mean over i)
#
# **Parameters.** gamma_c and beta_c touch every value of channel c in every image:
# dgamma_c = sum dy xhat and dbeta_c = sum dy over (n, h, w).
#
# **Input.** Let dxhat_i = gamma_c dy_i. Every xhat_i depends on every x_j of its group, through mu
# and r, so we need the full Jacobian:
#
#     d mu / d x_j   = 1 / M
#     d var / d x_j  = (2/M) sum_i (x_i - mu)(delta_ij - 1/M) = (2/M)(x_j - mu)   (sum_i (x_i - mu) = 0)
#     d r / d x_j    = -(1/2) (var + eps)^(-3/2) d var / d x_j = -r^2 xhat_j / M   (r (x_j - mu) = xhat_j)
#     d xhat_i / d x_j = r (delta_ij - 1/M) + (x_i - mu) d r / d x_j = r (delta_ij - 1/M - xhat_i xhat_j / M)
#
# and the chain rule, dx_j = sum_i dxhat_i d xhat_i / d x_j, gives
#
#     dx_j = r (dxhat_j - <dxhat> - xhat_j <dxhat xhat>).
#
# Read it as a projection: y does not change when a group is shifted (x + c) and barely changes
# when it is scaled (x * a; exactly, but for eps), so the gradient loses its component along the
# constant vector (the <dxhat> term) and along xhat (the <dxhat xhat> term); the sum of dx over a
# group is exactly zero. `minisims/nn/norm.py` keeps r (N,G,1) and xhat from its forward and
# computes exactly these lines. Below, the formula is evaluated from x alone (fresh statistics)
# and compared with the module's backward, and both with finite differences.

# %%
gn_rng = np.random.default_rng(4)  # this section's own generator: the rest of the tutorial is unchanged
gn = GroupNorm(6, 3, dtype=np.float64)  # C = 6 channels in G = 3 groups
gn.params["gamma"][...] = 1 + 0.5 * gn_rng.standard_normal(6)  # non-trivial parameters
gn.params["beta"][...] = 0.5 * gn_rng.standard_normal(6)
xg = 1 + 2 * gn_rng.standard_normal((2, 6, 4, 4))  # N,C,H,W, not already standardised
y = gn.forward(xg)  # N,C,H,W
dy = gn_rng.standard_normal(y.shape)  # a random upstream gradient
gn.zero_grad()
dx_module, = gn.backward(dy)  # N,C,H,W

# the derivation, from x alone
N, C, H, W = xg.shape
G, M = 3, (6 // 3) * H * W
xgrp = xg.reshape(N, G, M)  # N,G,M: a group's values are contiguous in NCHW
r = 1 / np.sqrt(xgrp.var(axis=-1, keepdims=True) + gn.eps)  # N,G,1
xhat = (xgrp - xgrp.mean(axis=-1, keepdims=True)) * r  # N,G,M
dxhat = (dy * gn.params["gamma"][:, None, None]).reshape(N, G, M)  # N,G,M
dx_derived = r * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
dgamma_derived = (dy * xhat.reshape(xg.shape)).sum(axis=(0, 2, 3))  # C
dbeta_derived = dy.sum(axis=(0, 2, 3))  # C
for name, mine, derived in (("dx", dx_module, dx_derived.reshape(xg.shape)),
                            ("dgamma", gn.grads["gamma"], dgamma_derived),
                            ("dbeta", gn.grads["beta"], dbeta_derived)):
    print(f"GroupNorm {name:6s} module vs derived formula: max |diff| {np.abs(mine - derived).max():.1e}")
    assert_close(f"GroupNorm {name}", mine, derived, rtol=1e-10, atol=1e-12)  # same maths, other order
print(f"sum of dx over each group (shift invariance): max |sum| "
      f"{np.abs(dx_module.reshape(N, G, M).sum(-1)).max():.1e}")
for name, (mine, ref) in gradients(gn, [xg], gn_rng).items():
    err = np.abs(mine - ref).max() / np.abs(ref).max()
    print(f"GroupNorm {name:6s} max relative error vs finite differences {err:.1e}")
    assert_close(f"GroupNorm {name}", mine, ref, rtol=1e-6, atol=1e-8)

# %% [markdown]
# ## 3. A residual block with the noise level injected
# The UNet's block (EDM's DDPM++ block) takes a feature map x and the noise embedding emb (N, E):
#
#     h = conv0(silu(norm0(x)))
#     h = h + affine(emb)[:, :, None, None]          # one shift per channel: the noise level
#     h = conv1(dropout(silu(norm1(h))))
#     y = (h + skip(x)) / sqrt(2)
#
# Its backward is the forward read in reverse: dy reaches both branches (times 1/sqrt 2); the
# gradient of the injected shift is dh summed over the pixels, which the affine layer turns into
# demb; the input collects the residual branch's gradient plus the skip's; the two GroupNorms
# backpropagate as derived in section 2. The check covers every parameter and both inputs.

# %%
block = ResBlock(4, 6, 5, rng, groups_in=2, groups_out=3, dtype=np.float64)
for _, mod, k in block.named_parameters():  # non-trivial parameters: conv1 starts near zero
    mod.params[k][...] = rng.standard_normal(mod.params[k].shape) * 0.5 + (k == "gamma")
xb, emb = rng.standard_normal((2, 4, 5, 5)), rng.standard_normal((2, 5))
worst = 0.0
for name, (mine, ref) in gradients(block, [xb, emb], rng, wrt_inputs=(0, 1)).items():
    err = np.abs(mine - ref).max() / np.abs(ref).max()
    worst = max(worst, err)
    print(f"resblock {name:14s} max relative error {err:.1e}")
    assert_close(f"resblock {name}", mine, ref, rtol=1e-6, atol=1e-8)  # as in section 1
print(f"all {len(list(block.named_parameters())) + 2} gradients of the block agree (worst {worst:.1e})")

# %% [markdown]
# ## 4. Data: 8x8 digits
# Pixels are scaled to [-1, 1]. EDM's preconditioning assumes a data standard deviation
# sigma_data; we measure it.

# %%
try:
    from sklearn.datasets import load_digits
    images = load_digits().images.astype(np.float32) / 8.0 - 1.0  # n,8,8 in [-1,1]
    source = "scikit-learn digits"
except ImportError:  # a synthetic stand-in: one bright bar or box per image
    n = 1800
    images = -np.ones((n, 8, 8), np.float32)
    for img, (a, b, c, d) in zip(images, rng.integers(0, 8, (n, 4))):
        img[min(a, b):max(a, b) + 1, min(c, d):max(c, d) + 1] = 1.0
    source = "synthetic bars and boxes (pip install scikit-learn for the digits)"
images = images[:, None]  # n,1,8,8: NCHW with one channel
rng.shuffle(images)
train_set, test_set = images[:-64], images[-64:]
sigma_data = float(train_set.std())
print(f"{source}: train {train_set.shape}, held out {test_set.shape}, sigma_data {sigma_data:.3f}")

# %% [markdown]
# ## 5. Preconditioning from "unit variance in and out" (EDM, Appendix B.6)
# The UNet is not asked to output the clean image directly. EDM wraps the raw network F as
#
#     D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma)),   x = y + n,
#
# with y a training image (pixel variance sigma_data^2) and n ~ N(0, sigma^2 I), and trains with
# the loss lambda(sigma) || D(x; sigma) - y ||^2. Pull c_out out of the error:
#
#     lambda ||D - y||^2 = lambda c_out^2 || F(c_in x) - (y - c_skip x) / c_out ||^2.
#
# So F sees the input c_in x, regresses on the *effective target* (y - c_skip x) / c_out, and
# its error carries the *effective weight* lambda c_out^2. Karras et al. ask that none of the three
# depend on how noisy x is, since sigma spans 0.002 to 80:
#
# 1. **Input, unit variance.** Var[c_in (y + n)] = c_in^2 (sigma_data^2 + sigma^2) = 1, so
#    c_in = 1 / sqrt(sigma^2 + sigma_data^2).
# 2. **Target, unit variance.** The target is ((1 - c_skip) y - c_skip n) / c_out, y and n
#    independent, so Var = ((1 - c_skip)^2 sigma_data^2 + c_skip^2 sigma^2) / c_out^2 = 1:
#    c_out^2 = (1 - c_skip)^2 sigma_data^2 + c_skip^2 sigma^2.
# 3. **c_skip: amplify F's errors least.** Whatever F gets wrong reaches D multiplied by c_out, so
#    choose c_skip to minimise c_out^2. Setting d/dc_skip to zero,
#    -2 (1 - c_skip) sigma_data^2 + 2 c_skip sigma^2 = 0, gives c_skip = sigma_data^2 / (sigma^2 +
#    sigma_data^2); substituting, c_out^2 = sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2), so
#    c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2).
# 4. **Loss weight: unit effective weight.** lambda c_out^2 = 1, so
#    lambda = 1 / c_out^2 = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2.
#
# (c_noise = ln(sigma) / 4 is an empirical choice, not part of the argument.) At small sigma
# c_skip -> 1 and c_out -> sigma: D is x minus a small correction, and F's target (y - x) / sigma
# = -n / sigma is the noise *negated* and scaled to unit variance; at large sigma c_skip -> 0 and
# c_out -> sigma_data: the target is y / sigma_data, the image itself. (VP's c_out = -sigma flips
# the sign: its F predicts +n / sigma, exercise 2.) The table's last column is the correlation of
# the target with -n / sigma: about 1 at small sigma, about 0 at large.
#
# **Checks**, with sigma_data measured on the digits: the derived coefficients against
# `EDMPrecond(sigma_data).coefficients`; the minimiser of c_out^2 over a grid of c_skip; the
# measured standard deviations of the input c_in x and of the target on the digits themselves;
# and the weight inside the library's loss (`minisims.diffusion.edm_loss`), read off by giving
# it a network whose output F is zero, so that D = c_skip x and the loss must equal
# lambda <(c_skip x - y)^2>.

# %%
precond = EDMPrecond(sigma_data)
sigmas = np.array([0.002, 0.1, 0.5, 2.0, 80.0])
sd2 = sigma_data ** 2
derived = {"c_skip": sd2 / (sigmas ** 2 + sd2), "c_out": sigmas * sigma_data / np.sqrt(sigmas ** 2 + sd2),
           "c_in": 1 / np.sqrt(sigmas ** 2 + sd2), "c_noise": np.log(sigmas) / 4}
for name, lib in zip(derived, precond.coefficients(sigmas)):
    assert_close(name, lib, derived[name], rtol=1e-12, atol=0)  # the same formula: rounding only
print(f"EDMPrecond({sigma_data:.3f}).coefficients == the derived c_skip, c_out, c_in, c_noise "
      f"at sigma = {sigmas.tolist()}")
grid = np.linspace(0, 1, 100_001)  # c_skip candidates, step 1e-5
best = [grid[np.argmin((1 - grid) ** 2 * sd2 + grid ** 2 * s ** 2)] for s in sigmas]
assert_close("argmin of c_out^2", np.array(best), derived["c_skip"], rtol=0, atol=1e-5)  # grid step
print(f"c_skip minimising c_out^2 on a grid: {np.round(best, 5).tolist()}")


class ZeroF:
    """A stand-in network whose output F is 0: D = c_skip x, and the loss exposes its weight."""
    def forward(self, x, c_noise):
        return np.zeros_like(x)


chk_rng = np.random.default_rng(5)  # this section's own generator
y = train_set[:512].astype(np.float64)  # 512,1,8,8
print(f"{'sigma':>7s} {'c_skip':>7s} {'c_out':>7s} {'c_in':>7s} {'lambda':>10s}   std: {'input':>6s} {'target':>6s}"
      f"   loss weight: library / derived   corr(target, -n/sigma)")
for s in sigmas:
    c_skip, c_out, c_in, _ = precond.coefficients(np.full((len(y), 1, 1, 1), s))  # each 512,1,1,1
    n = s * chk_rng.standard_normal(y.shape)  # 512,1,8,8
    x = y + n
    target = (y - c_skip * x) / c_out  # 512,1,8,8: what F regresses on
    loss, _ = edm_loss(ZeroF(), precond, y, np.full((len(y), 1, 1, 1), s), n, member_ndim=0, data_ndim=3)
    lam = (s ** 2 + sd2) / (s * sigma_data) ** 2
    ratio = float(loss) / (lam * np.mean((c_skip * x - y) ** 2))
    corr = np.corrcoef(target.ravel(), -n.ravel() / s)[0, 1]  # is F asked for the (negated) noise?
    print(f"{s:7.3f} {c_skip.flat[0]:7.3f} {c_out.flat[0]:7.3f} {c_in.flat[0]:7.3f} {lam:10.3e}   "
          f"     {np.std(c_in * x):6.3f} {np.std(target):6.3f}   {ratio:.12f}                {corr:+.3f}")
    assert_close("edm_loss weight", ratio, 1.0, rtol=1e-12, atol=0)  # lambda = 1 / c_out^2 exactly
    assert_close("unit variance", np.array([np.std(c_in * x), np.std(target)]), np.ones(2), rtol=0, atol=0.05)

# %% [markdown]
# Both standard deviations are close to one at every noise level, from a target that is almost all
# noise (small sigma) to one that is almost all image (large sigma); the 0.05 tolerance leaves room
# for sampling 512 images. This is the network's job made the same size everywhere.
#
# ## 6. A small UNet trained with the EDM loss
# The network F sits inside D(x; sigma) = c_skip x + c_out F(c_in x; c_noise), with the
# coefficients of section 5; `EDM(member_ndim=0, data_ndim=3)` tells the loss that a batch is
# (N, C, H, W) with one model. The loss draws ln sigma ~ N(-1.2, 1.2^2) per image and weights the
# error by lambda = 1 / c_out^2. Training and fine-tuning go through `minisims.sims` (Algorithm 1's
# steps), which call the one training loop, `minisims.train.train`: Adam, warm-up, an EMA of the
# weights (what we sample from).

# %%
cfg = UNetConfig(img_resolution=8, in_channels=1, out_channels=1, channels=16 if FAST else 32,
                 channel_mult=(1, 2), blocks_per_level=1, attn_resolutions=(4,), dropout=0.0)
edm = EDM(precond=EDMPrecond(sigma_data), member_ndim=0, data_ndim=3, num_steps=8 if FAST else 18)
steps, batch = (30, 32) if FAST else (1000, 64)  # full: ~6 min on 2 busy cores
n_synth = 32 if FAST else 256
# Algorithm 1's recipe for this model: how to build it, how to train the base (Adam, an EMA of the
# weights with a half-life of a tenth of the run), how to fine-tune the aux (a quarter of the
# budget, decoder only: section 6), and n_s. The same steps train the 2D toy's MLP ensemble.
recipe = SIMSRecipe(
    make_model=lambda data, rng: UNet(cfg, rng), formulation=edm,
    base=TrainConfig(lr=2e-3, batch_size=batch, images=steps * batch,
                     ema_half_life_images=steps * batch / 10),
    aux=TrainConfig(lr=1e-3, batch_size=batch, images=steps // 4 * batch, trainable="decoder"),
    n_synth=n_synth)
t0 = time.perf_counter()
base, losses = train_base(train_set, recipe, rng, progress=not FAST)  # base: the EMA weights
schedule = recipe.base.schedule(len(train_set))  # the batch sizes that ran, epoch by epoch
n_steps = sum(len(epoch) for epoch in schedule)  # each epoch ends with a smaller batch: > steps
print(f"UNet with {base.num_parameters():,} parameters; {n_steps} steps of batch <= {batch} "
      f"({sum(map(sum, schedule)):,} images), {len(losses)} epochs over {len(train_set)} images")
for epoch in np.unique(np.linspace(0, len(losses) - 1, 5).astype(int)):
    print(f"epoch {epoch:4d}  mean loss {losses[epoch]:.3f}")
print(f"{(time.perf_counter() - t0) / n_steps * 1e3:.0f} ms per step")

# %% [markdown]
# ## 7. Denoising held-out digits
# D(x; sigma) is the model's estimate of the clean image. Its error should be well below the
# noise's at every level (printed as mean squared errors per pixel).

# %%
denoise = edm.model(base)
clean = test_set[:8].astype(np.float64)  # 8,1,8,8
fig, axes = plt.subplots(7, 8, figsize=(8, 7))
for col, img in enumerate(clean):
    axes[0, col].imshow(img[0], cmap="gray", vmin=-1, vmax=1)
for r, sigma in enumerate([0.2, 0.5, 1.0]):
    noisy = clean + sigma * rng.standard_normal(clean.shape)
    den = denoise(noisy, sigma)
    mse_noisy, mse_den = np.mean((noisy - clean) ** 2), np.mean((den - clean) ** 2)
    print(f"sigma {sigma:.1f}: MSE noisy {mse_noisy:.3f} -> denoised {mse_den:.3f}")
    if not FAST:
        assert mse_den < 0.5 * mse_noisy
    for col in range(8):
        axes[1 + 2 * r, col].imshow(noisy[col, 0], cmap="gray", vmin=-1, vmax=1)
        axes[2 + 2 * r, col].imshow(den[col, 0], cmap="gray", vmin=-1, vmax=1)
    axes[1 + 2 * r, 0].set_ylabel(f"s={sigma}", fontsize=7)
for ax in axes.ravel():
    ax.set_xticks([]); ax.set_yticks([])
fig.suptitle("clean / (noisy, denoised) at sigma 0.2, 0.5, 1.0")
fig.tight_layout(); show(fig, os.path.join(OUT, "04_denoising.png"))

# %% [markdown]
# ## 8. Sampling, and SIMS with a shared encoder
# The EDM sampler (Heun, Algorithm 2 of Karras et al.) integrates from pure noise. For SIMS we
# fine-tune a copy of the model on its own samples (the auxiliary model) with the **encoder
# frozen**: only the decoder learns. Both models then compute the same encoder features for the
# same input, so `SharedEncoderPair` runs the encoder once per evaluation point and both decoders
# on its output; guidance is still eq. 5 of the paper (`minisims.guidance.sims_combine`), applied
# by the unchanged sampler.
#
# The paper counts this as 1.5x NFE instead of 2x: three half-network passes instead of four. The
# halves are not equal, though. The decoder holds the two middle blocks, one block more per level
# than the encoder, and blocks whose inputs are widened by the concatenated skips; for this
# tutorial's full-size UNet it does 84% of the multiply-adds of a forward pass (counted at every
# convolution, linear layer and attention product). A shared-encoder evaluation then costs
# 1 + 0.84 = 1.84x one model, not 1.5x: it saves about 8% of two separate networks' work. Below,
# the pass counts, then the decoder's share of the forward *time*, measured on the sampler's batch.

# %%
synthetic = synthesize(base, recipe, n_synth, rng)  # n_s,1,8,8: Algorithm 1, step 2
aux, _ = train_aux(base, synthetic, recipe, rng)      # step 3: a copy, decoder fine-tuned on S
pair = SharedEncoderPair(edm, base, aux)
shape = (16, 1, 8, 8)
guided = pair.sample(shape, np.random.default_rng(1), w=1.0)
separate = edm.sample(base, shape, np.random.default_rng(1), aux=aux, w=1.0)
print(f"shared encoder vs two full networks: max |diff| = {np.abs(guided - separate).max():.1e}")
n_eval = edm.nfe()
print(f"{n_eval} guided evaluations: {pair.encoder_passes} encoder + {pair.decoder_passes} decoder passes "
      f"= {(pair.encoder_passes + pair.decoder_passes) / (2 * n_eval):.2f}x the {2 * n_eval} half-network "
      f"passes of one model (two separate models: 2x)")
x_in = np.random.default_rng(2).standard_normal(shape).astype(base.dtype)  # N,C,H,W
c_noise = np.full(shape[0], np.log(0.5) / 4, base.dtype)  # N: sigma = 0.5
t_enc = t_dec = np.inf
for _ in range(5):  # the fastest of five: the least disturbed by other work on the machine
    t0 = time.perf_counter(); enc = base.encode(x_in, c_noise)
    t1 = time.perf_counter(); base.decode(enc)
    t_enc, t_dec = min(t_enc, t1 - t0), min(t_dec, time.perf_counter() - t1)
share = t_dec / (t_enc + t_dec)
print(f"one forward pass: encoder {t_enc * 1e3:.1f} ms, decoder {t_dec * 1e3:.1f} ms ({share:.0%}); a "
      f"shared-encoder guided evaluation takes {1 + share:.2f}x one model's time (two separate models: 2x)")

# The base and SIMS from the same starting noise (the same generator seed), so each column
# differs by the guidance alone. A crude measure beside them: each sample's distance to its
# nearest held-out digit (RMS per pixel), averaged; tutorial 05 measures SIMS properly.
plain = edm.sample(base, shape, np.random.default_rng(1))  # 16,1,8,8: the base, same noise


def nearest_real(x):
    """Mean over samples of the RMS pixel distance to the nearest held-out digit."""
    d = ((x.reshape(len(x), 1, -1) - test_set.reshape(1, len(test_set), -1)) ** 2).mean(-1)  # n,T
    return float(np.sqrt(d.min(axis=1)).mean())


print(f"distance to the nearest held-out digit: base {nearest_real(plain):.3f}, "
      f"SIMS (w = 1) {nearest_real(guided):.3f}")
fig, axes = plt.subplots(2, 16, figsize=(12, 1.8))
for col in range(16):
    axes[0, col].imshow(np.clip(plain[col, 0], -1, 1), cmap="gray", vmin=-1, vmax=1)
    axes[1, col].imshow(np.clip(guided[col, 0], -1, 1), cmap="gray", vmin=-1, vmax=1)
for ax in axes.ravel():
    ax.set_xticks([]); ax.set_yticks([])
axes[0, 0].set_ylabel("base", fontsize=7); axes[1, 0].set_ylabel("SIMS w=1", fontsize=7)
fig.suptitle(f"the same noise: base (top, {nearest_real(plain):.3f} to the nearest real digit) "
             f"and SIMS, w = 1 (bottom, {nearest_real(guided):.3f})", fontsize=8)
fig.tight_layout(); show(fig, os.path.join(OUT, "04_samples.png"))
print("figures in", OUT)

# %% [markdown]
# ## Summary
# - A convolution's three gradients are three correlations over the same indices; the input
#   gradient is a convolution with the flipped, channel-transposed kernel.
# - GroupNorm's input gradient is dxhat with its group mean and its component along xhat removed,
#   scaled by 1/std: the normalisation's invariances, read off its Jacobian.
# - A residual block's backward mirrors its forward; the noise level's gradient is the per-channel
#   sum of the gradient where it was added.
# - Finite differences in float64 with a random upstream gradient check every one of them, through
#   one reporter (`assert_close`) with its tolerance stated.
# - EDM's c_in, c_out and loss weight make F's input, target and error weight unit-sized at every
#   noise level; c_skip is the choice that amplifies F's errors least.
# - A UNet with an encoder/decoder split lets SIMS share the encoder pass: same samples, 1.5x the
#   passes of one model, but 1 + (the decoder's share), well above 1.5x, in compute.
#
# ## Exercises
# 1. Derive dx for a stride-2 convolution. Why is it no longer a plain convolution of dy? (Hint:
#    dy lives on every other pixel; look at `conv2d_backward_input` in `kernels/conv2d.py`.)
#    Then split dx by the parity of its pixel (even or odd row, even or odd column): show that
#    each of the four parts is a plain stride-1 convolution of dy with a part of the kernel, and
#    check your split against `parity_classes` in `kernels/_conv2d_common.py`.
# 2. VP preconditioning (`minisims.diffusion.VPPrecond`) fixes c_skip = 1 and c_out = -sigma, so
#    F's target is the noise itself, of unit variance at every level. Redo section 5's table with
#    it: which of the conditions fails for the digits (look at c_in), and how much does c_out
#    amplify F's errors at sigma = 80 compared with EDM's choice?
# 3. Set `aux.train_encoder = True` and see `SharedEncoderPair` refuse the pair. Why must it?
