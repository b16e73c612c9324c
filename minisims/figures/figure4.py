"""Figure 4 of the paper: SIMS self-improves and keeps the synthetic augmentation loop from going MAD.

One command draws the three panels on the 2D Gaussian p_r = N([0,0], [[2,1],[1,2]]):

  top left    E[dist(G^1, p_r)] vs w: generation 1, SIMS at w (w = 0 is the base model)
  top right   E[dist(G^inf)] / E[dist(G^1)] vs w for every |D_s| (w = 0 is standard training),
              G^inf = the mean over generations inf_from..G (the paper: 20..100)
  bottom      E[dist(G^t)] / E[dist(G^1)] over generations t for |D_s| = 250 and 125

and writes the raw per-run results (npz, reload with minisims.loops.load_results), the panel-1
per-run distances (npz) and a table of the min-over-w SIMS ratio and the standard ratio per |D_s|
next to the paper's numbers, in W2 and in W2^2 (the paper does not say which form it plots).
Each ratio divides by the same loop's own generation 1.

The cells run in this process, on a thread or process pool, or on a Dask cluster
(minisims.executors); each finished cell is written to figure4_cells/ at once, so a killed sweep
resumes (--resume DIR) where it stopped, and the table and figure are built from those files.
"""
from __future__ import annotations

if __name__ == "__main__":  # Ctrl-C while the imports below load: one line, exit 130
    from minisims.cli_util import during_startup
    during_startup()

import dataclasses
import os
import time
from dataclasses import dataclass

import numpy as np

from ..atomic import json_safe, write_json
from ..cli_util import (Parser, add_formulation, add_preset, add_run_options, blas_limit,
                        command_parser, fail, float_list, from_dict, int_at_least, int_list,
                        override, prepare_run, run_command)
from ..executors import add_executor_options, open_executor
from ..loops.loop import Cell, LoopConfig
from ..loops.results import converged_ratio, load_results, ratio_curve, save_results
from ..loops.sweeps import sweep
from ..metrics import gaussian_w2_from_moments
from ..plots import pyplot, save_figure
from ..toy import ToySizes
from .common import generation_one_runs, halves, loop_config, read_npz, write_npz, write_text
from .common import replot as replot_run
from .sweep_folder import SweepFolder

PAPER_SIMS = {125: 0.996, 250: 1.013, 500: 1.078, 1000: 1.204}      # min over w, Sec. 4.2.1
PAPER_STANDARD = {125: 1.71, 250: 2.46, 500: 3.99, 1000: 6.69}


@dataclass(frozen=True, kw_only=True)
class Figure4Preset(ToySizes):
    """The loop sweep, the G^inf window, the panel-1 w grid and how tasks run, on top of the
    world and budget of ToySizes."""
    generations: int                      # G, generations per loop
    inf_from: int                         # G^inf = mean of generations inf_from..G
    n_synth: tuple[int, ...]              # |D_s| values, one cell each (standard + each SIMS w)
    omega: tuple[float, ...]              # SIMS w values of the loops
    gen1_omega: tuple[float, ...]         # the w grid of panel 1 (generation 1 only)
    chunk_size: int                       # runs trained at once per task
    workers: int = 1                      # threads running tasks at once


PAPER_W_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
PRESETS = {
    # seconds: for the tests. A smaller world (200 real points, a 32-wide MLP, n_s 300).
    "tiny": Figure4Preset(runs=2, generations=3, inf_from=2, n_synth=(50, 100), omega=(2.0,),
                          gen1_omega=(0.0, 2.0), n_real=200, n_eval=300, hidden=32, n_s=300,
                          chunk_size=2),
    # about an hour on 2 cores: 48 min measured with the default 2 workers on a shared 2-core
    # machine (load about 4); 16 cells, each 16 runs x 16 generations.
    "cpu": Figure4Preset(runs=16, generations=16, inf_from=8, n_synth=(125, 250, 500, 1000),
                         omega=(1.0, 3.0, 5.0), gen1_omega=PAPER_W_GRID, chunk_size=16, workers=2),
    # for one GPU (--device gpu): 7.8 min on one H200 (issue 10; toy/README.md).
    "gpu": Figure4Preset(runs=256, generations=30, inf_from=10, n_synth=(125, 250, 500, 1000),
                         omega=(1.0, 3.0), gen1_omega=PAPER_W_GRID, chunk_size=256),
    # the paper's size: 1000 runs x 100 generations, G^inf = generations 20..100: 28 cells of
    # 4 (standard) to 7 (SIMS) minutes each on one H200, about 3 hours; a job for a Dask cluster.
    "paper": Figure4Preset(runs=1000, generations=100, inf_from=20, n_synth=(125, 250, 500, 1000),
                           omega=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0), gen1_omega=PAPER_W_GRID,
                           chunk_size=1000),
}

