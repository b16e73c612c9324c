"""kernels/mlp_eval.py's fused MLP evaluation, version "cupy": one CUDA C kernel, launched through
cupy.RawModule on CuPy arrays (``module``), or through tests/cuda_emu.EmulatedModule on NumPy
arrays in the tests (``evaluate`` takes the compiled module and allocates with its inputs').

# R members (runs), N points per member, D data dimension, E embedding width, H hidden width,
# L depth (hidden layers), P packed weights per member (kernels/mlp_eval.py's layout)

Launch: grid (ceil(N / TILE), R), block TILE = 128 threads, one point per thread. Shared memory
per block: member r's P packed weights (one coalesced copy, then the only __syncthreads), padded
to 4 floats, then each thread's own column of activations (``hidden_layer``: no barrier between
layers). The toy's MLP (D 2, raw, H 64, L 4) needs 100,880 bytes (98.5 KiB; fourier, K 8:
104,720), above the default 48 KB: ``module`` raises the kernel's limit, ``fits`` refuses what
the device cannot give (sm_80: 163 KB, sm_86/89: 99 KB, sm_90: 227 KB). Registers: a layer's H
accumulators, every loop bound a compile-time #define per network shape (``source``); h stays in
shared memory (in registers too it took 168 registers, for no fewer loads). The embedding is
computed in the kernel from the scalar c (fourier: c * f_k rounded to float32 as NumPy rounds
it): no host-to-device copy. ReLU is x * (x > 0), so -0.0 and nan come out as NumPy's.
Arithmetic: float32, summed in k order, with nvcc's default fused multiply-adds (the emulator
compiles without): within float32 rounding of MLPDenoiser.forward, not bit for bit
(tests/test_kernels_mlp_eval.py states the tolerance). Indices: int32 within a member, int64
across members. nvcc's register counts and the H200 timings: docs/notes/kernels-other.md.
"""
from __future__ import annotations

import math

import numpy as np

from ._array import array_module, is_cupy  # noqa: F401  (kernels.mlp_eval imports them here)

TILE = 128            # threads per block = points per block
MAX_HIDDEN = 64       # a layer's H accumulators are registers of each thread

