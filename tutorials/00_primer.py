# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Tutorial 00: a primer, from the score to SIMS, on a Gaussian
#
# Everything the later tutorials use without stopping, each checked with numbers:
#
# 1. the **score** of noised data, and the denoiser it hides (Tweedie's formula);
# 2. the **reverse SDE** and the **probability-flow ODE**, which turn noise into data;
# 3. **Euler** and **Heun** steps on that ODE, and why Heun is second order;
# 4. one quantity in several **units**: score, epsilon, denoiser D; DDPM's alpha_bar against
#    EDM's sigma;
# 5. the **Wasserstein-2** distance and the **Frechet distance** (FD, the D of FID);
# 6. the **exponential moving average** (EMA) of weights;
# 7. where **SIMS** sits beside **classifier-free guidance** and **autoguidance**: one
#    extrapolation, three different negatives.
#
# The data is a Gaussian, where every quantity has a closed form, so each claim can be checked
# against an exact answer rather than against a trained network. Tutorial 01 then trains real
# networks on the paper's 2D Gaussian and runs SIMS.
#
# Notation: x_0 a clean data point, n ~ N(0, I) a standard normal draw, sigma a noise level,
# p_data the data distribution. `MINISIMS_TUTORIAL_FAST=1` shrinks the Monte Carlo sizes (the
# tests do this); every check holds at both sizes.

# %%
import os

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import norm, wasserstein_distance

from minisims.backend import blas_threads
from minisims.diffusion import DDPM, EDM, cosine_alpha_bar, edm_sigma_steps
from minisims.gradcheck import assert_close, numerical_grad
from minisims.guidance import sims_combine
from minisims.metrics import empirical_w2, frechet_distance, gaussian_w2_from_moments
from minisims.nn.layers import Linear
from minisims.plots import pyplot, show, tutorial_dir
from minisims.train import EMA

FAST = os.environ.get("MINISIMS_TUTORIAL_FAST") == "1"
OUT = tutorial_dir("00")  # figures: shown inline in Jupyter, saved here (runs/tutorials/00/)
plt = pyplot()
blas_threads(1)  # tiny arrays only: a second BLAS thread would just spin
N_MC = 20_000 if FAST else 200_000  # Monte Carlo sample size for the checks that need one


# %% [markdown]
# ## 1. Noised data and its score
# EDM (Karras et al. 2022) writes the noising in the simplest units: a clean point plus noise of
# standard deviation sigma,
#
#     x = x_0 + sigma n,   so   p(x; sigma) = p_data convolved with N(0, sigma^2 I).
#
# The **score** is the gradient of the log density of the noised data, s(x; sigma) =
# grad_x log p(x; sigma). It points toward where noised data is denser. It is all a sampler
# needs, and it does not need the density's normalising constant.
#
# Our data is one-dimensional, p_data = N(mu, sd^2) with mu = 1 and sd = 0.5 (EDM calls the
# data's standard deviation sigma_data, and 0.5 is its value for images). Adding independent
# Gaussian noise adds variances, so p(x; sigma) = N(mu, sd^2 + sigma^2) and
#
#     s(x; sigma) = -(x - mu) / (sd^2 + sigma^2).
#
# **Tweedie's formula** says the score is also a denoiser in disguise (tutorial 01, section 3,
# derives it): with D(x; sigma) = E[x_0 | x], the best guess of the clean point,
#
#     s(x; sigma) = (D(x; sigma) - x) / sigma^2.
#
# For our Gaussian, conditioning jointly Gaussian variables gives
# D(x; sigma) = mu + sd^2 / (sd^2 + sigma^2) (x - mu): shrink x toward the mean, more as sigma grows.
#
# **Checks.** (a) The closed-form score against centred finite differences of log p(x; sigma).
# (b) D by Monte Carlo: draw (x_0, n), form x, regress x_0 on x; least squares estimates
# E[x_0 | x] (here linear), so it must find the slope sd^2 / (sd^2 + sigma^2). (c) (D - x) / sigma^2
# equals the score.

# %%
mu, sd = 1.0, 0.5  # p_data = N(mu, sd^2)


def score(x, sigma):
    """s(x; sigma) = grad_x log N(x; mu, sd^2 + sigma^2)."""
    return -(x - mu) / (sd ** 2 + sigma ** 2)


def denoiser(x, sigma):
    """D(x; sigma) = E[x_0 | x_0 + sigma n = x] for x_0 ~ N(mu, sd^2)."""
    return mu + sd ** 2 / (sd ** 2 + sigma ** 2) * (x - mu)


rng = np.random.default_rng(0)
x = np.linspace(-2.0, 4.0, 7)  # 7 points at which to compare
for sigma in (0.1, 1.0, 10.0):
    logp = lambda: float(norm.logpdf(x, mu, np.sqrt(sd ** 2 + sigma ** 2)).sum())
    fd = numerical_grad(logp, x)  # 7, the points are independent
    x0 = mu + sd * rng.standard_normal(N_MC)  # N_MC
    xs = x0 + sigma * rng.standard_normal(N_MC)  # N_MC
    slope = np.polyfit(xs, x0, 1)[0]
    tweedie = (denoiser(x, sigma) - x) / sigma ** 2  # 7
    print(f"sigma = {sigma:4}: (a) score vs finite differences max |diff| {np.abs(score(x, sigma) - fd).max():.1e};"
          f" (b) regression slope {slope:.4f} vs sd^2/(sd^2+sigma^2) {sd**2 / (sd**2 + sigma**2):.4f};"
          f" (c) (D-x)/sigma^2 vs score {np.abs(tweedie - score(x, sigma)).max():.1e}")
    assert_close("score", score(x, sigma), fd, rtol=1e-6, atol=1e-8)  # centred differences, h = 1e-6
    # the slope's standard error is below sqrt(1 / N_MC) ~ 0.007 at the fast size; 0.03 is > 4 of them
    assert abs(slope - sd ** 2 / (sd ** 2 + sigma ** 2)) < 0.03
    assert_close("Tweedie", tweedie, score(x, sigma), rtol=1e-12, atol=1e-12)  # rounding only

