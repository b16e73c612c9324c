"""Autoguidance beside SIMS on Figure 4's generation-1 panel: what does the aux's training data add?

Both methods sample with (1 + w) D_base - w D_neg from the same base model, on the same real data
and with the same sampling noise; only the negative model differs:

  SIMS            the base fine-tuned on 2000 of its own samples (paper Algorithm 1)
  auto: small     a narrower MLP trained on the real data with the base's budget
  auto: short     the base's MLP trained on the real data for a fraction of the budget
  auto: both      narrower and shorter (Karras et al. 2024b use both)

Plots E[dist(G^1, p_r)] vs w for each and writes autoguidance.png, autoguidance.npz (per run)
and autoguidance.md.
"""
from __future__ import annotations

if __name__ == "__main__":  # Ctrl-C while the imports below load: one line, exit 130
    from minisims.cli_util import during_startup
    during_startup()

import os
import time
from dataclasses import dataclass

import numpy as np

from ..autoguidance import bad_model_factory
from ..cli_util import (Parser, add_formulation, add_preset, add_run_options, blas_limit,
                        command_parser, float_list, int_at_least, override, prepare_run, run_command)
from ..executors import add_executor_options, open_executor
from ..metrics import gaussian_w2_from_moments
from ..plots import pyplot, save_figure
from ..toy import ToySizes
from .common import generation_one_runs, loop_config, write_npz, write_text
@dataclass(frozen=True, kw_only=True)
class AutoguidancePreset(ToySizes):
    """The w grid, on top of the world and budget of ToySizes."""
    omega: tuple[float, ...]       # w values (0 is always added)
    chunk_size: int                # runs trained at once


PAPER_W_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
PRESETS = {
    "tiny": AutoguidancePreset(runs=3, omega=(0.0, 1.0, 3.0), n_real=200, n_eval=300, hidden=32,
                               n_s=300, chunk_size=3),
    "cpu": AutoguidancePreset(runs=32, omega=PAPER_W_GRID, chunk_size=32),
    "paper": AutoguidancePreset(runs=1000, omega=PAPER_W_GRID, chunk_size=1000),
}

EXAMPLES = """examples:
  python toy/autoguidance.py --preset tiny     # seconds
  python toy/autoguidance.py --preset cpu      # ~10 minutes on 2 cores
  python toy/autoguidance.py --formulation edm --small-hidden 16 --short-epochs 25
  python toy/autoguidance.py --preset cpu --chunk-size 16 --dask-local 2   # chunks on a local Dask cluster
"""


def build_parser() -> Parser:
    p = command_parser("python toy/autoguidance.py", __doc__.split("\n\n")[0], EXAMPLES)
    add_preset(p, PRESETS)
    add_formulation(p)
    p.add_argument("--runs", type=int_at_least(1), help="independent runs")
    p.add_argument("--omega", type=float_list, metavar="W[,W...]", help="w values (0 is always added)")
    p.add_argument("--small-hidden", type=int_at_least(1), help="width of the small bad model (default: half the base's)")
    p.add_argument("--short-epochs", type=int_at_least(1), help="budget of the short bad model (default: half the base's)")
    p.add_argument("--chunk-size", type=int_at_least(1), help="runs trained at once per task")
    add_executor_options(p)
    add_run_options(p, outdir="runs/autoguidance", quiet=True)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    s = override(PRESETS[args.preset], args)
    omegas = sorted(set(s.omega) | {0.0})
    cfg = loop_config(s, args.formulation)
    small = args.small_hidden or max(1, s.hidden // 2)
    short = args.short_epochs or max(1, s.base_epochs // 2)
    methods = {"SIMS": None,
               f"auto: small (H {small})": bad_model_factory(cfg.sims, hidden=small),
               f"auto: short ({short} ep)": bad_model_factory(cfg.sims, epochs=short),
               "auto: both": bad_model_factory(cfg.sims, hidden=small, epochs=short)}
    dist = {}
    with open_executor(parser.prog, args) as executor:  # first: a wrong --scheduler leaves no folder
        outdir = prepare_run(parser.prog, args)
        t0 = time.perf_counter()
        for name, factory in methods.items():
            gen1 = generation_one_runs(cfg, omegas, s.runs, s.chunk_size, args.seed, factory,
                                       progress=not args.quiet, executor=executor,
                                       blas_threads=blas_limit(args))
            dist[name] = np.stack([gaussian_w2_from_moments(*gen1[w], np.asarray(cfg.mean),
                                                            np.asarray(cfg.cov))
                                   for w in omegas])  # W,R
    elapsed = time.perf_counter() - t0
    write_npz(os.path.join(outdir, "autoguidance.npz"), omega=np.array(omegas),
              names=np.array(list(dist)), w2=np.stack(list(dist.values())), seconds=elapsed)

    names = list(dist)
    lines = [f"Autoguidance vs SIMS at generation 1: {args.formulation}, {s.runs} runs, "
             f"E[W2(G^1, p_r)] (+- s.e.), {elapsed / 60:.1f} min", "",
             "| w | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for i, w in enumerate(omegas):
        cells = []
        for n in names:
            d = dist[n][i]
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
            cells.append(f"{d.mean():.3f} +- {se:.3f}")
        lines.append(f"| {w:g} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    write_text(os.path.join(outdir, "autoguidance.md"), text)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for k, n in enumerate(names):
        ax.plot(omegas, dist[n].mean(1), marker="o", color=f"C{4 if k == 0 else k}", label=n)
    ax.set_xlabel("w  (negative model weight; autoguidance g = 1 + w)")
    ax.set_ylabel("E[W2(G^1, p_r)]")
    ax.set_yscale("log")
    ax.set_title(f"generation 1: SIMS vs autoguidance ({args.formulation}, {s.runs} runs)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, os.path.join(outdir, "autoguidance.png"))
    print(text)  # after the files: output piped into head cannot cost a file
    print(f"wrote {outdir}/autoguidance.png, autoguidance.npz, autoguidance.md")
    return 0


def entry(argv=None):
    run_command(main, argv, "python toy/autoguidance.py")


if __name__ == "__main__":
    entry()
