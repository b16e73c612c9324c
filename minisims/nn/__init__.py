"""Hand-written neural network layers: forward caches, backward mirrors. Import each from its module:

    layers.py     the Module contract; Linear, ReLU, SiLU, Sequential, NoiseEmbedding
    mlp.py        MLPDenoiser, the 2D toy's network (mlp_fused.py: its GPU twin)
    conv.py       Conv2d                      norm.py       GroupNorm (+ SiLU)
    resample.py   Upsample2x, AvgPool2x       dropout.py    Dropout
    attention.py  SelfAttention2d             blocks.py     ResBlock, Downsample, Upsample
    unet.py       UNet, the image network

Adam and the EMA of the weights live in minisims/train.py, beside the loop that uses them.
This file imports nothing, so that the 2D toy loads the MLP and never the UNet.
"""
