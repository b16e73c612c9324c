"""GroupNorm then SiLU, with an optional per-(image, channel) bias added first, as one kernel each
way: the pair every ResBlock runs twice (EDM's DDPM++ block, Karras et al. 2022, Appendix F).
With ``silu=False`` the same kernels are GroupNorm alone (y = z, dz = dy): attention's norm.

# N batch, C channels, G groups, Cg = C/G channels per group, H W spatial, M = Cg*H*W values per
# group (mean_g, var_g, <.> an average: over them); bias (N,C), e.g. the ResBlock's affine(emb)

    u = x + bias[:, :, None, None];  xhat = (u - mean_g) rstd_g,  rstd_g = 1 / sqrt(var_g + eps)
    z = gamma_c xhat + beta_c;  y = z s,  s = sigmoid(z)             N,C,H,W  (silu=False: y = z)
    dz = dy (s + z s (1 - s));  dxhat = gamma_c dz                   N,C,H,W  (silu=False: dz = dy)
    dgamma = sum dz xhat,  dbeta = sum dz over N, H, W;  dbias = sum dx over H, W        C, C, N,C
    dx = (dxhat - <dxhat> - xhat <dxhat xhat>) rstd_g                N,C,H,W
    groupnorm_silu_forward(x, gamma, beta, groups, eps, bias=None, impl="auto", silu=True)
        -> y, mean (N,G), rstd (N,G)
    groupnorm_silu_backward(dy, x, gamma, beta, mean, rstd, bias=None, impl="auto", silu=True)
        -> dx (N,C,H,W), dgamma (C,), dbeta (C,), dbias (N,C) or None

Why: the forward keeps only mean and rstd, the backward recomputes xhat, z and s (an exp per
value): nothing of size x is kept (the layers keep xhat, SiLU's input and sigmoid; GroupNorm alone
its xhat). Versions (``impl=``), tested in tests/test_kernels_fused.py:
- "reference": NumPy or CuPy array code, GroupNorm (minisims.nn.norm) then SiLU (.layers)
  operation for operation (the backward's recomputation too), so a model trains bit for bit.
- "cupy" (_groupnorm_silu_cupy.py): CUDA C, a block per (image, group); float32 only, within
  float32 tolerances (another summation order; a GPU's exp is not correctly rounded either).
- "numba" (_groupnorm_silu_numba.py): CPU loops on kernels/_threads.py's threads, float32 only,
  float64 sums, an exp of its own that LLVM vectorises; within float32 tolerances.
"auto" picks "cupy" for float32 CuPy arrays, "numba" for float32 NumPy arrays, else "reference".
"""
from __future__ import annotations

import numpy as np

from ._array import array_module as _xp

IMPLS = ("reference", "numba", "cupy")


# ------------------------------------------------------------------------------------------------
# Reference: the arithmetic of GroupNorm then SiLU (minisims/nn/norm.py, minisims/nn/layers.py)
# ------------------------------------------------------------------------------------------------

def _xhat(u, mean, rstd):
    """(u - mean) * rstd per group, as GroupNorm.forward computes it: N,C,H,W."""
    N, C, H, W = u.shape
    xc = u.reshape(N, mean.shape[1], -1) - mean[:, :, None]  # N,G,M
    xc *= rstd[:, :, None]
    return xc.reshape(N, C, H, W)


def _silu_input(xhat, gamma, beta):
    return xhat * gamma[:, None, None] + beta[:, None, None]  # N,C,H,W: z


def groupnorm_silu_forward_reference(x, gamma, beta, groups, eps=1e-5, bias=None, silu=True):
    xp = _xp(x)
    N, C, H, W = x.shape
    u = x if bias is None else x + bias[:, :, None, None]  # N,C,H,W
    ug = u.reshape(N, groups, -1)  # N,G,M
    mean = ug.mean(axis=-1, keepdims=True)  # N,G,1
    xc = ug - mean  # N,G,M
    var = xp.einsum("ngm,ngm->ng", xc, xc)[..., None] / xc.shape[-1]  # N,G,1
    rstd = 1.0 / xp.sqrt(var + eps)  # N,G,1
    xc *= rstd
    z = _silu_input(xc.reshape(N, C, H, W), gamma, beta)  # N,C,H,W
    if not silu:
        return z, mean[..., 0], rstd[..., 0]  # GroupNorm's output: N,C,H,W  N,G  N,G
    s = 1.0 / (1.0 + xp.exp(-z))  # N,C,H,W
    return z * s, mean[..., 0], rstd[..., 0]  # N,C,H,W  N,G  N,G


