"""When does SIMS help? Generation 1 on the 2D Gaussian over base budget x aux budget x w.

On the paper's toy p_r = N(0, [[2,1],[1,2]]) (Sec. 4.2.1) each run trains, per formulation and
base budget (epochs of full-batch Adam on |D| real points), one base model (Algorithm 1, step 1)
and draws one synthetic set S of n_s points from it (step 2). For every aux budget a copy of that
base is fine-tuned on the same S (step 3), and the SIMS model (1 + w) s_base - w s_aux (eq. 5) is
sampled at every w with the same noise (step 4), so that the rows of one cell differ only by the
guidance and w = 0 is the base bit for bit. The distance is W2 between the Gaussian fit of
n_eval samples and p_r, averaged over runs. Each cell's improvement ratio is

    ratio = min over w > 0 of E[W2(SIMS at w)] / E[W2(base)]

(below 1: SIMS helps at its best w; above 1: it hurts even there).

Why it helps or hurts, to first order: the aux's covariance error Delta' either points along the
base's own error Delta (then w near w* = <Delta, Delta'> / <Delta', Delta'> cancels it) or not
(then every w > 0 only adds -w Delta'); docs/when_sims_helps.md has the derivation.
:func:`first_order` measures Delta and Delta' (means over runs), w*, and the predicted guided
moments per run and w; the tables and the curves set them beside the measured ones.

Random numbers: every generator comes from :func:`_rng` (one place): per-run streams keyed by
the run and their purpose only, never by the chunk, the formulation, a budget or w. Every cell
of a run sees the same real data, the bases of different budgets start from the same weights and
draws (a shorter budget is the first epochs of a longer one), the auxes of different budgets
likewise, and every sampling uses the same noise.

Writes when_sims_helps.png (heatmap of the ratio, one panel per formulation),
when_sims_helps_curves.png (W2 vs w per cell, measured and first-order), when_sims_helps_cov.png
(covariance ellipses of p_r, base, aux and SIMS at its best w), when_sims_helps.npz (per-run
moments and distances) and when_sims_helps.md (the tables).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from .. import backend
from ..cli_util import (Parser, add_preset, add_run_options, blas_limit, command_parser, fail,
                        float_list, from_dict, int_at_least, int_list, override, prepare_run,
                        run_command)
from ..data.toy import GAUSSIAN_COV, GAUSSIAN_MEAN, sample_gaussian
from ..metrics import gaussian_w2_from_moments, moments
from ..plots import gaussian_contours, pyplot, save_figure
from ..sims import SIMSConfig, diverged_epoch, sample_sims, synthesize, train_aux, train_base
from ..streams import Streams
from ..toy import ToySizes, sims_config
from .common import halves, read_npz, write_npz, write_text
from .common import replot as replot_run

# R runs, F formulations, Bb base budgets, Ba aux budgets, W guidance values, D data dimension (2)
# Every per-run array has the run axis first.

FORMULATIONS = ("ddpm", "edm", "vp")
NAME = "when_sims_helps"
STREAMS = Streams(("data", "base", "synth", "aux", "sample"))


def _rng(seed: int, first_run: int, runs: int, *coords: int, name: str, numpy: bool = False):
    """The one place this module makes a random generator: stream ``name`` of the runs
    first_run .. first_run + runs - 1 (one chunk), at integer coordinates ``coords``.

    Per-run streams (minisims.streams.RunGenerator): row r of every draw comes from run r's own
    stream, so a run's results depend on the seed and its index alone, never on the chunk size.
    ``numpy=True`` gives NumPy arrays on any device (the real data), else the device's."""
    return STREAMS.rng(seed, *coords, name, numpy=numpy, runs=range(first_run, first_run + runs))


@dataclass(frozen=True, kw_only=True)
class WhenPreset:
    """The grid and the world of the study. The world's defaults are the paper's toy (ToySizes);
    the budgets are tuples here, one base model per base budget and one aux per aux budget."""
    runs: int                          # independent runs R
    formulations: tuple[str, ...] = ("ddpm", "edm")
    base_epochs: tuple[int, ...]       # base budgets (full-batch steps on |D| = 1000)
    aux_epochs: tuple[int, ...]        # aux budgets B (epochs on S)
    omega: tuple[float, ...]           # w grid; 0 (the base) is always added
    n_real: int = 1000                 # |D|, real points per run
    n_eval: int = 2000                 # samples per run that are measured, per w
    hidden: int = 64                   # MLP width
    n_s: int = 2000                    # n_s = |S|
    steps: int = 32                    # EDM/VP Heun steps N
    chunk_size: int                    # runs trained at once


