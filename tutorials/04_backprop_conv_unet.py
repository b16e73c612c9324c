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
# backward pass written by hand. This tutorial derives the two that matter most, the convolution
# and the residual block, checks them against finite differences, and then trains a small UNet
# with the EDM loss to denoise (and generate) 8x8 digits. It ends with the trick of the SIMS
# paper's Appendix A: an auxiliary model that fine-tunes only the decoder shares the encoder pass
# with the base model, so guided sampling costs 1.5x the network evaluations instead of 2x.
#
# The digits are scikit-learn's (1797 images of 8x8 pixels, `pip install scikit-learn`); without
# it a synthetic set of bars and boxes is used. `MINISIMS_TUTORIAL_FAST=1` runs it in seconds.

# %%
import os
import tempfile
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from kernels.conv2d import conv2d_forward
from minisims import backend
from minisims.diffusion import EDM, EDMPrecond
from minisims.gradcheck import gradients
from minisims.nn.blocks import ResBlock
from minisims.nn.conv import Conv2d
from minisims.nn.unet import UNet, UNetConfig
from minisims.shared_encoder import SharedEncoderPair
from minisims.sims import SIMSRecipe, synthesize, train_aux, train_base
from minisims.train import TrainConfig

FAST = os.environ.get("MINISIMS_TUTORIAL_FAST") == "1"
OUT = os.environ.get("MINISIMS_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="minisims-tut04-")
os.makedirs(OUT, exist_ok=True)
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

for name, (mine, ref) in gradients(conv, [x], rng).items():
    err = np.abs(mine - ref).max() / np.abs(ref).max()
    print(f"conv {name:8s} {str(mine.shape):15s} max relative error vs finite differences {err:.1e}")
    assert err < 1e-7

# %% [markdown]
# ## 2. A residual block with the noise level injected
# The UNet's block (EDM's DDPM++ block) takes a feature map x and the noise embedding emb (N, E):
#
#     h = conv0(silu(norm0(x)))
#     h = h + affine(emb)[:, :, None, None]          # one shift per channel: the noise level
#     h = conv1(dropout(silu(norm1(h))))
#     y = (h + skip(x)) / sqrt(2)
#
# Its backward is the forward read in reverse: dy reaches both branches (times 1/sqrt 2); the
# gradient of the injected shift is dh summed over the pixels, which the affine layer turns into
# demb; the input collects the residual branch's gradient plus the skip's. GroupNorm's backward
# subtracts the group means of dxhat and of dxhat*xhat (see `minisims/nn/norm.py`). The check
# covers every parameter and both inputs.

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
assert worst < 1e-6
print(f"all {len(list(block.named_parameters())) + 2} gradients of the block agree (worst {worst:.1e})")

# %% [markdown]
# ## 3. Data: 8x8 digits
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
# ## 4. A small UNet trained with the EDM loss
# The network F sits inside D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) (EDM
# preconditioning); `EDM(member_ndim=0, data_ndim=3)` tells the loss that a batch is (N, C, H, W)
# with one model. The loss draws ln sigma ~ N(-1.2, 1.2^2) per image and weights the error so F's
# target has unit variance at every noise level. An EMA of the weights is what we sample from.

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
print(f"UNet with {base.num_parameters():,} parameters; {steps} steps of batch {batch}, "
      f"{len(losses)} epochs over {len(train_set)} images")
for epoch in np.unique(np.linspace(0, len(losses) - 1, 5).astype(int)):
    print(f"epoch {epoch:4d}  mean loss {losses[epoch]:.3f}")
print(f"{(time.perf_counter() - t0) / steps * 1e3:.0f} ms per step")

# %% [markdown]
# ## 5. Denoising held-out digits
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
fig.tight_layout(); fig.savefig(os.path.join(OUT, "04_denoising.png")); plt.close(fig)

# %% [markdown]
# ## 6. Sampling, and SIMS with a shared encoder
# The EDM sampler (Heun, Algorithm 2 of Karras et al.) integrates from pure noise. For SIMS we
# fine-tune a copy of the model on its own samples (the auxiliary model) with the **encoder
# frozen**: only the decoder learns. Both models then compute the same encoder features for the
# same input, so `SharedEncoderPair` runs the encoder once per evaluation point and both decoders
# on its output; guidance is still eq. 5 of the paper (`minisims.guidance.sims_combine`), applied
# by the unchanged sampler.

# %%
synthetic = synthesize(base, recipe, n_synth, rng)  # n_s,1,8,8: Algorithm 1, step 2
aux, _ = train_aux(base, synthetic, recipe, rng)      # step 3: a copy, decoder fine-tuned on S
pair = SharedEncoderPair(edm, base, aux)
shape = (16, 1, 8, 8)
guided = pair.sample(shape, np.random.default_rng(1), w=1.0)
separate = edm.sample(base, shape, np.random.default_rng(1), aux=aux, w=1.0)
print(f"shared encoder vs two full networks: max |diff| = {np.abs(guided - separate).max():.1e}")
n_eval = edm.nfe()
print(f"network work for {n_eval} guided evaluations: {pair.encoder_passes} encoder + "
      f"{pair.decoder_passes} decoder passes = {(pair.encoder_passes + pair.decoder_passes) / (2 * n_eval):.2f}x "
      f"of one model's NFE (two separate models: 2x)")

fig, axes = plt.subplots(2, 16, figsize=(12, 1.8))
for col in range(16):
    axes[0, col].imshow(synthetic[col, 0], cmap="gray", vmin=-1, vmax=1)
    axes[1, col].imshow(np.clip(guided[col, 0], -1, 1), cmap="gray", vmin=-1, vmax=1)
for ax in axes.ravel():
    ax.set_xticks([]); ax.set_yticks([])
axes[0, 0].set_ylabel("base", fontsize=7); axes[1, 0].set_ylabel("SIMS w=1", fontsize=7)
fig.suptitle("top: the base model's samples (the synthetic set); bottom: SIMS, w = 1", fontsize=8)
fig.tight_layout(); fig.savefig(os.path.join(OUT, "04_samples.png")); plt.close(fig)
print("figures in", OUT)

# %% [markdown]
# ## Summary
# - A convolution's three gradients are three correlations over the same indices; the input
#   gradient is a convolution with the flipped, channel-transposed kernel.
# - A residual block's backward mirrors its forward; the noise level's gradient is the per-channel
#   sum of the gradient where it was added.
# - Finite differences in float64 with a random upstream gradient check every one of them.
# - A UNet with an encoder/decoder split lets SIMS share the encoder pass: 1.5x NFE, same samples.
#
# ## Exercises
# 1. Derive dx for a stride-2 convolution. Why is it no longer a plain convolution of dy? (Hint:
#    dy lives on every other pixel; look at `conv2d_backward_input` in `kernels/conv2d.py`.)
# 2. Remove the `/ sqrt(2)` of the residual block and watch the activations' variance grow with
#    depth (print `h.std()` after every block of the UNet's encoder).
# 3. Set `aux.train_encoder = True` and see `SharedEncoderPair` refuse the pair. Why must it?
# 4. Replace the Heun sampler by Euler (`EDM(solver="euler")`) at the same NFE and compare samples.
