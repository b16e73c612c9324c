"""Sampling on the 2D toy as a GIF: the base model and SIMS (paper eq. 5) side by side, step by step.

Both panels start from the same noise and draw the same random numbers (a sampler's draws do not
depend on its guidance), so they differ by the guidance alone: at w = 0 they are the same film.
Each frame is one sampler state (the initial noise, then the state after each step, or every
``every``-th state and the last), drawn over p_r's 1-2-3 sigma contours, with

- the points of one run of the toy ensemble, and the paths so far of the first ``n_trails``;
- the score field the next step follows, as arrows on a grid: grad log p of the base model on the
  left, of eq. 5's combination on the right (the base's where the guidance interval leaves a step
  unguided), from the formulation's ``score``: (D - x) / sigma^2 from EDM's denoiser,
  -eps / sqrt(1 - ab_t) from DDPM's epsilon. Both panels share one arrow scale per frame (the
  90th percentile of the lengths drawn 0.8 grid spacings long, none longer than one spacing),
  because the score's size changes by orders of magnitude over the noise levels and grows far
  from the data. The last state has no noise left, hence no score, and no arrows.

What is drawn is the variance-preserving state x / (s sqrt(1 + sigma^2)): DDPM's x_t itself, and
EDM's x = x_0 + sigma n shrunk so that the points stay in view at sigma = 80. It tends to x_0 as
sigma -> 0, and the arrows keep their direction under this isotropic scaling.

The states are recorded through the samplers' ``on_step`` hook (minisims/diffusion.py): the
sampler loop is the library's own, not a copy.

# R runs, N points, D = 2, K sampler steps (K + 1 states), G arrow grid points
"""
from __future__ import annotations

import copy
import math
import numbers
import os
import shutil
import tempfile

import numpy as np

from . import backend
from .atomic import atomic_write
from .data.toy import GAUSSIAN_COV, GAUSSIAN_MEAN
from .guidance import Guidance
from .plots import gaussian_contours, pyplot
from .sims import as_recipe

DRAW_BOUND = 1e3  # points of a diverged run are clipped to this, so that the frame still draws


def toy_trajectories(fit, cfg, w: float, rng, *, n_points: int = 200, run: int = 0):
    """The sampler's states for one run, base model and SIMS with weight w, same noise and draws.

    ``fit``: a SIMSResult of a toy ensemble (or of one model), ``cfg``: its SIMSConfig or
    SIMSRecipe (formulation and guidance interval), ``rng``: an integer seed or a generator (the
    base panel then draws from a copy of it, SIMS from it). All R runs are sampled, as
    ``sims.synthesize`` does, and run ``run`` kept. Returns (levels, base, sims): levels (K+1,)
    the models' level of each state (EDM: sigma, DDPM: the step t), base and sims (K+1,N,2)
    float64 NumPy, state 0 the initial noise and state K the samples.
    """
    r = as_recipe(cfg)
    shape = _check_model(fit, n_points, run)
    _check_number("w", w)
    rng_base, rng_sims = _same_draws(rng)
    member = run if len(shape) == 3 else None  # an ensemble's run, or the one model
    levels, base = _record(r, fit.base, None, 0.0, shape, rng_base, member)
    _, sims = _record(r, fit.base, fit.aux, w, shape, rng_sims, member)
    return levels, base, sims


