# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Tutorial 01: diffusion from scratch on a 2D Gaussian, then SIMS in a few lines
#
# We learn the paper's toy distribution p_r = N([0,0], [[2,1],[1,2]]) (SIMS paper, Section 4.2.1)
# with a DDPM built entirely from `minisims` parts: the forward noising process, an MLP whose
# backward pass is written by hand (and checked), the epsilon-prediction loss, the ancestral
# sampler. Then we run the four steps of SIMS (Algorithm 1) and watch negative guidance away from
# the model's own synthetic data pull the samples back toward p_r.
#
# Run it with `python tutorials/01_diffusion_and_sims_2d.py`, or open it as a notebook with
# jupytext. `MINISIMS_TUTORIAL_FAST=1` shrinks it to a few seconds (the tests do this).

# %%
import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from minisims.data import GAUSSIAN_COV, GAUSSIAN_MEAN, sample_gaussian
from minisims.diffusion import DDPM
from minisims.gradcheck import gradients
from minisims.metrics import gaussian_w2
from minisims.nn import MLPConfig, MLPDenoiser
from minisims.plots import gaussian_contours
from minisims.sims import SIMSConfig, sample_sims, synthesize, train_aux, train_base
from minisims.train import TrainConfig, train

FAST = os.environ.get("MINISIMS_TUTORIAL_FAST") == "1"
OUT = os.environ.get("MINISIMS_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="minisims-tut01-")
RUNS = 4 if FAST else 16          # independent runs, trained at once on the ensemble axis
N_SAMPLES = 400 if FAST else 2000  # samples per run for measuring distances
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The data
# Each run gets its own 1000 real points. Arrays are (R, n, 2): R runs, n points, 2 coordinates.

# %%
data = sample_gaussian(1000, rng, runs=RUNS)  # R,1000,2
print("data", data.shape, "empirical covariance of run 0:\n", np.cov(data[0].T).round(2))

# %% [markdown]
# ## 2. The forward process
# DDPM corrupts a clean point x_0 in T steps; with the cumulative signal level alpha_bar_t,
#
#     x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,   eps ~ N(0, I).
#
# The paper's toy uses the cosine schedule with T = 40. For Gaussian data the covariance of x_t is
# alpha_bar_t Sigma + (1 - alpha_bar_t) I: the data is slowly dissolved into white noise.

# %%
ddpm = DDPM(T=40)
ab = ddpm.alpha_bar  # T
fig, axes = plt.subplots(1, 4, figsize=(12, 3))
for ax, t in zip(axes, [0, 10, 25, 39]):
    eps = rng.standard_normal(data[0].shape)
    x_t = np.sqrt(ab[t]) * data[0] + np.sqrt(1 - ab[t]) * eps  # 1000,2
    theory = ab[t] * GAUSSIAN_COV + (1 - ab[t]) * np.eye(2)
    print(f"t={t:2d} alpha_bar={ab[t]:.3f}  var(x_t) measured {np.var(x_t, 0).round(2)}  theory {np.diag(theory).round(2)}")
    ax.scatter(*x_t.T, s=2, alpha=0.4)
    ax.set_title(f"t = {t}, alpha_bar = {ab[t]:.2f}")
    ax.set_xlim(-6, 6); ax.set_ylim(-6, 6); ax.set_aspect("equal")
fig.tight_layout(); fig.savefig(os.path.join(OUT, "01_forward_process.png")); plt.close(fig)

# %% [markdown]
# ## 3. The network and its hand-written backward pass
# The denoiser is the toy MLP the paper cites: Linear(3 -> 64), 4 x [Linear(64, 64), ReLU],
# Linear(64 -> 2), fed (x_t, t). Every layer caches in `forward` what its `backward` needs. Before
# trusting a backward we compare it with centred finite differences in float64, using a random
# upstream gradient dy and the loss L = sum(y * dy), whose gradient with respect to y is exactly dy.

# %%
tiny = MLPDenoiser(MLPConfig(hidden=6, depth=2), rng, ensemble=2, dtype=np.float64)
x_small, t_small = rng.standard_normal((2, 5, 2)), rng.integers(1, 40, (2, 5)).astype(float)
worst = 0.0
for name, (mine, numeric) in gradients(tiny, [x_small, t_small], rng, wrt_inputs=(0,)).items():
    rel = np.abs(mine - numeric).max() / max(np.abs(numeric).max(), 1e-12)
    worst = max(worst, rel)
    print(f"{name:12s} max relative error {rel:.1e}")
assert worst < 1e-6, worst  # float64 centred differences: errors of order eps^2 ~ 1e-12
print("gradient check passed")

# %% [markdown]
# ## 4. Training: predict the noise
# The loss is || eps_theta(x_t, t) - eps ||^2 for random t and eps. `train` shuffles each run's
# data, calls the formulation's `loss_and_grad` (forward, loss, backward) and takes an Adam step;
# all R runs step together. With the paper's batch of 2048 and 1000 points an epoch is one step.

# %%
cfg = SIMSConfig(formulation="ddpm", base_epochs=40 if FAST else 100, aux_epochs=20 if FAST else 50,
                 n_synth=500 if FAST else 2000)
net = MLPDenoiser(cfg.mlp, rng, ensemble=RUNS)
history = train(net, ddpm, data, TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.base_epochs),
                rng).history  # epochs,R
