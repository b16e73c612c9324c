"""kernels/mlp_train.py's fused training step, version "cupy": two CUDA C kernels (forward and
backward), launched through cupy.RawModule on CuPy arrays (``module``), or through
tests/cuda_emu.EmulatedModule on NumPy arrays in the tests (``forward`` and ``backward`` take the
compiled module and allocate with their inputs' array module).

# R members (runs), N points per member, DIN = D + E network inputs, H hidden width, L depth,
# DOUT = D outputs, TP = 128 points of one tile, NB = ceil(N / TP) tiles per member,
# P packed weights per member (kernels/mlp_eval.py's layout)

Layout of a launch: grid (NB, R), block 256 threads = 8 warps, one tile of TP = 128 points of one
member per block. Every layer is a small matrix product of the tile; the layers follow one another
inside the block, separated by __syncthreads, and only what the backward needs leaves it.

Shared memory, dynamic, per block (H = 64: 84,224 bytes, so two blocks share an H100's SM):
- ``Ws``: one layer's weights, H*H floats, then its bias (H floats), staged from global memory
  layer by layer (row-major, straight copies: the backward reads the packed weights with every W
  transposed, ``pack_transposed``, so that it stages W^T with a copy too);
- ``A`` and ``G``: two activation tiles, H rows of TP points, row stride TP + 4 floats (the 4
  pad floats put row k + 1 four banks after row k, see the weight gradient below).
  Features are rows and points columns, [k][p]: a warp's 32 lanes read 4 consecutive points
  each, one 128-bit load of 512 contiguous bytes, without bank conflicts.

The three products of a hidden layer, per tile (TP x H x H multiply-adds each):
- forward ``tile_product``: out[j][p] = sum_k in[k][p] W[k][j], then + b[j] and the ReLU. Thread
  (lane, warp) owns points 4 lane .. 4 lane + 3 and outputs TJ warp .. TJ warp + TJ - 1
  (TJ = H / 8): per k one 128-bit load of its 4 points' in[k] and TJ / 4 128-bit loads of W's
  row k (the same address for the whole warp: a broadcast), for 4 TJ multiply-adds (32 at
  H = 64, 4 x 8 accumulators in registers). The result is written to the other tile buffer and,
  in the forward, to global memory (``saved``), 512 contiguous bytes per warp store.
- backward input gradient: the same ``tile_product`` with W^T: dh[k][p] = sum_j dz[j][p] W[k][j],
  then times the ReLU's mask h[k][p] > 0, written in place over h (each element read and written
  by the thread that owns it).
- backward weight gradient ``tile_weight_grad``: dW[k][j] = sum_p h[k][p] dz[j][p]. Thread owns
  k in {tk + 16 a} and j in {tj + 16 b} (a, b < H / 16: 4 x 4 at H = 64); per 4 points one
  128-bit load of each of its rows of h and of dz. tj = lane % 16, so the 8 lanes of a
  quarter-warp read 8 rows of dz at the same points: with the row stride TP + 4 they fall in 8
  different groups of 4 banks (no conflict); the rows of h are the same for 16 lanes (broadcast).
  Each tile writes its own partial dW, db (``dparts`` (R, NB, P), every tile in full), and the
  caller sums over the NB tiles in a fixed order: deterministic, no atomics.
The first layer (DIN inputs) and the last (DOUT outputs) are thin: their products are loops of one
output per thread (forward), and warp-wide sums with shuffles in a fixed order (their weight
gradients and every bias gradient).

Global memory per step: the forward reads the inputs (R,N,DIN) and writes y and the L + 1 hidden
activations, tile-major (R, NB, L+1, H, TP) floats; the backward reads them back once, with dy,
and writes dparts (R, NB, P) and dh_in (R,N,DIN). Unfused (layer by layer on CuPy) each hidden
layer's forward alone reads and writes an (R,N,H) array 3-4 times (product, bias, mask, multiply).

Arithmetic: float32, each output summed in its own fixed order (forward: k ascending, bias after
the sum as x @ W + b adds it; weight gradients: points ascending in groups of 4); nvcc contracts
a * b + c into fused multiply-adds. So results equal the layer-by-layer path within float32
rounding, not bit for bit (tests/test_kernels_mlp_train.py states the tolerances); the same
inputs give the same bits on every run. The emulator compiles without contraction. Points past N
in the last tile: the forward computes them from zero inputs and never writes their y; the
backward loads them as zeros (activations, dy), so they add exact zeros to every sum.
Indices: int32 within a member, int64 across members.

Needs: H a multiple of 32 and at most 64 (the thread tiles), DIN and DOUT at most H, ReLU
(``supported`` says why not); the shared memory the device gives a block (``fits``).
Run time: unmeasured (no GPU in the session that wrote it); toy/gpu_check.py --fused-train both
and benchmarks/profile_toy_gpu.py time it.
"""
from __future__ import annotations