def write_toy_animation(fit, cfg, path: str, w: float, rng, *, n_points: int = 200, run: int = 0,
                        every: int = 1, fps: float = 8.0, arrows_grid: int = 15, n_trails: int = 12,
                        lim: float = 6.0, dpi: int = 80) -> int:
    """Write a GIF of run ``run``'s sampling, base model beside SIMS at weight w. Returns the
    number of frames.

    ``fit``, ``cfg``, ``rng``, ``n_points``, ``run``: as :func:`toy_trajectories`. ``every``:
    draw every every-th state (and always the last); ``fps``: frames per second;
    ``arrows_grid``: arrows per side of the score field's grid (0: no arrows); ``n_trails``:
    points whose path is drawn; ``lim``: the axes span [-lim, lim]; ``dpi``: 80 gives 512 x 288
    pixels. The GIF is written atomically (minisims.atomic). Bad arguments raise ValueError.
    """
    r = as_recipe(cfg)
    check_gif_path(path)
    _check_int("every", every, 1)
    _check_number("fps", fps, positive=True)
    _check_number("lim", lim, positive=True)
    _check_int("dpi", dpi, 10)
    _check_int("arrows_grid", arrows_grid, 0)
    if arrows_grid == 1:
        raise ValueError("arrows_grid must be 0 (no arrows) or at least 2, got 1")
    _check_int("n_trails", n_trails, 0)
    _check_model(fit, n_points, run)
    if n_trails > n_points:
        raise ValueError(f"n_trails ({n_trails}) must be at most n_points ({n_points})")
    levels, base, sims = toy_trajectories(fit, cfg, w, rng, n_points=n_points, run=run)
    K = len(levels) - 1
    frames = list(range(0, K + 1, every)) + ([K] if K % every else [])
    f = r.formulation
    sigmas = [f.scaling(level)[1] for level in levels]  # K+1
    shrink = np.array([1 / (f.scaling(level)[0] * math.sqrt(1 + sigma ** 2))
                       for level, sigma in zip(levels, sigmas)])  # K+1, the state -> what is drawn
    shown = [np.clip(np.nan_to_num(x * shrink[:, None, None]), -DRAW_BOUND, DRAW_BOUND)
             for x in (base, sims)]  # 2 x (K+1,N,2)
    guidance = Guidance(f.model(fit.aux), w, r.interval)  # asked only which steps are guided
    g = np.linspace(-lim, lim, max(arrows_grid, 2))  # arrows_grid
    grid = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)  # G,2 in the drawn coordinates

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.6))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.07, top=0.8, wspace=0.15)
    panels = [_panel(ax, grid, colour, lim, n_trails) for ax, colour in zip(axes, ("C0", "C3"))]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # PillowWriter writes to a file name only; the project's atomic writer moves it in place
            frames_file = os.path.join(tmp, "frames.gif")
            writer = _animation().PillowWriter(fps=fps)
            with writer.saving(fig, frames_file, dpi):
                for k, i in enumerate(frames):
                    last = i == K  # the samples: no noise left, no score, no next step
                    # guided as the sampler's step i is (it asks at t_hat, = sigma without churn)
                    guided = not last and guidance.active(i, sigmas[i])
                    fields = (None, None)
                    if not last and arrows_grid:
                        fields = _fields(f, fit, w if guided else 0.0, grid / shrink[i], levels[i],
                                         run, 2 * lim / (arrows_grid - 1))
                    unguided = ", unguided here" if w != 0 and not last and not guided else ""
                    labels = ("base (w = 0)", f"SIMS (w = {w:g}){unguided}")
                    for panel, x, field, label in zip(panels, shown, fields, labels):
                        _draw(panel, x, frames[:k + 1], field, label)
                    where = "the samples" if last else f"noise level sigma = {sigmas[i]:.3g}"
                    fig.suptitle(f"{f.name}, run {run + 1}: step {i} of {K}, {where}\n"
                                 f"over p_r's 1-2-3 sigma contours; arrows: the score the next "
                                 f"step follows", fontsize=9)
                    writer.grab_frame()
            with open(frames_file, "rb") as src, atomic_write(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
    finally:
        plt.close(fig)
    return len(frames)


def _animation():
    """matplotlib.animation, after the headless backend is chosen (plots.pyplot)."""
    pyplot()
    import matplotlib.animation
    return matplotlib.animation


def _record(r, net, aux, w, shape, rng, run):
    """Sample with the recipe's formulation and interval; keep run ``run``'s states (all of
    them for one model, run None) and their levels."""
    levels, states = [], []

    def on_step(i, x, level):
        states.append(np.array(backend.to_numpy(x if run is None else x[run])))  # N,2, a copy
        levels.append(level)

    r.formulation.sample(net, shape, rng, aux=aux, w=w, interval=r.interval, on_step=on_step)
    return np.array(levels), np.stack(states)  # K+1, K+1,N,2


def _fields(f, fit, w, x_grid, level, run, spacing):
    """The base's and eq. 5's score at the grid points x_grid (G,2, the sampler's coordinates)
    of run ``run``, scaled together as the module docstring says. Returns two (G,2)."""
    shape = fit.base.sample_shape(len(x_grid))  # (R,G,2) or (G,2)
    x = backend.asarray(np.broadcast_to(x_grid, shape))  # R,G,2: the grid for every run
    take = (lambda s: s) if len(shape) == 2 else (lambda s: s[run])
    base = backend.to_numpy(take(f.score(fit.base, x, level)))  # G,2
    sims = backend.to_numpy(take(f.score(fit.base, x, level, aux=fit.aux, w=w)))  # G,2
    base, sims = np.nan_to_num(base), np.nan_to_num(sims)
    lengths = np.linalg.norm(np.concatenate([base, sims]), axis=1)  # 2G
    typical = np.percentile(lengths, 90)
    scale = 0.8 * spacing / typical if typical > 0 else 0.0
    return _cap(base * scale, spacing), _cap(sims * scale, spacing)


def _cap(arrows, longest):
    """Arrows (G,2) shortened to at most ``longest``, directions kept."""
    n = np.linalg.norm(arrows, axis=1, keepdims=True)  # G,1
    return arrows * np.minimum(1.0, longest / np.maximum(n, 1e-300))  # G,2


def _panel(ax, grid, colour, lim, n_trails):
    """One panel's artists, empty: the arrows, the paths and the points over p_r's contours."""
    from matplotlib.collections import LineCollection
    gaussian_contours(ax, GAUSSIAN_MEAN, GAUSSIAN_COV)
    zeros = np.zeros(len(grid))
    arrows = ax.quiver(grid[:, 0], grid[:, 1], zeros, zeros, angles="xy", scale_units="xy",
                       scale=1, color="0.6", width=0.004)
    trails = LineCollection([], colors=colour, linewidths=0.6, alpha=0.5)
    ax.add_collection(trails)
    points = ax.scatter(np.zeros(0), np.zeros(0), s=4, alpha=0.6, color=colour)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ticks = [-lim / 2, 0, lim / 2]  # few: tick labels are most of a frame's drawing time
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.tick_params(labelsize=7)
    return {"ax": ax, "arrows": arrows, "trails": trails, "points": points, "n_trails": n_trails}


def _draw(panel, shown, states, field, label):
    """Update a panel to the last of ``states`` (indices into shown (K+1,N,2))."""
    panel["points"].set_offsets(shown[states[-1]])  # N,2
    paths = shown[states, :panel["n_trails"]]  # k+1,n_trails,2
    panel["trails"].set_segments(list(paths.transpose(1, 0, 2)))  # n_trails x (k+1,2)
    panel["arrows"].set_visible(field is not None)
    if field is not None:
        panel["arrows"].set_UVC(field[:, 0], field[:, 1])
    panel["ax"].set_title(label, fontsize=9)


def _same_draws(rng):
    """Two generators that draw the same numbers: two from a seed, or a copy of rng and rng."""
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"rng: a seed must be >= 0, got {rng}")
        return backend.default_rng(int(rng)), backend.default_rng(int(rng))
    if not hasattr(rng, "standard_normal"):
        raise ValueError(f"rng must be an integer seed or a random generator, got {type(rng).__name__}")
    return copy.deepcopy(rng), rng


def _check_model(fit, n_points, run):
    """The sample shape for n_points of a 2D toy model: (R,N,2) for an ensemble, (N,2) for one
    model (then run is None); checks run."""
    _check_int("n_points", n_points, 1)
    _check_int("run", run, 0)
    shape = getattr(fit.base, "sample_shape", lambda n: ())(n_points)
    if len(shape) not in (2, 3) or shape[-1] != 2:
        raise ValueError(f"the animation draws 2D toy models (samples (R,N,2) or (N,2)); this "
                         f"model's samples are {shape}")
    runs = shape[0] if len(shape) == 3 else 1
    if run >= runs:
        raise ValueError(f"run must be below the number of runs, {runs}; got {run}")
    return shape


def check_gif_path(path) -> None:
    """Raise a one-line ValueError unless ``path`` ends in .gif in an existing folder (a command
    line can check its argument before training)."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).lower().endswith(".gif"):
        raise ValueError(f"path must be a file name ending in .gif, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"the folder {folder} does not exist")


def _check_int(name, v, lo):
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


def _check_number(name, v, positive=False):
    bad = not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v)
    if bad or (positive and v <= 0):
        raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number, got {v!r}")


__all__ = ["toy_trajectories", "write_toy_animation", "check_gif_path"]
