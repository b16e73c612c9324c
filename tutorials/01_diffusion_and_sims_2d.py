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

import numpy as np
from scipy.stats import multivariate_normal

from minisims.backend import blas_threads
from minisims.data.toy import GAUSSIAN_COV, GAUSSIAN_MEAN, sample_gaussian
from minisims.diffusion import DDPM, EDM, ddpm_betas
from minisims.gradcheck import assert_close, gradients, numerical_grad
from minisims.guidance import sims_combine
from minisims.metrics import gaussian_w2, moments
from minisims.nn.mlp import MLPConfig, MLPDenoiser
from minisims.plots import gaussian_contours, pyplot, show, tutorial_dir
from minisims.sims import SIMSConfig, sample_sims, synthesize, train_aux, train_base
from minisims.train import TrainConfig, train

FAST = os.environ.get("MINISIMS_TUTORIAL_FAST") == "1"
OUT = tutorial_dir("01")  # figures: shown inline in Jupyter, saved here (runs/tutorials/01/)
plt = pyplot()
RUNS = 4 if FAST else 16          # independent runs, trained at once on the ensemble axis
N_SAMPLES = 400 if FAST else 2000  # samples per run for measuring distances
rng = np.random.default_rng(0)
_blas_limit = blas_threads(1)  # small matrices: one BLAS thread is fastest (see tutorial 02)

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
fig.tight_layout(); show(fig, os.path.join(OUT, "01_forward_process.png"))

# %% [markdown]
# ## 3. Score, noise and clean point: one quantity in three units
# A diffusion sampler needs the **score** s(x_t) = grad log p_t(x_t) of the noised data's density
# p_t. Nobody can evaluate p_t, but the noising gives it a useful form. Write the forward process as
# x_t = a x_0 + b eps (DDPM: a = sqrt(alpha_bar_t), b = sqrt(1 - alpha_bar_t); EDM: a = 1,
# b = sigma). The **perturbation kernel** is Gaussian, q(x_t | x_0) = N(a x_0, b^2 I), with
#
#     grad_{x_t} log q(x_t | x_0) = -(x_t - a x_0) / b^2 = -eps / b.
#
# The marginal is p_t(x_t) = integral q(x_t | x_0) p(x_0) dx_0. Differentiate under the integral,
# write grad q = q grad log q and divide by p_t; q(x_t | x_0) p(x_0) / p_t(x_t) is the posterior
# p(x_0 | x_t), so the score is a posterior average of the kernel's score (**Tweedie's formula**):
#
#     s(x_t) = E[ -eps / b | x_t ] = -E[eps | x_t] / b = (a E[x_0 | x_t] - x_t) / b^2.
#
# A network trained with a squared error learns a conditional mean. DDPM's network predicts the
# noise, eps_theta ~ E[eps | x_t]; EDM's denoiser predicts the clean point, D ~ E[x_0 | x]. So
#
#     DDPM:  s(x_t) = -eps_theta(x_t, t) / sqrt(1 - alpha_bar_t)
#     EDM:   s(x)   = (D(x; sigma) - x) / sigma^2                    (x = x_0 + sigma n)
#
# The two are one process in two units: x = x_t / sqrt(alpha_bar_t) is x_0 + sigma_t n with
# sigma_t^2 = (1 - alpha_bar_t) / alpha_bar_t (the noise level `ddpm_sampler` reports to a guidance
# interval), and by the chain rule grad_x log p = sqrt(alpha_bar_t) grad_{x_t} log p_t.
#
# **Why eq. 5 holds alike for scores, denoisers and epsilons.** At a fixed point x and noise level,
# each of these maps is *affine* in the network output o: s = A o + c, with A and c depending on
# (x, noise level) only (DDPM: A = -1/b, c = 0; EDM: A = 1/sigma^2, c = -x/sigma^2). The SIMS weights
# 1 + w and -w sum to one, so the offset survives exactly once:
#
#     (1 + w)(A o_base + c) - w (A o_aux + c) = A ((1 + w) o_base - w o_aux) + c.
#
# Guiding the scores is guiding the network outputs, whatever they predict; that is why
# `minisims.guidance.sims_combine` is one function for every sampler. (Weights that did not sum to
# one, e.g. (1 + w) s_base alone, would leave (1 + w) c - c behind and the identity would fail.)
#
# **Check.** For p_r = N(0, Sigma) everything is closed-form: p_t = N(0, C_t) with
# C_t = alpha_bar_t Sigma + (1 - alpha_bar_t) I; conditioning jointly Gaussian variables gives the
# *ideal* noise prediction E[eps | x_t] = b C_t^{-1} x_t (since Cov(eps, x_t) = b I) and the ideal
# denoiser E[x_0 | x] = Sigma (Sigma + sigma^2 I)^{-1} x. Below, Tweedie's score from the ideal eps
# and from the ideal D is compared with finite differences of log p_t itself; then eq. 5 is applied
# (through `sims_combine`) in all three spaces to a base and an over-dispersed "aux" (Sigma_aux =
# 1.5 Sigma) and the three results compared. These ideal models will also test the sampler below.

