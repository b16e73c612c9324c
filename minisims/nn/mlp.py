"""The toy denoiser: an MLP on (x, embedding of the noise level).

# R ensemble members, N points, D data dimension (2), H hidden width, E embedding width
Layout of the DDPM toy the paper cites: Linear(D+E -> H), depth x [Linear(H,H), ReLU],
Linear(H -> D). It predicts whatever the formulation asks of it (epsilon for DDPM, F for EDM).

On the GPU the toy runs its twin, nn/mlp_fused.py's FusedMLPDenoiser: the whole network in one
fused kernel launch (sampling by default, training opt-in); the layers below are what it computes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import backend
from .layers import Linear, Module, NoiseEmbedding, ReLU, Sequential, SiLU


@dataclass
class MLPConfig:
    dim: int = 2             # D, data dimension
    hidden: int = 64         # H
    depth: int = 4           # number of [Linear(H,H), act] blocks
    activation: str = "relu"  # relu | silu
    embedding: str = "raw"   # raw | fourier
    num_freqs: int = 8       # fourier only


class MLPDenoiser(Module):
    """F(x, c) for x (R,N,D) and c (R,N) or anything broadcastable to it -> (R,N,D)."""

    def __init__(self, cfg: MLPConfig, rng: np.random.Generator, ensemble: int | None = None,
                 dtype=np.float32):
        super().__init__()
        self.cfg, self.dtype = cfg, dtype
        act = {"relu": ReLU, "silu": SiLU}[cfg.activation]
        self.embed = NoiseEmbedding(cfg.embedding, cfg.num_freqs, dtype=dtype)
        H = cfg.hidden
        layers = [Linear(cfg.dim + self.embed.dim, H, rng, ensemble, dtype)]
        for _ in range(cfg.depth):
            layers += [Linear(H, H, rng, ensemble, dtype), act()]
        layers.append(Linear(H, cfg.dim, rng, ensemble, dtype))
        self.net = Sequential(*layers)
        self.children = {"embed": self.embed, "net": self.net}

    def sample_shape(self, n: int) -> tuple:
        """The shape of n samples per member: (R,n,D) for an ensemble, (n,D) for one model."""
        R = self.net.layers[0].ensemble
        return (n, self.cfg.dim) if R is None else (R, n, self.cfg.dim)

    def network_input(self, x, c):
        """h (R,N,D+E): x beside the embedding of its noise level c (R,N or broadcastable)."""
        xp = backend.xp(x)
        c = xp.broadcast_to(xp.asarray(c, dtype=self.dtype), x.shape[:-1])  # R,N
        e = self.embed.forward(c)  # R,N,E
        return xp.concatenate([x.astype(self.dtype, copy=False), e], axis=-1)  # R,N,D+E

    def forward(self, x, c):
        return self.net.forward(self.network_input(x, c))  # R,N,D

    def backward(self, dy):
        """dy (R,N,D) -> (dx (R,N,D), dc (R,N)): one gradient per argument of forward (dc per
        point, whatever shape c had before it was broadcast)."""
        dh, = self.net.backward(dy)  # R,N,D+E
        return self.input_backward(dh)

    def input_backward(self, dh):
        """dh (R,N,D+E) -> (dx (R,N,D), dc (R,N)): through the concatenation and the embedding."""
        D = self.cfg.dim
        dc, = self.embed.backward(dh[..., D:])  # R,N
        return dh[..., :D], dc  # R,N,D and R,N
