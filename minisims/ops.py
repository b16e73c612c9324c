"""The hot operations, each written as the maths: the one seam between the layers and kernels/.

# N batch, C Cin Cout channels, H W input size, Ho Wo output size, kh kw kernel size, s stride,
# p padding, I J K matrix sizes

Every function below is the reference a reader follows: plain array code, on NumPy or CuPy. When
``FAST`` is on (the default) it hands the same call to the fast version in kernels/ (imported where
it is called, so that a program loads only the kernels it runs; each kernel module's "auto" picks
the version for the array: numba loops on the CPU, CUDA on the GPU; docs/performance.md has what
each gains). Turning it off (``MINISIMS_FAST=0`` in the environment, or ``minisims.ops.FAST =
False``) runs the code below instead, and changes no result beyond float rounding
(tests/test_ops.py).

The convolution, attention's products and softmax, GroupNorm (+ SiLU), the guided Heun step,
Adam + EMA and the words of the per-run random streams come through here.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from . import backend
from .guidance import sims_combine

FAST = os.environ.get("MINISIMS_FAST", "1") != "0"

# The toy MLP on the GPU, the whole network one kernel launch (minisims/nn/mlp_fused.py): for
# sampling on (measured on an H200), for training opt-in (it has never run on a GPU).
FUSE_MLP_EVAL = True
FUSE_MLP_TRAIN = False



@contextlib.contextmanager
def network_threads(x=None):
    """The CPU threads of a network's passes (over x, or on the current device): while the fast
    convolution runs its own threads (kernels/conv2d.py's "direct"), the other BLAS calls
    (attention, Linear layers) run on one thread, and the kernels are told so
    (kernels/_threads.py's blas_on_one_thread: the 1x1 convolutions then run BLAS on their own
    threads). A threaded BLAS call leaves an OpenBLAS worker spinning after it returns, which
    takes a core from the convolution's threads (30% more convolution time in the UNet step:
    docs/notes/core.md). Elsewhere (the GPU, FAST off) it changes nothing. The image command
    runs its training and sampling inside it (minisims/images/pipeline.py)."""
    on_cpu = (backend.current_device() == "cpu") if x is None else backend.xp(x) is np
    if not (FAST and on_cpu):
        yield
        return
    from .kernels.conv2d import runs_own_threads
    if not runs_own_threads():
        yield
        return
    from .kernels import _threads
    with backend.blas_threads(1, cached=True), _threads.blas_on_one_thread():
        yield


# ---------------------------------------------------------------- convolution (cross-correlation)

def conv2d(x, W, b, stride: int = 1, padding: int = 0):
    """y[n,o,h,v] = b[o] + sum_{c,i,j} x_pad[n,c, s h + i, s v + j] W[o,c,i,j]: x (N,Cin,H,W),
    W (Cout,Cin,kh,kw), b (Cout,) -> y (N,Cout,Ho,Wo), Ho = (H + 2p - kh) // s + 1."""
    if FAST:
        from minisims.kernels.conv2d import conv2d_forward  # the fast path's module, loaded on first use
        return conv2d_forward(x, W, b, stride, padding)
    xp, s = backend.xp(x), stride
    N, _, H, Wd = x.shape
    Cout, _, kh, kw = W.shape
    Ho, Wo = (H + 2 * padding - kh) // s + 1, (Wd + 2 * padding - kw) // s + 1
    x_pad = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))  # N,Cin,H+2p,W+2p
    y = xp.zeros((N, Cout, Ho, Wo), dtype=x.dtype)  # N,Cout,Ho,Wo
    for i in range(kh):  # one (Cout,Cin) product per kernel tap
        for j in range(kw):
            patch = x_pad[:, :, i:i + s * Ho:s, j:j + s * Wo:s]  # N,Cin,Ho,Wo: what tap (i,j) sees
            y += xp.einsum("nchw,oc->nohw", patch, W[:, :, i, j])
    return y + b[None, :, None, None]  # N,Cout,Ho,Wo


def conv2d_backward_input(dy, W, x_shape, stride: int = 1, padding: int = 0):
    """dx: the forward run backwards, each tap scattering dy (N,Cout,Ho,Wo) back through
    W[:, :, i, j] -> dx (N,Cin,H,W)."""
    if FAST:
        from minisims.kernels.conv2d import conv2d_backward_input as fast
        return fast(dy, W, x_shape, stride, padding)
    xp, s, p = backend.xp(dy), stride, padding
    N, C, H, Wd = x_shape
    _, _, kh, kw = W.shape
    Ho, Wo = dy.shape[2:]
    dx_pad = xp.zeros((N, C, H + 2 * p, Wd + 2 * p), dtype=dy.dtype)  # N,Cin,H+2p,W+2p
    for i in range(kh):
        for j in range(kw):
            dx_pad[:, :, i:i + s * Ho:s, j:j + s * Wo:s] += xp.einsum("nohw,oc->nchw", dy, W[:, :, i, j])
    return dx_pad[:, :, p:p + H, p:p + Wd].copy()  # N,Cin,H,W: the padding keeps no gradient


