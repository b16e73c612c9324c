# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Tutorial 05: SIMS on images, step by step, on handwritten digits
#
# Tutorial 04 built the UNet and its backward pass. Here we run the SIMS paper's image experiment
# (Section 4.1, Figure 3) one step at a time, on scikit-learn's handwritten digits: 1797 grey
# images of 8x8 pixels, bundled with scikit-learn (no download). They are small enough to train
# a diffusion model on a laptop CPU in minutes, and a digit is something you can look at and
# judge: a sample either looks like a 3 or it does not.
#
# 1. the data: digits as uint8 images, then the model's [-1, 1] scale;
# 2. the recipe: the network, the EDM formulation, and the budgets counted in images seen;
# 3. Algorithm 1, step 1: train the base model;
# 4. step 2: sample the synthetic set S, one seed per image;
# 5. step 3: fine-tune a copy of the base on S alone, decoder only: the auxiliary model;
# 6. step 4: sample with (1 + w) D_base - w D_aux (paper eq. 5) through a shared encoder pass,
#    and what that sharing saves, measured;
# 7. how good are the samples: a Frechet distance and a classifier's "digit-likeness" by w, the
#    sampling noise beside them, and the base, aux and SIMS samples drawn from the same noise;
# 8. the one command that does all of this on CIFAR-10.
#
# Every step calls the library (`minisims.sims`, `minisims.images.pipeline`); nothing here
# re-implements it. How the CIFAR-10 archive is read (its checksum, and an unpickler that runs no
# code) is in the appendix, `tutorials/05a_appendix_cifar_archive.py`.
#
# Run it with `python tutorials/05_image_sims.py` (4 to 6 minutes as measured on this project's
# 2-core machine, shared with other jobs; each stage's time is printed at the end), or
# open it as a notebook with jupytext. Figures show inline in Jupyter; a script saves them in
# `runs/tutorials/05/`, or in the folder `MINISIMS_TUTORIAL_OUT` names.
# `MINISIMS_TUTORIAL_FAST=1` shrinks everything to seconds (5 to 25 s as measured here, by
# load; the tests do this): the model then learns next to nothing, and the numbers only show
# that the machinery runs.

# %%
import os
import time
from dataclasses import replace

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from minisims import backend, ops
from minisims.data.images import to_model, to_uint8
from minisims.features import fd_label, image_stats
from minisims.images.pipeline import make_recipe, sample_images
from minisims.images.presets import PRESETS
from minisims.metrics import fd_from_stats
from minisims.plots import fd_heatmap, pyplot, show, tutorial_dir
from minisims.progress import bar
from minisims.shared_encoder import SharedEncoderPair
from minisims.sims import SYNTH_SEEDS_FROM, sample_sims, synthesize, train_aux, train_base
from minisims.streams import StackedRandomGenerator, derive_seed, parse_seeds

FAST = os.environ.get("MINISIMS_TUTORIAL_FAST") == "1"
OUT = tutorial_dir("05")  # figures: shown inline in Jupyter, saved here (runs/tutorials/05/)
plt = pyplot()
# 8x8 images make small matrices: one BLAS thread is fastest, a second one only spins (and slows
# everything down badly on a busy machine). Applied from here on, as in tutorial 04.
_blas_limit = backend.blas_threads(1)
seconds = {}  # wall time of each stage, printed at the end
t_start = time.perf_counter()


def rgb(images):
    """Grey uint8 (N,H,W,1) -> (N,H,W,3): the feature extractor reads three channels."""
    return np.repeat(images, 3, axis=-1)


# %% [markdown]
# ## 1. The data
# `load_digits()` gives 1797 images of 8x8 pixels with values 0 (background) to 16 (ink), and the
# digit each one shows. The image pipeline stores pictures as files do, uint8 NHWC (N, H, W, C),
# so we scale 0..16 to 0..255 and add a channel axis of one (grey). The models work on float32
# NCHW in [-1, 1] (x / 127.5 - 1, the scale EDM assumes): `to_model`, and `to_uint8` goes back
# exactly.

