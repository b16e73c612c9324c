"""Convolution, version "igemm": implicit GEMM as CuPy raw kernels, float32, NCHW in and out.

# N batch, C/Cin input channels, Cout output channels, H W input size, Ho Wo output size,
# kh kw kernel size, K GEMM depth, M GEMM rows, s stride, p padding

"cupy" (kernels/_conv2d_cupy.py) writes the im2col columns (M, K) to global memory and hands
them to cuBLAS: at N 64, C 64, 32x32, 3x3 that buffer is 151 MB written and read again per
product. Here the same GEMM runs without it: each block gathers the piece of the column matrix
it needs straight from the NCHW input into shared memory, multiplies it there, and throws it
away. One kernel, ``conv_igemm``, computes the forward and the input gradient; a second,
``conv_igemm_dw``, the weight and bias gradients.

The GEMM views (A gathered on the fly, B the weights in their own layout, no copies):

- forward: y (M = N*Ho*Wo rows, Cout columns) = A (M, K = Cin*kh*kw) @ B (K, Cout) + b, with
  A[(n,h,v), (c,i,j)] = x[n, c, s*h - p + i, s*v - p + j] (zero outside x) and
  B[(c,i,j), o] = w[o, c, i, j]; the bias is added in the epilogue, as each value is stored.
- input gradient: dx (M = N*H*W rows, Cin columns) = A' (M, K = Cout*kh*kw) @ B' with
  A'[(n,hh,vv), (o,i,j)] = dy[n, o, (hh + p - i)/s, (vv + p - j)/s] where the division is exact
  and lands inside dy, else zero; B'[(o,i,j), c] = w[o, c, i, j]. This is the gather form of
  the transposed convolution: every dx value is one GEMM row, written by one thread, so there
  are no atomics at any stride. At stride 1 it is the convolution of dy with the flipped,
  transposed kernel (every tap counts); at stride s only 1/s^2 of the taps pass the divisibility
  test and the rest multiply zeros (for the stride-2 convolutions of a UNet's downsampling that
  waste is 3/4 of one cheap layer; splitting dx by the parity of (hh, vv) would remove it).
  One kernel serves both: the row an output row reads at tap i is (out*mul + add + sgn*i)/div,
  with (mul, add, sgn, div) = (s, -p, +1, 1) forward and (1, p, -1, s) for dx, and the weight
  index is (k // kh*kw)*w_step_k + col*w_step_col + k % (kh*kw).
- weight gradient: dw (Cout rows, K = Cin*kh*kw columns) = dy^T (Cout, M) @ A (M, K), the
  reduction over the long axis M = N*Ho*Wo. Split-K over blocks: a launch of Cout/64 x K/64
  output tiles is only 9 blocks at C 64 (an H100 has 132 SMs), so M is cut into `splits`
  ranges, each block writes its partial tile to a workspace (splits, Cout*K + Cout), and a
  second small kernel sums the splits in a fixed order. Chosen over atomicAdd: the result is the
  same bit for bit on every run (atomics add in arrival order), and the workspace is small
  (splits * (Cout*K + Cout) floats, 8.7 MB at the benchmark shape). db is fused: the blocks of
  the first K tile also sum the dy tile they already hold in shared memory into the same
  workspace.

Tiles (one set for all three GEMMs; constants in SOURCE): a block of 256 threads owns a 64 x 64
tile of the output and walks the depth in steps of BK = 16. Per step it stages A (64 x 16) and
B (16 x 64) in shared memory (4 values per thread each, loaded so that consecutive threads read
consecutive addresses: consecutive output pixels for A, consecutive k for B), then every thread
accumulates a 4 x 4 register tile from them: rows tx + 16a, columns ty + 16b (strided, so the
16 threads of a half-warp read 16 consecutive shared words and store 16 consecutive output
pixels). Per output value and depth step a thread does 1 multiply-add for 0.5 shared loads; each
global value staged is reused 64 times from shared memory. B's shared tile has 2 words of
padding per row so that the transposing store hits 32 different banks. Padding and stride are
bounds checks in the gather (a masked load of zero), never a padded copy; remainder tiles (M,
Cout, K not multiples of 64 or 16) load zeros and skip their stores. No double buffering and no
vector loads: the simple form first, to be measured before it is made harder to read. All
indices are int32: the entry point refuses arrays of 2^31 elements or more.

Run time, measured once on an NVIDIA H200 (CuPy 14.2, CUDA events, median of 20 calls each;
PyTorch 2.11 cuDNN with TF32 off), fwd + dx + dw in ms, float32, N 64:

    shape                    cupy (im2col+cuBLAS)   igemm   torch cuDNN
    C 64, 32x32, 3x3 s1      3.34                   1.24    0.69
    C 64, 16x16, 3x3 s1      0.80                   0.40    0.22
    C 128, 16x16, 3x3 s1     1.43                   1.21    0.51
    C 64, 32x32, 3x3 s2      0.82                   0.76    0.33   (dx 0.51: the 3/4 wasted taps)
    C 64, 32x32, 1x1         1.24                   0.22    0.23

So igemm is 1.2x to 5.7x faster than "cupy" (the split-K weight gradient gains most: 0.35 ms
against cuBLAS's 2.0 at the first shape) but still 1.8x cuDNN at the first shape (goal: 1.3x);
its forward at C 128 is 15% slower than cuBLAS's. Next steps, in order of expected gain: a
128-row tile with 8x8 per thread, double-buffered shared tiles, the parity split for strided
dx. A second H200 run, of benchmarks/bench_conv.py --device gpu --repeats 9 (wall clock per call,
host time included, as the issue's table measured), gave 1.26 ms for igemm, 3.41 for "cupy" and
1.25 for torch at the first shape: by wall clock igemm ties PyTorch, whose autograd call is
bound by host time there; by GPU time alone (the table above) cuDNN is still 1.8x faster.
``impl="auto"`` picks igemm for float32 CuPy arrays since, and "cupy" for float64.

Testing without a GPU: the functions below take the compiled module as an argument (anything
with ``get_function``) and allocate with the array module of their inputs, so the same code
launches SOURCE through cupy.RawModule on CuPy arrays (the public entry points at the bottom)
and through tests/cuda_emu.EmulatedModule on NumPy arrays (tests/test_kernels_igemm.py).
float32 only, as the GPU trains; "cupy" covers float64.
"""
from __future__ import annotations

