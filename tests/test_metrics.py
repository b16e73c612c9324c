import itertools

import numpy as np
import pytest
from scipy.linalg import sqrtm

from minisims.gradcheck import assert_close
from minisims.metrics import empirical_w2, frechet_distance, gaussian_w2, gaussian_w2_from_moments, moments


def _random_spd(rng, d):
    A = rng.standard_normal((d, d))
    return A @ A.T + 0.1 * np.eye(d)


@pytest.mark.parametrize("d", [2, 5])
def test_closed_form_matches_scipy_sqrtm(rng, d):
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    S1, S2 = _random_spd(rng, d), _random_spd(rng, d)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(S1 + S2 - 2 * sqrtm(S1 @ S2).real)
    assert_close("W2^2", gaussian_w2_from_moments(mu1, S1, mu2, S2, squared=True), ref, rtol=1e-9, atol=1e-10)
    assert_close("W2", gaussian_w2_from_moments(mu1, S1, mu2, S2), np.sqrt(ref), rtol=1e-9, atol=1e-10)


def test_commuting_covariances_closed_form():
    # diagonal covariances: W2^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    d2 = gaussian_w2_from_moments(np.array([1.0, 0]), np.diag([4.0, 1.0]), np.zeros(2), np.diag([1.0, 9.0]), squared=True)
    assert_close("W2^2", d2, 1 + (2 - 1) ** 2 + (1 - 3) ** 2, rtol=1e-12, atol=1e-12)


def test_gaussian_w2_batched_and_zero_on_own_moments(rng):
    x = rng.standard_normal((3, 500, 2))
    d = gaussian_w2(x, np.zeros(2), np.eye(2))
    assert d.shape == (3,) and np.all(d > 0)
    mu, S = moments(x)
    for r in range(3):
        assert gaussian_w2_from_moments(mu[r], S[r], mu[r], S[r]) < 1e-6
    assert_close("moments cov", S[0], np.cov(x[0].T), rtol=1e-12, atol=1e-12)


def test_frechet_distance_is_w2_squared(rng):
    a, b = rng.standard_normal((400, 3)), rng.standard_normal((300, 3)) * 2 + 1
    mu1, S1 = np.mean(a, 0), np.cov(a.T)
    mu2, S2 = np.mean(b, 0), np.cov(b.T)
    assert_close("FD", frechet_distance(a, b), gaussian_w2_from_moments(mu1, S1, mu2, S2, squared=True), rtol=1e-12, atol=0)


def test_empirical_w2_matches_brute_force(rng):
    a, b = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    best = min(np.mean(np.sum((a - b[list(p)]) ** 2, 1)) for p in itertools.permutations(range(6)))
    assert_close("OT", empirical_w2(a, b, squared=True), best, rtol=1e-12, atol=1e-12)


def test_empirical_w2_of_a_shift_is_the_shift(rng):
    a = rng.standard_normal((50, 2))
    assert_close("shift", empirical_w2(a, a + [3.0, 4.0]), 5.0, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="equal-size"):
        empirical_w2(a, a[:10])
