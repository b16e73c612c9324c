# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Tutorial 05: SIMS on images, step by step, at tiny size
#
# Tutorial 04 built the UNet and its backward pass. Here we run the SIMS paper's image experiment
# (Section 4.1, Figure 3) one step at a time, on images cut from real photographs and stored in
# exactly CIFAR-10's format:
#
# 1. the data: CIFAR-10's archive, its MD5, the restricted unpickler, uint8 NHWC -> [-1, 1] NCHW;
# 2. the recipe: the network, the EDM formulation, and the budgets counted in images seen;
# 3. Algorithm 1, step 1: train the base model;
# 4. step 2: sample the synthetic set S, one seed per image;
# 5. step 3: fine-tune a copy of the base on S alone, decoder only: the auxiliary model;
# 6. step 4: sample with (1 + w) D_base - w D_aux (paper eq. 5) at several w, through a shared
#    encoder pass;
# 7. measure a Frechet distance by w, with the sampling noise beside it;
# 8. the one command that does all of this at a larger size.
#
# Every step calls the library (`minisims.sims`, `minisims.images.pipeline`); nothing here
# re-implements it. The images are 8x8 so that everything runs on a laptop CPU: at this size the
# samples are coloured blobs, and the point is the machinery, not the pictures.
#
# Run it with `python tutorials/05_image_sims.py` (about 1 minute on this project's busy 2-core
# machine; each stage's time is printed at the end), or open it as a notebook with jupytext.
# `MINISIMS_TUTORIAL_FAST=1` shrinks everything (about 10 s; the tests do this);
# `MINISIMS_TUTORIAL_OUT` names the folder for the figures. It needs scikit-image for the
# photographs (`pip install -e ".[test]"`).

# %%
import os
import pickle
import pickletools
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np

from minisims import backend
from minisims.data import DataError, OFFICIAL_MD5, load_images, to_model, to_uint8
from minisims.data.cifar10 import file_md5
from minisims.data.safe_pickle import ForbiddenGlobal, restricted_loads
from minisims.exports import image_grid
from minisims.features import fd_label, image_stats
from minisims.images import PRESETS
from minisims.images.pipeline import downsample, make_recipe, sample_images
from minisims.metrics import fd_from_stats
from minisims.plots import fd_heatmap
from minisims.shared_encoder import SharedEncoderPair
from minisims.sims import SYNTH_SEEDS_FROM, sample_sims, synthesize, train_aux, train_base
from minisims.streams import StackedRandomGenerator, derive_seed, parse_seeds