# %%
def ideal_eps(cov, alpha_bar):
    """eps(x_t, t) = E[eps | x_t] for x_0 ~ N(0, cov): sqrt(1 - ab_t) C_t^{-1} x_t (x_t: ...,2)."""
    def eps(x, t):
        C_t = alpha_bar[t] * cov + (1 - alpha_bar[t]) * np.eye(2)  # 2,2, symmetric
        return np.sqrt(1 - alpha_bar[t]) * x @ np.linalg.inv(C_t)  # ...,2
    return eps


def ideal_denoiser(cov):
    """D(x; sigma) = E[x_0 | x_0 + sigma n = x] for x_0 ~ N(0, cov): Sigma (Sigma + sigma^2 I)^{-1} x."""
    return lambda x, sigma: x @ np.linalg.inv(cov + sigma ** 2 * np.eye(2)) @ cov  # ...,2


check_rng = np.random.default_rng(10)  # the checks draw from their own generator
t = 10
b_t, sigma_t = np.sqrt(1 - ab[t]), np.sqrt((1 - ab[t]) / ab[t])
x_t = 1.5 * check_rng.standard_normal((5, 2))  # 5,2 points at which to compare
x_edm = x_t / np.sqrt(ab[t])  # 5,2 the same points in EDM's units
p_t = multivariate_normal(GAUSSIAN_MEAN, ab[t] * GAUSSIAN_COV + (1 - ab[t]) * np.eye(2))
score_fd = numerical_grad(lambda: float(p_t.logpdf(x_t).sum()), x_t)  # 5,2 (points independent)
score_eps = -ideal_eps(GAUSSIAN_COV, ab)(x_t, t) / b_t  # 5,2
score_D = (ideal_denoiser(GAUSSIAN_COV)(x_edm, sigma_t) - x_edm) / sigma_t ** 2 / np.sqrt(ab[t])
for name, score in (("-eps / sqrt(1 - ab)", score_eps), ("(D - x) / sigma^2 / sqrt(ab)", score_D)):
    print(f"t = {t}: score {name:28s} vs finite differences of log p_t: "
          f"max |diff| {np.abs(score - score_fd).max():.1e}")
    assert_close(name, score, score_fd, rtol=1e-6, atol=1e-8)  # centred differences, h = 1e-6
# in EDM's units alone the score is (D - x) / sigma^2 = -eps / sigma: sqrt(ab) times DDPM's
score_edm = (ideal_denoiser(GAUSSIAN_COV)(x_edm, sigma_t) - x_edm) / sigma_t ** 2  # 5,2
eps_t = ideal_eps(GAUSSIAN_COV, ab)(x_t, t)  # 5,2
print(f"t = {t}: (D - x) / sigma^2 vs -eps / sigma: max |diff| "
      f"{np.abs(score_edm + eps_t / sigma_t).max():.1e}; vs -eps / sqrt(1 - ab): "
      f"ratio {np.median(score_edm / score_eps):.4f} = sqrt(ab) {np.sqrt(ab[t]):.4f}")
