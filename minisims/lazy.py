"""Public names of a package that load their module on first use (PEP 562), so that a program
needing a few of them (the 2D toy: the MLP, not the UNet) imports only those modules."""
from __future__ import annotations

import importlib
import sys


def lazy_names(package: str, where: dict):
    """``__getattr__`` and ``__dir__`` for the package ``package`` whose public name ``n`` is
    defined in its module ``where[n]``: ``__getattr__, __dir__ = lazy_names(__name__, WHERE)``."""
    def __getattr__(name):
        if name in where:
            return getattr(importlib.import_module(f".{where[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted([*vars(sys.modules[package]), *where])
    return __getattr__, __dir__