# %%
t0 = time.perf_counter()
digits = load_digits()
images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[..., None]  # N,8,8,1 uint8
x = to_model(images)  # N,1,8,8 float32 in [-1, 1]
print(f"{len(images)} digits: uint8 {images.shape}; to_model: {x.dtype} {x.shape}, range "
      f"[{x.min():.2f}, {x.max():.2f}], mean {x.mean():.3f}, std {x.std():.3f}")
assert np.array_equal(to_uint8(x), images)  # the round trip is exact for every uint8 value
print("to_uint8(to_model(images)) == images: exact; digits per class:", np.bincount(digits.target))

fig, axes = plt.subplots(2, 10, figsize=(8, 1.9))
for ax, i in zip(axes.flat, range(20)):
    ax.imshow(images[i, :, :, 0], cmap="gray", vmin=0, vmax=255)
    ax.set_title(str(digits.target[i]), fontsize=8)
    ax.axis("off")
fig.suptitle("real digits (8x8) and their labels", fontsize=9)
fig.tight_layout()
show(fig, os.path.join(OUT, "05_data.png"))
seconds["data"] = time.perf_counter() - t0

# %% [markdown]
# ## 2. The recipe
# A preset (`minisims.images.presets.PRESETS`) holds every setting of the image experiment. We start
# from `tiny` and change what digits need: one input and output channel, no random left-right
# mirroring (`hflip`, right for photographs, wrong for digits: a mirrored 3 is no 3), and
# sigma_data, EDM's assumed standard deviation of the data (0.5 for CIFAR-10), set to the digits'
# own, so that the network's inputs and targets have unit variance (tutorial 04's preconditioning).
#
# `make_recipe(preset, aux_images=B)` turns the preset into Algorithm 1's recipe
# (`minisims.sims.SIMSRecipe`), which the four steps read:
#
# - `make_model`: a fresh UNet (`UNetConfig` from the preset), encoder and decoder separate;
# - `formulation`: EDM (Karras et al. 2022): preconditioning with sigma_data, the loss with
#   ln sigma ~ N(-1.2, 1.2^2), the Heun sampler with N steps (2N - 1 network evaluations);
# - `base`: a `TrainConfig`. The budget is **images seen** (EDM's and the paper's unit), not
#   epochs: the run stops at the first step at which that many images went through the network.
#   The EMA of the weights has a half-life in images too: after each step of `batch` images the
#   average keeps beta = 0.5^(batch / half-life) of itself, so the half-life does not change
#   with the batch size;
# - `aux`: the auxiliary model's `TrainConfig`: its budget B in images (the paper's name for it)
#   and `trainable="decoder"`;
# - `n_synth`: n_s, and `sample_batch`: how many images the sampler draws at once.

# %%
preset = replace(
    PRESETS["tiny"], name="tutorial05", resolution=8, n_train=len(x), hflip=False,
    sigma_data=round(float(x.std()), 2),
    unet=dict(channels=8 if FAST else 32, channel_mult=(1, 2), blocks_per_level=1,
              attn_resolutions=(), dropout=0.0, num_freqs=4 if FAST else 8,
              emb_mult=2 if FAST else 4, in_channels=1, out_channels=1),
    batch=64,                                      # images per training step
    base_images=2048 if FAST else 80_000,          # the base's budget, images seen
    ema_half_life_images=256 if FAST else 8000,    # EMA of the weights (EDM samples from it)
    n_synth=64 if FAST else 1000,                  # n_s = |S|
    aux_budgets=(64, 192) if FAST else (2000, 8000),  # the aux's budgets B, images seen
    omegas=(-1.0, 0.0, 0.5, 1.0, 2.0),             # w = 0 is the base, w = -1 the aux
    num_steps=4 if FAST else 10,                   # Heun steps N: 2N - 1 network evaluations
    n_eval=64 if FAST else 500, sample_batch=64 if FAST else 250,
    checkpoint_every_images=10 ** 9)               # no checkpoints in a tutorial
