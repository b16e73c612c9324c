"""The two diffusion formulations, each bundling its loss, its model call and its sampler.

- :class:`DDPM`: epsilon prediction, cosine schedule, ancestral sampler: the paper-faithful toy
  preset (the small DDPM toy the paper cites).
- :class:`EDM`: preconditioned denoiser (EDM or VP), EDM loss, Heun/Euler sampler: the
  formulation the image models use; the toy runs on it too.

Both expose the same methods so that training, SIMS and the loops never ask which one they
hold: ``loss_and_grad(net, y, rng)``, ``model(net)`` (the callable a sampler evaluates),
``sample(net, shape, rng, aux=None, w=0, interval=None)`` and ``sample_with(base, aux, shape,
rng, w=0, interval=None)``, the same sampler given the two model callables themselves (what
:class:`~minisims.shared_encoder.SharedEncoderPair` hands it). ``sample`` is ``sample_with`` of
``model(net)`` and ``model(aux)``, so a formulation's sampler settings are passed in one place.
``sample`` and ``sample_with`` pass ``on_step`` to the sampler (see diffusion/samplers.py).

For looking inside a sampler (minisims/animate.py) both also give, at a sampler ``level`` (EDM:
sigma; DDPM: the integer step t), ``scaling(level) -> (s, sigma)``, the state's scale and noise
level in EDM's notation x = s (x_0 + sigma n) (Karras et al. 2022, Table 1), and
``score(net, x, level, aux=None, w=0)``, grad_x log p at the state x as the model sees it,
guided by eq. 5 when aux is given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..guidance import Guidance, GuidanceInterval, sims_combine
from .loss import ddpm_loss_and_grad, edm_loss_and_grad
from .precond import EDMPrecond, VPPrecond
from .samplers import ddpm_sampler, edm_sampler
from .schedules import cosine_alpha_bar


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
