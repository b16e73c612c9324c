"""kernels/mlp_train.py's fused training step, version "cupy": two CUDA C kernels, launched through
cupy.RawModule on CuPy arrays (``module``), or through tests/cuda_emu.EmulatedModule on NumPy
arrays in the tests (``forward`` and ``backward`` take the compiled module).

# R members (runs), N points per member, DIN = D + E network inputs, H hidden width, L depth,
# DOUT = D outputs, TP = 128 points of one tile, NB = ceil(N / TP) tiles per member,
# P packed weights per member (kernels/mlp_eval.py's layout)

Both are built from _mlp_tiles.py's device code (its docstring: the block of 256 threads per tile
of 128 points of one member, the shared memory, the products); grid (NB, R).
- ``mlp_train_forward``: the tile's inputs [x, embedding] (the caller's, a level per point), then
  ``hidden_layers`` writing each h_0..h_L to ``saved`` (tile-major (R,NB,L+1,H,TP)), then
  ``output_layer``.
- ``mlp_train_backward``, Linear by Linear from the last, G the gradient at its output, A its
  input (from ``saved``): dW = A^T G, db = G's row sums, then G W^T times the ReLU's mask A > 0,
  written over A by the thread that owns each element; last, dh_in = dz_0 W_0^T. Each tile writes
  its own partial dW, db (``dparts`` (R,NB,P)), which mlp_train.backward sums in a fixed order.
Why: the activations cross global memory once each way (unfused, each hidden layer's (R,N,H)
array is read and written three to four times each way); no atomics, so deterministic. Points
past N are computed from zeros and never written; the backward loads them as zeros, which add
exact zeros. Arithmetic: _mlp_tiles.py's (tests/test_kernels_mlp_train.py states the
tolerances). Needs the ReLU (the backward's mask), _mlp_tiles.py's widths (``supported``) and
the shared memory the device gives a block (``fits``).
Run time: unmeasured (no GPU in the session that wrote it); benchmarks/bench_mlp_gpu.py,
toy/gpu_check.py --fused-train both and benchmarks/profile_toy_gpu.py time it.
"""
from __future__ import annotations

import numpy as np

from . import _mlp_tiles
from ._array import array_module
from ._mlp_tiles import TP, THREADS, shared_bytes, tiles  # noqa: F401  (the tests read them here)

KERNELS = ("mlp_train_forward", "mlp_train_backward")

