"""Figures: the 2D experiments (matplotlib, headless), the image FD heatmap (Figure 3), and the
tutorials' figures (saved as PNG, shown inline in Jupyter)."""
from __future__ import annotations

import os
import sys

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


def tutorial_dir(number: str) -> str:
    """The folder a tutorial saves its figures in, created: ``MINISIMS_TUTORIAL_OUT`` if set, else
    ``runs/tutorials/<number>/`` under the working directory."""
    out = os.environ.get("MINISIMS_TUTORIAL_OUT") or os.path.join("runs", "tutorials", number)
    os.makedirs(out, exist_ok=True)
    return out


def in_notebook() -> bool:
    """Does this code run in a Jupyter kernel (where a figure can be shown inline)?"""
    ipython = sys.modules.get("IPython")  # a plain script never imports IPython
    return ipython is not None and getattr(ipython.get_ipython(), "kernel", None) is not None


def show(figure, path: str | None = None, dpi: int = 90) -> None:
    """A tutorial's figure: saved as PNG and, in a Jupyter kernel, shown inline.

    ``figure`` is a matplotlib Figure, written to ``path`` at ``dpi`` and closed, or the path of a
    PNG (or GIF) that a library function has already written. The notebook gets the file's bytes
    (image/png or image/gif), so what it shows is the file on disk, whatever matplotlib backend
    the kernel has (``pyplot()`` sets Agg, which shows nothing by itself).
    """
    if isinstance(figure, (str, os.PathLike)):
        path = os.fspath(figure)
    else:
        if path is None:
            raise ValueError("show(fig, path): a figure needs the path to save it to")
        save_figure(figure, path, dpi=dpi)
    if in_notebook():
        from IPython.display import Image, display
        with open(path, "rb") as f:
            display(Image(data=f.read(), format="gif" if path.endswith(".gif") else "png"))


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


def format_count(n) -> str:
    """Images seen, short: 500 -> '500', 50000 -> '50k', 1000000 -> '1M', 2500000 -> '2.5M'."""
    n = float(n)
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def fd_heatmap(fd, budgets, omegas, path, base_fd=None, label="FD_randconv", title=None):
    """The paper's Figure 3: FD by auxiliary budget (rows) and guidance w (columns).

    ``fd`` (B,W) holds one FD per budget (images the auxiliary model saw in fine-tuning) and w;
    NaN marks a cell not run. Lower is better: each cell is annotated with its value and the best
    is boxed. ``base_fd``, the base model's FD (w = 0, no auxiliary model), goes in the title.
    """
    plt = pyplot()
    fd = np.asarray(fd, np.float64)  # B,W
    budgets, omegas = list(budgets), list(omegas)
    if fd.shape != (len(budgets), len(omegas)):
        raise ValueError(f"fd has shape {fd.shape}, expected (budgets, omegas) = "
                         f"({len(budgets)}, {len(omegas)})")
    fig, ax = plt.subplots(figsize=(1.0 + 0.85 * len(omegas), 1.3 + 0.55 * len(budgets)))
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="0.9")  # low (good) yellow; NaN grey
    im = ax.imshow(np.ma.masked_invalid(fd), cmap=cmap, aspect="auto")
    finite = fd[np.isfinite(fd)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(len(budgets)):
        for j in range(len(omegas)):
            v = fd[i, j]
            text = "-" if not np.isfinite(v) else f"{v:.3g}"
            colour = "black" if not np.isfinite(v) or v < mid else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    if finite.size:
        bi, bj = np.unravel_index(np.nanargmin(fd), fd.shape)
        ax.add_patch(plt.Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, ec="red", lw=2.2))
    ax.set_xticks(range(len(omegas)), [f"{w:g}" for w in omegas], fontsize=8)
    ax.set_yticks(range(len(budgets)), [format_count(b) for b in budgets], fontsize=8)
    ax.set_xlabel("guidance w", fontsize=9)
    ax.set_ylabel("auxiliary budget (images seen)", fontsize=9)
    cbar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03)
    cbar.set_label(f"{label} (lower is better)", fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    heading = title or f"{label} by auxiliary budget and guidance w"
    notes = [f"base (w = 0): {base_fd:.3g}" if base_fd is not None else None,
             "best boxed in red" if finite.size else None]
    ax.set_title(heading + "\n" + ", ".join(n for n in notes if n), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)


def study_heatmap(ratio, base_budgets, aux_budgets, omegas, path, label="FD_randconv"):
    """Where SIMS helps on images: one panel per base budget, FD of each (aux budget, w) cell over
    the base's FD, the geometric mean over training seeds, on a log scale centred on 1 (blue: SIMS
    helps, red: it hurts). Each cell also says in how many seeds it is below the base. The w = 0
    column (the base itself, 1 by definition) is left out.

    ``ratio`` (N,S,B,W): N base budgets, S training seeds, B aux budgets, W guidance values.
    """
    plt = pyplot()
    keep = [j for j, w in enumerate(omegas) if w != 0]
    ratio = np.asarray(ratio, np.float64)[..., keep]  # N,S,B,W'
    omegas = [omegas[j] for j in keep]
    N, S, B, W = ratio.shape
    log2 = np.log2(ratio).mean(axis=1)  # N,B,W': the geometric mean over seeds, in octaves
    lim = max(1.0, float(np.nanmax(np.abs(log2))))
    fig, axes = plt.subplots(1, N, figsize=(1.2 + (0.9 + 0.7 * W) * N, 1.9 + 0.5 * B), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes[0]):
        im = ax.imshow(log2[i], cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        for b in range(B):
            for j in range(W):
                below = int((ratio[i, :, b, j] < 1).sum())
                ax.text(j, b, f"{2 ** log2[i, b, j]:.2f}\n{below}/{S}", ha="center", va="center",
                        fontsize=7, color="white" if abs(log2[i, b, j]) > 0.6 * lim else "black")
        ax.set_xticks(range(W), [f"{w:g}" for w in omegas], fontsize=8)
        ax.set_yticks(range(B), [format_count(b) for b in aux_budgets], fontsize=8)
        ax.set_xlabel("guidance w", fontsize=8)
        if i == 0:
            ax.set_ylabel("aux budget (images)", fontsize=8)
        ax.set_title(f"base trained on {format_count(base_budgets[i])} images", fontsize=9)
    cbar = fig.colorbar(im, ax=axes[0].tolist(), fraction=0.04, pad=0.02)
    ticks = np.arange(-np.floor(lim), np.floor(lim) + 1)
    cbar.set_ticks(ticks, labels=[f"{2 ** t:g}" for t in ticks], fontsize=7)
    cbar.set_label(f"{label} / base's", fontsize=8)
    fig.suptitle(f"SIMS's {label} over the base's (below 1: SIMS helps), geometric mean over {S} "
                 "training seeds;\nunder it, in how many seeds the cell is below the base", fontsize=9)
    save_figure(fig, path, dpi=130)
