"""Image features for the Frechet distance: pluggable, and the default needs no download.

# N images, H W size, C channels (3), D features
FID is the Frechet distance between Gaussians fitted to Inception-v3 pool3 features of two image
sets (Heusel et al. 2017). Every FID package fetches the Inception weights at run time, none ships
them, so this project's own number is an FD on features that any machine builds from nothing:

- ``"randconv"`` (the default): a fixed random convolutional network built from minisims.nn layers
  with weights drawn from ``np.random.default_rng(20240607)``, so every machine builds the same
  network. Three stages of 3x3 Conv2d + ReLU (3->32->64->128 channels) with 2x2 average pooling
  between them; the features are, at each stage, the spatial mean and the spatial standard
  deviation of every channel (2 x 224 = 448 features). Float64 throughout, so features do not
  depend on the batch size beyond rounding (measured: bit for bit equal at batches 4 to 500).
- ``"pixels"``: the image block-averaged to 8x8, scaled to [-1, 1] (192 features).
- ``"inception"`` (opt-in, real FID): pytorch-fid's InceptionV3 pool3 (2048 features), only when
  torch and pytorch_fid import AND the FID weights are already in the torch hub cache; otherwise
  :class:`FeaturesUnavailable` says what is missing. Nothing here downloads anything.

A number computed on these features is labelled ``FD_<name>`` (:func:`fd_label`), never "FID":
FD values on different features are not comparable with each other or with published FIDs.
Even ``FD_inception`` is only the paper's FID under its protocol (50k samples against the
training set's statistics), which the label cannot know, so it keeps the FD_ prefix too.

Why randconv is the default: on real photo patches, noise, blur and colour casts lift
FD_randconv above the sample-noise floor far more than FD_pixels (Gaussian noise of 8 grey
levels: 3.3x against 1.1x; the table and its command: docs/notes/core.md), as its per-channel
spread at each stage responds to high-frequency energy (noise, blur) that an 8x8 average cannot
see, and its float64 GEMMs (kernels.conv2d's NumPy version) are cheap enough for two CPU cores.
"pixels" stays as the transparent, instant baseline. CuPy input is copied to the host.
"""
from __future__ import annotations

import math
import os

import numpy as np

from minisims.kernels.conv2d import conv2d_forward

from . import backend, metrics
from .data.images import host_uint8_images
from .nn.conv import Conv2d
from .nn.layers import ReLU
from .nn.resample import AvgPool2x

DEFAULT_FEATURES = "randconv"
RANDCONV_SEED = 20240607  # fixed forever: changing it changes every FD_randconv ever reported

INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"  # pytorch_fid.inception.FID_WEIGHTS_URL


class FeaturesUnavailable(RuntimeError):
    """A feature extractor cannot run on this machine (a package or weights file is missing)."""


def fd_label(name: str) -> str:
    """The name of an FD on features ``name``: 'FD_randconv', 'FD_pixels', 'FD_inception'."""
    if name not in FEATURES:
        raise ValueError(f"unknown features {name!r}: use one of {sorted(FEATURES)}")
    return f"FD_{name}"


def _batches(images, batch: int):
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    for i in range(0, len(images), batch):
        yield images[i:i + batch]


