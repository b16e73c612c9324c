"""Group normalisation (Wu & He 2018), the normaliser of DDPM/EDM UNets, with the SiLU after it.

# N batch, C channels, G groups, H W spatial, M = (C/G)*H*W values per group
Each image's channels are split into G groups; every group is standardised with its own mean and
variance, then each channel gets a learned scale gamma and shift beta:

    xhat = (x - mean_g) / sqrt(var_g + eps),   y = gamma_c xhat + beta_c

Backward, with dxhat = gamma_c dy and averages <.> over the M values of a group:

    dx = (dxhat - <dxhat> - xhat <dxhat xhat>) / sqrt(var_g + eps)

A ResBlock applies silu(groupnorm(x + bias)) twice (the bias is the noise embedding's, per
channel), so the layer takes an optional bias and an optional SiLU: one step, which the fast path
runs as one kernel each way. The arithmetic, line by line with its shapes, is
:func:`minisims.ops.group_norm` and :func:`minisims.ops.group_norm_backward`.
"""
from __future__ import annotations

import numpy as np

from .. import backend, ops
from .layers import Module


def num_groups_for(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """EDM's rule: min(max_groups, C // min_channels_per_group) groups, at least 1; it must
    divide C."""
    g = max(1, min(max_groups, channels // min_channels_per_group))
    while channels % g:
        g -= 1
    return g


class GroupNorm(Module):
    """x (N,C,H,W), and a per-channel bias (N,C) added first when given -> y (N,C,H,W); with
    ``silu`` the SiLU of the normalised result. Parameters gamma (C,) = 1 and beta (C,) = 0 at
    init. backward returns one gradient per forward argument: (dx,) or (dx, dbias)."""

    def __init__(self, channels: int, groups: int, eps: float = 1e-5, silu: bool = False,
                 dtype=np.float32):
        super().__init__()
        if channels % groups:
            raise ValueError(f"{channels} channels do not split into {groups} groups")
        self.C, self.G, self.eps, self.silu = channels, groups, eps, silu
        self.params = {"gamma": backend.asarray(np.ones(channels), dtype),
                       "beta": backend.asarray(np.zeros(channels), dtype)}
        self._init_grads()

    def forward(self, x, bias=None):
        p = self.params
        # keep what backward needs (xhat and 1/std, or on the fast path x and the group statistics)
        y, self.cache = ops.group_norm(x, p["gamma"], p["beta"], self.G, self.eps, bias, self.silu)
        self.has_bias = bias is not None
        return y  # N,C,H,W

    def backward(self, dy):
        p = self.params
        dx, dgamma, dbeta, dbias = ops.group_norm_backward(dy, self.cache, p["gamma"], p["beta"])
        self.grads["gamma"] += dgamma  # C
        self.grads["beta"] += dbeta  # C
        return (dx, dbias) if self.has_bias else (dx,)  # N,C,H,W and N,C
