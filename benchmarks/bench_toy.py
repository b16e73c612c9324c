"""Toy training throughput: minisims (NumPy, hand-written backward) vs a batched PyTorch CPU MLP.

# R ensemble members, N points per member (one full batch), H hidden width

Both sides train the paper's toy MLP, Linear(3,H) -> 4 x [Linear(H,H), ReLU] -> Linear(H,2), as
an ensemble of R independent models in one batched step (torch: torch.bmm on stacked weights),
with the DDPM epsilon loss and Adam, on the same shapes, one after the other in this process.
The table gives ms per member-step and the ratio ours / torch (below 1: we are faster).

Then the wall time of Figure 4's `cpu` preset: measured here from a timed fraction (one
generation of a standard and of a SIMS cell at the preset's sizes, scaled by the preset's
generations and cells), or read from a finished run's figure4.json with --measured.

    python benchmarks/bench_toy.py
    python benchmarks/bench_toy.py --members 16,64 --points 1250 --threads 2
    python benchmarks/bench_toy.py --measured runs/figure4_cpu_ddpm/figure4.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np

from minisims import backend
from minisims.diffusion import DDPM
from minisims.figures import figure4
from minisims.loops.loop import Cell, run_loop_chunk
from minisims.nn.mlp import MLPConfig, MLPDenoiser
from minisims.train import Adam

try:
    import torch
except ImportError:  # the torch column is skipped
    torch = None


def time_it(step, repeats: int) -> float:
    step()  # warm up (allocations, first-call costs)
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - t0) / repeats


def ours_step(R: int, N: int, H: int):
    rng = np.random.default_rng(0)
    net = MLPDenoiser(MLPConfig(hidden=H), rng, ensemble=R)
    opt, ddpm = Adam(net, lr=1e-3), DDPM(T=40)
    y = rng.standard_normal((R, N, 2)).astype(np.float32)  # R,N,2

    def step():
        net.zero_grad()
        ddpm.loss_and_grad(net, y, rng)
        opt.step()
    return step


def torch_step(R: int, N: int, H: int):
    g = torch.Generator().manual_seed(0)
    dims = [3, H, H, H, H, H, 2]
    Ws = [((torch.rand(R, a, b, generator=g) * 2 - 1) / a ** 0.5).requires_grad_() for a, b in zip(dims, dims[1:])]
    bs = [((torch.rand(R, 1, b, generator=g) * 2 - 1) / a ** 0.5).requires_grad_() for a, b in zip(dims, dims[1:])]
    opt = torch.optim.Adam(Ws + bs, lr=1e-3)
    ab = torch.tensor(DDPM(T=40).alpha_bar, dtype=torch.float32)  # T
    y = torch.randn(R, N, 2, generator=g)

    def step():
        t = torch.randint(1, 40, (R, N), generator=g)
        eps = torch.randn(R, N, 2, generator=g)
        a = ab[t][..., None]
        h = torch.cat([a.sqrt() * y + (1 - a).sqrt() * eps, t[..., None].float()], dim=-1)  # R,N,3
        for i, (W, b) in enumerate(zip(Ws, bs)):
            h = torch.baddbmm(b, h, W)
            if 0 < i < len(Ws) - 1:
                h = torch.relu(h)
        loss = ((h - eps) ** 2).mean(dim=(1, 2)).sum()  # sum of the members' losses
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def figure4_estimate(formulation: str, R: int) -> tuple[float, dict]:
    """Seconds for Figure 4's cpu preset, from one timed generation per cell kind (at |D_s| =
    the mean of the preset's values) and one panel-1 fit, scaled to the preset."""
    s = figure4.PRESETS["cpu"]
    cfg = figure4.augmentation_loop(dataclasses.replace(s, generations=1), formulation)
    n_mid = int(np.mean(s.n_synth))
    t_std = run_loop_chunk(cfg, Cell(n_mid, 0.0, "standard"), R).seconds / R  # per run-generation
    t_sims = run_loop_chunk(cfg, Cell(n_mid, 3.0, "sims"), R).seconds / R
    n_std, n_sims = len(s.n_synth), len(s.n_synth) * len(s.omega)
    run_gens = s.runs * s.generations
    panel1 = s.runs * (t_sims + (len(s.gen1_omega) - 1) * 0.3 * t_sims)  # fit + extra samplings (rough)
    total = run_gens * (n_std * t_std + n_sims * t_sims) + panel1
    return total, {"standard s per run-generation": t_std, "SIMS s per run-generation": t_sims,
                   "cells": f"{n_std} standard + {n_sims} SIMS", "run-generations per cell": run_gens}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", default="16,64", help="ensemble sizes R, comma separated")
    p.add_argument("--points", type=int, default=1250, help="points per member and step (default 1250: |D_r| + |D_s| = 250)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="BLAS / torch threads (default 1)")
    p.add_argument("--figure4", choices=["estimate", "skip"], default="estimate")
    p.add_argument("--measured", help="a finished run's figure4.json: report its wall time too")
    args = p.parse_args(argv)
    if torch is not None:
        torch.set_num_threads(args.threads)
    print(f"toy MLP train step (DDPM loss + Adam), H {args.hidden}, N {args.points} points per member, "
          f"{args.threads} thread(s)")
    print(f"{'R':>5} {'ours ms/member-step':>20} {'torch bmm ms/member-step':>25} {'ours / torch':>13}")
    with backend.blas_threads(args.threads):
        for R in [int(v) for v in args.members.split(",")]:
            ours = time_it(ours_step(R, args.points, args.hidden), args.repeats) / R * 1e3
            if torch is not None:
                ref = time_it(torch_step(R, args.points, args.hidden), args.repeats) / R * 1e3
                print(f"{R:>5} {ours:>20.3f} {ref:>25.3f} {ours / ref:>13.2f}")
            else:
                print(f"{R:>5} {ours:>20.3f} {'(no torch)':>25} {'':>13}")
        if args.figure4 == "estimate":
            total, parts = figure4_estimate("ddpm", R=16)
            print(f"\nFigure 4 cpu preset (ddpm), estimated from one timed generation per cell kind: "
                  f"{total / 60:.0f} min on 1 thread")
            for k, v in parts.items():
                print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
    if args.measured:
        with open(args.measured) as f:
            m = json.load(f)
        print(f"\nmeasured: preset {m['preset']} ({m['formulation']}) took {m['seconds'] / 60:.1f} min "
              f"on {m['device']} ({m['settings'].get('workers', 1)} worker(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
