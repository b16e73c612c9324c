"""Samples written where the FID tools look for them: PNG folders, an npz, a grid to look at.

# N images, H W size, 3 channels
Images here are uint8 (N,H,W,3). Two formats every FID package reads:

- :func:`write_pngs`: one PNG per seed, named ``{seed:06d}.png`` (EDM's generate.py), the folder
  that pytorch-fid, clean-fid, torch-fidelity and EDM's fid.py take.
- :func:`write_npz`: one npz holding ``arr_0`` (N,H,W,3) uint8 (the ADM / guided-diffusion
  convention, read by ADM's evaluator, EDM and clean-fid).

:func:`image_grid` is for people: the images tiled into one PNG, optionally with a label under
each. Every file is written atomically (:func:`minisims.atomic.atomic_write`), so an interrupted
export never leaves a truncated PNG that an FID tool would read as a sample.
"""
from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image, ImageDraw

from .atomic import atomic_write
from .data.images import host_uint8_images


def _write_png(image, path: str) -> None:
    with atomic_write(path, "wb") as f:
        Image.fromarray(image, "RGB").save(f, format="PNG")


def write_pngs(images, seeds, folder: str) -> list[str]:
    """One PNG per image, ``folder/{seed:06d}.png``; returns the paths in order. (N,H,W,3)."""
    images = host_uint8_images(images, "exports")
    seeds = [int(s) for s in seeds]
    if len(seeds) != len(images):
        raise ValueError(f"{len(images)} images but {len(seeds)} seeds")
    if len(set(seeds)) != len(seeds) or min(seeds, default=0) < 0:
        raise ValueError("seeds must be distinct and >= 0: each names one file")
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"{seed:06d}.png") for seed in seeds]
    for image, path in zip(images, paths):
        _write_png(image, path)
    return paths


def write_npz(images, path: str) -> None:
    """All images in one npz under ``arr_0`` (N,H,W,3) uint8, atomically."""
    images = host_uint8_images(images, "exports")
    with atomic_write(path, "wb") as f:
        np.savez(f, arr_0=images)


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
