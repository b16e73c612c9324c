"""Diffusion, from the noise schedule to the sampler: DDPM and EDM (Karras et al. 2022).

Read top to bottom, the file is the path a diffusion model takes:

    1. noise schedules   the DDPM cosine schedule, EDM's sigma discretisation
    2. preconditioning   EDM Table 1: D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)
    3. losses            each as *_noise (the draws), *_loss (forward, loss, dL/dF) and
                         *_loss_and_grad (the training step's call)
    4. samplers          EDM Algorithm 2 (Heun) and DDPM's ancestral sampler, guided by eq. 5
    5. formulations      DDPM and EDM, each bundling its loss, its model call and its sampler, so
                         that training, SIMS and the loops never ask which one they hold

# R ensemble members, B batch, D data dimension, S one sample's shape ((R,N,D) toy, (N,C,H,W) images)
# T DDPM steps, N sampler steps
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import backend, ops
from .guidance import Guidance, GuidanceInterval, evaluate, outputs, sims_combine


# ================================================================================================
# 1. Noise schedules: the DDPM cosine schedule and EDM's sigma discretisation
# ================================================================================================


def cosine_alpha_bar(T: int = 40, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal (2021) cosine schedule at t = 0..T-1, normalised so alpha_bar_0 = 1.

    alpha_bar_t = f(t) / f(0), f(t) = cos^2(((t/T) + s) / (1 + s) * pi/2).  Returns (T,) float64.
    """
    t = np.arange(T, dtype=np.float64)
    f = np.cos(((t / T) + s) / (1 + s) * np.pi / 2) ** 2  # T
    return f / f[0]  # T


def ddpm_betas(alpha_bar: np.ndarray, max_beta: float = 0.999) -> np.ndarray:
    """beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} for t >= 1 (beta_0 = 0), clipped. (T,)"""
    betas = np.zeros_like(alpha_bar)
    betas[1:] = np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], max_beta)
    return betas


