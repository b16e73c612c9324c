"""The array module of an array, for every kernel: numpy, or cupy for a CuPy array.

kernels/ imports nothing of minisims (so not minisims.backend); this is the one place its modules
ask where an array lives. CuPy is imported only when a CuPy array arrives, so CPU-only installs
never import it.
"""
from __future__ import annotations

import numpy as np


def is_cupy(a) -> bool:
    """True for a CuPy array (checked by its type's module: no import of cupy needed)."""
    return type(a).__module__.split(".")[0] == "cupy"


def array_module(a):
    """numpy, or cupy when ``a`` is a CuPy array (imported only then)."""
    if is_cupy(a):
        import cupy
        return cupy
    return np