recipe = make_recipe(preset, aux_images=preset.aux_budgets[0])
print("formulation:", type(recipe.formulation).__name__, type(recipe.formulation.precond).__name__,
      f"sigma_data {recipe.formulation.precond.sigma_data}, {recipe.formulation.num_steps} Heun steps "
      f"= {recipe.formulation.nfe()} evaluations")
print("base:", recipe.base)
print("aux: ", recipe.aux)
batch, half_life = recipe.base.batch_size, recipe.base.ema_half_life_images
beta = 0.5 ** (batch / half_life)
print(f"EMA: beta = 0.5^({batch}/{half_life:g}) = {beta:.4f} per step; after {half_life:g} "
      f"images beta^steps = {beta ** (half_life / batch):.3f}")
print(f"n_s = {recipe.n_synth}; the base sees {recipe.base.images:,} images = "
      f"{recipe.base.images / len(x):.0f} epochs of {len(x)}")

# %% [markdown]
# ## 3. Step 1: train the base model
# `train_base(data, recipe, seed)` builds the UNet and trains it with the EDM loss on the real
# digits; it returns the EMA weights and the mean loss of each epoch. Given an integer seed,
# every epoch's shuffle and every step's random draws come from their own keyed stream, so a run
# given a `checkpoint` path can be interrupted and resumed bit for bit
# (`tests/test_train.py::test_an_interrupted_run_resumes_bit_for_bit`; the command of section 8
# does this with `--resume`). `progress=True` draws a bar (in a log: a line now and then).

# %%
t0 = time.perf_counter()
SEED = 0
with ops.network_threads():  # as the pipeline trains: the UNet's BLAS calls on one thread
    base, base_losses = train_base(x, recipe, SEED, progress=True)  # the EMA model; loss per epoch
seconds["step 1: train base"] = time.perf_counter() - t0
print(f"UNet with {base.num_parameters():,} parameters, {len(base_losses)} epochs in "
      f"{seconds['step 1: train base']:.1f} s")
for epoch in np.unique(np.linspace(0, len(base_losses) - 1, 8).astype(int)):
    print(f"epoch {epoch:3d}  mean loss {base_losses[epoch]:.3f}")
assert base_losses[-1] < base_losses[0]

# %% [markdown]
# ## 4. Step 2: the synthetic set S, one seed per image
# `synthesize(base, recipe, n, seeds)` draws n images from the base. Given a list of integer
# seeds it follows EDM's `generate.py`: image i is drawn with its own generator seeded by
# seeds[i] (`StackedRandomGenerator`), so it depends on its seed alone, not on the batch it is
# drawn in or on the batch size. S uses the seeds from `SYNTH_SEEDS_FROM` on (10^9), so it never
# shares a seed with the evaluation images (0, 1, 2, ...; `parse_seeds("0-99")` is EDM's syntax).
# The check: one image of S drawn alone equals the same image drawn in the batch.

# %%
t0 = time.perf_counter()
synth_seeds = list(range(SYNTH_SEEDS_FROM, SYNTH_SEEDS_FROM + preset.n_synth))
with ops.network_threads():
    S = synthesize(base, recipe, preset.n_synth, synth_seeds, progress=True)  # n_s,1,8,8 float32
    alone = synthesize(base, recipe, 1, [synth_seeds[5]])  # 1,1,8,8: image 5 without its batch
seconds["step 2: synthesize S"] = time.perf_counter() - t0
diff = float(np.abs(alone[0] - S[5]).max())
print(f"S: {S.shape} in {seconds['step 2: synthesize S']:.1f} s, mean {S.mean():.3f}, std "
      f"{S.std():.3f} (real: {x.mean():.3f}, {x.std():.3f}), range [{S.min():.2f}, {S.max():.2f}]")
same_uint8 = np.array_equal(to_uint8(alone), to_uint8(S[5:6]))
print(f"image 5 drawn alone vs in its batch of {min(len(S), recipe.sample_batch)}: max |diff| = "
      f"{diff:.1e}; as uint8 pixels: {'identical' if same_uint8 else 'differ'}")
