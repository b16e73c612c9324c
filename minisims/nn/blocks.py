"""The UNet's building blocks: the residual block with noise-embedding injection, and the
resolution changes (EDM's DDPM++ block, Karras et al. 2022, Appendix F; Ho et al. 2020).

# N batch, Cin Cout channels, H W spatial, E embedding width
ResBlock, x (N,Cin,H,W) and emb (N,E) -> (N,Cout,H,W):

    h = conv0(silu(norm0(x)))                      N,Cout,H,W
    h = h + affine(emb)[:, :, None, None]          the noise level enters here, per channel
    h = conv1(dropout(silu(norm1(h))))             conv1 starts near zero: the block starts as
    y = (h + skip(x)) / sqrt(2)                    a scaled identity (skip = 1x1 conv if Cin != Cout)
    y = attention(y) / sqrt(2)                     optional, x + attn(x) at low resolution

Downsample: a 3x3 convolution with stride 2, or 2x2 average pooling. Upsample: nearest 2x, then
a 3x3 convolution, or nearest alone.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from .attention import SelfAttention2d
from .conv import Conv2d
from .dropout import Dropout
from .layers import Linear, Module
from .norm import GroupNorm
from .resample import AvgPool2x, Upsample2x

SKIP_SCALE = 1.0 / math.sqrt(2.0)  # keeps the variance of a sum of two unit-variance branches


class ResBlock(Module):
    """Residual block with the noise embedding added between its two convolutions."""

    def __init__(self, cin: int, cout: int, emb_dim: int, rng, groups_in: int, groups_out: int,
                 dropout: float = 0.0, attention: bool = False, init_zero: float = 1e-5,
                 dtype=np.float32):
        super().__init__()
        self.norm0 = GroupNorm(cin, groups_in, silu=True, dtype=dtype)  # GroupNorm, then SiLU
        self.conv0 = Conv2d(cin, cout, 3, rng, dtype=dtype)
        self.affine = Linear(emb_dim, cout, rng, dtype=dtype)
        self.norm1 = GroupNorm(cout, groups_out, silu=True, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.conv1 = Conv2d(cout, cout, 3, rng, init_scale=init_zero, dtype=dtype)
        self.skip = Conv2d(cin, cout, 1, rng, dtype=dtype) if cin != cout else None
        self.attn = SelfAttention2d(cout, groups_out, rng, init_scale=init_zero, dtype=dtype) if attention else None
        # every sub-module in forward order; the parameter-free ones add no parameter names
        self.children = {"norm0": self.norm0, "conv0": self.conv0, "affine": self.affine,
                         "norm1": self.norm1, "dropout": self.dropout, "conv1": self.conv1}
        if self.skip is not None:
            self.children["skip"] = self.skip
        if self.attn is not None:
            self.children["attn"] = self.attn

    def forward(self, x, emb):
        h = self.conv0.forward(self.norm0.forward(x))  # norm, SiLU, conv: N,Cout,H,W
        # the embedding, per channel: norm1 and its SiLU take h + affine(emb)[:, :, None, None]
        h = self.norm1.forward(h, self.affine.forward(emb))  # N,Cout,H,W
        h = self.conv1.forward(self.dropout.forward(h))  # dropout, conv
        s = x if self.skip is None else self.skip.forward(x)  # N,Cout,H,W
        y = (h + s) * SKIP_SCALE  # N,Cout,H,W
        if self.attn is not None:
            y = self.attn.forward(y) * SKIP_SCALE
        return y

    def backward(self, dy):
        """dy (N,Cout,H,W) -> (dx (N,Cin,H,W), demb (N,E))."""
        if self.attn is not None:
            dy, = self.attn.backward(dy * SKIP_SCALE)
        dy = dy * SKIP_SCALE  # the gradient of both h and s
        dh, = self.conv1.backward(dy)
        dh, = self.dropout.backward(dh)
        dh, dbias = self.norm1.backward(dh)  # N,Cout,H,W and N,Cout
        demb, = self.affine.backward(dbias)  # N,E
        dx, = self.conv0.backward(dh)
        dx, = self.norm0.backward(dx)  # N,Cin,H,W
        ds = dy if self.skip is None else self.skip.backward(dy)[0]  # N,Cin,H,W via the skip
        dx += ds
        return dx, demb


class Downsample(Module):
    """x (N,C,H,W) -> (N,C,H/2,W/2): a 3x3 stride-2 convolution (``conv=True``) or 2x2 mean."""

    def __init__(self, channels: int, rng, conv: bool = True, dtype=np.float32):
        super().__init__()
        self.op = Conv2d(channels, channels, 3, rng, stride=2, padding=1, dtype=dtype) if conv else AvgPool2x()
        self.children = {"op": self.op}

    def forward(self, x):
        return self.op.forward(x)

    def backward(self, dy):
        return self.op.backward(dy)  # (dx,)


class Upsample(Module):
    """x (N,C,H,W) -> (N,C,2H,2W): nearest 2x, then a 3x3 convolution when ``conv=True``."""

    def __init__(self, channels: int, rng, conv: bool = True, dtype=np.float32):
        super().__init__()
        self.up = Upsample2x()
        self.conv = Conv2d(channels, channels, 3, rng, dtype=dtype) if conv else None
        self.children = {"up": self.up} if self.conv is None else {"up": self.up, "conv": self.conv}

    def forward(self, x):
        y = self.up.forward(x)  # N,C,2H,2W
        return y if self.conv is None else self.conv.forward(y)

    def backward(self, dy):
        if self.conv is not None:
            dy, = self.conv.backward(dy)
        return self.up.backward(dy)  # (dx (N,C,H,W),)


def concat_channels(a, b):
    """(N,Ca,H,W), (N,Cb,H,W) -> (N,Ca+Cb,H,W); backward is a split at Ca."""
    return backend.xp(a).concatenate([a, b], axis=1)
