# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Tutorial 03: steering a model's group mix with SIMS (distribution shift)
#
# A model trained on data with a 50/50 mix of two groups generates (about) 50/50. Suppose we want
# 70/30. SIMS (paper Section 4.3) does it *without new real data*: label the base model's own
# samples, build the auxiliary model's training set with the **complement** of the target
# (30/70), fine-tune a copy of the base on it, and sample with the SIMS score
#
#     s = (1 + w) s_base - w s_aux.
#
# w = -1 is the auxiliary model itself (its 30/70 mix), w = 0 the base (50/50), and w > 0
# extrapolates *away* from the auxiliary mix, past the base, toward the target. The paper moves
# FFHQ faces from 50.3% to 68.5% female at w = 1.5 with a gender classifier; here two Gaussian
# groups and their Bayes classifier play the faces and the classifier.
#
# `MINISIMS_TUTORIAL_FAST=1` shrinks everything to a few seconds (the tests do this).

# %%
import os
from dataclasses import replace

import numpy as np

from minisims.backend import blas_threads
from minisims.data.mixture import MIX_COV, MIX_MEANS, classify, sample_mixture, select_mix
from minisims.plots import gaussian_contours, pyplot, show, tutorial_dir
from minisims.shift import ShiftConfig, fit_shift, measure_shift, rng_for
from minisims.sims import synthesize

FAST = os.environ.get("MINISIMS_TUTORIAL_FAST") == "1"
OUT = tutorial_dir("03")  # figures: shown inline in Jupyter, saved here (runs/tutorials/03/)
plt = pyplot()
blas_threads(1)  # small matmuls: one BLAS thread is as fast, never oversubscribes; holds from here on
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Two groups and a classifier
# Group k is N(m_k, 0.25 I) with m_0 = (-2, 0), m_1 = (2, 0). The 'classifier' is the Bayes rule
# between the two components: with the groups 8 standard deviations apart it errs on about
# 3 points in 100,000. `select_mix` then draws, from labelled points, a set with an exact mix.

# %%
x, labels = sample_mixture(2000, rng, runs=1, frac0=0.5)  # R,n,2 and R,n
print("real data: fraction of group 0 =", (labels == 0).mean())
print("classifier errors on the real data:", int((classify(x) != labels).sum()), "of", labels.size)
aux_like = select_mix(x, classify(x), 1000, 0.3, rng)  # R,1000,2
print("a 30/70 subset: fraction of group 0 =", (classify(aux_like) == 0).mean())
assert (classify(aux_like) == 0).mean() == 0.3

# %% [markdown]
# ## 2. Base and auxiliary models
# `fit_shift` runs the recipe for R runs at once: train the base on 50/50 real data (EDM
# formulation), sample a pool from it, label the pool, select n_s points at the complement mix,
# fine-tune a copy of the base on them.

# %%
cfg = ShiftConfig(n_real=500 if FAST else 2000, n_eval=1000 if FAST else 2000)
if FAST:
    cfg = replace(cfg, sims=replace(cfg.sims, n_synth=500, base_epochs=200, aux_epochs=300,
                                    batch_size=128, num_steps=12, mlp=replace(cfg.sims.mlp, hidden=32)))
RUNS = 3 if FAST else 16
print(f"target {cfg.target_frac:.0%} group 0 -> aux set {cfg.aux_frac:.0%} group 0")
base, aux, aux_set_frac = fit_shift(cfg, runs=RUNS, seed=0)
print("aux training sets, fraction of group 0 per run:", aux_set_frac)

# %% [markdown]
# ## 3. Sweep w
# Every w is sampled with the same random numbers. A first check is exact: eq. 5 at w = -1 is
# 0 * s_base + s_aux, so guided sampling at w = -1 *is* the auxiliary model, bit for bit.

# %%
draw = lambda net, neg, w: synthesize(net, cfg.sims, 300, rng_for(0, "sample", RUNS), aux=neg, w=w)
print("w = -1 equals sampling the aux model alone:", np.array_equal(draw(base, aux, -1.0), draw(aux, None, 0.0)))

omegas = [-1.0, 0.0, 1.0] if FAST else [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
frac0, dist = measure_shift(base, aux, cfg, omegas, seed=0)  # W,R and W,R,2
frac = frac0.mean(axis=1)  # W
for w, f, d in zip(omegas, frac, np.nanmean(dist, axis=1)):
    print(f"w = {w:5.2f}: {f:6.1%} group 0;  W2 of each group to its component: {d[0]:.3f}, {d[1]:.3f}")
assert frac[0] < frac[omegas.index(0.0)] < frac[-1]  # from the aux mix, through the base, onward

# %% [markdown]
# ## 4. What should w give? A low-noise picture
# If the two groups were sampled with weights proportional to p_base^(1+w) / p_aux^w (what the
# combination gives where the groups do not overlap), group 0's share would be
#
#     b0^(1+w) a0^(-w) / (b0^(1+w) a0^(-w) + b1^(1+w) a1^(-w)),
#
# with b the base mix and a the aux mix: 70% at w = 1 for 50/50 and 30/70. Diffusion sampling
# decides most of the mix at high noise, where the groups *do* overlap and the combination of
# the two scores is not that of their densities, so the measured shift is smaller. Compare:

# %%
b0, a0 = 0.5, cfg.aux_frac
for w, f in zip(omegas, frac):
    pred = b0 ** (1 + w) * a0 ** -w / (b0 ** (1 + w) * a0 ** -w + (1 - b0) ** (1 + w) * (1 - a0) ** -w)
    print(f"w = {w:5.2f}: measured {f:6.1%}, density-tilt picture {pred:6.1%}")

# %%
fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
a.plot(omegas, 100 * frac, "o-", color="C3", label="SIMS samples")
for y, lbl, c in ((cfg.aux_frac, "aux mix", "C0"), (0.5, "base mix", "C2"), (cfg.target_frac, "target", "C1")):
    a.axhline(100 * y, ls="--", lw=1, color=c, label=lbl)
a.set_xlabel("w")
a.set_ylabel("% group 0")
a.legend(fontsize=8)
xs = synthesize(base, cfg.sims, 1000, rng_for(0, "sample", RUNS), aux=aux, w=omegas[-1])
b.scatter(xs[0, :, 0], xs[0, :, 1], s=3, alpha=0.4, color="C3")
for m in MIX_MEANS:
    gaussian_contours(b, m, MIX_COV)
b.set_title(f"run 1 at w = {omegas[-1]:g}", fontsize=10)
b.set_aspect("equal")
fig.tight_layout()
show(fig, os.path.join(OUT, "03_shift.png"))
print("figures in", OUT)

# %% [markdown]
# ## Summary
# - SIMS shifts a model's distribution with the auxiliary model as a *negative*: train it on the
#   complement of what you want, then guide away from it.
# - w = -1 reproduces the auxiliary mix, w = 0 the base mix; w > 0 moves toward the target.
#   The per-group distances show what the shift costs (or gains) in each group's quality.
# - `python toy/figure6.py --preset cpu` draws the whole Figure 6 analogue.
#
# ## Exercises
# 1. Ask for 90/10 (`ShiftConfig(target_frac=0.9)`): which w reaches it, and what happens to the
#    per-group distances on the way?
# 2. Give the aux set the target mix itself (not its complement) and sweep w from -2 to 1.
# 3. Put the groups at means +-1, then +-0.5 (two standard deviations apart): the classifier now
#    errs. What does the measured share of group 0 still measure?