PRESETS = {
    # seconds: the tests. A smaller world, two chunks (2 + 1 runs).
    "tiny": WhenPreset(runs=3, base_epochs=(10, 40), aux_epochs=(5, 20), omega=(0.5, 2.0),
                       n_real=200, n_eval=200, hidden=16, n_s=200, steps=8, chunk_size=2),
    # minutes on a shared 2-core machine, 1 BLAS thread (timed: docs/notes/core.md)
    "cpu": WhenPreset(runs=12, base_epochs=(25, 100, 400), aux_epochs=(10, 50, 200),
                      omega=(0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0), n_eval=1000, chunk_size=12),
    # one GPU (--device gpu); not yet timed there
    "gpu": WhenPreset(runs=256, base_epochs=(25, 50, 100, 200, 400, 1000),
                      aux_epochs=(5, 10, 25, 50, 100, 200),
                      omega=(0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0), chunk_size=256),
}

# what report() reads from when_sims_helps.npz
FIELDS = ("formulations", "base_epochs", "aux_epochs", "omega", "mean", "cov_r",
          "mu_data", "cov_data", "mu_base", "cov_base", "mu_aux", "cov_aux", "mu", "cov",
          "w2_data", "w2_base", "w2_aux", "w2",
          "base_diverged", "aux_diverged", "settings", "seed", "seconds")

EXAMPLES = """examples:
  python toy/when_sims_helps.py --preset tiny             # seconds
  python toy/when_sims_helps.py --preset cpu              # ~8 minutes on 2 cores
  python toy/when_sims_helps.py --formulations ddpm --base-epochs 50,100 --aux-epochs 25,50
  python toy/when_sims_helps.py --n-synth 500 --n-real 250 --outdir runs/when_small
  python toy/when_sims_helps.py --replot runs/when_sims_helps   # tables + figures from the npz

ratio = min over w > 0 of E[W2(SIMS at w)] / E[W2(base)]: below 1 SIMS helps at its best w,
above 1 it hurts even there. Every w is sampled with the same noise; w = 0 is the base exactly.
"""


def formulation_list(text: str) -> list[str]:
    """'ddpm' or 'ddpm,edm' -> [names]; each one of FORMULATIONS."""
    names = [p for p in text.replace(" ", ",").split(",") if p]
    bad = [n for n in names if n not in FORMULATIONS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"{', '.join(bad) or repr(text)}: use one or more of "
                                         f"{', '.join(FORMULATIONS)}, comma separated")
    return names


def build_parser() -> Parser:
    p = command_parser("python toy/when_sims_helps.py", __doc__.split("\n\n")[0], EXAMPLES)
    add_preset(p, PRESETS)
    p.add_argument("--formulations", type=formulation_list, metavar="F[,F...]",
                   help="ddpm (the paper's toy: eps-prediction, cosine, 40 ancestral steps), edm, vp")
    p.add_argument("--runs", type=int_at_least(1), help="independent runs")
    p.add_argument("--base-epochs", type=int_list, metavar="N[,N...]", help="base budgets, epochs (>= 1)")
    p.add_argument("--aux-epochs", type=int_list, metavar="N[,N...]", help="aux budgets B, epochs (>= 0)")
    p.add_argument("--omega", type=float_list, metavar="W[,W...]",
                   help="w grid, at least one w > 0 (0, the base, is always added)")
    p.add_argument("--n-real", type=int_at_least(2), help="|D|, real points per run")
    p.add_argument("--n-synth", type=int_at_least(2), dest="n_s", metavar="N_SYNTH",
                   help="n_s = |S|, the aux's synthetic set")
    p.add_argument("--n-eval", type=int_at_least(2), help="samples per run and w that are measured")
    p.add_argument("--hidden", type=int_at_least(1), help="MLP width")
    p.add_argument("--steps", type=int_at_least(2), help="edm/vp: Heun steps N")
    p.add_argument("--chunk-size", type=int_at_least(1), help="runs trained at once")
    add_run_options(p, outdir=f"runs/{NAME}", quiet=True)
    p.add_argument("--replot", metavar="DIR", help=f"only rebuild tables and figures from DIR/{NAME}.npz")
    return p


def settings(args) -> WhenPreset:
    """The preset named by --preset with the flags given beside it, checked (:func:`checked`)."""
    return checked(override(PRESETS[args.preset], args))


def checked(s: WhenPreset) -> WhenPreset:
    """``s`` ready to run: ValueError if a value cannot give a result; formulations in order and
    budgets sorted, each once; w = 0 (the base) added to the sorted w grid."""
    if not s.formulations or any(f not in FORMULATIONS for f in s.formulations):
        raise ValueError(f"formulations must be one or more of {', '.join(FORMULATIONS)}")
    if min(s.runs, s.chunk_size, s.hidden) < 1 or min(s.n_real, s.n_s, s.n_eval, s.steps) < 2:
        raise ValueError("need runs, chunk_size, hidden >= 1 and n_real, n_s, n_eval, steps >= 2")
    if min(s.base_epochs) < 1:
        raise ValueError("every --base-epochs must be >= 1")
    if min(s.aux_epochs) < 0:
        raise ValueError("every --aux-epochs must be >= 0")
    if not any(w > 0 for w in s.omega):
        raise ValueError("--omega needs a w > 0 (the ratio is the best over w > 0; w = 0 is the base)")
    return dataclasses.replace(s, formulations=tuple(dict.fromkeys(s.formulations)),
                               base_epochs=tuple(sorted(set(s.base_epochs))),
                               aux_epochs=tuple(sorted(set(s.aux_epochs))),
                               omega=tuple(sorted(set(map(float, s.omega)) | {0.0})))