EXAMPLES = """examples:
  python toy/figure4.py --preset tiny                 # seconds: a smoke test
  python toy/figure4.py --preset cpu                  # about an hour on 2 cores
  python toy/figure4.py --preset cpu --formulation edm --outdir runs/figure4_edm
  PYTHONPATH=. python toy/figure4.py --preset gpu --device gpu     # one GPU (see toy/gpu_check.py)
  python toy/figure4.py --preset paper --device gpu  # 1000 runs x 100 generations
  python toy/figure4.py --preset cpu --processes 2   # cells on a process pool
  python toy/figure4.py --preset cpu --dask-local 2  # cells on a local Dask cluster
  python toy/figure4.py --preset paper --device gpu --scheduler tcp://head:8786 --outdir runs/paper
  python toy/figure4.py --preset paper --device gpu --scheduler tcp://head:8786 --resume runs/paper
  python toy/figure4.py --replot runs/figure4        # table + figure again from the saved files

outputs in --outdir: figure4.png, figure4_loops.npz (per-run moments and distances of every
generation of every cell), figure4_gen1.npz (panel 1, per run), figure4_table.md, figure4.json,
figure4_cells/ (each cell as it finishes, and the settings: what --resume continues from)
"""


def build_parser() -> Parser:
    p = command_parser("python toy/figure4.py", __doc__.split("\n\n")[0], EXAMPLES)
    add_preset(p, PRESETS)
    add_formulation(p)
    p.add_argument("--runs", type=int_at_least(1), help="independent runs per cell")
    p.add_argument("--generations", type=int_at_least(2), help="generations per loop")
    p.add_argument("--inf-from", type=int_at_least(1), help="G^inf averages generations inf-from..G")
    p.add_argument("--n-synth", type=int_list, metavar="N[,N...]", help="|D_s| values, comma separated")
    p.add_argument("--omega", type=float_list, metavar="W[,W...]", help="SIMS w values of the loops")
    p.add_argument("--gen1-omega", type=float_list, metavar="W[,W...]", help="w grid of panel 1")
    p.add_argument("--chunk-size", type=int_at_least(1), help="runs trained at once per task")
    add_executor_options(p, pools=True)
    add_run_options(p, outdir="runs/figure4", quiet=True)
    p.add_argument("--resume", metavar="DIR",
                   help="continue the interrupted sweep in DIR (its --outdir): its finished cells are "
                        "kept; the other flags must give the settings it started with")
    p.add_argument("--metric", choices=["w2", "w2sq"],
                   help="distance drawn in the figure: W2 or W2^2 of the Gaussian fit (W2^2 is the "
                        "closed form of the paper group's code); the table gives both (default: w2sq)")
    p.add_argument("--replot", metavar="DIR", help="only rebuild table and figure from a finished run in DIR")
    return p