assert_close("EDM-units score", score_edm, -eps_t / sigma_t, rtol=1e-9, atol=1e-12)  # rounding only
assert_close("the two units", score_edm, np.sqrt(ab[t]) * score_eps, rtol=1e-9, atol=1e-12)

aux_cov, w = 1.5 * GAUSSIAN_COV, 2.0
eps_b, eps_a = ideal_eps(GAUSSIAN_COV, ab)(x_t, t), ideal_eps(aux_cov, ab)(x_t, t)  # 5,2 each
D_b, D_a = ideal_denoiser(GAUSSIAN_COV)(x_edm, sigma_t), ideal_denoiser(aux_cov)(x_edm, sigma_t)
guided_scores = sims_combine(-eps_b / b_t, -eps_a / b_t, w)  # eq. 5 on scores
guided_eps = -sims_combine(eps_b, eps_a, w) / b_t  # eq. 5 on epsilons, then to a score
guided_D = (sims_combine(D_b, D_a, w) - x_edm) / sigma_t ** 2 / np.sqrt(ab[t])  # eq. 5 on D
for name, g in (("epsilons", guided_eps), ("denoisers", guided_D)):
    print(f"eq. 5 at w = {w:g} on {name:9s} vs on scores: max |diff| {np.abs(g - guided_scores).max():.1e}")
    assert_close(f"eq. 5 on {name}", g, guided_scores, rtol=1e-9, atol=1e-12)  # rounding only

# %% [markdown]
# ## 4. The network and its hand-written backward pass
# The denoiser is the toy MLP the paper cites: Linear(3 -> 64), 4 x [Linear(64, 64), ReLU],
# Linear(64 -> 2), fed (x_t, t). Every layer caches in `forward` what its `backward` needs. Before
# trusting a backward we compare it with centred finite differences in float64, using a random
# upstream gradient dy and the loss L = sum(y * dy), whose gradient with respect to y is exactly dy.

# %%
tiny = MLPDenoiser(MLPConfig(hidden=6, depth=2), rng, ensemble=2, dtype=np.float64)
x_small, t_small = rng.standard_normal((2, 5, 2)), rng.integers(1, 40, (2, 5)).astype(float)
for name, (mine, numeric) in gradients(tiny, [x_small, t_small], rng, wrt_inputs=(0,)).items():
    rel = np.abs(mine - numeric).max() / max(np.abs(numeric).max(), 1e-12)
    print(f"{name:12s} max relative error {rel:.1e}")
    # float64 centred differences with h = 1e-6: truncation ~h^2, rounding ~1e-16/h = 1e-10
    assert_close(name, mine, numeric, rtol=1e-6, atol=1e-8)
print("gradient check passed")

