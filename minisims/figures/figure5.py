"""Figure 5 of the paper on the 2D toy: training on real data polluted with synthetic data.

For each amount |D_p| of synthetic points from the primordial model ST-I mixed into the real
set, four models (paper Section 4.2.2): ST-I (real only), SIMS-I (SIMS on ST-I), ST-P (standard
training on real + D_p), SIMS-P (SIMS with its base trained on real + D_p); the SIMS rows take
the best w of a small grid. Plots E[W2 to p_r] vs |D_p| and writes figure5.png, figure5.npz (per
run, per w) and figure5.md.
"""
from __future__ import annotations

if __name__ == "__main__":  # Ctrl-C while the imports below load: one line, exit 130
    from minisims.cli_util import during_startup
    during_startup()

import os
import time
from dataclasses import dataclass, replace

import numpy as np

from ..cli_util import (Parser, add_formulation, add_preset, add_run_options, blas_limit,
                        command_parser, fail, float_list, int_at_least, int_list, override,
                        prepare_run, run_command)
from ..executors import add_executor_options, open_executor
from ..plots import pyplot, save_figure
from ..polluted import polluted_experiment
from ..toy import ToySizes
from .common import halves, loop_config, read_npz, write_npz, write_text
from .common import replot as replot_run

# what report() reads from figure5.npz
FIELDS = ("pollution", "omega", "P", "I", "ST-I", "SIMS-I", "w_SIMS-I", "ST-P", "SIMS-P", "w_SIMS-P",
          "seconds")


@dataclass(frozen=True, kw_only=True)
class Figure5Preset(ToySizes):
    """The |D_p| values and the SIMS w grid, on top of the world and budget of ToySizes."""
    pollution: tuple[int, ...]     # |D_p|, synthetic points from ST-I added to the real set
    omega: tuple[float, ...]       # SIMS w grid; each SIMS row keeps its best w
    chunk_size: int                # runs trained at once


PRESETS = {
    "tiny": Figure5Preset(runs=3, pollution=(100, 200), omega=(1.0, 3.0), n_real=200, n_eval=300,
                          hidden=32, n_s=300, chunk_size=3),
    "cpu": Figure5Preset(runs=32, pollution=(125, 250, 500, 1000, 2000),
                         omega=(0.5, 1.0, 2.0, 3.0, 5.0), chunk_size=32),
    "paper": Figure5Preset(runs=1000, pollution=(125, 250, 500, 1000, 2000, 4000),
                           omega=(0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0), chunk_size=1000),
}

EXAMPLES = """examples:
  python toy/figure5.py --preset tiny              # seconds
  python toy/figure5.py --preset cpu               # ~10-20 minutes on 2 cores
  python toy/figure5.py --preset cpu --formulation edm --outdir runs/figure5_edm
  python toy/figure5.py --preset cpu --chunk-size 8 --dask-local 2   # 4 chunks on a local Dask cluster
  python toy/figure5.py --replot runs/figure5      # table + figure again from figure5.npz
"""


def build_parser() -> Parser:
    p = command_parser("python toy/figure5.py", __doc__.split("\n\n")[0], EXAMPLES)
    add_preset(p, PRESETS)
    add_formulation(p)
    p.add_argument("--runs", type=int_at_least(1), help="independent runs")
    p.add_argument("--pollution", type=int_list, metavar="N[,N...]", help="|D_p| values")
    p.add_argument("--omega", type=float_list, metavar="W[,W...]", help="SIMS w grid (best is kept)")
    p.add_argument("--chunk-size", type=int_at_least(1), help="runs trained at once per task")
    add_executor_options(p)
    add_run_options(p, outdir="runs/figure5", quiet=True)
    p.add_argument("--replot", metavar="DIR", help="only rebuild table and figure from DIR/figure5.npz")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.replot:
        return replot_run(parser.prog, args.replot, "figure5.npz", report)
    s = override(PRESETS[args.preset], args)
    # checked before any work: the table needs a SIMS w, and a |D_p| given twice is one run twice
    if min(s.pollution) < 1:
        fail(parser.prog, "every |D_p| must be >= 1", 2)
    if not any(w != 0 for w in s.omega):
        fail(parser.prog, "--omega needs a SIMS w other than 0 (w = 0 is ST, which always runs)", 2)
    s = replace(s, pollution=tuple(dict.fromkeys(s.pollution)))
    with open_executor(parser.prog, args) as executor:  # first: a wrong --scheduler leaves no folder
        outdir = prepare_run(parser.prog, args)
        cfg = loop_config(s, args.formulation)
        t0 = time.perf_counter()
        r = polluted_experiment(cfg, s.pollution, s.omega, s.runs, args.seed, s.chunk_size,
                                progress=not args.quiet, executor=executor,
                                blas_threads=blas_limit(args))
    elapsed = time.perf_counter() - t0
    write_npz(os.path.join(outdir, "figure5.npz"), **r, seconds=elapsed,
              formulation=args.formulation, n_real=s.n_real)
    return report(outdir)


