"""Per-run streams on the GPU: the CuPy Philox kernel gives the reference's bits, and a run's
numbers are the CPU's (words and uniforms bit for bit; normals to a few ulp, as CUDA's log and
cos round differently from NumPy's)."""
import numpy as np
import pytest

from minisims.kernels.philox import run_words
from minisims import backend
from minisims.streams import RunGenerator

pytestmark = pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a GPU")


@pytest.mark.parametrize("per_run", [1, 5, 4000])
def test_cupy_words_equal_the_reference(gpu, per_run):
    runs = np.array([0, 3, 2 ** 32 - 1], np.uint64)
    ref = run_words((5, 6), runs, 11, per_run, impl="reference")
    on_gpu = run_words((5, 6), gpu.asarray(runs), 11, per_run, impl="cupy")
    assert np.array_equal(gpu.asnumpy(on_gpu), ref)
    assert np.array_equal(gpu.asnumpy(run_words((5, 6), gpu.asarray(runs), 11, per_run,
                                                impl="reference")), ref)


def test_a_runs_numbers_are_the_same_on_cpu_and_gpu(gpu):
    cpu, dev = RunGenerator((1, 2), range(4, 8), numpy=True), RunGenerator((1, 2), range(4, 8))
    assert isinstance(dev.random((4, 3)), gpu.ndarray)
    cpu.random((4, 3))
    assert np.array_equal(gpu.asnumpy(dev.integers(1, 40, size=(4, 100))), cpu.integers(1, 40, size=(4, 100)))
    assert np.array_equal(gpu.asnumpy(dev.random((4, 100))), cpu.random((4, 100)))
    np.testing.assert_allclose(gpu.asnumpy(dev.standard_normal((4, 1000))),
                               cpu.standard_normal((4, 1000)), rtol=1e-13, atol=1e-13)
