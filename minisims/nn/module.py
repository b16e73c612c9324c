"""The Module base class: parameters, gradients and the forward/backward contract.

A layer declares every parameter in ``__init__`` (no lazy init), keeps in ``forward`` only what
``backward`` needs, and ``backward(dy) -> dx`` *adds* into ``self.grads[name]`` (same keys as
``self.params``). Parameters may carry a leading ensemble axis R: R independent models that train
in one batched step (the toy experiments run hundreds of runs at once this way).
"""
from __future__ import annotations

import copy

from .. import backend


class Module:
    """Base class. Subclasses fill ``self.params`` and list sub-modules in ``self.children``."""

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}
        self.children: dict[str, Module] = {}

    def _init_grads(self):
        """Allocate a zero gradient buffer beside each parameter."""
        self.grads = {k: backend.xp(p).zeros_like(p) for k, p in self.params.items()}

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
        """Copy arrays into the parameters in place; names and shapes must match exactly."""
        own = {name: (mod, k) for name, mod, k in self.named_parameters()}
        missing, extra = own.keys() - state.keys(), state.keys() - own.keys()
        if missing or extra:
            raise ValueError(f"state dict mismatch: missing {sorted(missing)}, unexpected {sorted(extra)}")
        for name, (mod, k) in own.items():
            p = mod.params[k]
            if tuple(state[name].shape) != tuple(p.shape):
                raise ValueError(f"{name}: shape {tuple(state[name].shape)} != {tuple(p.shape)}")
            p[...] = backend.xp(p).asarray(state[name], dtype=p.dtype)

    def num_parameters(self) -> int:
        return sum(int(mod.params[k].size) for _, mod, k in self.named_parameters())

    def copy(self) -> "Module":
        """An independent deep copy (the auxiliary model of SIMS starts as one)."""
        return copy.deepcopy(self)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)