def cell_config(s: WhenPreset, formulation: str, base_epochs: int, aux_epochs: int) -> SIMSConfig:
    """The SIMSConfig of one cell: the preset's world with these budgets."""
    sizes = ToySizes(runs=s.runs, n_real=s.n_real, n_eval=s.n_eval, hidden=s.hidden,
                     base_epochs=base_epochs, aux_epochs=aux_epochs, n_s=s.n_s)
    return sims_config(sizes, formulation, num_steps=s.steps)


# ---------------------------------------------------------------- the experiment

def study_chunk(s: WhenPreset, seed: int, first_run: int, runs: int, log=None) -> dict:
    """Every cell of the grid for the runs first_run .. first_run + runs - 1, trained at once.
    Returns per-run moments (run axis first): mu_data (R,D) and cov_data (R,D,D) of the real
    points, mu_base (R,F,Bb,D), cov_base (R,F,Bb,D,D), mu_aux and cov_aux (R,F,Bb,Ba,...), mu and
    cov (R,F,Bb,Ba,W,...), and the epoch each base and aux loss first became non-finite, 0 if
    never (R,F,Bb) and (R,F,Bb,Ba)."""
    F, Bb, Ba, W, D = len(s.formulations), len(s.base_epochs), len(s.aux_epochs), len(s.omega), 2
    out = {"mu_base": np.zeros((runs, F, Bb, D)), "cov_base": np.zeros((runs, F, Bb, D, D)),
           "mu_aux": np.zeros((runs, F, Bb, Ba, D)), "cov_aux": np.zeros((runs, F, Bb, Ba, D, D)),
           "mu": np.zeros((runs, F, Bb, Ba, W, D)), "cov": np.zeros((runs, F, Bb, Ba, W, D, D)),
           "base_diverged": np.zeros((runs, F, Bb), int), "aux_diverged": np.zeros((runs, F, Bb, Ba), int)}

    def rng(name, **kw):
        return _rng(seed, first_run, runs, name=name, **kw)

    def measured(x):  # R,n,D samples -> their moments (R,D), (R,D,D), in float64 on the host
        return moments(backend.to_numpy(x))

    D_r = backend.asarray(sample_gaussian(s.n_real, rng("data", numpy=True), runs))  # R,n_real,D
    out["mu_data"], out["cov_data"] = measured(D_r)  # the real points' own Gaussian fit: a floor
    t0 = time.perf_counter()
    for f, form in enumerate(s.formulations):
        for i, b in enumerate(s.base_epochs):
            cfg = cell_config(s, form, b, s.aux_epochs[0])
            base, base_loss = train_base(D_r, cfg, rng("base"))                 # step 1
            S = synthesize(base, cfg, s.n_s, rng("synth"))                      # step 2, R,n_s,D
            out["base_diverged"][:, f, i] = diverged_epoch(base_loss)
            out["mu_base"][:, f, i], out["cov_base"][:, f, i] = measured(
                synthesize(base, cfg, s.n_eval, rng("sample")))                 # R,n_eval,D
            for j, a in enumerate(s.aux_epochs):
                cfg = cell_config(s, form, b, a)
                aux, aux_loss = train_aux(base, S, cfg, rng("aux"))             # step 3, a copy
                out["aux_diverged"][:, f, i, j] = diverged_epoch(aux_loss)
                out["mu_aux"][:, f, i, j], out["cov_aux"][:, f, i, j] = measured(
                    synthesize(aux, cfg, s.n_eval, rng("sample")))
                for k, w in enumerate(s.omega):                                 # step 4
                    out["mu"][:, f, i, j, k], out["cov"][:, f, i, j, k] = measured(
                        sample_sims(base, aux, cfg, w, s.n_eval, rng("sample")))
            del S  # Algorithm 1: discard S
            if log is not None:
                log(f"runs {first_run + 1}-{first_run + runs}: {form}, base {b} epochs done "
                    f"({time.perf_counter() - t0:.0f} s)")
    return out