def conv2d_backward_weight(dy, x, W_shape, stride: int = 1, padding: int = 0):
    """dW[o,c,i,j] = sum_{n,h,v} dy[n,o,h,v] x_pad[n,c, s h + i, s v + j] (Cout,Cin,kh,kw) and
    db[o] = sum_{n,h,v} dy[n,o,h,v] (Cout,)."""
    if FAST:
        from minisims.kernels.conv2d import conv2d_backward_weight as fast
        return fast(dy, x, W_shape, stride, padding)
    xp, s = backend.xp(dy), stride
    _, _, kh, kw = W_shape
    Ho, Wo = dy.shape[2:]
    x_pad = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))  # N,Cin,H+2p,W+2p
    dW = xp.zeros(W_shape, dtype=dy.dtype)  # Cout,Cin,kh,kw
    for i in range(kh):
        for j in range(kw):
            patch = x_pad[:, :, i:i + s * Ho:s, j:j + s * Wo:s]  # N,Cin,Ho,Wo
            dW[:, :, i, j] = xp.einsum("nohw,nchw->oc", dy, patch)
    return dW, dy.sum(axis=(0, 2, 3))  # Cout,Cin,kh,kw and Cout


# ---------------------------------------------------------------- GroupNorm, then SiLU

# GroupNorm (+ SiLU) runs as one fused kernel each way (kernels/groupnorm_silu.py: numba loops on
# the CPU, CUDA C on the GPU) on float32 arrays (None), always (True: float64 too, through the
# kernels' NumPy reference) or never (False); GROUP_NORM_KERNEL picks the kernel version. Tests
# and benchmarks set them.
FUSE_GROUP_NORM: bool | None = None
GROUP_NORM_KERNEL = "auto"


def group_norm(x, gamma, beta, groups: int, eps: float, bias=None, silu: bool = False):
    """Group normalisation (Wu & He 2018) of x + bias, then the SiLU when ``silu``: x (N,C,H,W),
    bias (N,C) or None, gamma and beta (C,) -> (y (N,C,H,W), what group_norm_backward needs).

        u = x + bias[:, :, None, None];  xhat = (u - mean_g) / sqrt(var_g + eps) over each group
        z = gamma_c xhat + beta_c;       y = z sigmoid(z) with the SiLU, else y = z
    """
    fused = x.dtype == np.float32 if FUSE_GROUP_NORM is None else FUSE_GROUP_NORM
    if FAST and fused:
        from minisims.kernels.groupnorm_silu import groupnorm_silu_forward
        y, mean, rstd = groupnorm_silu_forward(x, gamma, beta, groups, eps, bias, GROUP_NORM_KERNEL,
                                               silu=silu)
        return y, ("fused", x, bias, mean, rstd, silu)  # backward recomputes xhat, z from these
    xp = backend.xp(x)
    N, C, H, W = x.shape
    u = x if bias is None else x + bias[:, :, None, None]  # N,C,H,W
    ug = u.reshape(N, groups, -1)  # N,G,M: in NCHW a group's M = (C/G) H W values are contiguous
    mean = ug.mean(axis=-1, keepdims=True)  # N,G,1
    uc = ug - mean  # N,G,M
    var = xp.einsum("ngm,ngm->ng", uc, uc)[..., None] / uc.shape[-1]  # N,G,1
    rstd = 1.0 / xp.sqrt(var + eps)  # N,G,1
    uc *= rstd
    xhat = uc.reshape(N, C, H, W)  # N,C,H,W
    z = xhat * gamma[:, None, None] + beta[:, None, None]  # N,C,H,W
    if not silu:
        return z, ("ref", xhat, rstd, None, None, bias is not None)
    s = 1.0 / (1.0 + xp.exp(-z))  # N,C,H,W: keep sigmoid(z), backward reuses it
    return z * s, ("ref", xhat, rstd, z, s, bias is not None)


