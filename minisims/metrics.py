"""Distances between a model's samples and the target distribution.

# R runs, n points, d dimensions
- :func:`gaussian_w2`: the Wasserstein-2 distance between the Gaussian fitted to the samples and a
  Gaussian target, in closed form: W2^2 = ||mu - mu_r||^2 + Tr(S + S_r - 2 (S S_r)^(1/2)).
  The paper does not say which form it reports; the same group's code uses W2^2 (squared=True).
- :func:`empirical_w2`: the exact optimal-transport W2 between two equal-size point sets (an
  assignment problem, scipy.optimize.linear_sum_assignment), O(n^3): for small sets.
- :func:`frechet_distance`: the same closed form between two sets of features (FD/FID);
  :func:`feature_stats`, :func:`fd_from_stats`, :func:`save_stats`, :func:`load_stats` do it in
  two steps through saved mu, sigma (npz keys mu and sigma, as EDM and pytorch-fid store them).
- :func:`fd_bootstrap`: the FD of sample sets resampled with replacement, for its standard error
  (paired: the same resampled seeds in every set, so a difference of FDs has its own error).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist


def _trace_sqrt_product(S1, S2):
    """Tr((S1 S2)^(1/2)) from the eigenvalues of S1 S2 (real and >= 0 for SPD S1, S2). (...,)"""
    ev = np.linalg.eigvals(S1 @ S2)  # ...,d
    return np.sqrt(np.clip(ev.real, 0, None)).sum(-1)


def gaussian_w2_from_moments(mu, S, mu_r, S_r, squared: bool = False):
    """Closed-form W2 (or W2^2) between N(mu, S) and N(mu_r, S_r); broadcasts over leading axes."""
    d2 = ((mu - mu_r) ** 2).sum(-1) + np.trace(S, axis1=-2, axis2=-1) + np.trace(S_r) \
        - 2 * _trace_sqrt_product(S, S_r)
    d2 = np.clip(d2, 0, None)
    return d2 if squared else np.sqrt(d2)


def moments(x):
    """Mean and covariance (n-1) of each run's points, in float64. (R,n,d) -> (R,d), (R,d,d)."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=-2)  # R,d
    xc = x - mu[..., None, :]  # R,n,d
    S = xc.swapaxes(-1, -2) @ xc / (x.shape[-2] - 1)  # R,d,d
    return mu, S


def gaussian_w2(samples, mean, cov, squared: bool = False):
    """W2 between the Gaussian fit of each run's samples (R,n,d) and N(mean, cov). Returns (R,)."""
    mu, S = moments(samples)
    return gaussian_w2_from_moments(mu, S, np.asarray(mean, float), np.asarray(cov, float), squared)


def frechet_distance(feats1, feats2):
    """Frechet distance between two feature sets (n1,d) and (n2,d): W2^2 of their Gaussian fits."""
    mu1, S1 = moments(feats1)
    mu2, S2 = moments(feats2)
    return float(gaussian_w2_from_moments(mu1, S1, mu2, S2, squared=True))


