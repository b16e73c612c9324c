"""The toy MLP on the GPU: the whole network in one CUDA C launch instead of about 22.

# R ensemble members, N points, D data dimension (2), E embedding width, P packed parameters
nn/mlp.py is the network; this file only hands its weights, packed, to the fused kernels and
falls back to the layers wherever a kernel does not apply. Both need CuPy float32 weights and a
network the kernels are compiled for (``gpu_ready``), and agree with the layers within float32
rounding (tests/test_kernels_mlp_eval.py, tests/test_kernels_mlp_train.py in the CUDA C emulator;
tests/gpu on a GPU).

:class:`FusedMLPDenoiser` is the toy's network on the GPU (minisims.sims.toy_mlp makes it there):
- sampling, its ``sampling_forward`` (kernels/mlp_eval.py): on while ``minisims.ops.FAST`` and
  ``ops.FUSE_MLP_EVAL`` are (measured on an H200: docs/performance.md);
- training, its ``forward`` and ``backward`` (kernels/mlp_train.py, one kernel each): opt-in,
  ``ops.FUSE_MLP_TRAIN = True``, for they have never run on a GPU (``bash
  benchmarks/gpu_check.sh pending`` measures them).
"""
from __future__ import annotations

import numpy as np

from .. import backend, ops
from .layers import Linear
from .mlp import MLPDenoiser


def on_gpu(a) -> bool:
    """Whether an array lives on the GPU (CuPy): only there do the fused kernels apply."""
    return backend.xp(a) is not np


def spec(net: MLPDenoiser):
    """The network's shape, as the fused kernels are compiled for it (kernels/mlp_eval.py)."""
    from ..kernels.mlp_eval import MLPSpec
    c = net.cfg
    return MLPSpec(c.dim, c.hidden, c.depth, c.activation, c.embedding, c.num_freqs)


def linears(net: MLPDenoiser) -> list:
    return [m for m in net.net.layers if isinstance(m, Linear)]


def _applies(kernel, net: MLPDenoiser) -> bool:
    W0 = linears(net)[0].params["W"]
    return kernel.is_cupy(W0) and W0.dtype == np.float32 and kernel.gpu_ready(spec(net))


def sampling_forward(net: MLPDenoiser):
    """forward(x, c) for a sampler on the GPU: kernels/mlp_eval.py for the calls a sampler makes
    (one scalar c, x (R,N,D); one model: any (...,D)), ``net.forward`` for any other call and
    wherever the kernel does not apply. The weights are packed now: a snapshot."""
    if not (ops.FAST and ops.FUSE_MLP_EVAL and on_gpu(linears(net)[0].params["W"])):
        return net.forward
    from ..kernels import mlp_eval
    if not _applies(mlp_eval, net):
        return net.forward
    layers = linears(net)
    params = mlp_eval.pack([m.params["W"] for m in layers], [m.params["b"] for m in layers])  # R,P
    s, R, freqs = spec(net), layers[0].ensemble, net.embed.freqs

    def fused(x, c):
        if not isinstance(c, (int, float, np.integer, np.floating)) or x.shape[-1] != s.dim \
                or (R is not None and (x.ndim != 3 or x.shape[0] != R)):
            return net.forward(x, c)  # not a sampler's call: forward itself
        x3 = x.astype(np.float32, copy=False).reshape((R or 1, -1, s.dim))  # R,N,D
        return mlp_eval.mlp_eval(x3, float(c), params, freqs, s).reshape(x.shape)
    return fused


class FusedMLPDenoiser(MLPDenoiser):
    """MLPDenoiser with the GPU's fused kernels: ``sampling_forward`` (above), and, with
    ``ops.FUSE_MLP_TRAIN``, forward and backward through kernels/mlp_train.py where they apply
    (CuPy float32 weights, ReLU, H 32 or 64; for an ensemble an (R,N,D+E) batch); its layers
    elsewhere. The same outputs and gradients within float32 rounding."""

    _fused = None  # what the fused backward needs, when forward took the fused path

    def sampling_forward(self):
        return sampling_forward(self)

    def forward(self, x, c):
        h = self.network_input(x, c)  # R,N,D+E
        self._fused = None
        if not self._takes_fused_path(h):
            return self.net.forward(h)  # R,N,D
        from ..kernels import mlp_train
        layers = linears(self)
        params = mlp_train.pack([m.params["W"] for m in layers],
                                [m.params["b"] for m in layers])  # R,P (one model: 1,P)
        h3 = h.reshape((layers[0].ensemble or 1, -1, h.shape[-1]))  # R,N,D+E
        y, saved = mlp_train.forward(h3, params, spec(self))  # R,N,D
        self._fused = (h3, params, saved, h.shape)
        return y.reshape(h.shape[:-1] + (self.cfg.dim,))

    def _takes_fused_path(self, h) -> bool:
        if not (ops.FAST and ops.FUSE_MLP_TRAIN):
            return False
        from ..kernels import mlp_train
        R = linears(self)[0].ensemble
        return _applies(mlp_train, self) and (R is None or (h.ndim == 3 and h.shape[0] == R))

    def backward(self, dy):
        if self._fused is None:
            return super().backward(dy)
        from ..kernels import mlp_train
        h3, params, saved, shape = self._fused
        dy3 = dy.astype(np.float32, copy=False).reshape(h3.shape[:2] + (self.cfg.dim,))  # R,N,D
        grads, dh = mlp_train.backward(dy3, h3, saved, params, spec(self))  # R,P and R,N,D+E
        one = linears(self)[0].ensemble is None
        for (dW, db), m in zip(mlp_train.unpack(grads, spec(self)), linears(self)):
            m.grads["W"] += dW[0] if one else dW  # (R,)Din,Dout, as Linear.backward adds
            m.grads["b"] += db[0, 0] if one else db[:, 0]  # (R,)Dout
        return self.input_backward(dh.reshape(shape))  # R,N,D and R,N
