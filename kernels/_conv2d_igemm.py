"""Convolution, version "igemm": implicit GEMM as CuPy raw kernels, float32, NCHW in and out.

# N batch, C/Cin input channels, Cout output channels, H W input size, Ho Wo output size,
# kh kw kernel size, K GEMM depth, M GEMM rows, s stride, p padding

The ladder's top rung. "cupy" (kernels/_conv2d_cupy.py) writes the im2col columns (M, K) to global
memory (151 MB at N 64, C 64, 32x32, 3x3) and hands them to cuBLAS; here each block gathers the
piece of the columns it needs straight from NCHW into shared memory, multiplies it there and
throws it away. Padding and stride are bounds checks in that gather, never a padded copy;
remainder tiles (M, Cout, K not multiples of the tile) load zeros and skip their stores.
- forward: y (M = N*Ho*Wo, Cout) = A (M, K = Cin*kh*kw) @ B + b, A[(n,h,v), (c,i,j)] =
  x[n, c, s*h - p + i, s*v - p + j], B[(c,i,j), o] = w[o, c, i, j]; bias added at the store.
- input gradient: the same kernel, ``conv_igemm``, gathering from dy (each dx value one GEMM row,
  one thread: no atomics); at s > 1, with PARITY_SPLIT (opt-in: not yet run on a GPU), by parity
  classes, none of whose taps multiplies a zero.
- weight gradient: dw (Cout, K) = dy^T (Cout, M) @ A (M, K) in ``conv_igemm_dw``, split-K over M
  with the splits summed in a fixed order (the same bits every run, unlike atomics), db fused.
Tiles (TILES): a block owns BM x BN outputs, each thread TM x TN of them in registers, the depth
double-buffered through shared memory; choose_tile / choose_tile_dw pick one per call. All
indices are int32: the entry point refuses arrays of 2^31 elements or more.
Testing without a GPU: the functions below take the compiled modules as an argument (``mods[tile]``
has ``get_function``) and allocate with their inputs' array module, so the same code launches
source(tile) through cupy.RawModule on CuPy arrays (the public entry points at the bottom) and
through tests/cuda_emu.EmulatedModule on NumPy arrays (tests/test_kernels_igemm.py). float32
only, as the GPU trains: "auto" picks igemm for float32 CuPy arrays, "cupy" for float64.
Timings: docs/notes/kernels-conv.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._conv2d_common import array_module, check_shapes, parity_classes


@dataclass(frozen=True)
class Tile:
    """One block-tile configuration of SOURCE: a block owns bm x bn outputs (GEMM rows x columns),
    walks the depth bk at a time, and each of its threads owns tm x tn of them."""
    bm: int
    bn: int
    bk: int
    tm: int
    tn: int
    sm_blocks: int     # blocks per SM the compiler must fit (__launch_bounds__): caps registers
    sm_blocks_dw: int  # the same for the weight gradient, which holds more (its gather's columns)

    @property
    def threads(self):
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def split_blocks(self):
        """Blocks a weight-gradient launch aims for: every SM of a 132-SM H100/H200 full."""
        return SMS * self.sm_blocks_dw


SMS = 132
# A thread owns rows 4*tx + 4*(BM/TM)*g + q of its block's tile (groups g of 4 consecutive rows),
# and columns likewise, so it reads shared memory as float4s (As and Bs depth-major, rows padded by
# 4 floats). "128" does 4 multiply-adds per shared word read; "128x64" is the 8 x 8 thread tile for
# 64-channel layers. sm_blocks are set so that ptxas (sm_90) spills nothing: "128"'s dw at 2
# blocks per SM would spill 84 bytes (register counts: docs/notes/kernels-conv.md).
TILES = {
    "64": Tile(64, 64, 16, 4, 4, sm_blocks=4, sm_blocks_dw=4),        # 256 threads, 4 x 4 each
    "128": Tile(128, 128, 16, 8, 8, sm_blocks=2, sm_blocks_dw=1),     # 256 threads, 8 x 8 each
    "128x64": Tile(128, 64, 16, 8, 8, sm_blocks=3, sm_blocks_dw=3),   # 128 threads, 8 x 8 each
}
PARITY_SPLIT = False  # the input gradient at stride > 1 by parity classes (backward_input):
# opt-in until a GPU runs it (emulator-tested only; benchmarks/gpu_check.sh pending times both)
TILE = "auto"  # or a key of TILES: force one tile for every call (to measure them one by one)
MIN_BLOCKS = 240  # a big tile only when its grid is at least about one full wave on a 132-SM H100/H200
SPLIT_MIN_STEPS = 16  # a weight-gradient split reduces at least 16 depth steps of 16 GEMM rows

SOURCE = r'''
// Set in front of this text by source(): the block tile BM x BN, the depth step BK, the thread tile
// TM x TN (both multiples of 4), THREADS = (BM / TM) * (BN / TN), and the blocks per SM the
// register allocation must allow, SM_BLOCKS (conv_igemm) and SM_BLOCKS_DW (conv_igemm_dw).
#define TX (BM / TM)   // threads along a tile's rows
#define TY (BN / TN)   // threads along its columns
#define PAD 4          // shared rows padded by one float4: rows stay 16-byte aligned

static_assert(THREADS == TX * TY && TM % 4 == 0 && TN % 4 == 0, "thread tile of float4 groups");
static_assert(THREADS % BM == 0 && THREADS % BK == 0 && (BK * BN) % THREADS == 0, "staging layout");
#define A_STEP (THREADS / BM)          // the gathered tile: a thread loads 1 row, every A_STEP-th depth
#define A_LOADS (BK / A_STEP)
#define B_STEP (THREADS / BK)          // the dense tile: a thread loads 1 depth, every B_STEP-th column
#define B_LOADS (BN / B_STEP)
#define X_LOADS (BM / B_STEP)          // the weight gradient's gathered tile, laid out like B

__device__ __forceinline__ void load4(float* dst, const float* src) {
    const float4 v = *reinterpret_cast<const float4*>(src);
    dst[0] = v.x; dst[1] = v.y; dst[2] = v.z; dst[3] = v.w;
}

// One depth step of the register tile: acc[TM][TN] += As[kk][rows] * Bs[kk][columns], kk < BK.
// Thread (tx, ty) owns rows 4*tx + 4*TX*g + q and columns 4*ty + 4*TY*g + q (g a float4 group,
// q = 0..3): its rows are read as TM/4 float4, and a warp's 16 tx read 64 consecutive words.
__device__ __forceinline__ void tile_step(const float (*As)[BM + PAD], const float (*Bs)[BN + PAD],
                                          int tx, int ty, float (*acc)[TN]) {
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
        float a[TM], b[TN];
#pragma unroll
        for (int g = 0; g < TM / 4; ++g) load4(a + 4 * g, &As[kk][4 * tx + 4 * TX * g]);
#pragma unroll
        for (int g = 0; g < TN / 4; ++g) load4(b + 4 * g, &Bs[kk][4 * ty + 4 * TY * g]);
#pragma unroll
        for (int qa = 0; qa < TM; ++qa)
#pragma unroll
            for (int qb = 0; qb < TN; ++qb) acc[qa][qb] += a[qa] * b[qb];
    }
}

// Forward (src = x) and input gradient (src = dy) as one implicit GEMM:
//   out[n, col, hd, wd] = sum_k A[(n, hd, wd), k] * B[k, col] (+ bias[col])
//   A[(n, hd, wd), (cs, i, j)] = src[n, cs, hs / div, ws / div], hs = hd*mul + add_h + sgn*i
//                                (ws likewise with wd, add_w, j), zero unless hs, ws are multiples
//                                of div and land inside src
//   B[(cs, i, j), col] = wt[cs*w_step_k + col*w_step_col + i*kw + j]
// Double-buffered: the slice k0 + BK is loaded from global memory into registers while the tile
// multiplies slice k0 from shared memory, then stored into the other buffer; one barrier a step.
extern "C" __global__ void __launch_bounds__(THREADS, SM_BLOCKS) conv_igemm(
        const float* __restrict__ src, const float* __restrict__ wt,
        const float* __restrict__ bias, float* __restrict__ out,
        int N, int Cs, int Hs, int Ws, int Cd, int Hd, int Wd, int kh, int kw,
        int mul, int add_h, int add_w, int sgn, int div, int w_step_k, int w_step_col, int has_bias) {
    __align__(16) __shared__ float As[2][BK][BM + PAD];
    __align__(16) __shared__ float Bs[2][BK][BN + PAD];
    const int t = threadIdx.x, tx = t % TX, ty = t / TX;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int M = N * Hd * Wd, khw = kh * kw, K = Cs * khw;

    // The A row this thread gathers (the same row at every depth step): decoded once.
    const int a_row = t % BM, a_k = t / BM;  // loads A[a_row, a_k + A_STEP r], r < A_LOADS
    const int m = m0 + a_row;
    const bool m_ok = m < M;
    const int mm = m_ok ? m : 0;
    const int img = mm / (Hd * Wd), hd = (mm / Wd) % Hd, wd = mm % Wd;
    const float* src_img = src + (long long)img * Cs * Hs * Ws;
    const int h_base = hd * mul + add_h, w_base = wd * mul + add_w;
    const int b_k = t % BK, b_col = t / BK;  // loads B[b_k, b_col + B_STEP r], r < B_LOADS

    float a_next[A_LOADS], b_next[B_LOADS];
    const auto load_slice = [&](int k0) {
        // A, the gather: consecutive threads take consecutive output pixels. The depth's
        // (cs, i, j) is divided out once per slice, then carried along by A_STEP.
        int k = k0 + a_k, cs = k / khw, i = (k - cs * khw) / kw, j = k - cs * khw - i * kw;
#pragma unroll
        for (int r = 0; r < A_LOADS; ++r, k += A_STEP) {
            float v = 0.0f;
            if (m_ok && k < K) {
                int hs = h_base + sgn * i, ws = w_base + sgn * j;
                bool ok = hs >= 0 && ws >= 0;
                if (div > 1) {  // input gradient at stride div: only taps that hit a dy pixel
                    ok = ok && hs % div == 0 && ws % div == 0;
                    hs /= div;
                    ws /= div;
                }
                if (ok && hs < Hs && ws < Ws) v = src_img[((long long)cs * Hs + hs) * Ws + ws];
            }
            a_next[r] = v;
            for (j += A_STEP; j >= kw; j -= kw) ++i;
            for (; i >= kh; i -= kh) ++cs;
        }
        // B, the weights: consecutive threads take consecutive k.
        const int kb = k0 + b_k, cb = kb / khw;
        const float* wt_k = wt + cb * w_step_k + (kb - cb * khw);
#pragma unroll
        for (int r = 0; r < B_LOADS; ++r) {
            const int col = n0 + b_col + B_STEP * r;
            b_next[r] = (col < Cd && kb < K) ? wt_k[col * w_step_col] : 0.0f;
        }
    };

    float acc[TM][TN] = {};
    load_slice(0);
    for (int k0 = 0, buf = 0; k0 < K; k0 += BK, buf ^= 1) {
#pragma unroll
        for (int r = 0; r < A_LOADS; ++r) As[buf][a_k + A_STEP * r][a_row] = a_next[r];
#pragma unroll
        for (int r = 0; r < B_LOADS; ++r) Bs[buf][b_k][b_col + B_STEP * r] = b_next[r];
        __syncthreads();  // buf is full; and everyone is done with buf ^ 1, read one step ago
        if (k0 + BK < K) load_slice(k0 + BK);  // in flight while the tile multiplies
        tile_step(As[buf], Bs[buf], tx, ty, acc);
    }

    // Epilogue: bias, NCHW store. A thread's 4 rows of a group are 4 consecutive pixels: one
    // float4 store when they lie in one image and the plane size keeps it 16-byte aligned.
    const int HWd = Hd * Wd;
#pragma unroll
    for (int g = 0; g < TM / 4; ++g) {
        const int row = m0 + 4 * tx + 4 * TX * g;
        if (row >= M) continue;
        const int o_img = row / HWd, o_pix = row - o_img * HWd;
        const bool whole = HWd % 4 == 0 && row + 3 < M;
#pragma unroll
        for (int qb = 0; qb < TN; ++qb) {
            const int col = n0 + 4 * ty + 4 * TY * (qb / 4) + qb % 4;
            if (col >= Cd) continue;
            const float bb = has_bias ? bias[col] : 0.0f;
            if (whole) {
                *reinterpret_cast<float4*>(out + ((long long)o_img * Cd + col) * HWd + o_pix) =
                    make_float4(acc[4 * g][qb] + bb, acc[4 * g + 1][qb] + bb,
                                acc[4 * g + 2][qb] + bb, acc[4 * g + 3][qb] + bb);
            } else {  // the last rows of M, or planes of odd size: one pixel at a time
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    if (row + q >= M) continue;
                    const int n = (row + q) / HWd, pix = row + q - n * HWd;
                    out[((long long)n * Cd + col) * HWd + pix] = acc[4 * g + q][qb] + bb;
                }
            }
        }
    }
}

// Weight and bias gradients, split-K: block (bx, by, split) computes the partial
//   dw[o, k] = sum_{m in its split} A[m, k] * dy[m, o],   db[o] = sum_{m in its split} dy[m, o]
// for k in the BM tile rows of bx and o in the BN tile columns of by (the long axis K on the
// tile's long side), A the forward's gather from x, and writes them to ws[split, o*K + k] and
// (bx == 0 only) ws[split, Cout*K + o]. The depth is the pixels m, BK at a time, double-buffered.
extern "C" __global__ void __launch_bounds__(THREADS, SM_BLOCKS_DW) conv_igemm_dw(
        const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
        int N, int C, int H, int W, int Cout, int Ho, int Wo, int kh, int kw,
        int stride, int pad, int rows_per_split) {
    __align__(16) __shared__ float Xs[2][BK][BM + PAD];  // A tile: BK pixels x BM depths (c, i, j)
    __align__(16) __shared__ float Ds[2][BK][BN + PAD];  // dy tile: BK pixels x BN output channels
    __shared__ int col_off[BM], col_i[BM], col_j[BM];    // the block's BM depths, decoded once
    const int t = threadIdx.x, tx = t % TX, ty = t / TX;
    const int k0 = blockIdx.x * BM, o0 = blockIdx.y * BN;
    const int HWo = Ho * Wo, M = N * HWo, khw = kh * kw, K = C * khw;
    const int m_begin = blockIdx.z * rows_per_split;
    const int m_end = min(M, m_begin + rows_per_split);
    const int E = Cout * K + Cout;  // one split's share of the workspace

    for (int c = t; c < BM; c += THREADS) {
        const int k = k0 + c, ch = k / khw, tap = k - ch * khw;
        col_i[c] = k < K ? tap / kw : -(1 << 20);  // a depth past K: a row far outside x, so zero
        col_j[c] = tap % kw;
        col_off[c] = ch * H * W;
    }
    __syncthreads();

    const int l_row = t % BK, l_col = t / BK;  // loads pixel l_row, columns l_col + B_STEP r
    float x_next[X_LOADS], d_next[B_LOADS];
    const auto load_slice = [&](int mb) {
        const int m = mb + l_row;
        const bool m_ok = m < m_end;
        const int mm = m_ok ? m : 0;
        const int img = mm / HWo, pix = mm - img * HWo, h = pix / Wo, v = pix - h * Wo;
#pragma unroll
        for (int r = 0; r < B_LOADS; ++r) {  // dy tile: consecutive threads, consecutive pixels
            const int o = o0 + l_col + B_STEP * r;
            d_next[r] = (m_ok && o < Cout) ? dy[((long long)img * Cout + o) * HWo + pix] : 0.0f;
        }
        const float* x_img = x + (long long)img * C * H * W;
#pragma unroll
        for (int r = 0; r < X_LOADS; ++r) {  // the gather, as in the forward
            const int c = l_col + B_STEP * r;
            const int hh = stride * h - pad + col_i[c], vv = stride * v - pad + col_j[c];
            const bool ok = m_ok && hh >= 0 && hh < H && vv >= 0 && vv < W;
            x_next[r] = ok ? x_img[col_off[c] + hh * W + vv] : 0.0f;
        }
    };

    float acc[TM][TN] = {}, db_part[B_LOADS] = {};
    const bool sums_db = blockIdx.x == 0;  // the first k tile's blocks also sum the dy they stage
    load_slice(m_begin);
    for (int mb = m_begin, buf = 0; mb < m_end; mb += BK, buf ^= 1) {
#pragma unroll
        for (int r = 0; r < X_LOADS; ++r) Xs[buf][l_row][l_col + B_STEP * r] = x_next[r];
#pragma unroll
        for (int r = 0; r < B_LOADS; ++r) {
            Ds[buf][l_row][l_col + B_STEP * r] = d_next[r];
            if (sums_db) db_part[r] += d_next[r];
        }
        __syncthreads();
        if (mb + BK < m_end) load_slice(mb + BK);
        tile_step(Xs[buf], Ds[buf], tx, ty, acc);
    }
    float* part = ws + (long long)blockIdx.z * E;
#pragma unroll
    for (int qb = 0; qb < TN; ++qb) {
        const int o = o0 + 4 * ty + 4 * TY * (qb / 4) + qb % 4;
        if (o >= Cout) continue;
#pragma unroll
        for (int qa = 0; qa < TM; ++qa) {  // consecutive tx: consecutive float4 groups of k
            const int k = k0 + 4 * tx + 4 * TX * (qa / 4) + qa % 4;
            if (k < K) part[(long long)o * K + k] = acc[qa][qb];
        }
    }
    if (sums_db) {  // db: the BK partial sums of each channel (one per l_row), added in row order
        __syncthreads();  // everyone is done reading Ds
#pragma unroll
        for (int r = 0; r < B_LOADS; ++r) Ds[0][l_row][l_col + B_STEP * r] = db_part[r];
        __syncthreads();
        for (int c = t; c < BN && o0 + c < Cout; c += THREADS) {
            float s = 0.0f;
            for (int kk = 0; kk < BK; ++kk) s += Ds[0][kk][c];
            part[Cout * K + o0 + c] = s;
        }
    }
}

// out[e] = sum over splits of ws[split, e], in split order (deterministic).
extern "C" __global__ void sum_splits(const float* __restrict__ ws, float* __restrict__ out,
                                      int E, int splits) {
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= E) return;
    float s = 0.0f;
    for (int q = 0; q < splits; ++q) s += ws[(long long)q * E + e];
    out[e] = s;
}
'''


def source(tile):
    """SOURCE for the tile named ``tile`` (a key of TILES): its constants defined in front."""
    t = TILES[tile]
    return (f"#define BM {t.bm}\n#define BN {t.bn}\n#define BK {t.bk}\n#define TM {t.tm}\n"
            f"#define TN {t.tn}\n#define THREADS {t.threads}\n#define SM_BLOCKS {t.sm_blocks}\n"
            f"#define SM_BLOCKS_DW {t.sm_blocks_dw}\n" + SOURCE)


def choose_tile(rows, cols):
    """The tile for an output GEMM of rows x cols (forward: M x Cout, input gradient: M x Cin).
    The 8 x 8 tiles do twice the multiply-adds per shared load of the 4 x 4 one and gather each
    input value for twice as many columns, but a block covers 4x (or 2x) the outputs: they are
    taken only when their grid still fills the GPU (MIN_BLOCKS, about one wave of 2 blocks on
    each of 132 SMs); 128 x 128 where there are more than 64 columns, 128 x 64 otherwise so
    that a 64-channel layer does not pay for 64 empty columns. TILE, if not "auto", wins.
    For the UNet at batch 128: 64 channels at 32x32 -> "128x64" (1024 blocks), 128 at 16x16 ->
    "128" (256), 128 at 8x8 -> "64". The rule is reasoned, not tuned."""
    if TILE != "auto":
        return TILE
    big = "128" if cols > 64 else "128x64"
    t = TILES[big]
    return big if math.ceil(rows / t.bm) * math.ceil(cols / t.bn) >= MIN_BLOCKS else "64"


def choose_tile_dw(K, Cout):
    """The tile for the weight gradient (K = Cin*kh*kw tile rows x Cout tile columns). Split-K
    fills the GPU whatever the tile, so only the fit counts: 128 rows of K unless K <= 64, and
    128 columns for more than 64 output channels."""
    if TILE != "auto":
        return TILE
    if K <= 64:
        return "64"
    return "128" if Cout > 64 else "128x64"


_INT32_MAX = 2 ** 31 - 1
_i32 = np.int32


def _float32(xp, a, name):
    if a.dtype != np.float32:
        raise TypeError(f'impl="igemm" is float32 only ({name} is {a.dtype}); use impl="cupy" for float64')
    return xp.ascontiguousarray(a)


def _check_int32(*sizes):
    if max(sizes) > _INT32_MAX:
        raise ValueError('impl="igemm" indexes with int32: arrays must have fewer than 2^31 elements')


def _conv_igemm(mods, src, wt, bias, out, kh, kw, mul, add_h, add_w, sgn, div, w_step_k,
                w_step_col, tile):
    """One conv_igemm launch (SOURCE's comment has the GEMM): out (N,Cd,Hd,Wd) from src
    (N,Cs,Hs,Ws) and the weights wt over taps (i, j) < (kh, kw); out row hd reads src row
    (hd*mul + add_h + sgn*i) / div where the division is exact and lands inside src (columns
    likewise with add_w); bias None or (Cd,). The tile: ``tile``, else choose_tile.
    (mul, add, sgn, div) = (s, -p, +1, 1) forward, (1, p, -1, s) for dx in one gather, (1, q, -1,
    1) for a parity class, whose q can differ between rows and columns (hence add_h, add_w)."""
    N, Cs, Hs, Ws = src.shape
    _, Cd, Hd, Wd = out.shape
    M = N * Hd * Wd
    tile = tile or choose_tile(M, Cd)
    t = TILES[tile]
    grid = (math.ceil(M / t.bm), math.ceil(Cd / t.bn))
    mods[tile].get_function("conv_igemm")(grid, (t.threads,), (
        src, wt, wt if bias is None else bias, out,  # any float array for an unused bias
        _i32(N), _i32(Cs), _i32(Hs), _i32(Ws), _i32(Cd), _i32(Hd), _i32(Wd), _i32(kh), _i32(kw),
        _i32(mul), _i32(add_h), _i32(add_w), _i32(sgn), _i32(div), _i32(w_step_k),
        _i32(w_step_col), _i32(bias is not None)))


def forward(mods, x, w, b=None, stride=1, padding=0, tile=None):
    """x (N,Cin,H,W), w (Cout,Cin,kh,kw), b (Cout,) or None -> y (N,Cout,Ho,Wo), float32.
    ``mods[name]`` is source(name) compiled: a cupy.RawModule, or tests' EmulatedModule;
    ``tile`` (a key of TILES) overrides choose_tile."""
    xp = array_module(x)
    N, C, H, W = x.shape
    Cout, _, kh, kw = w.shape
    Ho, Wo = check_shapes(x.shape, w.shape, stride, padding)
    x, w = _float32(xp, x, "x"), _float32(xp, w, "w")
    b = None if b is None else _float32(xp, b, "b")
    _check_int32(x.size, N * Cout * Ho * Wo)
    y = xp.empty((N, Cout, Ho, Wo), dtype=np.float32)  # N,Cout,Ho,Wo
    # row of x read by output row h at tap i: s*h - p + i (mul s, add -p, sgn +1, div 1); the
    # depth runs over (c, i, j): w[o, c, i, j] = w[o*Cin*kh*kw + c*kh*kw + i*kw + j]
    _conv_igemm(mods, x, w, b, y, kh, kw, stride, -padding, -padding, 1, 1, kh * kw,
                C * kh * kw, tile)
    return y


def _dx_launch(mods, dy, w, dx, add_h, add_w, div, tile):
    """One launch of an input gradient: dx (N,Cin,Hd,Wd) gathered from dy (N,Cout,Ho,Wo) over
    every tap (i, j) of w (Cout,Cin,kh,kw): dx row hd reads dy row (hd + add_h - i) / div where
    the division is exact and lands inside dy, else zero (columns likewise with add_w). The
    depth runs over (o, i, j): w[o, c, i, j] = w[o*Cin*kh*kw + c*kh*kw + i*kw + j]."""
    C, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    _conv_igemm(mods, dy, w, None, dx, kh, kw, 1, add_h, add_w, -1, div, C * kh * kw, kh * kw,
                tile)


def backward_input(mods, dy, w, x_shape, stride=1, padding=0, tile=None, parity_split=None):
    """dy (N,Cout,Ho,Wo), w (Cout,Cin,kh,kw) -> dx (N,Cin,H,W), float32. At stride s > 1, by
    parity classes (PARITY_SPLIT, which ``parity_split`` overrides, for tests and benchmarks):
    s*s stride-1 gathers with sub-kernels, none of whose taps multiplies a zero.
    The gather form of the transposed convolution: at stride 1 it is the convolution of dy with
    the flipped, transposed kernel; at stride s one gather over every tap lets only 1/s^2 of them
    pass its divisibility test (3/4 of the work of the UNet's stride-2 downsampling multiplies
    zeros). The split costs s*s launches, s*s small weight copies and s*s strided copies of dx."""
    xp = array_module(dy)
    N, C, H, W = x_shape
    Cout, _, kh, kw = w.shape
    Ho, Wo = check_shapes(x_shape, w.shape, stride, padding)
    dy, w = _float32(xp, dy, "dy"), _float32(xp, w, "w")
    _check_int32(dy.size, N * C * H * W)
    dx = xp.empty((N, C, H, W), dtype=np.float32)  # N,Cin,H,W
    split = PARITY_SPLIT if parity_split is None else parity_split
    if stride == 1 or not split:  # dx row hh reads dy row (hh + p - i) / s at tap i, when exact
        _dx_launch(mods, dy, w, dx, padding, padding, stride, tile)
        return dx
    # dx[.., s*alpha + rh, s*beta + rw] reads dy[.., alpha + qh - t, beta + qw - u] at the
    # sub-tap (t, u) = tap (ih + s*t, iw + s*u) (kernels/_conv2d_common.parity_classes)
    for rh, ih, th, qh, nh in parity_classes(kh, H, Ho, stride, padding):
        for rw, iw, tw, qw, nw in parity_classes(kw, W, Wo, stride, padding):
            if nh == 0 or nw == 0:  # an input smaller than the stride: no pixel in the class
                continue
            if th == 0 or tw == 0:  # a kernel smaller than the stride: no tap reaches them
                dx[:, :, rh::stride, rw::stride] = 0
                continue
            w_sub = xp.ascontiguousarray(w[:, :, ih::stride, iw::stride])  # Cout,Cin,th,tw
            dx_sub = xp.empty((N, C, nh, nw), dtype=np.float32)  # N,Cin,nh,nw
            _dx_launch(mods, dy, w_sub, dx_sub, qh, qw, 1, tile)
            dx[:, :, rh::stride, rw::stride] = dx_sub
    return dx


def split_rows(M, Cout, K, tile="64"):
    """Rows of M per weight-gradient split: enough splits to give the GPU about the tile's
    split_blocks blocks, none shorter than SPLIT_MIN_STEPS depth steps."""
    t = TILES[tile]
    tiles = math.ceil(K / t.bm) * math.ceil(Cout / t.bn)
    steps = math.ceil(M / t.bk)
    splits = max(1, min(math.ceil(t.split_blocks / tiles), steps // SPLIT_MIN_STEPS))
    return math.ceil(steps / splits) * t.bk


def backward_weight(mods, dy, x, w_shape, stride=1, padding=0, rows_per_split=None, tile=None):
    """dy (N,Cout,Ho,Wo), x (N,Cin,H,W) -> (dw (Cout,Cin,kh,kw), db (Cout,)), float32.
    ``rows_per_split`` (a multiple of the tile's bk) overrides split_rows, for tests.
    Split-K: Cout/64 x K/64 output tiles are only 9 blocks at C 64, 3x3 (an H100 has 132 SMs), so
    M is cut into splits, each block writes its partial tile to a small workspace (splits,
    Cout*K + Cout), and sum_splits adds the splits in a fixed order. db: the blocks of the first
    K tile also sum the dy tile they hold in shared memory into it."""
    xp = array_module(dy)
    Cout, C, kh, kw = w_shape
    N, _, H, W = x.shape
    Ho, Wo = check_shapes(x.shape, w_shape, stride, padding)
    dy, x = _float32(xp, dy, "dy"), _float32(xp, x, "x")
    M, K = N * Ho * Wo, C * kh * kw
    tile = tile or choose_tile_dw(K, Cout)
    t = TILES[tile]
    rows = rows_per_split or split_rows(M, Cout, K, tile)
    if rows % t.bk:
        raise ValueError(f"rows_per_split must be a multiple of {t.bk}, got {rows}")
    splits = math.ceil(M / rows)
    E = Cout * K + Cout  # dw, then db
    _check_int32(x.size, dy.size, splits * E)
    ws = xp.empty((splits, E), dtype=np.float32)  # splits,Cout*K+Cout: every entry written
    grid = (math.ceil(K / t.bm), math.ceil(Cout / t.bn), splits)
    mods[tile].get_function("conv_igemm_dw")(grid, (t.threads,), (
        dy, x, ws, _i32(N), _i32(C), _i32(H), _i32(W), _i32(Cout), _i32(Ho), _i32(Wo),
        _i32(kh), _i32(kw), _i32(stride), _i32(padding), _i32(rows)))
    out = xp.empty(E, dtype=np.float32)  # Cout*K + Cout
    mods[tile].get_function("sum_splits")((math.ceil(E / 256),), (256,), (ws, out, _i32(E), _i32(splits)))
    return out[:Cout * K].reshape(w_shape), out[Cout * K:]


# ------------------------------------------------------------------------------------------------
# Public entry points (CuPy arrays): each tile's module is compiled once, on first use
# ------------------------------------------------------------------------------------------------

class _Modules(dict):
    """source(name) compiled by CuPy (NVRTC) on first use, once per process."""

    def __missing__(self, name):
        import cupy
        self[name] = cupy.RawModule(code=source(name))
        return self[name]


MODULES = _Modules()


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    return forward(MODULES, x, w, b, stride, padding)


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0):
    return backward_input(MODULES, dy, w, x_shape, stride, padding)


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0):
    return backward_weight(MODULES, dy, x, w_shape, stride, padding)
