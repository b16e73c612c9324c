"""A small UNet for images, in the spirit of EDM's DDPM++ (Karras et al. 2022, Appendix F.2),
with every backward written by hand. Its encoder and decoder are separate modules so that the
SIMS auxiliary model can fine-tune the decoder alone and share the encoder pass with the base
model (paper Appendix A: 1.5x NFE instead of 2x, counted in passes: the decoder holds most of
the compute, so a guided step costs about 1.8x one model; see :mod:`minisims.shared_encoder`).

# N batch, C channels, H W spatial, E embedding width, K Fourier frequencies, L levels
Shapes for UNetConfig(img_resolution=32, channels=64, channel_mult=(1, 2, 2)):

    encoder  c_noise (N,) -> fourier (N,2K) -> Linear,SiLU,Linear,SiLU -> emb (N,E)
             x (N,3,32,32) -> conv_in (N,64,32,32)
             level 0: blocks_per_level x ResBlock(64)            at 32x32, then Downsample
             level 1: blocks_per_level x ResBlock(128)           at 16x16, then Downsample
             level 2: blocks_per_level x ResBlock(128)           at  8x8
             every stage's output is kept as a skip: (skips, emb) is the encoder's output
    decoder  two ResBlocks at 8x8 (the first with attention), then per level, coarse to fine,
             blocks_per_level+1 x ResBlock(concat(h, skip)), then Upsample;
             GroupNorm, SiLU, conv_out -> F (N,3,32,32)

The network is F in D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) (minisims.diffusion.EDM).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import backend
from .blocks import Downsample, ResBlock, Upsample, concat_channels
from .conv import Conv2d
from .dropout import dropouts, set_dropout
from .layers import Linear, Module, NoiseEmbedding, SiLU
from .norm import GroupNorm, num_groups_for


@dataclass
class UNetConfig:
    img_resolution: int = 32      # H = W of the input
    in_channels: int = 3
    out_channels: int = 3
    channels: int = 64            # channels at the first level
    channel_mult: tuple = (1, 2, 2)   # per level; each level after the first halves H and W
    blocks_per_level: int = 2
    attn_resolutions: tuple = (16,)   # resolutions whose ResBlocks end in self-attention
    dropout: float = 0.1
    num_freqs: int = 16           # K: the noise level enters as 2K Fourier features
    max_freq: float = 32.0
    emb_mult: int = 4             # E = emb_mult * channels
    max_groups: int = 32          # GroupNorm: min(32, C // 4) groups
    resample_conv: bool = True    # stride-2 conv down / nearest + conv up; False: avg pool / nearest
    init_zero: float = 1e-5       # init scale of the last conv of each residual branch and the output

    def __post_init__(self):
        self.channel_mult = tuple(self.channel_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)
        if self.img_resolution % 2 ** (len(self.channel_mult) - 1):
            raise ValueError(f"img_resolution {self.img_resolution} cannot be halved "
                             f"{len(self.channel_mult) - 1} times")

    @property
    def emb_dim(self) -> int:
        return self.emb_mult * self.channels

    def groups(self, c: int) -> int:
        return num_groups_for(c, self.max_groups)


@dataclass
class EncoderOutput:
    """What the decoder needs: every encoder stage's output (skips[-1] is the bottom) and emb."""
    skips: list = field(default_factory=list)   # (N,C_s,H_s,W_s) each
    emb: object = None                          # N,E