# %% [markdown]
# ## 2. Running the noise backwards: the reverse SDE and the probability-flow ODE
# Think of sigma as time. The noising is a stochastic differential equation (SDE) with no drift,
#
#     dx = sqrt(2 sigma) dW,
#
# whose noise variance from 0 to sigma adds up to the integral of 2 sigma', i.e. sigma^2, as
# x = x_0 + sigma n requires. In general, for dx = f(x, t) dt + g(t) dW, Anderson (1982) showed that
# the **reverse SDE**, run from large t to small,
#
#     dx = [f - g^2 s(x; t)] dt + g dW_reverse
#
# has the same marginal densities at every t; Song et al. (2021) showed that the deterministic
# **probability-flow ODE** (PF-ODE)
#
#     dx/dt = f - (1/2) g^2 s(x; t)
#
# has them too. The reason is short: the marginals of the SDE obey the Fokker-Planck equation
# dp/dt = -div(f p) + (1/2) g^2 lap(p), and since s p = grad p, (1/2) g^2 lap(p) =
# -div(-(1/2) g^2 s p): the same density flow as a deterministic velocity f - (1/2) g^2 s. Here
# f = 0 and g^2 = 2 sigma, so
#
#     PF-ODE       dx/dsigma = -sigma s(x; sigma) = (x - D(x; sigma)) / sigma      (EDM eq. 3)
#     reverse SDE  dx = -2 sigma s(x; sigma) dsigma + sqrt(2 sigma) dW,   sigma decreasing
#
# Start at sigma_max = 80 (EDM's value) from N(0, sigma_max^2), which is p(x; sigma_max) but for
# a small mismatch in the mean and the sd^2 in the variance (its effect is printed below), and run
# down to sigma = 0.
#
# **The exact ODE solution for our Gaussian.** dx/dsigma = sigma (x - mu) / (sd^2 + sigma^2) gives
# d ln|x - mu| = d (1/2) ln(sd^2 + sigma^2), so
#
#     x(sigma) - mu = (x(sigma_max) - mu) sqrt((sd^2 + sigma^2) / (sd^2 + sigma_max^2)):
#
# each trajectory is scaled toward mu, and a draw from N(mu, sd^2 + sigma_max^2) lands exactly on
# a draw from N(mu, sd^2). **Checks.** (a) That map, applied to N(0, sigma_max^2) draws, gives
# p_data's mean and standard deviation up to the prior mismatch and sampling error. (b) The
# reverse SDE, simulated by Euler-Maruyama with many small steps, gives them too, from
# different, random trajectories.

# %%
sigma_max, sigma_min = 80.0, 0.002  # EDM's range


def ode_exact(x_start, sigma, sigma_start=sigma_max):
    """The PF-ODE's exact solution for p_data = N(mu, sd^2), from sigma_start to sigma."""
    return mu + (x_start - mu) * np.sqrt((sd ** 2 + sigma ** 2) / (sd ** 2 + sigma_start ** 2))


x_T = sigma_max * np.random.default_rng(1).standard_normal(N_MC)  # N_MC, x ~ N(0, sigma_max^2)
x_ode = ode_exact(x_T, 0.0)  # N_MC
# the map's image of N(0, sigma_max^2) is N(mu (1 - k), k^2 sigma_max^2), k = sd / sqrt(sd^2 + sigma_max^2)
k = sd / np.sqrt(sd ** 2 + sigma_max ** 2)
print(f"(a) PF-ODE, exact map:  mean {x_ode.mean():.4f}  std {x_ode.std():.4f}   "
      f"(p_data: {mu}, {sd}; the map's exact image of the prior: {mu * (1 - k):.4f}, {k * sigma_max:.4f})")
se_mean, se_std = sd / np.sqrt(N_MC), sd / np.sqrt(2 * N_MC)  # standard errors
assert abs(x_ode.mean() - mu) < 5 * se_mean + 0.01 and abs(x_ode.std() - sd) < 5 * se_std + 0.01


def reverse_sde(x, sigmas, rng):
    """Euler-Maruyama on dx = -2 sigma s dsigma + sqrt(2 sigma) dW, along decreasing sigmas."""
    for t, t_next in zip(sigmas[:-1], sigmas[1:]):
        h = t - t_next  # > 0
        x = x + 2 * t * h * score(x, t) + np.sqrt(2 * t * h) * rng.standard_normal(x.shape)
    return x


sde_grid = edm_sigma_steps(512, sigma_min, sigma_max)[:-1]  # 512 levels, 80 down to 0.002
x_sde = reverse_sde(x_T.copy(), sde_grid, np.random.default_rng(2))  # N_MC
print(f"(b) reverse SDE, {len(sde_grid) - 1} Euler-Maruyama steps: mean {x_sde.mean():.4f}  std {x_sde.std():.4f}")
# sampling error (5 standard errors) plus an allowance of 0.01 for the discretisation
assert abs(x_sde.mean() - mu) < 5 * se_mean + 0.01 and abs(x_sde.std() - sd) < 5 * se_std + 0.01

# %% [markdown]
# A picture of both: four trajectories of each from the same four starting points. The spread
# of p(x; sigma) falls from 80 to 0.5, so we plot each point standardised,
# z = (x - mu) / sqrt(sd^2 + sigma^2), in which p(x; sigma) is N(0, 1) at every sigma (the grey band
# is z in [-2, 2], 95% of the mass). By the exact solution above, the ODE keeps z constant: each
# point keeps its quantile all the way down. The SDE's points wander among the quantiles, and still
# end in the right distribution.

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
grid = edm_sigma_steps(200, sigma_min, sigma_max)[:-1]  # 200 levels for drawing
zscore = lambda x, sigma: (x - mu) / np.sqrt(sd ** 2 + sigma ** 2)
ax.axhspan(-2, 2, color="0.9", label="95% of p(x; sigma)")
starts = mu + np.array([-1.5, -0.5, 0.5, 1.5]) * np.sqrt(sd ** 2 + sigma_max ** 2)  # 4, at z = -1.5 .. 1.5
ode_paths = ode_exact(starts[None, :], grid[:, None])  # 200,4
sde_paths, xcur, sde_rng = [starts], starts.copy(), np.random.default_rng(3)
for t, t_next in zip(grid[:-1], grid[1:]):
    xcur = reverse_sde(xcur, np.array([t, t_next]), sde_rng)
    sde_paths.append(xcur)
