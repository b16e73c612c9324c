"""Training losses with their gradient with respect to the network output F.

# R ensemble members, B batch, D data dimension (toy: y is R,B,D); images: y is N,C,H,W
Each loss comes in three parts, so a caller can hold the noise fixed or drive the backward pass
itself (a gradient check, Algorithm 1 on a model that is not one network):

- ``*_noise(y, rng, ...)`` draws the noise levels and the noise from the generator it is given;
- ``*_loss(net, ..., y, <levels>, <noise>)`` runs ``net.forward`` only and returns
  ``(loss, dL/dF)``: the loss of each ensemble member and the gradient with respect to F;
- ``*_loss_and_grad(net, ..., y, rng)`` is the training step's call: draw, loss,
  ``net.backward(dL/dF)``, return the loss.

Members are independent: the network's grads hold the gradient of sum_r L_r, so member r's
gradient is that of L_r alone.

Axes of y: the first ``member_ndim`` index ensemble members (1 for the toy, 0 for one image
model), the last ``data_ndim`` are one sample's data (1 for points, 3 for C,H,W), the rest are the
batch. Each sample gets its own noise level.
"""
from __future__ import annotations

from .. import backend


def _split(y, member_ndim: int, data_ndim: int):
    """Shapes: per-sample conditioning (members+batch) and the sigma broadcast shape."""
    sample_shape = y.shape[: y.ndim - data_ndim]
    return sample_shape, sample_shape + (1,) * data_ndim


def _member_mean(v, member_ndim: int):
    """Mean over all non-member axes: (members..., rest...) -> (members...)."""
    lead = v.shape[:member_ndim]
    return v.reshape(lead + (-1,)).mean(axis=-1)


# ------------------------------------------------------------------------------------------------
# EDM (Karras et al. 2022)
# ------------------------------------------------------------------------------------------------

def edm_noise(y, rng, P_mean: float = -1.2, P_std: float = 1.2, member_ndim: int = 1,
              data_ndim: int = 1):
    """ln sigma ~ N(P_mean, P_std^2) per sample, n ~ N(0, sigma^2 I): returns (sigma, n), sigma
    shaped to broadcast against y (R,B,1) and n like y (R,B,D). Draws sigma's normals first,
    then n's."""
    xp = backend.xp(y)
    _, sigma_shape = _split(y, member_ndim, data_ndim)
    sigma = xp.exp(rng.standard_normal(sigma_shape, dtype=y.dtype) * P_std + P_mean)  # R,B,1
    n = rng.standard_normal(y.shape, dtype=y.dtype) * sigma  # R,B,D
    return sigma, n


def edm_loss(net, precond, y, sigma, n, member_ndim: int = 1, data_ndim: int = 1):
    """EDM loss (eq. 2 and Table 1's training rows) for given noise levels sigma (R,B,1) and
    noise n (R,B,D); runs ``net.forward`` only and returns (loss (R), dL/dF (R,B,D)):

        L = lambda(sigma) || D(y + n; sigma) - y ||^2,  lambda = 1 / c_out^2

    lambda = 1/c_out^2 equals EDM's (sigma^2 + sd^2)/(sigma sd)^2 under EDM preconditioning and
    1/sigma^2 under VP, so F's effective regression target always has unit weight.
    """
    sample_shape, _ = _split(y, member_ndim, data_ndim)
    c_skip, c_out, c_in, c_noise = precond.coefficients(sigma)  # each R,B,1
    x = y + n
    F = net.forward(c_in * x, c_noise.reshape(sample_shape))  # R,B,D
    err = c_skip * x + c_out * F - y  # D(x; sigma) - y, R,B,D
    weight = 1 / c_out ** 2
    loss = _member_mean(weight * err ** 2, member_ndim)  # R
    count = err.size // max(1, loss.size)  # terms averaged into each member's loss
    dF = ((2.0 / count) * weight * c_out * err).astype(F.dtype, copy=False)  # R,B,D
    return loss, dF


def edm_loss_and_grad(net, precond, y, rng, P_mean: float = -1.2, P_std: float = 1.2,
                      member_ndim: int = 1, data_ndim: int = 1):
    """One EDM training step's loss: draw (sigma, n), :func:`edm_loss`, ``net.backward(dL/dF)``.
    Returns the loss of each member (R)."""
    sigma, n = edm_noise(y, rng, P_mean, P_std, member_ndim, data_ndim)
    loss, dF = edm_loss(net, precond, y, sigma, n, member_ndim, data_ndim)
    net.backward(dF)
    return loss


# ------------------------------------------------------------------------------------------------
# DDPM (Ho et al. 2020)
# ------------------------------------------------------------------------------------------------

def ddpm_noise(y, rng, T: int, member_ndim: int = 1, data_ndim: int = 1):
    """t ~ U{1..T-1} per sample (integers, R,B) and eps ~ N(0, I) like y (R,B,D): returns
    (t, eps). Draws t first, then eps."""
    sample_shape, _ = _split(y, member_ndim, data_ndim)
    t = rng.integers(1, T, size=sample_shape)  # R,B
    eps = rng.standard_normal(y.shape, dtype=y.dtype)  # R,B,D
    return t, eps


def ddpm_loss(net, alpha_bar, y, t, eps, member_ndim: int = 1, data_ndim: int = 1):
    """DDPM epsilon-prediction loss (eq. 14) for given steps t (R,B) and noise eps (R,B,D);
    runs ``net.forward`` only and returns (loss (R), dL/dF (R,B,D)):

        x_t = sqrt(ab_t) y + sqrt(1 - ab_t) eps,  L = || F(x_t, t) - eps ||^2

    The network is fed the raw step index t, as in the toy the paper cites.
    """
    xp = backend.xp(y)
    _, sigma_shape = _split(y, member_ndim, data_ndim)
    ab = xp.asarray(alpha_bar, dtype=y.dtype)[t].reshape(sigma_shape)  # R,B,1
    x_t = xp.sqrt(ab) * y + xp.sqrt(1 - ab) * eps
    err = net.forward(x_t, t.astype(y.dtype)) - eps  # R,B,D
    loss = _member_mean(err ** 2, member_ndim)  # R
    count = err.size // max(1, loss.size)
    return loss, (2.0 / count) * err  # R and R,B,D


def ddpm_loss_and_grad(net, alpha_bar, y, rng, member_ndim: int = 1, data_ndim: int = 1):
    """One DDPM training step's loss: draw (t, eps), :func:`ddpm_loss`, ``net.backward(dL/dF)``.
    Returns the loss of each member (R)."""
    t, eps = ddpm_noise(y, rng, len(alpha_bar), member_ndim, data_ndim)
    loss, dF = ddpm_loss(net, alpha_bar, y, t, eps, member_ndim, data_ndim)
    net.backward(dF)
    return loss