# %% [markdown]
# ## 5. Training: predict the noise
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
# ## 6. Sampling: the reverse step, derived
# The forward process is a Markov chain, q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I) with
# alpha_t = 1 - beta_t and alpha_bar_t = alpha_1 ... alpha_t; `ddpm_betas` recovers
# beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} from the cosine schedule. To run it backwards we want
# q(x_{t-1} | x_t). Given x_0 as well it is Gaussian, by Bayes:
#
#     q(x_{t-1} | x_t, x_0)  propto  q(x_t | x_{t-1}) q(x_{t-1} | x_0)
#                         = N(x_t; sqrt(alpha_t) x_{t-1}, beta_t I) N(x_{t-1}; sqrt(ab_{t-1}) x_0, (1 - ab_{t-1}) I)
#
# (ab for alpha_bar). Both factors are Gaussian in x_{t-1}; add their precisions and their
# precision-weighted means. The precision is alpha_t / beta_t + 1 / (1 - ab_{t-1}), and since
# alpha_t (1 - ab_{t-1}) + beta_t = 1 - ab_t it equals (1 - ab_t) / (beta_t (1 - ab_{t-1})), so
#
#     beta_tilde_t = beta_t (1 - ab_{t-1}) / (1 - ab_t)
#     mu_tilde_t   = beta_tilde_t (sqrt(alpha_t) x_t / beta_t + sqrt(ab_{t-1}) x_0 / (1 - ab_{t-1}))
#                  = sqrt(alpha_t) (1 - ab_{t-1}) / (1 - ab_t) x_t + sqrt(ab_{t-1}) beta_t / (1 - ab_t) x_0.
#
# At sampling time x_0 is unknown; predict it from the network's noise, inverting the forward
# process: x0_hat = (x_t - sqrt(1 - ab_t) eps_theta) / sqrt(ab_t). Substituting, with
# sqrt(ab_{t-1} / ab_t) = 1 / sqrt(alpha_t) and the same identity as above, the x_t terms collect to
# x_t / sqrt(alpha_t) and
#
#     mu_theta(x_t) = (x_t - beta_t / sqrt(1 - ab_t) eps_theta(x_t, t)) / sqrt(alpha_t)     (Ho et al. eq. 11)
#
# which is the line marked "Posterior mean" in `minisims.diffusion.ddpm_sampler`. The
# sampler starts from white noise at t = 39, and each step draws x_{t-1} = mu_theta + sqrt(beta_t) z
# (Ho et al.'s variance beta_t; beta_tilde_t is the other choice they discuss), with no noise on
# the last step: 39 network calls. mu_theta is affine in eps_theta at fixed x_t, so, as in
# section 3, guiding eps (eq. 5) is guiding the reverse step's mean.
#
# **A distance to p_r.** To say how close samples are to p_r we use, here and below, the
# **Wasserstein-2 distance W2** between the Gaussian fitted to the samples (their mean mu and
# covariance S) and p_r = N(mu_r, Sigma). Between two Gaussians it has a closed form,
#
#     W2^2 = |mu - mu_r|^2 + Tr(S + Sigma - 2 (S^{1/2} Sigma S^{1/2})^{1/2})
#
# (`minisims.metrics.gaussian_w2`), in the data's units and 0 only for a perfect fit. Even exact
# draws from p_r give W2 > 0, from the sampling error of their fit: check (c) prints that floor.
#
# **Checks.** (a) Simulate (x_0, x_{t-1}, x_t) through the forward chain at t = 20 and regress
# x_{t-1} on (x_t, x_0): least squares must find mu_tilde's two coefficients, and the residual
# variance beta_tilde. (b) With the true noise in place of eps_theta the eps form and the x_0 form
# of the mean agree at every t. (c) The library's sampler, fed the ideal eps of section 3, must
# return p_r, up to the discretisation of 39 steps. Every step is then linear,
# x_{t-1} = A_t x_t + sqrt(beta_t) z with A_t = (I - beta_t C_t^{-1}) / sqrt(alpha_t), so the exact
# covariance of the sampler's output follows by P <- A_t P A_t^T + beta_t I from P = I: the
# Monte Carlo covariance must match that to sampling error, and that must approach Sigma as T grows.

# %%
betas = ddpm_betas(ab)  # T
alphas = 1 - betas  # T
t, n_mc = 20, 50_000 if FAST else 200_000
x0 = sample_gaussian(n_mc, check_rng)[0].astype(np.float64).ravel()  # 2 n_mc: the kernel is isotropic
x_prev = np.sqrt(ab[t - 1]) * x0 + np.sqrt(1 - ab[t - 1]) * check_rng.standard_normal(x0.shape)
x_t = np.sqrt(alphas[t]) * x_prev + np.sqrt(betas[t]) * check_rng.standard_normal(x0.shape)
design = np.stack([x_t, x0], axis=1)  # 2 n_mc,2
coef = np.linalg.lstsq(design, x_prev, rcond=None)[0]  # 2
fitted = [*coef, np.var(x_prev - design @ coef)]
derived = [np.sqrt(alphas[t]) * (1 - ab[t - 1]) / (1 - ab[t]), np.sqrt(ab[t - 1]) * betas[t] / (1 - ab[t]),
           betas[t] * (1 - ab[t - 1]) / (1 - ab[t])]
