"""BLAS's thread count for a scope, through threadpoolctl with one cached controller.

    limit(n)    context manager: NumPy's BLAS libraries on n threads inside, as before after

threadpoolctl finds the loaded BLAS libraries when a controller is made, which takes about
1.3 ms; limiting through a kept controller takes about 20 us. The controller is made again
whenever modules were imported since it was made (a new BLAS library comes with an import:
numba's first compilation loads SciPy's), so every loaded library is limited. Used by
kernels/_conv2d_pointwise.py (its products run on the kernel threads, so BLAS must stay on one)
and by minisims.backend.blas_threads(cached=True).
"""
from __future__ import annotations

import sys

_CONTROLLER = (None, -1)  # the threadpoolctl controller, and how many modules were imported then


def limit(n: int):
    """Context manager: every loaded BLAS library on n threads inside the scope."""
    global _CONTROLLER
    controller, imported = _CONTROLLER
    if imported != len(sys.modules):
        from threadpoolctl import ThreadpoolController
        controller = ThreadpoolController()
        _CONTROLLER = controller, len(sys.modules)
    return controller.limit(limits=n, user_api="blas")
