"""GroupNorm + SiLU (kernels/groupnorm_silu.py), version "cupy": two CUDA C kernels, raw.

# N batch, C channels, G groups, Cg = C/G, HW = H*W, M = Cg*HW values per group; T threads

Layout: one thread block per (image n, group g), blockIdx.x = n*G + g. In NCHW a group's M values
are contiguous, channel after channel; each thread walks every channel of its group at offsets
threadIdx.x, threadIdx.x + T, ... < HW, so the per-channel constants (bias, gamma, beta) are
loaded once per channel and no index is divided per value. T: a multiple of 32 up to 256, at
most HW rounded up to 32 (threads beyond HW would only add zeros).
Reductions (``block_sum2``): warps sum with __shfl_down_sync, lane 0 writes its warp's two sums
to a shared slot, warp 0 sums the slots into a last one that every thread reads; three
__syncthreads (slots written, total written, slots free again).
- forward: the sum of u = x + bias (mean), then of (u - mean)^2 (variance: two passes as the
  reference, not E[u^2] - mean^2, which cancels), then a third pass writes y.
- backward: per channel, the sums of dz and dz xhat (this image's dbeta, dgamma: the host sums
  them over N in a fixed order, no atomics), from which the group's <dxhat> = sum_c gamma_c sum
  dz / M and <dxhat xhat> follow; a second pass writes dx and reduces its per-channel sum (dbias).
  Both passes recompute xhat (and z, s) from x.
``silu`` (0 or 1, the same for a whole launch) switches the SiLU off for attention's GroupNorm
(y = z, dz = dy): one kernel with a uniform branch, which costs nothing beside the memory
traffic, rather than two compiled variants that could drift apart. ``forward(mod, ...)`` and
``backward(mod, ...)`` take the compiled module and allocate with the input's array module, so
tests run SOURCE through tests/cuda_emu.EmulatedModule on NumPy arrays; only ``module()``
imports CuPy (on first GPU use).
"""
from __future__ import annotations

import numpy as np

from ._array import array_module as _xp

SOURCE = r'''
// the sum over a warp's 32 lanes, in lane 0
__device__ __forceinline__ float warp_sum(float v) {
    for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xffffffffu, v, d);
    return v;
}

// a and b summed over the block, returned to every thread; red: 66 floats of shared memory
__device__ void block_sum2(float& a, float& b, float* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane == 0) { red[warp] = a; red[32 + warp] = b; }
    __syncthreads();
    if (warp == 0) {
        a = warp_sum(lane < warps ? red[lane] : 0.0f);
        b = warp_sum(lane < warps ? red[32 + lane] : 0.0f);
        if (lane == 0) { red[64] = a; red[65] = b; }
    }
    __syncthreads();
    a = red[64];
    b = red[65];
    __syncthreads();  // every thread has read the totals before red is written again
}

// dz = dy silu'(z) = dy (s + z s (1 - s)), s = sigmoid(z): SiLU's backward
__device__ __forceinline__ float dsilu(float dy, float z) {
    const float s = 1.0f / (1.0f + expf(-z));
    return dy * (s + z * s * (1.0f - s));
}

extern "C" __global__ void groupnorm_silu_forward(
        const float* x, const float* bias, const float* gamma, const float* beta,
        float* y, float* mean_out, float* rstd_out, int C, int G, int HW, float eps, int silu) {
    __shared__ float red[66];
    const int n = blockIdx.x / G, g = blockIdx.x % G, Cg = C / G;
    const float M = (float)(Cg * HW);
    const long long group = (long long)blockIdx.x * Cg * HW;  // offset of the group's first value
    // mean of u = x + bias
    float sum = 0.0f, unused = 0.0f;
    for (int j = 0; j < Cg; ++j) {
        const float* xc = x + group + (long long)j * HW;
        const float b = bias[n * C + g * Cg + j];
        for (int i = threadIdx.x; i < HW; i += blockDim.x) sum += xc[i] + b;
    }
    block_sum2(sum, unused, red);
    const float mean = sum / M;
    // variance: the squared deviations from the mean, a second pass
    float sq = 0.0f;
    for (int j = 0; j < Cg; ++j) {
        const float* xc = x + group + (long long)j * HW;
        const float b = bias[n * C + g * Cg + j];
        for (int i = threadIdx.x; i < HW; i += blockDim.x) {
            const float d = (xc[i] + b) - mean;
            sq += d * d;
        }
    }
    block_sum2(sq, unused, red);
    const float rstd = 1.0f / sqrtf(sq / M + eps);
    if (threadIdx.x == 0) { mean_out[blockIdx.x] = mean; rstd_out[blockIdx.x] = rstd; }
    // y = silu(z), z = gamma xhat + beta; y = z without the SiLU
    for (int j = 0; j < Cg; ++j) {
        const long long off = group + (long long)j * HW;
        const int c = g * Cg + j;
        const float b = bias[n * C + c], ga = gamma[c], be = beta[c];
        for (int i = threadIdx.x; i < HW; i += blockDim.x) {
            const float z = ((x[off + i] + b) - mean) * rstd * ga + be;
            if (silu) {
                const float s = 1.0f / (1.0f + expf(-z));
                y[off + i] = z * s;
            } else {
                y[off + i] = z;
            }
        }
    }
}

extern "C" __global__ void groupnorm_silu_backward(
        const float* dy, const float* x, const float* bias, const float* gamma, const float* beta,
        const float* mean_in, const float* rstd_in, float* dx, float* dgamma_nc, float* dbeta_nc,
        float* dbias, int C, int G, int HW, int silu) {
    __shared__ float red[66];
    const int n = blockIdx.x / G, g = blockIdx.x % G, Cg = C / G;
    const float M = (float)(Cg * HW);
    const long long group = (long long)blockIdx.x * Cg * HW;
    const float mean = mean_in[blockIdx.x], rstd = rstd_in[blockIdx.x];
    // pass 1, per channel: sum dz (dbeta) and sum dz xhat (dgamma); the group's <dxhat> and
    // <dxhat xhat> are their gamma-weighted sums over the channels, divided by M
    float mean_d = 0.0f, mean_dx = 0.0f;
    for (int j = 0; j < Cg; ++j) {
        const long long off = group + (long long)j * HW;
        const int c = g * Cg + j;
        const float b = bias[n * C + c], ga = gamma[c], be = beta[c];
        float sd = 0.0f, sdx = 0.0f;
        for (int i = threadIdx.x; i < HW; i += blockDim.x) {
            const float xh = ((x[off + i] + b) - mean) * rstd;
            const float dz = silu ? dsilu(dy[off + i], xh * ga + be) : dy[off + i];
            sd += dz;
            sdx += dz * xh;
        }
        block_sum2(sd, sdx, red);
        if (threadIdx.x == 0) { dbeta_nc[n * C + c] = sd; dgamma_nc[n * C + c] = sdx; }
        mean_d += ga * sd;
        mean_dx += ga * sdx;
    }
    mean_d /= M;
    mean_dx /= M;
    // pass 2: dx = (dxhat - <dxhat> - xhat <dxhat xhat>) rstd, and its sum per channel (dbias)
    for (int j = 0; j < Cg; ++j) {
        const long long off = group + (long long)j * HW;
        const int c = g * Cg + j;
        const float b = bias[n * C + c], ga = gamma[c], be = beta[c];
        float sum = 0.0f, unused = 0.0f;
        for (int i = threadIdx.x; i < HW; i += blockDim.x) {
            const float xh = ((x[off + i] + b) - mean) * rstd;
            const float dz = silu ? dsilu(dy[off + i], xh * ga + be) : dy[off + i];
            const float d = (dz * ga - mean_d - xh * mean_dx) * rstd;
            dx[off + i] = d;
            sum += d;
        }
        block_sum2(sum, unused, red);
        if (threadIdx.x == 0) dbias[n * C + c] = sum;
    }
}
'''