def settings(args) -> Figure4Preset:
    """The preset named by --preset with the flags given beside it; ValueError if inconsistent.
    Everything the table and the figure at the end need is checked here, before any work."""
    s = override(PRESETS[args.preset], args)
    if s.inf_from > s.generations:
        raise ValueError(f"--inf-from {s.inf_from} is beyond --generations {s.generations}")
    if any(n < 1 for n in s.n_synth):
        raise ValueError("every |D_s| must be >= 1")
    omega = tuple(sorted({float(w) for w in s.omega} - {0.0}))
    if not omega:
        raise ValueError("--omega needs a SIMS w other than 0 (w = 0 is standard training, "
                         "which every |D_s| runs anyway)")
    # a value given twice would be one cell run twice
    return dataclasses.replace(s, omega=omega, n_synth=tuple(sorted(set(s.n_synth))),
                               gen1_omega=tuple(dict.fromkeys(map(float, s.gen1_omega))))


def augmentation_loop(s: Figure4Preset, formulation: str) -> LoopConfig:
    """The synthetic augmentation loop of preset ``s``."""
    return loop_config(s, formulation, loop="augmentation", generations=s.generations)


def bootstrap_se(result, cfg, squared: bool, inf_from: int, n_boot: int = 400, runs=None) -> float:
    """Standard error of the converged ratio over runs (bootstrap: resample runs with
    replacement, recompute E[dist(G^inf)] / E[dist(G^1)]); over ``runs`` (None: all)."""
    d = result.distance(cfg.mean, cfg.cov, squared)  # R,G
    d = d if runs is None else d[runs]  # R',G
    R = d.shape[0]
    if R < 2:
        return float("nan")
    idx = np.random.default_rng(0).integers(0, R, size=(n_boot, R))  # B,R
    per_run_inf, per_run_1 = d[:, inf_from - 1:].mean(axis=1), d[:, 0]  # R, R
    ratios = per_run_inf[idx].mean(axis=1) / per_run_1[idx].mean(axis=1)  # B
    return float(ratios.std(ddof=1))


def summary_table(cfg, results, n_synth, inf_from, squared: bool) -> tuple[list[str], dict]:
    """SIMS's ratio and the standard ratio per |D_s|, beside the paper's, with bootstrap standard
    errors over runs. SIMS's w is chosen on half the runs and its ratio measured on the other half
    (figures.common.halves); the min over w on all runs, the paper's protocol, is beside it and is
    biased low when the ratios are noisy. Each ratio divides by its own loop's generation 1; the
    last column divides SIMS's G^inf (at the min's w) by the *standard* loop's G^1 instead (below
    1: better than the base model ever was)."""
    unit = "W2^2" if squared else "W2"
    rows, data = [], {}
    rows.append(f"| |D_s| | SIMS min ratio ({unit}) | at w | SIMS, w chosen on other runs | at w "
                f"| paper SIMS | standard ratio ({unit}) | paper standard | SIMS G^inf / standard G^1 |")
    rows.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in n_synth:
        cells = {c: r for c, r in results.items() if c.n_synth == n}
        sims_res = {c.w: r for c, r in cells.items() if c.method == "sims"}  # one cell per w
        sims = {w: converged_ratio(r, cfg.mean, cfg.cov, squared, inf_from) for w, r in sims_res.items()}
        std_res = [r for c, r in cells.items() if c.method == "standard"]
        if not sims or not std_res:  # e.g. --replot of a file from a run without SIMS cells
            data[n] = None
            rows.append(f"| {n} | {'no SIMS cell' if not sims else '-'} | - | - | - | - "
                        f"| {'no standard cell' if not std_res else '-'} | - | - |")
            continue
        std_res = std_res[0]
        std = converged_ratio(std_res, cfg.mean, cfg.cov, squared, inf_from)
        w_best = min(sims, key=sims.get)
        best = sims_res[w_best]
        d_inf = best.distance(cfg.mean, cfg.cov, squared).mean(axis=0)[inf_from - 1:].mean()
        vs_base = float(d_inf / std_res.distance(cfg.mean, cfg.cov, squared).mean(axis=0)[0])
        se_sims = bootstrap_se(best, cfg, squared, inf_from)
        se_std = bootstrap_se(std_res, cfg, squared, inf_from)
        choose, report = halves(best.mu.shape[0])
        held = {"w": None, "ratio": None, "se": None}
        if choose and report:
            ratio_on = {w: converged_ratio(r, cfg.mean, cfg.cov, squared, inf_from, runs=choose)
                        for w, r in sims_res.items()}
            w_held = min(ratio_on, key=ratio_on.get)
            r_held = sims_res[w_held]
            held = {"w": w_held, "ratio": converged_ratio(r_held, cfg.mean, cfg.cov, squared, inf_from,
                                                          runs=report),
                    "se": bootstrap_se(r_held, cfg, squared, inf_from, runs=report)}
        data[n] = {"sims_min": sims[w_best], "sims_min_se": se_sims, "w_best": w_best, "sims": sims,
                   "standard": std, "standard_se": se_std, "sims_inf_over_standard_g1": vs_base,
                   "held_out": held}
        shown = ("- | -" if held["w"] is None else
                 f"{held['ratio']:.3f} +- {held['se']:.3f} | {held['w']:g}")
        rows.append(f"| {n} | {sims[w_best]:.3f} +- {se_sims:.3f} | {w_best:g} | {shown} "
                    f"| {PAPER_SIMS.get(n, float('nan')):.3f} | {std:.3f} +- {se_std:.3f} "
                    f"| {PAPER_STANDARD.get(n, float('nan')):.2f} | {vs_base:.3f} |")
    return rows, data


