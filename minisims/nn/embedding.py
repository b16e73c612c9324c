"""Noise-level (time) embeddings: how the network is told how noisy its input is.

# ... any leading shape (R,N), E embedding width
- ``raw``: the conditioning scalar itself as one feature, (...) -> (...,1). The DDPM toy the paper
  cites feeds the raw step index this way.
- ``fourier``: fixed sinusoidal features [cos(c f_k), sin(c f_k)] with geometric frequencies
  f_k, (...) -> (...,2K), as in the positional embeddings of DDPM/EDM networks.
Neither has parameters; backward returns ``(dc,)``, the gradient with respect to the scalar (the
gradient check uses it, training does not).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .module import Module


class NoiseEmbedding(Module):
    def __init__(self, kind: str = "raw", num_freqs: int = 8, max_freq: float = 16.0,
                 dtype=np.float32):
        super().__init__()
        if kind not in ("raw", "fourier"):
            raise ValueError(f"unknown embedding {kind!r}: use 'raw' or 'fourier'")
        self.kind = kind
        self.freqs = backend.asarray(np.geomspace(1.0, max_freq, num_freqs), dtype)  # K
        self.dim = 1 if kind == "raw" else 2 * num_freqs

    def forward(self, c):
        if self.kind == "raw":
            return c[..., None]  # ...,1
        xp = backend.xp(c)
        self.arg = c[..., None] * self.freqs  # ...,K ; keep the phases for backward
        return xp.concatenate([xp.cos(self.arg), xp.sin(self.arg)], axis=-1)  # ...,2K

    def backward(self, de):
        if self.kind == "raw":
            return (de[..., 0],)  # ...
        xp = backend.xp(de)
        K = self.freqs.shape[0]
        dcos, dsin = de[..., :K], de[..., K:]  # ...,K each
        dc = ((-dcos * xp.sin(self.arg) + dsin * xp.cos(self.arg)) * self.freqs).sum(-1)  # ...
        return (dc,)