MAX_THREADS = 256
_MODULE = None


def module():
    """The compiled CuPy RawModule, built on first use."""
    global _MODULE
    if _MODULE is None:
        import cupy
        _MODULE = cupy.RawModule(code=SOURCE)
    return _MODULE


def threads_for(hw: int) -> int:
    """Threads per block: HW rounded up to whole warps, at most MAX_THREADS."""
    return min(MAX_THREADS, 32 * -(-hw // 32))


def _float32(xp, *arrays):
    for a in arrays:
        if a is not None and a.dtype != np.float32:
            raise TypeError(f"the CUDA kernels take float32 arrays, not {a.dtype}")
    return [None if a is None else xp.ascontiguousarray(a) for a in arrays]


def forward(mod, x, gamma, beta, groups, eps, bias=None, silu=True):
    """See groupnorm_silu_forward; ``mod`` is the compiled SOURCE (CuPy or the emulator)."""
    xp = _xp(x)
    N, C, H, W = x.shape
    x, gamma, beta, bias = _float32(xp, x, gamma, beta, bias)
    b = xp.zeros((N, C), np.float32) if bias is None else bias  # no bias: add zeros
    y = xp.empty_like(x)  # N,C,H,W
    mean = xp.empty((N, groups), np.float32)  # N,G
    rstd = xp.empty((N, groups), np.float32)  # N,G
    mod.get_function("groupnorm_silu_forward")(
        (N * groups,), (threads_for(H * W),),
        (x, b, gamma, beta, y, mean, rstd, np.int32(C), np.int32(groups), np.int32(H * W),
         np.float32(eps), np.int32(silu)))
    return y, mean, rstd


def backward(mod, dy, x, gamma, beta, mean, rstd, bias=None, silu=True):
    """See groupnorm_silu_backward; ``mod`` is the compiled SOURCE (CuPy or the emulator)."""
    xp = _xp(dy)
    N, C, H, W = dy.shape
    G = mean.shape[1]
    dy, x, gamma, beta, mean, rstd, bias = _float32(xp, dy, x, gamma, beta, mean, rstd, bias)
    b = xp.zeros((N, C), np.float32) if bias is None else bias
    dx = xp.empty_like(dy)  # N,C,H,W
    dgamma_nc = xp.empty((N, C), np.float32)  # per image: summed over N below
    dbeta_nc = xp.empty((N, C), np.float32)
    dbias = xp.empty((N, C), np.float32)
    mod.get_function("groupnorm_silu_backward")(
        (N * G,), (threads_for(H * W),),
        (dy, x, b, gamma, beta, mean, rstd, dx, dgamma_nc, dbeta_nc, dbias, np.int32(C),
         np.int32(G), np.int32(H * W), np.int32(silu)))
    return dx, dgamma_nc.sum(axis=0), dbeta_nc.sum(axis=0), None if bias is None else dbias
