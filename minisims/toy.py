"""``python -m minisims.toy``: SIMS (Algorithm 1) on the paper's 2D Gaussian, in seconds.

Trains R independent base models at once (one per run, each on its own 1000 real points), samples
a synthetic set from each, fine-tunes a copy of each on it (the auxiliary model), then samples
with (1 + w) s_base - w s_aux for every requested w and prints the distance to p_r.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from . import backend
from .cli_util import Parser, fail, float_list, int_at_least, positive_float, writable_dir
from .data import GAUSSIAN_COV, GAUSSIAN_MEAN, sample_gaussian
from .metrics import gaussian_w2
from .nn import MLPConfig
from .sims import SIMSConfig, fit_sims, sample_sims

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
    p = Parser(prog="python -m minisims.toy", description=__doc__.split("\n\n")[0] + "\n\n" +
               __doc__.split("\n\n")[1], epilog=EXAMPLES,
               formatter_class=lambda prog: __import__("argparse").RawDescriptionHelpFormatter(prog, max_help_position=32))
    p.add_argument("--omega", "-w", type=float_list, default=[3.0], metavar="W[,W...]",
                   help="guidance strength(s) w, comma separated (default: 3)")
    p.add_argument("--runs", type=int_at_least(1), default=16, help="independent runs, trained at once (default: 16)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default: 0)")
    p.add_argument("--formulation", choices=["ddpm", "edm", "vp"], default="ddpm",
                   help="ddpm: the paper's toy (eps-prediction, cosine, 40 steps, ancestral); "
                        "edm/vp: EDM loss and Heun sampler with EDM or VP preconditioning (default: ddpm)")
    p.add_argument("--n-real", type=int_at_least(2), default=1000, help="|D|, real points per run (default: 1000)")
    p.add_argument("--n-synth", type=int_at_least(2), default=2000, help="n_s = |S|, synthetic points for the aux model (default: 2000)")
    p.add_argument("--base-epochs", type=int_at_least(1), default=100, help="base training epochs (default: 100)")
    p.add_argument("--aux-epochs", type=int_at_least(0), default=50, help="aux fine-tuning epochs, the budget B (default: 50)")
    p.add_argument("--batch-size", type=int_at_least(1), default=2048, help="batch size; 2048 > |D| means one step per epoch, as in the paper's toy (default: 2048)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--hidden", type=int_at_least(1), default=64, help="MLP width (default: 64)")
    p.add_argument("--steps", type=int_at_least(2), default=32, help="edm/vp: Heun steps N, NFE 2N-1 (default: 32)")
    p.add_argument("--n-eval", type=int_at_least(2), default=2000, help="samples per run to measure the distance (default: 2000)")
    p.add_argument("--metric", choices=["w2", "w2sq"], default="w2", help="W2 or W2 squared (default: w2)")
    p.add_argument("--outdir", default="runs/toy", help="where the plot and results go (default: runs/toy)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="cpu (NumPy) or gpu (CuPy) (default: cpu)")
    p.add_argument("--blas-threads", type=int_at_least(0), default=1,
                   help="BLAS threads for the small toy matrices; 0 leaves the library default (default: 1)")
    p.add_argument("--no-plot", action="store_true", help="skip the figure")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with backend.blas_threads(args.blas_threads or None):
        return _run(args, parser.prog)


def _run(args, prog) -> int:
    try:
        outdir = writable_dir(args.outdir)
    except Exception as e:
        fail(prog, str(e), 2)
    try:
        backend.use_device(args.device)
    except backend.BackendError as e:
        fail(prog, str(e))

    cfg = SIMSConfig(formulation=args.formulation, mlp=MLPConfig(hidden=args.hidden),
                     lr=args.lr, batch_size=args.batch_size, base_epochs=args.base_epochs,
                     aux_epochs=args.aux_epochs, n_synth=args.n_synth, num_steps=args.steps)
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
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)
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
    try:
        sys.exit(main(argv))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        sys.exit(1)


if __name__ == "__main__":
    entry()
