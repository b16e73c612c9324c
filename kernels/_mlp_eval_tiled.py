"""kernels/mlp_eval.py's fused MLP evaluation, version "tiled": one CUDA C kernel built from
_mlp_tiles.py's register-tiled products, launched through cupy.RawModule on CuPy arrays
(``module``), or through tests/cuda_emu.EmulatedModule on NumPy arrays in the tests (``evaluate``
takes the compiled module).

# R members (runs), N points per member, D data dimension, E embedding width, H hidden width,
# TP = 128 points of one tile, NB = ceil(N / TP) tiles per member, P packed weights per member

What changes from "cupy" (_mlp_eval_cupy.py): there a thread computes all H outputs of its own
point, about 17 shared loads per 64 multiply-adds (as many shared-memory cycles as multiply-add
cycles), and a block holds all the weights (98.5 KiB at H = 64: 8 warps per SM). Here 256
threads compute each layer of a tile of 128 points as one product, each thread a 4-point x
TJ-output register tile (6 wavefronts per 8 multiply-add cycles), the weights staged a layer at a
time (84,224 bytes at H = 64: 16 warps per SM), a barrier per layer (_mlp_tiles.py: the layout).
Launch: grid (NB, R), 256 threads; the tile's inputs [x, embed(c)], the embedding of the one
level c computed in the kernel (fourier: c * f_k rounded to float32 as NumPy rounds it), then
``hidden_layers`` (nothing saved), then ``output_layer``. One network for every member
(params (1,P)): member_stride 0.
Arithmetic: float32 within rounding of MLPDenoiser.forward (tests/test_kernels_mlp_eval.py
states the tolerance, the same for both versions). Needs _mlp_tiles.py's widths (H a multiple
of 32, at most 64); ReLU or SiLU.
Run time: unmeasured (no GPU in the session that wrote it); benchmarks/bench_mlp_gpu.py times it
against version "cupy".
"""
from __future__ import annotations

from . import _mlp_eval_cupy, _mlp_tiles
from ._mlp_tiles import THREADS, TP, shared_bytes

assert TP == _mlp_eval_cupy.TILE  # one block per 128 points: "cupy"'s launch serves both

KERNELS = ("mlp_eval_tiled",)

_KERNEL = r"""
// The embedding's entry e of the noise level c (raw: c itself; fourier: cos(c f_e) for e < K,
// sin(c f_{e-K}) after), as MLPDenoiser's NoiseEmbedding computes it.
__device__ __forceinline__ float embedding(float c, const float* freqs, int e) {
#if EMB == 0
    return c;
#else
    const int K = (DIN - DOUT) / 2;
    const float a = c * freqs[e < K ? e : e - K];
    return e < K ? cosf(a) : sinf(a);
#endif
}

extern "C" __global__ void __launch_bounds__(THREADS) mlp_eval_tiled(
        const float* __restrict__ x,        // R,N,DOUT points
        const float* __restrict__ params,   // R,PACKED weights (1,PACKED, member_stride 0: one net)
        const float* __restrict__ freqs,    // K fourier frequencies (unread for raw)
        float c,                            // the noise level, one for every point
        float* __restrict__ y,              // R,N,DOUT
        int N, int member_stride) {
    extern __shared__ float4 smem[];
    float* Ws = reinterpret_cast<float*>(smem);        // HIDDEN * HIDDEN + HIDDEN
    float* A = Ws + HIDDEN * HIDDEN + HIDDEN;          // TILE_FLOATS
    float* B = A + TILE_FLOATS;                        // TILE_FLOATS
    const long long r = blockIdx.y, tile = blockIdx.x, row0 = r * N + tile * TP;
    const int valid = min(TP, N - (int)tile * TP);     // points of this tile below N
    const float* mine = params + r * member_stride;
    for (int i = threadIdx.x; i < DIN * TP; i += THREADS) {  // A[k][p] = [x, embed(c)]
        const int p = i / DIN, k = i % DIN;
        A[k * STRIDE + p] = k < DOUT ? (p < valid ? x[(row0 + p) * DOUT + k] : 0.0f)
                                     : embedding(c, freqs, k - DOUT);
    }
    const float* h = hidden_layers(A, B, Ws, mine, nullptr);
    output_layer(h, Ws, mine, y, row0, valid);
}
"""


def source(spec) -> str:
    """The kernel's CUDA C for one network shape (``spec``: kernels.mlp_eval.MLPSpec)."""
    return _mlp_tiles.defines(spec) + _mlp_tiles.DEVICE_CODE + _KERNEL


def supported(spec) -> str | None:
    """Why this network cannot use the kernel (None: it can), device limits aside (``fits``)."""
    return _mlp_tiles.width_unsupported(spec)


def evaluate(mod, x, c: float, params, freqs, spec):
    """x (R,N,D) float32, params (R,P) or (1,P) (one network for every member), freqs (K,) float32
    -> y (R,N,D) float32, the network at (x, c). ``mod`` is the compiled ``source(spec)``; the
    checks and the launch are "cupy"'s (the same arguments, a block per 128 points)."""
    return _mlp_eval_cupy.launch(mod, "mlp_eval_tiled", THREADS, shared_bytes(spec), x, c, params,
                                 freqs, spec)


def fits(spec) -> bool:
    """True when the network is supported and the current GPU gives a block its shared memory."""
    return supported(spec) is None and _mlp_tiles.fits_device(spec)


module = _mlp_tiles.ModuleCache(source, KERNELS)  # module(spec): compiled once per shape