for name, f, d_ in zip(("coefficient of x_t", "coefficient of x_0", "variance beta_tilde"), fitted, derived):
    print(f"(a) t = {t}: {name:20s} regression {f:.4f}   derived {d_:.4f}")
assert_close("posterior by regression", np.array(fitted), np.array(derived), rtol=0, atol=0.01)

steps = np.arange(1, len(ab))  # every t >= 1
x0_pts = sample_gaussian(8, check_rng)[0].astype(np.float64)  # 8,2
noise = check_rng.standard_normal((len(steps), 8, 2))  # T-1,8,2
gap = 0.0
for t, n_ in zip(steps, noise):
    x_t = np.sqrt(ab[t]) * x0_pts + np.sqrt(1 - ab[t]) * n_  # 8,2
    mu_x0 = np.sqrt(alphas[t]) * (1 - ab[t - 1]) / (1 - ab[t]) * x_t + np.sqrt(ab[t - 1]) * betas[t] / (1 - ab[t]) * x0_pts
    mu_eps = (x_t - betas[t] / np.sqrt(1 - ab[t]) * n_) / np.sqrt(alphas[t])
    gap = max(gap, np.abs(mu_x0 - mu_eps).max())
print(f"(b) eps form vs x_0 form of the posterior mean, t = 1..{len(ab) - 1}: max |diff| {gap:.1e}")
assert gap < 1e-12  # float64 rounding of a few operations on numbers of order 1-10


def chain_covariance(cov, alpha_bar):
    """Exact covariance of ddpm_sampler's output when it is fed ideal_eps(cov) (2,2)."""
    betas = ddpm_betas(alpha_bar)
    P = np.eye(2)  # x_{T-1} ~ N(0, I)
    for t in range(len(alpha_bar) - 1, 0, -1):
        C_t = alpha_bar[t] * cov + (1 - alpha_bar[t]) * np.eye(2)
        A = (np.eye(2) - betas[t] * np.linalg.inv(C_t)) / np.sqrt(1 - betas[t])  # 2,2
        P = A @ P @ A.T + (betas[t] * np.eye(2) if t > 1 else 0.0)  # no noise on the last step
    return P


n_ideal = 20_000
ideal = {}
for T in (40, 320):
    model = DDPM(T=T)
    xs = model.sample_with(ideal_eps(GAUSSIAN_COV, model.alpha_bar), None, (1, n_ideal, 2),
                           np.random.default_rng(2))  # 1,n,2: the library's sampler
    S, P = moments(xs)[1][0], chain_covariance(GAUSSIAN_COV, model.alpha_bar)
    ideal[f"DDPM, T = {T}"] = xs[0]
    print(f"(c) T = {T:3d}: sample cov {S.round(3).tolist()}  exact chain {P.round(3).tolist()}  "
          f"W2 to p_r {gaussian_w2(xs, GAUSSIAN_MEAN, GAUSSIAN_COV)[0]:.3f}")
    # a covariance entry estimated from n points has a std error of at most sqrt(2 * 3^2 / n) ~ 0.03
    assert_close(f"sampler covariance, T = {T}", S, P, rtol=0, atol=0.1)
exact = sample_gaussian(n_ideal, np.random.default_rng(3)).astype(np.float64)  # 1,n,2
print(f"    p_r = {GAUSSIAN_COV.tolist()}; {n_ideal} exact draws from p_r: W2 {gaussian_w2(exact, GAUSSIAN_MEAN, GAUSSIAN_COV)[0]:.3f} (the floor)")
for N in (18, 64):  # the same ideal model as a denoiser, through EDM's Heun sampler (Algorithm 2)
    xs = EDM(num_steps=N).sample_with(ideal_denoiser(GAUSSIAN_COV), None, (1, n_ideal, 2), np.random.default_rng(2))
    ideal[f"EDM Heun, N = {N}"] = xs[0]
    print(f"    EDM Heun, {N} steps: sample cov {moments(xs)[1][0].round(3).tolist()}  "
          f"W2 to p_r {gaussian_w2(xs, GAUSSIAN_MEAN, GAUSSIAN_COV)[0]:.3f}")