for i in range(len(starts)):
    ax.plot(grid, zscore(ode_paths[:, i], grid), color=f"C{i}", lw=2)
    ax.plot(grid, zscore(np.array(sde_paths)[:, i], grid), color=f"C{i}", lw=0.8, alpha=0.7)
ax.plot([], [], color="k", lw=2, label="PF-ODE"); ax.plot([], [], color="k", lw=0.8, label="reverse SDE")
ax.set_xscale("log"); ax.set_xlim(sigma_max, sigma_min)
ax.set_xlabel("sigma (time runs right)"); ax.set_ylabel("z = (x - mu) / sqrt(sd^2 + sigma^2)")
ax.set_ylim(-4, 5); ax.legend(fontsize=8, loc="upper left", ncol=3)
fig.tight_layout()
show(fig, os.path.join(OUT, "00_ode_and_sde.png"))

# %% [markdown]
# ## 3. Euler and Heun on the PF-ODE
# A sampler solves the ODE on a grid sigma_0 > sigma_1 > ... with the slope
# d(x, sigma) = -sigma s(x; sigma). With h = sigma_{i+1} - sigma_i (negative):
#
#     Euler   x_{i+1} = x_i + h d(x_i, sigma_i)                       one score evaluation per step
#     Heun    x~ = x_i + h d(x_i, sigma_i);  x_{i+1} = x_i + h (d(x_i, sigma_i) + d(x~, sigma_{i+1})) / 2
#
# Heun averages the slopes at both ends of the step (the trapezoidal rule), which cancels the
# h^2 term of Euler's Taylor error: per step Euler errs by O(h^2) and Heun by O(h^3), so over the
# N steps the error is O(1/N) for Euler and O(1/N^2) for Heun. Heun costs two evaluations a
# step. EDM (Algorithm 2) uses Heun on the grid
# sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho with
# rho = 7 (small steps where sigma is small), then one last Euler step to sigma = 0 (a correction
# would need the slope at sigma = 0, where the denoiser form (x - D) / sigma divides by zero).
# Counting that, it costs 2N - 1 evaluations.
#
# **Check.** Solve from sigma_max to sigma_min on that grid with N = 8 ... 256 steps and compare
# with the exact solution of section 2, so the only error left is the solver's. The slope of
# log(error) against log(N) must be about -1 for Euler and -2 for Heun. Then the library's EDM
# sampler (`minisims.diffusion.EDM`, fed our closed-form denoiser) must give what our own Heun
# gives on the same grid and noise, to rounding.

# %%
def solve_pf_ode(x, sigmas, solver, score_fn=score):
    """Euler or Heun along the grid `sigmas` (decreasing), slope d = -sigma s(x; sigma).
    The correction is skipped where sigma_next = 0, as in EDM Algorithm 2."""
    for t_cur, t_next in zip(sigmas[:-1], sigmas[1:]):
        d_cur = -t_cur * score_fn(x, t_cur)
        x_next = x + (t_next - t_cur) * d_cur  # Euler step
        if solver == "heun" and t_next > 0:  # 2nd order correction
            d_prime = -t_next * score_fn(x_next, t_next)
            x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
        x = x_next
    return x


x_start = mu + np.array([-2.0, 1.0, 3.0]) * np.sqrt(sd ** 2 + sigma_max ** 2)  # 3 start points
target = ode_exact(x_start, sigma_min)
steps = np.array([8, 16, 32, 64, 128, 256])
errors = {"euler": [], "heun": []}
for N in steps:
    sigmas = edm_sigma_steps(N + 1, sigma_min, sigma_max)[:-1]  # N steps from 80 down to 0.002
    for solver in errors:
        errors[solver].append(np.abs(solve_pf_ode(x_start, sigmas, solver) - target).max())
print(" N     Euler error   Heun error")
for N, e1, e2 in zip(steps, errors["euler"], errors["heun"]):
    print(f"{N:3d}   {e1:.2e}      {e2:.2e}")
order = {k: -np.polyfit(np.log(steps), np.log(v), 1)[0] for k, v in errors.items()}
print(f"fitted order: Euler {order['euler']:.2f}, Heun {order['heun']:.2f}")
assert abs(order["euler"] - 1) < 0.15 and abs(order["heun"] - 2) < 0.15

# %%
fig, ax = plt.subplots(figsize=(4.5, 3.5))
for k, v in errors.items():
    ax.loglog(steps, v, "o-", label=f"{k}, order {order[k]:.2f}")
ax.set_xlabel("steps N"); ax.set_ylabel("max |x_N - exact|"); ax.legend()
fig.tight_layout()
show(fig, os.path.join(OUT, "00_euler_heun_order.png"))

# %% [markdown]
# The library's EDM sampler (`minisims.diffusion.edm_sampler`, Algorithm 2) does the same
# arithmetic in the denoiser's units, d = (x - D) / sigma:

# %%
edm = EDM(num_steps=18)  # the library's Heun sampler with EDM's 18 steps
print(f"EDM, 18 Heun steps: {edm.nfe()} evaluations (2N - 1)")
x_lib = edm.sample_with(denoiser, None, (N_MC,), np.random.default_rng(4))
x_own = solve_pf_ode(sigma_max * np.random.default_rng(4).standard_normal(N_MC),
                     edm_sigma_steps(18, sigma_min, sigma_max), "heun")
print(f"library EDM sampler vs our Heun, same grid and noise: max |diff| {np.abs(x_lib - x_own).max():.1e};"
      f" samples: mean {x_lib.mean():.4f}, std {x_lib.std():.4f}")
assert_close("EDM sampler", x_lib, x_own, rtol=1e-10, atol=1e-10)  # the same arithmetic, reordered
# The Heun map is affine here (x -> a + k x), so its exact output distribution follows from two points
a18, b18 = solve_pf_ode(np.array([0.0, 1.0]), edm_sigma_steps(18, sigma_min, sigma_max), "heun")
print(f"18 Heun steps map N(0, 80^2) exactly onto N({a18:.4f}, {abs(b18 - a18) * sigma_max:.4f}^2): "
      f"the std's gap to 0.5 is discretisation, not sampling error")
