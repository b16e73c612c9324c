"""The lines of the maths that only a closed form pins (issue "Tests that pin every line of the
maths"): each check compares against the paper's formula written out here, or against an exact
count, never against another path through the same line of code.

- EDM's churned sampler: t_hat = (1 + gamma) t_cur with gamma = min(S_churn / N, sqrt 2 - 1) inside
  [S_min, S_max] (EDM Algorithm 2, line 4), the churn noise sqrt(t_hat^2 - t_cur^2) S_noise eps
  (line 5), the guidance interval decided at t_hat, and the distribution recovered on the ideal
  denoiser of a Gaussian with churn on.
- The losses' values: mean(lambda(sigma) (D - y)^2) with EDM's lambda = (sigma^2 + sd^2) /
  (sigma sd)^2 (and VP's 1 / sigma^2), DDPM's mean((F(x_t, t) - eps)^2), for a stub network.
- VP's preconditioning: c_skip = 1 and c_noise = (M - 1) t(sigma) (EDM Table 1).
- The EMA inside ``train``: the shadow equals the average recomputed from every step's weights
  with beta = 0.5^(B / half-life in images).
- Interval boundaries (inclusive) and the DDPM sampler's levels and draws, counted.

# R runs, B batch, D data dimension, S sample shape, N steps
"""
import math

import numpy as np
import pytest

from minisims.diffusion import DDPM, EDMPrecond, VPPrecond, cosine_alpha_bar, ddpm_loss, ddpm_sampler, edm_loss, edm_sampler, edm_sigma_steps
from minisims.guidance import Guidance, GuidanceInterval
from minisims.nn.mlp import MLPConfig, MLPDenoiser
from minisims.train import Adam, TrainConfig, train

SHAPE = (3, 7, 2)  # S: an ensemble of 3 runs, 7 points in 2-D


# ---------------------------------------------------------------- EDM's churn, line by line