class PixelFeatures:
    """The image averaged over size x size blocks down to 8x8, in [-1, 1]. (N,H,W,3) -> (N,192)."""

    name = "pixels"

    def __init__(self, side: int = 8):
        self.side = side
        self.dim = side * side * 3

    def __call__(self, images, batch: int = 500) -> np.ndarray:
        images = host_uint8_images(images, "features")
        N, H, W, C = images.shape
        s = self.side
        if H % s or W % s:
            raise ValueError(f"pixels features need a size divisible by {s}, got {H}x{W}")
        out = np.empty((N, self.dim), np.float64)  # N,D
        for i, x in zip(range(0, N, batch), _batches(images, batch)):
            x = x.astype(np.float64) / 127.5 - 1.0  # n,H,W,3
            x = x.reshape(len(x), s, H // s, s, W // s, C).mean(axis=(2, 4))  # n,s,s,3
            out[i:i + len(x)] = x.reshape(len(x), -1)
        return out


class RandConvFeatures:
    """A fixed random conv net; per stage the spatial mean and std of each channel.

    (N,H,W,3) uint8 -> (N,448) float64; H and W divisible by 4. Weights: He-uniform
    (Conv2d's U(-b, b) with init_scale sqrt(6), so b = sqrt(6 / fan_in)) from
    ``np.random.default_rng(seed)``, biases from the same draw.
    """

    name = "randconv"

    def __init__(self, seed: int = RANDCONV_SEED, widths=(32, 64, 128)):
        rng = np.random.default_rng(seed)
        cins = (3,) + tuple(widths[:-1])
        self.convs = [Conv2d(ci, co, 3, rng, init_scale=math.sqrt(6.0), dtype=np.float64)
                      for ci, co in zip(cins, widths)]
        self.relu, self.pool = ReLU(), AvgPool2x()
        self.dim = 2 * sum(widths)
        # the weights live on the current device; the extractor computes with NumPy
        for conv in self.convs:
            conv.params = {k: backend.to_numpy(v) for k, v in conv.params.items()}

    def _one_batch(self, x) -> np.ndarray:
        h = x.astype(np.float64).transpose(0, 3, 1, 2) / 127.5 - 1.0  # n,3,H,W
        feats = []
        for k, conv in enumerate(self.convs):
            if k > 0:
                h = self.pool.forward(h)  # n,C,H/2,W/2
            # kernels/conv2d.py's "numpy" version (im2col + float64 GEMM): the same numbers on
            # every machine and device, no JIT to compile, whatever minisims.ops.FAST says
            W, b = conv.params["W"], conv.params["b"]
            h = self.relu.forward(conv2d_forward(h, W, b, 1, 1, impl="numpy"))  # n,Ck,Hk,Wk
            flat = h.reshape(h.shape[0], h.shape[1], -1)  # n,Ck,HkWk: one contiguous axis is faster
            feats += [flat.mean(axis=-1), flat.std(axis=-1)]  # n,Ck each
        return np.concatenate(feats, axis=1)  # n,D

    def __call__(self, images, batch: int = 100) -> np.ndarray:  # fastest tried: docs/notes/core.md
        images = host_uint8_images(images, "features")
        if images.shape[1] % 4 or images.shape[2] % 4:
            raise ValueError(f"randconv features need a size divisible by 4, got "
                             f"{images.shape[1]}x{images.shape[2]}")
        out = np.empty((len(images), self.dim), np.float64)  # N,D
        for i, x in zip(range(0, len(images), batch), _batches(images, batch)):
            out[i:i + len(x)] = self._one_batch(x)
        self.relu.mask = None  # drop the cached mask: an extractor never runs backward
        return out


# ------------------------------------------------------------------------------------------------
# Real FID, opt-in: pytorch-fid's network and weights, only where they are already on the machine.
# ------------------------------------------------------------------------------------------------

def inception_weights_path(hub_dir: str) -> str:
    """Where torch.hub keeps pytorch-fid's FID weights: <hub_dir>/checkpoints/<file>."""
    return os.path.join(hub_dir, "checkpoints", INCEPTION_WEIGHTS)


_HOW = ("pip install torch pytorch-fid, then run pytorch-fid once with network access "
        "(e.g. python -m pytorch_fid a b on two small PNG folders) to cache its Inception weights")


def check_inception() -> str:
    """The cached weights file when real FID can run here with no download; else raise
    :class:`FeaturesUnavailable` with a one-line reason and the fix."""
    missing = []
    for module in ("torch", "pytorch_fid"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise FeaturesUnavailable(f"inception features need {' and '.join(missing)}, which "
                                  f"{'is' if len(missing) == 1 else 'are'} not installed: {_HOW}")
    import torch
    path = inception_weights_path(torch.hub.get_dir())
    if not os.path.isfile(path):
        raise FeaturesUnavailable(f"inception features need pytorch-fid's weights at {path}, "
                                  f"which is missing (this code never downloads): {_HOW}")
    return path


class InceptionFeatures:
    """pytorch-fid's InceptionV3 pool3 features, exactly as pytorch-fid computes them.

    pytorch-fid reads PNGs as floats in [0, 1] (NCHW), the network resizes them to 299x299
    bilinearly and normalises to [-1, 1] itself (resize_input, normalize_input), and pool3 is
    2048-dimensional. (N,H,W,3) uint8 -> (N,2048) float64.
    """

    name = "inception"
    dim = 2048

    def __init__(self, device: str | None = None):
        check_inception()  # before anything could reach for the network
        import torch
        from pytorch_fid.inception import InceptionV3
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        block = InceptionV3.BLOCK_INDEX_BY_DIM[self.dim]
        self.model = InceptionV3([block]).to(self.device).eval()

    def __call__(self, images, batch: int = 100) -> np.ndarray:
        torch = self.torch
        images = host_uint8_images(images, "features")
        out = np.empty((len(images), self.dim), np.float64)  # N,D
        with torch.no_grad():
            for i, x in zip(range(0, len(images), batch), _batches(images, batch)):
                t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # n,3,H,W
                t = t.to(self.device, torch.float32) / 255.0
                pred = self.model(t)[0]  # n,2048,1,1
                out[i:i + len(x)] = pred.squeeze(3).squeeze(2).cpu().numpy()
        return out


FEATURES = {"randconv": RandConvFeatures, "pixels": PixelFeatures, "inception": InceptionFeatures}


def get_extractor(name: str = DEFAULT_FEATURES):
    """A fresh extractor for features ``name`` (see :data:`FEATURES`)."""
    if name not in FEATURES:
        raise ValueError(f"unknown features {name!r}: use one of {sorted(FEATURES)}")
    return FEATURES[name]()


def image_stats(images, features: str = DEFAULT_FEATURES, batch: int | None = None):
    """mu (D,) and sigma (D,D), float64 with n-1, of the features of uint8 images (N,H,W,3);
    ``batch`` None takes the extractor's own default."""
    extract = get_extractor(features)
    return metrics.feature_stats(extract(images, **({} if batch is None else {"batch": batch})))


def fd_images(a, b, features: str = DEFAULT_FEATURES, batch: int | None = None) -> float:
    """FD between two sets of uint8 images (N,H,W,3) on ``features``; report it as
    ``fd_label(features)``."""
    return metrics.fd_from_stats(*image_stats(a, features, batch), *image_stats(b, features, batch))


# ------------------------------------------------------------------------------------------------
# The measurement behind the choice of default (python -m minisims.features).
# ------------------------------------------------------------------------------------------------

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
          "motorcycle_left.png", "retina.jpg", "rocket.jpg")  # scikit-image's bundled colour photos


def photo_patches(size: int = 32, photos=PHOTOS, scales=(1, 2)):
    """Two disjoint sets of uint8 patches (n,size,size,3) from real photographs.

    Each photograph (at full size and block-averaged by each of ``scales``) is cut on a grid of
    size x size tiles; tiles on the white squares of a checkerboard go to A, the others to B, so
    the two sets hold different pixels of the same pictures. Needs scikit-image (test extra).
    """
    import skimage.data
    from PIL import Image
    A, B = [], []
    for name in photos:  # read the files scikit-image ships, never its download cache
        with Image.open(os.path.join(skimage.data.data_dir, name)) as f:
            img = np.asarray(f.convert("RGB"), np.float64)  # H,W,3
        for s in scales:
            H, W = (img.shape[0] // s) * s, (img.shape[1] // s) * s
            im = img[:H, :W].reshape(H // s, s, W // s, s, 3).mean(axis=(1, 3))  # H/s,W/s,3
            im = np.round(im).astype(np.uint8)
            for r in range(im.shape[0] // size):
                for c in range(im.shape[1] // size):
                    tile = im[r * size:(r + 1) * size, c * size:(c + 1) * size]  # size,size,3
                    (A if (r + c) % 2 == 0 else B).append(tile)
    return np.stack(A), np.stack(B)


def add_noise(images, sigma: float, rng) -> np.ndarray:
    """Gaussian noise of ``sigma`` grey levels, rounded and clipped to uint8."""
    noisy = images + sigma * rng.standard_normal(images.shape)  # N,H,W,3
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def blur(images, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels (Pillow), per image."""
    from PIL import Image, ImageFilter
    return np.stack([np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(sigma)))
                     for x in images])


def colour_shift(images, delta: float) -> np.ndarray:
    """Red up and blue down by ``delta`` grey levels: a colour cast, clipped to uint8."""
    shift = np.array([delta, 0.0, -delta])
    return np.clip(np.round(images + shift), 0, 255).astype(np.uint8)


def distortion_table(names=("randconv", "pixels"), n_time: int = 2000, seed: int = 0) -> str:
    """The table behind the default (docs/notes/core.md): FD(A, distorted B) / FD(A, B) for each
    features, and timings."""
    import time
    A, B = photo_patches()
    n = min(len(A), len(B))
    A, B = A[:n], B[:n]
    rng = np.random.default_rng(seed)
    rows = [("noise sigma 2", add_noise(B, 2, rng)), ("noise sigma 4", add_noise(B, 4, rng)),
            ("noise sigma 8", add_noise(B, 8, rng)), ("noise sigma 16", add_noise(B, 16, rng)),
            ("blur sigma 0.5", blur(B, 0.5)), ("blur sigma 1", blur(B, 1.0)),
            ("colour cast 4", colour_shift(B, 4)), ("colour cast 8", colour_shift(B, 8)),
            ("colour cast 16", colour_shift(B, 16))]
    cols = {}
    for name in names:
        extract = get_extractor(name)
        stats_A = metrics.feature_stats(extract(A))
        fd = lambda X: metrics.fd_from_stats(*stats_A, *metrics.feature_stats(extract(X)))  # noqa
        floor = fd(B)
        big = np.concatenate([A, B] * (n_time // (2 * n) + 1))[:n_time]
        t0 = time.perf_counter()
        extract(big)
        seconds = time.perf_counter() - t0
        cols[name] = [f"{floor:.4g}"] + [f"{fd(X) / floor:.1f}x" for _, X in rows] \
            + [f"{seconds:.2f} s"]
    labels = ["FD(A, B): the floor"] + [label for label, _ in rows] \
        + [f"time, {n_time} images"]
    width = max(map(len, labels))
    lines = [f"    {'n = ' + str(n) + ' per set':<{width}}  " + "  ".join(f"{fd_label(c):>12}"
                                                                   for c in names)]
    for i, label in enumerate(labels):
        lines.append(f"    {label:<{width}}  " + "  ".join(f"{cols[c][i]:>12}" for c in names))
    return "\n".join(lines)


if __name__ == "__main__":
    print(distortion_table())
