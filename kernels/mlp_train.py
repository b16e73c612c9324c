"""The toy MLP denoiser's training step, fused: the forward of every layer in one kernel launch,
and the backward (every weight's gradient, and the inputs') in one more.

# R members (runs), N points per member, DIN = D + E network inputs, H hidden width, L depth,
# DOUT = D outputs, P packed weights per member, NB tiles of 128 points per member

MLPDenoiser (minisims/nn/mlp.py) past its embedding, on h_in = [x, embed(c)] with a level per
point, each member with its own weights (kernels/mlp_eval.py's ``pack``); ReLU only:
    h_0 = h_in @ W_0 + b_0;  h_i = relu(h_{i-1} @ W_i + b_i), i = 1..L;  y = h_L @ W_out + b_out
    backward, each Linear from the last: dW = in^T g, db = g summed over points, g <- g W^T,
    times (in > 0) where the layer's input came through the ReLU
    y, saved = forward(h_in, params, spec)                  # h_in (R,N,DIN) float32 -> y (R,N,DOUT)
    grads, dh_in = backward(dy, h_in, saved, params, spec)  # grads (R,P): unpack(grads, spec)
Why fuse: training is 78% of a Figure 4 generation on an H200 (docs/notes/kernels-other.md), and
layer by layer on CuPy a step is about 60 launches, each hidden layer reading and writing an
(R,N,H) array (256-512 MB at R = 1000) three to four times each way. Fused, the activations are
written once and read once.
Versions (``impl=``):
- "reference": the array code above, NumPy or CuPy; ``saved`` is the list [h_0, ..., h_L].
- "cupy": _mlp_train_cupy.py's two CUDA C kernels, grid (NB, R), 256 threads per tile; ``saved``
  is (R,NB,L+1,H,128) (``saved_activations`` gives the list). float32 only; within float32
  rounding of the reference, not bit for bit; deterministic (tile sums in a fixed order here, no
  atomics). Tested through tests/cuda_emu.py (both schedule orders: the race check catches the
  removal of any one barrier), nvcc for sm_80 and sm_90 (tests/test_kernels_mlp_train.py); on a
  GPU by tests/gpu/test_mlp_train_gpu.py. Run time: not yet measured on a GPU.
"auto": "cupy" for CuPy arrays, "reference" for NumPy (on the CPU MLPDenoiser keeps its layers).
"""
from __future__ import annotations

import numpy as np

from . import _mlp_train_cupy
from ._array import array_module, is_cupy
from .mlp_eval import MLPSpec, pack, unpack

IMPLS = ("reference", "cupy")


def _ins(h_in, acts):
    """The input of every Linear: h_in, then the hidden activations h_0..h_L."""
    return [h_in] + list(acts)


def forward_reference(h_in, params, spec: MLPSpec):
    """h_in (R,N,DIN), params (R,P) -> y (R,N,DOUT), [h_0, ..., h_L] each (R,N,H)."""
    layers = unpack(params, spec)
    acts, h = [], h_in
    for i, (W, b) in enumerate(layers):
        h = h @ W + b  # R,N,Dout
        if 0 < i < len(layers) - 1:  # the hidden layers: ReLU
            h = h * (h > 0)
        if i < len(layers) - 1:
            acts.append(h)  # R,N,H
    return h, acts


def backward_reference(dy, h_in, acts, params, spec: MLPSpec):
    """dy (R,N,DOUT), the forward's h_in and [h_0..h_L] -> grads (R,P) packed as ``pack`` packs
    the weights, and dh_in (R,N,DIN)."""
    layers, ins = unpack(params, spec), _ins(h_in, acts)
    g, dWs, dbs = dy, [None] * len(layers), [None] * len(layers)
    for i in reversed(range(len(layers))):
        W, _ = layers[i]
        x = ins[i]  # R,N,Din
        dWs[i] = x.swapaxes(-1, -2) @ g  # R,Din,Dout
        dbs[i] = g.sum(axis=-2)  # R,Dout
        g = g @ W.swapaxes(-1, -2)  # R,N,Din
        if i >= 2:  # the layer's input h_{i-1} came through the ReLU
            g = g * (x > 0)
    return pack(dWs, dbs, dtype=g.dtype), g


def pack_transposed(params, spec: MLPSpec):
    """The packed weights (R,P) with every W transposed in place, (Dout, Din) row-major: the
    backward kernel stages W^T with straight copies. A copy."""
    layers = unpack(params, spec)
    return pack([W.swapaxes(-1, -2) for W, _ in layers], [b[:, 0] for _, b in layers],
                dtype=params.dtype)  # R,P


def saved_activations(saved, N: int) -> list:
    """The "cupy" forward's activations (R,NB,L+1,H,TP) as the reference's [h_0..h_L] (R,N,H)."""
    R, nb, L1, H, tp = saved.shape
    hs = saved.transpose(2, 0, 1, 4, 3).reshape(L1, R, nb * tp, H)[:, :, :N]  # L+1,R,N,H
    return list(hs)


def _impl(impl: str, a) -> str:
    if impl == "auto":
        return "cupy" if is_cupy(a) else "reference"
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}: use one of {IMPLS} or 'auto'")
    return impl


def forward(h_in, params, spec: MLPSpec, impl: str = "auto"):
    """y (R,N,DOUT) and what ``backward`` needs (``saved``), for h_in (R,N,DIN), params (R,P)."""
    if _impl(impl, h_in) == "reference":
        return forward_reference(h_in, params, spec)
    return _mlp_train_cupy.forward(_mlp_train_cupy.module(spec), h_in, params, spec)


def backward(dy, h_in, saved, params, spec: MLPSpec, impl: str = "auto"):
    """grads (R,P) (``unpack`` gives each layer's dW, db) and dh_in (R,N,DIN) from dy (R,N,DOUT)
    and the forward's h_in, saved and params (the same impl)."""
    if _impl(impl, dy) == "reference":
        return backward_reference(dy, h_in, saved, params, spec)
    dparts, dh_in = _mlp_train_cupy.backward(_mlp_train_cupy.module(spec), dy, h_in, saved,
                                             pack_transposed(params, spec), spec)  # R,NB,P
    return dparts.sum(axis=1), dh_in  # R,P: the tiles' partial sums (a fixed order: no atomics)


def gpu_ready(spec: MLPSpec) -> bool:
    """True when the "cupy" version trains this network on the current GPU."""
    return _mlp_train_cupy.fits(spec)


__all__ = ["IMPLS", "MLPSpec", "forward", "backward", "forward_reference", "backward_reference",
           "pack", "unpack", "pack_transposed", "saved_activations", "gpu_ready", "array_module",
           "is_cupy"]