# The random numbers are identical; the network is the same function of each image, but BLAS may
# sum a convolution's products in another order for another batch size: float32 rounding,
# 1e-6 of the pixel range, is allowed.
assert diff <= 2e-6
print("parse_seeds('0-3,7') =", parse_seeds("0-3,7"))

# %% [markdown]
# ## 5. Step 3: the auxiliary model, decoder only
# `train_aux(base, S, recipe, seed)` fine-tunes a **copy** of the base on S alone for B images (the
# base is untouched). SIMS learns from this model the direction in which training on the model's
# own samples pushes it. (S, printed above, is already off: its mean and spread differ from the
# real digits'. The aux learns those errors too, and guidance will step away from them.) With
# `trainable="decoder"` (paper Appendix A) only the decoder learns: the optimizer holds the
# decoder's parameters and the backward pass stops at the encoder. We train one auxiliary model
# per budget B (Figure 3's rows), each with a seed derived from (seed, 2, B) as the pipeline
# does, and check on each that the encoder is exactly the base's.

# %%
t0 = time.perf_counter()
auxes = {}
base_sd = base.state_dict()
for B in preset.aux_budgets:
    with ops.network_threads():
        aux, aux_losses = train_aux(base, S, make_recipe(preset, aux_images=B),
                                    derive_seed(SEED, 2, B), progress=True)
    auxes[B] = aux
    aux_sd = aux.state_dict()
    enc = [k for k in base_sd if k.startswith("encoder.")]
    dec = [k for k in base_sd if k.startswith("decoder.")]
    same_enc = sum(np.array_equal(base_sd[k], aux_sd[k]) for k in enc)
    moved_dec = sum(not np.array_equal(base_sd[k], aux_sd[k]) for k in dec)
    print(f"aux B={B}: {len(aux_losses)} epochs of S, loss first {aux_losses[0]:.3f} last "
          f"{aux_losses[-1]:.3f}; encoder tensors unchanged {same_enc}/{len(enc)}, decoder "
          f"tensors changed {moved_dec}/{len(dec)}")
    assert same_enc == len(enc) and moved_dec > 0
del S  # Algorithm 1: S is discarded once the aux is trained
seconds["step 3: fine-tune aux"] = time.perf_counter() - t0

# %% [markdown]
# ## 6. Step 4: guided sampling
# The SIMS denoiser is D = (1 + w) D_base - w D_aux (eq. 5, `minisims.guidance.sims_combine`),
# used by the unchanged EDM sampler: w = 0 is the base, w = -1 the auxiliary model, w > 0 steps
# away from what the model learns from its own samples. Two checks, on the same seeds:
#
# - the guided sampler at w = 0 gives the base's images and at w = -1 the aux's, **bit for bit**
#   (eq. 5 returns one input exactly at the endpoints, and guidance never changes which random
#   numbers are drawn);
# - `SharedEncoderPair`: because the aux kept the base's encoder, one encoder pass can feed both
#   decoders. It gives the same images as two full networks, with 1 encoder + 2 decoder passes
#   per guided evaluation instead of 2 + 2.

# %%
t0 = time.perf_counter()
aux = auxes[preset.aux_budgets[0]]
seeds = parse_seeds("0-7")
shape = base.sample_shape(len(seeds))  # 8,1,8,8
pair = SharedEncoderPair(recipe.formulation, base, aux)
for w, alone_net, name in [(0.0, base, "base"), (-1.0, aux, "aux")]:
    guided = sample_sims(base, aux, recipe, w, len(seeds), seeds)         # two networks
    shared = pair.sample(shape, StackedRandomGenerator(seeds), w=w)       # shared encoder
    single = synthesize(alone_net, recipe, len(seeds), seeds)             # one network alone
    print(f"w = {w:4.1f}: guided == {name} alone: {np.array_equal(guided, single)}, "
          f"shared-encoder == {name} alone: {np.array_equal(shared.astype(np.float32), single)}")
    assert np.array_equal(guided, single) and np.array_equal(shared.astype(np.float32), single)
