"""Schedules, preconditioning, losses and samplers against closed forms.

For Gaussian data N(0, s^2 I) the ideal denoiser is known in closed form, so a correct sampler fed
the ideal model must return samples of variance s^2; the loss gradients are checked against
finite differences with the noise held fixed.
"""
import math

import numpy as np
import pytest

from minisims.diffusion import (DDPM, EDM, EDMPrecond, VPPrecond, cosine_alpha_bar, ddpm_sampler,
                                edm_sampler, edm_sigma_steps)
from minisims.diffusion.loss import ddpm_loss_and_grad, edm_loss_and_grad
from minisims.gradcheck import assert_close, numerical_grad
from minisims.nn import MLPConfig, MLPDenoiser


def test_cosine_schedule_facts():
    ab = cosine_alpha_bar(40)
    assert ab.shape == (40,) and ab[0] == 1.0
    assert np.all(np.diff(ab) < 0) and 0 < ab[-1] < 0.01


def test_edm_sigma_steps_facts():
    t = edm_sigma_steps(18)
    assert len(t) == 19 and t[-1] == 0
    assert_close("endpoints", t[[0, 17]], [80.0, 0.002], rtol=1e-12, atol=0)
    assert np.all(np.diff(t) < 0)


@pytest.mark.parametrize("precond", [EDMPrecond(0.5), EDMPrecond(1.4), VPPrecond()])
def test_precond_matches_ideal_gaussian_denoiser(precond):
    """With F the exact target for Gaussian data, c_skip x + c_out F is the ideal denoiser
    s^2/(s^2+sigma^2) x; for EDM precond at s = sigma_data the ideal F is c_in-scaled x."""
    sigma = np.array([0.01, 0.3, 2.0, 50.0])
    c_skip, c_out, c_in, c_noise = precond.coefficients(sigma)
    if isinstance(precond, EDMPrecond):
        sd = precond.sigma_data
        assert_close("c_skip", c_skip, sd**2 / (sigma**2 + sd**2), rtol=1e-12, atol=0)
        assert_close("c_out", c_out, sigma * sd / np.sqrt(sigma**2 + sd**2), rtol=1e-12, atol=0)
        # EDM's training target has unit variance: Var(c_skip-residual / c_out) = 1 for data std sd
        var_target = (sd**2 * (1 - c_skip) ** 2 + c_skip**2 * sigma**2) / c_out**2
        assert_close("unit target variance", var_target, np.ones_like(sigma), rtol=1e-12, atol=0)
        assert_close("c_noise", c_noise, np.log(sigma) / 4, rtol=1e-12, atol=0)
    else:
        assert_close("c_out", c_out, -sigma, rtol=0, atol=0)
        assert_close("c_in", c_in, 1 / np.sqrt(sigma**2 + 1), rtol=1e-12, atol=0)
        t = precond.sigma_to_t(sigma)
        # sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) inverts sigma_to_t
        back = np.sqrt(np.exp(0.5 * precond.beta_d * t**2 + precond.beta_min * t) - 1)
        assert_close("sigma(t(sigma))", back, sigma, rtol=1e-10, atol=0)


def _ideal_edm_denoiser(s):
    return lambda x, sigma: s**2 / (s**2 + sigma**2) * x


@pytest.mark.parametrize("solver,steps,tol", [("heun", 32, 0.01), ("euler", 200, 0.03)])
def test_edm_sampler_recovers_gaussian_with_ideal_denoiser(solver, steps, tol):
    s = 1.5
    x = edm_sampler(_ideal_edm_denoiser(s), (20000, 2), np.random.default_rng(0), num_steps=steps,
                    solver=solver)
    # sampling error of the std estimate is about s/sqrt(2*40000) ~ 0.005
    assert abs(x.std() - s) < tol + 0.02, x.std()


def test_edm_heun_nfe_is_2n_minus_1():
    calls = []
    edm_sampler(lambda x, s: calls.append(s) or x * 0, (3, 2), np.random.default_rng(0), num_steps=7)
    assert len(calls) == 2 * 7 - 1 == EDM(num_steps=7).nfe()


def test_churn_draws_only_when_used():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    den = _ideal_edm_denoiser(1.0)
    a = edm_sampler(den, (4, 2), rng_a, num_steps=8)
    b = edm_sampler(den, (4, 2), rng_b, num_steps=8, S_churn=0.0, S_max=10.0)
    assert np.array_equal(a, b)
    c = edm_sampler(den, (4, 2), np.random.default_rng(5), num_steps=8, S_churn=10.0)
    assert not np.array_equal(a, c)


def test_ddpm_sampler_recovers_gaussian_with_ideal_eps():
    s, ab = 1.5, cosine_alpha_bar(40)

    def eps_ideal(x, t):  # E[eps | x_t] for x_0 ~ N(0, s^2)
        return math.sqrt(1 - ab[t]) * x / (ab[t] * s**2 + 1 - ab[t])

    x = ddpm_sampler(eps_ideal, (20000, 2), np.random.default_rng(0), alpha_bar=ab)
    assert abs(x.std() - s) < 0.05, x.std()  # 39 ancestral steps: discretisation error a few %
    assert DDPM(T=40).nfe() == 39


class _FixedNoise:
    """Replays the same random stream each time: the loss becomes a plain function of the weights."""

    def __init__(self, seed):
        self.seed = seed

    def fresh(self):
        return np.random.default_rng(self.seed)


@pytest.mark.parametrize("which", ["edm", "vp", "ddpm"])
def test_loss_gradients_match_finite_differences(which):
    rng = np.random.default_rng(3)
    net = MLPDenoiser(MLPConfig(hidden=5, depth=1, embedding="fourier", num_freqs=2), rng, ensemble=2,
                      dtype=np.float64)
    y = rng.standard_normal((2, 4, 2))
    noise = _FixedNoise(11)

    def run():
        if which == "ddpm":
            return ddpm_loss_and_grad(net, cosine_alpha_bar(10), y, noise.fresh())
        pre = EDMPrecond(1.3) if which == "edm" else VPPrecond()
        return edm_loss_and_grad(net, pre, y, noise.fresh())

    net.zero_grad()
    run()
    mine = {name: mod.grads[k].copy() for name, mod, k in net.named_parameters()}
    for name, mod, k in net.named_parameters():  # (each run() adds into grads again: copied above)
        ref = numerical_grad(lambda: float(run().sum()), mod.params[k])
        assert_close(name, mine[name], ref, rtol=1e-5, atol=1e-7)


def test_loss_members_are_independent():
    """The loss of member r depends on member r's weights only (sum_r L_r has block gradients)."""
    rng = np.random.default_rng(4)
    net = MLPDenoiser(MLPConfig(hidden=4, depth=1), rng, ensemble=3, dtype=np.float64)
    y = rng.standard_normal((3, 5, 2))
    l0 = edm_loss_and_grad(net, EDMPrecond(1.0), y, np.random.default_rng(0))
    net.net.layers[0].params["W"][1] += 0.5  # perturb member 1 only
    l1 = edm_loss_and_grad(net, EDMPrecond(1.0), y, np.random.default_rng(0))
    assert l0[0] == l1[0] and l0[2] == l1[2] and l0[1] != l1[1]
