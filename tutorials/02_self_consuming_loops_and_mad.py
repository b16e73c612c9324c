# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Tutorial 02: self-consuming loops, MAD, and how SIMS holds the line
#
# A model trained partly on its own (or its ancestors') samples is in a *self-consuming loop*
# (SIMS paper, Section 2). Generation 1 learns from real data, G^1 = A(D_r); generation t >= 2
# learns from
#
#     fully synthetic loop      D^t = D_s^{t-1}                (only the last model's samples)
#     synthetic augmentation    D^t = D_r  u  D_s^{t-1}        (a fixed real set plus samples)
#     fresh data loop           D^t = D_r^t  u  D_s^{t-1}      (new real data every generation)
#
# A loop goes *MAD* (Model Autophagy Disorder) when E[dist(G^t, p_r)] grows with t. The paper's
# Figure 4 runs the synthetic augmentation loop on a 2D Gaussian and shows that standard training
# drifts to a worse fixed point, while SIMS, using its own synthetic data only as *negative*
# guidance, stays near generation 1's distance.
#
# We first see *why* loops drift with an idealised learner (a Gaussian fit), where everything is a
# few lines of algebra, then run the real diffusion loop from `minisims.loops`.
#
# `MINISIMS_TUTORIAL_FAST=1` shrinks everything to a few seconds (the tests do this).

# %%
import os

import numpy as np

from minisims.backend import blas_threads
from minisims.data.toy import GAUSSIAN_COV, GAUSSIAN_MEAN, sample_gaussian
from minisims.loops.loop import Cell, LoopConfig, run_loop_chunk
from minisims.loops.results import ratio_curve
from minisims.metrics import gaussian_w2_from_moments, moments
from minisims.nn.mlp import MLPConfig
from minisims.plots import pyplot, show, tutorial_dir
from minisims.sims import SIMSConfig

FAST = os.environ.get("MINISIMS_TUTORIAL_FAST") == "1"
OUT = tutorial_dir("02")  # figures: shown inline in Jupyter, saved here (runs/tutorials/02/)
plt = pyplot()
# The toy's matmuls are small (64 x 64 weights): one BLAS thread is as fast, and on a busy machine
# far faster than several threads that spin waiting for each other.
blas_threads(1)  # set on creation, so it holds for the rest of the script
rng = np.random.default_rng(0)
mu_r, S_r = GAUSSIAN_MEAN, GAUSSIAN_COV

# %% [markdown]
# ## 1. An idealised learner: fit a Gaussian
# Let A(D) be "fit the mean and covariance of D and sample from that Gaussian". It has no model
# error at all, only the sampling error of finite data. Run it in the fully synthetic loop and the
# augmentation loop, 200 runs at once (arrays are (R, n, 2)), and measure W2 to p_r with the
# closed form W2^2 = ||mu - mu_r||^2 + Tr(S + S_r - 2 (S S_r)^(1/2)) (`minisims.metrics`).

# %%
R, n, k, G = (200, 1000, 250, 30) if not FAST else (50, 1000, 250, 10)


def fit_and_sample(D, m, rng):
    """The idealised learner: the Gaussian fit of each run's data, then m samples of it. (R,m,2)"""
    mu, S = moments(D)  # R,2  R,2,2
    L = np.linalg.cholesky(S)  # R,2,2
    return mu[:, None, :] + rng.standard_normal((D.shape[0], m, 2)) @ L.swapaxes(-1, -2)


def gaussian_loop(loop, rng):
    D_r = sample_gaussian(n, rng, runs=R).astype(np.float64)  # R,n,2
    data, dists = D_r, []
    for t in range(G):
        mu, S = moments(data)
        dists.append(gaussian_w2_from_moments(mu, S, mu_r, S_r).mean())
        D_s = fit_and_sample(data, n if loop == "fully_synthetic" else k, rng)
        data = D_s if loop == "fully_synthetic" else np.concatenate([D_r, D_s], axis=1)
    return np.array(dists)


full, aug = gaussian_loop("fully_synthetic", rng), gaussian_loop("augmentation", rng)
print(f"fully synthetic: E[W2] {full[0]:.3f} at t=1 -> {full[-1]:.3f} at t={G} (ratio {full[-1] / full[0]:.2f})")
print(f"augmentation   : E[W2] {aug[0]:.3f} at t=1 -> {aug[-1]:.3f} at t={G} (ratio {aug[-1] / aug[0]:.2f})")
assert full[-1] > full[0]  # a random walk away from p_r: MAD

# %% [markdown]
# With only sampling error, the fully synthetic loop is a random walk: each generation's fit
# inherits the last one's error and adds its own, so the error grows like sqrt(t) (and the
# covariance's determinant shrinks on average: collapse). The augmentation loop anchors every
# generation to D_r: the mean error e_t obeys e_{t} = a e_{t-1} + a xi_t + (1 - a) eps with
# a = k / (n + k), a fixed real-data error eps and fresh sampling noise xi_t, which settles at a
# fixed point only a little worse than generation 1.
#
# ## 2. Model error compounds
# Real learners are biased. Suppose A over-disperses by a factor (1 + delta): it returns
# covariance (1 + delta) C for data of covariance C. In the augmentation loop the data covariance
# obeys C_t = (n S_r + k (1 + delta) C_{t-1}) / (n + k), whose fixed point is
#
#     C_inf = S_r / (1 - delta k / n),
#
# so the model's error grows from delta at generation 1 to about delta (1 + k/n) / (1 - delta k/n)
# at convergence: **the more synthetic data, the worse the fixed point**, exactly the ordering of
# the paper's standard-training ratios (1.71, 2.46, 3.99, 6.69 for |D_s| = 125 ... 1000). The
# next cell checks the fixed point by iterating the recursion.

