"""``python -m minisims.toy``: SIMS (Algorithm 1) on the paper's 2D Gaussian, in seconds.

Trains R independent base models at once (one per run, each on its own 1000 real points), samples
a synthetic set from each, fine-tunes a copy of each on it (the auxiliary model), then samples
with (1 + w) s_base - w s_aux for every requested w and prints the distance to p_r.

A run whose base or aux loss becomes NaN or inf is reported in one line and left out of the means;
so is, for one w, a run whose samples diverge (non-finite, or any |x| > SAMPLE_BOUND). The results
are still written, with those runs marked, and the command then exits with status 1.
"""
from __future__ import annotations

if __name__ == "__main__":  # Ctrl-C while the imports below load: one line, exit 130
    from minisims.cli_util import during_startup
    during_startup()

import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import backend
from .atomic import json_safe, write_json
from .cli_util import (Parser, add_formulation, add_run_options, blas_limit, command_parser, fail,
                       float_list, int_at_least, physical_memory, positive_float, prepare_run,
                       run_command)
from .data.toy import GAUSSIAN_COV, GAUSSIAN_MEAN, sample_gaussian
from .metrics import gaussian_w2
from .nn.mlp import MLPConfig
from .sims import SIMSConfig, fit_sims, sample_sims
from .streams import Streams

@dataclass(frozen=True, kw_only=True)
class ToySizes:
    """The world and the budget of one toy experiment; the defaults are the paper's (Sec. 4.2.1)."""
    runs: int                 # independent runs R
    n_real: int = 1000        # |D|, real points per run
    n_eval: int = 2000        # samples per run that are measured
    hidden: int = 64          # MLP width
    base_epochs: int = 100    # the base model's training epochs
    aux_epochs: int = 50      # the aux model's fine-tuning epochs, the budget B
    n_s: int = 2000           # n_s = |S|, the aux model's synthetic set


def sims_config(sizes: ToySizes, formulation: str, **more) -> SIMSConfig:
    """The SIMSConfig of ``sizes``; ``more`` sets other SIMSConfig fields (lr, num_steps, ...)."""
    return SIMSConfig(formulation=formulation, mlp=MLPConfig(hidden=sizes.hidden),
                      base_epochs=sizes.base_epochs, aux_epochs=sizes.aux_epochs,
                      n_synth=sizes.n_s, **more)


DEFAULTS = ToySizes(runs=16)  # the paper's toy sizes, 16 runs

# Every run has its own random streams (minisims.streams.RunGenerator), keyed by the seed and the
# run's index: run k's numbers are the same with --runs 4 or 1000 and in any chunk.
TOY_STREAMS = Streams(("data", "fit", "eval", "animate"))

# Samples of p_r lie within about 10 of the origin; a run with any |x| beyond this bound at some w
# has diverged there (the guided sampler blew up) and its "distance" would be meaningless.
SAMPLE_BOUND = 1e6

EXAMPLES = """examples:
  python -m minisims.toy --omega 3                  # base vs SIMS at w = 3, 16 runs, DDPM toy
  python -m minisims.toy --omega 0,0.5,1,2,3 --runs 32
  python -m minisims.toy --formulation edm --omega 1,2
  python -m minisims.toy --device gpu --runs 256    # needs CuPy and a GPU

w = 0 is the base model exactly, w = -1 the auxiliary model exactly. Distances are W2 between the
Gaussian fitted to each run's samples and p_r = N([0,0], [[2,1],[1,2]]) (closed form; --metric
w2sq gives W2 squared), mean and standard deviation over runs. Every w is sampled with the same
random numbers, so the rows differ only by the guidance.
"""