pair = SharedEncoderPair(recipe.formulation, base, aux)  # fresh counters
shared = pair.sample(shape, StackedRandomGenerator(seeds), w=1.0)  # 8,1,8,8 float64
full = sample_sims(base, aux, recipe, 1.0, len(seeds), seeds)       # 8,1,8,8 float32
print(f"w = 1: shared encoder vs two full networks, max |diff| = "
      f"{np.abs(shared.astype(np.float32) - full).max():.1e}")
assert np.array_equal(shared.astype(np.float32), full)
nfe = recipe.formulation.nfe()
print(f"{nfe} guided evaluations: {pair.encoder_passes} encoder + {pair.decoder_passes} decoder "
      f"passes; two full networks: {2 * nfe} + {2 * nfe}")
assert (pair.encoder_passes, pair.decoder_passes) == (nfe, 2 * nfe)

# %% [markdown]
# ### What the sharing saves: count compute, not passes
# The paper (Appendix A) says the encoder and the decoder each do half of one evaluation's work,
# so sharing the encoder costs 1.5x one model instead of 2x. That counts passes. In this UNet the
# decoder does more than the encoder: it holds the two middle ResBlocks at the lowest resolution
# (the first with self-attention), and each of its levels has one ResBlock more than the
# encoder's, each reading its input concatenated with a skip, so with more input channels than
# the encoder's block at that level. So we time the two halves on a batch of
# the sampler's size, and count their parameters. The guided evaluation with a shared encoder
# costs (t_enc + 2 t_dec) / (t_enc + t_dec) of one model's, against 2 for two full networks.

# %%
rng = np.random.default_rng(0)
probe = rng.standard_normal((recipe.sample_batch,) + shape[1:]).astype(np.float32)  # n,1,8,8
c_noise = np.full(recipe.sample_batch, np.log(0.5) / 4, np.float32)  # EDM's c_noise at sigma 0.5


def best_time(fn, repeats=7 if FAST else 15):
    """The fastest of several runs: the least disturbed by other work on a busy machine."""
    times = []
    for _ in range(repeats):
        t1 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t1)
    return min(times)


with ops.network_threads():
    enc_out = base.encode(probe, c_noise)
    t_enc = best_time(lambda: base.encode(probe, c_noise))
    t_dec = best_time(lambda: base.decode(enc_out))
n_enc = sum(v.size for k, v in base_sd.items() if k.startswith("encoder."))
n_dec = sum(v.size for k, v in base_sd.items() if k.startswith("decoder."))
enc_share = t_enc / (t_enc + t_dec)
shared_cost = (t_enc + 2 * t_dec) / (t_enc + t_dec)
print(f"one pass over {recipe.sample_batch} images: encoder {1e3 * t_enc:.1f} ms, decoder "
      f"{1e3 * t_dec:.1f} ms (encoder {100 * enc_share:.0f}% of the time; parameters: encoder "
      f"{n_enc:,}, decoder {n_dec:,})")
print(f"a guided evaluation with the shared encoder: {shared_cost:.2f}x one model's time "
      f"(1.5x if the halves were equal), two full networks 2x: sharing saves "
      f"{100 * (1 - shared_cost / 2):.0f}% of guided sampling")
seconds["step 4: checks"] = time.perf_counter() - t0