def empirical_w2(a, b, squared: bool = False):
    """Exact OT W2 between point sets a (n,d) and b (n,d) of equal size, uniform weights."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"empirical_w2 needs equal-size sets, got {a.shape} and {b.shape}")
    C = cdist(a, b, "sqeuclidean")  # n,n
    rows, cols = linear_sum_assignment(C)
    d2 = C[rows, cols].mean()
    return d2 if squared else np.sqrt(d2)


# ------------------------------------------------------------------------------------------------
# Frechet distance from saved statistics (FID-style: mu and sigma of features).
# D features
# ------------------------------------------------------------------------------------------------

def feature_stats(feats):
    """Mean (D,) and covariance (D,D) with n-1, float64, of features (n,D)."""
    feats = np.asarray(feats)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"feature_stats needs features (n,D) with n >= 2, got {feats.shape}")
    return moments(feats)


def fd_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape \
            or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"statistics do not match: mu {mu1.shape} {mu2.shape}, "
                         f"sigma {sigma1.shape} {sigma2.shape}")
    return float(gaussian_w2_from_moments(mu1, sigma1, mu2, sigma2, squared=True))


def fd_bootstrap(feature_sets, mu_ref, sigma_ref, rng, reps: int = 100):
    """FD against N(mu_ref, sigma_ref) of ``reps`` bootstrap resamples of each feature set.

    ``feature_sets`` is a list of K arrays (n,D) whose row i comes from the same sampling seed
    (the same starting noise), so each resample draws one set of n row indices with replacement
    and applies it to every set: column k's spread is set k's standard error, and the spread of
    column k minus column 0 the paired standard error of their difference. Returns (reps, K).
    The reference is held fixed: it is the training set's statistics, not a sample of the model.
    """
    sets = [np.asarray(f, np.float64) for f in feature_sets]  # K of n,D
    n = sets[0].shape[0]
    if any(f.shape != sets[0].shape for f in sets) or n < 2:
        raise ValueError(f"fd_bootstrap needs K sets of equal shape (n,D), n >= 2, got "
                         f"{[f.shape for f in sets]}")
    mu_ref, sigma_ref = np.asarray(mu_ref, np.float64), np.asarray(sigma_ref, np.float64)
    ev, V = np.linalg.eigh(sigma_ref)
    root = (V * np.sqrt(np.clip(ev, 0, None))) @ V.T  # D,D: sigma_ref^(1/2), symmetric
    rooted = [f @ root for f in sets]  # K of n,D: each row times sigma_ref^(1/2), once
    out = np.empty((reps, len(sets)))  # reps,K
    for r in range(reps):
        idx = rng.integers(0, n, size=n)  # n: the resampled seeds, shared by every set
        for k, (f, y) in enumerate(zip(sets, rooted)):
            x, yi = f[idx], y[idx]  # n,D each
            mu = x.mean(axis=0)  # D
            yc = yi - yi.mean(axis=0)  # n,D: (x - mu) sigma_ref^(1/2)
            # Tr((S sigma_ref)^(1/2)) = sum of sqrt(eig(yc^T yc / (n-1))), whose nonzero
            # eigenvalues are those of the smaller Gram matrix yc yc^T / (n-1) when n < D
            gram = yc @ yc.T if n < yc.shape[1] else yc.T @ yc  # min(n,D) square
            lam = np.linalg.eigvalsh(gram / (n - 1))
            trace_S = ((x - mu) ** 2).sum() / (n - 1)
            out[r, k] = max(0.0, ((mu - mu_ref) ** 2).sum() + trace_S + np.trace(sigma_ref)
                            - 2 * np.sqrt(np.clip(lam, 0, None)).sum())
    return out


def save_stats(path: str, mu, sigma, provenance: dict | None = None) -> None:
    """mu (D,) and sigma (D,D) as an npz with keys mu and sigma (EDM, pytorch-fid, clean-fid read
    it), written atomically; with ``provenance`` (what made them) its JSON under ``provenance``."""
    import json
    from .atomic import atomic_write
    extra = {} if provenance is None else {"provenance": np.array(json.dumps(provenance))}
    with atomic_write(path, "wb") as f:
        np.savez(f, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64), **extra)


def load_stats(path: str):
    """(mu (D,), sigma (D,D)) in float64 from an npz with keys mu and sigma (no pickles). A file
    that cannot be read (empty, truncated, not an .npz) is a one-line ValueError naming it."""
    import zipfile
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("mu", "sigma") if k not in getattr(data, "files", ())]
            if missing:
                raise ValueError(f"{path} is not a statistics file: it lacks {', '.join(missing)}")
            mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    except (EOFError, zipfile.BadZipFile, AttributeError, TypeError) as e:  # empty, truncated, .npy
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: the file is empty, truncated "
                         "or not an .npz): remove it and run again to compute it anew") from None
    except ValueError as e:
        if "pickle" in str(e):  # neither npy nor zip: np.load's last guess
            raise ValueError(f"{path} is not an .npz file: remove it and run again to compute it "
                             "anew") from None
        raise
    if mu.ndim != 1 or sigma.shape != mu.shape * 2:
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit (D,), (D,D)")
    return mu, sigma
