"""Image sets: the container, the model's pixel scale, and the two plain file formats.

# N images, H W height and width, C channels (3: RGB)

- :class:`ImageSet`: uint8 images (N,H,W,3) as they sit in files (NHWC), labels or None, and
  where they came from.
- :func:`to_model` / :func:`to_uint8`: uint8 NHWC <-> float32 NCHW in [-1, 1], the scale of EDM and
  DDPM (x / 127.5 - 1); the round trip is exact for every uint8 value.
- :func:`read_png_folder`, :func:`read_npz`: the two formats in which diffusion codebases
  exchange samples (EDM, pytorch-fid, clean-fid: a folder of PNGs; ADM: an npz with uint8 NHWC
  under ``arr_0``). CIFAR-10's own format, and :func:`~minisims.data.cifar10.load_images` which
  picks the reader for a path, are in ``cifar10.py``.

Every bad input raises :class:`DataError` with a one-line message naming the file, so a command
line can print ``prog: error: <message>`` and exit 2 without a traceback.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .. import backend


class DataError(ValueError):
    """Input data that cannot be used; the message is one line and names the file."""


def one_line(e: BaseException) -> str:
    """An exception's text on one line (some libraries' messages span several)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text


@dataclass
class ImageSet:
    """Images as stored: ``images`` uint8 (N,H,W,3), ``labels`` int64 (N,) or None, ``source``
    (what was read, for logs)."""
    images: np.ndarray
    labels: np.ndarray | None
    source: str

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise DataError(f"{self.source}: images must be uint8 (N,H,W,3), got "
                            f"{self.images.dtype} {self.images.shape}")
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise DataError(f"{self.source}: {len(self.images)} images but labels of shape "
                            f"{self.labels.shape}")

    def __len__(self) -> int:
        return len(self.images)


# ------------------------------------------------------------------------------------------------
# The model's scale
# ------------------------------------------------------------------------------------------------

def to_model(images):
    """uint8 (N,H,W,C) -> float32 (N,C,H,W) in [-1, 1], in the input's array module (NumPy/CuPy)."""
    xp = backend.xp(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DataError(f"to_model expects uint8 (N,H,W,C) images, got {images.dtype} {images.shape}")
    x = xp.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(xp.float32)  # N,C,H,W
    return x / xp.float32(127.5) - xp.float32(1.0)  # N,C,H,W in [-1, 1]


def to_uint8(x) -> np.ndarray:
    """float (N,C,H,W) in [-1, 1] -> uint8 (N,H,W,C) on the host: (x + 1) * 127.5, rounded half to
    even (np.rint) and clipped to 0..255. Inverts :func:`to_model` exactly on its outputs."""
    x = backend.to_numpy(x)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"to_uint8 expects float (N,C,H,W), got {x.dtype} {x.shape}")
    if not np.isfinite(x).all():  # a diverged model: say so rather than write black pixels
        raise DataError(f"to_uint8: {np.count_nonzero(~np.isfinite(x))} values are NaN or infinite")
    y = np.clip(np.rint((x + 1) * x.dtype.type(127.5)), 0, 255).astype(np.uint8)  # N,C,H,W
    return np.ascontiguousarray(y.transpose(0, 2, 3, 1))  # N,H,W,C


# ------------------------------------------------------------------------------------------------
# A folder of PNGs
# ------------------------------------------------------------------------------------------------

def _read_png(path: str) -> np.ndarray:
    """One PNG as uint8 (H,W,3).

    RGB as is. RGBA and palette images only when every pixel is fully opaque (the alpha channel
    is then dropped): a transparent pixel has no colour to train on, so it is an error, not a
    guess. Grayscale is an error (the models are RGB; convert deliberately if you mean it).
    """
    from PIL import Image  # Pillow: a dependency of minisims (and of matplotlib)
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise DataError(f"{path}: not a PNG file (it is {im.format})")
            im.load()  # decode now: a truncated or corrupt file fails here, not later
            mode = im.mode
            if mode == "P":  # palette: colours (and maybe transparency) through a lookup table
                im = im.convert("RGBA")
                mode = "RGBA"
            a = np.asarray(im)
    except DataError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
        raise DataError(f"{path}: cannot read this PNG ({one_line(e)})") from None
    if mode == "RGB":
        return a
    if mode == "RGBA":
        if (a[..., 3] != 255).any():
            raise DataError(f"{path}: RGBA image with transparent pixels; expected opaque RGB")
        return np.ascontiguousarray(a[..., :3])
    raise DataError(f"{path}: image mode {mode} (grayscale or other); expected RGB")


def read_png_folder(folder: str, *, limit: int | None = None) -> ImageSet:
    """The PNGs of ``folder`` (not its subfolders), sorted by file name, as one ImageSet (labels
    None). All must have the same size; ``limit`` reads only the first ``limit`` of them."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".png")
                   and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise DataError(f"{folder}: no PNG images in this folder")
    names = names[:limit] if limit is not None else names
    first = _read_png(os.path.join(folder, names[0]))
    images = np.empty((len(names),) + first.shape, np.uint8)  # N,H,W,3
    images[0] = first
    for i, name in enumerate(names[1:], start=1):
        path = os.path.join(folder, name)
        a = _read_png(path)
        if a.shape != first.shape:
            raise DataError(f"{path}: size {a.shape[1]}x{a.shape[0]} differs from "
                            f"{first.shape[1]}x{first.shape[0]} of {names[0]}; all images must "
                            f"have one size")
        images[i] = a
    return ImageSet(images, None, f"{folder} ({len(names)} PNG files)")


# ------------------------------------------------------------------------------------------------
# An npz of uint8 NHWC under arr_0
# ------------------------------------------------------------------------------------------------

def read_npz(path: str, *, limit: int | None = None) -> ImageSet:
    """``arr_0`` of an npz: uint8 (N,H,W,3) (the ADM convention). Never unpickles: object arrays
    are refused (``allow_pickle=False``)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise DataError(f"{path}: not an npz archive of arrays")
            if "arr_0" not in f.files:
                raise DataError(f"{path}: no array arr_0 (it holds {', '.join(f.files) or 'nothing'}); "
                                f"expected uint8 (N,H,W,3) images under arr_0")
            images = f["arr_0"]
    except DataError:
        raise
    except Exception as e:  # a pickle or object array (ValueError), a broken zip, a short file, ...
        raise DataError(f"{path}: cannot read arr_0 without unpickling ({one_line(e)})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{path}: arr_0 is {images.dtype} {images.shape}; expected uint8 (N,H,W,3)")
    if len(images) == 0:
        raise DataError(f"{path}: arr_0 holds no images")
    images = images[:limit] if limit is not None else images
    return ImageSet(np.ascontiguousarray(images), None, f"{path} (npz, {len(images)} images)")


def host_uint8_images(images, what: str = "this function") -> np.ndarray:
    """uint8 images (N,H,W,3) as a NumPy array (CuPy arrays are copied to the host); anything else
    is a ValueError saying that ``what`` takes such images."""
    images = backend.to_numpy(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{what} take uint8 images (N,H,W,3), got {images.dtype} {images.shape}")
    return images