def distance(mu, cov, mean=GAUSSIAN_MEAN, cov_r=GAUSSIAN_COV):
    """W2 between N(mu, cov) and N(mean, cov_r) over any leading axes; NaN where the moments are
    not finite (a diverged run) or cov is not positive definite (a first-order prediction)."""
    mu, cov = np.asarray(mu, np.float64), np.asarray(cov, np.float64)
    eye = np.eye(cov.shape[-1])  # D,D: stands in where a covariance is unusable
    ok = np.isfinite(mu).all(-1) & np.isfinite(cov).all((-1, -2))  # ...
    ok &= np.linalg.eigvalsh(np.where(ok[..., None, None], cov, eye))[..., 0] > 0
    d = gaussian_w2_from_moments(np.where(ok[..., None], mu, 0.0), np.where(ok[..., None, None], cov, eye),
                                 np.asarray(mean, float), np.asarray(cov_r, float))  # ...
    return np.where(ok, d, np.nan)


def run_study(s: WhenPreset, seed: int = 0, log=None) -> dict:
    """The whole grid of ``checked(s)`` over ``s.runs`` runs in chunks of ``s.chunk_size``: the
    result file's arrays (see FIELDS), with W2 to p_r of every moment: w2_data (R), w2_base
    (R,F,Bb), w2_aux (R,F,Bb,Ba), w2 (R,F,Bb,Ba,W)."""
    s = checked(s)
    t0 = time.perf_counter()
    parts = [study_chunk(s, seed, start, min(s.chunk_size, s.runs - start), log)
             for start in range(0, s.runs, s.chunk_size)]
    r = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    with np.errstate(invalid="ignore", over="ignore"):
        r["w2_data"] = distance(r["mu_data"], r["cov_data"])  # R
        r["w2_base"] = distance(r["mu_base"], r["cov_base"])  # R,F,Bb
        r["w2_aux"] = distance(r["mu_aux"], r["cov_aux"])  # R,F,Bb,Ba
        r["w2"] = distance(r["mu"], r["cov"])  # R,F,Bb,Ba,W
    r.update(formulations=np.array(s.formulations), base_epochs=np.array(s.base_epochs),
             aux_epochs=np.array(s.aux_epochs), omega=np.array(s.omega), mean=GAUSSIAN_MEAN,
             cov_r=GAUSSIAN_COV, settings=np.array(json.dumps(dataclasses.asdict(s))),
             seed=np.array(seed), seconds=np.array(time.perf_counter() - t0))
    return r


# ---------------------------------------------------------------- what the results say

def improvement(r: dict) -> dict:
    """The heatmap's numbers: base E[W2] (F,Bb), E[W2] per cell and w (F,Bb,Ba,W), and per cell
    (F,Bb,Ba) the ratio min_{w > 0} E[W2(w)] / E[W2(base)], the w that attains it (best_w, its
    index best_index) and how many runs are closer to p_r there than their base (runs_better).
    A w whose mean is not finite (a run diverged) is left out of the minimum; NaN where every w
    is."""
    base = r["w2_base"].mean(0)  # F,Bb
    mean = r["w2"].mean(0)  # F,Bb,Ba,W
    pos = r["omega"] > 0
    guided = np.where(np.isfinite(mean[..., pos]), mean[..., pos], np.inf)  # F,Bb,Ba,W+
    k = guided.argmin(-1)  # F,Bb,Ba
    best = np.take_along_axis(guided, k[..., None], -1)[..., 0]  # F,Bb,Ba
    ratio = np.where(np.isfinite(best), best, np.nan) / base[..., None]
    index = np.flatnonzero(pos)[k]  # F,Bb,Ba: the best w's index in omega
    at_best = np.take_along_axis(r["w2"], index[None, ..., None], -1)[..., 0]  # R,F,Bb,Ba
    # held out: the w > 0 best on runs 0, 2, 4, ..., its ratio on runs 1, 3, 5, ... (NaN: < 2 runs)
    choose, report = halves(r["w2"].shape[0])
    held_ratio = np.full(ratio.shape, np.nan)  # F,Bb,Ba
    held_w = np.full(ratio.shape, np.nan)  # F,Bb,Ba
    if choose and report:
        on = r["w2"][choose].mean(0)[..., pos]  # F,Bb,Ba,W+
        on = np.where(np.isfinite(on), on, np.inf)
        k_held = np.flatnonzero(pos)[on.argmin(-1)]  # F,Bb,Ba
        at = np.take_along_axis(r["w2"][report].mean(0), k_held[..., None], -1)[..., 0]  # F,Bb,Ba
        held_ratio = np.where(np.isfinite(on.min(-1)), at, np.nan) / r["w2_base"][report].mean(0)[..., None]
        held_w = r["omega"][k_held]
    return {"base": base, "mean": mean, "ratio": ratio, "best_w": r["omega"][index],
            "best_index": index, "runs_better": (at_best < r["w2_base"][..., None]).sum(0),
            "held_out_ratio": held_ratio, "held_out_w": held_w}


