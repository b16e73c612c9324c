"""2-D convolution as a layer: parameters, caching and gradient bookkeeping around the operation.

# N batch, Cin Cout channels, H W input size, Ho Wo output size, k kernel size
The arithmetic is :func:`minisims.ops.conv2d` and its two gradients (written there as the maths,
one einsum per kernel tap; the fast versions in kernels/conv2d.py take over when they apply);
this layer only holds W (Cout,Cin,k,k) and b (Cout,), keeps x for the weight gradient and adds
dW, db into its grads.

    y[n,o] = b[o] + sum_c W[o,c] (*) x[n,c]          (cross-correlation, PyTorch's convention)
    dx = conv_transpose(dy, W),  dW[o,c] = dy[n,o] (*) x[n,c] summed over n,  db[o] = sum dy[n,o]
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend, ops
from .layers import Module


def uniform_init(rng, shape, bound: float, dtype):
    """U(-bound, bound) from ``rng`` (numpy's or CuPy's generator), on the current device."""
    u = backend.to_numpy(rng.random(shape))  # shape
    return backend.asarray((2 * u - 1) * bound, dtype)


class Conv2d(Module):
    """x (N,Cin,H,W) -> y (N,Cout,Ho,Wo), Ho = (H + 2 padding - k) // stride + 1.

    Init: PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) times ``init_scale`` for W and b
    (EDM starts the last layer of each residual branch near zero: init_scale 1e-5 there).
    """

    def __init__(self, cin: int, cout: int, kernel: int, rng, stride: int = 1,
                 padding: int | None = None, init_scale: float = 1.0, dtype=np.float32):
        super().__init__()
        self.stride = stride
        self.padding = kernel // 2 if padding is None else padding  # "same" size at stride 1
        bound = init_scale / math.sqrt(cin * kernel * kernel)
        self.params = {"W": uniform_init(rng, (cout, cin, kernel, kernel), bound, dtype),
                       "b": uniform_init(rng, (cout,), bound, dtype)}
        self._init_grads()

    def forward(self, x):
        self.x = x  # keep x (N,Cin,H,W): dW needs it
        return ops.conv2d(x, self.params["W"], self.params["b"], self.stride,
                          self.padding)  # N,Cout,Ho,Wo

    def backward(self, dy):
        W = self.params["W"]
        dW, db = ops.conv2d_backward_weight(dy, self.x, W.shape, self.stride, self.padding)
        self.grads["W"] += dW  # Cout,Cin,k,k
        self.grads["b"] += db  # Cout
        dx = ops.conv2d_backward_input(dy, W, self.x.shape, self.stride, self.padding)  # N,Cin,H,W
        return (dx,)

