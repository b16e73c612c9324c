"""What the toy MLP's tiled CUDA C kernels share: the tile layout, the register-tiled products and
the layer loop, as CUDA C device code (``DEVICE_CODE``) with the Python-side sizes, for
_mlp_train_cupy.py (the training step) and _mlp_eval_tiled.py (the samplers' evaluation).

# R members (runs), N points per member, DIN = D + E network inputs, H hidden width, L depth,
# DOUT = D outputs, TP = 128 points of one tile, NB = ceil(N / TP) tiles per member

Launch: grid (NB, R), block 256 threads = 8 warps, one tile of TP points of one member; each
layer is a small matrix product of the tile, the layers separated by __syncthreads. Shared
memory, dynamic, per block (H = 64: 84,224 bytes, so two blocks share an H100's SM): ``Ws``, one
layer's weights and bias, staged layer by layer; two activation tiles [k][p] (features rows,
points columns, row stride TP + 4), read as one 128-bit load of 4 points per lane.
Products (the comment above DEVICE_CODE gives the thread tiles and their bank accesses):
``tile_product`` out[j][p] = sum_k in[k][p] M[k][j] (``hidden_layers``' forward; the backward's
input gradient with W^T); ``tile_weight_grad`` dW[k][j] = sum_p h[k][p] dz[j][p]. The thin first
and last layers: one output per thread (``output_layer``) and fixed-order warp shuffles
(``warp_sums``: their weight gradients and every bias gradient).
Arithmetic: float32, each output summed in a fixed order (products: k ascending, the bias after
the sum as x @ W + b adds it; weight gradients: points ascending in groups of 4), nvcc's fused
multiply-adds (the emulator compiles without): within float32 rounding of the layers, not bit for
bit, and the same bits on every run. Indices: int32 within a member, int64 across members.
Needs: H a multiple of 32 and at most 64 (the thread tiles), DIN and DOUT at most H
(``width_unsupported``); the shared memory the device gives a block (``fits_device``).
"""
from __future__ import annotations

import math

TP = 128          # points per tile = per block
THREADS = 256     # threads per block: 8 warps
PAD = 4           # floats after each activation row in shared memory
MAX_HIDDEN = 64

# Shared memory: Ws is H*H floats, then the bias (H floats); each activation tile is H rows of TP
# points with row stride TP + 4 floats (the 4 pad floats put row k + 1 four banks after row k, see
# tile_weight_grad below), so a warp's 32 lanes reading 4 consecutive points each make one 128-bit
# load of 512 contiguous bytes, without bank conflicts.
# The thread tiles of the two products (TJ = H / 8, TW = H / 16; per tile TP x H x H multiply-adds
# for a hidden layer):
# - tile_product: thread (lane, warp) owns points 4 lane .. 4 lane + 3 and outputs TJ warp ..
#   TJ warp + TJ - 1: per k one 128-bit load of its 4 points' in[k] (4 shared-memory wavefronts
#   for the warp) and TJ / 4 128-bit loads of M's row k (the same address for the whole warp: a
#   broadcast, 1 wavefront each), for 4 TJ multiply-adds (32 at H = 64: 4 x 8 accumulators in
#   registers); 6 wavefronts per 8 cycles of the SM's multiply-adds, so by this count (not a
#   measurement) the arithmetic, not shared memory, bounds it.
# - tile_weight_grad: thread owns k in {tk + 16 a} and j in {tj + 16 b} (a, b < TW: 4 x 4 at
#   H = 64); per 4 points one 128-bit load of each of its rows of h and of dz. tj = lane % 16, so
#   the 8 lanes of a quarter-warp read 8 rows of dz at the same points: with the row stride
#   TP + 4 they fall in 8 different groups of 4 banks (no conflict); the rows of h are the same
#   for 16 lanes (broadcast): 12 wavefronts per 16 cycles of multiply-adds.
# Ws is staged with row-major straight copies; the training backward reads the packed weights
# with every W transposed, so that it stages W^T with a copy too.
DEVICE_CODE = r"""
// DIN, HIDDEN, DEPTH, DOUT, ACT, EMB, TP, THREADS, STRIDE are #defines written above this code
// (kernels/_mlp_tiles.py's defines()). Packed layout of one member (floats), as kernels/mlp_eval.py
// packs it: W_0 (DIN, HIDDEN), b_0, DEPTH x [W (HIDDEN, HIDDEN), b], W_out (HIDDEN, DOUT), b_out;
// row-major. The training backward's copy has every W transposed in place (W_0^T (HIDDEN, DIN),
// ...), the biases as they are.
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
// forward saved them, 16-byte aligned), zero past N; 4 points per 128-bit load.
__device__ __forceinline__ void load_tile(float* T, const float* src, int rows, int valid) {
    for (int i = threadIdx.x; i < rows * TP / 4; i += THREADS) {
        const int k = i / (TP / 4), p = 4 * (i % (TP / 4));
        float4 v = reinterpret_cast<const float4*>(src)[i];
        if (p + 4 > valid) {                           // the last tile's edge
            v.x = p < valid ? v.x : 0.0f;
            v.y = p + 1 < valid ? v.y : 0.0f;
            v.z = p + 2 < valid ? v.z : 0.0f;
            v.w = 0.0f;
        }
        *reinterpret_cast<float4*>(T + k * STRIDE + p) = v;
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

// The hidden layers' activation as the reference computes it: ReLU x * (x > 0) (so -0.0 and nan
// come out as NumPy's do), or SiLU x * (1 / (1 + exp(-x))).
__device__ __forceinline__ float activation(float v) {
#if ACT == 0
    return v * (float)(v > 0.0f);
#else
    return v * (1.0f / (1.0f + expf(-v)));
#endif
}

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

// Linear_0 (no activation), then DEPTH x [Linear(HIDDEN, HIDDEN), activation], for the tile whose
// DIN input rows are in A; B is scratch, Ws is overwritten. Returns the buffer that holds h_DEPTH.
// With save (not null) every h_i is also written to save + i * HIDDEN * TP, 512 contiguous bytes
// per warp store.
__device__ __forceinline__ float* hidden_layers(float* A, float* B, float* Ws, const float* mine,
                                                float* save) {
    const int p0 = 4 * (threadIdx.x & 31), j0 = TJ * (threadIdx.x >> 5);
    float acc[4][TJ];
#pragma unroll 1
    for (int i = 0; i <= DEPTH; ++i) {
        stage(Ws, mine + layer_offset(i), (i == 0 ? DIN : HIDDEN) * HIDDEN, HIDDEN);
        __syncthreads();                               // Ws and A complete
        tile_product(A, Ws, i == 0 ? DIN : HIDDEN, acc);
#pragma unroll
        for (int j = 0; j < TJ; ++j) {
            const float b = Ws[HIDDEN * HIDDEN + j0 + j];  // the bias after the sum, as x @ W + b
            float4 v = make_float4(acc[0][j] + b, acc[1][j] + b, acc[2][j] + b, acc[3][j] + b);
            if (i > 0) v = make_float4(activation(v.x), activation(v.y), activation(v.z),
                                       activation(v.w));
            *reinterpret_cast<float4*>(B + (j0 + j) * STRIDE + p0) = v;
            if (save)
                *reinterpret_cast<float4*>(save + ((long long)i * HIDDEN + j0 + j) * TP + p0) = v;
        }
        __syncthreads();                               // B complete, Ws and A free
        float* t = A; A = B; B = t;
    }
    return A;
}

// y[row0 + p] = h[:, p] @ W_out + b_out for the tile's points p < valid; Ws is overwritten.
__device__ __forceinline__ void output_layer(const float* h, float* Ws, const float* mine, float* y,
                                             long long row0, int valid) {
    stage(Ws, mine + OFF_OUT, HIDDEN * DOUT, DOUT);
    __syncthreads();
    for (int o = threadIdx.x; o < DOUT * TP; o += THREADS) {
        const int p = o % TP, d = o / TP;
        float s = 0.0f;
#pragma unroll 8
        for (int k = 0; k < HIDDEN; ++k) s += h[k * STRIDE + p] * Ws[k * DOUT + d];
        if (p < valid) y[(row0 + p) * DOUT + d] = s + Ws[HIDDEN * HIDDEN + d];
    }
}
"""


