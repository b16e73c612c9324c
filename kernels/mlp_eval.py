"""The toy MLP denoiser's forward for sampling, fused: every layer of all R members in one launch.

# R members (runs), N points per member, D data dimension (2), E embedding width, H hidden width,
# L depth (hidden layers), K fourier frequencies, P packed weights per member

    e = embed(c)                 # E      raw: (c,); fourier: (cos c f_k, sin c f_k); one c for all
    h = [x, e] @ W_in + b_in     # R,N,H  (no activation)
    L times: h = act(h @ W + b)  # R,N,H  act: ReLU x * (x > 0), or SiLU x * sigmoid(x)
    y = h @ W_out + b_out        # R,N,D  MLPDenoiser.forward's network (minisims/nn/mlp.py)
    params = pack(Ws, bs)                    # R,P: a copy, made again after the weights change
    y = mlp_eval(x, c, params, freqs, spec)  # x R,N,D float32, c a host number, spec an MLPSpec

Why fuse: a sampler evaluates the network 39 to 63 times a call (twice where SIMS guides), and
unfused on CuPy each evaluation is about 22 launches, each writing an (R,N,H) activation (512 MB
at R = 1000, N = 2000) for the next to read back; fused, one launch keeps the activations on the
multiprocessor. Versions (``impl=``), tested against MLPDenoiser.forward in
tests/test_kernels_mlp_eval.py:
- "reference": the array code above on the packed weights, NumPy or CuPy.
- "cupy" (_mlp_eval_cupy.py): a point per thread, the member's weights in shared memory; float32
  only, within float32 rounding, not bit for bit. Tested through tests/cuda_emu.py, by nvcc for
  sm_80 and sm_90, and on an H200 (tests/gpu/test_mlp_eval_gpu.py), where it was timed:
  docs/notes/kernels-other.md.
- "tiled" (_mlp_eval_tiled.py): _mlp_tiles.py's register-tiled products, weights staged a layer
  at a time; H a multiple of 32, at most 64. Tested like "cupy" (the same tolerance); its run
  time is unmeasured so far.
"auto" picks AUTO_GPU ("cupy", which has run on a GPU; "tiled" is opt-in until one measures it)
for CuPy arrays, "reference" for NumPy
(on the CPU the samplers keep MLPDenoiser.forward, NumPy + BLAS; no numba version exists).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _mlp_eval_cupy, _mlp_eval_tiled
from ._mlp_eval_cupy import array_module, is_cupy

IMPLS = ("reference", "cupy", "tiled")
AUTO_GPU = "cupy"  # "auto" on CuPy arrays; "tiled" (where the width fits) has not run on a GPU yet


@dataclass(frozen=True)
class MLPSpec:
    """The shape of the network (MLPConfig's fields), everything the kernel is compiled for."""
    dim: int = 2              # D
    hidden: int = 64          # H
    depth: int = 4            # L hidden layers, each Linear(H, H) then the activation
    activation: str = "relu"  # relu | silu
    embedding: str = "raw"    # raw | fourier
    num_freqs: int = 8        # K, fourier only

    def __post_init__(self):
        if self.activation not in ("relu", "silu") or self.embedding not in ("raw", "fourier"):
            raise ValueError(f"unknown activation {self.activation!r} or embedding "
                             f"{self.embedding!r}")

    @property
    def emb_dim(self) -> int:
        """E: 1 for the raw noise level, 2K for the fourier features."""
        return 1 if self.embedding == "raw" else 2 * self.num_freqs

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(Din, Dout) of every Linear, in order."""
        D, E, H = self.dim, self.emb_dim, self.hidden
        return [(D + E, H)] + [(H, H)] * self.depth + [(H, D)]

    @property
    def size(self) -> int:
        """P: floats per member when packed (every W and b)."""
        return sum(din * dout + dout for din, dout in self.layer_shapes())


def pack(Ws, bs, dtype=np.float32):
    """The weights of every Linear, W (R,Din,Dout) or (Din,Dout) and b (R,Dout) or (Dout,), as one
    contiguous array (R,P) (one network: (1,P)), float32 unless ``dtype`` says otherwise: per
    member W_0, b_0, W_1, b_1, ... each row-major, the layout the kernel reads. A copy, on the
    weights' device."""
    xp = array_module(Ws[0])
    lead = Ws[0].shape[:-2] or (1,)  # R, or 1 for one network
    rows = []
    for W, b in zip(Ws, bs):
        rows += [W.reshape(lead + (-1,)), b.reshape(lead + (-1,))]  # R,Din*Dout and R,Dout
    return xp.ascontiguousarray(xp.concatenate(rows, axis=-1), dtype=dtype)  # R,P


def unpack(params, spec: MLPSpec):
    """pack's inverse: [(W (R,Din,Dout), b (R,1,Dout)), ...], views into params (R,P)."""
    R, at, layers = params.shape[0], 0, []
    for din, dout in spec.layer_shapes():
        W = params[:, at:at + din * dout].reshape(R, din, dout)  # R,Din,Dout
        at += din * dout
        b = params[:, at:at + dout].reshape(R, 1, dout)  # R,1,Dout
        at += dout
        layers.append((W, b))
    return layers


def mlp_eval_reference(x, c: float, params, freqs, spec: MLPSpec):
    """x (R,N,D), c a host number, params (R,P) or (1,P), freqs (K,) -> y (R,N,D) in params'
    dtype: MLPDenoiser.forward's operations, one per line."""
    xp = array_module(x)
    dtype = params.dtype
    cc = xp.full(x.shape[:-1], c, dtype=dtype)  # R,N
    if spec.embedding == "raw":
        e = cc[..., None]  # R,N,1
    else:
        arg = cc[..., None] * freqs  # R,N,K
        e = xp.concatenate([xp.cos(arg), xp.sin(arg)], axis=-1)  # R,N,2K
    h = xp.concatenate([x.astype(dtype, copy=False), e], axis=-1)  # R,N,D+E
    layers = unpack(params, spec)
    for i, (W, b) in enumerate(layers):
        h = h @ W + b  # R,N,Dout
        if 0 < i < len(layers) - 1:  # the hidden layers; the first and the last are linear
            h = h * (h > 0) if spec.activation == "relu" else h * (1.0 / (1.0 + xp.exp(-h)))
    return h  # R,N,D


def mlp_eval(x, c: float, params, freqs, spec: MLPSpec, impl: str = "auto"):
    """The network at (x, c): x (R,N,D), c one host number for every point, params = pack(...)
    (R,P) or (1,P), freqs (K,) (the fourier frequencies; any float32 array for raw) -> (R,N,D)."""
    if impl == "auto":
        tiled = AUTO_GPU == "tiled" and _mlp_eval_tiled.fits(spec)
        impl = ("tiled" if tiled else "cupy") if is_cupy(x) else "reference"
    if impl == "reference":
        return mlp_eval_reference(x, c, params, freqs, spec)
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}: use one of {IMPLS} or 'auto'")
    version = _mlp_eval_tiled if impl == "tiled" else _mlp_eval_cupy
    return version.evaluate(version.module(spec), x, c, params, freqs, spec)


def gpu_ready(spec: MLPSpec) -> bool:
    """True when a GPU version runs this network on the current GPU (its width fits the
    registers and its weights the shared memory the device gives a block)."""
    return _mlp_eval_tiled.fits(spec) or _mlp_eval_cupy.fits(spec)