def plot(path, cfg, results, gen1, s: Figure4Preset, formulation, squared=False):
    plt = pyplot()
    unit = "W2^2" if squared else "W2"
    fig = plt.figure(figsize=(11, 8))
    gs = fig.add_gridspec(2, 2)
    # top left: generation 1 vs w
    ax = fig.add_subplot(gs[0, 0])
    ws = sorted(gen1)
    d = np.array([gaussian_w2_from_moments(*gen1[w], np.asarray(cfg.mean), np.asarray(cfg.cov), squared)
                  for w in ws])  # W,R
    m, se = d.mean(1), d.std(1, ddof=1) / np.sqrt(d.shape[1]) if d.shape[1] > 1 else 0 * d.mean(1)
    ax.errorbar(ws, m, yerr=se, marker="o", color="C4", capsize=3, label="SIMS, generation 1")
    ax.axhline(m[ws.index(0.0)] if 0.0 in ws else np.nan, color="C2", ls="--", lw=1, label="base (w = 0)")
    ax.set_xlabel("w")
    ax.set_ylabel(f"E[{unit}(G^1, p_r)]")
    ax.set_yscale("log")
    ax.set_title("self-improvement at generation 1", fontsize=10)
    ax.legend(fontsize=8)
    # top right: converged ratio vs w per |D_s|
    ax = fig.add_subplot(gs[0, 1])
    for i, n in enumerate(s.n_synth):
        pts = sorted((c.w, converged_ratio(r, cfg.mean, cfg.cov, squared, s.inf_from))
                     for c, r in results.items() if c.n_synth == n)
        ax.plot(*zip(*pts), marker="o", color=f"C{i}", label=f"|D_s| = {n}")
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xlabel("w (0 = standard training)")
    ax.set_ylabel("E[dist(G^inf)] / E[dist(G^1)]")
    ax.set_yscale("log")
    ax.set_title(f"converged ratio, G^inf = mean of generations {s.inf_from}..{s.generations}", fontsize=10)
    ax.legend(fontsize=8)
    # bottom: ratio over generations for two |D_s|
    shown = [n for n in (250, 125) if n in s.n_synth] or list(s.n_synth[:2])
    for j, n in enumerate(shown[:2]):
        ax = fig.add_subplot(gs[1, j])
        sims_colours = iter(["C0", "C1", "C3", "C4", "C5", "C6", "C7", "C8", "C9"] * 4)  # C2: standard
        for c, r in sorted(results.items(), key=lambda kv: kv[0].w):
            if c.n_synth != n:
                continue
            curve = ratio_curve(r, cfg.mean, cfg.cov, squared)
            ax.plot(np.arange(1, len(curve) + 1), curve, label=c.label,
                    color="C2" if c.method == "standard" else next(sims_colours))
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.set_xlabel("generation t")
        ax.set_ylabel("E[dist(G^t)] / E[dist(G^1)]")
        ax.set_title(f"synthetic augmentation loop, |D_s| = {n}", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(f"Figure 4 on the 2D Gaussian ({formulation}, {s.runs} runs, {unit}, "
                 f"preset sizes: {s.generations} generations)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    if args.replot:
        return replot_run(prog, args.replot, "figure4_loops.npz", replot, args.metric)
    try:
        s = settings(args)
    except ValueError as e:
        fail(prog, str(e), 2)
    if args.resume:
        args.outdir = args.resume
    folder = SweepFolder(os.path.join(args.outdir, "figure4_cells"), sweep_settings(s, args))
    try:
        folder.check(resume=bool(args.resume))  # before any work
    except ValueError as e:
        fail(prog, str(e), 2)
    cfg = augmentation_loop(s, args.formulation)
    cells = [Cell(n, 0.0, "standard") for n in s.n_synth] + \
            [Cell(n, float(w), "sims") for n in s.n_synth for w in s.omega if w != 0]
    t_gen1 = None
    with open_executor(prog, args, s.workers) as executor:  # first: a wrong --scheduler leaves no folder
        outdir = prepare_run(prog, args)
        gen1_path, loops_path = (os.path.join(outdir, f) for f in ("figure4_gen1.npz", "figure4_loops.npz"))
        t0 = time.perf_counter()
        folder.start(fresh=not args.resume, stale=[gen1_path, loops_path])
        if args.resume and os.path.exists(gen1_path):
            gen1 = _on_disk(prog, _read_gen1, gen1_path)
        else:
            gen1 = generation_one_runs(cfg, [0.0] + [w for w in s.gen1_omega if w != 0], s.runs,
                                       s.chunk_size, args.seed, progress=not args.quiet,
                                       executor=executor, blas_threads=blas_limit(args))
            t_gen1 = time.perf_counter() - t0
            ws = sorted(gen1)  # panel 1 is kept even if the sweep is interrupted
            write_npz(gen1_path, w=np.array(ws), mu=np.stack([gen1[w][0] for w in ws]),
                      cov=np.stack([gen1[w][1] for w in ws]))
        done = _on_disk(prog, folder.load, cfg, cells)  # what an earlier, interrupted run finished
        sweep(cfg, [c for c in cells if c not in done], s.runs, seed=args.seed,
              chunk_size=s.chunk_size, executor=executor, blas_threads=blas_limit(args),
              progress=not args.quiet, on_cell=lambda cell, r: folder.save(cfg, cell, r))
    elapsed = time.perf_counter() - t0

    results = _on_disk(prog, folder.load, cfg, cells)  # the table and figure are built from the files
    meta = {"preset": args.preset, "formulation": args.formulation, "settings": dataclasses.asdict(s),
            "seed": args.seed, "metric": args.metric or "w2sq", "device": args.device,
            "seconds": elapsed, "seconds_panel1": t_gen1, "resumed_cells": len(done)}
    save_results(loops_path, cfg, results, meta)
    folder.finish()
    report(outdir, cfg, results, gen1, meta)
    return 0


def sweep_settings(s: Figure4Preset, args) -> dict:
    """Everything a sweep's numbers depend on (what --resume compares): not the chunk size or
    the executor, which change only memory and speed."""
    return {**{k: v for k, v in dataclasses.asdict(s).items() if k not in ("chunk_size", "workers")},
            "formulation": args.formulation, "seed": args.seed, "device": args.device}


def _on_disk(prog: str, read, *args):
    """``read(*args)``, reading a sweep's files; a damaged or foreign file is a one-line exit 1."""
    try:
        return read(*args)
    except ValueError as e:
        fail(prog, str(e), 1)


def _read_gen1(path: str) -> dict:
    """Panel 1 as figure4_gen1.npz holds it: {w: (mu (R,D), cov (R,D,D))}; ValueError naming
    the file if it is damaged."""
    z = read_npz(path, required=("w", "mu", "cov"))
    try:
        return {float(w): (z["mu"][i], z["cov"][i]) for i, w in enumerate(z["w"])}
    except (IndexError, TypeError, ValueError) as e:
        raise ValueError(f"{path} does not hold panel 1 ({type(e).__name__}: {e})") from None


def report(outdir, cfg, results, gen1, meta):
    """Table (md + json) and figure from the results; --replot calls it on saved files."""
    s, formulation = from_dict(Figure4Preset, meta["settings"]), meta["formulation"]
    ws = sorted(gen1)
    lines = [f"Figure 4 table: {formulation}, preset {meta['preset']}, {s.runs} runs x "
             f"{s.generations} generations, G^inf = mean of generations {s.inf_from}..{s.generations}, "
             f"SIMS w in {list(s.omega)}, {meta['seconds'] / 60:.1f} min on {meta['device']}"
             + (f" (resumed: {meta['resumed_cells']} cells from an earlier run)" if meta.get("resumed_cells") else ""),
             "",
             "SIMS min ratio: the lowest over w, on all runs (the paper's protocol; biased low when "
             "the ratios are noisy). SIMS, w chosen on other runs: the w with the lowest ratio on runs "
             "1, 3, 5, ... and its ratio on runs 2, 4, 6, ..., which played no part in the choice.",
             ""]
    tables = {}
    for squared in (False, True):
        rows, data = summary_table(cfg, results, s.n_synth, s.inf_from, squared)
        tables["w2sq" if squared else "w2"] = data
        lines += rows + [""]
    d1 = {w: float(gaussian_w2_from_moments(*gen1[w], np.asarray(cfg.mean), np.asarray(cfg.cov)).mean()) for w in ws}
    d1sq = {w: float(gaussian_w2_from_moments(*gen1[w], np.asarray(cfg.mean), np.asarray(cfg.cov), True).mean())
            for w in ws}
    lines.append("generation 1, E[W2(G^1, p_r)] by w: " + ", ".join(f"{w:g}: {d1[w]:.3f}" for w in ws))
    lines.append("generation 1, E[W2^2(G^1, p_r)] by w: " + ", ".join(f"{w:g}: {d1sq[w]:.3f}" for w in ws))
    text = "\n".join(lines)
    # files first, then the terminal: output piped into head cannot cost a file
    write_text(os.path.join(outdir, "figure4_table.md"), text)
    write_json(os.path.join(outdir, "figure4.json"), json_safe(
               {**meta, "tables": {k: {str(n): v and v | {"sims": {str(w): r for w, r in v["sims"].items()}}
                                       for n, v in t.items()} for k, t in tables.items()},
                "gen1_w2": {str(w): d1[w] for w in ws}}))
    plot(os.path.join(outdir, "figure4.png"), cfg, results, gen1, s, formulation,
         squared=meta.get("metric", "w2sq") == "w2sq")
    print(text)
    print(f"wrote {outdir}/figure4.png, figure4_loops.npz, figure4_gen1.npz, figure4_table.md, figure4.json")


def replot(indir: str, metric: str | None = None) -> int:
    """Rebuild the table and the figure from a finished run's figure4_loops.npz and figure4_gen1.npz."""
    cfg, results, meta = load_results(os.path.join(indir, "figure4_loops.npz"))
    meta["metric"] = metric or meta.get("metric", "w2sq")
    gen1 = _read_gen1(os.path.join(indir, "figure4_gen1.npz"))
    try:
        s = from_dict(Figure4Preset, meta["settings"])
    except (IndexError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{indir}: the settings in figure4_loops.npz do not fit "
                         f"({type(e).__name__}: {e})") from None
    if s.inf_from > min((r.mu.shape[1] for r in results.values()), default=0):
        raise ValueError(f"{indir}/figure4_loops.npz holds fewer generations than its settings say")
    report(indir, cfg, results, gen1, meta)
    return 0


def entry(argv=None):
    run_command(main, argv, "python toy/figure4.py")


if __name__ == "__main__":
    entry()