def group_norm_backward(dy, cache, gamma, beta):
    """dy (N,C,H,W) -> dx (N,C,H,W), dgamma and dbeta (C,), dbias (N,C) or None without a bias.
    With dz the gradient at z, dxhat = gamma_c dz and averages <.> over the M values of a group:

        dz = dy (s + z s (1 - s)) with the SiLU (s = sigmoid(z)), else dy
        dx = (dxhat - <dxhat> - xhat <dxhat xhat>) / sqrt(var_g + eps),  dbias = sum_hw dx
    """
    if cache[0] == "fused":
        from minisims.kernels.groupnorm_silu import groupnorm_silu_backward
        _, x, bias, mean, rstd, silu = cache
        return groupnorm_silu_backward(dy, x, gamma, beta, mean, rstd, bias, GROUP_NORM_KERNEL,
                                       silu=silu)
    _, xhat, rstd, z, s, has_bias = cache
    xp = backend.xp(dy)
    N, C, H, W = dy.shape
    dz = dy if z is None else dy * (s + z * s * (1.0 - s))  # N,C,H,W: through the SiLU
    dgamma = xp.einsum("nchw,nchw->c", dz, xhat)  # C
    dbeta = dz.sum(axis=(0, 2, 3))  # C
    G = rstd.shape[1]
    dxhat = (dz * gamma[:, None, None]).reshape(N, G, -1)  # N,G,M
    xg = xhat.reshape(N, G, -1)  # N,G,M
    mean_d = dxhat.mean(axis=-1, keepdims=True)  # N,G,1: <dxhat>
    mean_dx = xp.einsum("ngm,ngm->ng", dxhat, xg)[..., None] / xg.shape[-1]  # N,G,1: <dxhat xhat>
    dxhat -= mean_d
    dxhat -= xg * mean_dx
    dxhat *= rstd
    dx = dxhat.reshape(N, C, H, W)  # N,C,H,W
    return dx, dgamma, dbeta, (dx.sum(axis=(2, 3)) if has_bias else None)


# ---------------------------------------------------------------- attention's products and softmax

def bmm(a, b):
    """c (N,I,J) = a (N,I,K) @ b (N,K,J), one matrix product per image."""
    if FAST:
        from minisims.kernels.bmm import bmm as fast
        return fast(a, b)
    return a @ b  # N,I,J


def softmax(S, scale: float):
    """A (N,I,J) = softmax over the last axis of scale * S. Written over S (C-contiguous)."""
    if FAST:
        from minisims.kernels.softmax import softmax_forward
        return softmax_forward(S, scale)
    xp = backend.xp(S)
    S *= scale
    S -= S.max(axis=-1, keepdims=True)  # softmax is shift invariant; this keeps exp finite
    A = xp.exp(S, out=S)  # N,I,J
    A /= A.sum(axis=-1, keepdims=True)
    return A


def softmax_backward(A, dA, scale: float):
    """dS (N,I,J) = scale * A * (dA - sum_j dA A), with A the forward's result."""
    if FAST:
        from minisims.kernels.softmax import softmax_backward as fast
        return fast(A, dA, scale)
    dS = A * (dA - (dA * A).sum(axis=-1, keepdims=True))  # N,I,J
    dS *= scale
    return dS


# ---------------------------------------------------------------- the guided Heun step

# S sample shape; D = (1 + w) D_base - w D_aux, paper eq. 5 (D_base where aux is None: unguided).
# On the GPU each stage is one fused pass (kernels/heun.py, the same bits); on the CPU the step's
# arithmetic is a sliver of a sampler's time next to the model calls, so the lines below run.

def heun_euler(x_hat, base, aux, w: float, t_hat: float, t_next: float):
    """EDM Algorithm 2, lines 5-6: the Euler step from t_hat to t_next with D = eq. 5.
    Returns (x_next, d_cur), each S."""
    if FAST and backend.xp(x_hat) is not np:
        from minisims.kernels.heun import heun_stage1
        return heun_stage1(x_hat, base, aux, w, t_hat, t_next)
    denoised = base if aux is None else sims_combine(base, aux, w)  # S, eq. 5
    d_cur = (x_hat - denoised) / t_hat  # S
    x_next = x_hat + (t_next - t_hat) * d_cur  # S
    return x_next, d_cur


def heun_correct(x_hat, x_next, d_cur, base, aux, w: float, t_hat: float, t_next: float):
    """Lines 7-8: the 2nd order correction, with D = eq. 5 at (x_next, t_next). Returns x_next, S."""
    if FAST and backend.xp(x_hat) is not np:
        from minisims.kernels.heun import heun_stage2
        return heun_stage2(x_hat, x_next, d_cur, base, aux, w, t_hat, t_next)
    denoised = base if aux is None else sims_combine(base, aux, w)  # S, eq. 5 at x_next
    d_prime = (x_next - denoised) / t_next  # S
    return x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)  # S


