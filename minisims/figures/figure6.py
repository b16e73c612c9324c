"""Figure 6 of the paper on a toy: SIMS shifts a model's group mix toward a target.

Two Gaussian groups, 50/50 in the real data. The auxiliary model is fine-tuned on the base
model's own samples, relabelled and resampled to the *complement* of the target mix (target 70/30
-> aux set 30/70). Sampling with (1 + w) s_base - w s_aux for w from -1 to 2 gives, per w, the
fraction of group 0 (left; w = -1 is the aux mix, w = 0 the base mix) and each group's W2 to its
own true component (right). Writes figure6.png, figure6.npz (per-run values) and figure6.md.
"""
from __future__ import annotations

if __name__ == "__main__":  # Ctrl-C while the imports below load: one line, exit 130
    from minisims.cli_util import during_startup
    during_startup()

import os
import time
from dataclasses import dataclass, replace

import numpy as np

from ..cli_util import (Parser, add_preset, add_run_options, blas_limit, command_parser, fail,
                        finite_float, float_list, int_at_least, override, prepare_run, run_command)
from ..executors import add_executor_options, open_executor
from ..plots import pyplot, save_figure
from ..shift import ShiftConfig, shift_sweep
from .common import write_npz, write_text


@dataclass(frozen=True, kw_only=True)
class Figure6Preset:
    """Sizes of the group-shift toy. The model itself (EDM, a 64-wide MLP with Fourier
    embedding, mini-batches) is ShiftConfig's default."""
    runs: int                      # independent runs R
    omega: tuple[float, ...]       # w values (-1 and 0 are always added)
    n_real: int = 2000             # real points per run (50/50 groups)
    n_s: int = 2000                # n_s, the aux model's synthetic set
    n_eval: int = 2000             # samples per run and w that are measured
    base_epochs: int = 100
    aux_epochs: int = 50
    steps: int = 32                # Heun steps N
    chunk_size: int = 64           # runs trained at once per task


PRESETS = {
    "tiny": Figure6Preset(runs=3, omega=(-1.0, 0.0, 1.0), n_real=300, n_s=300, n_eval=300,
                          base_epochs=30, aux_epochs=20, steps=8),
    "cpu": Figure6Preset(runs=32, omega=(-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)),
    "paper": Figure6Preset(runs=1000, omega=(-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0,
                                             1.25, 1.5, 1.75, 2.0)),
}

EXAMPLES = """examples:
  python toy/figure6.py --preset tiny       # seconds
  python toy/figure6.py --preset cpu        # 10-30 minutes on 2 cores
  python toy/figure6.py --target 0.9 --omega -1,0,1,2,3
  python toy/figure6.py --preset cpu --chunk-size 8 --dask-local 2   # 4 chunks on a local Dask cluster
"""


def build_parser() -> Parser:
    p = command_parser("python toy/figure6.py", __doc__.split("\n\n")[0], EXAMPLES)
    add_preset(p, PRESETS)
    p.add_argument("--runs", type=int_at_least(1), help="independent runs")
    p.add_argument("--omega", type=float_list, metavar="W[,W...]", help="w values (-1 and 0 are always added)")
    p.add_argument("--target", type=finite_float, default=0.7, help="target group-0 fraction (default: 0.7)")
    p.add_argument("--chunk-size", type=int_at_least(1), help="runs trained at once per task")
    add_executor_options(p)
    add_run_options(p, outdir="runs/figure6", quiet=True)
    return p


def shift_config(s: Figure6Preset, target: float) -> ShiftConfig:
    """ShiftConfig with preset ``s``'s sizes and budget and the target group-0 fraction."""
    cfg = ShiftConfig(n_real=s.n_real, target_frac=target, n_eval=s.n_eval)
    return replace(cfg, sims=replace(cfg.sims, n_synth=s.n_s, base_epochs=s.base_epochs,
                                     aux_epochs=s.aux_epochs, num_steps=s.steps))


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    s = override(PRESETS[args.preset], args)
    s = replace(s, omega=tuple(sorted(set(s.omega) | {-1.0, 0.0})))
    if not 0 < args.target < 1:
        fail(parser.prog, f"--target must be strictly between 0 and 1, got {args.target}", 2)
    cfg = shift_config(s, args.target)
    with open_executor(parser.prog, args) as executor:  # first: a wrong --scheduler leaves no folder
        outdir = prepare_run(parser.prog, args)
        t0 = time.perf_counter()
        r = shift_sweep(cfg, list(s.omega), s.runs, args.seed, s.chunk_size, progress=not args.quiet,
                        executor=executor, blas_threads=blas_limit(args))
    elapsed = time.perf_counter() - t0
    write_npz(os.path.join(outdir, "figure6.npz"), **r, target=args.target,
              base_frac=cfg.base_frac, seconds=elapsed)

    W, R = r["frac0"].shape
    f, fse = r["frac0"].mean(1), r["frac0"].std(1, ddof=1) / np.sqrt(R) if R > 1 else 0 * r["frac0"].mean(1)
    d = np.nanmean(r["dist"], axis=1)  # W,2
    lines = [f"Figure 6 (toy): base mix {cfg.base_frac:.0%} group 0, target {args.target:.0%}, "
             f"aux set {np.mean(r['aux_set_frac']):.1%} group 0; {R} runs, {elapsed / 60:.1f} min", "",
             "| w | group-0 fraction (+- s.e.) | W2 group 0 | W2 group 1 |", "|---:|---:|---:|---:|"]
    for i, w in enumerate(r["omega"]):
        lines.append(f"| {w:g} | {f[i]:.3f} +- {fse[i]:.3f} | {d[i, 0]:.3f} | {d[i, 1]:.3f} |")
    text = "\n".join(lines)
    write_text(os.path.join(outdir, "figure6.md"), text)

    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.errorbar(r["omega"], 100 * f, yerr=100 * fse, marker="o", capsize=3, color="C3")
    for y, lbl, c in ((cfg.aux_frac, "aux set mix", "C0"), (cfg.base_frac, "base mix", "C2"),
                      (args.target, "target", "C1")):
        a.axhline(100 * y, ls="--", lw=1, color=c, label=f"{lbl} ({y:.0%})")
    a.set_xlabel("w")
    a.set_ylabel("% of samples in group 0")
    a.legend(fontsize=8)
    a.set_title("group mix vs w", fontsize=10)
    for k in range(2):
        b.plot(r["omega"], d[:, k], marker="o", label=f"group {k}")
    b.set_xlabel("w")
    b.set_ylabel("W2 of a group's samples to its true component")
    b.legend(fontsize=8)
    b.set_title("per-group quality vs w", fontsize=10)
    fig.tight_layout()
    save_figure(fig, os.path.join(outdir, "figure6.png"))
    print(text)  # after the files: output piped into head cannot cost a file
    print(f"wrote {outdir}/figure6.png, figure6.npz, figure6.md")
    return 0


def entry(argv=None):
    run_command(main, argv, "python toy/figure6.py")


if __name__ == "__main__":
    entry()