fig, axes = plt.subplots(1, len(ideal), figsize=(3 * len(ideal), 3))
for ax, (name, xs) in zip(axes, ideal.items()):
    ax.scatter(*xs[:2000].T, s=2, alpha=0.3)
    gaussian_contours(ax, GAUSSIAN_MEAN, GAUSSIAN_COV)
    ax.set_title(f"ideal model, {name}", fontsize=9)
    ax.set_xlim(-6, 6); ax.set_ylim(-6, 6); ax.set_aspect("equal")
fig.tight_layout(); show(fig, os.path.join(OUT, "01_ideal_samplers.png"))

# %% [markdown]
# (a) finds the derived coefficients to about 0.001, its sampling error, and (b) agrees to rounding.
# (c) is the instructive one. At T = 40 the sampler's covariance (1.944 and 1.925 on the diagonal)
# is not Sigma's 2, but it matches the exact chain's 1.946 to sampling error: the gap to Sigma is
# the discretisation of 39 steps, not a bug in the code. At T = 320 the chain reaches 1.993 and the
# W2 (0.017) is at the floor that 20000 exact draws from p_r give (0.016). EDM's Heun sampler,
# fed the ideal denoiser, errs the other way at 18 steps (2.185) and is at the floor at 64 (0.016).
#
# Now the trained network in place of the ideal eps: the same sampler, 39 network calls, and the
# same W2 to p_r. It is far above the ideal model's 0.042 at the same T, so what is left is the
# network's error, which is what SIMS works on.

# %%
x = ddpm.sample(net, (RUNS, N_SAMPLES, 2), rng)  # R,N_SAMPLES,2
d = gaussian_w2(x, GAUSSIAN_MEAN, GAUSSIAN_COV)
print(f"W2 to p_r over {RUNS} runs: {d.mean():.3f} +- {d.std():.3f}")

# %% [markdown]
# ## 7. SIMS in four lines
# 1. train the base model on the real data; 2. sample a synthetic set S from it; 3. fine-tune a
# copy on S alone (the auxiliary model); 4. sample with the extrapolated score
# (1 + w) s_base - w s_aux (paper eq. 5, `minisims.guidance.sims_combine`). The sampler applies
# it to the two networks' epsilon predictions at every step, which section 3 showed is the same as
# combining their scores. The auxiliary model shows in which direction the model drifts when it
# feeds on its own output; negative guidance steps the other way. w = 0 is the base model exactly.
#
# Step 1 trains a base again, though section 5 already trained one with the same settings: there
# we called `train` with a DDPM written out, to show the loop; here every step reads `cfg` alone,
# so that one change to it (exercise 3: `formulation="edm"`) changes the whole of Algorithm 1,
# base included. The second training is cheap: 3.7 s at full size on a busy 2-core machine.

# %%
base, base_loss = train_base(data, cfg, rng, progress=True)   # 1
S = synthesize(base, cfg, cfg.n_synth, rng, progress=True)    # 2   R,n_s,2
aux, aux_loss = train_aux(base, S, cfg, rng, progress=True)   # 3
results = {}
for w in [0.0, 0.5, 1.0, 2.0, 3.0]:                            # 4
    xs = sample_sims(base, aux, cfg, w, N_SAMPLES, np.random.default_rng(1), progress=True)
    results[w] = (xs, gaussian_w2(xs, GAUSSIAN_MEAN, GAUSSIAN_COV))
    print(f"w = {w:3.1f}: W2 to p_r {results[w][1].mean():.3f} +- {results[w][1].std():.3f}")

# %%
fig, axes = plt.subplots(1, len(results), figsize=(3 * len(results), 3))
for ax, (w, (xs, dw)) in zip(axes, results.items()):
    ax.scatter(*xs[0, :800].T, s=2, alpha=0.4, color="C0" if w == 0 else "C3")
    gaussian_contours(ax, GAUSSIAN_MEAN, GAUSSIAN_COV)
    ax.set_title(f"w = {w:g}: W2 {dw.mean():.2f}")
    ax.set_xlim(-6, 6); ax.set_ylim(-6, 6); ax.set_aspect("equal")
