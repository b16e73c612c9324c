"""The toy MLP denoiser's forward for sampling, fused: every layer and activation of all R
members in one kernel launch.

# R members (runs), N points per member, D data dimension (2), E embedding width, H hidden width,
# L depth (hidden layers), K fourier frequencies, P packed weights per member

The network is minisims/nn/mlp.py's MLPDenoiser, and its ``forward`` is the reference every
version here is tested against (tests/test_kernels_mlp_eval.py). For one noise level c, the same
for every point (what a sampler passes):

    e = embed(c)                     # raw: (c,); fourier: (cos c f_k, sin c f_k)      E
    h = [x, e] @ W_in + b_in         # R,N,H  (no activation)
    L times: h = act(h @ W + b)      # R,N,H  act: ReLU x * (x > 0), or SiLU x * sigmoid(x)
    y = h @ W_out + b_out            # R,N,D

Why fuse: a sampler evaluates the network 39 (DDPM) to 63 (EDM Heun) times per call, twice that
where SIMS guides, and unfused on CuPy each evaluation is about 22 launches (the cast, the
concatenation, 6 batched matmuls, 6 bias additions, 2 per ReLU) and a copy of c to the device,
each launch writing an (R,N,H) activation to global memory for the next to read back: 512 MB per
layer at R = 1000, N = 2000. Fused, it is 1 launch, and the activations never leave the
multiprocessor. (The formulations' casts around the call, float64 state to float32 and back,
are the same either way.)

    spec = MLPSpec(dim=2, hidden=64, depth=4, activation="relu", embedding="raw", num_freqs=8)
    params = pack(Ws, bs)                       # (R,P): each member's weights in one row
    y = mlp_eval(x, c, params, freqs, spec)     # x (R,N,D) float32, c a host number -> (R,N,D)

``pack`` copies the weights: a packed array is a snapshot, to be made again after the weights
change (MLPDenoiser.sampling_forward makes one per sampler call).

Versions (``impl=``):
- ``"reference"``: the array code above on the packed weights, one operation per line, NumPy or
  CuPy: the same operations as MLPDenoiser.forward.
- ``"cupy"``: the CUDA C kernel of _mlp_eval_cupy.py (its docstring gives the block, tile and
  shared memory layout): grid (ceil(N / 128), R), one point per thread, the member's weights and
  its points' activations in shared memory (98.5 KiB per block for the toy's MLP), a layer's
  accumulators in registers. float32 only; within
  float32 rounding of the reference (other summation order, fused multiply-adds), not bit for
  bit. Tested on the CPU through tests/cuda_emu.py, compiled by nvcc for sm_80 and sm_90, and on
  an H200 (tests/gpu/test_mlp_eval_gpu.py). There, at R = 1000 (toy/gpu_check.py --sizes 1000),
  a Figure 4 generation took 1.84 s standard and 3.50 s SIMS with it against 2.06 and 4.22 s
  layer by layer; the kernel itself was 0.58 s of a SIMS generation's 3.26 s of device time
  (benchmarks/profile_toy_gpu.py): the training step is the larger part.
- ``"tiled"``: the CUDA C kernel of _mlp_eval_tiled.py: the same grid, 256 threads per tile of
  128 points, each layer one register-tiled product of the tile (kernels/_mlp_tiles.py, shared
  with the fused training step), the weights staged a layer at a time (84,224 bytes per block).
  It needs H a multiple of 32 (at most 64). Tested like "cupy" (the same tolerance); its run time
  is unmeasured so far (benchmarks/bench_mlp_gpu.py times both versions against PyTorch).
"auto" picks "tiled" for CuPy arrays where the network's width allows it, else "cupy", and
"reference" for NumPy arrays. A numba CPU version is not written: on the CPU the samplers keep
MLPDenoiser.forward (NumPy + BLAS), unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _mlp_eval_cupy, _mlp_eval_tiled
from ._mlp_eval_cupy import array_module, is_cupy

IMPLS = ("reference", "cupy", "tiled")


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
        impl = ("tiled" if _mlp_eval_tiled.fits(spec) else "cupy") if is_cupy(x) else "reference"
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
