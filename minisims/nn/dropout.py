"""Dropout (Srivastava et al. 2014), inverted: kept values are scaled by 1/(1-p) in training so
evaluation is the identity.

# ... any shape
The mask is drawn from the generator in ``self.rng`` (numpy's or CuPy's), never from global
state. ``rng = None`` means evaluation: no mask, y = x. The owner of the layer sets ``rng`` (the
UNet's ``set_dropout``); a gradient check that re-seeds it before each forward sees a fixed mask.
"""
from __future__ import annotations

from .module import Module


class Dropout(Module):
    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = None
        self.mask = None

    def forward(self, x):
        if self.rng is None or self.p == 0:
            self.mask = None
            return x
        keep = 1.0 - self.p
        u = self.rng.random(x.shape, dtype=x.dtype)  # same shape as x, uniform [0,1)
        # keep the scaled mask (0 or 1/keep): backward multiplies by it
        self.mask = (u < keep).astype(x.dtype) * (1.0 / keep)
        return x * self.mask

    def backward(self, dy):
        return dy if self.mask is None else dy * self.mask