def build_parser() -> Parser:
    p = command_parser("python -m minisims.toy", "\n\n".join(__doc__.split("\n\n")[:2]), EXAMPLES)
    d = DEFAULTS
    p.add_argument("--omega", "-w", type=float_list, default=[3.0], metavar="W[,W...]",
                   help="guidance strength(s) w, comma separated (default: 3)")
    p.add_argument("--runs", type=int_at_least(1), default=d.runs, help=f"independent runs (default: {d.runs}); run k's result does not depend on how many there are")
    add_formulation(p)
    p.add_argument("--n-real", type=int_at_least(2), default=d.n_real, help=f"|D|, real points per run (default: {d.n_real})")
    p.add_argument("--n-synth", type=int_at_least(2), default=d.n_s, help=f"n_s = |S|, synthetic points for the aux model (default: {d.n_s})")
    p.add_argument("--base-epochs", type=int_at_least(1), default=d.base_epochs, help=f"base training epochs (default: {d.base_epochs})")
    p.add_argument("--aux-epochs", type=int_at_least(0), default=d.aux_epochs, help=f"aux fine-tuning epochs, the budget B (default: {d.aux_epochs})")
    p.add_argument("--batch-size", type=int_at_least(1), default=2048, help="batch size; 2048 > |D| means one step per epoch, as in the paper's toy (default: 2048)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--hidden", type=int_at_least(1), default=d.hidden, help=f"MLP width (default: {d.hidden})")
    p.add_argument("--steps", type=int_at_least(2), default=32, help="edm/vp: Heun steps N, NFE 2N-1 (default: 32)")
    p.add_argument("--n-eval", type=int_at_least(2), default=d.n_eval, help=f"samples per run to measure the distance (default: {d.n_eval})")
    p.add_argument("--metric", choices=["w2", "w2sq"], default="w2", help="W2 or W2 squared (default: w2)")
    p.add_argument("--chunk-size", type=int_at_least(1), help="runs trained at once (default: as many as fit in --memory-mb); changes memory and speed, not the results")
    p.add_argument("--memory-mb", type=positive_float, default=1024, help="working memory for the runs trained at once, when --chunk-size is not given (default: 1024)")
    add_run_options(p, outdir="runs/toy", quiet=True)
    p.add_argument("--no-plot", action="store_true", help="skip the figure")
    p.add_argument("--animate", metavar="GIF", help="also write a GIF of run 1's sampling: the base model's trajectories beside SIMS's at the largest w, over p_r's contours, with the score field as arrows (e.g. --animate runs/toy/sampling.gif)")
    return p


def run_bytes(args) -> int:
    """A rough upper bound of one run's working memory: float32 activations of every MLP layer
    for the largest set it trains on or samples (kept for backward), as the loops size their
    chunks (minisims.loops.bytes_per_run)."""
    n = max(args.n_real, args.n_synth, args.n_eval)
    return 4 * n * args.hidden * (3 * MLPConfig().depth + 6)


def result_bytes(args) -> int:
    """What the whole job keeps per run until the end: a float per w and the JSON text of it
    (about 25 bytes a number), with room to spare."""
    return 64 * (len(args.omega) + 4)