def defines(spec) -> str:
    """The network's sizes as #defines for DEVICE_CODE (``spec``: kernels.mlp_eval.MLPSpec), so
    every loop bound is a compile-time constant."""
    values = {"DIN": spec.dim + spec.emb_dim, "HIDDEN": spec.hidden, "DEPTH": spec.depth,
              "DOUT": spec.dim, "ACT": {"relu": 0, "silu": 1}[spec.activation],
              "EMB": {"raw": 0, "fourier": 1}[spec.embedding], "TP": TP, "THREADS": THREADS,
              "STRIDE": TP + PAD}
    return "".join(f"#define {k} {v}\n" for k, v in values.items())


def shared_bytes(spec) -> int:
    """Dynamic shared memory of one block: a layer's weights and bias, two activation tiles."""
    H = spec.hidden
    return 4 * (H * H + H + 2 * H * (TP + PAD))


def width_unsupported(spec) -> str | None:
    """Why the tiles do not fit this network (None: they do), device limits aside."""
    H, din = spec.hidden, spec.dim + spec.emb_dim
    if H % 32 or H > MAX_HIDDEN:
        return f"hidden width {H}: the thread tiles need a multiple of 32, at most {MAX_HIDDEN}"
    if din > H or spec.dim > H:
        return f"{din} inputs or {spec.dim} outputs exceed the hidden width {H}"
    return None


def tiles(N: int) -> int:
    """NB: tiles of TP points per member."""
    return math.ceil(N / TP)


_OPTIN_LIMIT: dict = {}  # device id -> the most dynamic shared memory a block may ask for


def fits_device(spec) -> bool:
    """True when the current GPU gives a block the shared memory of ``shared_bytes(spec)``."""
    import cupy
    dev = cupy.cuda.Device()
    if dev.id not in _OPTIN_LIMIT:
        _OPTIN_LIMIT[dev.id] = dev.attributes["MaxSharedMemoryPerBlockOptin"]
    return shared_bytes(spec) <= _OPTIN_LIMIT[dev.id]


class ModuleCache:
    """module(spec): ``source(spec)`` compiled by CuPy (NVRTC) once per network shape and process,
    each kernel of ``names`` allowed ``shared_bytes(spec)`` of dynamic shared memory (above the
    default 48 KB it is an attribute of each compiled function, set once)."""

    def __init__(self, source, names):
        self.source, self.names, self.modules = source, tuple(names), {}

    def __call__(self, spec):
        mod = self.modules.get(spec)
        if mod is None:
            import cupy
            mod = cupy.RawModule(code=self.source(spec))
            nbytes = shared_bytes(spec)
            if nbytes > 48 * 1024:
                for name in self.names:
                    mod.get_function(name).max_dynamic_shared_size_bytes = nbytes
            self.modules[spec] = mod
        return mod
