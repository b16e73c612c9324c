"""Benchmark: one guided Heun step (stage 1 + stage 2, kernels/heun.py), fused versions against
the unfused NumPy (or CuPy) reference, side by side in one process (the fused version is CuPy's).

# S sample shape: N images of 3x32x32 (float64 state, float32 model outputs), or a toy ensemble

Every version is first checked bit for bit against the reference on the benchmark's own inputs;
then the versions run interleaved (one step each, in turn) and the table gives medians. The
denoiser outputs are given arrays, so only the step's own arithmetic is timed.

    PYTHONPATH=. python benchmarks/bench_heun.py --device gpu    # GPU: CuPy unfused vs cupy

On the CPU there is nothing to compare: the step's arithmetic is a sliver of a sampler's time next
to the model calls, and minisims runs the reference's lines there (a numba loop, 3-4x faster at
the step alone, was removed on 2026-12-07 for that reason; docs/notes/kernels-other.md).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minisims.kernels.heun import heun_stage1, heun_stage2  # noqa: E402

SHAPES = {"toy R64 N1000 D2": (64, 1000, 2), "N64 3x32x32": (64, 3, 32, 32),
          "N512 3x32x32": (512, 3, 32, 32)}


def _step(impl, x_hat, base, aux, base2, aux2, w, t_hat, t_next):
    x_next, d_cur = heun_stage1(x_hat, base, aux, w, t_hat, t_next, impl=impl)
    return heun_stage2(x_hat, x_next, d_cur, base2, aux2, w, t_hat, t_next, impl=impl)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "gpu"], default="gpu", help="where the arrays live (gpu only)")
    ap.add_argument("--repeats", type=int, default=30, help="timed steps per version (median taken)")
    ap.add_argument("--w", type=float, default=2.0, help="guidance weight")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")

    if args.device == "gpu":
        try:
            import cupy as xp
            xp.zeros(1).sum()
        except Exception as e:  # not installed, or installed without a usable GPU
            ap.error(f"--device gpu needs CuPy and a GPU ({type(e).__name__}: {e})")
        impls = ["reference", "cupy"]
        sync = xp.cuda.Device().synchronize
        peer = "unfused CuPy"
    else:
        ap.error("the fused Heun step runs on the GPU only: use --device gpu (see the docstring)")
    rng = np.random.default_rng(0)
    t_hat, t_next = np.float64(1.61), np.float64(1.2345)
    print(f"guided Heun step (stage 1 + 2), w = {args.w}, {args.device}; ratio = {peer} time / "
          f"version time; median of {args.repeats} interleaved runs")
    print(f"{'shape':<20} {'version':<10} {'ms/step':>9} {'GB/s':>7} {'speed-up':>9}")
    for label, shape in SHAPES.items():
        x_hat = xp.asarray(rng.standard_normal(shape) * 3.0)  # S float64
        outs = [xp.asarray(rng.standard_normal(shape).astype(np.float32)) for _ in range(4)]  # S
        inputs = (x_hat, *outs, args.w, t_hat, t_next)
        ref = _step("reference", *inputs)
        for impl in list(impls):  # a version that cannot run here is reported and left out
            try:
                _step(impl, *inputs)
            except Exception as e:
                print(f"skipping {impl}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
                impls.remove(impl)
        for impl in impls:  # validate before timing: every version bit for bit the reference
            got = _step(impl, *inputs)
            assert got.dtype == ref.dtype and bool((got.view(xp.uint64) == ref.view(xp.uint64)).all()), impl
        times = {impl: [] for impl in impls}
        for impl in impls:  # warm-up (compiles)
            _step(impl, *inputs)
        sync()
        for _ in range(args.repeats):
            for impl in impls:
                t0 = time.perf_counter()
                _step(impl, *inputs)
                sync()
                times[impl].append(time.perf_counter() - t0)
        # bytes a fused step must move: stage 1 reads x, 2 outputs, writes 2; stage 2 reads
        # x, x_next, d_cur, 2 outputs, writes 1 (float64 state, float32 outputs)
        n = int(np.prod(shape))
        nbytes = n * (8 + 2 * 4 + 2 * 8) + n * (3 * 8 + 2 * 4 + 8)
        med_ref = statistics.median(times["reference"])
        for impl in impls:
            med = statistics.median(times[impl])
            print(f"{label:<20} {impl:<10} {med * 1e3:9.3f} {nbytes / med / 1e9:7.1f} {med_ref / med:8.2f}x")
    print("validated: every version equals the reference bit for bit on these inputs")


if __name__ == "__main__":
    main()
