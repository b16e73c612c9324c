"""Single-head self-attention over the pixels of a low-resolution feature map (DDPM, EDM UNets).

# N batch, C channels, H W spatial, L = H*W positions (queries i, keys j)
With h = GroupNorm(x) and one 1x1 convolution making queries, keys and values:

    q, k, v = split(W_qkv h)                      each N,C,L
    S[i,j]  = sum_c q[c,i] k[c,j] / sqrt(C)       N,L,L   (scores)
    A       = softmax_j(S)                        N,L,L   (each query's weights over the keys)
    o[c,i]  = sum_j v[c,j] A[i,j]                 N,C,L
    y       = x + W_proj o                        N,C,H,W (residual)

Backward, step for step in reverse:

    do = W_proj^T dy,  dv = do A,  dA = do^T v,  dS = A * (dA - sum_j dA A),
    dq = k dS^T / sqrt(C),  dk = q dS / sqrt(C),  dx = dy + GroupNorm^T(W_qkv^T [dq dk dv])

The L x L score matrix costs L^2 memory, which is why attention runs only at low resolution
(16x16 or 8x8 for 32x32 images). The GroupNorm, the products and the softmax are
:mod:`minisims.ops`' (the array code there; kernels/' versions when fast paths are on).
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..ops import bmm, softmax, softmax_backward
from .conv import Conv2d
from .layers import Module
from .norm import GroupNorm


class SelfAttention2d(Module):
    """x (N,C,H,W) -> x + attention(x) (N,C,H,W)."""

    def __init__(self, channels: int, groups: int, rng, init_scale: float = 1.0, dtype=np.float32):
        super().__init__()
        self.C = channels
        self.norm = GroupNorm(channels, groups, dtype=dtype)
        self.qkv = Conv2d(channels, 3 * channels, 1, rng, dtype=dtype)
        self.proj = Conv2d(channels, channels, 1, rng, init_scale=init_scale, dtype=dtype)
        self.children = {"norm": self.norm, "qkv": self.qkv, "proj": self.proj}

    def forward(self, x):
        N, C, H, W = x.shape
        qkv = self.qkv.forward(self.norm.forward(x)).reshape(N, 3, C, H * W)  # N,3,C,L
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # N,C,L each
        S = bmm(q.transpose(0, 2, 1), k)  # N,L,L
        A = softmax(S, 1.0 / math.sqrt(C))  # N,L,L, over S
        self.q, self.k, self.v, self.A = q, k, v, A  # keep all four: each appears in backward
        o = bmm(v, A.transpose(0, 2, 1))  # N,C,L
        return x + self.proj.forward(o.reshape(N, C, H, W))  # N,C,H,W

    def backward(self, dy):
        xp = backend.xp(dy)
        N, C, H, W = dy.shape
        q, k, v, A = self.q, self.k, self.v, self.A
        do, = self.proj.backward(dy)
        do = do.reshape(N, C, H * W)  # N,C,L
        dv = bmm(do, A)  # N,C,L
        dA = bmm(do.transpose(0, 2, 1), v)  # N,L,L
        dS = softmax_backward(A, dA, 1.0 / math.sqrt(C))  # N,L,L
        dq = bmm(k, dS.transpose(0, 2, 1))  # N,C,L
        dk = bmm(q, dS)  # N,C,L
        dqkv = xp.stack([dq, dk, dv], axis=1).reshape(N, 3 * C, H, W)  # N,3C,H,W
        dh, = self.qkv.backward(dqkv)  # N,C,H,W
        dh, = self.norm.backward(dh)  # N,C,H,W
        return (dy + dh,)  # N,C,H,W