_KERNELS = r"""
extern "C" __global__ void __launch_bounds__(THREADS) mlp_train_forward(
        const float* __restrict__ h_in,     // R,N,DIN network inputs [x, embedding]
        const float* __restrict__ params,   // R,PACKED weights
        float* __restrict__ y,              // R,N,DOUT
        float* __restrict__ saved,          // R,NB,DEPTH+1,HIDDEN,TP hidden activations
        int N) {
    extern __shared__ float4 smem[];
    float* Ws = reinterpret_cast<float*>(smem);        // HIDDEN * HIDDEN + HIDDEN
    float* A = Ws + HIDDEN * HIDDEN + HIDDEN;          // TILE_FLOATS
    float* B = A + TILE_FLOATS;                        // TILE_FLOATS
    const long long r = blockIdx.y, tile = blockIdx.x, nb = gridDim.x, row0 = r * N + tile * TP;
    const int valid = min(TP, N - (int)tile * TP);     // points of this tile below N
    const float* mine = params + r * PACKED;
    load_points(A, h_in, DIN, row0, valid);
    const float* h = hidden_layers(A, B, Ws, mine,
                                   saved + (r * nb + tile) * (long long)((DEPTH + 1) * HIDDEN * TP));
    output_layer(h, Ws, mine, y, row0, valid);
}

extern "C" __global__ void __launch_bounds__(THREADS) mlp_train_backward(
        const float* __restrict__ dy,       // R,N,DOUT gradient of the loss at y
        const float* __restrict__ h_in,     // R,N,DIN the forward's inputs
        const float* __restrict__ saved,    // R,NB,DEPTH+1,HIDDEN,TP the forward's activations
        const float* __restrict__ params_t, // R,PACKED weights, every W transposed
        float* __restrict__ dparts,         // R,NB,PACKED this tile's gradient of every weight
        float* __restrict__ dh_in,          // R,N,DIN gradient at the inputs
        int N) {
    extern __shared__ float4 smem[];
    float* Ws = reinterpret_cast<float*>(smem);        // one layer's W^T: HIDDEN * HIDDEN
    float* A = Ws + HIDDEN * HIDDEN + HIDDEN;          // the layer's input h
    float* G = A + TILE_FLOATS;                        // the gradient at the layer's output
    const long long r = blockIdx.y, tile = blockIdx.x, nb = gridDim.x;
    const int valid = min(TP, N - (int)tile * TP);
    const float* mine = params_t + r * PACKED;
    const float* acts = saved + (r * nb + tile) * (long long)((DEPTH + 1) * HIDDEN * TP);
    float* grad = dparts + (r * nb + tile) * (long long)PACKED;
    const int p0 = 4 * (threadIdx.x & 31), j0 = TJ * (threadIdx.x >> 5);
    float acc[4][TJ];

    // Linear_out (HIDDEN -> DOUT): dW = h_L^T dy, db = sum dy, dh_L = dy W^T, masked by h_L > 0
    load_points(G, dy, DOUT, r * N + tile * TP, valid);
    load_tile(A, acts + (long long)DEPTH * HIDDEN * TP, HIDDEN, valid);
    stage(Ws, mine + OFF_OUT, HIDDEN * DOUT, 0);      // W_out^T: DOUT rows of HIDDEN
    __syncthreads();
    warp_sums(A, G, HIDDEN, DOUT, grad + OFF_OUT);
    warp_sums(nullptr, G, DOUT, 1, grad + OFF_OUT + HIDDEN * DOUT);
    __syncthreads();                                   // A is overwritten next
    // Linear_i for i = DEPTH + 1 (out), DEPTH, ..., 1: G holds the gradient at its output, A its
    // input h_{i-1}; after the input gradient A holds the gradient at Linear_{i-1}'s output.
#pragma unroll 1
    for (int i = DEPTH + 1; i >= 1; --i) {
        if (i <= DEPTH) {                              // a hidden layer: its weights first
            load_tile(A, acts + (long long)(i - 1) * HIDDEN * TP, HIDDEN, valid);
            stage(Ws, mine + layer_offset(i), HIDDEN * HIDDEN, 0);
            __syncthreads();
            tile_weight_grad(A, G, grad + layer_offset(i));
            warp_sums(nullptr, G, HIDDEN, 1, grad + layer_offset(i) + HIDDEN * HIDDEN);
            __syncthreads();                           // A and G read: A is overwritten next
        }
        tile_product(G, Ws, i <= DEPTH ? HIDDEN : DOUT, acc);  // dh_{i-1} = G W_i^T
#pragma unroll
        for (int j = 0; j < TJ; ++j) {
            float4* h = reinterpret_cast<float4*>(A + (j0 + j) * STRIDE + p0);
            float4 v = make_float4(acc[0][j], acc[1][j], acc[2][j], acc[3][j]);
            if (i - 1 >= 1) {                          // h_{i-1} went through the ReLU
                const float4 m = *h;
                v = make_float4(v.x * (float)(m.x > 0.0f), v.y * (float)(m.y > 0.0f),
                                v.z * (float)(m.z > 0.0f), v.w * (float)(m.w > 0.0f));
            }
            *h = v;
        }
        __syncthreads();                               // A complete; G and Ws free
        float* t = A; A = G; G = t;
    }
    // Linear_0 (DIN -> HIDDEN): G holds dz_0; dW_0 = h_in^T dz_0, db_0, dh_in = dz_0 W_0^T
    load_points(A, h_in, DIN, r * N + tile * TP, valid);
    stage(Ws, mine, HIDDEN * DIN, 0);                  // W_0^T: HIDDEN rows of DIN
    __syncthreads();
    warp_sums(A, G, DIN, HIDDEN, grad);
    warp_sums(nullptr, G, HIDDEN, 1, grad + DIN * HIDDEN);
    for (int o = threadIdx.x; o < DIN * TP; o += THREADS) {
        const int p = o / DIN, k = o % DIN;
        float s = 0.0f;
#pragma unroll 8
        for (int j = 0; j < HIDDEN; ++j) s += G[j * STRIDE + p] * Ws[j * DIN + k];
        if (p < valid) dh_in[(r * N + tile * TP + p) * DIN + k] = s;
    }
}
"""


