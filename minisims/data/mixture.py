"""A two-group 2D Gaussian mixture: the toy stand-in for the paper's two perceived genders (Sec. 4.3).

# R runs, n points, 2 dimensions, K = 2 groups

Group k is N(means[k], cov); a mix is the fraction of group 0. The 'classifier' that labels
synthetic points (the paper uses a pretrained gender classifier) is the Bayes rule between the two
equal-covariance components; the default groups are 8 standard deviations apart, so it errs
on about 3 points in 100,000 (Phi(-4)).
"""
from __future__ import annotations

import numpy as np

from .. import backend

MIX_MEANS = np.array([[-2.0, 0.0], [2.0, 0.0]])  # K,2: group 0, group 1
MIX_COV = np.array([[0.25, 0.0], [0.0, 0.25]])    # 2,2: shared by both groups (std 0.5)


def sample_mixture(n: int, rng: np.random.Generator, runs: int = 1, frac0: float = 0.5,
                   means=MIX_MEANS, cov=MIX_COV, dtype=np.float32):
    """n points per run, exactly round(frac0 n) of group 0, in random order.

    Returns (x (R,n,2), labels (R,n) int 0/1), NumPy arrays."""
    if not 0 <= frac0 <= 1 or n < 1 or runs < 1:
        raise ValueError(f"need 0 <= frac0 <= 1, n >= 1, runs >= 1; got {frac0}, {n}, {runs}")
    means = np.asarray(means, np.float64)
    n0 = int(round(frac0 * n))
    labels = np.zeros((runs, n), dtype=np.int64)
    labels[:, n0:] = 1
    order = np.argsort(backend.to_numpy(rng.random((runs, n))), axis=1)  # R,n: a random order per run
    labels = np.take_along_axis(labels, order, axis=1)  # R,n
    L = np.linalg.cholesky(np.asarray(cov, np.float64))  # 2,2
    z = rng.standard_normal((runs, n, means.shape[1]))  # R,n,2
    return (means[labels] + z @ L.T).astype(dtype), labels


def classify(x, means=MIX_MEANS, cov=MIX_COV):
    """The Bayes label of each point (equal priors, shared covariance): (R,n,2) -> (R,n) int."""
    xp = backend.xp(x)
    means = xp.asarray(np.asarray(means, np.float64))  # K,2
    P = xp.asarray(np.linalg.inv(np.asarray(cov, np.float64)))  # 2,2
    diff = xp.asarray(x, dtype=xp.float64)[..., None, :] - means  # R,n,K,2
    maha = ((diff @ P) * diff).sum(axis=-1)  # R,n,K: squared Mahalanobis distances
    return xp.argmin(maha, axis=-1)  # R,n


def select_mix(x, labels, n: int, frac0: float, rng):
    """Per run, n of the labelled points with exactly round(frac0 n) of group 0, drawn without
    replacement in random order. Raises if a run holds too few points of a group. (R,n,2)"""
    xp = backend.xp(x)
    n0 = int(round(frac0 * n))
    have0 = (labels == 0).sum(axis=1)  # R
    have1 = labels.shape[1] - have0
    if int(have0.min()) < n0 or int(have1.min()) < n - n0:
        raise ValueError(f"a run has only {int(have0.min())} group-0 / {int(have1.min())} group-1 "
                         f"points; {n0} / {n - n0} needed: draw a larger pool")
    u = rng.random(labels.shape)  # R,m: a random order within each group
    first0 = xp.argsort(labels + u, axis=1)[:, :n0]         # R,n0: group 0 sorts first
    first1 = xp.argsort((1 - labels) + u, axis=1)[:, :n - n0]  # R,n-n0: group 1 sorts first
    idx = xp.concatenate([first0, first1], axis=1)  # R,n
    idx = xp.take_along_axis(idx, xp.argsort(rng.random(idx.shape), axis=1), axis=1)  # shuffle
    return xp.take_along_axis(x, idx[..., None], axis=1)  # R,n,2