def groupnorm_silu_backward_reference(dy, x, gamma, beta, mean, rstd, bias=None, silu=True):
    xp = _xp(dy)
    N, C, H, W = dy.shape
    G = mean.shape[1]
    # recompute what the unfused layers keep: xhat (GroupNorm), z and s (SiLU)
    u = x if bias is None else x + bias[:, :, None, None]  # N,C,H,W
    xhat = _xhat(u, mean, rstd)  # N,C,H,W
    if silu:  # SiLU backward
        z = _silu_input(xhat, gamma, beta)  # N,C,H,W
        s = 1.0 / (1.0 + xp.exp(-z))  # N,C,H,W
        dz = dy * (s + z * s * (1.0 - s))  # N,C,H,W
    else:
        dz = dy  # N,C,H,W: read only below
    # GroupNorm backward
    dgamma = xp.einsum("nchw,nchw->c", dz, xhat)  # C
    dbeta = dz.sum(axis=(0, 2, 3))  # C
    dxhat = (dz * gamma[:, None, None]).reshape(N, G, -1)  # N,G,M
    xg = xhat.reshape(N, G, -1)  # N,G,M
    M = xg.shape[-1]
    mean_d = dxhat.mean(axis=-1, keepdims=True)  # N,G,1: <dxhat>
    mean_dx = xp.einsum("ngm,ngm->ng", dxhat, xg)[..., None] / M  # N,G,1: <dxhat xhat>
    dxhat -= mean_d
    dxhat -= xg * mean_dx
    dxhat *= rstd[:, :, None]
    dx = dxhat.reshape(N, C, H, W)  # N,C,H,W
    dbias = None if bias is None else dx.sum(axis=(2, 3))  # N,C
    return dx, dgamma, dbeta, dbias


# ------------------------------------------------------------------------------------------------
# Dispatch
# ------------------------------------------------------------------------------------------------

def _resolve(impl, x):
    on_gpu = _xp(x) is not np
    if impl == "auto":
        if x.dtype != np.float32:
            return "reference"
        return "cupy" if on_gpu else "numba"
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}: use one of {IMPLS} or 'auto'")
    if impl != "reference" and (on_gpu != (impl == "cupy") or x.dtype != np.float32):
        where = "CuPy" if impl == "cupy" else "NumPy"
        raise ValueError(f"impl {impl!r} runs on float32 {where} arrays, not {type(x).__name__} {x.dtype}")
    return impl


def _check(x, gamma, beta, groups, bias):
    N, C, H, W = x.shape
    if C % groups:
        raise ValueError(f"{C} channels do not split into {groups} groups")
    if gamma.shape != (C,) or beta.shape != (C,):
        raise ValueError(f"gamma {gamma.shape} and beta {beta.shape} must be ({C},)")
    if bias is not None and bias.shape != (N, C):
        raise ValueError(f"bias {bias.shape} must be ({N}, {C})")


def groupnorm_silu_forward(x, gamma, beta, groups, eps=1e-5, bias=None, impl="auto", silu=True):
    """y = silu(groupnorm(x + bias) * gamma + beta), x (N,C,H,W), bias (N,C) or None; without
    the silu when ``silu`` is False. Returns y (N,C,H,W) and the statistics mean, rstd (N,G) that
    backward needs."""
    _check(x, gamma, beta, groups, bias)
    impl = _resolve(impl, x)
    if impl == "reference":
        return groupnorm_silu_forward_reference(x, gamma, beta, groups, eps, bias, silu)
    if impl == "numba":
        from . import _groupnorm_silu_numba as cpu
        return cpu.forward(x, gamma, beta, groups, eps, bias, silu)
    from . import _groupnorm_silu_cupy as gpu
    return gpu.forward(gpu.module(), x, gamma, beta, groups, eps, bias, silu)


def groupnorm_silu_backward(dy, x, gamma, beta, mean, rstd, bias=None, impl="auto", silu=True):
    """Gradients of y = groupnorm_silu_forward(x, ..., silu=silu) given dy (N,C,H,W) and the
    forward's mean, rstd (N,G): dx (N,C,H,W), dgamma (C,), dbeta (C,), dbias (N,C) (None without
    a bias)."""
    _check(x, gamma, beta, mean.shape[1], bias)
    impl = _resolve(impl, dy)
    if impl == "reference":
        return groupnorm_silu_backward_reference(dy, x, gamma, beta, mean, rstd, bias, silu)
    if impl == "numba":
        from . import _groupnorm_silu_numba as cpu
        return cpu.backward(dy, x, gamma, beta, mean, rstd, bias, silu)
    from . import _groupnorm_silu_cupy as gpu
    return gpu.backward(gpu.module(), dy, x, gamma, beta, mean, rstd, bias, silu)