import math

import numpy as np

from ._conv2d_common import array_module, check_shapes

BM, BN, BK = 64, 64, 16  # block tile (rows x columns) and depth step; must match SOURCE
THREADS = 256  # 16 x 16 threads, each a 4 x 4 register tile
SPLIT_MIN_STEPS = 16  # a weight-gradient split reduces at least 16 * BK = 256 GEMM rows
SPLIT_TARGET_BLOCKS = 528  # about 4 blocks per SM on a 132-SM H100: enough to fill it, no more

SOURCE = r'''
#define BM 64
#define BN 64
#define BK 16
#define PAD 2  // shared rows stored across a warp's threads are padded: 32 banks, no conflict

// Forward (src = x) and input gradient (src = dy) as one implicit GEMM:
//   out[n, col, hd, wd] = sum_k A[(n, hd, wd), k] * B[k, col] (+ bias[col])
//   A[(n, hd, wd), (cs, i, j)] = src[n, cs, hs / div, ws / div], hs = hd*mul + add + sgn*i
//                                (ws likewise with wd, j), zero unless hs, ws are multiples
//                                of div and land inside src
//   B[(cs, i, j), col] = wt[cs*w_step_k + col*w_step_col + i*kw + j]
// 256 threads; thread (tx, ty) = (t % 16, t / 16) owns rows m0 + tx + 16a, columns n0 + ty + 16b.
extern "C" __global__ void __launch_bounds__(256) conv_igemm(
        const float* __restrict__ src, const float* __restrict__ wt,
        const float* __restrict__ bias, float* __restrict__ out,
        int N, int Cs, int Hs, int Ws, int Cd, int Hd, int Wd, int kh, int kw,
        int mul, int add, int sgn, int div, int w_step_k, int w_step_col, int has_bias) {
    __shared__ float As[BK][BM];
    __shared__ float Bs[BK][BN + PAD];
    const int t = threadIdx.x, tx = t % 16, ty = t / 16;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int M = N * Hd * Wd, khw = kh * kw, K = Cs * khw;

    // The A row this thread gathers (the same row at every depth step): decoded once.
    const int a_row = t % BM, a_k = t / BM;  // loads A[a_row, a_k + 4r], r = 0..3
    const int m = m0 + a_row;
    const bool m_ok = m < M;
    const int mm = m_ok ? m : 0;
    const int img = mm / (Hd * Wd), hd = (mm / Wd) % Hd, wd = mm % Wd;
    const float* src_img = src + (long long)img * Cs * Hs * Ws;
    const int h_base = hd * mul + add, w_base = wd * mul + add;
    const int b_k = t % BK, b_col = t / BK;  // loads B[b_k, b_col + 16r], r = 0..3

    float acc[4][4] = {};
    for (int k0 = 0; k0 < K; k0 += BK) {
        // Stage A: the gather. Consecutive threads take consecutive output pixels.
        for (int r = 0; r < 4; ++r) {
            const int kk = a_k + 4 * r, k = k0 + kk;
            float v = 0.0f;
            if (m_ok && k < K) {
                const int cs = k / khw, tap = k - cs * khw, i = tap / kw, j = tap - i * kw;
                int hs = h_base + sgn * i, ws = w_base + sgn * j;
                bool ok = hs >= 0 && ws >= 0;
                if (div > 1) {  // input gradient at stride div: only taps that hit a dy pixel
                    ok = ok && hs % div == 0 && ws % div == 0;
                    hs /= div;
                    ws /= div;
                }
                if (ok && hs < Hs && ws < Ws) v = src_img[((long long)cs * Hs + hs) * Ws + ws];
            }
            As[kk][a_row] = v;
        }
        // Stage B: the weights. Consecutive threads take consecutive k.
        for (int r = 0; r < 4; ++r) {
            const int col = n0 + b_col + 16 * r, k = k0 + b_k;
            float v = 0.0f;
            if (col < Cd && k < K) {
                const int cs = k / khw;
                v = wt[cs * w_step_k + col * w_step_col + (k - cs * khw)];
            }
            Bs[b_k][b_col + 16 * r] = v;
        }
        __syncthreads();
        // The 4 x 4 register tile: 16 multiply-adds per 8 shared loads, per depth step.
        for (int kk = 0; kk < BK; ++kk) {
            float a[4], b[4];
            for (int q = 0; q < 4; ++q) a[q] = As[kk][tx + 16 * q];
            for (int q = 0; q < 4; ++q) b[q] = Bs[kk][ty + 16 * q];
            for (int qa = 0; qa < 4; ++qa)
                for (int qb = 0; qb < 4; ++qb) acc[qa][qb] += a[qa] * b[qb];
        }
        __syncthreads();  // before the next step overwrites the tiles
    }
    // Epilogue: bias, NCHW store (consecutive tx: consecutive pixels of one channel).
    const int HWd = Hd * Wd;
    for (int qa = 0; qa < 4; ++qa) {
        const int row = m0 + tx + 16 * qa;
        if (row >= M) continue;
        const int o_img = row / HWd, o_pix = row - o_img * HWd;
        for (int qb = 0; qb < 4; ++qb) {
            const int col = n0 + ty + 16 * qb;
            if (col >= Cd) continue;
            out[((long long)o_img * Cd + col) * HWd + o_pix] = acc[qa][qb] + (has_bias ? bias[col] : 0.0f);
        }
    }
}

// Weight and bias gradients, split-K: block (bx, by, split) computes the partial
//   dw[o, k] = sum_{m in its split} dy[m, o] * A[m, k],   db[o] = sum_{m in its split} dy[m, o]
// for o in the 64 rows of bx and k in the 64 columns of by, A the forward's gather from x, and
// writes them to ws[split, o*K + k] and (by == 0 only) ws[split, Cout*K + o].
// Thread (tx, ty) owns columns k0 + tx + 16a and rows o0 + ty + 16b (consecutive threads store
// consecutive k).
extern "C" __global__ void __launch_bounds__(256) conv_igemm_dw(
        const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ ws,
        int N, int C, int H, int W, int Cout, int Ho, int Wo, int kh, int kw,
        int stride, int pad, int rows_per_split) {
    __shared__ float Ds[BK][BM + PAD];  // dy tile: BK GEMM rows (pixels) x 64 output channels
    __shared__ float Xs[BK][BN + PAD];  // A tile: BK GEMM rows x 64 columns k = (c, i, j)
    const int t = threadIdx.x, tx = t % 16, ty = t / 16;
    const int o0 = blockIdx.x * BM, k0 = blockIdx.y * BN;
    const int HWo = Ho * Wo, M = N * HWo, khw = kh * kw, K = C * khw;
    const int m_begin = blockIdx.z * rows_per_split;
    const int m_end = min(M, m_begin + rows_per_split);
    const int E = Cout * K + Cout;  // one split's share of the workspace

    // The four A columns this thread gathers (the same at every step): decoded once.
    const int l_row = t % BK, l_col = t / BK;  // loads row l_row, columns l_col + 16r
    int x_off[4], x_i[4], x_j[4];
    for (int r = 0; r < 4; ++r) {
        const int k = k0 + l_col + 16 * r;
        const int c = k / khw, tap = k - c * khw;
        x_i[r] = k < K ? tap / kw : -(1 << 20);  // a column past K: a row far outside x, so zero
        x_j[r] = tap % kw;
        x_off[r] = c * H * W;
    }

    float acc[4][4] = {}, dbacc[4] = {};
    const bool sums_db = blockIdx.y == 0 && tx == 0;
    for (int mb = m_begin; mb < m_end; mb += BK) {
        const int m = mb + l_row;
        const bool m_ok = m < m_end;
        const int mm = m_ok ? m : 0;
        const int img = mm / HWo, pix = mm - img * HWo, h = pix / Wo, v = pix - h * Wo;
        for (int r = 0; r < 4; ++r) {  // dy tile: consecutive threads, consecutive pixels
            const int o = o0 + l_col + 16 * r;
            Ds[l_row][l_col + 16 * r] =
                (m_ok && o < Cout) ? dy[((long long)img * Cout + o) * HWo + pix] : 0.0f;
        }
        const float* x_img = x + (long long)img * C * H * W;
        for (int r = 0; r < 4; ++r) {  // the gather, as in the forward
            const int hh = stride * h - pad + x_i[r], vv = stride * v - pad + x_j[r];
            const bool ok = m_ok && hh >= 0 && hh < H && vv >= 0 && vv < W;
            Xs[l_row][l_col + 16 * r] = ok ? x_img[x_off[r] + hh * W + vv] : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < BK; ++kk) {
            float a[4], b[4];
            for (int q = 0; q < 4; ++q) a[q] = Xs[kk][tx + 16 * q];
            for (int q = 0; q < 4; ++q) b[q] = Ds[kk][ty + 16 * q];
            for (int qa = 0; qa < 4; ++qa)
                for (int qb = 0; qb < 4; ++qb) acc[qa][qb] += a[qa] * b[qb];
            if (sums_db)
                for (int qb = 0; qb < 4; ++qb) dbacc[qb] += b[qb];
        }
        __syncthreads();
    }
    float* part = ws + (long long)blockIdx.z * E;
    for (int qb = 0; qb < 4; ++qb) {
        const int o = o0 + ty + 16 * qb;
        if (o >= Cout) continue;
        for (int qa = 0; qa < 4; ++qa) {
            const int k = k0 + tx + 16 * qa;
            if (k < K) part[(long long)o * K + k] = acc[qa][qb];
        }
        if (sums_db) part[Cout * K + o] = dbacc[qb];
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

_INT32_MAX = 2 ** 31 - 1
_i32 = np.int32


def _float32(xp, a, name):
    if a.dtype != np.float32:
        raise TypeError(f'impl="igemm" is float32 only ({name} is {a.dtype}); use impl="cupy" for float64')
    return xp.ascontiguousarray(a)


def _check_int32(*sizes):
    if max(sizes) > _INT32_MAX:
        raise ValueError('impl="igemm" indexes with int32: arrays must have fewer than 2^31 elements')


def forward(mod, x, w, b=None, stride=1, padding=0):
    """x (N,Cin,H,W), w (Cout,Cin,kh,kw), b (Cout,) or None -> y (N,Cout,Ho,Wo), float32.
    ``mod`` is the compiled SOURCE: a cupy.RawModule, or tests' EmulatedModule."""
    xp = array_module(x)
    N, C, H, W = x.shape
    Cout, _, kh, kw = w.shape
    Ho, Wo = check_shapes(x.shape, w.shape, stride, padding)
    x, w = _float32(xp, x, "x"), _float32(xp, w, "w")
    bias = w if b is None else _float32(xp, b, "b")  # any float array when unused
    _check_int32(x.size, N * Cout * Ho * Wo)
    y = xp.empty((N, Cout, Ho, Wo), dtype=np.float32)  # N,Cout,Ho,Wo
    M = N * Ho * Wo
    grid = (math.ceil(M / BM), math.ceil(Cout / BN))
    # row of x read by output row h at tap i: s*h - p + i (mul s, add -p, sgn +1, div 1)
    mod.get_function("conv_igemm")(grid, (THREADS,), (
        x, w, bias, y, _i32(N), _i32(C), _i32(H), _i32(W), _i32(Cout), _i32(Ho), _i32(Wo),
        _i32(kh), _i32(kw), _i32(stride), _i32(-padding), _i32(1), _i32(1),
        _i32(kh * kw), _i32(C * kh * kw), _i32(b is not None)))
    return y


def backward_input(mod, dy, w, x_shape, stride=1, padding=0):
    """dy (N,Cout,Ho,Wo), w (Cout,Cin,kh,kw) -> dx (N,Cin,H,W), float32."""
    xp = array_module(dy)
    N, C, H, W = x_shape
    Cout, _, kh, kw = w.shape
    Ho, Wo = check_shapes(x_shape, w.shape, stride, padding)
    dy, w = _float32(xp, dy, "dy"), _float32(xp, w, "w")
    _check_int32(dy.size, N * C * H * W)
    dx = xp.empty((N, C, H, W), dtype=np.float32)  # N,Cin,H,W
    M = N * H * W
    grid = (math.ceil(M / BM), math.ceil(C / BN))
    # row of dy read by dx row hh at tap i: (hh + p - i) / s when exact (mul 1, add p, sgn -1,
    # div s); the depth runs over (o, i, j), so w[o, c, i, j] = w[o*Cin*kh*kw + c*kh*kw + i*kw + j]
    mod.get_function("conv_igemm")(grid, (THREADS,), (
        dy, w, w, dx, _i32(N), _i32(Cout), _i32(Ho), _i32(Wo), _i32(C), _i32(H), _i32(W),
        _i32(kh), _i32(kw), _i32(1), _i32(padding), _i32(-1), _i32(stride),
        _i32(C * kh * kw), _i32(kh * kw), _i32(0)))
    return dx


def split_rows(M, Cout, K):
    """Rows of M per weight-gradient split: enough splits to give the GPU about
    SPLIT_TARGET_BLOCKS blocks, none shorter than SPLIT_MIN_STEPS depth steps."""
    tiles = math.ceil(Cout / BM) * math.ceil(K / BN)
    steps = math.ceil(M / BK)
    splits = max(1, min(math.ceil(SPLIT_TARGET_BLOCKS / tiles), steps // SPLIT_MIN_STEPS))
    return math.ceil(steps / splits) * BK


def backward_weight(mod, dy, x, w_shape, stride=1, padding=0, rows_per_split=None):
    """dy (N,Cout,Ho,Wo), x (N,Cin,H,W) -> (dw (Cout,Cin,kh,kw), db (Cout,)), float32.
    ``rows_per_split`` (a multiple of BK) overrides split_rows, for tests."""
    xp = array_module(dy)
    Cout, C, kh, kw = w_shape
    N, _, H, W = x.shape
    Ho, Wo = check_shapes(x.shape, w_shape, stride, padding)
    dy, x = _float32(xp, dy, "dy"), _float32(xp, x, "x")
    M, K = N * Ho * Wo, C * kh * kw
    rows = rows_per_split or split_rows(M, Cout, K)
    if rows % BK:
        raise ValueError(f"rows_per_split must be a multiple of {BK}, got {rows}")
    splits = math.ceil(M / rows)
    E = Cout * K + Cout  # dw, then db
    _check_int32(x.size, dy.size, splits * E)
    ws = xp.empty((splits, E), dtype=np.float32)  # splits,Cout*K+Cout: every entry written
    grid = (math.ceil(Cout / BM), math.ceil(K / BN), splits)
    mod.get_function("conv_igemm_dw")(grid, (THREADS,), (
        dy, x, ws, _i32(N), _i32(C), _i32(H), _i32(W), _i32(Cout), _i32(Ho), _i32(Wo),
        _i32(kh), _i32(kw), _i32(stride), _i32(padding), _i32(rows)))
    out = xp.empty(E, dtype=np.float32)  # Cout*K + Cout
    mod.get_function("sum_splits")((math.ceil(E / THREADS),), (THREADS,), (ws, out, _i32(E), _i32(splits)))
    return out[:Cout * K].reshape(w_shape), out[Cout * K:]


# ------------------------------------------------------------------------------------------------
# Public entry points (CuPy arrays): the module is compiled once, on first use
# ------------------------------------------------------------------------------------------------

_MODULE = None


def module():
    """SOURCE compiled by CuPy (NVRTC), once per process."""
    global _MODULE
    if _MODULE is None:
        import cupy
        _MODULE = cupy.RawModule(code=SOURCE)
    return _MODULE


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    return forward(module(), x, w, b, stride, padding)


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0):
    return backward_input(module(), dy, w, x_shape, stride, padding)


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0):
    return backward_weight(module(), dy, x, w_shape, stride, padding)
