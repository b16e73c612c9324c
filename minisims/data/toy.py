"""The paper's 2D Gaussian p_r = N([0,0], [[2,1],[1,2]]) (Section 4.2.1).

# R runs, n points, 2 dimensions
"""
from __future__ import annotations

import numpy as np

from .. import backend

GAUSSIAN_MEAN = np.array([0.0, 0.0])
GAUSSIAN_COV = np.array([[2.0, 1.0], [1.0, 2.0]])


def sample_gaussian(n: int, rng: np.random.Generator, runs: int = 1, mean=GAUSSIAN_MEAN,
                    cov=GAUSSIAN_COV, dtype=np.float32) -> np.ndarray:
    """n points from N(mean, cov) for each of ``runs`` independent runs. Returns (R,n,2)."""
    if n < 1 or runs < 1:
        raise ValueError(f"need n >= 1 and runs >= 1, got n={n}, runs={runs}")
    L = np.linalg.cholesky(np.asarray(cov, dtype=np.float64))  # 2,2
    z = backend.to_numpy(rng.standard_normal((runs, n, len(mean))))  # R,n,2
    return (np.asarray(mean) + z @ L.T).astype(dtype)  # R,n,2