def _t_hat(t_cur, N, S_churn, S_min, S_max):
    """EDM Algorithm 2, lines 3-4."""
    gamma = min(S_churn / N, math.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0.0
    return t_cur + gamma * t_cur


@pytest.mark.parametrize("S_churn, S_min, S_max", [(40.0, 0.0, math.inf),  # gamma capped
                                                    (1.0, 0.05, 10.0),      # gamma = 1/N, on some steps
                                                    (0.0, 0.0, math.inf)])  # no churn
def test_every_step_starts_from_t_hat_with_the_churn_noise_of_algorithm_2(S_churn, S_min, S_max):
    """The first model call of each step is at (x_hat, t_hat): t_hat as lines 3-4 define it
    (the cap included), x_hat = x_cur + sqrt(t_hat^2 - t_cur^2) S_noise eps (line 5), eps the
    generator's next normals: rebuilt here from a generator in the same state."""
    N, S_noise = 8, 1.007
    calls = []

    def denoise(x, sigma):
        calls.append((x.copy(), float(sigma)))
        return 0.8 * x  # any smooth denoiser
    kw = dict(num_steps=N, S_churn=S_churn, S_min=S_min, S_max=S_max, S_noise=S_noise)
    x0 = edm_sampler(denoise, SHAPE, np.random.default_rng(3), **kw)
    assert np.isfinite(x0).all()
    t = edm_sigma_steps(N, 0.002, 80.0, 7.0)
    replay = np.random.default_rng(3)
    x_cur = replay.standard_normal(SHAPE) * t[0]
    firsts = [calls[2 * i] for i in range(N)]  # Heun: 2 calls a step, 1 at the last
    churned = 0
    for i, (x_seen, sigma_seen) in enumerate(firsts):
        t_hat = _t_hat(float(t[i]), N, S_churn, S_min, S_max)
        assert sigma_seen == pytest.approx(t_hat, rel=1e-15), (i, sigma_seen, t_hat)
        if t_hat > t[i]:
            churned += 1
            eps = replay.standard_normal(SHAPE)
            x_hat = x_cur + math.sqrt(t_hat ** 2 - float(t[i]) ** 2) * S_noise * eps
        else:
            x_hat = x_cur
        np.testing.assert_allclose(x_seen, x_hat, rtol=1e-13, atol=1e-13)
        # the rest of the step, Algorithm 2's lines 6-8, with this denoiser
        d = (x_hat - 0.8 * x_hat) / t_hat
        x_next = x_hat + (float(t[i + 1]) - t_hat) * d
        if i < N - 1:
            d2 = (x_next - 0.8 * x_next) / float(t[i + 1])
            x_next = x_hat + (float(t[i + 1]) - t_hat) * (0.5 * d + 0.5 * d2)
        x_cur = x_next
    np.testing.assert_allclose(x0, x_cur, rtol=1e-12, atol=1e-12)
    expected = sum(S_min <= float(tc) <= S_max for tc in t[:-1]) if S_churn > 0 else 0
    assert churned == expected


def test_the_churn_window_includes_its_ends():
    """S_min <= t_cur <= S_max, both ends inclusive: a window from exactly t_5 to exactly t_2
    churns steps 2, 3, 4 and 5 and no other (seen from the levels of the first calls)."""
    N = 8
    t = edm_sigma_steps(N, 0.002, 80.0, 7.0)
    levels = []
    edm_sampler(lambda x, sigma: (levels.append(float(sigma)), 0.8 * x)[1], SHAPE,
                np.random.default_rng(0), num_steps=N, S_churn=2.0, S_min=float(t[5]), S_max=float(t[2]))
    churned = [i for i in range(N) if levels[2 * i] > float(t[i])]
    assert churned == [2, 3, 4, 5]


def test_the_churned_sampler_recovers_the_gaussian_with_its_ideal_denoiser():
    """Data N(0, s^2): D(x; sigma) = s^2 / (s^2 + sigma^2) x exactly. With strong churn (gamma at
    its cap on steps from sigma 50 down to 0.01) the samples' standard deviation is s within the
    discretisation error (+0.95% at 128 steps, +1.7% at 64, +4.3% at 32: it shrinks with the step;
    the sampling error of the std of 40000 draws is 0.35%). A churn noise of t_hat - t_cur instead
    of sqrt(t_hat^2 - t_cur^2) gives -58% (measured)."""
    s = 1.3
    x = edm_sampler(lambda x, sigma: s ** 2 / (s ** 2 + sigma ** 2) * x, (40_000,),
                    np.random.default_rng(0), num_steps=128, S_churn=80.0, S_min=0.01, S_max=50.0)
    assert abs(x.std() / s - 1) < 0.025 and abs(x.mean()) < 0.02 * s


def test_the_guidance_interval_is_decided_at_t_hat():
    """A sigma interval whose lower bound lies between a step's t_cur and its churned t_hat
    guides that step (both of its evaluations), as the step starts from t_hat."""
    N, S_churn = 6, 40.0  # gamma = sqrt 2 - 1 on every step
    t = edm_sigma_steps(N, 0.002, 80.0, 7.0)
    i = 2
    t_hat = _t_hat(float(t[i]), N, S_churn, 0.0, math.inf)
    lo = 0.5 * (float(t[i]) + t_hat)  # t_cur < lo < t_hat
    hi = t_hat * 1.0000001  # only step i's t_hat inside (step i-1's is far above)
    aux_levels = []

    def aux(x, sigma):
        aux_levels.append(float(sigma))
        return 0.5 * x
    edm_sampler(lambda x, sigma: 0.8 * x, SHAPE, np.random.default_rng(1), num_steps=N, S_churn=S_churn,
                guidance=Guidance(aux, 1.5, GuidanceInterval(sigma_lo=lo, sigma_hi=hi)))
    assert aux_levels == [pytest.approx(t_hat, rel=1e-15), pytest.approx(float(t[i + 1]), rel=1e-15)]


# ---------------------------------------------------------------- the losses' values

def _stub():
    """A network stand-in: F(x, c) = 0.3 x + 0.1 c, recording nothing for backward."""
    class Stub:
        def forward(self, x, c):
            return 0.3 * x + 0.1 * c[..., None]
    return Stub()


@pytest.mark.parametrize("precond", [EDMPrecond(0.5), EDMPrecond(1.4), VPPrecond()], ids=["edm0.5", "edm1.4", "vp"])
def test_the_edm_loss_is_lambda_weighted_squared_error(precond):
    rng = np.random.default_rng(4)
    y = rng.standard_normal(SHAPE)  # R,B,D
    sigma = np.exp(rng.standard_normal(SHAPE[:2] + (1,)) * 1.2 - 1.2)  # R,B,1
    n = rng.standard_normal(SHAPE) * sigma
    loss, _ = edm_loss(_stub(), precond, y, sigma, n)
    x = y + n
    if isinstance(precond, EDMPrecond):  # EDM Table 1, written out
        sd = precond.sigma_data
        c_skip, c_out = sd ** 2 / (sigma ** 2 + sd ** 2), sigma * sd / np.sqrt(sigma ** 2 + sd ** 2)
        c_in, c_noise = 1 / np.sqrt(sigma ** 2 + sd ** 2), np.log(sigma) / 4
        lam = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
    else:
        c_skip, c_out, c_in = 1.0, -sigma, 1 / np.sqrt(sigma ** 2 + 1)
        t = (np.sqrt(0.1 ** 2 + 2 * 19.9 * np.log1p(sigma ** 2)) - 0.1) / 19.9
        c_noise, lam = 999 * t, 1 / sigma ** 2
    D = c_skip * x + c_out * (0.3 * c_in * x + 0.1 * c_noise)
    expected = (lam * (D - y) ** 2).mean(axis=(1, 2))  # R
    np.testing.assert_allclose(loss, expected, rtol=1e-12)


def test_the_ddpm_loss_is_the_squared_error_of_the_noise_prediction():
    rng = np.random.default_rng(5)
    ab = cosine_alpha_bar(40)
    y, eps = rng.standard_normal(SHAPE), rng.standard_normal(SHAPE)
    t = rng.integers(1, 40, size=SHAPE[:2])  # R,B
    loss, _ = ddpm_loss(_stub(), ab, y, t, eps)
    a = ab[t][..., None]
    x_t = np.sqrt(a) * y + np.sqrt(1 - a) * eps  # Ho et al. eq. 4
    F = 0.3 * x_t + 0.1 * t[..., None]
    np.testing.assert_allclose(loss, ((F - eps) ** 2).mean(axis=(1, 2)), rtol=1e-12)


def test_vp_preconditioning_is_edm_table_1():
    pre = VPPrecond()
    sigma = np.array([0.002, 0.1, 1.0, 7.5, 80.0])
    c_skip, c_out, c_in, c_noise = pre.coefficients(sigma)
    t = (np.sqrt(0.1 ** 2 + 2 * 19.9 * np.log1p(sigma ** 2)) - 0.1) / 19.9  # sigma^-1(sigma)
    np.testing.assert_array_equal(c_skip, np.ones_like(sigma))
    np.testing.assert_allclose(c_noise, 999 * t, rtol=1e-12)
    np.testing.assert_allclose(c_in, 1 / np.sqrt(sigma ** 2 + 1), rtol=1e-12)
    np.testing.assert_array_equal(c_out, -sigma)


# ---------------------------------------------------------------- the EMA inside train

@pytest.mark.parametrize("batch, half_life", [(25, 100.0), (50, 30.0)])
def test_the_ema_in_train_is_the_average_of_every_steps_weights(batch, half_life, monkeypatch):
    """beta = 0.5^(B / half-life in images): after k steps the shadow is
    beta^k w_0 + sum_j (1 - beta) beta^(k-j) w_j, recomputed here from the weights after each step."""
    snapshots, real_step = [], Adam.step

    def step(self, ema=None):
        real_step(self, ema)
        snapshots.append([m.params[k].copy() for _, m, k in self.model.named_parameters()])
    monkeypatch.setattr(Adam, "step", step)
    cfg = MLPConfig(hidden=16, depth=2)
    net = MLPDenoiser(cfg, np.random.default_rng(0), ensemble=2, dtype=np.float64)
    w0 = [m.params[k].copy() for _, m, k in net.named_parameters()]
    data = np.random.default_rng(1).standard_normal((2, 100, 2))
    res = train(net, DDPM(T=20), data, TrainConfig(lr=1e-2, batch_size=batch, epochs=3,
                                                   ema_half_life_images=half_life), 7)
    beta = 0.5 ** (batch / half_life)
    expected = [w.copy() for w in w0]
    for weights in snapshots:
        expected = [beta * e + (1 - beta) * w for e, w in zip(expected, weights)]
    got = [m.params[k] for _, m, k in res.ema.named_parameters()]
    assert len(snapshots) == 3 * (100 // batch) and len(got) == len(expected)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- intervals and DDPM's levels

def test_interval_bounds_are_inclusive():
    g = GuidanceInterval(first_step=2, last_step=4, sigma_lo=0.5, sigma_hi=3.0)
    assert g.contains(2, 1.0) and g.contains(4, 1.0) and not g.contains(1, 1.0) and not g.contains(5, 1.0)
    assert g.contains(3, 0.5) and g.contains(3, 3.0)
    assert not g.contains(3, np.nextafter(0.5, 0)) and not g.contains(3, np.nextafter(3.0, 4))
    assert GuidanceInterval().contains(10 ** 6, 1e9) and GuidanceInterval().contains(0, 0.0)


def test_ddpm_guides_at_sigma_t_of_each_step_counted_from_the_noisiest():
    """Step i runs at t = T-1-i with noise level sigma_t = sqrt((1 - ab_t) / ab_t): an interval
    holding exactly one step's sigma guides that step alone, with the model called at its t."""
    T = 12
    ab = cosine_alpha_bar(T)
    t_pick = 5
    sig = math.sqrt((1 - ab[t_pick]) / ab[t_pick])
    seen = []

    def aux(x, t):
        seen.append(t)
        return 0.5 * x
    ddpm_sampler(lambda x, t: 0.1 * x, SHAPE, np.random.default_rng(2), alpha_bar=ab,
                 guidance=Guidance(aux, 1.0, GuidanceInterval(sigma_lo=sig, sigma_hi=sig)))
    assert seen == [t_pick]
    ddpm_sampler(lambda x, t: 0.1 * x, SHAPE, np.random.default_rng(2), alpha_bar=ab,
                 guidance=Guidance(aux, 1.0, GuidanceInterval(first_step=3, last_step=3)))
    assert seen[1:] == [T - 1 - 3]


def test_ddpm_draws_its_noise_on_every_step_but_the_last():
    """One draw for x_{T-1}, then one per step t = T-1..2; none at t = 1 (the mean is returned)."""
    T = 9
    ab = cosine_alpha_bar(T)

    class Counting:
        def __init__(self):
            self.rng, self.draws = np.random.default_rng(0), 0

        def standard_normal(self, *a, **k):
            self.draws += 1
            return self.rng.standard_normal(*a, **k)
    rng = Counting()
    calls = []
    x = ddpm_sampler(lambda x, t: (calls.append(t), 0.1 * x)[1], SHAPE, rng, alpha_bar=ab)
    assert rng.draws == 1 + (T - 2) and calls == list(range(T - 1, 0, -1))
    # the last step (t = 1) is the posterior mean of the state before it, exactly (no noise added)
    beta = 1 - ab[1] / ab[0]
    prev = {}
    ddpm_sampler(lambda x, t: (prev.__setitem__(t, x.copy()), 0.1 * x)[1], SHAPE,
                 np.random.default_rng(0), alpha_bar=ab)
    mean = (prev[1] - beta / math.sqrt(1 - ab[1]) * 0.1 * prev[1]) / math.sqrt(1 - beta)
    np.testing.assert_allclose(x, mean, rtol=1e-13, atol=1e-15)
