"""Elementary layers with hand-written backward passes: Linear, ReLU, SiLU, Sequential.

Each takes one input, so each backward returns a 1-tuple ``(dx,)`` (the rule in
:mod:`minisims.nn.module`).

# R ensemble members (optional leading axis), N batch, Din Dout features
Linear with ``ensemble=R`` holds W (R,Din,Dout) and b (R,Dout) and maps x (R,N,Din) -> (R,N,Dout):
R independent models in one batched matmul. Without it, W (Din,Dout), b (Dout,), x (...,N,Din).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .module import Module


class Linear(Module):
    """y = x @ W + b, PyTorch's default init U(-1/sqrt(Din), 1/sqrt(Din)) for W and b."""

    def __init__(self, din: int, dout: int, rng: np.random.Generator, ensemble: int | None = None,
                 dtype=np.float32):
        super().__init__()
        lead = () if ensemble is None else (ensemble,)
        k = 1.0 / np.sqrt(din)
        # rng.random works for numpy's and CuPy's generators alike
        W = (2 * backend.to_numpy(rng.random(lead + (din, dout))) - 1) * k  # (R,)Din,Dout
        b = (2 * backend.to_numpy(rng.random(lead + (dout,))) - 1) * k      # (R,)Dout
        self.params = {"W": backend.asarray(W, dtype), "b": backend.asarray(b, dtype)}
        self._init_grads()
        self.ensemble = ensemble

    def _bias(self):
        b = self.params["b"]
        return b if b.ndim == 1 else b[:, None, :]  # R,1,Dout broadcasts over N

    def forward(self, x):
        self.x = x  # keep x (R,N,Din): dW needs it
        return x @ self.params["W"] + self._bias()  # R,N,Dout

    def backward(self, dy):
        x, W = self.x, self.params["W"]
        if W.ndim == 2:  # one model: fold every leading axis of x into the batch
            x2, dy2 = x.reshape(-1, W.shape[0]), dy.reshape(-1, W.shape[1])  # M,Din  M,Dout
            self.grads["W"] += x2.T @ dy2  # Din,Dout
            self.grads["b"] += dy2.sum(axis=0)  # Dout
        else:
            self.grads["W"] += x.swapaxes(-1, -2) @ dy  # R,Din,Dout
            self.grads["b"] += dy.sum(axis=-2)  # R,Dout
        return (dy @ W.swapaxes(-1, -2),)  # R,N,Din


class ReLU(Module):
    def forward(self, x):
        self.mask = x > 0  # keep the sign pattern: backward only needs where x was positive
        return x * self.mask

    def backward(self, dy):
        return (dy * self.mask,)


class SiLU(Module):
    """y = x * sigmoid(x); dy/dx = s + x s (1 - s) with s = sigmoid(x)."""

    def forward(self, x):
        xp = backend.xp(x)
        self.x = x
        self.s = 1.0 / (1.0 + xp.exp(-x))  # keep sigmoid(x): backward reuses it
        return x * self.s

    def backward(self, dy):
        s = self.s
        return (dy * (s + self.x * s * (1.0 - s)),)


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse."""

    def __init__(self, *layers: Module):
        super().__init__()
        self.layers = list(layers)
        self.children = {str(i): layer for i, layer in enumerate(self.layers)}

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy, = layer.backward(dy)
        return (dy,)