# %%
delta = 0.2
for k_ in (125, 250, 500, 1000):
    C = 1.0
    for _ in range(500):
        C = (n * 1.0 + k_ * (1 + delta) * C) / (n + k_)
    predicted = 1 / (1 - delta * k_ / n)
    print(f"|D_s| = {k_:4d}: iterated C_inf/S_r {C:.4f}, predicted {predicted:.4f}, "
          f"model error grows x{((1 + delta) * C - 1) / delta:.2f}")
    assert abs(C - predicted) < 1e-9

# %% [markdown]
# ## 3. The diffusion loop: standard training vs SIMS
# Now the real thing: `minisims.loops.run_loop_chunk` retrains a DDPM from scratch every
# generation on D_r plus |D_s| samples of the previous generation, for R runs at once on the
# ensemble axis. With `Cell(n_synth, w, "sims")` each generation is a SIMS model (base + aux
# fine-tuned on the base's own samples, sampled at w) and *its* samples feed the next generation.
#
# The random numbers are arranged per (run chunk, generation, purpose), so a SIMS loop at w = 0
# reproduces the standard loop bit for bit: a good check that nothing else differs.

# %%
sims_cfg = SIMSConfig(formulation="ddpm", mlp=MLPConfig(hidden=32 if FAST else 64),
                      base_epochs=100, aux_epochs=50, n_synth=500 if FAST else 2000)
cfg = LoopConfig(loop="augmentation", generations=3 if FAST else 10, n_real=300 if FAST else 1000,
                 n_eval=500 if FAST else 2000, sims=sims_cfg)
RUNS, N_S = (3, 250) if FAST else (8, 250)
standard = run_loop_chunk(cfg, Cell(N_S, 0.0, "standard"), RUNS, seed=0, progress=True)
sims_w0 = run_loop_chunk(cfg, Cell(N_S, 0.0, "sims"), RUNS, seed=0, progress=True)
sims_w3 = run_loop_chunk(cfg, Cell(N_S, 3.0, "sims"), RUNS, seed=0, progress=True)
print("SIMS loop at w = 0 equals the standard loop bit for bit:",
      np.array_equal(standard.mu, sims_w0.mu) and np.array_equal(standard.cov, sims_w0.cov))
assert np.array_equal(standard.mu, sims_w0.mu)
for name, res in (("standard", standard), ("SIMS w=3", sims_w3)):
    d = res.distance(cfg.mean, cfg.cov).mean(axis=0)
    print(f"{name:9s} E[W2(G^t, p_r)] by generation: {np.round(d, 3)}")

# %% [markdown]
# The paper's DDPM toy (100 full-batch Adam steps per generation) leaves the base model
# undertrained and over-dispersed: exactly the biased learner of section 2, so standard training
# drifts upward generation after generation. SIMS's auxiliary model, fine-tuned on the base's own
# samples, exaggerates that bias; guiding away from it (w > 0) removes much of it at every
# generation, so there is little bias left to compound.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
t = np.arange(1, G + 1)
axes[0].plot(t, full / full[0], label="fully synthetic")
axes[0].plot(t, aug / aug[0], label=f"augmentation, |D_s| = {k}")
axes[0].set_title("idealised Gaussian-fit learner", fontsize=10)
for name, res in (("standard", standard), ("SIMS w = 3", sims_w3)):
    c = ratio_curve(res, cfg.mean, cfg.cov)
    axes[1].plot(np.arange(1, len(c) + 1), c, marker="o", label=name)
axes[1].set_title(f"DDPM augmentation loop, |D_s| = {N_S}, {RUNS} runs", fontsize=10)
for ax in axes:
    ax.axhline(1, color="k", lw=0.8, ls=":")
    ax.set_xlabel("generation t")
    ax.set_ylabel("E[W2(G^t)] / E[W2(G^1)]")
    ax.legend(fontsize=8)
fig.tight_layout()
show(fig, os.path.join(OUT, "02_loops.png"))
print("figures in", OUT)

# %% [markdown]
# ## Summary
# - Self-consuming loops drift because each generation inherits its ancestors' errors: sampling
#   error random-walks in the fully synthetic loop; model bias compounds toward a worse fixed
#   point in the augmentation loop, the worse the more synthetic data each generation adds.
# - SIMS trains on the same polluted data but uses self-generated data only as negative guidance;
#   on the toy it keeps E[dist(G^t)] / E[dist(G^1)] much closer to 1.
# - `python toy/figure4.py --preset cpu` runs the paper's whole Figure 4 (all |D_s|, several w).
#
# ## Exercises
# 1. Make the idealised learner biased (multiply its covariance by 1.2) and rerun section 1's
#    augmentation loop: does the ratio reach the fixed point of section 2?
# 2. Run `run_loop_chunk` with `LoopConfig(loop="fresh")`: how much does fresh real data help?
# 3. Repeat section 3 with `SIMSConfig(formulation="edm")`, whose base is far better trained.
#    Which w is best now, and why might SIMS have less to remove?
