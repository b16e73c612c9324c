"""The toy denoiser: an MLP on (x, embedding of the noise level).

# R ensemble members, N points, D data dimension (2), H hidden width, E embedding width
Layout of the DDPM toy the paper cites: Linear(D+E -> H), depth x [Linear(H,H), ReLU],
Linear(H -> D). It predicts whatever the formulation asks of it (epsilon for DDPM, F for EDM).

The samplers call :meth:`MLPDenoiser.sampling_forward`: ``forward`` itself on the CPU, and on a
GPU the fused evaluation of kernels/mlp_eval.py (every layer of all R members in one launch,
within float32 rounding of ``forward``). With ``fused_gpu_train`` set (opt-in: never run on a
GPU yet), training on a GPU (CuPy float32 weights, ReLU, H 32 or 64) runs ``forward`` and
``backward`` as the two fused kernels of kernels/mlp_train.py instead of layer by layer: the same
gradients within float32 rounding. Elsewhere the layers run as written below, unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import backend
from .embedding import NoiseEmbedding
from .layers import Linear, ReLU, Sequential, SiLU
from .module import Module


def on_gpu(a) -> bool:
    """Whether an array lives on the GPU (CuPy): only there do the fused kernels apply."""
    return backend.xp(a) is not np


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
    # forward/backward on CuPy float32 weights through the fused training kernels
    # (kernels/mlp_train.py). Opt-in: they have never run on a GPU (tested in the CUDA C emulator
    # only); `bash benchmarks/gpu_check.sh pending` measures them, then they may become the default.
    fused_gpu_train: bool = False

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
        self._fused = None  # what the fused backward needs, when forward took the fused path

    def sample_shape(self, n: int) -> tuple:
        """The shape of n samples per member: (R,n,D) for an ensemble, (n,D) for one model."""
        R = self.net.layers[0].ensemble
        return (n, self.cfg.dim) if R is None else (R, n, self.cfg.dim)

    def forward(self, x, c):
        xp = backend.xp(x)
        c = xp.broadcast_to(xp.asarray(c, dtype=self.dtype), x.shape[:-1])  # R,N
        e = self.embed.forward(c)  # R,N,E
        h = xp.concatenate([x.astype(self.dtype, copy=False), e], axis=-1)  # R,N,D+E
        self._fused = None
        if not self._takes_fused_path(h):
            return self.net.forward(h)  # R,N,D
        from minisims.kernels import mlp_train  # the GPU's fused path (opt-in)
        layers = self._linears()
        params = mlp_train.pack([m.params["W"] for m in layers],
                                [m.params["b"] for m in layers])  # R,P (one model: 1,P)
        h3 = h.reshape((layers[0].ensemble or 1, -1, h.shape[-1]))  # R,N,D+E
        y, saved = mlp_train.forward(h3, params, self.spec())  # R,N,D
        self._fused = (h3, params, saved, h.shape)  # what _fused_backward needs
        return y.reshape(h.shape[:-1] + (self.cfg.dim,))

    def _linears(self) -> list:
        return [m for m in self.net.layers if isinstance(m, Linear)]

    def _takes_fused_path(self, h) -> bool:
        """True when forward and backward run kernels/mlp_train.py's fused kernels: CuPy float32
        weights, a network they support, and for an ensemble an (R,N,D+E) batch."""
        if not self.fused_gpu_train:
            return False
        from minisims.kernels import mlp_train
        first = self._linears()[0]
        W0, R = first.params["W"], first.ensemble
        return (mlp_train.is_cupy(W0) and W0.dtype == np.float32
                and (R is None or (h.ndim == 3 and h.shape[0] == R))
                and mlp_train.gpu_ready(self.spec()))

    def spec(self):
        """The network's shape, as the fused kernels are compiled for it (kernels.mlp_eval.MLPSpec)."""
        from minisims.kernels.mlp_eval import MLPSpec
        c = self.cfg
        return MLPSpec(c.dim, c.hidden, c.depth, c.activation, c.embedding, c.num_freqs)

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
        if not (self.fused_gpu_eval and on_gpu(W0)):
            return self.forward  # NumPy weights: the layers, as written
        from minisims.kernels import mlp_eval  # the GPU's fused evaluation
        if not (mlp_eval.is_cupy(W0) and W0.dtype == np.float32
                and mlp_eval.gpu_ready(self.spec())):
            return self.forward
        params = mlp_eval.pack([m.params["W"] for m in layers],
                               [m.params["b"] for m in layers])  # R,P: a snapshot
        spec, R, freqs = self.spec(), layers[0].ensemble, self.embed.freqs

        def fused(x, c):
            if not isinstance(c, (int, float, np.integer, np.floating)) or x.shape[-1] != spec.dim \
                    or (R is not None and (x.ndim != 3 or x.shape[0] != R)):
                return self.forward(x, c)  # not a sampler's call: forward itself
            x3 = x.astype(np.float32, copy=False).reshape((R or 1, -1, spec.dim))  # R,N,D
            return mlp_eval.mlp_eval(x3, float(c), params, freqs, spec).reshape(x.shape)
        return fused

    def backward(self, dy):
        """dy (R,N,D) -> (dx (R,N,D), dc (R,N)): one gradient per argument of forward (dc per
        point, whatever shape c had before it was broadcast)."""
        if self._fused is None:
            dh, = self.net.backward(dy)  # R,N,D+E
        else:
            dh = self._fused_backward(dy)  # R,N,D+E
        D = self.cfg.dim
        dc, = self.embed.backward(dh[..., D:])  # R,N
        return dh[..., :D], dc  # R,N,D and R,N

    def _fused_backward(self, dy):
        """backward through every Linear with kernels/mlp_train.py: each layer's dW and db added
        into its grads, as Linear.backward adds them; returns dh (R,N,D+E) for the embedding."""
        from minisims.kernels import mlp_train
        h3, params, saved, shape = self._fused
        dy3 = dy.astype(np.float32, copy=False).reshape(h3.shape[:2] + (self.cfg.dim,))  # R,N,D
        grads, dh = mlp_train.backward(dy3, h3, saved, params, self.spec())  # R,P and R,N,D+E
        one = self._linears()[0].ensemble is None
        for (dW, db), m in zip(mlp_train.unpack(grads, self.spec()), self._linears()):
            m.grads["W"] += dW[0] if one else dW  # (R,)Din,Dout
            m.grads["b"] += db[0, 0] if one else db[:, 0]  # (R,)Dout
        return dh.reshape(shape)
