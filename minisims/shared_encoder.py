"""SIMS with a shared encoder pass (paper Appendix A): 1.5x NFE instead of 2x, counting passes.
The decoder is the larger half (the middle blocks, and blocks widened by the skips: 84% of the
multiply-adds of tutorial 04's UNet, 74% of the default UNetConfig's), so a guided evaluation
costs 1 + that share of one model's compute, not 1.5x.

When the auxiliary model is fine-tuned with the UNet's encoder frozen (``aux.train_encoder =
False``), both models run the same encoder on the same input, so one encoder pass can feed both
decoders. :class:`SharedEncoderPair` makes two denoisers D_base(x; sigma) and D_aux(x; sigma) that
a sampler calls exactly like two separate models, and hands them to the formulation's own sampler
(``EDM.sample_with``): the combination is still eq. 5, the sampler and its settings are the
formulation's, plain or fused alike.

# N batch, C channels, H W spatial
The sharing: each denoiser notes the sampler's x (the object, not a copy) and sigma before the
formulation's preconditioning runs; the encoder pass is cached under that (x, sigma), so the aux
call that follows the base call at the same point reuses it, and any other call recomputes it.
Samplers never modify x in place between the two calls, which this relies on.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .diffusion import EDM
from .guidance import GuidanceInterval
from .nn.unet import UNet


class _DecoderView:
    """Looks like a network to ``EDM.model``: forward(x_in, c_noise) = decoder(shared encoder)."""

    def __init__(self, pair: "SharedEncoderPair", net: UNet):
        self.pair, self.net, self.dtype = pair, net, net.dtype

    def forward(self, x_in, c_noise):
        return self.net.decode(self.pair._encode(x_in, c_noise))  # N,C,H,W


class SharedEncoderPair:
    """Base and auxiliary denoisers sharing the base model's encoder pass.

    ``pair.base(x, sigma)`` and ``pair.aux(x, sigma)`` are D(x; sigma) of the two models, as
    ``formulation.model(net)`` would give them. Counters ``encoder_passes`` and
    ``decoder_passes`` count passes (for the NFE claim; the decoder is the larger half). Refuses
    an aux whose encoder weights differ from the base's or whose encoder is not frozen
    (``aux.train_encoder``).
    """

    def __init__(self, formulation: EDM, base: UNet, aux: UNet):
        # checked once, on the host: a differing encoder would silently change the aux model
        for (name, m_b, k), (_, m_a, _) in zip(base.encoder.named_parameters(),
                                               aux.encoder.named_parameters()):
            if not np.array_equal(backend.to_numpy(m_b.params[k]), backend.to_numpy(m_a.params[k])):
                raise ValueError(f"encoder parameter {name} differs between base and aux: the "
                                 "encoder pass can only be shared when the aux froze it")
        # equal weights today are not enough: an aux whose encoder trains can drift after this
        # one-time check, so the aux must say its encoder is frozen
        if aux.train_encoder:
            raise ValueError("aux.train_encoder is True: the encoder pass can only be shared with "
                             "an aux whose encoder is frozen (fine-tune it with trainable='decoder')")
        self.formulation, self.encoder_net = formulation, base
        self._point, self._key, self._enc = None, None, None  # (x, sigma) of the current call; the cache
        self.encoder_passes = self.decoder_passes = 0
        self.base = self._denoiser(base)
        self.aux = self._denoiser(aux)

    def _denoiser(self, net: UNet):
        model = self.formulation.model(_DecoderView(self, net))  # the formulation's preconditioning

        def denoise(x, sigma):
            self._point = (x, float(sigma))
            self.decoder_passes += 1
            return model(x, sigma)
        return denoise

    def _encode(self, x_in, c_noise):
        x, sigma = self._point
        if self._key is None or self._key[0] is not x or self._key[1] != sigma:
            self._enc = self.encoder_net.encode(x_in, c_noise)
            self._key = (x, sigma)  # holding x keeps its id from being reused
            self.encoder_passes += 1
        return self._enc

    def sample(self, shape, rng, w: float, interval: GuidanceInterval | None = None,
               progress: bool = False):
        """The formulation's EDM sampler, guided by eq. 5 with the shared pass. (N,C,H,W) float64.
        Where a step is not guided (w = 0, outside the interval) only the base is evaluated."""
        return self.formulation.sample_with(self.base, self.aux, shape, rng, w=w,
                                            interval=interval, progress=progress)