def source(spec) -> str:
    """The two kernels' CUDA C for one network shape (``spec``: kernels.mlp_eval.MLPSpec)."""
    return _mlp_tiles.defines(spec) + _mlp_tiles.DEVICE_CODE + _KERNELS


def supported(spec) -> str | None:
    """Why this network cannot use the kernels (None: it can), device limits aside (``fits``)."""
    if spec.activation != "relu":
        return f"activation {spec.activation!r}: the fused backward knows the ReLU only"
    return _mlp_tiles.width_unsupported(spec)


def _check(name, a, shape):
    if a.dtype != np.float32:
        raise TypeError(f"float32 only: {name} is {a.dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, the network needs {tuple(shape)}")


def forward(mod, h_in, params, spec):
    """h_in (R,N,DIN), params (R,P) -> y (R,N,DOUT), saved (R,NB,L+1,H,TP) for ``backward``."""
    xp = array_module(h_in)
    R, N, _ = h_in.shape
    _check("h_in", h_in, (R, N, spec.dim + spec.emb_dim))
    _check("params", params, (R, spec.size))
    if R > 65535 or N >= 2**31 - TP:
        raise ValueError(f"too large for one launch: R {R} (at most 65535), N {N} (int32)")
    nb, H = tiles(N), spec.hidden
    y = xp.empty((R, N, spec.dim), dtype=np.float32)  # R,N,DOUT
    saved = xp.empty((R, nb, spec.depth + 1, H, TP), dtype=np.float32)  # R,NB,L+1,H,TP
    if N:
        mod.get_function("mlp_train_forward")((nb, R), (THREADS,), (
            xp.ascontiguousarray(h_in), xp.ascontiguousarray(params), y, saved, np.int32(N)),
            shared_mem=shared_bytes(spec))
    return y, saved


def backward(mod, dy, h_in, saved, params_t, spec):
    """dy (R,N,DOUT), the forward's h_in and saved, params_t (R,P) (``pack_transposed``) ->
    dparts (R,NB,P), each tile's gradient of every packed weight, and dh_in (R,N,DIN)."""
    xp = array_module(dy)
    R, N, _ = h_in.shape
    nb, H, din = tiles(N), spec.hidden, spec.dim + spec.emb_dim
    _check("dy", dy, (R, N, spec.dim))
    _check("saved", saved, (R, nb, spec.depth + 1, H, TP))
    _check("params_t", params_t, (R, spec.size))
    dparts = xp.empty((R, nb, spec.size), dtype=np.float32)  # R,NB,P
    dh_in = xp.empty((R, N, din), dtype=np.float32)  # R,N,DIN
    if N:
        mod.get_function("mlp_train_backward")((nb, R), (THREADS,), (
            xp.ascontiguousarray(dy), xp.ascontiguousarray(h_in), saved,
            xp.ascontiguousarray(params_t), dparts, dh_in, np.int32(N)),
            shared_mem=shared_bytes(spec))
    return dparts, dh_in


def fits(spec) -> bool:
    """True when the network is supported and the current GPU gives a block its shared memory."""
    return supported(spec) is None and _mlp_tiles.fits_device(spec)


module = _mlp_tiles.ModuleCache(source, KERNELS)  # module(spec): compiled once per shape