# ---------------------------------------------------------------- Adam, then the EMA of the weights

# The fused update (kernels/adam_ema.py) runs on float32 parameters from this many values on: on
# the GPU always (one launch replaces some twenty per array), on NumPy from about a million
# (below that its bookkeeping costs more than it saves: docs/notes/core.md). The same bits either
# way; benchmarks set 0 or infinity to time one path.
FUSE_ADAM_FROM = {"cpu": 1 << 20, "gpu": 0}


def adam_ema(entries, lr: float, betas, eps: float, t: int, ema_beta: float | None = None):
    """Adam's step t (Kingma & Ba 2015, with bias correction) and then the EMA of the new weights,
    in place, entry by entry. Each entry is (p, g, m, v, e): a parameter, its gradient, Adam's two
    moments (all three None for an EMA-only entry, a frozen parameter) and its EMA shadow (None
    without an EMA); any leading ensemble axis."""
    if FAST and fuse_adam(entries):
        from minisims.kernels.adam_ema import adam_ema_update
        return adam_ema_update(entries, lr, betas, eps, t, ema_beta)
    b1, b2 = betas
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t  # the bias corrections
    for p, g, m, v, e in entries:
        if m is not None:  # Adam
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= lr * (m / c1) / (backend.xp(p).sqrt(v / c2) + eps)
        if e is not None:  # the EMA of the new weights
            e *= ema_beta
            e += (1 - ema_beta) * p


def fuse_adam(entries) -> bool:
    """Whether :func:`adam_ema`'s fast path pays for these entries (FUSE_ADAM_FROM)."""
    params = [entry[0] for entry in entries]
    if not params or not all(p.dtype == np.float32 for p in params):
        return False
    device = "cpu" if backend.xp(params[0]) is np else "gpu"
    return sum(p.size for p in params) >= FUSE_ADAM_FROM[device]


# ---------------------------------------------------------------- the per-run random streams' words

# Philox4x32-10 (Salmon et al., SC'11, "Parallel random numbers: as easy as 1, 2, 3"): a keyed
# bijection of a 128-bit counter, so any word of a stream is computed on its own, on any device,
# in any order. minisims.streams.RunGenerator asks for run r's block j of its n-th draw as
# philox((j, n, r, 0), key). Integer arithmetic only: NumPy and the CuPy kernel give the same bits.
PHILOX_M = (0xD2511F53, 0xCD9E8D57)  # the multipliers
PHILOX_W = (0x9E3779B9, 0xBB67AE85)  # the key schedule's increments (golden ratio, sqrt(3) - 1)
WORD = 0xFFFFFFFF


def philox_words(key, runs, draw: int, per_run: int):
    """(R,P) uint64 words (each < 2^32) of one draw: word p of run ``runs[i]`` is word p % 4 of
    philox4x32((p // 4, draw, runs[i], 0), key). ``key``: two 32-bit words; ``runs``: (R,) uint64."""
    if FAST and backend.xp(runs) is not np:
        from .kernels.philox import run_words  # one CuPy kernel instead of some 80 passes
        return run_words(key, runs, draw, per_run)
    xp = backend.xp(runs)
    j = xp.arange(-(-per_run // 4), dtype=np.uint64)[None, :]  # 1,B: block j holds words 4j..4j+3
    blocks = philox4x32((j, np.uint64(draw), runs[:, None], np.uint64(0)), key)  # 4 x R,B
    return xp.stack(blocks, axis=-1).reshape(len(runs), -1)[:, :per_run]  # R,P


def philox4x32(counter, key, rounds: int = 10):
    """The Philox4x32 bijection, elementwise (Random123's philox4x32round and constants; its known
    answers are in tests/test_streams.py). ``counter``: four uint64 arrays or scalars of 32-bit
    words, broadcastable; ``key``: two words. Each round, with 64-bit products exact in uint64:

        hi0:lo0 = M0 c0,   hi1:lo1 = M1 c2
        c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0),   k = k + W (mod 2^32)
    """
    c0, c1, c2, c3 = counter
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for _ in range(rounds):
        p0 = c0 * np.uint64(PHILOX_M[0])  # < 2^64: both factors < 2^32
        p1 = c2 * np.uint64(PHILOX_M[1])
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & WORD, (p0 >> 32) ^ c3 ^ k1, p0 & WORD
        k0, k1 = (k0 + np.uint64(PHILOX_W[0])) & WORD, (k1 + np.uint64(PHILOX_W[1])) & WORD
    return c0, c1, c2, c3
