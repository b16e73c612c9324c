"""``python -m minisims.toy``: SIMS (Algorithm 1) on the paper's 2D Gaussian, in seconds.

Trains R independent base models at once (one per run, each on its own 1000 real points), samples
a synthetic set from each, fine-tunes a copy of each on it (the auxiliary model), then samples
with (1 + w) s_base - w s_aux for every requested w and prints the distance to p_r.
"""
from __future__ import annotations

import os
import time

import numpy as np

from . import backend
from .atomic import write_json
from .cli_util import (Parser, add_formulation, add_run_options, blas_limit, command_parser,
                       float_list, int_at_least, positive_float, prepare_run, run_command)
from .data import GAUSSIAN_COV, GAUSSIAN_MEAN, sample_gaussian
from .figures.common import ToySizes, sims_config
from .metrics import gaussian_w2
from .sims import fit_sims, sample_sims

DEFAULTS = ToySizes(runs=16)  # the paper's toy sizes, 16 runs

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
    p.add_argument("--runs", type=int_at_least(1), default=d.runs, help=f"independent runs, trained at once (default: {d.runs})")
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
    add_run_options(p, outdir="runs/toy", quiet=True)
    p.add_argument("--no-plot", action="store_true", help="skip the figure")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    outdir = prepare_run(parser.prog, args)
    with backend.blas_threads(blas_limit(args)):
        return _run(args, outdir)


def _run(args, outdir: str) -> int:
    sizes = ToySizes(runs=args.runs, n_real=args.n_real, n_eval=args.n_eval, hidden=args.hidden,
                     base_epochs=args.base_epochs, aux_epochs=args.aux_epochs, n_s=args.n_synth)
    cfg = sims_config(sizes, args.formulation, lr=args.lr, batch_size=args.batch_size,
                      num_steps=args.steps)
    squared = args.metric == "w2sq"
    progress = not args.quiet
    t0 = time.perf_counter()
    rng = backend.default_rng(args.seed)
    data = backend.asarray(sample_gaussian(args.n_real, np.random.default_rng(args.seed), args.runs))  # R,n,2
    fit = fit_sims(data, cfg, rng, progress=progress)
    t_fit = time.perf_counter() - t0

    omegas = sorted(set([0.0] + args.omega))
    dists, first_run = {}, {}
    for w in omegas:
        eval_rng = backend.default_rng(args.seed + 1)  # same draws for every w
        x = backend.to_numpy(sample_sims(fit.base, fit.aux, cfg, w, args.n_eval, eval_rng, progress=progress))
        dists[w] = gaussian_w2(x, GAUSSIAN_MEAN, GAUSSIAN_COV, squared=squared)  # R
        first_run[w] = x[0]
    elapsed = time.perf_counter() - t0

    base = dists[0.0]
    unit = "W2^2" if squared else "W2"
    lines = [f"SIMS on the 2D Gaussian: {args.formulation}, {args.runs} runs, |D| {args.n_real}, "
             f"n_s {args.n_synth}, base {args.base_epochs} ep, aux {args.aux_epochs} ep",
             f"{'w':>6}  {unit + ' to p_r':>18}  {'ratio to base':>13}  {'runs better':>11}"]
    for w in omegas:
        d = dists[w]
        label = "0 (base)" if w == 0 else f"{w:g}"
        better = "" if w == 0 else f"{int((d < base).sum())}/{len(d)}"
        lines.append(f"{label:>6}  {d.mean():9.4f} +- {d.std(ddof=1) if len(d) > 1 else 0:.4f}  "
                     f"{d.mean() / base.mean():13.3f}  {better:>11}")
    floor = gaussian_w2(backend.to_numpy(data), GAUSSIAN_MEAN, GAUSSIAN_COV, squared=squared)  # R
    lines.append(f"{'D_r':>6}  {floor.mean():9.4f} +- {floor.std(ddof=1) if len(floor) > 1 else 0:.4f}"
                 f"  (reference: the Gaussian fit of the real points themselves)")
    lines.append(f"({elapsed:.1f} s: fit {t_fit:.1f} s, sampling {elapsed - t_fit:.1f} s; "
                 f"+- is the std over runs)")
    print("\n".join(lines))

    results = {"args": vars(args), "omega": omegas, "metric": args.metric,
               "distance_per_run": {str(w): dists[w].tolist() for w in omegas},
               "real_data_distance_per_run": floor.tolist(),
               "seconds": elapsed}
    path = os.path.join(outdir, "toy_results.json")
    write_json(path, results)
    if not args.no_plot:
        from .plots import samples_over_density
        panels = [("base (w = 0)" if w == 0 else f"SIMS w = {w:g}", first_run[w]) for w in omegas]
        panels = [(f"{lbl}\nmean {unit} {dists[w].mean():.3f}", pts) for (lbl, pts), w in zip(panels, omegas)]
        samples_over_density(panels, GAUSSIAN_MEAN, GAUSSIAN_COV, os.path.join(outdir, "toy_sims.png"),
                             title=f"run 1 of {args.runs}: samples over p_r's 1-2-3 sigma contours ({args.formulation})")
        print(f"wrote {os.path.join(outdir, 'toy_sims.png')} and {path}")
    else:
        print(f"wrote {path}")
    return 0


def entry(argv=None):
    run_command(main, argv)


if __name__ == "__main__":
    entry()
