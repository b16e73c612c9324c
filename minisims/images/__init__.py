"""SIMS on images (paper Section 4.1, Figure 3): presets, the pipeline of Algorithm 1's steps with
files between them, and ``python -m minisims.images``."""
from .presets import PRESETS, ImagePreset

__all__ = ["PRESETS", "ImagePreset"]
