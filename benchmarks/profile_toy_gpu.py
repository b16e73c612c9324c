"""Where one Figure 4 generation spends its time (issue 9's toy goal: the `paper` preset in an hour).

The steps of Algorithm 1 are timed with the device synchronised around each (train the base; the
SIMS cell's synthetic set S and the aux fine-tuning; the next generation's samples), for one
standard and one SIMS (w = 3) cell at the `gpu` preset's sizes. Where PyTorch is installed and the
device is a GPU, its profiler then lists the CUDA kernels of one SIMS generation by device time
(CUPTI records every kernel of the process, CuPy's included), so the table says which launches
the time goes to.

    PYTHONPATH=. python benchmarks/profile_toy_gpu.py                     # GPU, R = 1000
    PYTHONPATH=. python benchmarks/profile_toy_gpu.py --fused-train off   # training layer by layer
    PYTHONPATH=. python benchmarks/profile_toy_gpu.py --device cpu --runs 4 --preset tiny   # smoke
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minisims import backend, ops, sims  # noqa: E402
from minisims.figures import figure4  # noqa: E402
from minisims.loops import loop  # noqa: E402
from minisims.loops.loop import Cell, run_loop_chunk  # noqa: E402

TIMES: dict = defaultdict(float)


def _sync():
    if backend.xp() is not __import__("numpy"):
        import cupy
        cupy.cuda.runtime.deviceSynchronize()


def _timed(label, fn):
    def wrapper(*args, **kwargs):
        _sync()
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        _sync()
        TIMES[label] += time.perf_counter() - t0
        return out
    return wrapper


def instrument():
    """Wrap Algorithm 1's steps where the loop and fit_sims call them (module globals)."""
    loop.train_base = _timed("train base (standard cell)", loop.train_base)
    loop.synthesize = _timed("sample the next generation", loop.synthesize)
    sims.train_base = _timed("train base (SIMS cell)", sims.train_base)
    sims.synthesize = _timed("synthesize S for the aux", sims.synthesize)
    sims.train_aux = _timed("fine-tune the aux", sims.train_aux)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    p.add_argument("--preset", choices=sorted(figure4.PRESETS), default="gpu",
                   help="Figure 4 preset whose sizes are used (default gpu)")
    p.add_argument("--runs", type=int, default=1000, help="runs R at once (default 1000)")
    p.add_argument("--n-synth", type=int, default=500, help="|D_s| of the cells (default 500)")
    p.add_argument("--kernels", type=int, default=25, help="kernel rows to print (default 25)")
    p.add_argument("--fused-train", choices=["on", "off"], default="on",
                   help="train with the fused kernels of kernels/mlp_train.py (on, the default "
                        "on a GPU) or layer by layer (off)")
    args = p.parse_args(argv)
    try:
        backend.use_device(args.device)
    except backend.BackendError as e:
        p.error(str(e))
    ops.FUSE_MLP_TRAIN = args.fused_train == "on"
    cfg = figure4.augmentation_loop(dataclasses.replace(figure4.PRESETS[args.preset], generations=1),
                                    "ddpm")
    cells = (Cell(args.n_synth, 0.0, "standard"), Cell(args.n_synth, 3.0, "sims"))
    for cell in cells:  # warm-up: kernel compilation, memory pool
        run_loop_chunk(cfg, cell, args.runs)
    instrument()
    for cell in cells:
        TIMES.clear()
        _sync()
        t0 = time.perf_counter()
        run_loop_chunk(cfg, cell, args.runs)
        _sync()
        total = time.perf_counter() - t0
        print(f"\n{cell.label}, R = {args.runs}, one generation: {total:.3f} s")
        for label, t in sorted(TIMES.items(), key=lambda kv: -kv[1]):
            print(f"  {label:30s} {t:7.3f} s  {100 * t / total:5.1f}%")
        print(f"  {'rest (data, moments, glue)':30s} {total - sum(TIMES.values()):7.3f} s")
    if args.device != "gpu":
        return 0
    try:
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        print("\n(no PyTorch: no kernel table)")
        return 0
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_loop_chunk(cfg, cells[1], args.runs)
        _sync()
    print(f"\nCUDA kernels of one SIMS generation, R = {args.runs} (torch.profiler over CUPTI):")
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.kernels,
                                    max_name_column_width=70))
    return 0


if __name__ == "__main__":
    sys.exit(main())
