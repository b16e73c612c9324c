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

import argparse
import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from minisims import backend
from minisims.autoguidance import bad_model_factory
from minisims.cli_util import Parser, fail, float_list, int_at_least, writable_dir
from minisims.loops import LoopConfig, generation_one
from minisims.metrics import gaussian_w2_from_moments
from minisims.nn import MLPConfig
from minisims.sims import SIMSConfig

PRESETS = {
    "tiny": dict(runs=3, omega=[0.0, 1.0, 3.0], n_real=200, n_eval=300, hidden=32, base_epochs=100,
                 aux_epochs=50, n_s=300, chunk_size=3),
    "cpu": dict(runs=32, omega=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0], n_real=1000,
                n_eval=2000, hidden=64, base_epochs=100, aux_epochs=50, n_s=2000, chunk_size=32),
    "paper": dict(runs=1000, omega=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0], n_real=1000,
                  n_eval=2000, hidden=64, base_epochs=100, aux_epochs=50, n_s=2000, chunk_size=1000),
}

EXAMPLES = """examples:
  python toy/autoguidance.py --preset tiny     # seconds
  python toy/autoguidance.py --preset cpu      # ~10 minutes on 2 cores
  python toy/autoguidance.py --formulation edm --small-hidden 16 --short-epochs 25
"""


def build_parser() -> Parser:
    p = Parser(prog="python toy/autoguidance.py", description=__doc__.split("\n\n")[0],
               epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="sizes (default: cpu)")
    p.add_argument("--formulation", choices=["ddpm", "edm", "vp"], default="ddpm",
                   help="ddpm: the paper's toy; edm/vp: EDM loss + Heun sampler (default: ddpm)")
    p.add_argument("--runs", type=int_at_least(1), help="independent runs")
    p.add_argument("--omega", type=float_list, metavar="W[,W...]", help="w values")
    p.add_argument("--small-hidden", type=int_at_least(1), help="width of the small bad model (default: half the base's)")
    p.add_argument("--short-epochs", type=int_at_least(1), help="budget of the short bad model (default: half the base's)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default: 0)")
    p.add_argument("--blas-threads", type=int_at_least(1), default=1,
                   help="BLAS threads; the toy's matmuls are small (default: 1)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="cpu (NumPy) or gpu (CuPy)")
    p.add_argument("--outdir", default="runs/autoguidance", help="output folder (default: runs/autoguidance)")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    s = dict(PRESETS[args.preset])
    s["runs"] = args.runs or s["runs"]
    omegas = sorted(set(args.omega or s["omega"]) | {0.0})
    try:
        outdir = writable_dir(args.outdir)
        backend.use_device(args.device)
    except (argparse.ArgumentTypeError, backend.BackendError) as e:
        fail(parser.prog, str(e), 2)
    sims = SIMSConfig(formulation=args.formulation, mlp=MLPConfig(hidden=s["hidden"]),
                      base_epochs=s["base_epochs"], aux_epochs=s["aux_epochs"], n_synth=s["n_s"])
    cfg = LoopConfig(n_real=s["n_real"], n_eval=s["n_eval"], sims=sims)
    small = args.small_hidden or max(1, s["hidden"] // 2)
    short = args.short_epochs or max(1, s["base_epochs"] // 2)
    methods = {"SIMS": None,
               f"auto: small (H {small})": bad_model_factory(sims, hidden=small),
               f"auto: short ({short} ep)": bad_model_factory(sims, epochs=short),
               f"auto: both": bad_model_factory(sims, hidden=small, epochs=short)}
    t0 = time.perf_counter()
    dist = {}
    for name, factory in methods.items():
        with threadpool_limits(args.blas_threads):
            parts = [generation_one(cfg, omegas, min(s["chunk_size"], s["runs"] - st), args.seed, c, factory)
                     for c, st in enumerate(range(0, s["runs"], s["chunk_size"]))]
        dist[name] = np.stack([np.concatenate([gaussian_w2_from_moments(*p[w], np.asarray(cfg.mean), np.asarray(cfg.cov))
                                               for p in parts]) for w in omegas])  # W,R
    elapsed = time.perf_counter() - t0
    np.savez_compressed(os.path.join(outdir, "autoguidance.npz"), omega=np.array(omegas),
                        names=np.array(list(dist)), w2=np.stack(list(dist.values())), seconds=elapsed)

    names = list(dist)
    lines = [f"Autoguidance vs SIMS at generation 1: {args.formulation}, {s['runs']} runs, "
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
    print(text)
    with open(os.path.join(outdir, "autoguidance.md"), "w") as fh:
        fh.write(text + "\n")

    from minisims.plots import _pyplot
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for k, n in enumerate(names):
        ax.plot(omegas, dist[n].mean(1), marker="o", color=f"C{4 if k == 0 else k}", label=n)
    ax.set_xlabel("w  (negative model weight; autoguidance g = 1 + w)")
    ax.set_ylabel("E[W2(G^1, p_r)]")
    ax.set_yscale("log")
    ax.set_title(f"generation 1: SIMS vs autoguidance ({args.formulation}, {s['runs']} runs)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "autoguidance.png"), dpi=110)
    plt.close(fig)
    print(f"wrote {outdir}/autoguidance.png, autoguidance.npz, autoguidance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
