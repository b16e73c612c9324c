"""What per-run random streams cost: minisims.streams.RunGenerator (Philox4x32-10, one stream per
run) against NumPy's own Generator (one stream shared by all runs), side by side in one process.

# R runs, n points per run

Two tables: the draws the toy makes (normals for the sampler and the loss, uniforms for shuffles,
integers for DDPM's noise levels) at the toy's shapes, and a whole toy job (Algorithm 1 steps 1-3
plus sampling at two w, `python -m minisims.toy`'s work) trained with each generator. Ratios are
per-run / shared; above 1 the per-run streams are slower.

    python benchmarks/bench_streams.py
    python benchmarks/bench_streams.py --runs 16,64 --device gpu
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from minisims import backend
from minisims.data.toy import sample_gaussian
from minisims.sims import SIMSConfig, fit_sims, sample_sims
from minisims.streams import Streams


def _sync():
    if backend.current_device() == "gpu":  # wait for the device, so the time is the work's
        import cupy
        cupy.cuda.Device().synchronize()


def best_of(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def draws_table(R: int, repeats: int):
    per_run = Streams(("x",)).rng(0, "x", runs=range(R))
    shared = backend.default_rng(0)
    rows = [("normal (R,2000,2) float64: a sampler step", lambda g: g.standard_normal((R, 2000, 2), dtype=np.float64)),
            ("normal (R,1000,2) float32: a loss step", lambda g: g.standard_normal((R, 1000, 2), dtype=np.float32)),
            ("uniform (R,1000): a shuffle", lambda g: g.random((R, 1000))),
            ("integers (R,1000) in [1,40): DDPM levels", lambda g: g.integers(1, 40, size=(R, 1000)))]
    for name, draw in rows:
        a = best_of(lambda: draw(per_run), repeats)
        b = best_of(lambda: draw(shared), repeats)
        print(f"| {name} | R={R} | {a * 1e3:.2f} | {b * 1e3:.2f} | {a / b:.1f}x |")


def toy_job(R: int, rng_of, cfg: SIMSConfig):
    data = backend.asarray(sample_gaussian(1000, np.random.default_rng(0), R))  # R,n,2
    fit = fit_sims(data, cfg, rng_of("fit", R))
    for w in (0.0, 3.0):
        sample_sims(fit.base, fit.aux, cfg, w, 2000, rng_of("eval", R))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="16", help="R values, comma separated (default: 16)")
    p.add_argument("--repeats", type=int, default=5, help="draw timings: best of this many (default: 5)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default: 1)")
    p.add_argument("--job-repeats", type=int, default=2, help="toy jobs: best of this many, alternating (default: 2)")
    p.add_argument("--no-job", action="store_true", help="only the draws")
    args = p.parse_args(argv)
    try:
        backend.use_device(args.device)
    except backend.BackendError as e:
        p.error(str(e))
    runs = [int(r) for r in args.runs.split(",")]
    with backend.blas_threads(args.threads):
        print(f"device {args.device}, BLAS threads {args.threads}; ms, best of {args.repeats}\n")
        print("| draw | runs | per-run (Philox) | shared (NumPy/CuPy Generator) | ratio |")
        print("|---|---:|---:|---:|---:|")
        for R in runs:
            draws_table(R, args.repeats)
        if args.no_job:
            return
        cfg = SIMSConfig()
        print(f"\n| toy job (fit + sampling at 2 w), best of {args.job_repeats} | runs | per-run s | shared s | ratio |")
        print("|---|---:|---:|---:|---:|")
        for R in runs:
            streams = Streams(("fit", "eval"))
            per_run = lambda name, R: streams.rng(0, name, runs=range(R))
            shared = lambda name, R: backend.default_rng(streams.names.index(name))
            toy_job(2, per_run, SIMSConfig(base_epochs=1, aux_epochs=1))  # compile, warm up
            times = {"per": [], "shared": []}
            for _ in range(args.job_repeats):  # alternate, keep the best of each
                for name, rng_of in (("per", per_run), ("shared", shared)):
                    t0 = time.perf_counter()
                    toy_job(R, rng_of, cfg)
                    _sync()
                    times[name].append(time.perf_counter() - t0)
            a, b = min(times["per"]), min(times["shared"])
            print(f"| paper toy, DDPM | {R} | {a:.1f} | {b:.1f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