import math

import numpy as np

from ._array import array_module

TP = 128          # points per tile = per block
THREADS = 256     # threads per block: 8 warps
PAD = 4           # floats after each activation row in shared memory
MAX_HIDDEN = 64

_BODY = r"""
// DIN, HIDDEN, DEPTH, DOUT, TP, THREADS, STRIDE are #defines written above this body (source()).
// Packed layout of one member (floats), as kernels/mlp_eval.py packs it: W_0 (DIN, HIDDEN), b_0,
// DEPTH x [W (HIDDEN, HIDDEN), b], W_out (HIDDEN, DOUT), b_out; row-major. The backward's copy
// has every W transposed in place (W_0^T (HIDDEN, DIN), ...), the biases as they are.
#define OFF_HIDDEN (DIN * HIDDEN + HIDDEN)
#define HIDDEN_STRIDE (HIDDEN * HIDDEN + HIDDEN)
#define OFF_OUT (OFF_HIDDEN + DEPTH * HIDDEN_STRIDE)
#define PACKED (OFF_OUT + HIDDEN * DOUT + DOUT)
#define TJ (HIDDEN / 8)          // outputs per thread in tile_product (8 warps x TJ = HIDDEN)
#define TW (HIDDEN / 16)         // rows per thread and operand in tile_weight_grad
#define WARPS (THREADS / 32)
#define TILE_FLOATS (HIDDEN * STRIDE)

// Offset of Linear i's W in the packed layout (i = 0: the input layer, DEPTH + 1: the output).
__device__ __forceinline__ int layer_offset(int i) {
    return i == 0 ? 0 : (i <= DEPTH ? OFF_HIDDEN + (i - 1) * HIDDEN_STRIDE : OFF_OUT);
}

// Ws <- the nw weights and nb biases of one layer (contiguous in the packed layout); the bias
// goes to Ws[HIDDEN * HIDDEN ...].
__device__ __forceinline__ void stage(float* Ws, const float* src, int nw, int nb) {
    for (int i = threadIdx.x; i < nw; i += THREADS) Ws[i] = src[i];
    for (int i = threadIdx.x; i < nb; i += THREADS) Ws[HIDDEN * HIDDEN + i] = src[nw + i];
}

// rows x TP tile of shared memory <- rows of TP points from global memory (tile-major, as the
// forward saved them), zero past N.
__device__ __forceinline__ void load_tile(float* T, const float* src, int rows, int valid) {
    for (int i = threadIdx.x; i < rows * TP; i += THREADS) {
        const int k = i / TP, p = i % TP;
        T[k * STRIDE + p] = p < valid ? src[i] : 0.0f;
    }
}

// T[k][p] <- X[member, p0 + p, k] for k < cols: a point-major (R,N,cols) array, zero past N.
__device__ __forceinline__ void load_points(float* T, const float* X, int cols, long long row0,
                                            int valid) {
    for (int i = threadIdx.x; i < cols * TP; i += THREADS) {
        const int p = i / cols, k = i % cols;
        T[k * STRIDE + p] = p < valid ? X[(row0 + p) * cols + k] : 0.0f;
    }
}

// acc[q][j] = sum_{k < K} in[k][4 lane + q] * M[k][TJ warp + j], M row-major with HIDDEN columns.
__device__ __forceinline__ void tile_product(const float* in, const float* M, int K,
                                             float (&acc)[4][TJ]) {
    const int p0 = 4 * (threadIdx.x & 31), j0 = TJ * (threadIdx.x >> 5);
#pragma unroll
    for (int q = 0; q < 4; ++q)
#pragma unroll
        for (int j = 0; j < TJ; ++j) acc[q][j] = 0.0f;
#pragma unroll 2
    for (int k = 0; k < K; ++k) {
        const float4 a = *reinterpret_cast<const float4*>(in + k * STRIDE + p0);
#pragma unroll
        for (int j = 0; j < TJ; j += 4) {
            const float4 w = *reinterpret_cast<const float4*>(M + k * HIDDEN + j0 + j);
            acc[0][j] += a.x * w.x; acc[0][j + 1] += a.x * w.y; acc[0][j + 2] += a.x * w.z; acc[0][j + 3] += a.x * w.w;
            acc[1][j] += a.y * w.x; acc[1][j + 1] += a.y * w.y; acc[1][j + 2] += a.y * w.z; acc[1][j + 3] += a.y * w.w;
            acc[2][j] += a.z * w.x; acc[2][j + 1] += a.z * w.y; acc[2][j + 2] += a.z * w.z; acc[2][j + 3] += a.z * w.w;
            acc[3][j] += a.w * w.x; acc[3][j + 1] += a.w * w.y; acc[3][j + 2] += a.w * w.z; acc[3][j + 3] += a.w * w.w;
        }
    }
}

__device__ __forceinline__ float relu(float v) { return v * (float)(v > 0.0f); }  // as x * (x > 0)

// dW[k][j] = sum_p H[k][p] D[j][p] over the tile's TP points, HIDDEN x HIDDEN, into out (row-major).
__device__ __forceinline__ void tile_weight_grad(const float* Hs, const float* Ds, float* out) {
    const int lane = threadIdx.x & 31, tj = lane & 15, tk = 2 * (threadIdx.x >> 5) + (lane >> 4);
    float acc[TW][TW];
#pragma unroll
    for (int a = 0; a < TW; ++a)
#pragma unroll
        for (int b = 0; b < TW; ++b) acc[a][b] = 0.0f;
#pragma unroll 2
    for (int p = 0; p < TP; p += 4) {
        float4 h[TW], d[TW];
#pragma unroll
        for (int a = 0; a < TW; ++a) h[a] = *reinterpret_cast<const float4*>(Hs + (tk + 16 * a) * STRIDE + p);
#pragma unroll
        for (int b = 0; b < TW; ++b) d[b] = *reinterpret_cast<const float4*>(Ds + (tj + 16 * b) * STRIDE + p);
#pragma unroll
        for (int a = 0; a < TW; ++a)
#pragma unroll
            for (int b = 0; b < TW; ++b) {
                acc[a][b] += h[a].x * d[b].x;
                acc[a][b] += h[a].y * d[b].y;
                acc[a][b] += h[a].z * d[b].z;
                acc[a][b] += h[a].w * d[b].w;
            }
    }
#pragma unroll
    for (int a = 0; a < TW; ++a)
#pragma unroll
        for (int b = 0; b < TW; ++b) out[(tk + 16 * a) * HIDDEN + tj + 16 * b] = acc[a][b];
}

// The thin products' sums, one warp per output: out[o] = sum_p X[k][p] Y[d][p] for o = k * nd + d
// (X null: sum_p Y[o][p], a bias gradient). Lanes take points lane, lane + 32, ..., then a
// butterfly of shuffles: a fixed order.
__device__ __forceinline__ void warp_sums(const float* X, const float* Y, int nk, int nd,
                                          float* out) {
    const int lane = threadIdx.x & 31;
    for (int o = threadIdx.x >> 5; o < nk * nd; o += WARPS) {
        const int k = o / nd, d = o % nd;
        float s = 0.0f;
#pragma unroll
        for (int p = lane; p < TP; p += 32) s += X ? X[k * STRIDE + p] * Y[d * STRIDE + p] : Y[o * STRIDE + p];
#pragma unroll
        for (int m = 16; m > 0; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
        if (lane == 0) out[o] = s;
    }
}

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
    const long long r = blockIdx.y, tile = blockIdx.x, nb = gridDim.x;
    const int valid = min(TP, N - (int)tile * TP);     // points of this tile below N
    const float* mine = params + r * PACKED;
    float* out = saved + (r * nb + tile) * (long long)((DEPTH + 1) * HIDDEN * TP);

    load_points(A, h_in, DIN, r * N + tile * TP, valid);
    const int p0 = 4 * (threadIdx.x & 31), j0 = TJ * (threadIdx.x >> 5);
    float acc[4][TJ];
    // Linear_0 (DIN -> HIDDEN), no activation; then DEPTH x [Linear(HIDDEN, HIDDEN), ReLU]
#pragma unroll 1
    for (int i = 0; i <= DEPTH; ++i) {
        stage(Ws, mine + layer_offset(i), (i == 0 ? DIN : HIDDEN) * HIDDEN, HIDDEN);
        __syncthreads();                               // Ws and A complete
        tile_product(A, Ws, i == 0 ? DIN : HIDDEN, acc);
#pragma unroll
        for (int j = 0; j < TJ; ++j) {
            const float b = Ws[HIDDEN * HIDDEN + j0 + j];
            float4 v = make_float4(acc[0][j] + b, acc[1][j] + b, acc[2][j] + b, acc[3][j] + b);
            if (i > 0) v = make_float4(relu(v.x), relu(v.y), relu(v.z), relu(v.w));
            *reinterpret_cast<float4*>(B + (j0 + j) * STRIDE + p0) = v;
            *reinterpret_cast<float4*>(out + ((long long)i * HIDDEN + j0 + j) * TP + p0) = v;
        }
        __syncthreads();                               // B complete, Ws and A free
        float* t = A; A = B; B = t;
    }
    // Linear_out (HIDDEN -> DOUT)
    stage(Ws, mine + OFF_OUT, HIDDEN * DOUT, DOUT);
    __syncthreads();
    for (int o = threadIdx.x; o < DOUT * TP; o += THREADS) {
        const int p = o % TP, d = o / TP;
        float s = 0.0f;
#pragma unroll 8
        for (int k = 0; k < HIDDEN; ++k) s += A[k * STRIDE + p] * Ws[k * DOUT + d];
        if (p < valid) y[(r * N + tile * TP + p) * DOUT + d] = s + Ws[HIDDEN * HIDDEN + d];
    }
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
    """The kernels' CUDA C for one network shape (``spec``: kernels.mlp_eval.MLPSpec), its
    sizes as #defines so every loop bound is a compile-time constant."""
    defines = {"DIN": spec.dim + spec.emb_dim, "HIDDEN": spec.hidden, "DEPTH": spec.depth,
               "DOUT": spec.dim, "TP": TP, "THREADS": THREADS, "STRIDE": TP + PAD}
    return "".join(f"#define {k} {v}\n" for k, v in defines.items()) + _BODY