std18 = abs(b18 - a18) * sigma_max
assert abs(x_lib.std() - std18) < 5 * std18 / np.sqrt(2 * N_MC)  # 5 standard errors of a std

# %% [markdown]
# Euler's error roughly halves when N doubles, Heun's falls about four times. EDM's 18 Heun
# steps are not exact on this problem: the sampler's standard deviation is a few percent above
# p_data's 0.5, and the exact image of the 18-step map shows that this is the solver's error, not
# sampling noise.
#
# ## 4. One quantity, several units
# Networks are trained to predict different things, and papers write the noise in different
# units. All of them are the score, rescaled. In EDM's units, x = x_0 + sigma n:
#
# | name | what the network predicts | in terms of the score s(x; sigma) | back to the score |
# |---|---|---|---|
# | score | grad_x log p(x; sigma) | s | s |
# | denoiser D (EDM) | E[x_0 given x] | x + sigma^2 s | (D - x) / sigma^2 |
# | epsilon (DDPM) | E[n given x] | -sigma s | -eps / sigma |
#
# DDPM (Ho et al. 2020) instead scales the signal down as it adds noise:
#
#     x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps,      ab_t = alpha_bar_t in (0, 1].
#
# Divide by sqrt(ab_t): x_t / sqrt(ab_t) = x_0 + sqrt((1 - ab_t) / ab_t) eps, which is EDM's x at
#
#     sigma_t = sqrt((1 - ab_t) / ab_t),   ab_t = 1 / (1 + sigma_t^2),   x_t = sqrt(ab_t) x_sigma,
#
# with the same noise draw, eps = n. So DDPM's epsilon-prediction is the table's third row, and
# x_0 from eps is (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t) = x_sigma - sigma eps = D. But the
# *score* depends on the units: p_t(x_t) is p(x; sigma) stretched by sqrt(ab_t), so by the
# chain rule
#
#     s_t(x_t) = grad_{x_t} log p_t(x_t) = -eps / sqrt(1 - ab_t) = s(x_sigma; sigma) / sqrt(ab_t).
#
# The DDPM score and EDM's (D - x) / sigma^2 are *not* equal numbers: they differ by the factor
# 1 / sqrt(ab_t).
#
# **Checks**, at several steps t of the cosine schedule (T = 40) that tutorial 01 uses:
# (a) x_t = sqrt(ab_t) x_sigma for the same x_0 and noise; (b) the ideal epsilon-prediction,
# E[eps | x_t] computed in DDPM's units by Gaussian conditioning
# (Cov(eps, x_t) = sqrt(1 - ab_t), Var(x_t) = ab_t sd^2 + 1 - ab_t), equals -sigma s(x_sigma; sigma);
# (c) -eps / sqrt(1 - ab_t) equals finite differences of log p_t, and s / sqrt(ab_t); (d) x_0 from
# eps equals D; (e) the library's `DDPM.scaling(t)` gives the same sqrt(ab_t) and sigma_t.

# %%
ab_all = cosine_alpha_bar(40)  # T
ddpm = DDPM(T=40)
x0, n_ = mu + sd * rng.standard_normal(7), rng.standard_normal(7)  # 7 clean points, 7 noise draws
for t in (1, 10, 25, 39):
    ab = ab_all[t]
    sig = np.sqrt((1 - ab) / ab)
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * n_  # DDPM units
    x_sig = x0 + sig * n_  # EDM units
    eps_ideal = np.sqrt(1 - ab) * (x_t - np.sqrt(ab) * mu) / (ab * sd ** 2 + 1 - ab)  # E[eps | x_t]
    logp_t = lambda: float(norm.logpdf(x_t, np.sqrt(ab) * mu, np.sqrt(ab * sd ** 2 + 1 - ab)).sum())
    score_t = -eps_ideal / np.sqrt(1 - ab)
    checks = {
        "(a) x_t - sqrt(ab) x_sigma": (x_t, np.sqrt(ab) * x_sig),
        "(b) eps + sigma s": (eps_ideal, -sig * score(x_sig, sig)),
        "(c) DDPM score - finite diff": (score_t, numerical_grad(logp_t, x_t)),
        "(c) DDPM score - s / sqrt(ab)": (score_t, score(x_sig, sig) / np.sqrt(ab)),
        "(d) x_0 from eps - D": ((x_t - np.sqrt(1 - ab) * eps_ideal) / np.sqrt(ab), denoiser(x_sig, sig)),
        "(e) scaling(t) - ours": (np.array(ddpm.scaling(t)), np.array([np.sqrt(ab), sig])),
    }
    print(f"t = {t:2d}: ab {ab:.4f}, sigma {sig:8.4f}, 1/(1+sigma^2) {1 / (1 + sig ** 2):.4f}, "
          f"DDPM score / EDM score {(score_t / score(x_sig, sig))[0]:.4f} = 1/sqrt(ab) {1 / np.sqrt(ab):.4f}")
    for name, (a, b) in checks.items():
        tol = 1e-6 if "finite" in name else 1e-10  # centred differences vs rounding
        assert_close(f"{name}, t = {t}", a, b, rtol=tol, atol=tol)
    print("        max |diff|: " + ", ".join(f"{name} {np.abs(a - b).max():.0e}" for name, (a, b) in checks.items()))

# %% [markdown]
# ## 5. Distances between distributions: W2 and FD
# **Wasserstein-2.** Among all couplings of X ~ p and Y ~ q (joint distributions with those
# marginals), take the one that moves mass least in mean squared distance:
#
#     W2(p, q)^2 = min over couplings of E ||X - Y||^2.
#
# In one dimension the best coupling pairs equal quantiles, so for two equal-size samples it pairs
# the sorted values: W2^2 is the mean squared difference of the sorted samples. Between Gaussians
# it has a closed form,
#
#     W2^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1^(1/2) S_2 S_1^(1/2))^(1/2)),
#
# which in 1D is (mu_1 - mu_2)^2 + (s_1 - s_2)^2. In 2D and above the empirical W2 between two
# point sets of n points each is an assignment problem (`scipy.optimize.linear_sum_assignment`
# on the n x n matrix of squared distances), O(n^3). Beware: `scipy.stats.wasserstein_distance`
# is **W1** (mean |X - Y| under the best coupling), not W2.
#
# Between Gaussians the best coupling is a linear map, T(x) = m_2 + A (x - m_1) with
# A = S_1^(-1/2) (S_1^(1/2) S_2 S_1^(1/2))^(1/2) S_1^(-1/2): it carries N(m_1, S_1) onto N(m_2, S_2),
# and E ||X - T(X)||^2 is the closed form above.
#
# **Checks.** (a) 1D: W2 of sorted samples against the closed form, and scipy's W1 against
# the mean absolute difference of the sorted samples (a different number). (b) 2D: the closed
# form against `minisims.metrics`; the map T carries draws of p to q's covariance and moves them
# by W2 on average. (c) The optimal assignment between n draws of each estimates W2 with a
# finite-sample error; the assignment between two samples of the *same* p, whose exact W2 is 0,
# shows the size of that error, which shrinks only slowly with n in 2D. `minisims.metrics` gives
# the same assignment.

