"""Samples written where the FID tools look for them: PNGs, a zip of them, an npz, a grid.

# N images, H W size, 3 channels
Images here are uint8 (N,H,W,3). What each tool reads:

- :func:`write_pngs`: one PNG per seed, named ``{seed:06d}.png`` (EDM's generate.py): a folder
  of PNGs, which EDM's fid.py (``--images``), pytorch-fid and clean-fid take.
- :func:`write_png_zip`: the same PNGs in one zip, which EDM's fid.py also takes (its
  ImageFolderDataset reads a folder or a zip); one file instead of N.
- :func:`write_npz`: one npz holding ``arr_0`` (N,H,W,3) uint8, the ADM / guided-diffusion
  evaluator's format (its ``evaluator.py``); EDM, pytorch-fid and clean-fid do not read it.

:func:`image_grid` is for people: the images tiled into one PNG, optionally with a label under
each. Every file is written atomically (:func:`minisims.atomic.atomic_write`), so an interrupted
export never leaves a truncated PNG that an FID tool would read as a sample.
"""
from __future__ import annotations

import io
import math
import os
import zipfile

import numpy as np
from PIL import Image, ImageDraw

from .atomic import atomic_write
from .data.images import host_uint8_images


def _write_png(image, path: str) -> None:
    with atomic_write(path, "wb") as f:
        Image.fromarray(image, "RGB").save(f, format="PNG")


def _png_names(images, seeds):
    """The images as uint8 (N,H,W,3) and their file names ``{seed:06d}.png``, checked."""
    images = host_uint8_images(images, "exports")
    seeds = [int(s) for s in seeds]
    if len(seeds) != len(images):
        raise ValueError(f"{len(images)} images but {len(seeds)} seeds")
    if len(set(seeds)) != len(seeds) or min(seeds, default=0) < 0:
        raise ValueError("seeds must be distinct and >= 0: each names one file")
    return images, [f"{seed:06d}.png" for seed in seeds]


def write_pngs(images, seeds, folder: str) -> list[str]:
    """One PNG per image, ``folder/{seed:06d}.png``; returns the paths in order. (N,H,W,3)."""
    images, names = _png_names(images, seeds)
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, name) for name in names]
    for image, path in zip(images, paths):
        _write_png(image, path)
    return paths


def write_png_zip(images, seeds, path: str) -> None:
    """The PNGs of :func:`write_pngs` as the entries ``{seed:06d}.png`` of one zip, atomically.
    PNG is compressed already, so the entries are stored, not deflated again. (N,H,W,3)."""
    images, names = _png_names(images, seeds)
    with atomic_write(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for image, name in zip(images, names):
            buf = io.BytesIO()
            Image.fromarray(image, "RGB").save(buf, format="PNG")
            z.writestr(name, buf.getvalue())


def write_npz(images, path: str, provenance: dict | None = None) -> None:
    """All images in one npz under ``arr_0`` (N,H,W,3) uint8, atomically; with ``provenance`` (a
    record of what made them, minisims/images/provenance.py) its JSON under ``provenance``."""
    import json
    images = host_uint8_images(images, "exports")
    extra = {} if provenance is None else {"provenance": np.array(json.dumps(provenance))}
    with atomic_write(path, "wb") as f:
        np.savez(f, arr_0=images, **extra)


def image_grid(images, path: str, cols: int | None = None, labels=None, scale: int = 2,
               pad: int = 2) -> None:
    """The images tiled row by row into one PNG (each scaled up ``scale`` times, nearest), with
    ``labels[i]`` (a string, or None) written under image i; for looking, not for metrics."""
    images = host_uint8_images(images, "exports")
    N, H, W, _ = images.shape
    if N == 0:
        raise ValueError("image_grid needs at least one image")
    if labels is not None and len(labels) != N:
        raise ValueError(f"{N} images but {len(labels)} labels")
    cols = cols or math.ceil(math.sqrt(N))
    rows = math.ceil(N / cols)
    h, w = H * scale, W * scale
    text_h = 12 if labels is not None else 0  # Pillow's default bitmap font is about 11 px high
    cell_h, cell_w = h + text_h + pad, w + pad
    grid = Image.new("RGB", (cols * cell_w + pad, rows * cell_h + pad), "white")
    draw = ImageDraw.Draw(grid)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * cell_w, pad + r * cell_h
        tile = Image.fromarray(image, "RGB").resize((w, h), Image.NEAREST)
        grid.paste(tile, (x0, y0))
        if labels is not None and labels[i] is not None:
            draw.text((x0, y0 + h), str(labels[i]), fill="black")
    with atomic_write(path, "wb") as f:
        grid.save(f, format="PNG")