def shared_bytes(spec) -> int:
    """Dynamic shared memory of one block: a layer's weights and bias, two activation tiles."""
    H = spec.hidden
    return 4 * (H * H + H + 2 * H * (TP + PAD))


def supported(spec) -> str | None:
    """Why this network cannot use the kernels (None: it can), device limits aside (``fits``)."""
    H, din = spec.hidden, spec.dim + spec.emb_dim
    if spec.activation != "relu":
        return f"activation {spec.activation!r}: the fused backward knows the ReLU only"
    if H % 32 or H > MAX_HIDDEN:
        return f"hidden width {H}: the thread tiles need a multiple of 32, at most {MAX_HIDDEN}"
    if din > H or spec.dim > H:
        return f"{din} inputs or {spec.dim} outputs exceed the hidden width {H}"
    return None


def tiles(N: int) -> int:
    """NB: tiles of TP points per member."""
    return math.ceil(N / TP)


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


# ------------------------------------------------------------------------------------------------
# CuPy: one compiled module per network shape, made on first use
# ------------------------------------------------------------------------------------------------

_MODULES: dict = {}
_OPTIN_LIMIT: dict = {}  # device id -> the most dynamic shared memory a block may ask for


def fits(spec) -> bool:
    """True when the network is supported and the current GPU gives a block its shared memory."""
    import cupy
    dev = cupy.cuda.Device()
    if dev.id not in _OPTIN_LIMIT:
        _OPTIN_LIMIT[dev.id] = dev.attributes["MaxSharedMemoryPerBlockOptin"]
    return supported(spec) is None and shared_bytes(spec) <= _OPTIN_LIMIT[dev.id]


def module(spec):
    """``source(spec)`` compiled by CuPy (NVRTC), once per network shape and process, both kernels
    allowed the dynamic shared memory they need (above the default 48 KB)."""
    mod = _MODULES.get(spec)
    if mod is None:
        import cupy
        mod = cupy.RawModule(code=source(spec))
        nbytes = shared_bytes(spec)
        if nbytes > 48 * 1024:  # an attribute of each compiled function: set once
            for name in ("mlp_train_forward", "mlp_train_backward"):
                mod.get_function(name).max_dynamic_shared_size_bytes = nbytes
        _MODULES[spec] = mod
    return mod
