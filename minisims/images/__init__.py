"""SIMS on images (paper Section 4.1, Figure 3): presets, the pipeline of Algorithm 1's steps with
files between them, and ``python -m minisims.images``.

The names are imported on first use, so that ``python -m minisims.images`` reaches its Ctrl-C
handler (images/__main__.py) before any import that takes time.
"""
from ..lazy import lazy_names

_WHERE = {"PRESETS": "presets", "ImagePreset": "presets"}
__all__ = list(_WHERE)
__getattr__, __dir__ = lazy_names(__name__, _WHERE)
