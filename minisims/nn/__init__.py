"""Hand-written neural network layers: forward caches, backward mirrors.

Toy: Linear, ReLU, SiLU, NoiseEmbedding, the MLP denoiser. Images: Conv2d, GroupNorm, resampling,
Dropout, SelfAttention2d, ResBlock, the UNet. Optimisation: Adam, EMA.
"""
from .attention import SelfAttention2d
from .blocks import Downsample, ResBlock, Upsample
from .conv import Conv2d
from .dropout import Dropout
from .embedding import NoiseEmbedding
from .layers import Linear, ReLU, Sequential, SiLU
from .mlp import MLPConfig, MLPDenoiser
from .module import Module
from .norm import GroupNorm
from .optim import EMA, Adam
from .resample import AvgPool2x, Upsample2x
from .unet import UNet, UNetConfig

__all__ = ["Module", "Linear", "ReLU", "SiLU", "Sequential", "NoiseEmbedding", "MLPConfig",
           "MLPDenoiser", "Adam", "EMA", "Conv2d", "GroupNorm", "Upsample2x", "AvgPool2x", "Dropout",
           "SelfAttention2d", "ResBlock", "Downsample", "Upsample", "UNet", "UNetConfig"]