print(f"loss: first epoch {history[0].mean():.3f}, last epoch {history[-1].mean():.3f}")
assert history[-1].mean() < history[0].mean()

# %% [markdown]
# ## 5. Sampling
# The ancestral sampler starts from white noise at t = 39 and walks down to t = 0, each step
# removing the predicted noise and adding back fresh noise of variance beta_t (39 network calls).
# We measure the Wasserstein-2 distance between the Gaussian fitted to the samples and p_r.

# %%
x = ddpm.sample(net, (RUNS, N_SAMPLES, 2), rng)  # R,N_SAMPLES,2
d = gaussian_w2(x, GAUSSIAN_MEAN, GAUSSIAN_COV)
print(f"W2 to p_r over {RUNS} runs: {d.mean():.3f} +- {d.std():.3f}")

# %% [markdown]
# ## 6. SIMS in four lines
# 1. train the base model on the real data; 2. sample a synthetic set S from it; 3. fine-tune a
# copy on S alone (the auxiliary model); 4. sample with the extrapolated score
# (1 + w) s_base - w s_aux (paper eq. 5, `minisims.guidance.sims_combine`). The auxiliary model
# shows in which direction the model drifts when it feeds on its own output; negative guidance
# steps the other way. w = 0 is the base model exactly.

# %%
base, _ = train_base(data, cfg, rng)                      # 1
S = synthesize(base, cfg, cfg.n_synth, rng)               # 2   R,n_s,2
aux, _ = train_aux(base, S, cfg, rng)                     # 3
results = {}
for w in [0.0, 0.5, 1.0, 2.0, 3.0]:                       # 4
    xs = sample_sims(base, aux, cfg, w, N_SAMPLES, np.random.default_rng(1))
    results[w] = (xs, gaussian_w2(xs, GAUSSIAN_MEAN, GAUSSIAN_COV))
    print(f"w = {w:3.1f}: W2 to p_r {results[w][1].mean():.3f} +- {results[w][1].std():.3f}")

# %%
fig, axes = plt.subplots(1, len(results), figsize=(3 * len(results), 3))
for ax, (w, (xs, dw)) in zip(axes, results.items()):
    ax.scatter(*xs[0, :800].T, s=2, alpha=0.4, color="C0" if w == 0 else "C3")
    gaussian_contours(ax, GAUSSIAN_MEAN, GAUSSIAN_COV)
    ax.set_title(f"w = {w:g}: W2 {dw.mean():.2f}")
    ax.set_xlim(-6, 6); ax.set_ylim(-6, 6); ax.set_aspect("equal")
fig.tight_layout(); fig.savefig(os.path.join(OUT, "01_sims.png")); plt.close(fig)
print("figures in", OUT)

# %% [markdown]
# ## Summary
# - A diffusion model is a denoiser trained on noised data; sampling runs the noising backwards.
# - Hand-written backward passes are trustworthy once they match finite differences in float64.
# - SIMS adds no new data: it trains a second model on the first one's samples and uses the
#   difference of the two as a direction to move *away* from.
#
# ## Exercises
# 1. Run with `w = -1`: you get the auxiliary model. Is it closer to p_r or further than the base?
# 2. Change `cfg.aux_epochs` (the budget B) to 5 and to 200. How does the best w move?
# 3. Switch to `SIMSConfig(formulation="edm")`: the EDM Heun sampler with a better-trained base.
#    Does SIMS still help? Why might a better base leave less to gain?
