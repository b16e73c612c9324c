"""Fixtures of the GPU tests: the CuPy device for one test, and a guard against host round trips."""
import contextlib

import pytest

from minisims import backend


@pytest.fixture
def gpu():
    """The GPU as the current device for one test (CuPy, returned), the CPU again afterwards."""
    backend.use_device("gpu")
    import cupy
    try:
        yield cupy
    finally:
        backend.use_device("cpu")


@pytest.fixture
def no_sync():
    """``with no_sync(): ...`` raises if CuPy synchronises with the host inside the block (a
    device -> host round trip)."""
    def guard():
        import cupyx
        return cupyx.allow_synchronize(False) if hasattr(cupyx, "allow_synchronize") else contextlib.nullcontext()
    return guard