# %%
def gaussian_w2(m1, S1, m2, S2):
    """Closed-form W2 between N(m1, S1) and N(m2, S2), d >= 1 (S as d x d matrices)."""
    def sqrtm(A):  # symmetric positive semi-definite square root
        ev, V = np.linalg.eigh(A)
        return (V * np.sqrt(np.clip(ev, 0, None))) @ V.T
    r1 = sqrtm(S1)
    d2 = np.sum((m1 - m2) ** 2) + np.trace(S1 + S2 - 2 * sqrtm(r1 @ S2 @ r1))
    return np.sqrt(max(d2, 0.0))


a = 1.0 + 0.5 * rng.standard_normal(N_MC)  # N(1, 0.5^2)
b = 0.0 + 1.0 * rng.standard_normal(N_MC)  # N(0, 1)
w2_sorted = np.sqrt(np.mean((np.sort(a) - np.sort(b)) ** 2))
w2_exact = gaussian_w2(np.array([1.0]), np.array([[0.25]]), np.array([0.0]), np.array([[1.0]]))
w1_scipy, w1_sorted = wasserstein_distance(a, b), np.mean(np.abs(np.sort(a) - np.sort(b)))
print(f"(a) 1D, n = {N_MC}: W2 sorted {w2_sorted:.4f}, closed form sqrt(1 + 0.25) = {w2_exact:.4f}; "
      f"scipy's W1 {w1_scipy:.4f} = sorted |diff| {w1_sorted:.4f}")
assert abs(w2_sorted - w2_exact) < 0.02  # sampling error of n >= 20000 points
assert_close("scipy is W1", w1_scipy, w1_sorted, rtol=1e-9, atol=1e-12)
assert abs(w1_scipy - w2_exact) > 0.1  # W1 is a different distance

# %% [markdown]
# In 2D, between the paper's p_r and another Gaussian q:

# %%
m1, S1 = np.array([0.0, 0.0]), np.array([[2.0, 1.0], [1.0, 2.0]])  # the paper's p_r
m2, S2 = np.array([0.5, 0.0]), np.array([[1.0, 0.0], [0.0, 3.0]])
w2_2d = gaussian_w2(m1, S1, m2, S2)
lib_2d = gaussian_w2_from_moments(m1, S1, m2, S2)
print(f"(b) 2D closed form {w2_2d:.4f} (minisims.metrics: {lib_2d:.4f})")
assert_close("W2 closed form", lib_2d, w2_2d, rtol=1e-10, atol=1e-12)
ev, V = np.linalg.eigh(S1)
r1, r1_inv = (V * np.sqrt(ev)) @ V.T, (V / np.sqrt(ev)) @ V.T  # S1^(1/2), S1^(-1/2)
ev2, V2 = np.linalg.eigh(r1 @ S2 @ r1)
A = r1_inv @ ((V2 * np.sqrt(ev2)) @ V2.T) @ r1_inv  # 2,2, symmetric positive definite
X = rng.multivariate_normal(m1, S1, N_MC)  # N_MC,2
TX = m2 + (X - m1) @ A  # N_MC,2 (A is symmetric)
moved = np.sqrt(np.mean(np.sum((X - TX) ** 2, axis=1)))
print(f"    the map T: sqrt(E||X - T(X)||^2) {moved:.4f}; cov of T(X) {np.cov(TX.T).round(3).tolist()} "
      f"vs S2 {S2.tolist()}")
assert abs(moved - w2_2d) < 0.02 and np.abs(np.cov(TX.T) - S2).max() < 0.1  # sampling error
floor = np.inf
for n in ((100, 300) if FAST else (100, 300, 1000)):
    p, p2, q = (rng.multivariate_normal(m, S, n) for m, S in ((m1, S1), (m1, S1), (m2, S2)))  # n,2 each
    C = ((p[:, None, :] - q[None, :, :]) ** 2).sum(-1)  # n,n squared distances
    rows, cols = linear_sum_assignment(C)
    emp = np.sqrt(C[rows, cols].mean())
    print(f"(c) n = {n:4d}: assignment W2(p, q) {emp:.4f} (minisims.metrics.empirical_w2 {empirical_w2(p, q):.4f}), "
          f"closed form {w2_2d:.4f}; assignment W2(p, p) {empirical_w2(p, p2):.4f}, exact 0")
    assert_close("empirical W2", empirical_w2(p, q), emp, rtol=1e-12, atol=1e-12)
    # the error is within the scale the same-distribution floor shows, and that floor falls with n
    assert abs(emp - w2_2d) < empirical_w2(p, p2) < floor
    floor = empirical_w2(p, p2)

# %% [markdown]
# **Frechet distance (FD).** FID (Heusel et al. 2017) compares two image sets through features
# (Inception-v3's 2048-dimensional pool layer): fit a Gaussian to each set's features (mean and
# covariance) and take the closed form above, *squared*:
#
#     FD = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) = W2^2 between the fitted Gaussians.
#
# (Tr (S_1 S_2)^(1/2) = Tr (S_1^(1/2) S_2 S_1^(1/2))^(1/2): the two matrices are similar.) FD is in
# squared feature units and sees only the first two moments. **Checks.** (a)
# `minisims.metrics.frechet_distance` equals our W2 squared between the two sets' fitted Gaussians.
# (b) A two-bump distribution and a Gaussian with the same mean and variance: FD is near zero
# (sampling error only), their W2 is not.

