"""Checking hand-written backward passes against centred finite differences, in float64.

The recipe (cs231n, micrograd, llm.c): a random upstream gradient dy (never all ones), the scalar
loss L = sum(y * dy), whose gradient with respect to the output is exactly dy; run backward(dy)
and compare every parameter and input gradient with (L(p + eps) - L(p - eps)) / (2 eps).
"""
from __future__ import annotations

import numpy as np


def assert_close(name: str, mine, ref, rtol: float, atol: float) -> None:
    """Raise AssertionError naming the array, the worst difference and the first few values."""
    mine, ref = np.asarray(mine), np.asarray(ref)
    if mine.shape != ref.shape:
        raise AssertionError(f"{name}: shape {mine.shape} != {ref.shape}")
    diff = np.abs(mine - ref)
    bad = diff > atol + rtol * np.abs(ref)
    if bad.any():
        i = np.unravel_index(np.argmax(diff), diff.shape)
        raise AssertionError(
            f"{name}: {int(bad.sum())}/{bad.size} entries off; max |diff| {diff.max():.3e} at {i} "
            f"(mine {mine[i]!r}, ref {ref[i]!r}); first values mine {mine.ravel()[:4]}, "
            f"ref {ref.ravel()[:4]} (rtol {rtol}, atol {atol})")


def numerical_grad(loss_fn, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Centred differences of the scalar loss_fn() with respect to x, perturbing x in place."""
    g = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        lp = loss_fn()
        x[i] = old - eps
        lm = loss_fn()
        x[i] = old
        g[i] = (lp - lm) / (2 * eps)
    return g


def gradients(module, inputs, rng, wrt_inputs=(0,), eps: float = 1e-6, forward_kwargs=None):
    """Analytic and numerical gradients of L = sum(module(*inputs) * dy) for every parameter and
    for the inputs listed in ``wrt_inputs``. Returns {name: (analytic, numerical)}.

    Everything should be float64. ``module.backward(dy)`` must follow the rule of
    :mod:`minisims.nn.layers`: a tuple with one gradient per input, in input order.
    """
    kw = forward_kwargs or {}
    y = module.forward(*inputs, **kw)
    dy = rng.standard_normal(y.shape)
    module.zero_grad()
    dxs = module.backward(dy)
    if not isinstance(dxs, tuple) or len(dxs) != len(inputs):
        raise AssertionError(f"{type(module).__name__}.backward returned {type(dxs).__name__}"
                             f"{'' if not isinstance(dxs, tuple) else f' of length {len(dxs)}'}: "
                             f"the rule is a tuple with one gradient per input ({len(inputs)})")
    out = {f"input{i}": [np.array(dxs[i])] for i in wrt_inputs}
    named = list(module.named_parameters())
    for name, mod, k in named:
        out[name] = [mod.grads[k].copy()]

    def loss():
        return float((module.forward(*inputs, **kw) * dy).sum())

    for i in wrt_inputs:
        out[f"input{i}"].append(numerical_grad(loss, inputs[i], eps))
    for name, mod, k in named:
        out[name].append(numerical_grad(loss, mod.params[k], eps))
    return {k: tuple(v) for k, v in out.items()}


def check_gradients(module, inputs, rng, wrt_inputs=(0,), rtol: float = 1e-5, atol: float = 1e-7,
                    eps: float = 1e-6, forward_kwargs=None) -> None:
    """Assert every analytic gradient matches its finite-difference estimate."""
    for name, (mine, ref) in gradients(module, inputs, rng, wrt_inputs, eps, forward_kwargs).items():
        assert_close(name, mine, ref, rtol, atol)
