"""Changing the resolution by a factor of two: nearest up-sampling and 2x2 average pooling.

# N batch, C channels, H W input size
Both are linear maps with no parameters, so each backward is the transposed map (returned as a
1-tuple ``(dx,)``, the rule in :mod:`minisims.nn.layers`):

- ``Upsample2x`` (nearest): every pixel becomes a 2x2 block; backward sums each 2x2 block of dy.
- ``AvgPool2x``: every 2x2 block becomes its mean; backward spreads dy / 4 over the block.

The UNet follows each with a 3x3 convolution or uses a stride-2 convolution instead
(:mod:`minisims.nn.blocks`); these two are the parameter-free halves.

A 2x2 block's sum is the four strided views of the image added, (a00 + a01) + (a10 + a11):
NumPy's ``reshape(N, C, H, 2, W, 2).sum(axis=(3, 5))``, the same sum written as a reduction,
was up to 18x slower at the UNet's shapes and most of the CPU UNet's resampling time
(docs/notes/core.md).
"""
from __future__ import annotations

from .. import backend
from .layers import Module


def _block_sums(a):
    """a (N,C,2H,2W) -> (N,C,H,W): the sum of each 2x2 block, as four strided views added."""
    return (a[:, :, 0::2, 0::2] + a[:, :, 0::2, 1::2]) + (a[:, :, 1::2, 0::2] + a[:, :, 1::2, 1::2])


class Upsample2x(Module):
    """x (N,C,H,W) -> y (N,C,2H,2W), y[n,c,2h+a,2v+b] = x[n,c,h,v]."""

    def forward(self, x):
        xp = backend.xp(x)
        N, C, H, W = x.shape
        y = xp.broadcast_to(x[:, :, :, None, :, None], (N, C, H, 2, W, 2))  # N,C,H,2,W,2
        return y.reshape(N, C, 2 * H, 2 * W)  # N,C,2H,2W (the reshape copies)

    def backward(self, dy):
        return (_block_sums(dy),)  # N,C,H,W


class AvgPool2x(Module):
    """x (N,C,H,W) -> y (N,C,H/2,W/2), the mean of each 2x2 block; H and W must be even."""

    def forward(self, x):
        N, C, H, W = x.shape
        if H % 2 or W % 2:
            raise ValueError(f"AvgPool2x needs an even size, got {H}x{W}")
        y = _block_sums(x)  # N,C,H/2,W/2
        y *= 0.25
        return y

    def backward(self, dy):
        xp = backend.xp(dy)
        N, C, H, W = dy.shape
        dx = xp.broadcast_to((0.25 * dy)[:, :, :, None, :, None], (N, C, H, 2, W, 2))  # N,C,H,2,W,2
        return (dx.reshape(N, C, 2 * H, 2 * W),)  # N,C,2H,2W