# %%
f1 = rng.multivariate_normal(m1, S1, 2000)  # 2000,2 "features" of set 1
f2 = rng.multivariate_normal(m2, S2, 2000)
fit = lambda f: (f.mean(0), np.cov(f.T))  # (covariance with n - 1, as FID)
fd_ours = gaussian_w2(*fit(f1), *fit(f2)) ** 2
print(f"(a) FD: minisims {frechet_distance(f1, f2):.4f}, ours {fd_ours:.4f}")
assert_close("FD", frechet_distance(f1, f2), fd_ours, rtol=1e-9, atol=1e-12)

bumps = np.where(rng.random(N_MC) < 0.5, -1.0, 1.0) + 0.1 * rng.standard_normal(N_MC)  # mean 0, var 1.01
gauss = np.sqrt(1.01) * rng.standard_normal(N_MC)
fd_bumps = gaussian_w2(np.array([bumps.mean()]), np.array([[bumps.var()]]),
                       np.array([gauss.mean()]), np.array([[gauss.var()]])) ** 2
w2_bumps = np.sqrt(np.mean((np.sort(bumps) - np.sort(gauss)) ** 2))
print(f"(b) two bumps vs a Gaussian of equal moments: FD {fd_bumps:.5f}, W2 {w2_bumps:.4f}")
assert fd_bumps < 1e-3 and w2_bumps > 0.3

# %% [markdown]
# ## 6. The exponential moving average of the weights
# Training with a noisy optimizer leaves the weights theta_k jittering around a good value.
# Most diffusion codes therefore sample with a running average, updated after each step k:
#
#     theta_ema_k = beta theta_ema_{k-1} + (1 - beta) theta_k,      theta_ema_0 = theta_0.
#
# Unrolled, it is a weighted average with geometrically decaying weights,
#
#     theta_ema_n = beta^n theta_0 + sum_{k=1..n} (1 - beta) beta^(n-k) theta_k,
#
# whose weights sum to one (a geometric series). The **half-life** h is the number of steps over
# which a weight halves, beta^h = 1/2; EDM quotes it in images seen (0.5 Mimg for CIFAR-10), so
# with batch B, beta = 0.5^(B / half-life in images). If the theta_k jitter independently with
# standard deviation tau around theta*, the average jitters with standard deviation
# tau sqrt((1 - beta) / (1 + beta)) (the stationary variance of the recursion: v = beta^2 v +
# (1 - beta)^2 tau^2).
#
# **Checks.** (a) The recursion equals the unrolled weighted sum. (b) The library's
# `minisims.train.EMA`, updated after each change of a layer's weights, gives the same numbers.
# (c) The jitter shrinks by sqrt((1 - beta) / (1 + beta)).

# %%
beta, n_steps = 0.9, 50
layer = Linear(3, 2, np.random.default_rng(5), dtype=np.float64)  # a stand-in for a network
thetas = [layer.params["W"].copy()]  # theta_0, 3,2
ema = EMA(layer, beta=beta)  # the library's shadow copy starts at theta_0
ema_rec = thetas[0].copy()
for k in range(1, n_steps + 1):
    layer.params["W"][...] = rng.standard_normal((3, 2))  # stand-in for an optimizer step
    thetas.append(layer.params["W"].copy())
    ema.update()
    ema_rec = beta * ema_rec + (1 - beta) * thetas[-1]  # the recursion
weights = np.array([beta ** n_steps] + [(1 - beta) * beta ** (n_steps - k) for k in range(1, n_steps + 1)])
ema_sum = np.tensordot(weights, np.array(thetas), axes=1)  # 3,2, the unrolled weighted sum
print(f"(a) recursion vs weighted sum: max |diff| {np.abs(ema_rec - ema_sum).max():.1e}; "
      f"weights sum to {weights.sum():.15f}")
print(f"(b) minisims EMA vs recursion: max |diff| {np.abs(ema.shadow.params['W'] - ema_rec).max():.1e}")
assert_close("EMA unrolled", ema_rec, ema_sum, rtol=1e-12, atol=1e-12)
assert_close("minisims EMA", ema.shadow.params["W"], ema_rec, rtol=1e-12, atol=1e-12)
assert abs(weights.sum() - 1) < 1e-12

beta_edm = 0.5 ** (512 / 0.5e6)  # EDM CIFAR-10: batch 512, half-life 0.5 Mimg
print(f"    EDM's CIFAR-10 EMA: beta = {beta_edm:.6f} per step, half-life {np.log(0.5) / np.log(beta_edm):.1f} steps")

# %%
tau, beta = 1.0, 0.99
jitter = tau * np.random.default_rng(6).standard_normal((4000, 500))  # steps, independent copies
avg, avgs = np.zeros(500), []
for j in jitter:
    avg = beta * avg + (1 - beta) * j
    avgs.append(avg)
measured = np.array(avgs)[1000:].std()  # skip 1000 steps (14 half-lives): then stationary
print(f"(c) beta = {beta}: EMA jitter {measured:.4f}, predicted tau sqrt((1-beta)/(1+beta)) = "
      f"{tau * np.sqrt((1 - beta) / (1 + beta)):.4f}")
assert abs(measured / np.sqrt((1 - beta) / (1 + beta)) - 1) < 0.05

# %% [markdown]
# ## 7. SIMS beside classifier-free guidance and autoguidance
# All three sample with one extrapolated score (SIMS paper eq. 5):
#
#     s_w = (1 + w) s_pos - w s_neg = s_pos + w (s_pos - s_neg).
#
# w = 0 is the positive model alone, w = -1 the negative one. Because D = x + sigma^2 s and
# eps = -sigma s are affine in s and the two weights sum to one, the same line holds for D and
# eps outputs (tutorial 01, section 3). The three methods differ only in the negative:
#
# | method | positive | negative | s_pos - s_neg points |
# |---|---|---|---|
# | CFG (Ho & Salimans 2022) | the model given class c | the same model without c | toward class c |
# | autoguidance (Karras 2024b) | the model | a smaller or less-trained model | away from weak-model errors |
# | SIMS | the base model | the base fine-tuned on its own samples | away from the base's own errors |
#
# (Autoguidance writes D_bad + g (D_good - D_bad), which is eq. 5 with g = 1 + w.)
#
# **Classifier-free guidance sharpens, on purpose.** With Bayes, s_cond - s_uncond =
# grad log p(c | x), so s_w = grad log [p(x | c) p(c | x)^w]: samples are tilted toward points the
# classifier is sure about. Check on two classes, p(x | c = +-1) = N(+-2, 1) with equal prior, at
# sigma = 0: the guided score equals finite differences of log [p(x | c) p(c | x)^w], and the
# tilted density's mean moves past the class mean, away from the other class.

