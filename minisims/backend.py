"""The array backend: NumPy on the CPU, CuPy on a GPU.

Every module reaches its array module through one function, :func:`xp`. With no argument it
returns the module of the current device (set by :func:`use_device`); given arrays it returns the
module those arrays live in, so code written against ``xp(x)`` runs unchanged on NumPy and CuPy
arrays. CuPy is imported lazily and only when asked for, so everything on the CPU works without it.
"""
from __future__ import annotations

import numpy as np

_DEVICE = "cpu"
_cupy = None


class BackendError(RuntimeError):
    """The requested device cannot be used (no CuPy, or no GPU)."""


def _import_cupy():
    """Import CuPy and check that a GPU answers; raise BackendError with a one-line reason."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError as e:  # CuPy comes with the gpu-cuda12 / gpu-cuda13 extras
        raise BackendError("the GPU backend needs CuPy: in the minisims checkout, "
                           "pip install -e '.[gpu-cuda13]' (or '.[gpu-cuda12]': the CUDA "
                           "version nvidia-smi prints)") from e
    try:
        cupy.cuda.runtime.getDeviceCount()
        cupy.zeros(1).sum()
    except Exception as e:  # CuPy imports without a GPU but any array op raises
        why = type(e).__name__ + (": " + str(e).strip().splitlines()[0] if str(e).strip() else "")
        raise BackendError(f"CuPy is installed but no GPU is usable ({why})") from e
    _cupy = cupy
    return cupy


def gpu_available() -> bool:
    """True when CuPy imports and a GPU runs an array op."""
    try:
        _import_cupy()
        return True
    except BackendError:
        return False


def use_device(device: str) -> None:
    """Select 'cpu' (NumPy) or 'gpu' (CuPy) for arrays created from now on."""
    global _DEVICE
    if device not in ("cpu", "gpu"):
        raise BackendError(f"unknown device {device!r}: use 'cpu' or 'gpu'")
    if device == "gpu":
        _import_cupy()
    _DEVICE = device


def current_device() -> str:
    return _DEVICE


def xp(*arrays):
    """The array module: of the given arrays if any is a CuPy array, else of the current device."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
        if not arrays and _DEVICE == "gpu":
            return _cupy
    return np


def asarray(a, dtype=None):
    """Move ``a`` to the current device (a no-op when it is already there)."""
    return xp().asarray(a, dtype=dtype)


def to_numpy(a) -> np.ndarray:
    """Bring an array back to the host as a NumPy array."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy.asnumpy(a)
    return np.asarray(a)


def default_rng(seed=None):
    """A random generator for the current device: numpy's on the CPU, CuPy's on the GPU.

    Both answer ``standard_normal(size, dtype=...)``, ``random(size)`` and ``integers``; code that
    draws noise takes the generator as a parameter and never touches global state.
    """
    if _DEVICE == "gpu":
        return _cupy.random.default_rng(seed)
    return np.random.default_rng(seed)


def blas_thread_count() -> int | None:
    """How many threads NumPy's BLAS uses now (the largest over its BLAS libraries), or None
    where threadpoolctl finds none: what a results file records as the count actually used."""
    from threadpoolctl import threadpool_info
    counts = [lib["num_threads"] for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return max(counts) if counts else None


_BLAS_CONTROLLER = (None, -1)  # blas_threads(cached=True)'s threadpoolctl controller, and how
# many modules were imported when it was made


def blas_threads(n: int | None, cached: bool = False):
    """Context manager: limit NumPy's BLAS to n threads (None: leave it alone).

    The toy models multiply small matrices (64 wide), where one BLAS thread is fastest and a
    second thread only waits; on a busy machine a spinning OpenBLAS thread made a (4,64,1000) x
    (4,1000,64) product 500x slower (0.3 s instead of 0.6 ms, measured on this project's 2-core
    machine under load). Image-size convolutions want every core and do not use this (except
    that the UNet keeps its own BLAS calls on one thread while the "direct" convolution runs its
    threads: minisims.nn.conv.network_blas_threads).

    cached=True reuses one threadpoolctl controller: about 20 us a scope instead of 1.3 ms
    (finding the libraries), for a scope opened on every network pass. It is made again whenever
    modules were imported since (a new BLAS library comes with an import: numba's first
    compilation loads SciPy's), so it limits every BLAS library loaded, as the uncached one does.
    """
    import contextlib
    import sys

    if n is None:
        return contextlib.nullcontext()
    if cached:
        global _BLAS_CONTROLLER
        controller, imported = _BLAS_CONTROLLER
        if imported != len(sys.modules):
            from threadpoolctl import ThreadpoolController
            controller = ThreadpoolController()
            _BLAS_CONTROLLER = controller, len(sys.modules)
        return controller.limit(limits=n, user_api="blas")
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=n, user_api="blas")