_BODY = r"""
// DIM, EMB_DIM, HIDDEN, DEPTH, ACT, EMB and TILE are #defines written above this body (source()).
// Packed layout of one member (floats): W_in (DIM+EMB_DIM, HIDDEN), b_in (HIDDEN),
// DEPTH x [W (HIDDEN, HIDDEN), b (HIDDEN)], W_out (HIDDEN, DIM), b_out (DIM); every W row-major,
// (Din, Dout), as Linear stores it
#define OFF_B_IN ((DIM + EMB_DIM) * HIDDEN)
#define OFF_HIDDEN (OFF_B_IN + HIDDEN)
#define HIDDEN_STRIDE (HIDDEN * HIDDEN + HIDDEN)
#define OFF_OUT (OFF_HIDDEN + DEPTH * HIDDEN_STRIDE)
#define OFF_B_OUT (OFF_OUT + HIDDEN * DIM)
#define PACKED (OFF_B_OUT + DIM)
#define PACKED_PADDED ((PACKED + 3) / 4 * 4)   // the activations start 16-byte aligned after it
#define H4 (HIDDEN / 4)

__device__ __forceinline__ float activation(float v) {
#if ACT == 0
    return v * (float)(v > 0.0f);              // ReLU, x * (x > 0) as the reference computes it
#else
    return v * (1.0f / (1.0f + expf(-v)));     // SiLU, x * sigmoid(x)
#endif
}

// One hidden layer for this thread's point: h <- act(h @ W + b). h is the thread's own column of
// hs (hs[k * TILE + t], so a warp's 32 loads hit 32 banks); no other thread reads or writes it,
// so no barrier is needed. W (HIDDEN, HIDDEN) is read as float4s, row k = W4[k * H4 .. + H4 - 1]
// (HIDDEN % 4 == 0), the same address for the whole warp: a broadcast.
__device__ __forceinline__ void hidden_layer(float* hs, const float4* W4, const float* b) {
    const int t = threadIdx.x;
    float acc[HIDDEN];                           // registers: every index is a constant
#pragma unroll
    for (int j = 0; j < HIDDEN; ++j) acc[j] = 0.0f;
#pragma unroll 2
    for (int k = 0; k < HIDDEN; ++k) {
        const float hk = hs[k * TILE + t];
#pragma unroll
        for (int j = 0; j < H4; ++j) {
            const float4 w = W4[k * H4 + j];
            acc[4 * j + 0] += hk * w.x;
            acc[4 * j + 1] += hk * w.y;
            acc[4 * j + 2] += hk * w.z;
            acc[4 * j + 3] += hk * w.w;
        }
    }
#pragma unroll
    for (int j = 0; j < HIDDEN; ++j) hs[j * TILE + t] = activation(acc[j] + b[j]);
}

extern "C" __global__ void __launch_bounds__(TILE) mlp_eval(
        const float* __restrict__ x,        // R,N,DIM points
        const float* __restrict__ params,   // R,PACKED weights (1,PACKED, member_stride 0: one net)
        const float* __restrict__ freqs,    // K fourier frequencies (unread for raw)
        float c,                            // the noise level, one for every point
        float* __restrict__ y,              // R,N,DIM
        int N, int member_stride) {
    extern __shared__ float4 smem[];             // PACKED_PADDED + HIDDEN * TILE floats
    float* w = reinterpret_cast<float*>(smem);   // this member's weights
    float* hs = w + PACKED_PADDED;               // the activations, one column per thread
    const long long r = blockIdx.y;
    const float* mine = params + r * member_stride;
    for (int i = threadIdx.x; i < PACKED; i += blockDim.x) w[i] = mine[i];
    __syncthreads();
    const int t = threadIdx.x, n = blockIdx.x * TILE + t;
    if (n >= N) return;                          // after the barrier: every thread helped load
    const long long point = r * N + n;

    // the input [x, embed(c)]
    float in[DIM + EMB_DIM];
#pragma unroll
    for (int i = 0; i < DIM; ++i) in[i] = x[point * DIM + i];
#if EMB == 0
    in[DIM] = c;                                 // raw: the noise level itself
#else
#pragma unroll
    for (int k = 0; k < EMB_DIM / 2; ++k) {      // fourier: cos(c f_k), then sin(c f_k)
        const float a = c * freqs[k];
        in[DIM + k] = cosf(a);
        in[DIM + EMB_DIM / 2 + k] = sinf(a);
    }
#endif

    // Linear(DIM+EMB_DIM -> HIDDEN), no activation
#pragma unroll 4
    for (int j = 0; j < HIDDEN; ++j) {
        float acc = 0.0f;
#pragma unroll
        for (int i = 0; i < DIM + EMB_DIM; ++i) acc += in[i] * w[i * HIDDEN + j];
        hs[j * TILE + t] = acc + w[OFF_B_IN + j];
    }
    // DEPTH x [Linear(HIDDEN, HIDDEN), activation]: one copy of the code, the weights move
#pragma unroll 1
    for (int l = 0; l < DEPTH; ++l) {
        const int at = OFF_HIDDEN + l * HIDDEN_STRIDE;  // a multiple of 4 floats
        hidden_layer(hs, smem + at / 4, w + at + HIDDEN * HIDDEN);
    }
    // Linear(HIDDEN -> DIM)
    float out[DIM];
#pragma unroll
    for (int d = 0; d < DIM; ++d) out[d] = 0.0f;
#pragma unroll 4
    for (int k = 0; k < HIDDEN; ++k) {
        const float hk = hs[k * TILE + t];
#pragma unroll
        for (int d = 0; d < DIM; ++d) out[d] += hk * w[OFF_OUT + k * DIM + d];
    }
#pragma unroll
    for (int d = 0; d < DIM; ++d) y[point * DIM + d] = out[d] + w[OFF_B_OUT + d];
}
"""


def source(spec) -> str:
    """The kernel's CUDA C for one network shape (``spec``: kernels.mlp_eval.MLPSpec): the
    shape as #defines above the body, so every loop bound is a compile-time constant."""
    defines = {"DIM": spec.dim, "EMB_DIM": spec.emb_dim, "HIDDEN": spec.hidden, "DEPTH": spec.depth,
               "ACT": {"relu": 0, "silu": 1}[spec.activation],
               "EMB": {"raw": 0, "fourier": 1}[spec.embedding], "TILE": TILE}
    return "".join(f"#define {k} {v}\n" for k, v in defines.items()) + _BODY