class UNetEncoder(Module):
    """(x (N,Cin,H,W), c_noise (N,)) -> EncoderOutput."""

    def __init__(self, cfg: UNetConfig, rng, dtype=np.float32):
        super().__init__()
        E = cfg.emb_dim
        self.embed = NoiseEmbedding("fourier", cfg.num_freqs, cfg.max_freq, dtype=dtype)
        self.map0 = Linear(self.embed.dim, E, rng, dtype=dtype)
        self.map_act0 = SiLU()
        self.map1 = Linear(E, E, rng, dtype=dtype)
        self.map_act1 = SiLU()
        C0 = cfg.channels * cfg.channel_mult[0]
        self.stages = [Conv2d(cfg.in_channels, C0, 3, rng, dtype=dtype)]
        self.skip_channels = [C0]
        cin, res = C0, cfg.img_resolution
        for level, mult in enumerate(cfg.channel_mult):
            cout = cfg.channels * mult
            for _ in range(cfg.blocks_per_level):
                self.stages.append(ResBlock(cin, cout, E, rng, cfg.groups(cin), cfg.groups(cout),
                                            cfg.dropout, res in cfg.attn_resolutions,
                                            cfg.init_zero, dtype))
                cin = cout
                self.skip_channels.append(cout)
            if level < len(cfg.channel_mult) - 1:
                self.stages.append(Downsample(cout, rng, cfg.resample_conv, dtype))
                self.skip_channels.append(cout)
                res //= 2
        self.children = {"embed": self.embed, "map0": self.map0, "map_act0": self.map_act0,
                         "map1": self.map1, "map_act1": self.map_act1}
        self.children.update({f"stage{i}": s for i, s in enumerate(self.stages)})

    def forward(self, x, c_noise):
        emb = self.map_act0.forward(self.map0.forward(self.embed.forward(c_noise)))  # N,E
        emb = self.map_act1.forward(self.map1.forward(emb))  # N,E
        skips, h = [], x
        for stage in self.stages:
            h = stage.forward(h, emb) if isinstance(stage, ResBlock) else stage.forward(h)
            skips.append(h)  # N,C_s,H_s,W_s
        return EncoderOutput(skips, emb)

    def backward(self, denc: EncoderOutput):
        """denc, the gradient of the output (EncoderOutput: one gradient per skip, and demb
        (N,E)) -> (dx (N,Cin,H,W), dc_noise (N,)). Adds into denc.emb in place."""
        dskips, demb = denc.skips, denc.emb
        g = dskips[-1]
        for i in reversed(range(len(self.stages))):
            stage = self.stages[i]
            if isinstance(stage, ResBlock):
                g, de = stage.backward(g)
                demb += de
            else:
                g, = stage.backward(g)
            if i > 0:
                g = g + dskips[i - 1]  # the input of stage i is also skip i-1
        demb, = self.map_act1.backward(demb)
        demb, = self.map1.backward(demb)
        demb, = self.map_act0.backward(demb)
        demb, = self.map0.backward(demb)  # N,2K
        dc_noise, = self.embed.backward(demb)  # N
        return g, dc_noise


class UNetDecoder(Module):
    """EncoderOutput -> F (N,Cout,H,W)."""

    def __init__(self, cfg: UNetConfig, skip_channels: list, rng, dtype=np.float32):
        super().__init__()
        E, L = cfg.emb_dim, len(cfg.channel_mult)
        skip_ch = list(skip_channels)
        cin = skip_ch[-1]
        res = cfg.img_resolution // 2 ** (L - 1)
        g = cfg.groups
        self.mid = [ResBlock(cin, cin, E, rng, g(cin), g(cin), cfg.dropout, True, cfg.init_zero, dtype),
                    ResBlock(cin, cin, E, rng, g(cin), g(cin), cfg.dropout, False, cfg.init_zero, dtype)]
        # stages: ResBlocks that take one skip each (concatenated to their input), and Upsamples
        self.stages = []
        for level in reversed(range(L)):
            cout = cfg.channels * cfg.channel_mult[level]
            for _ in range(cfg.blocks_per_level + 1):
                c = cin + skip_ch.pop()
                self.stages.append(ResBlock(c, cout, E, rng, g(c), g(cout), cfg.dropout,
                                            res in cfg.attn_resolutions, cfg.init_zero, dtype))
                cin = cout
            if level > 0:
                self.stages.append(Upsample(cout, rng, cfg.resample_conv, dtype))
                res *= 2
        self.norm_out = GroupNorm(cin, g(cin), silu=True, dtype=dtype)  # GroupNorm, then SiLU
        self.conv_out = Conv2d(cin, cfg.out_channels, 3, rng, init_scale=cfg.init_zero, dtype=dtype)
        self.children = {f"mid{i}": b for i, b in enumerate(self.mid)}
        self.children.update({f"stage{i}": s for i, s in enumerate(self.stages)})
        self.children.update({"norm_out": self.norm_out, "conv_out": self.conv_out})

    def forward(self, enc: EncoderOutput):
        emb, skips = enc.emb, enc.skips
        h = skips[-1]
        for block in self.mid:
            h = block.forward(h, emb)
        self.split = []  # channels of h before each concatenation: backward splits there
        j = len(skips)
        for stage in self.stages:
            if isinstance(stage, ResBlock):
                j -= 1
                self.split.append(h.shape[1])
                h = stage.forward(concat_channels(h, skips[j]), emb)  # N,C+C_j,H,W -> N,C',H,W
            else:
                h = stage.forward(h)
        return self.conv_out.forward(self.norm_out.forward(h))  # N,Cout,H,W

    def backward(self, dF):
        """dF (N,Cout,H,W) -> (denc,): the gradient of the one argument, an EncoderOutput holding
        one gradient per skip (in skip order) and demb (N,E)."""
        dh, = self.conv_out.backward(dF)
        dh, = self.norm_out.backward(dh)  # N,C,H,W
        n = len(self.split)
        dskips = [None] * n
        demb = None
        k = n  # concatenation k (in forward order) took skip n-1-k
        for stage in reversed(self.stages):
            if isinstance(stage, ResBlock):
                k -= 1
                dcat, de = stage.backward(dh)  # N,C+C_j,H,W
                demb = de if demb is None else demb + de
                c = self.split[k]
                dh, dskips[n - 1 - k] = dcat[:, :c], dcat[:, c:]  # N,C,H,W and N,C_j,H,W
            else:
                dh, = stage.backward(dh)
        for block in reversed(self.mid):
            dh, de = block.backward(dh)
            demb += de
        dskips[-1] = dskips[-1] + dh  # the bottom skip is also the mid blocks' input
        return (EncoderOutput(dskips, demb),)


