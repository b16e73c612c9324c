"""Group normalisation (Wu & He 2018), the normaliser of DDPM/EDM UNets.

# N batch, C channels, G groups, H W spatial, M = (C/G)*H*W values per group
Each image's channels are split into G groups; every group is standardised with its own mean and
variance, then each channel gets a learned scale gamma and shift beta:

    xhat = (x - mean_g) / sqrt(var_g + eps),   y = gamma_c xhat + beta_c

Backward, with dxhat = gamma_c dy and averages <.> over the M values of a group:

    dx = (dxhat - <dxhat> - xhat <dxhat xhat>) / sqrt(var_g + eps)

In NCHW a group's M values are contiguous, so the statistics are plain reductions over the last
axis of an (N,G,M) view.

GroupNormSiLU runs silu(groupnorm(x + bias)), the pair every ResBlock applies twice, either as the
two layers (the reference) or as one kernel each way (kernels/groupnorm_silu.py; by default on
float32 arrays: CUDA C on the GPU, numba loops on the CPU). Without an activation (act=None) it
is GroupNorm alone through the same kernels: attention's norm.
"""
from __future__ import annotations

import numpy as np

from kernels.groupnorm_silu import groupnorm_silu_backward, groupnorm_silu_forward

from .. import backend
from .module import Module


