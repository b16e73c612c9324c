"""Hand-written neural network layers: forward caches, backward mirrors."""
from .embedding import NoiseEmbedding
from .layers import Linear, ReLU, Sequential, SiLU
from .mlp import MLPConfig, MLPDenoiser
from .module import Module
from .optim import EMA, Adam

__all__ = ["Module", "Linear", "ReLU", "SiLU", "Sequential", "NoiseEmbedding", "MLPConfig",
           "MLPDenoiser", "Adam", "EMA"]
