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
        """Copy arrays into the parameters in place: all of them, or, on any mismatch, none.

        Every array is checked (names match exactly, shapes equal, dtype castable to the
        parameter's within its kind, e.g. float64 -> float32 but not complex -> float) and
        converted onto the parameter's device before the first parameter changes, so a failed load
        (a ValueError naming every problem) leaves the model exactly as it was.
        """
        import numpy as np

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