def chunk_size(args) -> int:
    """Runs trained at once: --chunk-size, else as many as fit in --memory-mb."""
    if args.chunk_size is not None:
        return min(args.chunk_size, args.runs)
    return max(1, min(args.runs, int(args.memory_mb * 2 ** 20 // run_bytes(args))))


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    chunk, have = chunk_size(args), physical_memory()
    need = chunk * run_bytes(args) + args.runs * result_bytes(args)
    if have is not None and need > 0.8 * have:  # say so before any work
        most = int((0.8 * have - chunk * run_bytes(args)) // result_bytes(args))
        advice = (f"use at most about {most:,} runs" if most >= chunk else
                  "use a smaller --chunk-size or --memory-mb")
        fail(parser.prog, f"--runs {args.runs:,} in chunks of {chunk} needs about {need / 2**30:,.1f} GiB "
                          f"({run_bytes(args) / 2**20:.1f} MiB per run trained at once, "
                          f"{result_bytes(args)} bytes per run kept), more than this machine's "
                          f"{have / 2**30:.0f} GiB: {advice}", 2)
    if args.animate:  # checked before any work; inside --outdir, the folder is made below
        from .animate import check_gif_path
        in_outdir = os.path.dirname(os.path.abspath(args.animate)) == os.path.abspath(args.outdir)
        try:
            check_gif_path(os.path.basename(args.animate) if in_outdir else args.animate)
        except ValueError as e:
            fail(parser.prog, str(e), 2)
    sizes = ToySizes(runs=args.runs, n_real=args.n_real, n_eval=args.n_eval, hidden=args.hidden,
                     base_epochs=args.base_epochs, aux_epochs=args.aux_epochs, n_s=args.n_synth)
    cfg = sims_config(sizes, args.formulation, lr=args.lr, batch_size=args.batch_size,
                      num_steps=args.steps)
    try:  # the training budgets, before any work
        recipe = cfg.recipe()
        recipe.base.check_steps(args.n_real)
        recipe.aux.check_steps(args.n_synth)
    except ValueError as e:
        fail(parser.prog, str(e), 2)
    outdir = prepare_run(parser.prog, args)
    # a diverging run overflows on the way: it is detected and reported per run and per w below,
    # so NumPy's overflow/invalid warnings would only bury those lines
    with backend.blas_threads(blas_limit(args)), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _run(args, outdir, chunk, cfg)


def _run(args, outdir: str, chunk: int, cfg) -> int:
    squared = args.metric == "w2sq"
    omegas = sorted(set([0.0] + args.omega))
    t0 = time.perf_counter()
    starts = range(0, args.runs, chunk)
    parts = []
    bar = None
    if not args.quiet and len(starts) > 1:
        from .progress import bar as progress_bar
        bar = progress_bar(total=args.runs, unit="run", desc="runs")
    for start in starts:
        parts.append(_chunk(args, cfg, omegas, start, min(chunk, args.runs - start), squared,
                            progress=not args.quiet and len(starts) == 1))
        if bar is not None:
            bar.update(parts[-1]["runs"])
    if bar is not None:
        bar.close()
    t_fit = sum(p["fit_seconds"] for p in parts)
    failed = {k: np.concatenate([p["failed"][k] for p in parts]) for k in ("base", "aux", "any")}  # R each
    for p in parts:
        for line in p["failed"]["lines"]:
            print(line, file=sys.stderr)
    dists = {w: np.concatenate([p["dists"][w] for p in parts]) for w in omegas}  # R each; NaN: left out
    blown = {w: np.concatenate([p["blown"][w] for p in parts]) for w in omegas}  # R each
    floor = np.concatenate([p["floor"] for p in parts])  # R
    first_run = parts[0]["first_run"]
    elapsed = time.perf_counter() - t0
    trained = int((~failed["any"]).sum())
    for w in omegas:
        if blown[w].any():
            print(f"w = {w:g}: {int(blown[w].sum())}/{trained} runs' samples diverged (non-finite or "
                  f"|x| > {SAMPLE_BOUND:g}); left out of its row", file=sys.stderr)

    base = dists[0.0]
    unit = "W2^2" if squared else "W2"
    lines = [f"SIMS on the 2D Gaussian: {args.formulation}, {args.runs} runs, |D| {args.n_real}, "
             f"n_s {args.n_synth}, base {args.base_epochs} ep, aux {args.aux_epochs} ep",
             f"{'w':>6}  {unit + ' to p_r':>18}  {'ratio to base':>13}  {'runs better':>11}"]
    for w in omegas:
        d = dists[w]
        label = "0 (base)" if w == 0 else f"{w:g}"
        kept = d[np.isfinite(d)]
        if len(kept) == 0:
            lines.append(f"{label:>6}  {'diverged':>18}")
            continue
        both = np.isfinite(d) & np.isfinite(base)
        better = "" if w == 0 else f"{int((d[both] < base[both]).sum())}/{int(both.sum())}"
        ratio = f"{kept.mean() / np.nanmean(base):13.3f}" if np.isfinite(base).any() else f"{'-':>13}"
        note = f"  ({len(kept)} of {args.runs} runs)" if len(kept) < args.runs else ""
        lines.append(f"{label:>6}  {kept.mean():9.4f} +- {_std(kept):.4f}  {ratio}  {better:>11}{note}")
    lines.append(f"{'D_r':>6}  {floor.mean():9.4f} +- {_std(floor):.4f}"
                 f"  (reference: the Gaussian fit of the real points themselves)")
    if failed["any"].any():
        lines.append(f"runs {', '.join(str(r + 1) for r in np.flatnonzero(failed['any']))} diverged "
                     f"in training and are left out of every row")
    lines.append(f"({elapsed:.1f} s: fit {t_fit:.1f} s, sampling {elapsed - t_fit:.1f} s"
                 + (f", {len(parts)} chunks of up to {chunk} runs" if len(parts) > 1 else "")
                 + "; +- is the std over runs)")

    results = {"args": vars(args), "omega": omegas, "metric": args.metric,
               "blas_threads_used": backend.blas_thread_count(), "chunk_size_used": chunk,
               "distance_per_run": {str(w): dists[w].tolist() for w in omegas},  # null: left out
               "diverged": {"base_step": failed["base"].tolist(), "aux_step": failed["aux"].tolist(),
                            "samples_at_w": {str(w): np.flatnonzero(blown[w]).tolist() for w in omegas},
                            "sample_bound": SAMPLE_BOUND},
               "real_data_distance_per_run": floor.tolist(),
               "seconds": elapsed}
    path = os.path.join(outdir, "toy_results.json")
    write_json(path, json_safe(results))
    wrote = path
    if not args.no_plot:
        from .plots import samples_over_density
        # run 1's points, clipped so that a diverged w still draws (its panel says so)
        panels = [("base (w = 0)" if w == 0 else f"SIMS w = {w:g}",
                   np.clip(np.nan_to_num(first_run[w]), -SAMPLE_BOUND, SAMPLE_BOUND)) for w in omegas]
        panels = [(f"{lbl}\n" + (f"mean {unit} {np.nanmean(dists[w]):.3f}" if np.isfinite(dists[w]).any()
                                 else "diverged"), pts) for (lbl, pts), w in zip(panels, omegas)]
        samples_over_density(panels, GAUSSIAN_MEAN, GAUSSIAN_COV, os.path.join(outdir, "toy_sims.png"),
                             title=f"run 1 of {args.runs}: samples over p_r's 1-2-3 sigma contours ({args.formulation})")
        wrote = f"{os.path.join(outdir, 'toy_sims.png')} and {path}"
    # files first, then the terminal: output piped into head cannot cost a file
    print("\n".join(lines))
    print(f"wrote {wrote}")
    return 1 if failed["any"].any() or any(b.any() for b in blown.values()) else 0


def _chunk(args, cfg, omegas, start: int, runs: int, squared: bool, progress: bool) -> dict:
    """Algorithm 1 for runs start .. start + runs - 1 at once, sampled at every w: their distances,
    divergences and the real data's own distance (one entry per run). Every run draws from its
    own streams, so its numbers do not depend on the chunk it is in."""
    t0 = time.perf_counter()
    ids = range(start, start + runs)  # the global indices of this chunk's runs
    data = backend.asarray(sample_gaussian(args.n_real, TOY_STREAMS.rng(args.seed, "data", runs=ids, numpy=True),
                                           runs))  # R,n,2
    fit = fit_sims(data, cfg, TOY_STREAMS.rng(args.seed, "fit", runs=ids), progress=progress)
    t_fit = time.perf_counter() - t0
    failed = _diverged_training(fit, args, start)  # R bool
    if args.animate and start == 0:
        from .animate import write_toy_animation
        frames = write_toy_animation(fit, cfg, args.animate, max(args.omega),
                                     TOY_STREAMS.rng(args.seed, "animate", runs=range(runs)))
        print(f"wrote {args.animate} ({frames} frames: run 1, base and SIMS at w = {max(args.omega):g})",
              file=sys.stderr)
    dists, blown, first_run = {}, {}, ({} if start == 0 else None)  # run 1's points, for the plot
    for w in omegas:
        eval_rng = TOY_STREAMS.rng(args.seed, "eval", runs=ids)  # the same draws for every w
        x = backend.to_numpy(sample_sims(fit.base, fit.aux, cfg, w, args.n_eval, eval_rng, progress=progress))
        bad = ~np.isfinite(x).all(axis=(1, 2)) | (np.abs(np.nan_to_num(x)).max(axis=(1, 2)) > SAMPLE_BOUND)  # R
        blown[w] = bad & ~failed["any"]  # diverged here although training did not
        ok = ~(bad | failed["any"])  # R
        dists[w] = np.full(runs, np.nan)  # R; NaN: left out
        if ok.any():
            dists[w][ok] = gaussian_w2(x[ok], GAUSSIAN_MEAN, GAUSSIAN_COV, squared=squared)
        if first_run is not None:
            first_run[w] = x[0]
    floor = gaussian_w2(backend.to_numpy(data), GAUSSIAN_MEAN, GAUSSIAN_COV, squared=squared)  # R
    return {"runs": runs, "fit_seconds": t_fit, "failed": failed, "dists": dists, "blown": blown,
            "floor": floor, "first_run": first_run}


def _std(d) -> float:
    return float(d.std(ddof=1)) if len(d) > 1 else 0.0


def _diverged_training(fit, args, start: int = 0) -> dict:
    """Which runs' base or aux training diverged: {"base": (R,) epoch or 0, "aux": (R,), "any": (R,)
    bool, "lines": one message per diverged run}. The library reports the first epoch (1-based)
    with a non-finite loss; with one batch per epoch (the default) that is the step."""
    base, aux = np.asarray(fit.base_diverged, int), np.asarray(fit.aux_diverged, int)  # R, R
    n_data = {"base": args.n_real, "aux": args.n_synth}
    lines = []
    for r in range(len(base)):
        for model, at in (("base", base[r]), ("aux", aux[r])):
            if at:
                unit = "step" if math.ceil(n_data[model] / args.batch_size) == 1 else "epoch"
                lines.append(f"run {start + r + 1}: the {model} model's loss became NaN/inf at {unit} {at}"
                             f" — learning rate too high? (--lr {args.lr:g}); left out of the means")
                break  # the aux is a copy of a diverged base: one line per run
    return {"base": base, "aux": aux, "any": (base > 0) | (aux > 0), "lines": lines}


def entry(argv=None):
    run_command(main, argv, "python -m minisims.toy")


if __name__ == "__main__":
    entry()
