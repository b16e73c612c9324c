"""Schedules, preconditioning, losses and samplers against closed forms.

For Gaussian data N(0, s^2 I) the ideal denoiser is known in closed form, so a correct sampler fed
the ideal model must return samples of variance s^2; the loss gradients (dL/dF, and the weights'
through a network) are checked against finite differences in float64 with the noise given.
"""
import math

import numpy as np
import pytest

from minisims.diffusion import (DDPM, EDM, EDMPrecond, VPPrecond, cosine_alpha_bar, ddpm_sampler,
                                edm_sampler, edm_sigma_steps)
from minisims.diffusion import ddpm_loss, ddpm_loss_and_grad, ddpm_noise, edm_loss, edm_loss_and_grad, edm_noise
from minisims.gradcheck import assert_close, numerical_grad
from minisims.nn.layers import Module
from minisims.nn.mlp import MLPConfig, MLPDenoiser


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


class _Output(Module):
    """A "network" whose output is its one parameter F: the finite differences of the loss with
    respect to F check dL/dF itself. It records what it was fed."""

    def __init__(self, F):
        super().__init__()
        self.params = {"F": F}
        self._init_grads()

    def forward(self, x, c):
        self.x, self.c = x, c
        return self.params["F"]

    def backward(self, dF):
        self.grads["F"] += dF
        return None, None


def _draw_and_loss(which, net, y, rng, member_ndim=1, data_ndim=1):
    """Draw the noise once from ``rng``; return the loss with that noise given, (loss, dL/dF),
    as a function of the weights alone."""
    if which == "ddpm":
        ab = cosine_alpha_bar(10)
        t, eps = ddpm_noise(y, rng, len(ab), member_ndim, data_ndim)
        return lambda: ddpm_loss(net, ab, y, t, eps, member_ndim, data_ndim)
    pre = EDMPrecond(1.3) if which == "edm" else VPPrecond()
    sigma, n = edm_noise(y, rng, member_ndim=member_ndim, data_ndim=data_ndim)
    return lambda: edm_loss(net, pre, y, sigma, n, member_ndim, data_ndim)