def num_groups_for(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """EDM's rule: min(max_groups, C // min_channels_per_group) groups, at least 1; it must
    divide C."""
    g = max(1, min(max_groups, channels // min_channels_per_group))
    while channels % g:
        g -= 1
    return g


class GroupNorm(Module):
    """x (N,C,H,W) -> y (N,C,H,W); parameters gamma (C,) = 1 and beta (C,) = 0 at init."""

    def __init__(self, channels: int, groups: int, eps: float = 1e-5, dtype=np.float32):
        super().__init__()
        if channels % groups:
            raise ValueError(f"{channels} channels do not split into {groups} groups")
        self.C, self.G, self.eps = channels, groups, eps
        self.params = {"gamma": backend.asarray(np.ones(channels), dtype),
                       "beta": backend.asarray(np.zeros(channels), dtype)}
        self._init_grads()

    def forward(self, x):
        xp = backend.xp(x)
        N, C, H, W = x.shape
        xg = x.reshape(N, self.G, -1)  # N,G,M
        mean = xg.mean(axis=-1, keepdims=True)  # N,G,1
        xc = xg - mean  # N,G,M
        var = xp.einsum("ngm,ngm->ng", xc, xc)[..., None] / xc.shape[-1]  # N,G,1
        # keep 1/std (N,G,1) and xhat (N,C,H,W): backward needs both, recomputing costs a pass
        self.rstd = 1.0 / xp.sqrt(var + self.eps)  # N,G,1
        xc *= self.rstd
        self.xhat = xc.reshape(N, C, H, W)  # N,C,H,W
        gamma, beta = self.params["gamma"], self.params["beta"]
        return self.xhat * gamma[:, None, None] + beta[:, None, None]  # N,C,H,W

    def backward(self, dy):
        xp = backend.xp(dy)
        N, C, H, W = dy.shape
        xhat = self.xhat
        self.grads["gamma"] += xp.einsum("nchw,nchw->c", dy, xhat)  # C
        self.grads["beta"] += dy.sum(axis=(0, 2, 3))  # C
        dxhat = (dy * self.params["gamma"][:, None, None]).reshape(N, self.G, -1)  # N,G,M
        xg = xhat.reshape(N, self.G, -1)  # N,G,M
        M = xg.shape[-1]
        mean_d = dxhat.mean(axis=-1, keepdims=True)  # N,G,1: <dxhat>
        mean_dx = xp.einsum("ngm,ngm->ng", dxhat, xg)[..., None] / M  # N,G,1: <dxhat xhat>
        dxhat -= mean_d
        dxhat -= xg * mean_dx
        dxhat *= self.rstd
        return (dxhat.reshape(N, C, H, W),)  # N,C,H,W


class GroupNormSiLU(Module):
    """silu(norm(x + bias[:, :, None, None])) on the parameters of an existing GroupNorm ``norm``
    and its following SiLU ``act``; x (N,C,H,W), bias (N,C) or None -> y (N,C,H,W). With
    ``act=None``, norm(x + bias) alone: the same kernels with the SiLU switched off.

    It owns no parameters: it reads norm.params and adds into norm.grads at call time, so the
    model's parameter names (norm0.gamma, ...) and checkpoints are the same fused or not, and
    ``norm`` and ``act`` stay the block's children (this one adds no parameter names).

    ``fused`` picks the path: False runs ``act.forward(norm.forward(x + bias))``, the reference,
    unchanged (``norm.forward(x + bias)`` without act); True runs kernels.groupnorm_silu's version
    ``impl``; None (the default) fuses float32 arrays only. ``impl`` "auto" is one CUDA kernel each
    way on float32 CuPy arrays, the numba loops on float32 NumPy arrays (within float32
    tolerances of the layers, and faster than them at all but one of the CPU UNet's shapes:
    docs/notes/core.md) and the NumPy reference of the same arithmetic otherwise;
    "reference" is that reference on any array: bit for bit the layers.
    Fused, the forward keeps x, bias and mean, rstd (N,G): nothing of size x beyond the input,
    where the layers keep three such arrays (GroupNorm alone: one, its xhat).
    """

    def __init__(self, norm: GroupNorm, act: Module | None, fused: bool | None = None,
                 impl: str = "auto"):
        super().__init__()
        self.norm, self.act, self.fused, self.impl = norm, act, fused, impl

    def _fuse(self, x) -> bool:
        if self.fused is not None:
            return self.fused
        return x.dtype == np.float32

    def forward(self, x, bias=None):
        self.has_bias = bias is not None
        self.fused_now = self._fuse(x)  # backward takes the path forward took
        if not self.fused_now:
            h = x if bias is None else x + bias[:, :, None, None]  # N,C,H,W
            h = self.norm.forward(h)  # N,C,H,W
            return h if self.act is None else self.act.forward(h)  # N,C,H,W
        p = self.norm.params
        # keep x, bias and the group statistics (N,G): backward recomputes xhat, z, sigmoid(z)
        self.x, self.bias = x, bias
        y, self.mean, self.rstd = groupnorm_silu_forward(x, p["gamma"], p["beta"], self.norm.G,
                                                         self.norm.eps, bias, self.impl,
                                                         silu=self.act is not None)
        return y  # N,C,H,W

    def backward(self, dy):
        """dy (N,C,H,W) -> (dx (N,C,H,W), dbias (N,C) or None without a bias)."""
        if not self.fused_now:
            dh, = (dy,) if self.act is None else self.act.backward(dy)
            dx, = self.norm.backward(dh)  # N,C,H,W
            return dx, (dx.sum(axis=(2, 3)) if self.has_bias else None)  # N,C
        p = self.norm.params
        dx, dgamma, dbeta, dbias = groupnorm_silu_backward(dy, self.x, p["gamma"], p["beta"],
                                                           self.mean, self.rstd, self.bias,
                                                           self.impl, silu=self.act is not None)
        self.norm.grads["gamma"] += dgamma  # C
        self.norm.grads["beta"] += dbeta  # C
        return dx, dbias


def set_fused(model: Module, fused: bool | None, impl: str = "auto") -> None:
    """Set ``fused`` and the kernel version ``impl`` on every GroupNormSiLU of ``model``,
    attention's SiLU-free one included (None: fused on float32 arrays; ``impl="reference"``
    with True: the layers' arithmetic, bit for bit)."""
    for m in model.modules():
        if isinstance(m, GroupNormSiLU):
            m.fused, m.impl = fused, impl