def first_order(r: dict) -> dict:
    """The first-order argument against the measurements (module docstring).

    delta = E[Sigma_b] - Sigma (F,Bb,D,D) and delta_p = E[Sigma_a - Sigma_b] (F,Bb,Ba,D,D), means
    over runs; cos = their Frobenius cosine, gain = |Delta'| / |Delta|, w_star = <Delta, Delta'> /
    |Delta'|^2 (F,Bb,Ba); per run and w the predicted guided moments mu_b - w (mu_a - mu_b),
    Sigma_b - w (Sigma_a - Sigma_b) (R,F,Bb,Ba,W,...), their mean W2 to p_r (F,Bb,Ba,W; NaN
    where a run's predicted covariance is not positive definite) and the index in omega of the
    w > 0 where that is lowest (F,Bb,Ba; -1 where no w > 0 gives a prediction)."""
    w = r["omega"][:, None]  # W,1
    Sb, Sa = r["cov_base"][:, :, :, None], r["cov_aux"]  # R,F,Bb,1,D,D  R,F,Bb,Ba,D,D
    mb, ma = r["mu_base"][:, :, :, None], r["mu_aux"]  # R,F,Bb,1,D  R,F,Bb,Ba,D
    delta = r["cov_base"].mean(0) - r["cov_r"]  # F,Bb,D,D
    delta_p = (Sa - Sb).mean(0)  # F,Bb,Ba,D,D
    inner = (delta[:, :, None] * delta_p).sum((-1, -2))  # F,Bb,Ba
    norm_d = np.sqrt((delta ** 2).sum((-1, -2)))[:, :, None]  # F,Bb,1
    norm_p = np.sqrt((delta_p ** 2).sum((-1, -2)))  # F,Bb,Ba
    with np.errstate(invalid="ignore", divide="ignore"):
        mu_pred = mb[..., None, :] - w * (ma - mb)[..., None, :]  # R,F,Bb,Ba,W,D
        cov_pred = Sb[..., None, :, :] - w[..., None] * (Sa - Sb)[..., None, :, :]  # R,F,Bb,Ba,W,D,D
        w2_pred = distance(mu_pred, cov_pred, r["mean"], r["cov_r"]).mean(0)  # F,Bb,Ba,W
        pos = np.flatnonzero(r["omega"] > 0)
        guided = np.where(np.isfinite(w2_pred[..., pos]), w2_pred[..., pos], np.inf)  # F,Bb,Ba,W+
        best = np.where(np.isfinite(guided).any(-1), pos[guided.argmin(-1)], -1)  # F,Bb,Ba; -1: none PD
        return {"delta": delta, "delta_p": delta_p, "cos": inner / (norm_d * norm_p),
                "gain": norm_p / norm_d, "w_star": inner / norm_p ** 2, "mu_pred": mu_pred,
                "cov_pred": cov_pred, "w2_pred": w2_pred, "best_index": best}


def _entries(S) -> str:
    """A symmetric 2x2 matrix as its entries '11, 12, 22'."""
    return ", ".join(f"{v:.3g}" for v in (S[0, 0], S[0, 1], S[1, 1]))


def grid_cells(r):
    """(f, i, j, formulation, base epochs, aux epochs) of every cell, in table order."""
    for f, form in enumerate(r["formulations"]):
        for i, b in enumerate(r["base_epochs"]):
            for j, a in enumerate(r["aux_epochs"]):
                yield f, i, j, str(form), int(b), int(a)