@pytest.mark.parametrize("which", ["edm", "vp", "ddpm"])
@pytest.mark.parametrize("member_ndim,shape", [(1, (2, 4, 2)), (0, (3, 2, 2, 2))])
def test_loss_dF_matches_finite_differences(which, member_ndim, shape):
    """dL/dF against centred differences in F (float64), the noise given: L = sum_r L_r * g_r
    with random member weights g (never all ones)."""
    rng = np.random.default_rng(3)
    y = rng.standard_normal(shape)
    net = _Output(rng.standard_normal(shape))
    data_ndim = len(shape) - 1 - member_ndim  # toy: R,B,D; images: N,C,H,W
    loss = _draw_and_loss(which, net, y, np.random.default_rng(11), member_ndim, data_ndim)
    L, dF = loss()
    g = np.asarray(rng.standard_normal(L.shape))  # upstream gradient of the member losses
    dF = dF * g.reshape(g.shape + (1,) * (dF.ndim - g.ndim))  # member r's rows times g_r
    ref = numerical_grad(lambda: float((loss()[0] * g).sum()), net.params["F"])
    # L is a mean of ~8-16 squares of order 1-10: rounding over 2 eps ~ 1e-16 * 1e2 / 1e-6
    assert_close("dL/dF", dF, ref, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("which", ["edm", "vp", "ddpm"])
def test_loss_gradients_match_finite_differences(which):
    """Through a real network: net.backward(dL/dF) against centred differences in every weight,
    with the noise drawn once and given to the loss."""
    rng = np.random.default_rng(3)
    net = MLPDenoiser(MLPConfig(hidden=5, depth=1, embedding="fourier", num_freqs=2), rng, ensemble=2,
                      dtype=np.float64)
    y = rng.standard_normal((2, 4, 2))
    loss = _draw_and_loss(which, net, y, np.random.default_rng(11))
    net.zero_grad()
    net.backward(loss()[1])
    for name, mod, k in net.named_parameters():
        ref = numerical_grad(lambda: float(loss()[0].sum()), mod.params[k])
        assert_close(name, mod.grads[k], ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("which", ["edm", "vp", "ddpm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_and_grad_is_draw_then_loss_then_backward(which, dtype):
    """The training step's wrapper equals its three parts bit for bit (loss and every grad), and
    leaves the generator where the draw alone leaves it."""
    cfg = MLPConfig(hidden=5, depth=1, embedding="fourier", num_freqs=2)
    nets = [MLPDenoiser(cfg, np.random.default_rng(3), ensemble=2, dtype=dtype) for _ in range(2)]
    y = np.random.default_rng(4).standard_normal((2, 6, 2)).astype(dtype)
    r0, r1 = np.random.default_rng(11), np.random.default_rng(11)
    for net in nets:
        net.zero_grad()
    if which == "ddpm":
        l0 = ddpm_loss_and_grad(nets[0], cosine_alpha_bar(10), y, r0)
    else:
        l0 = edm_loss_and_grad(nets[0], EDMPrecond(1.3) if which == "edm" else VPPrecond(), y, r0)
    loss = _draw_and_loss(which, nets[1], y, r1)
    l1, dF = loss()
    nets[1].backward(dF)
    assert np.array_equal(l0, l1) and l0.dtype == dtype
    for (name, m0, k), (_, m1, _) in zip(nets[0].named_parameters(), nets[1].named_parameters()):
        assert np.array_equal(m0.grads[k], m1.grads[k]), name
    assert r0.bit_generator.state == r1.bit_generator.state


def test_noise_draws_are_pinned():
    """The draws, their order and shapes: EDM's sigma normals (one per sample) then the noise;
    DDPM's step indices then the noise (what training drew before the losses were split)."""
    y = np.zeros((2, 3, 2), np.float32)
    sigma, n = edm_noise(y, np.random.default_rng(0), P_mean=-1.0, P_std=0.5)
    ref = np.random.default_rng(0)
    s_ref = np.exp(ref.standard_normal((2, 3, 1), dtype=np.float32) * 0.5 - 1.0)
    assert np.array_equal(sigma, s_ref)
    assert np.array_equal(n, ref.standard_normal((2, 3, 2), dtype=np.float32) * s_ref)
    t, eps = ddpm_noise(y, np.random.default_rng(0), 10)
    ref = np.random.default_rng(0)
    assert np.array_equal(t, ref.integers(1, 10, size=(2, 3)))
    assert np.array_equal(eps, ref.standard_normal((2, 3, 2), dtype=np.float32))
    y = np.zeros((4, 1, 2, 2))  # one image model: member_ndim 0, data_ndim 3
    sigma, n = edm_noise(y, np.random.default_rng(0), member_ndim=0, data_ndim=3)
    assert sigma.shape == (4, 1, 1, 1) and n.shape == y.shape
    loss = _draw_and_loss("edm", _Output(np.ones_like(y)), y, np.random.default_rng(0), 0, 3)
    assert loss()[0].shape == ()


def test_loss_members_are_independent():
    """The loss of member r depends on member r's weights only (sum_r L_r has block gradients)."""
    rng = np.random.default_rng(4)
    net = MLPDenoiser(MLPConfig(hidden=4, depth=1), rng, ensemble=3, dtype=np.float64)
    y = rng.standard_normal((3, 5, 2))
    l0 = edm_loss_and_grad(net, EDMPrecond(1.0), y, np.random.default_rng(0))
    net.net.layers[0].params["W"][1] += 0.5  # perturb member 1 only
    l1 = edm_loss_and_grad(net, EDMPrecond(1.0), y, np.random.default_rng(0))
    assert l0[0] == l1[0] and l0[2] == l1[2] and l0[1] != l1[1]
