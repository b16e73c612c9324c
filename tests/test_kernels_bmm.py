"""kernels/bmm.py: the batched products on the kernel threads against NumPy's matmul.

With BLAS on one thread each image's product is the same BLAS call either way, so the two agree
bit for bit, on any number of kernel threads, transposed (non-contiguous) operands included."""
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from minisims.kernels import _threads
from minisims.kernels.bmm import bmm


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_are_the_reference_bit_for_bit(rng, monkeypatch, threads, dtype):
    monkeypatch.setattr(_threads, "THREADS", threads)
    a = rng.standard_normal((5, 7, 9)).astype(dtype)  # N,I,K
    b = rng.standard_normal((5, 11, 9)).astype(dtype).transpose(0, 2, 1)  # N,K,J, a view
    with threadpool_limits(1, user_api="blas"), _threads.blas_on_one_thread():
        ref = bmm(a, b, impl="reference")
        got = bmm(a, b, impl="threads")
        auto = bmm(a, b)
    assert got.dtype == dtype and got.shape == (5, 7, 11)
    assert np.array_equal(got, ref) and np.array_equal(auto, ref)
    assert np.allclose(ref, np.einsum("nik,nkj->nij", a.astype(np.float64), b), rtol=1e-5, atol=1e-5)


def test_bad_shapes_and_versions_are_refused(rng):
    a = rng.standard_normal((2, 3, 4))
    with pytest.raises(ValueError, match=r"\(N,I,K\) and \(N,K,J\)"):
        bmm(a, rng.standard_normal((2, 3, 4)))
    with pytest.raises(ValueError, match="unknown impl"):
        bmm(a, rng.standard_normal((2, 4, 5)), impl="cuda")
