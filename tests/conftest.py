import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    """Tests multiply small matrices: one BLAS thread is fastest and immune to a busy machine."""
    from minisims.backend import blas_threads
    with blas_threads(1):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
