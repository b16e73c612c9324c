"""The Module base class: parameters, gradients, sub-modules and the forward/backward contract.

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

So a caller never asks which class it holds: it unpacks as many gradients as it passed arguments,
and :func:`minisims.gradcheck.gradients` checks every module the same way.

Sub-modules: ``self.children`` maps a name to *every* sub-module, parameter-free ones (activations,
Dropout, resampling) included, so :meth:`modules` finds every layer of a model. Parameter names
(``named_parameters``, ``state_dict``, checkpoints) are the child names joined by dots; a child
without parameters adds none.
"""
from __future__ import annotations

import copy

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