# %% [markdown]
# ## 7. How good are the samples?
# The paper reports FID: the Frechet distance between Gaussians fitted to Inception-v3 features
# of 50k samples and of the training set. Inception's weights are a download, so minisims
# measures the same distance on features any machine builds from nothing: a fixed random
# convolutional network (`image_stats(images, "randconv")`, three channels in, so we repeat the
# grey one). The number is labelled `FD_randconv` (`fd_label`), never FID: it is not comparable
# with published FIDs. Lower is better.
#
# Digits allow a second, more concrete measure. A logistic regression (scikit-learn) trained on
# real digits says, for any 8x8 image, how probable each of the ten digits is. Its **digit-
# likeness** of a set of images is the mean, over the images, of the largest of those
# probabilities: near 1 when each image is clearly one digit, near 0.1 for noise. It is a rough
# measure (a linear classifier can be sure of an odd image, and it ignores whether all ten
# digits appear), so we print the share of each predicted digit too. Higher is better. We train
# it on three quarters of the real digits and report its accuracy and digit-likeness on the
# other quarter: the score of real data.
#
# `sample_images(preset, base, aux, w, seeds)` is the pipeline's step 4 (uint8 NHWC, the shared
# encoder pass for a decoder-only aux). Every w uses the same seeds, so every image starts from
# the same noise and the columns differ by the guidance alone. Both measures from a few hundred
# images are noisy (and FD biased upward), so we also measure the base (w = 0) on a **second**
# set of seeds: an FD gain smaller than the gap between the two is no gain. The best cell is
# picked on the first set and then sampled, and judged, on the second: the smallest of many
# noisy numbers, read on the images it was picked on, flatters its cell. Digit-likeness is a
# mean over images, and SIMS draws each image from the same seed as the base, so we compare the
# two seed by seed: a gain counts when the mean of the per-seed differences exceeds twice its
# standard error (their spread over the square root of their number).
#
# The two measures need not agree. The classifier rewards an image for looking like its idea of
# one digit, exaggerated or not, and says nothing of variety; the FD compares the spread of the
# whole set with the real digits'. Check in the table whether they rank the w the same.

# %%
t0 = time.perf_counter()
flat = images.reshape(len(images), -1) / 255.0  # N,64 in [0, 1]
fit_idx, test_idx = train_test_split(np.arange(len(images)), test_size=0.25, random_state=0,
                                     stratify=digits.target)
clf = LogisticRegression(max_iter=2000).fit(flat[fit_idx], digits.target[fit_idx])


def likeness(imgs):
    """Per image of uint8 (n,8,8,1): how sure the classifier is (its largest probability), and
    the digit it reads. The digit-likeness of the set is the mean of the first."""
    proba = clf.predict_proba(imgs.reshape(len(imgs), -1) / 255.0)  # n,10
    return proba.max(axis=1), proba.argmax(axis=1)  # n, n


accuracy = clf.score(flat[test_idx], digits.target[test_idx])
real_like = float(likeness(images[test_idx])[0].mean())
print(f"classifier: accuracy {accuracy:.3f} on {len(test_idx)} held-out real digits, their "
      f"digit-likeness {real_like:.3f}")

label = fd_label("randconv")
ref = image_stats(rgb(images), "randconv")  # mu (448,), sigma (448,448) of the real digits


def fd_of(imgs):
    return float(fd_from_stats(*image_stats(rgb(imgs), "randconv"), *ref))


eval_seeds = list(range(preset.n_eval))
eval_seeds2 = list(range(preset.n_eval, 2 * preset.n_eval))
cells = [(B, w) for B in preset.aux_budgets for w in preset.omegas if w != 0]
samples = {}  # (B, w) -> uint8 (n_eval,8,8,1); w = 0 is the base, under B = None
progress = bar(total=len(cells) + 2, desc="sampling", unit="set")
for key, seed_list in [((None, 0.0), eval_seeds), ((None, "seeds 2"), eval_seeds2)]:
    samples[key] = sample_images(preset, base, None, 0.0, seed_list)
    progress.update(1)
for B, w in cells:
    samples[B, w] = sample_images(preset, base, auxes[B], w, eval_seeds)
    progress.update(1)
progress.close()
fd = {key: fd_of(imgs) for key, imgs in samples.items()}
sure = {key: likeness(imgs)[0] for key, imgs in samples.items()}  # (B, w) -> n_eval scores
like = {key: float(v.mean()) for key, v in sure.items()}  # (B, w) -> digit-likeness
base_fd, base_fd2 = fd[None, 0.0], fd[None, "seeds 2"]
base_like, base_like2 = like[None, 0.0], like[None, "seeds 2"]
fd_noise = abs(base_fd - base_fd2)
print(f"{preset.n_eval} samples per cell. base (w = 0): {label} {base_fd:.3f} and {base_fd2:.3f} "
      f"on two seed sets (noise {fd_noise:.3f}); digit-likeness {base_like:.3f} and "
      f"{base_like2:.3f}; real digits {real_like:.3f}")
