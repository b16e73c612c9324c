"""Hand-written neural network layers: forward caches, backward mirrors.

Toy: Linear, ReLU, SiLU, NoiseEmbedding, the MLP denoiser. Images: Conv2d, GroupNorm, resampling,
Dropout, SelfAttention2d, ResBlock, the UNet. Optimisation: Adam, EMA.

Each name is imported from its module on first use, so that a program that needs a few of
them (the 2D toy: the MLP, not the UNet) loads only those.
"""
from ..lazy import lazy_names

_WHERE = {  # public name -> the module that defines it
    "Module": "module",
    "Linear": "layers", "ReLU": "layers", "SiLU": "layers", "Sequential": "layers",
    "NoiseEmbedding": "embedding",
    "MLPConfig": "mlp", "MLPDenoiser": "mlp",
    "Adam": "optim", "EMA": "optim",
    "Conv2d": "conv",
    "GroupNorm": "norm",
    "Upsample2x": "resample", "AvgPool2x": "resample",
    "Dropout": "dropout",
    "SelfAttention2d": "attention",
    "ResBlock": "blocks", "Downsample": "blocks", "Upsample": "blocks",
    "UNet": "unet", "UNetConfig": "unet",
}
__all__ = list(_WHERE)
__getattr__, __dir__ = lazy_names(__name__, _WHERE)