# %%
xg = np.linspace(-6.0, 8.0, 2801)  # a grid for normalising densities
cls = lambda x: norm.pdf(x, 2.0, 1.0)  # p(x | c = +1)
uncond = lambda x: 0.5 * norm.pdf(x, -2.0, 1.0) + 0.5 * norm.pdf(x, 2.0, 1.0)  # p(x)
s_cond = lambda x: -(x - 2.0)  # grad log p(x | c = +1)
s_unc = lambda x: (-0.5 * norm.pdf(x, -2, 1) * (x + 2) - 0.5 * norm.pdf(x, 2, 1) * (x - 2)) / uncond(x)  # grad log p(x)
pts = np.array([-1.0, 0.0, 1.0, 2.5])
for w in (0.0, 1.0, 3.0):
    s_cfg = sims_combine(s_cond(pts), s_unc(pts), w)  # eq. 5, the library's one function
    tilt = lambda: float(np.sum(np.log(cls(pts)) + w * np.log(0.5 * cls(pts) / uncond(pts))))
    fd = numerical_grad(tilt, pts)  # perturbs pts in place and restores it
    dens = cls(xg) * (0.5 * cls(xg) / uncond(xg)) ** w
    dens /= np.trapezoid(dens, xg)
    mean_w = np.trapezoid(xg * dens, xg)
    print(f"CFG w = {w}: guided score vs grad log[p(x|c) p(c|x)^w] max |diff| "
          f"{np.abs(s_cfg - fd).max():.1e}; tilted mean {mean_w:.3f} (class mean 2)")
    assert_close(f"CFG tilt, w = {w}", s_cfg, fd, rtol=1e-6, atol=1e-7)  # centred differences
    assert (mean_w > 2.0) == (w > 0)

# %% [markdown]
# **SIMS and autoguidance correct a model's error.** Take p_data = N(1, 0.5^2) from section 1 and
# a base model that erred: it learned N(1.1, 0.6^2). These models are *assumed*, not trained: each
# network is taken to be the exact score of a Gaussian diffused to every sigma, so that the whole
# sampler has a closed form. The SIMS aux is idealised as a model that learned the base's samples
# and erred the same way once more (mean 1.1 + 0.1 = 1.2, std 0.6 x 0.6 / 0.5 = 0.72); the
# autoguidance "bad" model as a weaker fit to the real data, N(1.15, 0.8^2). The guided score is
# affine in x at every sigma, so the PF-ODE maps N(0, sigma_max^2) onto a Gaussian; we run our
# Heun sampler (256 steps) and measure W2 to p_data from its output's mean and standard deviation,
# found by solving from the two start points 0 and 1 (the map is x -> a + k x exactly). Then a
# check that the library's EDM sampler, guided through `minisims.guidance`, gives the same samples.

# %%
def gaussian_score(m, std):
    """The score of N(m, std^2) diffused to noise level sigma."""
    return lambda x, sigma: -(x - m) / (std ** 2 + sigma ** 2)


def gaussian_denoiser(m, std):
    """The denoiser of N(m, std^2) at noise level sigma."""
    return lambda x, sigma: m + std ** 2 / (std ** 2 + sigma ** 2) * (x - m)


base = (1.1, 0.6)
negatives = {"SIMS": (1.2, 0.72), "autoguidance": (1.15, 0.8)}
fine = edm_sigma_steps(256, sigma_min, sigma_max)  # 256 Heun steps, ending at 0


def guided_w2(neg, w):
    """W2 to p_data of the PF-ODE's output under s_w = (1 + w) s_base - w s_neg."""
    s_w = lambda x, sigma: sims_combine(gaussian_score(*base)(x, sigma), gaussian_score(*neg)(x, sigma), w)
    a_, b_ = solve_pf_ode(np.array([0.0, 1.0]), fine, "heun", s_w)
    m_out, sd_out = a_, abs(b_ - a_) * sigma_max  # the image of N(0, sigma_max^2) under x -> a + k x
    return np.hypot(m_out - mu, sd_out - sd), m_out, sd_out


ws = np.linspace(-1.0, 3.0, 41)  # w = -1, -0.9, ..., 3
at = lambda c, w: c[np.argmin(np.abs(ws - w))]  # a curve's value at w
curves = {name: np.array([guided_w2(neg, w)[0] for w in ws]) for name, neg in negatives.items()}
for name, neg in negatives.items():
    c = curves[name]
    best = ws[np.argmin(c)]
    _, m_b, sd_b = guided_w2(neg, best)
    print(f"{name:13s} the negative's error is {(neg[0] - mu) / (base[0] - mu):.1f} times the base's in the mean, "
          f"{(neg[1] - sd) / (base[1] - sd):.1f} times in the std")
    print(f"{name:13s} negative N{neg}: W2 at w = 0 {at(c, 0):.4f}, at w = -1 {c[0]:.4f}, "
          f"best w = {best:.1f}: W2 {c.min():.4f} (mean {m_b:.3f}, std {sd_b:.3f})")
    # guidance away from the negative helps (best w > 0, W2 down by a quarter or more), and the
    # negative alone (w = -1) is worse than the base
    assert c.min() < 0.75 * at(c, 0) and best > 0 and c[0] > at(c, 0)

# %% [markdown]
# The library's EDM sampler, given the two denoisers and w, guides through the same
# `sims_combine` (in D's units) and must give what our Heun gives on the guided score:

# %%
w_demo = 1.0
x_lib = EDM(num_steps=18).sample_with(gaussian_denoiser(*base), gaussian_denoiser(*negatives["SIMS"]),
                                      (N_MC,), np.random.default_rng(7), w=w_demo)