fd_table = np.array([[base_fd if w == 0 else fd[B, w] for w in preset.omegas]
                     for B in preset.aux_budgets])  # B,W
for i, B in enumerate(preset.aux_budgets):
    print(f"B = {B:5d}  {label}: " + "  ".join(f"w={w:g}: {v:.3f}" for w, v in
                                                zip(preset.omegas, fd_table[i])))
    print(f"{'':9s}digit-likeness: " + "  ".join(
        f"w={w:g}: {base_like if w == 0 else like[B, w]:.3f}" for w in preset.omegas))
best_fd, best_B, best_w = min((fd[B, w], B, w) for B, w in cells if w > 0)  # chosen on seeds 1
test = sample_images(preset, base, auxes[best_B], best_w, eval_seeds2)  # judged on seeds 2
test_fd, test_sure = fd_of(test), likeness(test)[0]
test_like = float(test_sure.mean())
paired = test_sure - sure[None, "seeds 2"]  # n_eval: SIMS minus base, seed by seed
like_noise = 2 * paired.std(ddof=1) / np.sqrt(len(paired))  # twice the standard error
fd_verdict = "better than the base by more than the noise" if base_fd2 - test_fd > fd_noise else \
    "not better than the base by more than the noise"
like_verdict = "better" if test_like - base_like2 > like_noise else "not better"
print(f"best SIMS cell by {label} on the first seeds: B = {best_B}, w = {best_w:g} "
      f"({best_fd:.3f}). On the second seeds, which did not choose it: {label} {test_fd:.3f} "
      f"against the base's {base_fd2:.3f}, {fd_verdict}; digit-likeness {test_like:.3f} against "
      f"{base_like2:.3f}: {like_verdict} by more than twice the standard error of the per-seed "
      f"differences ({like_noise:.3f})")
path = os.path.join(OUT, "05_fd_heatmap.png")
fd_heatmap(fd_table, preset.aux_budgets, preset.omegas, path, base_fd=base_fd, label=label,
           title=f"SIMS on 8x8 digits ({'FAST' if FAST else 'full'} size), the first seeds")
show(path)
seconds["step 4: sample and measure"] = time.perf_counter() - t0

# %% [markdown]
# The heatmap is Figure 3 of the paper in miniature: rows are the aux budgets B, columns w, the cell
# chosen on the first seeds boxed. Now the pictures. Each column below starts from the same noise
# (the same seed); each row is one model: the aux (w = -1), the base (w = 0) and SIMS at each w > 0,
# all with the budget B of the best cell. Beside each row are its two measures over all its samples;
# above each image, the digit the classifier reads in it.