fig.tight_layout(); show(fig, os.path.join(OUT, "01_sims.png"))
print("figures in", OUT)

# %% [markdown]
# ## 8. Watching the sampler
# The same sampler, step by step: run 1's points from the noise to the data, the base model on
# the left and SIMS at w = 2 on the right, both driven by the same random numbers, over p_r's
# contours. The arrows are the score the next step follows (for SIMS the extrapolated one of
# eq. 5, in the sampler's coordinates). How far apart are the two fields? The cell below measures
# |s_SIMS - s_base| / |s_base| (mean lengths over every run) at points x_t noised from the real
# data, at the first step of the sampler (t = 39), in the middle (t = 10) and at the last (t = 1);
# where it is largest is where SIMS moves the points most, relative to the base.
# (`python -m minisims.toy --animate runs/toy/sampling.gif` writes the same picture.)

# %%
from minisims.animate import write_toy_animation
from minisims.sims import SIMSResult

field_rng = np.random.default_rng(4)  # its own generator: the film below is unchanged
for t in (39, 10, 1):
    x_t = np.sqrt(ab[t]) * data + np.sqrt(1 - ab[t]) * field_rng.standard_normal(data.shape)  # R,1000,2
    s_base = ddpm.score(base, x_t, t)  # R,1000,2
    s_sims = ddpm.score(base, x_t, t, aux=aux, w=2.0)  # R,1000,2: eq. 5's score
    gap = np.linalg.norm(s_sims - s_base, axis=-1).mean() / np.linalg.norm(s_base, axis=-1).mean()
    print(f"t = {t:2d}: |s_SIMS - s_base| / |s_base| = {gap:.2f} (w = 2)")

gif = os.path.join(OUT, "01_sampling.gif")
frames = write_toy_animation(SIMSResult(base, aux, base_loss, aux_loss), cfg, gif, w=2.0, rng=1,
                             n_points=100 if FAST else 200, every=3 if FAST else 2)
print(f"wrote {gif}: {frames} frames")
show(gif)

# %% [markdown]
# ## Summary
# - A diffusion model is a denoiser trained on noised data; sampling runs the noising backwards.
# - Tweedie's formula, from the Gaussian perturbation kernel, makes the score, the predicted noise
#   and the denoiser one quantity in three units: in DDPM's units s_t(x_t) = -eps / sqrt(1 - alpha_bar);
#   in EDM's (x = x_t / sqrt(alpha_bar), sigma^2 = (1 - alpha_bar) / alpha_bar)
#   s(x) = (D - x) / sigma^2 = -eps / sigma, which is sqrt(alpha_bar) s_t(x_t).
#   Each is affine in the network output, and eq. 5's weights sum to one, so SIMS guides whichever
#   the network predicts.
# - The ancestral step's mean is the Gaussian posterior q(x_{t-1} | x_t, x_0) with x_0 predicted
#   from eps; fed the ideal eps of a Gaussian, the library's sampler returns the covariance that
#   the discrete chain predicts, and p_r as the steps grow.
# - Hand-written backward passes are trustworthy once they match finite differences in float64.
# - SIMS adds no new data: it trains a second model on the first one's samples and uses the
#   difference of the two as a direction to move *away* from.
#
# ## Exercises
# 1. Run with `w = -1` (here, or `python -m minisims.toy --omega -1,0,3`): you get the auxiliary
#    model. Is it closer to p_r or further than the base?
# 2. Ho et al. also propose the reverse variance beta_tilde_t. Change `chain_covariance` to add
#    beta_tilde_t instead of beta_t: at T = 40, which choice ends closer to Sigma, and why does the
#    difference vanish as T grows?
# 3. Switch to `SIMSConfig(formulation="edm")`: the EDM Heun sampler with a better-trained base.
#    Does SIMS still help? Why might a better base leave less to gain?