def edm_sigma_steps(num_steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
                    rho: float = 7.0) -> np.ndarray:
    """EDM eq. 5: sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho for
    i = 0..N-1, then sigma_N = 0. Returns (N+1,) float64."""
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}")
    i = np.arange(num_steps, dtype=np.float64)
    t = (sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return np.append(t, 0.0)  # N+1


# ================================================================================================
# 2. Preconditioning (EDM, Karras et al. 2022, Table 1)
# ================================================================================================
#     D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))
#
# Each class returns the four coefficients for an array (or scalar) of noise levels.


@dataclass(frozen=True)
class EDMPrecond:
    """EDM: unit-variance network inputs and targets for data of std sigma_data."""
    sigma_data: float = 0.5

    def coefficients(self, sigma):
        xp = backend.xp(sigma)
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / xp.sqrt(sigma ** 2 + sd2)
        c_in = 1 / xp.sqrt(sigma ** 2 + sd2)
        c_noise = xp.log(sigma) / 4
        return c_skip, c_out, c_in, c_noise


@dataclass(frozen=True)
class VPPrecond:
    """VP (Song et al. 2021) written in EDM's form. With c_skip = 1 and c_out = -sigma, F's target
    (y - c_skip x) / c_out = (x - y) / sigma is +epsilon, the unit-variance noise itself."""
    beta_d: float = 19.9
    beta_min: float = 0.1
    M: int = 1000

    def sigma_to_t(self, sigma):
        xp = backend.xp(sigma)
        return (xp.sqrt(self.beta_min ** 2 + 2 * self.beta_d * xp.log1p(sigma ** 2)) - self.beta_min) / self.beta_d

    def coefficients(self, sigma):
        xp = backend.xp(sigma)
        c_skip = xp.ones_like(sigma) if hasattr(sigma, "shape") else 1.0
        c_out = -sigma
        c_in = 1 / xp.sqrt(sigma ** 2 + 1)
        c_noise = (self.M - 1) * self.sigma_to_t(sigma)
        return c_skip, c_out, c_in, c_noise


# ================================================================================================
# 3. Losses, with their gradient with respect to the network output F
# ================================================================================================
# y is (R,B,D) for the toy, (N,C,H,W) for images. Each loss comes in three parts, so a caller can hold the noise fixed or drive the backward pass
# itself (a gradient check, Algorithm 1 on a model that is not one network):
#
# - ``*_noise(y, rng, ...)`` draws the noise levels and the noise from the generator it is given;
# - ``*_loss(net, ..., y, <levels>, <noise>)`` runs ``net.forward`` only and returns
#   ``(loss, dL/dF)``: the loss of each ensemble member and the gradient with respect to F;
# - ``*_loss_and_grad(net, ..., y, rng)`` is the training step's call: draw, loss,
#   ``net.backward(dL/dF)``, return the loss.
#
# Members are independent: the network's grads hold the gradient of sum_r L_r, so member r's
# gradient is that of L_r alone.
#
# Axes of y: the first ``member_ndim`` index ensemble members (1 for the toy, 0 for one image
# model), the last ``data_ndim`` are one sample's data (1 for points, 3 for C,H,W), the rest are the
# batch. Each sample gets its own noise level.


def _split(y, member_ndim: int, data_ndim: int):
    """Shapes: per-sample conditioning (members+batch) and the sigma broadcast shape."""
    sample_shape = y.shape[: y.ndim - data_ndim]
    return sample_shape, sample_shape + (1,) * data_ndim


def _member_mean(v, member_ndim: int):
    """Mean over all non-member axes: (members..., rest...) -> (members...)."""
    lead = v.shape[:member_ndim]
    return v.reshape(lead + (-1,)).mean(axis=-1)


# ------------------------------------------------------------------------------------------------
# EDM (Karras et al. 2022)
# ------------------------------------------------------------------------------------------------

def edm_noise(y, rng, P_mean: float = -1.2, P_std: float = 1.2, member_ndim: int = 1,
              data_ndim: int = 1):
    """ln sigma ~ N(P_mean, P_std^2) per sample, n ~ N(0, sigma^2 I): returns (sigma, n), sigma
    shaped to broadcast against y (R,B,1) and n like y (R,B,D). Draws sigma's normals first,
    then n's."""
    xp = backend.xp(y)
    _, sigma_shape = _split(y, member_ndim, data_ndim)
    sigma = xp.exp(rng.standard_normal(sigma_shape, dtype=y.dtype) * P_std + P_mean)  # R,B,1
    n = rng.standard_normal(y.shape, dtype=y.dtype) * sigma  # R,B,D
    return sigma, n


def edm_loss(net, precond, y, sigma, n, member_ndim: int = 1, data_ndim: int = 1):
    """EDM loss (eq. 2 and Table 1's training rows) for given noise levels sigma (R,B,1) and
    noise n (R,B,D); runs ``net.forward`` only and returns (loss (R), dL/dF (R,B,D)):

        L = lambda(sigma) || D(y + n; sigma) - y ||^2,  lambda = 1 / c_out^2

    lambda = 1/c_out^2 equals EDM's (sigma^2 + sd^2)/(sigma sd)^2 under EDM preconditioning and
    1/sigma^2 under VP, so F's effective regression target always has unit weight.
    """
    sample_shape, _ = _split(y, member_ndim, data_ndim)
    c_skip, c_out, c_in, c_noise = precond.coefficients(sigma)  # each R,B,1
    x = y + n
    F = net.forward(c_in * x, c_noise.reshape(sample_shape))  # R,B,D
    err = c_skip * x + c_out * F - y  # D(x; sigma) - y, R,B,D
    weight = 1 / c_out ** 2
    loss = _member_mean(weight * err ** 2, member_ndim)  # R
    count = err.size // max(1, loss.size)  # terms averaged into each member's loss
    dF = ((2.0 / count) * weight * c_out * err).astype(F.dtype, copy=False)  # R,B,D
    return loss, dF


def edm_loss_and_grad(net, precond, y, rng, P_mean: float = -1.2, P_std: float = 1.2,
                      member_ndim: int = 1, data_ndim: int = 1):
    """One EDM training step's loss: draw (sigma, n), :func:`edm_loss`, ``net.backward(dL/dF)``.
    Returns the loss of each member (R)."""
    sigma, n = edm_noise(y, rng, P_mean, P_std, member_ndim, data_ndim)
    loss, dF = edm_loss(net, precond, y, sigma, n, member_ndim, data_ndim)
    net.backward(dF)
    return loss


# ------------------------------------------------------------------------------------------------
# DDPM (Ho et al. 2020)
# ------------------------------------------------------------------------------------------------

def ddpm_noise(y, rng, T: int, member_ndim: int = 1, data_ndim: int = 1):
    """t ~ U{1..T-1} per sample (integers, R,B) and eps ~ N(0, I) like y (R,B,D): returns
    (t, eps). Draws t first, then eps."""
    sample_shape, _ = _split(y, member_ndim, data_ndim)
    t = rng.integers(1, T, size=sample_shape)  # R,B
    eps = rng.standard_normal(y.shape, dtype=y.dtype)  # R,B,D
    return t, eps


def ddpm_loss(net, alpha_bar, y, t, eps, member_ndim: int = 1, data_ndim: int = 1):
    """DDPM epsilon-prediction loss (eq. 14) for given steps t (R,B) and noise eps (R,B,D);
    runs ``net.forward`` only and returns (loss (R), dL/dF (R,B,D)):

        x_t = sqrt(ab_t) y + sqrt(1 - ab_t) eps,  L = || F(x_t, t) - eps ||^2

    The network is fed the raw step index t, as in the toy the paper cites.
    """
    xp = backend.xp(y)
    _, sigma_shape = _split(y, member_ndim, data_ndim)
    ab = xp.asarray(alpha_bar, dtype=y.dtype)[t].reshape(sigma_shape)  # R,B,1
    x_t = xp.sqrt(ab) * y + xp.sqrt(1 - ab) * eps
    err = net.forward(x_t, t.astype(y.dtype)) - eps  # R,B,D
    loss = _member_mean(err ** 2, member_ndim)  # R
    count = err.size // max(1, loss.size)
    return loss, (2.0 / count) * err  # R and R,B,D


def ddpm_loss_and_grad(net, alpha_bar, y, rng, member_ndim: int = 1, data_ndim: int = 1):
    """One DDPM training step's loss: draw (t, eps), :func:`ddpm_loss`, ``net.backward(dL/dF)``.
    Returns the loss of each member (R)."""
    t, eps = ddpm_noise(y, rng, len(alpha_bar), member_ndim, data_ndim)
    loss, dF = ddpm_loss(net, alpha_bar, y, t, eps, member_ndim, data_ndim)
    net.backward(dF)
    return loss


# ================================================================================================
# 4. Samplers, written as the papers' algorithms
# ================================================================================================
# Each takes a model callable, the random
# generator and an optional :class:`~minisims.guidance.Guidance`. The SIMS combination (eq. 5) is
# :func:`~minisims.guidance.sims_combine` (or, in the GPU's fused EDM step, the kernel that performs
# the same operations), the aux model is called only where a step needs it (w != 0, inside the
# guidance interval), and the random draws do not depend on whether or how the sampler is guided.
#
# The ODE/SDE state is kept in float64, as in EDM's reference sampler; models receive it as is and
# cast to their own dtype.
#
# The two halves of EDM's Heun step (eq. 5, then the Euler step; eq. 5 again, then the correction)
# are :func:`minisims.ops.heun_euler` and :func:`minisims.ops.heun_correct`, a few array lines each
# (one fused pass on the GPU).
#
# Both samplers take an optional ``on_step(i, x, level)``: it is called with the state after i
# steps (i = 0: the initial noise) and the level the models are called with there (EDM: sigma;
# DDPM: the integer step t), e.g. to record a trajectory (minisims/animate.py). It must not modify
# x; without it the sampler does nothing more, and with it the samples are the same bit for bit.


def _progress(it, total, desc, progress):
    if not progress:
        return it
    from .progress import bar
    return bar(it, total=total, desc=desc, leave=False)


def edm_sampler(denoise, shape, rng, *, num_steps: int = 18, sigma_min: float = 0.002,
                sigma_max: float = 80.0, rho: float = 7.0, solver: str = "heun",
                S_churn: float = 0.0, S_min: float = 0.0, S_max: float = math.inf,
                S_noise: float = 1.0, guidance: Guidance | None = None, progress: bool = False,
                on_step=None):
    """EDM Algorithm 2 (Karras et al. 2022): Heun's 2nd order method, optional churn.

    denoise(x, sigma) -> D(x; sigma) with x of shape S. NFE = 2N - 1 for Heun, N for Euler
    (doubled where guidance is active). ``on_step``: see the module docstring. Returns x_0 of
    shape S, float64.
    """
    if solver not in ("heun", "euler"):
        raise ValueError(f"unknown solver {solver!r}: use 'heun' or 'euler'")
    t_steps = edm_sigma_steps(num_steps, sigma_min, sigma_max, rho)  # N+1, t_N = 0
    x_next = rng.standard_normal(shape, dtype=np.float64) * t_steps[0]  # S, x_0 ~ N(0, t_0^2 I)
    if on_step is not None:
        on_step(0, x_next, t_steps[0])
    steps = _progress(enumerate(zip(t_steps[:-1], t_steps[1:])), num_steps, "heun", progress)
    for i, (t_cur, t_next) in steps:
        x_cur = x_next
        # Increase noise temporarily (churn); only drawn when used, whatever the guidance.
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0.0
        t_hat = t_cur + gamma * t_cur
        x_hat = x_cur
        if gamma > 0:
            x_hat = x_cur + math.sqrt(t_hat ** 2 - t_cur ** 2) * S_noise * rng.standard_normal(shape, dtype=np.float64)
        # Guide this step? Decided once, from t_hat, for both evaluations; if not, the aux model
        # is not called at all (w = 0, or outside the guidance interval).
        guided = guidance is not None and guidance.active(i, t_hat)
        w = guidance.w if guided else 0.0
        # Euler step
        base, aux = outputs(denoise, guidance, x_hat, t_hat, guided)  # S, S or None
        x_next, d_cur = ops.heun_euler(x_hat, base, aux, w, t_hat, t_next)  # S, S
        # 2nd order correction (not at the last step, where t_next = 0)
        if solver == "heun" and i < num_steps - 1:
            base, aux = outputs(denoise, guidance, x_next, t_next, guided)  # S, S or None
            x_next = ops.heun_correct(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next)  # S
        if on_step is not None:
            on_step(i + 1, x_next, t_next)
    return x_next


def ddpm_sampler(eps_model, shape, rng, *, alpha_bar, guidance: Guidance | None = None,
                 progress: bool = False, on_step=None):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) with variance beta_t.

    eps_model(x, t) -> epsilon prediction, t the integer step index. With T = len(alpha_bar) it
    runs t = T-1 .. 1 (T-1 network calls) and adds no noise on the last step. The guidance step
    index i counts from 0 at t = T-1; its noise level is sigma_t = sqrt((1 - ab_t) / ab_t). The
    aux model is called only on guided steps (w != 0, inside the interval). ``on_step``: see the
    module docstring.
    """
    T = len(alpha_bar)
    betas = ddpm_betas(alpha_bar)  # T
    alphas = 1 - betas
    x = rng.standard_normal(shape, dtype=np.float64)  # S, x_{T-1} ~ N(0, I)
    if on_step is not None:
        on_step(0, x, T - 1)
    steps = _progress(enumerate(range(T - 1, 0, -1)), T - 1, "ddpm", progress)
    for i, t in steps:
        sigma_t = math.sqrt((1 - alpha_bar[t]) / alpha_bar[t])
        eps = evaluate(eps_model, guidance, x, t, i, sigma_t)  # S, eq. 5 where guided
        # Posterior mean, Ho et al. eq. 11
        mean = (x - betas[t] / math.sqrt(1 - alpha_bar[t]) * eps) / math.sqrt(alphas[t])
        if t > 1:
            x = mean + math.sqrt(betas[t]) * rng.standard_normal(shape, dtype=np.float64)
        else:
            x = mean
        if on_step is not None:
            on_step(i + 1, x, t - 1)
    return x


# ================================================================================================
# 5. The two formulations, each bundling its loss, its model call and its sampler
# ================================================================================================
# - :class:`DDPM`: epsilon prediction, cosine schedule, ancestral sampler: the paper-faithful toy
#   preset (the small DDPM toy the paper cites).
# - :class:`EDM`: preconditioned denoiser (EDM or VP), EDM loss, Heun/Euler sampler: the
#   formulation the image models use; the toy runs on it too.
#
# Both expose the same methods so that training, SIMS and the loops never ask which one they
# hold: ``loss_and_grad(net, y, rng)``, ``model(net)`` (the callable a sampler evaluates),
# ``sample(net, shape, rng, aux=None, w=0, interval=None)`` and ``sample_with(base, aux, shape,
# rng, w=0, interval=None)``, the same sampler given the two model callables themselves (what
# :class:`~minisims.shared_encoder.SharedEncoderPair` hands it). ``sample`` is ``sample_with`` of
# ``model(net)`` and ``model(aux)``, so a formulation's sampler settings are passed in one place.
# ``sample`` and ``sample_with`` pass ``on_step`` to the sampler (section 4).
#
# For looking inside a sampler (minisims/animate.py) both also give, at a sampler ``level`` (EDM:
# sigma; DDPM: the integer step t), ``scaling(level) -> (s, sigma)``, the state's scale and noise
# level in EDM's notation x = s (x_0 + sigma n) (Karras et al. 2022, Table 1), and
# ``score(net, x, level, aux=None, w=0)``, grad_x log p at the state x as the model sees it,
# guided by eq. 5 when aux is given.


def _sampling_forward(net):
    """The network call a sampler makes: ``net.sampling_forward()`` where the network has one
    (the toy MLP: its fused kernel on the GPU, ``forward`` itself on the CPU), else
    ``net.forward``. Made once per sampler call: it may hold a copy of the weights."""
    make = getattr(net, "sampling_forward", None)
    return net.forward if make is None else make()


def _combined(model, net, aux, w, x, level):
    """The model output at (x, level), of eq. 5 when aux is given (the aux is not called at w = 0)."""
    out = model(net)(x, level)  # S
    if aux is None or float(w) == 0.0:
        return out
    return sims_combine(out, model(aux)(x, level), w)  # S, eq. 5


def _guidance(aux_model, w, interval):
    """The Guidance for an aux model callable (or None). The sampler calls the aux model only
    where a step is guided, so w = 0 with an aux model costs nothing."""
    if aux_model is None:
        if w != 0:
            raise ValueError("guidance weight w != 0 needs an auxiliary model")
        return None
    return Guidance(aux_model, float(w), interval)


@dataclass
class DDPM:
    T: int = 40           # number of noise levels t = 0..T-1 (T-1 sampler steps)
    s: float = 0.008      # cosine schedule offset
    member_ndim: int = 1  # leading ensemble axes of the data (1 for the toy)
    data_ndim: int = 1    # axes of one sample (1 for points, 3 for images)

    name = "ddpm"

    def __post_init__(self):
        if self.T < 2:
            raise ValueError(f"DDPM needs T >= 2, got {self.T}")
        self.alpha_bar = cosine_alpha_bar(self.T, self.s)  # T

    def loss_and_grad(self, net, y, rng):
        return ddpm_loss_and_grad(net, self.alpha_bar, y, rng, self.member_ndim, self.data_ndim)

    def model(self, net):
        """eps(x, t): the network's epsilon prediction for the integer step t, in x's dtype (the
        sampler's float64 state), so guidance combines in the sampler's precision as EDM's does."""
        forward = _sampling_forward(net)
        return lambda x, t: forward(x, float(t)).astype(x.dtype, copy=False)

    def sample(self, net, shape, rng, aux=None, w: float = 0.0,
               interval: GuidanceInterval | None = None, progress: bool = False, on_step=None):
        """Samples of shape S from net, guided by aux with weight w (eq. 5). float64."""
        return self.sample_with(self.model(net), None if aux is None else self.model(aux),
                                shape, rng, w=w, interval=interval, progress=progress,
                                on_step=on_step)

    def sample_with(self, base_model, aux_model, shape, rng, w: float = 0.0,
                    interval: GuidanceInterval | None = None, progress: bool = False,
                    on_step=None):
        """The ancestral sampler with two eps(x, t) callables (aux_model may be None)."""
        return ddpm_sampler(base_model, shape, rng, alpha_bar=self.alpha_bar,
                            guidance=_guidance(aux_model, w, interval), progress=progress,
                            on_step=on_step)

    def scaling(self, t: int):
        """(s, sigma) of the state x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) n: s = sqrt(ab_t),
        sigma = sqrt((1 - ab_t) / ab_t)."""
        ab = float(self.alpha_bar[t])
        return math.sqrt(ab), math.sqrt((1 - ab) / ab)

    def score(self, net, x, t: int, aux=None, w: float = 0.0):
        """grad log p_t at the state x_t (shape S), from the epsilon prediction (eq. 5's
        combination with aux's when aux is given): -eps / sqrt(1 - ab_t). Shape S, x's dtype."""
        if not 0 < t < self.T:
            raise ValueError(f"the score needs a step 0 < t < {self.T} (t = 0 has no noise), got {t}")
        eps = _combined(self.model, net, aux, w, x, t)  # S
        return -eps / math.sqrt(1 - self.alpha_bar[t])  # S

    def nfe(self) -> int:
        return self.T - 1


@dataclass
class EDM:
    precond: EDMPrecond | VPPrecond = field(default_factory=EDMPrecond)
    P_mean: float = -1.2
    P_std: float = 1.2
    num_steps: int = 18
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    solver: str = "heun"
    S_churn: float = 0.0
    S_min: float = 0.0
    S_max: float = math.inf
    S_noise: float = 1.0
    member_ndim: int = 1
    data_ndim: int = 1

    name = "edm"

    def loss_and_grad(self, net, y, rng):
        return edm_loss_and_grad(net, self.precond, y, rng, self.P_mean, self.P_std,
                                 self.member_ndim, self.data_ndim)

    def model(self, net):
        """D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) for a scalar sigma."""
        forward = _sampling_forward(net)

        def denoise(x, sigma):
            c_skip, c_out, c_in, c_noise = self.precond.coefficients(np.float64(sigma))
            F = forward((c_in * x).astype(net.dtype), float(c_noise))
            return c_skip * x + c_out * F
        return denoise

    def sample(self, net, shape, rng, aux=None, w: float = 0.0,
               interval: GuidanceInterval | None = None, progress: bool = False, on_step=None):
        """Samples of shape S from net, guided by aux with weight w (eq. 5). float64."""
        return self.sample_with(self.model(net), None if aux is None else self.model(aux),
                                shape, rng, w=w, interval=interval, progress=progress,
                                on_step=on_step)

    def sample_with(self, base_denoiser, aux_denoiser, shape, rng, w: float = 0.0,
                    interval: GuidanceInterval | None = None, progress: bool = False,
                    on_step=None):
        """EDM Algorithm 2 with this formulation's settings and step, for two D(x; sigma)
        callables (aux_denoiser may be None)."""
        return edm_sampler(base_denoiser, shape, rng, num_steps=self.num_steps,
                           sigma_min=self.sigma_min, sigma_max=self.sigma_max, rho=self.rho,
                           solver=self.solver, S_churn=self.S_churn, S_min=self.S_min,
                           S_max=self.S_max, S_noise=self.S_noise,
                           guidance=_guidance(aux_denoiser, w, interval), progress=progress,
                           on_step=on_step)

    def scaling(self, sigma: float):
        """(s, sigma): the sampler's state is x = x_0 + sigma n (s = 1), VP preconditioning too."""
        return 1.0, float(sigma)

    def score(self, net, x, sigma: float, aux=None, w: float = 0.0):
        """grad_x log p(x; sigma) from the denoiser (eq. 5's combination with aux's when aux is
        given): (D(x; sigma) - x) / sigma^2, EDM eq. 3. Shape S, float64 for a float64 x."""
        if not sigma > 0:
            raise ValueError(f"the score needs a noise level sigma > 0, got {sigma}")
        D = _combined(self.model, net, aux, w, x, sigma)  # S
        return (D - x) / sigma ** 2  # S

    def nfe(self) -> int:
        return 2 * self.num_steps - 1 if self.solver == "heun" else self.num_steps
