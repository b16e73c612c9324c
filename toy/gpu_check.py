"""A short GPU check of the toy experiments (CuPy): correctness first, then timings that size the
`gpu` and `paper` presets of Figure 4. About 1-3 minutes on one H100; nothing is written outside
--outdir.

    PYTHONPATH=. python toy/gpu_check.py --outdir /tmp/gpu_check

1. On the GPU, the SIMS loop at w = 0 reproduces the standard loop bit for bit (micro models), and
   the tiny presets of figures 4, 5, 6 and the autoguidance comparison run end to end.
2. One generation of a standard and a SIMS (w = 3) cell at the Figure 4 sizes for R = 256 and
   R = 1000 runs at once, with the samplers' fused MLP evaluation (kernels/mlp_eval.py: one
   launch per network evaluation) and without it (layer by layer, about 22 launches), and with
   the fused training step (kernels/mlp_train.py: one launch for the forward, one for the
   backward) and without it (about 60 launches); from these, the projected wall time of the
   `gpu` and `paper` presets each way.

    PYTHONPATH=. python toy/gpu_check.py --fused-eval off --fused-train off   # layers only
    PYTHONPATH=. python toy/gpu_check.py --fused-eval on --sizes 1000         # training both ways
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

from minisims import backend, ops
from minisims.figures import autoguidance, figure4, figure5, figure6
from minisims.kernels import mlp_eval
from minisims.loops.loop import Cell, LoopConfig, run_loop_chunk
from minisims.nn.mlp import MLPConfig
from minisims.sims import SIMSConfig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--outdir", default="/tmp/minisims_gpu_check")
    p.add_argument("--sizes", default="256,1000", help="ensemble sizes R to time")
    p.add_argument("--fused-eval", choices=["both", "on", "off"], default="both",
                   help="time sampling with the fused MLP evaluation (kernels/mlp_eval.py), "
                        "without it, or both (default: both)")
    p.add_argument("--fused-train", choices=["both", "on", "off"], default="both",
                   help="time training with the fused forward and backward kernels "
                        "(kernels/mlp_train.py), without them, or both (default: both)")
    p.add_argument("--eval-version", choices=["cupy", "tiled"], default="cupy",
                   help="the fused evaluation's version (kernels/mlp_eval.py AUTO_GPU; 'tiled' "
                        "has not run on a GPU yet) (default: cupy)")
    args = p.parse_args(argv)
    mlp_eval.AUTO_GPU = args.eval_version
    try:
        backend.use_device("gpu")
    except backend.BackendError as e:
        p.error(str(e))
    os.makedirs(args.outdir, exist_ok=True)
    import cupy
    print("device:", cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), flush=True)

    # 1. correctness on the GPU
    t0 = time.perf_counter()
    sims = SIMSConfig(mlp=MLPConfig(hidden=8, depth=2), base_epochs=3, aux_epochs=2, n_synth=30, ddpm_T=6)
    micro = LoopConfig(generations=3, n_real=40, n_eval=20, sims=sims)
    std = run_loop_chunk(micro, Cell(25, 0.0, "standard"), 2, seed=3)
    s0 = run_loop_chunk(micro, Cell(25, 0.0, "sims"), 2, seed=3)
    ok = np.array_equal(std.mu, s0.mu) and np.array_equal(std.cov, s0.cov)
    print(f"[1] GPU: SIMS loop at w=0 == standard loop bit for bit: {ok}", flush=True)
    for fig in (figure4, figure5, figure6, autoguidance):
        name = fig.__name__.rsplit(".", 1)[1]
        extra = ["--quiet"] if fig is figure4 else []
        t = time.perf_counter()
        fig.main(["--preset", "tiny", "--device", "gpu", "--outdir", os.path.join(args.outdir, name)] + extra)
        print(f"[1] {name} tiny on the GPU: ok ({time.perf_counter() - t:.1f} s)", flush=True)
    print(f"[1] done in {time.perf_counter() - t0:.0f} s", flush=True)

    # 2. timings at the Figure 4 sizes, with and/or without the fused sampling and training
    per_gen = {}
    defaults = ops.FUSE_MLP_EVAL, ops.FUSE_MLP_TRAIN
    choice = {"both": (True, False), "on": (True,), "off": (False,)}
    modes = [(ev, tr) for ev in choice[args.fused_eval] for tr in choice[args.fused_train]]
    for R in [int(v) for v in args.sizes.split(",")]:
        cfg = figure4.augmentation_loop(dataclasses.replace(figure4.PRESETS["gpu"], generations=1), "ddpm")
        for mode in modes:
            ops.FUSE_MLP_EVAL, ops.FUSE_MLP_TRAIN = mode
            for cell in (Cell(500, 0.0, "standard"), Cell(500, 3.0, "sims")):
                run_loop_chunk(cfg, cell, R)  # warm-up: kernel compilation, memory pool
                cupy.cuda.runtime.deviceSynchronize()
                r = run_loop_chunk(cfg, cell, R)
                per_gen[(R, cell.method, mode)] = r.seconds
                d = r.distance(cfg.mean, cfg.cov)[:, 0]
                print(f"[2] R={R:5d} {cell.label:10s} {_label(mode)}: {r.seconds:6.2f} s per "
                      f"generation (E[W2(G^1)] {d.mean():.4f})", flush=True)
    ops.FUSE_MLP_EVAL, ops.FUSE_MLP_TRAIN = defaults
    for mode in modes:
        for preset in ("gpu", "paper"):
            s = figure4.PRESETS[preset]
            R = min(per_gen, key=lambda k: abs(k[0] - s.chunk_size))[0]
            scale = s.runs / R
            n_std, n_sims = len(s.n_synth), len(s.n_synth) * len(s.omega)
            total = s.generations * scale * (n_std * per_gen[(R, "standard", mode)]
                                             + n_sims * per_gen[(R, "sims", mode)])
            print(f"[2] projected {preset} preset, {_label(mode)} ({s.runs} runs x "
                  f"{s.generations} generations, {n_std} standard + {n_sims} SIMS cells): "
                  f"{total / 60:.1f} min (+ panel 1)", flush=True)
    return 0


def _label(mode) -> str:
    """'fused eval on , train off' for (True, False)."""
    return f"fused eval {'on ' if mode[0] else 'off'}, train {'on ' if mode[1] else 'off'}"


if __name__ == "__main__":
    sys.exit(main())
