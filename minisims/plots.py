"""Figures for the 2D experiments (matplotlib, headless)."""
from __future__ import annotations

import os

import numpy as np

from .atomic import atomic_write


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str, dpi: int = 110) -> None:
    """Write ``fig`` to ``path`` (format from the extension) atomically, then close it."""
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=os.path.splitext(path)[1][1:] or "png", dpi=dpi)
    pyplot().close(fig)


def gaussian_contours(ax, mean, cov, levels=(1, 2, 3), **kw):
    """Draw the 1, 2, 3-sigma ellipses of N(mean, cov) on ``ax``."""
    ev, V = np.linalg.eigh(np.asarray(cov, float))
    theta = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(theta), np.sin(theta)])  # 2,200
    for k in levels:
        pts = np.asarray(mean)[:, None] + V @ (k * np.sqrt(ev)[:, None] * circle)  # 2,200
        ax.plot(pts[0], pts[1], **{"color": "k", "lw": 0.8, "alpha": 0.6, **kw})


def samples_over_density(panels, mean, cov, path, title=None, max_points=1500, lim=6.0):
    """One scatter panel per (label, points (n,2)) over the target's density contours."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (label, pts) in zip(axes[0], panels):
        pts = np.asarray(pts)[:max_points]
        ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.4, color="C0" if "base" in label else "C3")
        gaussian_contours(ax, mean, cov)
        ax.set_title(label, fontsize=9)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