def shared_bytes(spec) -> int:
    """Dynamic shared memory of one block: the member's packed weights (padded to 4 floats),
    then the activations of its TILE points."""
    return 4 * (-(-spec.size // 4) * 4 + spec.hidden * TILE)


def supported(spec) -> str | None:
    """Why this network cannot use the kernel (None: it can), device limits aside (``fits``)."""
    if spec.hidden > MAX_HIDDEN:
        return f"hidden width {spec.hidden} > {MAX_HIDDEN}: the accumulators would spill from registers"
    if spec.hidden % 4:
        return f"hidden width {spec.hidden} is not a multiple of 4 (float4 rows)"
    return None




def evaluate(mod, x, c: float, params, freqs, spec):
    """x (R,N,D) float32, params (R,P) or (1,P) (one network for every member), freqs (K,) float32
    -> y (R,N,D) float32, the network at (x, c). ``mod`` is the compiled ``source(spec)``: a
    cupy.RawModule, or tests' EmulatedModule."""
    return launch(mod, "mlp_eval", TILE, shared_bytes(spec), x, c, params, freqs, spec)


def launch(mod, name: str, threads: int, nbytes: int, x, c: float, params, freqs, spec):
    """``evaluate`` for any kernel with mlp_eval's arguments and a block per (128 points, member):
    the checks, the output, the launch of ``name`` with ``threads`` and ``nbytes`` of dynamic
    shared memory (_mlp_eval_tiled.py's kernel is launched here too)."""
    xp = array_module(x)
    R, N, D = x.shape
    if x.dtype != np.float32 or params.dtype != np.float32 or freqs.dtype != np.float32:
        raise TypeError(f"float32 only: x {x.dtype}, params {params.dtype}, freqs {freqs.dtype}")
    if D != spec.dim or params.shape[-1] != spec.size or params.shape[0] not in (1, R):
        raise ValueError(f"shapes do not fit the network: x {x.shape}, params {params.shape}, "
                         f"expected (R,N,{spec.dim}) and (R or 1, {spec.size})")
    if R > 65535 or N * D >= 2**31:
        raise ValueError(f"too large for one launch: R {R} (at most 65535), N*D {N * D} (int32)")
    y = xp.empty((R, N, D), dtype=np.float32)  # R,N,D
    if N == 0:
        return y
    stride = 0 if params.shape[0] == 1 else spec.size  # one network: every block reads row 0
    mod.get_function(name)((math.ceil(N / TILE), R), (threads,), (
        xp.ascontiguousarray(x), xp.ascontiguousarray(params), xp.ascontiguousarray(freqs),
        np.float32(c), y, np.int32(N), np.int32(stride)), shared_mem=nbytes)
    return y


# ------------------------------------------------------------------------------------------------
# CuPy: one compiled module per network shape, made on first use
# ------------------------------------------------------------------------------------------------

_MODULES: dict = {}


_OPTIN_LIMIT: dict = {}  # device id -> the most dynamic shared memory a block may ask for


def fits(spec) -> bool:
    """True when the current GPU gives a block the shared memory this network needs."""
    import cupy
    dev = cupy.cuda.Device()
    if dev.id not in _OPTIN_LIMIT:
        _OPTIN_LIMIT[dev.id] = dev.attributes["MaxSharedMemoryPerBlockOptin"]
    return supported(spec) is None and shared_bytes(spec) <= _OPTIN_LIMIT[dev.id]


def module(spec):
    """``source(spec)`` compiled by CuPy (NVRTC), once per network shape and process, its
    kernel allowed the dynamic shared memory the weights need (above the default 48 KB)."""
    mod = _MODULES.get(spec)
    if mod is None:
        import cupy
        mod = cupy.RawModule(code=source(spec))
        nbytes = shared_bytes(spec)
        if nbytes > 48 * 1024:  # an attribute of the compiled function: set once
            mod.get_function("mlp_eval").max_dynamic_shared_size_bytes = nbytes
        _MODULES[spec] = mod
    return mod
