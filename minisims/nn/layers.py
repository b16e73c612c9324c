"""The Module base class and the elementary layers: Linear, ReLU, SiLU, Sequential, NoiseEmbedding.

# R ensemble members (optional leading axis), N batch, Din Dout features, E embedding width
A layer declares every parameter in ``__init__`` (no lazy init), keeps in ``forward`` only what
``backward`` needs, and ``backward`` *adds* into ``self.grads[name]`` (same keys as
``self.params``). Parameters may carry a leading ensemble axis R: R independent models that train
in one batched step (the toy experiments run hundreds of runs at once this way).

The backward rule, the same for every module from a SiLU to the UNet:

    forward(a_0, ..., a_{k-1}) -> y
    backward(dy) -> (da_0, ..., da_{k-1})     always a tuple, one entry per argument of forward

- ``dy`` has the structure of ``y`` (an array, or for the UNet's encoder an ``EncoderOutput``
  of gradients); each ``da_i`` has the structure of ``a_i`` as the module used it (a noise level
  broadcast to the batch gets one gradient per sample).
- ``da_i`` is None where no gradient is computed: the argument is not differentiable (an integer
  index) or backward stops before reaching it (the UNet with a frozen encoder returns
  (None, None)).
- A single-input layer therefore returns a 1-tuple: ``dx, = layer.backward(dy)``.

So a caller never asks which class it holds, and :func:`minisims.gradcheck.gradients` checks every
module the same way. ``self.children`` maps a name to *every* sub-module, parameter-free ones
included; parameter names (``state_dict``, checkpoints) are the child names joined by dots.
"""
from __future__ import annotations

import copy

import numpy as np

from .. import backend


class Module:
    """Base class. Subclasses fill ``self.params`` and list every sub-module in ``self.children``.

    ``backward(dy)`` returns a tuple with one gradient (or None) per argument of ``forward``, in
    order (the module docstring has the rule).
    """

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}
        self.children: dict[str, Module] = {}

    def _init_grads(self):
        """Allocate a zero gradient buffer beside each parameter."""
        self.grads = {k: backend.xp(p).zeros_like(p) for k, p in self.params.items()}

    def named_modules(self, prefix: str = ""):
        """Yield (full name, module) for this module and every sub-module, depth first; the
        module itself is named ``prefix`` without its trailing dot ('' at the top)."""
        yield prefix.rstrip("."), self
        for name, child in self.children.items():
            yield from child.named_modules(prefix + name + ".")

    def modules(self):
        """This module and every sub-module, depth first (e.g. to find every Dropout)."""
        return [m for _, m in self.named_modules()]

    def named_parameters(self, prefix: str = ""):
        """Yield (full name, owning module, key) for every parameter, depth first."""
        for k in self.params:
            yield prefix + k, self, k
        for name, child in self.children.items():
            yield from child.named_parameters(prefix + name + ".")

    def zero_grad(self):
        for _, mod, k in self.named_parameters():
            mod.grads[k][...] = 0

    def state_dict(self) -> dict:
        """{full name: parameter array} (the arrays themselves, not copies)."""
        return {name: mod.params[k] for name, mod, k in self.named_parameters()}

    def load_state_dict(self, state: dict):
        """Copy arrays into the parameters in place: all of them, or, on any mismatch, none.

        Every array is checked (names match exactly, shapes equal, dtype castable to the
        parameter's within its kind, e.g. float64 -> float32 but not complex -> float) and
        converted onto the parameter's device before the first parameter changes, so a failed load
        (a ValueError naming every problem) leaves the model exactly as it was.
        """
        own = {name: (mod, k) for name, mod, k in self.named_parameters()}
        missing, extra = own.keys() - state.keys(), state.keys() - own.keys()
        if missing or extra:
            raise ValueError(f"state dict mismatch: missing [{_first(sorted(missing))}], "
                             f"unexpected [{_first(sorted(extra))}]")
        problems = []
        for name, (mod, k) in own.items():
            p, a = mod.params[k], state[name]
            if not hasattr(a, "dtype"):  # a list or scalar (a NumPy or CuPy array stays put)
                a = np.asarray(a)
            if tuple(a.shape) != tuple(p.shape):
                problems.append(f"{name}: shape {tuple(a.shape)} != {tuple(p.shape)}")
            elif not np.can_cast(a.dtype, p.dtype, casting="same_kind"):
                problems.append(f"{name}: dtype {a.dtype} cannot become {p.dtype}")
        if problems:
            raise ValueError(f"state dict does not fit: {_first(problems, '; ')}")
        # stage every converted array first: a failed transfer (out of GPU memory) changes nothing
        staged = [(mod.params[k], backend.xp(mod.params[k]).asarray(state[name], dtype=mod.params[k].dtype))
                  for name, (mod, k) in own.items()]
        for p, a in staged:
            p[...] = a

    def num_parameters(self) -> int:
        return sum(int(mod.params[k].size) for _, mod, k in self.named_parameters())

    def copy(self) -> "Module":
        """An independent deep copy (the auxiliary model of SIMS starts as one)."""
        return copy.deepcopy(self)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)


def _first(items: list[str], sep: str = ", ", n: int = 5) -> str:
    """The first ``n`` items joined, and how many more: a whole UNet's names are not one line."""
    more = f"{sep}... {len(items) - n} more" if len(items) > n else ""
    return sep.join(items[:n]) + more


# ================================================================================================
# Elementary layers: one input each, so each backward returns a 1-tuple ``(dx,)``
# ================================================================================================
# Linear with ``ensemble=R`` holds W (R,Din,Dout) and b (R,Dout) and maps x (R,N,Din) -> (R,N,Dout):
# R independent models in one batched matmul. Without it, W (Din,Dout), b (Dout,), x (...,N,Din).


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


# ================================================================================================
# Noise-level (time) embeddings: how the network is told how noisy its input is
# ================================================================================================
# Over any leading shape (R,N):
# - ``raw``: the conditioning scalar itself as one feature, (...) -> (...,1). The DDPM toy the paper
#   cites feeds the raw step index this way.
# - ``fourier``: fixed sinusoidal features [cos(c f_k), sin(c f_k)] with geometric frequencies
#   f_k, (...) -> (...,2K), as in the positional embeddings of DDPM/EDM networks.
# Neither has parameters; backward returns ``(dc,)``, the gradient with respect to the scalar (the
# gradient check uses it, training does not).


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
