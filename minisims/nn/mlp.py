"""The toy denoiser: an MLP on (x, embedding of the noise level).

# R ensemble members, N points, D data dimension (2), H hidden width, E embedding width
Layout of the DDPM toy the paper cites: Linear(D+E -> H), depth x [Linear(H,H), ReLU],
Linear(H -> D). It predicts whatever the formulation asks of it (epsilon for DDPM, F for EDM).

The samplers call :meth:`MLPDenoiser.sampling_forward`: ``forward`` itself on the CPU, and on a
GPU the fused evaluation of kernels/mlp_eval.py (every layer of all R members in one launch,
within float32 rounding of ``forward``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels import mlp_eval

from .. import backend
from .embedding import NoiseEmbedding
from .layers import Linear, ReLU, Sequential, SiLU
from .module import Module


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

    # Sampling on CuPy float32 weights uses the fused kernel (kernels/mlp_eval.py); False: the
    # layer-by-layer forward everywhere (toy/gpu_check.py times a generation both ways).
    fused_gpu_eval: bool = True

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

    def forward(self, x, c):
        xp = backend.xp(x)
        c = xp.broadcast_to(xp.asarray(c, dtype=self.dtype), x.shape[:-1])  # R,N
        e = self.embed.forward(c)  # R,N,E
        h = xp.concatenate([x.astype(self.dtype, copy=False), e], axis=-1)  # R,N,D+E
        return self.net.forward(h)  # R,N,D

    def spec(self) -> mlp_eval.MLPSpec:
        """The network's shape, as the fused kernel is compiled for it."""
        c = self.cfg
        return mlp_eval.MLPSpec(c.dim, c.hidden, c.depth, c.activation, c.embedding, c.num_freqs)

    def sampling_forward(self):
        """forward(x, c) for sampling: a callable that keeps nothing for backward.

        On the CPU (and wherever the kernel does not apply) it is ``forward`` itself, so samples
        are what they always were, bit for bit. With CuPy float32 weights it is the fused kernel
        (kernels/mlp_eval.py, 1 launch per evaluation instead of about 22), within float32
        rounding of ``forward``, for the calls a sampler makes: one scalar c and x (R,N,D) (one
        model: any (...,D)); other calls go to ``forward``. The weights are copied (packed) now,
        so make a new one after training further (the formulations make one per sampler call).
        """
        layers = [m for m in self.net.layers if isinstance(m, Linear)]
        W0 = layers[0].params["W"]
        if not (self.fused_gpu_eval and mlp_eval.is_cupy(W0) and W0.dtype == np.float32
                and mlp_eval.gpu_ready(self.spec())):
            return self.forward
        params = mlp_eval.pack([m.params["W"] for m in layers],
                               [m.params["b"] for m in layers])  # R,P: a snapshot
        spec, R, freqs = self.spec(), layers[0].ensemble, self.embed.freqs

        def fused(x, c):
            if not isinstance(c, (int, float, np.integer, np.floating)) or x.shape[-1] != spec.dim \
                    or (R is not None and (x.ndim != 3 or x.shape[0] != R)):
                return self.forward(x, c)  # not a sampler's call: the layer-by-layer forward
            x3 = x.astype(np.float32, copy=False).reshape((R or 1, -1, spec.dim))  # R,N,D
            return mlp_eval.mlp_eval(x3, float(c), params, freqs, spec).reshape(x.shape)
        return fused

    def backward(self, dy):
        """dy (R,N,D) -> (dx (R,N,D), dc (R,N)): one gradient per argument of forward (dc per
        point, whatever shape c had before it was broadcast)."""
        dh, = self.net.backward(dy)  # R,N,D+E
        D = self.cfg.dim
        dc, = self.embed.backward(dh[..., D:])  # R,N
        return dh[..., :D], dc  # R,N,D and R,N