# %%
n_show = 12
rows = [(-1.0, "aux"), (0.0, "base")] + [(w, "SIMS") for w in preset.omegas if w > 0]
fig, axes = plt.subplots(len(rows), n_show, figsize=(1.0 + 0.62 * n_show, 0.9 * len(rows)))
for r, (w, name) in enumerate(rows):
    key = (None, 0.0) if w == 0 else (best_B, w)
    shown = samples[key][:n_show]  # n_show,8,8,1: seeds 0..n_show-1 in every row
    _, read = likeness(shown)
    for c in range(n_show):
        ax = axes[r, c]
        ax.imshow(shown[c, :, :, 0], cmap="gray", vmin=0, vmax=255)
        ax.set_title(str(read[c]), fontsize=7, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[r, 0].set_ylabel(f"{name} w={w:g}\n{fd[key]:.2f} / {like[key]:.2f}", fontsize=7,
                          rotation=0, ha="right", va="center")
fig.suptitle(f"same noise in each column; B = {best_B}; beside each row: {label} (lower is "
             f"better) / digit-likeness (higher is better)", fontsize=8)
fig.tight_layout()
show(fig, os.path.join(OUT, "05_samples_by_w.png"))
share = {name: np.bincount(likeness(samples[key])[1], minlength=10) / preset.n_eval
         for name, key in [("base", (None, 0.0)), ("aux", (best_B, -1.0)),
                           (f"SIMS w={best_w:g}", (best_B, best_w))]}
for name, s in share.items():
    print(f"{name:10s} share of each digit 0-9: {np.round(s, 2)}")
print("figures in", OUT)

# %% [markdown]
# How to read it. The premise of SIMS is that a model fine-tuned on its own samples drifts away
# from the data: compare the aux row (w = -1) with the base's. SIMS then steps the other way,
# by w. The lines printed above say, for this run, whether the best SIMS cell, judged on seeds that
# did not choose it, beats the base by more than the noise, on each measure. The two seed sets give
# one draw of the FD's sampling noise, and the model, S and the aux were each trained once, so even
# a clear gain here is a hint, not a result. Look at the rows too: where a measure moves, can you
# see why in the digits, and does a large w improve them or distort them? At FAST size the base has
# seen a few thousand images and draws blobs; the table is noise, and the verdict says so or not by
# chance.
#
# ## 8. All of it in one command, on CIFAR-10
# `minisims.images.pipeline` wraps these same steps with a file between each
# (`step_train` -> `base.npz`, `step_synth` -> `synthetic.npz`, `step_aux` -> `aux_<B>.npz`,
# samples as PNGs and npz), and `run_sims` adds the FD table, the heatmap and `results.json`. From
# the shell, with your own copy of CIFAR-10 (its MD5 checked; the appendix shows how it is read),
# the `cpu` preset (16x16 images, 10000 of them, budgets of 40000 images seen: about 6 minutes
# per training seed on 2 cores), at three training seeds:
#
#     python -m minisims.images sims --data ~/data/cifar-10-python.tar.gz --preset cpu --outdir runs/cifar16 --train-seeds 0,1,2
#
# Each run picks its (B, w) on one set of sampling seeds and reports it on another, as section 7
# does, with bootstrap standard errors for every FD; the training seed moves the FD more than the
# sampling does, so `summary.md` gives every cell over the three. `--resume` continues an
# interrupted run; `train`, `synth`, `aux`, `sample` and `fd` run one step each;
# `python -m minisims.images --help` lists them all.

# %%
seconds["total"] = time.perf_counter() - t_start
for name, s in seconds.items():
    print(f"{name:28s} {s:6.1f} s")

# %% [markdown]
# ## Summary
# - Images go from uint8 NHWC files to float32 NCHW in [-1, 1] and back exactly; a grey image is
#   one channel, and the UNet's `in_channels` says so.
# - Algorithm 1 on images is four library calls: `train_base`, `synthesize` (one seed per image),
#   `train_aux` (a copy, decoder only, on S alone), `sample_sims` / `sample_images` (eq. 5).
# - Budgets and the EMA's half-life are counted in images seen, independent of the batch size.
# - w = 0 and w = -1 reproduce the base and the aux bit for bit; a decoder-only aux shares the
#   encoder pass, the same images for 1 encoder + 2 decoder passes. What that saves depends on
#   how the work splits between encoder and decoder: measure it, as section 6 does.
# - A measure means little without its noise: measure the base at a second seed set, and look at
#   the samples drawn from the same noise.
#
# ## Exercises
# 1. Set `trainable="all"` for the aux (`replace(preset, aux_trainable="all")`) and build a
#    `SharedEncoderPair`: why is it refused? Do the measures by w change?
# 2. Halve and double `base_images`. Does the best w move toward smaller values as the base
#    improves, as the paper's Figure 3 suggests? With one run per budget, is a move of one grid
#    step evidence?
# 3. Double the preset's `n_eval` and watch the gap between the base's two FDs (the noise)
#    shrink, and every FD fall: FD estimated from n samples is biased upward by roughly a
#    constant over n.
# 4. Replace `"randconv"` by `"pixels"` in section 7. Which features separate the w columns more
#    clearly from the sampling noise? Does either agree with the digit-likeness?
# 5. Time the encoder and decoder of the `cpu` preset's UNet (16x16, `PRESETS["cpu"].unet_config()`)
#    as section 6 does. Is its shared-encoder cost closer to 1.5x?