s_demo = lambda x, sigma: sims_combine(gaussian_score(*base)(x, sigma),
                                       gaussian_score(*negatives["SIMS"])(x, sigma), w_demo)
x_own = solve_pf_ode(sigma_max * np.random.default_rng(7).standard_normal(N_MC), edm_sigma_steps(18), "heun", s_demo)
print(f"library EDM sampler with SIMS guidance (w = {w_demo}, 18 steps) vs our Heun on the guided score: "
      f"max |diff| {np.abs(x_lib - x_own).max():.1e}; mean {x_lib.mean():.4f}, std {x_lib.std():.4f}")
assert_close("guided EDM sampler", x_lib, x_own, rtol=1e-9, atol=1e-9)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for name, c in curves.items():
    axes[0].plot(ws, c, label=name)
axes[0].axvline(0, color="0.6", lw=0.8)
axes[0].set_xlabel("w"); axes[0].set_ylabel("W2 to p_data"); axes[0].legend()
xs_plot = np.linspace(-1, 3.5, 400)
axes[1].plot(xs_plot, norm.pdf(xs_plot, mu, sd), "k", lw=2, label="p_data N(1, 0.5^2)")
axes[1].plot(xs_plot, norm.pdf(xs_plot, *base), label="base, w = 0")
axes[1].plot(xs_plot, norm.pdf(xs_plot, *negatives["SIMS"]), label="SIMS aux, w = -1")
best = ws[np.argmin(curves["SIMS"])]
_, m_b, sd_b = guided_w2(negatives["SIMS"], best)
axes[1].plot(xs_plot, norm.pdf(xs_plot, m_b, sd_b), "--", label=f"SIMS, w = {best:.1f}")
axes[1].legend(fontsize=8)
fig.tight_layout()
show(fig, os.path.join(OUT, "00_guidance.png"))

# %% [markdown]
# Extrapolating away from a model that errs the way the base errs, only more, moves the samples
# toward p_data; w = -1 (the negative model alone) is worse than the base, and too large a w
# overshoots (the curves rise again). The idealised SIMS aux errs in the base's direction in both
# mean and spread, and one w removes most of both errors. The autoguidance model here errs 1.5
# times as much in the mean but 3 times as much in the spread, so one w can fix the spread and
# leaves part of the mean error (the printed mean at its best w). Where the best w lies, and how
# much it gains, depends on how the negative's error lines up with the base's, which is why the
# paper tunes w (and the aux's training budget) by measurement. Tutorial 06 works out when this
# picture holds for trained networks.
#
# ## Summary
# - The score of noised data is a denoiser in disguise: s = (D - x) / sigma^2 (Tweedie).
# - The reverse SDE and the PF-ODE dx/dsigma = -sigma s both carry N(0, sigma_max^2) to the data;
#   the ODE does it deterministically. Heun's method solves it with error O(1/N^2) against Euler's
#   O(1/N), at two evaluations per step.
# - Score, epsilon and D are one quantity in three units; DDPM's x_t is sqrt(ab_t) times EDM's x
#   at sigma_t = sqrt((1 - ab_t) / ab_t), and its score is EDM's divided by sqrt(ab_t).
# - W2 is the least mean squared transport distance; between Gaussians it has a closed form, and
#   FD is that closed form, squared, between Gaussians fitted to features.
# - The EMA is a weighted average with weights (1 - beta) beta^(n-k) that averages the optimizer's
#   jitter away.
# - CFG, autoguidance and SIMS are the same extrapolation (1 + w) s_pos - w s_neg; SIMS's negative
#   is the base model fine-tuned on its own synthetic data.
#
# ## Exercises
# 1. Euler and Heun at equal cost: on the grid of section 3 (down to sigma_min, a correction on
#    every step), Heun with 18 steps costs 36 evaluations. Which is more accurate, Heun with 18
#    steps or Euler with 36?
# 2. How many optimizer steps does it take, with EDM's CIFAR-10 EMA, until theta_0's weight
#    beta^n falls below 1%? How many images is that?
# 3. Give the SIMS aux of section 7 a standard deviation *below* the base's (0.5, with mean 1.2):
#    its error now points the other way in the spread. Does w > 0 still help, and what does that
#    say about where the negative's error must point?
#
# ## Solutions
# The cell below computes each answer; the comments say what the numbers mean.

# %%
# 1. Euler with 36 steps against Heun with 18, to sigma_min, from the same start points
e_euler = np.abs(solve_pf_ode(x_start, edm_sigma_steps(37, sigma_min, sigma_max)[:-1], "euler") - target).max()
e_heun = np.abs(solve_pf_ode(x_start, edm_sigma_steps(19, sigma_min, sigma_max)[:-1], "heun") - target).max()
print(f"1. at 36 evaluations: Euler (36 steps) error {e_euler:.2e}, Heun (18 steps) error {e_heun:.2e}")
assert e_heun < e_euler

# 2. beta^n < 0.01  <=>  n > ln(0.01) / ln(beta)
n_1pct = int(np.ceil(np.log(0.01) / np.log(beta_edm)))
print(f"2. theta_0's weight falls below 1% after {n_1pct} steps = {n_1pct * 512 / 1e6:.2f} Mimg "
      f"({np.log(0.01) / np.log(0.5):.2f} half-lives)")
assert beta_edm ** n_1pct < 0.01 <= beta_edm ** (n_1pct - 1)

# 3. a negative whose spread errs the other way
c3 = np.array([guided_w2((1.2, 0.5), w)[0] for w in ws])
_, m3, sd3 = guided_w2((1.2, 0.5), ws[np.argmin(c3)])
print(f"3. aux N(1.2, 0.5^2): W2 at w = 0 {at(c3, 0):.4f}, at w = 0.5 {at(c3, 0.5):.4f}, "
      f"at w = -0.5 {at(c3, -0.5):.4f}; best w on the grid {ws[np.argmin(c3)]:.1f}: W2 {c3.min():.4f} "
      f"(mean {m3:.3f}, std {sd3:.3f})")
# No: the aux's mean errs the base's way (asking for w > 0) but its spread errs the other way
# (asking for w < 0), and here no w beats the base. Negative guidance corrects the base only
# along errors that the negative shares with it, amplified.
assert c3.min() == at(c3, 0)
print("figures in", OUT)