def tables(r: dict) -> str:
    """The markdown: the ratio table, the covariances, and the first-order check."""
    imp, fo = improvement(r), first_order(r)
    s = json.loads(str(r["settings"]))
    R, omega = r["w2"].shape[0], r["omega"]
    w_max = omega.max()
    se = lambda a: a.std(0, ddof=1) / np.sqrt(a.shape[0]) if a.shape[0] > 1 else 0 * a.mean(0)
    base_se = se(r["w2_base"])  # F,Bb
    pd = lambda v: "not PD" if not np.isfinite(v) else f"{v:.3f}"  # a first-order prediction
    aux_cols = " | ".join(f"aux {int(a)} ep" for a in r["aux_epochs"])
    lines = [f"When SIMS helps (2D Gaussian, generation 1): {R} runs, |D| {s['n_real']}, n_s {s['n_s']}, "
             f"n_eval {s['n_eval']}, MLP width {s['hidden']}, w grid {[float(w) for w in omega]}, "
             f"seed {int(r['seed'])}, {float(r['seconds']) / 60:.1f} min", "",
             "ratio = min over w > 0 of E[W2(SIMS at w)] / E[W2(base)] (below 1: SIMS helps), then that w "
             f"(* at the grid's largest, {w_max:g}) and the runs closer to p_r there than their own base. "
             f"For scale: the Gaussian fit of the real points themselves has E[W2] {np.mean(r['w2_data']):.3f}.", "",
             f"| formulation | base epochs | base E[W2] (+- s.e.) | {aux_cols} |",
             "|---|---:|---:|" + "---:|" * len(r["aux_epochs"])]
    for f, form in enumerate(r["formulations"]):
        for i, b in enumerate(r["base_epochs"]):
            cells = []
            for j in range(len(r["aux_epochs"])):
                q, w = imp["ratio"][f, i, j], imp["best_w"][f, i, j]
                cells.append("diverged" if not np.isfinite(q) else
                             f"{q:.3f} (w {w:g}{'*' if w == w_max else ''}, {imp['runs_better'][f, i, j]}/{R})")
            lines.append(f"| {form} | {b} | {imp['base'][f, i]:.3f} +- {base_se[f, i]:.3f} | "
                         + " | ".join(cells) + " |")
    lines += ["", "Held out: the same ratio with w chosen on runs 1, 3, 5, ... and measured on runs 2, 4, "
              "6, ..., which played no part in the choice (the min over w above is biased low where "
              "the runs are noisy).", "", f"| formulation | base epochs | {aux_cols} |",
              "|---|---:|" + "---:|" * len(r["aux_epochs"])]
    for f, form in enumerate(r["formulations"]):
        for i, b in enumerate(r["base_epochs"]):
            cells = ["-" if not np.isfinite(q) else f"{q:.3f} (w {w:g})"
                     for q, w in zip(imp["held_out_ratio"][f, i], imp["held_out_w"][f, i])]
            lines.append(f"| {form} | {b} | " + " | ".join(cells) + " |")
    bad_b, bad_a = (r["base_diverged"] > 0).any(0), (r["aux_diverged"] > 0).any(0)
    if bad_b.any() or bad_a.any():
        lines += ["", f"a training loss became non-finite in {int(bad_b.sum())} base and {int(bad_a.sum())} aux "
                      "cells (see base_diverged, aux_diverged in the npz)"]
    lines += ["", "Covariances, mean over runs, entries (11, 12, 22); p_r's are "
              f"({_entries(r['cov_r'])}). SIMS at the cell's best w, measured and first-order "
              "(Sigma_b - w (Sigma_a - Sigma_b)).", "",
              "| formulation | base ep | aux ep | Sigma_b (base) | Sigma_a (aux) | best w | Sigma_SIMS measured "
              "| Sigma_SIMS first-order |", "|---|---:|---:|---|---|---:|---|---|"]
    for f, i, j, form, b, a in grid_cells(r):
        k = imp["best_index"][f, i, j]
        lines.append(f"| {form} | {b} | {a} | {_entries(r['cov_base'][:, f, i].mean(0))} "
                     f"| {_entries(r['cov_aux'][:, f, i, j].mean(0))} | {omega[k]:g} "
                     f"| {_entries(r['cov'][:, f, i, j, k].mean(0))} "
                     f"| {_entries(fo['cov_pred'][:, f, i, j, k].mean(0))} |")
    lines += ["", "First-order check. Delta = E[Sigma_b] - Sigma (the base's error), Delta' = E[Sigma_a - Sigma_b] "
              "(what the aux adds), cos their Frobenius cosine, gain |Delta'| / |Delta|, w* = <Delta, Delta'> / "
              "|Delta'|^2 (the w that cancels most of the mean error, to first order). Best w on the grid: measured, "
              "and where the first-order moments of every run (mu_b - w (mu_a - mu_b), Sigma_b - w Delta'_run) "
              "give the lowest E[W2]; E[W2] at the measured best w, measured and first-order "
              "(not PD: a run's predicted covariance is not positive definite).", "",
              "| formulation | base ep | aux ep | Delta | Delta' | cos | gain | w* | best w | first-order best w "
              "| E[W2] there | first-order E[W2] |", "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for f, i, j, form, b, a in grid_cells(r):
        k, kp = imp["best_index"][f, i, j], fo["best_index"][f, i, j]
        lines.append(f"| {form} | {b} | {a} | {_entries(fo['delta'][f, i])} | {_entries(fo['delta_p'][f, i, j])} "
                     f"| {fo['cos'][f, i, j]:.2f} | {fo['gain'][f, i, j]:.3g} | {fo['w_star'][f, i, j]:.3g} "
                     f"| {omega[k]:g} | {'not PD' if kp < 0 else f'{omega[kp]:g}'} "
                     f"| {imp['mean'][f, i, j, k]:.3f} | {pd(fo['w2_pred'][f, i, j, k])} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- figures

def plot_heatmap(r: dict, path: str) -> None:
    """The ratio over (base budget, aux budget), one panel per formulation, log colour scale
    centred on 1 (blue: SIMS helps at its best w, red: it hurts even there)."""
    imp = improvement(r)
    plt = pyplot()
    F = len(r["formulations"])
    Bb, Ba = len(r["base_epochs"]), len(r["aux_epochs"])
    logq = np.log2(imp["ratio"])  # F,Bb,Ba
    m = max(float(np.nanmax(np.abs(logq))) if np.isfinite(logq).any() else 1.0, np.log2(1.3))
    fig, axes = plt.subplots(1, F, figsize=(1.6 + 1.5 * Ba * F, 1.6 + 0.75 * Bb), squeeze=False,
                             layout="constrained")
    for f, ax in enumerate(axes[0]):
        im = ax.imshow(np.ma.masked_invalid(logq[f]), cmap=plt.get_cmap("RdBu_r").with_extremes(bad="0.85"),
                       vmin=-m, vmax=m, aspect="auto")
        for i in range(Bb):
            for j in range(Ba):
                q = imp["ratio"][f, i, j]
                text = "diverged" if not np.isfinite(q) else f"{q:.2f}\nw {imp['best_w'][f, i, j]:g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if np.isfinite(q) and abs(logq[f, i, j]) > 0.6 * m else "black")
        ax.set_xticks(range(Ba), [str(a) for a in r["aux_epochs"]], fontsize=8)
        ax.set_yticks(range(Bb), [str(b) for b in r["base_epochs"]], fontsize=8)
        ax.set_xlabel("aux budget (epochs on S)", fontsize=9)
        ax.set_ylabel("base budget (epochs)", fontsize=9)
        ax.set_title(f"{r['formulations'][f]}", fontsize=10)
    cbar = fig.colorbar(im, ax=list(axes[0]), fraction=0.04, pad=0.02)
    ticks = [q for q in ((1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8) if m > 1 else (0.8, 1, 1.25))
             if abs(np.log2(q)) <= m]
    cbar.set_ticks(np.log2(ticks), labels=[f"{q:g}" for q in ticks])
    cbar.set_label("best-w E[W2] / base E[W2]", fontsize=8)
    fig.suptitle(f"when SIMS helps: best ratio over w > 0 ({r['w2'].shape[0]} runs)", fontsize=10)
    save_figure(fig, path, dpi=130)


def plot_curves(r: dict, path: str) -> None:
    """E[W2] vs w per cell (solid), the first-order prediction (dashed), the base (dotted);
    rows formulations, columns base budgets, one colour per aux budget."""
    imp, fo = improvement(r), first_order(r)
    plt = pyplot()
    F, Bb = len(r["formulations"]), len(r["base_epochs"])
    fig, axes = plt.subplots(F, Bb, figsize=(3.4 * Bb, 2.9 * F), squeeze=False)
    for f in range(F):
        for i in range(Bb):
            ax = axes[f, i]
            for j, a in enumerate(r["aux_epochs"]):
                ax.plot(r["omega"], imp["mean"][f, i, j], "o-", ms=3, color=f"C{j}", label=f"aux {a} ep")
                ax.plot(r["omega"], fo["w2_pred"][f, i, j], "--", lw=1, color=f"C{j}")
            ax.axhline(imp["base"][f, i], color="k", ls=":", lw=1, label="base")
            ax.set_yscale("log")
            ax.set_title(f"{r['formulations'][f]}, base {r['base_epochs'][i]} ep", fontsize=9)
            ax.set_xlabel("w", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_ylabel("E[W2 to p_r]", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("E[W2] vs w: measured (solid) and first order, Sigma_b - w (Sigma_a - Sigma_b) (dashed)",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


PAPER_CELL = (100, 50)  # the paper's toy: base 100 epochs, aux 50 epochs


def covariance_cells(r: dict) -> list[list[tuple[int, int, int]]]:
    """The cells the covariance picture draws, one row per formulation: where SIMS helps most,
    the paper's cell (base 100, aux 50 epochs; the grid's middle cell if it has no such cell),
    and where SIMS helps least or hurts most. Each cell is (f, i, j); a cell is drawn once."""
    q = improvement(r)["ratio"]  # F,Bb,Ba
    base, aux = list(r["base_epochs"]), list(r["aux_epochs"])
    paper = (base.index(PAPER_CELL[0]) if PAPER_CELL[0] in base else len(base) // 2,
             aux.index(PAPER_CELL[1]) if PAPER_CELL[1] in aux else len(aux) // 2)
    rows = []
    for f in range(q.shape[0]):
        picks = [paper] if not np.isfinite(q[f]).any() else \
            [np.unravel_index(np.nanargmin(q[f]), q[f].shape), paper,
             np.unravel_index(np.nanargmax(q[f]), q[f].shape)]
        rows.append(list(dict.fromkeys((f, int(i), int(j)) for i, j in picks)))
    return rows


def plot_covariances(r: dict, path: str, cells=None) -> None:
    """One panel per cell, a row per formulation: the 1-sigma ellipses (means over runs of each
    run's mean and covariance) of p_r, the base, the aux, SIMS at the cell's best w and its
    first-order prediction (where that is positive definite). ``cells``: rows of (f, i, j),
    by default :func:`covariance_cells`."""
    imp, fo = improvement(r), first_order(r)
    rows = covariance_cells(r) if cells is None else cells
    n = max(len(row) for row in rows)
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), n, figsize=(3.6 * n, 3.6 * len(rows)), squeeze=False)
    for row, ax_row in zip(rows, axes):
        for ax in ax_row[len(row):]:
            ax.axis("off")
        for ax, (f, i, j) in zip(ax_row, row):
            k = imp["best_index"][f, i, j]
            ellipses = [("p_r", r["mean"], r["cov_r"], dict(color="k", lw=1.6)),
                        ("base", r["mu_base"][:, f, i].mean(0), r["cov_base"][:, f, i].mean(0), dict(color="C0")),
                        ("aux", r["mu_aux"][:, f, i, j].mean(0), r["cov_aux"][:, f, i, j].mean(0), dict(color="C3")),
                        (f"SIMS w {r['omega'][k]:g}", r["mu"][:, f, i, j, k].mean(0),
                         r["cov"][:, f, i, j, k].mean(0), dict(color="C2", lw=1.6)),
                        ("first order", fo["mu_pred"][:, f, i, j, k].mean(0), fo["cov_pred"][:, f, i, j, k].mean(0),
                         dict(color="C2", ls="--", lw=1))]
            for label, mu, S, kw in ellipses:
                if np.isfinite(S).all() and np.linalg.eigvalsh(S)[0] > 0:
                    gaussian_contours(ax, mu, S, levels=(1,), label=label, **{"alpha": 0.9, **kw})
            ax.set_aspect("equal", adjustable="datalim")
            ax.tick_params(labelsize=7)
            ax.set_title(f"{r['formulations'][f]}, base {r['base_epochs'][i]} ep, aux {r['aux_epochs'][j]} ep\n"
                         f"ratio {imp['ratio'][f, i, j]:.2f} at w {r['omega'][k]:g}", fontsize=9)
            ax.legend(fontsize=7)
    fig.suptitle("1-sigma ellipses, mean over runs: base vs aux vs SIMS against p_r "
                 "(per formulation: most helped, the paper's cell, least helped)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


# ---------------------------------------------------------------- command

def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.replot:
        return replot_run(parser.prog, args.replot, f"{NAME}.npz", report)
    try:
        s = settings(args)
    except ValueError as e:
        fail(parser.prog, str(e), 2)
    outdir = prepare_run(parser.prog, args)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    with backend.blas_threads(blas_limit(args)), np.errstate(over="ignore", invalid="ignore"):
        r = run_study(s, args.seed, log)
    write_npz(os.path.join(outdir, f"{NAME}.npz"), **r)
    return report(outdir)


def load(path: str) -> dict:
    """The arrays of a result file, checked to fit together; ValueError naming the file if not."""
    r = read_npz(path, required=FIELDS)
    try:
        F, Bb, Ba, W = (len(r[k]) for k in ("formulations", "base_epochs", "aux_epochs", "omega"))
        R = r["w2"].shape[0]
        shapes = {"w2_data": (R,), "cov_data": (R, 2, 2), "w2_base": (R, F, Bb), "w2_aux": (R, F, Bb, Ba), "w2": (R, F, Bb, Ba, W),
                  "mu_base": (R, F, Bb, 2), "cov_base": (R, F, Bb, 2, 2), "mu_aux": (R, F, Bb, Ba, 2),
                  "cov_aux": (R, F, Bb, Ba, 2, 2), "mu": (R, F, Bb, Ba, W, 2), "cov": (R, F, Bb, Ba, W, 2, 2)}
        wrong = [k for k, shape in shapes.items() if r[k].shape != shape]
        from_dict(WhenPreset, json.loads(str(r["settings"])))
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise ValueError(f"{path} does not hold a when-SIMS-helps result ({type(e).__name__}: {e})") from None
    if wrong or R < 1 or not (r["omega"] > 0).any():
        raise ValueError(f"{path} does not hold a when-SIMS-helps result (arrays {', '.join(wrong) or 'omega'} "
                         "do not fit the grid)")
    return r


def report(outdir: str) -> int:
    """Tables and figures from when_sims_helps.npz (so --replot can redo them without rerunning)."""
    r = load(os.path.join(outdir, f"{NAME}.npz"))
    with np.errstate(invalid="ignore", divide="ignore"):
        text = tables(r)
        # files first, then the terminal: output piped into head cannot cost a file
        write_text(os.path.join(outdir, f"{NAME}.md"), text)
        plot_heatmap(r, os.path.join(outdir, f"{NAME}.png"))
        plot_curves(r, os.path.join(outdir, f"{NAME}_curves.png"))
        plot_covariances(r, os.path.join(outdir, f"{NAME}_cov.png"))
    print(text)
    print(f"wrote {outdir}/{NAME}.png, {NAME}_curves.png, {NAME}_cov.png, {NAME}.npz, {NAME}.md")
    return 0


def entry(argv=None):
    run_command(main, argv, "python toy/when_sims_helps.py")


if __name__ == "__main__":
    entry()
