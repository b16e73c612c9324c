"""Dropout (Srivastava et al. 2014), inverted: kept values are scaled by 1/(1-p) in training so
evaluation is the identity.

# ... any shape
Where a layer's mask comes from, first match wins:

1. ``self.mask``: a given boolean keep-mask (True = keep), broadcastable to x, used on every
   forward until it is set back to None, and scaled by 1/(1-p) like a drawn one. A gradient
   check or a replay fixes the mask this way.
2. ``self.rng``: a generator (numpy's or CuPy's) the layer draws a fresh mask from on each
   forward, ``rng.random(x.shape) < 1 - p``, never from global state.
3. neither (or p = 0): evaluation, y = x.

The owner sets the generators: :func:`set_dropout` gives every Dropout of a model one shared
generator (masks then depend on the order in which the layers run, as they always have here), one
generator each from a list, or one generator each spawned from a seed with numpy's
``SeedSequence.spawn``: then a layer's masks depend on its own generator only, not on which other
layers ran before it (a decoder-only pass, a reordered network).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .layers import Module


class Dropout(Module):
    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = None   # a generator to draw masks from, or None
        self.mask = None  # a given boolean keep-mask, or None

    def draw_mask(self, rng, shape, dtype):
        """The boolean keep-mask one forward draws from ``rng`` for an input of ``shape``."""
        return rng.random(shape, dtype=dtype) < 1.0 - self.p  # uniform [0,1) below keep

    def forward(self, x):
        if self.mask is not None:
            if not _broadcasts_to(self.mask.shape, x.shape):
                raise ValueError(f"dropout mask of shape {self.mask.shape} does not broadcast "
                                 f"to the input's {x.shape}")
            keep_mask = self.mask
        elif self.rng is not None and self.p > 0:
            keep_mask = self.draw_mask(self.rng, x.shape, x.dtype)
        else:
            self.scaled_mask = None
            return x
        # keep the scaled mask (0 or 1/keep): backward multiplies by it
        self.scaled_mask = keep_mask.astype(x.dtype) * (1.0 / (1.0 - self.p))
        return x * self.scaled_mask

    def backward(self, dy):
        return (dy if self.scaled_mask is None else dy * self.scaled_mask,)


def _broadcasts_to(shape, target) -> bool:
    try:
        return np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:  # incompatible sizes
        return False


def dropouts(model: Module) -> list:
    """Every Dropout layer of ``model``, in the order of a depth-first walk of its children."""
    return [m for m in model.modules() if isinstance(m, Dropout)]


def spawn_rngs(seed, n: int) -> list:
    """``n`` independent generators for the current device from one seed (an int or a numpy
    SeedSequence): child i of ``SeedSequence(seed).spawn(n)`` seeds generator i with one 32-bit
    word, the rule of :mod:`minisims.streams`, so CPU and GPU follow the same recipe."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return [backend.default_rng(int(child.generate_state(1)[0])) for child in ss.spawn(n)]


def set_dropout(model: Module, rng=None, *, rngs=None, seed=None) -> list:
    """Turn dropout on or off for every Dropout of ``model``; give at most one of

    - ``rng``: one generator shared by every layer (None, the default, turns dropout off);
    - ``rngs``: one generator per layer, in the order of :func:`dropouts`;
    - ``seed``: one generator per layer from :func:`spawn_rngs` (int or SeedSequence).

    Given masks (``layer.mask``) are cleared. Returns the layers, in :func:`dropouts` order.
    """
    layers = dropouts(model)
    if sum(a is not None for a in (rng, rngs, seed)) > 1:
        raise ValueError("give at most one of rng, rngs, seed")
    if seed is not None:
        rngs = spawn_rngs(seed, len(layers))
    if rngs is None:
        rngs = [rng] * len(layers)
    if len(rngs) != len(layers):
        raise ValueError(f"{len(rngs)} generators for {len(layers)} dropout layers")
    for layer, g in zip(layers, rngs):
        layer.rng, layer.mask = g, None
    return layers