def report(outdir: str) -> int:
    """Table and figure from figure5.npz (so --replot can redo them without rerunning)."""
    path = os.path.join(outdir, "figure5.npz")
    r = read_npz(path, required=FIELDS)
    try:
        text = _table(r)
    except (IndexError, ValueError, TypeError) as e:
        raise ValueError(f"{path} does not hold a figure 5 result ({type(e).__name__}: {e})") from None
    # files first, then the terminal: output piped into head cannot cost a file
    write_text(os.path.join(outdir, "figure5.md"), text)
    _plot(r, os.path.join(outdir, "figure5.png"))
    print(text)
    print(f"wrote {outdir}/figure5.png, figure5.npz, figure5.md")
    return 0


def _table(r: dict) -> str:
    formulation = str(r.get("formulation", "ddpm"))
    R = r["I"].shape[1]
    se = lambda a: a.std(-1, ddof=1) / np.sqrt(a.shape[-1]) if a.shape[-1] > 1 else 0 * a.mean(-1)
    omega = list(r["omega"])
    lines = [f"Figure 5 (toy): {formulation}, |D_r| {int(r.get('n_real', 1000))}, {R} runs, SIMS w grid "
             f"{[float(w) for w in omega if w != 0]}, {float(r['seconds']) / 60:.1f} min; mean W2 to p_r "
             f"(+- s.e. over runs)", "",
             "SIMS takes the best w of the grid on all runs (the paper's protocol; biased low when the "
             "runs are noisy); held out: the w best on runs 1, 3, 5, ..., measured on runs 2, 4, 6, ...",
             "", f"ST-I {float(r['ST-I']):.3f}, SIMS-I {float(r['SIMS-I']):.3f} (w = {float(r['w_SIMS-I']):g}), "
             f"held out {_held_out(r['I'], omega)}", "",
             "| |D_p| | ST-P | SIMS-P | SIMS-P w | SIMS-P held out (at w) |", "|---:|---:|---:|---:|---:|"]
    i0 = omega.index(0.0)
    for j, n_p in enumerate(r["pollution"]):
        lines.append(f"| {n_p} | {r['ST-P'][j]:.3f} +- {se(r['P'][j, i0]):.3f} | {r['SIMS-P'][j]:.3f} "
                     f"| {r['w_SIMS-P'][j]:g} | {_held_out(r['P'][j], omega)} |")
    return "\n".join(lines)


def _held_out(d, omega) -> str:
    """SIMS's mean W2 at the w > 0 best on runs 0, 2, 4, ... measured on runs 1, 3, 5, ...
    (figures.common.halves), with its standard error over those runs. ``d`` (W,R): W2 per w, run."""
    choose, report = halves(d.shape[1])
    guided = [k for k, w in enumerate(omega) if w > 0]
    if not choose or not report or not guided:
        return "- (needs 2 runs and a w > 0)"
    k = min(guided, key=lambda k: d[k, choose].mean())
    x = d[k, report]  # R/2
    se = x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return f"{x.mean():.3f} +- {se:.3f} ({omega[k]:g})"


def _plot(r: dict, path: str) -> None:
    formulation, R = str(r.get("formulation", "ddpm")), r["I"].shape[1]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    x = r["pollution"]
    ax.plot(x, np.full(len(x), r["ST-I"]), "--", color="C2", label="ST-I (real only)")
    ax.plot(x, np.full(len(x), r["SIMS-I"]), "--", color="C4", label=f"SIMS-I (w = {float(r['w_SIMS-I']):g})")
    ax.plot(x, r["ST-P"], "o-", color="C2", label="ST-P (real + D_p)")
    ax.plot(x, r["SIMS-P"], "o-", color="C4", label="SIMS-P (best w)")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_xlabel("|D_p|, synthetic points from ST-I in the training set")
    ax.set_ylabel("E[W2 to p_r]")
    ax.set_title(f"polluted training on the 2D Gaussian ({formulation}, {R} runs)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def entry(argv=None):
    run_command(main, argv, "python toy/figure5.py")


if __name__ == "__main__":
    entry()