FAST = os.environ.get("MINISIMS_TUTORIAL_FAST") == "1"
OUT = os.environ.get("MINISIMS_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="minisims-tut05-")
os.makedirs(OUT, exist_ok=True)
# 8x8 images make small matrices: one BLAS thread is fastest, a second one only spins (and slows
# everything down badly on a busy machine). Applied from here on, as in tutorial 04.
_blas_limit = backend.blas_threads(1)
seconds = {}  # wall time of each stage, printed at the end
t_start = time.perf_counter()

# %% [markdown]
# ## 1. The data
# CIFAR-10 ships as `cifar-10-python.tar.gz`: a folder `cifar-10-batches-py/` holding five
# training batches and a test batch, each a **Python 2 pickle** of a dict whose `b"data"` is uint8
# (n, 3072): per image the 1024 red, then green, then blue values of a 32x32 picture.
#
# This tutorial cannot download it, so `tests/cifar_like.py` writes an archive of exactly that
# layout, byte for byte as Python 2 pickled it, filled with 32x32 patches of scikit-image's bundled
# photographs (the label is the photograph a patch came from). It stands in for your own
# `cifar-10-python.tar.gz`: with a real copy you would pass its path to `load_images` and leave
# `md5` at its default, the official digest, which is checked before anything is read.
# (`tests/` is not a package, so we put its folder on `sys.path`.)

# %%
t0 = time.perf_counter()
HERE = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else os.getcwd()
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from cifar_like import make_cifar_like  # noqa: E402  (tests/cifar_like.py)

PER_BATCH = 16 if FAST else 100  # images per batch file: 5 training batches + 1 test batch
cifar = make_cifar_like(tempfile.mkdtemp(prefix="minisims-tut05-data-"), per_batch=PER_BATCH)
print(f"{cifar.archive}: {os.path.getsize(cifar.archive):,} bytes")
print(f"official CIFAR-10 MD5 {OFFICIAL_MD5}; this archive's {file_md5(cifar.archive)}")
try:  # the default md5 is the official one: a different file is refused before it is read
    load_images(cifar.archive)
except DataError as e:
    print("refused:", str(e)[:110], "...")
real = load_images(cifar.archive, split="train", md5=file_md5(cifar.archive))  # our own digest
print(f"{real.source}: images {real.images.dtype} {real.images.shape}, labels {real.labels[:8]}")
assert np.array_equal(real.images, cifar.train_images)  # what was written is what is read
print("the 32x32 images read back equal the ones written, pixel for pixel")

# %% [markdown]
# ### Why a restricted unpickler
# Pickle is a little stack machine: its GLOBAL opcode imports any name and REDUCE calls it, so
# `pickle.load` on a file from the internet can run `os.system`. `minisims.data.safe_pickle`
# admits only the four globals a CIFAR batch needs (numpy's `_reconstruct`, under its two
# spellings, `ndarray` and `dtype`) and refuses everything else **by name, before importing or
# calling it**. Below is a pickle that would run a shell command. Building it runs nothing, and
# the restricted unpickler stops at the GLOBAL, so it is safe to show.

# %%
class Payload:
    def __reduce__(self):  # "to rebuild me, call os.system('echo pwned')"
        return (os.system, ("echo pwned",))


evil = pickle.dumps(Payload(), protocol=2)
print("opcodes:", " ".join(op.name if arg is None else f"{op.name}({arg!r})"
                           for op, arg, _ in pickletools.genops(evil)))
try:
    restricted_loads(evil)
    raise AssertionError("the restricted unpickler loaded a pickle that calls os.system")
except ForbiddenGlobal as e:
    print("refused:", e)

# %% [markdown]
# ### From files to the model's scale
# Files hold uint8 images NHWC, (N, 32, 32, 3). The models work on float32 NCHW in [-1, 1]
# (x / 127.5 - 1, the scale EDM assumes), and `to_uint8` goes back exactly. For speed we
# average 4x4 blocks down to 8x8 (`downsample`: CIFAR-10's `cpu` preset averages 2x2 to 16x16).

# %%
preset = replace(
    PRESETS["tiny"], name="tutorial05", n_train=64 if FAST else 500,
    unet=PRESETS["tiny"].unet if FAST else dict(channels=16, channel_mult=(1, 2), blocks_per_level=1,
                                                 attn_resolutions=(), dropout=0.0, num_freqs=8),
    base_images=1024 if FAST else 8000,            # the base's budget, images seen
    ema_half_life_images=64 if FAST else 1000,    # EMA of the weights (EDM samples from it)
    n_synth=32 if FAST else 400,                  # n_s = |S|
    aux_budgets=(64, 192) if FAST else (800, 3200),  # the aux's budgets B, images seen
    omegas=(-1.0, 0.0, 0.5, 1.0, 2.0),            # w = 0 is the base, w = -1 the aux
    num_steps=6 if FAST else 6,                   # Heun steps N: 2N - 1 network evaluations
    n_eval=32 if FAST else 200, sample_batch=32 if FAST else 100)
images = downsample(real.images[:preset.n_train], preset.resolution)  # N,8,8,3 uint8
x = to_model(images)  # N,3,8,8 float32 in [-1, 1]
k = 32 // preset.resolution
manual = real.images[0, :k, :k].reshape(-1, 3).mean(axis=0)  # the top-left 4x4 block of image 0
print(f"downsample {real.images.shape[1:3]} -> {images.shape[1:3]}: pixel (0,0) of image 0 "
      f"{images[0, 0, 0]} = rint of the block mean {manual.round(2)}")
assert np.array_equal(images[0, 0, 0], np.rint(manual))
print(f"to_model: {x.dtype} {x.shape}, range [{x.min():.2f}, {x.max():.2f}], std {x.std():.3f}")
assert np.array_equal(to_uint8(x), images)  # the round trip is exact for every uint8 value
print("to_uint8(to_model(images)) == images: exact")
big = np.repeat(np.repeat(images[:16], k, axis=1), k, axis=2)  # 16,32,32,3: blown up to compare
image_grid(np.concatenate([real.images[:16], big]), os.path.join(OUT, "05_data.png"), cols=16,
           labels=["32x32"] + [None] * 15 + ["8x8"] + [None] * 15, scale=2)
seconds["data"] = time.perf_counter() - t0

# %% [markdown]
# ## 2. The recipe
# `make_recipe(preset, aux_images=B)` turns the preset into Algorithm 1's recipe
# (`minisims.sims.SIMSRecipe`), which the four steps read:
#
# - `make_model`: a fresh UNet (`UNetConfig` from the preset), encoder and decoder separate;
# - `formulation`: EDM (Karras et al. 2022): preconditioning with sigma_data = 0.5, the loss with
#   ln sigma ~ N(-1.2, 1.2^2), the Heun sampler with N steps (2N - 1 network evaluations);
# - `base`: a `TrainConfig`. The budget is **images seen** (EDM's and the paper's unit), not
#   epochs: the run stops at the first step at which that many images went through the network.
#   The EMA of the weights has a half-life in images too: after each step of B images the average
#   keeps beta = 0.5^(B / half-life) of itself, so the half-life does not change with the batch;
# - `aux`: the auxiliary model's `TrainConfig`: its budget B in images and `trainable="decoder"`;
# - `n_synth`: n_s, and `sample_batch`: how many images the sampler draws at once.

# %%
recipe = make_recipe(preset, aux_images=preset.aux_budgets[0])
print("formulation:", type(recipe.formulation).__name__, type(recipe.formulation.precond).__name__,
      f"sigma_data {recipe.formulation.precond.sigma_data}, {recipe.formulation.num_steps} Heun steps "
      f"= {recipe.formulation.nfe()} evaluations")
print("base:", recipe.base)
print("aux: ", recipe.aux)
beta = 0.5 ** (recipe.base.batch_size / recipe.base.ema_half_life_images)
print(f"EMA: beta = 0.5^({recipe.base.batch_size}/{recipe.base.ema_half_life_images:g}) = {beta:.4f} "
      f"per step; after {recipe.base.ema_half_life_images:g} images beta^steps = "
      f"{beta ** (recipe.base.ema_half_life_images / recipe.base.batch_size):.3f}")
print(f"n_s = {recipe.n_synth}; the base sees {recipe.base.images:,} images = "
      f"{recipe.base.images / len(x):.0f} epochs of {len(x)}")

# %% [markdown]
# ## 3. Step 1: train the base model
# `train_base(data, recipe, seed)` builds the UNet and trains it with the EDM loss on the real
# images, mirrored left-right at random (`hflip`); it returns the EMA weights and the mean loss of
# each epoch. Given an integer seed, every epoch's shuffle and every step's random draws come from
# their own keyed stream, so a run given a `checkpoint` path can be interrupted and resumed bit for
# bit (`tests/test_train.py::test_an_interrupted_run_resumes_bit_for_bit`; the command of section 8
# does this with `--resume`).

# %%
t0 = time.perf_counter()
SEED = 0
base, base_losses = train_base(x, recipe, SEED)  # the EMA model; loss per epoch
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
S = synthesize(base, recipe, preset.n_synth, synth_seeds)  # n_s,3,8,8 float32
seconds["step 2: synthesize S"] = time.perf_counter() - t0
alone = synthesize(base, recipe, 1, [synth_seeds[5]])  # 1,3,8,8: image 5 without its batch
diff = float(np.abs(alone[0] - S[5]).max())
print(f"S: {S.shape} in {seconds['step 2: synthesize S']:.1f} s, std {S.std():.3f} (real: "
      f"{x.std():.3f}), range [{S.min():.2f}, {S.max():.2f}]")
same_uint8 = np.array_equal(to_uint8(alone), to_uint8(S[5:6]))
print(f"image 5 drawn alone vs in its batch of {len(S)}: max |diff| = {diff:.1e}; "
      f"as uint8 pixels: {'identical' if same_uint8 else 'differ'}")
# The random numbers are identical; the network is the same function of each image, but BLAS may
# sum a convolution's products in another order for another batch size: float32 rounding,
# 1e-6 of the pixel range, is allowed.
assert diff <= 2e-6
print("parse_seeds('0-3,7') =", parse_seeds("0-3,7"))

# %% [markdown]
# ## 5. Step 3: the auxiliary model, decoder only
# `train_aux(base, S, recipe, seed)` fine-tunes a **copy** of the base on S alone for B images (the
# base is untouched). SIMS learns from this model the direction in which training on the model's
# own samples pushes it. (S, printed above, is already off: its spread differs from the real
# images'. The aux learns those errors too, and guidance will step away from them.) With
# `trainable="decoder"` (paper Appendix A) only the decoder learns: the optimizer holds the
# decoder's parameters and the backward pass stops at the encoder. We
# train one auxiliary model per budget B (Figure 3's rows), each with a seed derived from
# (seed, 2, B) as the pipeline does, and check on each that the encoder is exactly the base's.

# %%
t0 = time.perf_counter()
auxes = {}
base_sd = base.state_dict()
for B in preset.aux_budgets:
    aux, aux_losses = train_aux(base, S, make_recipe(preset, aux_images=B), derive_seed(SEED, 2, B))
    auxes[B] = aux
    aux_sd = aux.state_dict()
    enc = [k for k in base_sd if k.startswith("encoder.")]
    dec = [k for k in base_sd if k.startswith("decoder.")]
    same_enc = sum(np.array_equal(base_sd[k], aux_sd[k]) for k in enc)
    moved_dec = sum(not np.array_equal(base_sd[k], aux_sd[k]) for k in dec)
    print(f"aux B={B}: loss by epoch {np.round(aux_losses, 3)}; encoder tensors unchanged "
          f"{same_enc}/{len(enc)}, decoder tensors changed {moved_dec}/{len(dec)}")
    assert same_enc == len(enc) and moved_dec > 0
del S  # Algorithm 1: S is discarded once the aux is trained
seconds["step 3: fine-tune aux"] = time.perf_counter() - t0

# %% [markdown]
# ## 6. Step 4: guided sampling
# The SIMS denoiser is D = (1 + w) D_base - w D_aux (eq. 5, `minisims.guidance.sims_combine`),
# used by the unchanged EDM sampler: w = 0 is the base, w = -1 the auxiliary model, w > 0 steps
# away from what the model learns from its own samples. Three checks, on the same seeds:
#
# - the guided sampler at w = 0 gives the base's images and at w = -1 the aux's, **bit for bit**
#   (eq. 5 returns one input exactly at the endpoints, and guidance never changes which random
#   numbers are drawn);
# - `SharedEncoderPair`: because the aux kept the base's encoder, one encoder pass can feed both
#   decoders. It gives the same images as two full networks, for 1 encoder + 2 decoder passes per
#   evaluation instead of 2 + 2: about 1.5x the work of one model rather than 2x.

# %%
t0 = time.perf_counter()
aux = auxes[preset.aux_budgets[0]]
seeds = parse_seeds("0-7")
shape = base.sample_shape(len(seeds))  # 8,3,8,8
pair = SharedEncoderPair(recipe.formulation, base, aux)
for w, alone_net, name in [(0.0, base, "base"), (-1.0, aux, "aux")]:
    guided = sample_sims(base, aux, recipe, w, len(seeds), seeds)         # two networks
    shared = pair.sample(shape, StackedRandomGenerator(seeds), w=w)       # shared encoder
    single = synthesize(alone_net, recipe, len(seeds), seeds)             # one network alone
    print(f"w = {w:4.1f}: guided == {name} alone: {np.array_equal(guided, single)}, "
          f"shared-encoder == {name} alone: {np.array_equal(shared.astype(np.float32), single)}")
    assert np.array_equal(guided, single) and np.array_equal(shared.astype(np.float32), single)
pair = SharedEncoderPair(recipe.formulation, base, aux)  # fresh counters
shared = pair.sample(shape, StackedRandomGenerator(seeds), w=1.0)  # 8,3,8,8 float64
full = sample_sims(base, aux, recipe, 1.0, len(seeds), seeds)       # 8,3,8,8 float32
print(f"w = 1: shared encoder vs two full networks, max |diff| = "
      f"{np.abs(shared.astype(np.float32) - full).max():.1e}")
assert np.array_equal(shared.astype(np.float32), full)
n_eval = recipe.formulation.nfe()
print(f"{n_eval} guided evaluations: {pair.encoder_passes} encoder + {pair.decoder_passes} decoder "
      f"passes; two full networks: {2 * n_eval} + {2 * n_eval}. Relative to one model: "
      f"{(pair.encoder_passes + pair.decoder_passes) / (2 * n_eval):.2f}x vs 2x "
      f"(counting an encoder pass and a decoder pass as half a network each)")
seconds["step 4: checks"] = time.perf_counter() - t0

# %% [markdown]
# ## 7. How good are the samples? FD by w, and the sampling noise
# The paper reports FID: the Frechet distance between Gaussians fitted to Inception-v3 features of
# 50k samples and of the training set. Inception's weights are a download, so minisims measures
# the same distance on features any machine builds from nothing: a fixed random convolutional
# network (`image_stats(images, "randconv")`). The number is labelled `FD_randconv`
# (`fd_label`), never FID: it is not comparable with published FIDs.
#
# `sample_images(preset, base, aux, w, seeds)` is the pipeline's step 4 (uint8 NHWC, the shared
# encoder pass for a decoder-only aux). Every w uses the same seeds, so the columns differ by the
# guidance alone. FD estimated from few images is noisy and biased upward, so we also measure the
# base (w = 0) on a **second** set of seeds: a gain smaller than the gap between the two is no
# gain. At this size (a few hundred 8x8 images, a minute of training) the base is far from
# converged, and SIMS may well not beat it; the paper's gains are on a well-trained CIFAR-10
# model, where the base already sits close to the data.

# %%
t0 = time.perf_counter()
label = fd_label("randconv")
ref = image_stats(images, "randconv")  # mu (448,), sigma (448,448) of the real 8x8 images
eval_seeds = list(range(preset.n_eval))
eval_seeds2 = list(range(preset.n_eval, 2 * preset.n_eval))


def fd_of(imgs):
    return float(fd_from_stats(*image_stats(imgs, "randconv"), *ref))


base_imgs = sample_images(preset, base, None, 0.0, eval_seeds)  # n_eval,8,8,3 uint8
base_fd, base_fd2 = fd_of(base_imgs), fd_of(sample_images(preset, base, None, 0.0, eval_seeds2))
noise = abs(base_fd - base_fd2)
print(f"{preset.n_eval} samples per cell. base: {label} {base_fd:.3f} (seeds 0-{preset.n_eval - 1}), "
      f"{base_fd2:.3f} (seeds {preset.n_eval}-{2 * preset.n_eval - 1}): sampling noise {noise:.3f}")
fd = np.full((len(preset.aux_budgets), len(preset.omegas)), np.nan)  # B,W
rows = {}  # (B, w) -> the first 8 samples, for the grid
for i, B in enumerate(preset.aux_budgets):
    for j, w in enumerate(preset.omegas):
        imgs = base_imgs if w == 0 else sample_images(preset, base, auxes[B], w, eval_seeds)
        fd[i, j] = fd_of(imgs)
        rows[B, w] = imgs[:8]
    print(f"B = {B:5d}: " + "  ".join(f"w={w:g}: {v:.3f}" for w, v in zip(preset.omegas, fd[i])))
guided = [(fd[i, j], B, w) for i, B in enumerate(preset.aux_budgets)
          for j, w in enumerate(preset.omegas) if w > 0]
best, best_B, best_w = min(guided)
verdict = "beats the base by more than the noise" if base_fd - best > noise else \
    "does not beat the base by more than the noise here"
print(f"best SIMS cell: B = {best_B}, w = {best_w:g}, {label} {best:.3f} vs base {base_fd:.3f}: "
      f"SIMS {verdict}")
fd_heatmap(fd, preset.aux_budgets, preset.omegas, os.path.join(OUT, "05_fd_heatmap.png"),
           base_fd=base_fd, label=label,
           title=f"SIMS on 8x8 photo patches ({'FAST' if FAST else 'full'} size)")
image_grid(np.concatenate([rows[best_B, w] for w in preset.omegas]),  # one row per w, same seeds
           os.path.join(OUT, "05_samples_by_w.png"), cols=8, scale=6,
           labels=[f"w={w:g}" if c == 0 else None for w in preset.omegas for c in range(8)])
seconds["FD by w"] = time.perf_counter() - t0
print("figures in", OUT)

# %% [markdown]
# The heatmap is Figure 3 of the paper in miniature: rows are the aux budgets B, columns w, the
# best cell boxed; `05_samples_by_w.png` shows the same eight seeds at every w (one row per w, the
# best cell's budget), so you can watch guidance move each image; `05_data.png` shows real images
# at 32x32 and at 8x8.
#
# How to read it. The w = -1 column (the aux alone) is worse than the base: a model fine-tuned on
# its own samples drifts away from the data, which is the premise of SIMS. In our full-size run
# (seed 0) the base's two FDs were 1.979 and 1.968; w = 0.5 with the smaller budget gave 1.559,
# while w = 2 and the larger budget were far worse (6.5 and 9.5): a little negative guidance helped,
# too much overshoots. One second seed set is a single draw of the noise, and the model, S and
# the aux were each trained once, so this is a hint, not a result; at FAST size (32 samples of a
# barely trained model) the whole table is noise, and the verdict printed above says so or not by
# chance.
#
# ## 8. All of it in one command, at a larger size
# `minisims.images.pipeline` wraps these same steps with a file between each
# (`step_train` -> `base.npz`, `step_synth` -> `synthetic.npz`, `step_aux` -> `aux_<B>.npz`,
# samples as PNGs and npz), and `run_sims` adds the FD table, the heatmap and `results.json`. From
# the shell, with your own copy of CIFAR-10 (MD5 checked), the `cpu` preset (16x16 images, 10000
# of them, budgets of 40000 images seen: about half an hour on 2 cores):
#
#     python -m minisims.images sims --data ~/data/cifar-10-python.tar.gz --preset cpu --outdir runs/cifar16
#
# `--resume` continues an interrupted run; `train`, `synth`, `aux`, `sample` and `fd` run one step
# each; `python -m minisims.images --help` lists them all.

# %%
seconds["total"] = time.perf_counter() - t_start
for name, s in seconds.items():
    print(f"{name:24s} {s:6.1f} s")

# %% [markdown]
# ## Summary
# - CIFAR-10 is read from your own archive, its MD5 checked first, its Python 2 pickles through an
#   unpickler that admits four NumPy names and refuses the rest by name; images go from uint8 NHWC
#   to float32 NCHW in [-1, 1] and back exactly.
# - Algorithm 1 on images is four library calls: `train_base`, `synthesize` (one seed per image),
#   `train_aux` (a copy, decoder only, on S alone), `sample_sims` / `sample_images` (eq. 5).
# - Budgets and the EMA's half-life are counted in images seen, independent of the batch size.
# - w = 0 and w = -1 reproduce the base and the aux bit for bit; a decoder-only aux shares the
#   encoder pass, same images for 1.5x instead of 2x the network work.
# - A Frechet distance means little without its noise: measure the base at a second seed set.
#
# ## Exercises
# 1. Set `trainable="all"` for the aux (`replace(preset, aux_trainable="all")`) and build a
#    `SharedEncoderPair`: why is it refused? Does the FD by w change?
# 2. Double `base_images`. Does the best w move toward smaller values as the base improves, as the
#    paper's Figure 3 suggests?
# 3. Double the preset's `n_eval` (section 1) and watch the gap between the base's two FDs (the
#    noise) shrink, and every FD fall: FD estimated from n samples is biased upward by roughly a
#    constant over n.
# 4. Replace `"randconv"` by `"pixels"` in section 7. Which features separate the w columns more
#    clearly from the sampling noise?