class UNet(Module):
    """F(x, c_noise): x (N,Cin,H,W), c_noise (N,) or a scalar -> (N,Cout,H,W).

    ``train_encoder = False`` freezes the encoder: backward stops at the decoder, the encoder's
    grads stay zero (so Adam leaves its weights exactly unchanged) and backward returns
    (None, None): no gradient reaches x or c_noise.
    ``set_dropout(rng)`` turns dropout on with masks from ``rng`` shared by every layer,
    ``set_dropout(seed=s)`` with one generator per layer; ``set_dropout(None)`` (the default)
    turns it off for sampling (see :func:`minisims.nn.dropout.set_dropout`).
    """

    def __init__(self, cfg: UNetConfig, rng, dtype=np.float32):
        super().__init__()
        self.cfg, self.dtype = cfg, dtype
        self.encoder = UNetEncoder(cfg, rng, dtype)
        self.decoder = UNetDecoder(cfg, self.encoder.skip_channels, rng, dtype)
        self.children = {"encoder": self.encoder, "decoder": self.decoder}
        self.train_encoder = True

    def dropouts(self) -> list:
        """Every Dropout layer of the network, in forward order (one per ResBlock: encoder
        stages, decoder mid blocks, decoder stages)."""
        return dropouts(self)

    def set_dropout(self, rng=None, *, rngs=None, seed=None) -> list:
        """Dropout on, with masks from ``rng`` (one generator shared by every layer, drawn in
        forward order), from ``rngs`` (one per layer, in :meth:`dropouts` order) or from one
        generator per layer spawned from ``seed``; all None turns it off. Copies (EMA shadows, the
        aux model) inherit the setting: turn it off on the model you sample from."""
        return set_dropout(self, rng, rngs=rngs, seed=seed)

    def sample_shape(self, n: int) -> tuple:
        """The shape of n images: (n,C,H,W)."""
        c = self.cfg
        return (n, c.in_channels, c.img_resolution, c.img_resolution)

    def encode(self, x, c_noise) -> EncoderOutput:
        xp = backend.xp(x)
        x = x.astype(self.dtype, copy=False)
        if isinstance(c_noise, (int, float, np.number)):  # a sampler's scalar: fill on the device
            c = xp.full(x.shape[0], c_noise, dtype=self.dtype)  # N
        else:
            c = xp.broadcast_to(c_noise.astype(self.dtype, copy=False), (x.shape[0],))  # N
        return self.encoder.forward(x, c)

    def decode(self, enc: EncoderOutput):
        return self.decoder.forward(enc)

    def forward(self, x, c_noise):
        return self.decode(self.encode(x, c_noise))  # N,Cout,H,W

    def backward(self, dF):
        """dF (N,Cout,H,W) -> (dx (N,Cin,H,W), dc_noise (N,)), or (None, None) with a frozen
        encoder. dc_noise holds one gradient per image even for a scalar c_noise."""
        denc, = self.decoder.backward(dF)
        if not self.train_encoder:
            return None, None
        return self.encoder.backward(denc)

