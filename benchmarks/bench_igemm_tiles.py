"""Benchmark: kernels/_conv2d_igemm.py's block tiles, one by one, on a GPU: forward, input gradient
and weight gradient of a 3x3 convolution (padding 1), GPU time by CUDA events, median of 20 calls
after 3 warm-up calls, float32, next to PyTorch's cuDNN (TF32 off) where torch is importable.

# N batch, C channels (in = out), H W spatial, s stride

    PYTHONPATH=. python benchmarks/bench_igemm_tiles.py                  # every tile and "auto"
    PYTHONPATH=. python benchmarks/bench_igemm_tiles.py --tiles 64 128   # only these
    PYTHONPATH=. python benchmarks/bench_igemm_tiles.py --batch 64       # the N of docs/notes/kernels-conv.md's table

Each tile is forced through the module constant TILE; "auto" is the per-call rule (choose_tile,
choose_tile_dw), and the table prints which tile it took per product. Every tile is checked
against the first one's result before it is timed. At stride 2 a last row times the input
gradient as one gather over every tap (``parity_split=False``), three quarters of whose
multiply-adds are by zero, against the parity classes the tiles' rows use.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minisims.kernels import _conv2d_igemm as G  # noqa: E402

SHAPES = [(64, 32, 1), (128, 16, 1), (128, 8, 1), (64, 32, 2)]  # (C, H = W, stride)


def gpu_ms(cp, fn, repeats=20, warmup=3):
    """Median GPU time of fn() in ms, by CUDA events around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


def time_igemm(cp, tile, x, w, b, dy, s):
    """(fwd, dx, dw) ms and the tiles taken, with G.TILE = tile; also the outputs, for checking."""
    G.TILE = tile
    N, C, H, W = x.shape
    M, Mdx, K = dy.shape[0] * dy.shape[2] * dy.shape[3], N * H * W, C * 9
    taken = (G.choose_tile(M, w.shape[0]), G.choose_tile(Mdx, C), G.choose_tile_dw(K, w.shape[0]))
    fwd = lambda: G.conv2d_forward(x, w, b, s, 1)  # noqa: E731
    dx = lambda: G.conv2d_backward_input(dy, w, x.shape, s, 1)  # noqa: E731
    dw = lambda: G.conv2d_backward_weight(dy, x, w.shape, s, 1)  # noqa: E731
    outs = (fwd(), dx(), *dw())
    return tuple(gpu_ms(cp, f) for f in (fwd, dx, dw)), taken, outs


def time_torch(x, w, b, dy, s):
    """(fwd, dx, dw + db) ms of cuDNN, TF32 off; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    import cupy as cp
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    X, Wt, B, DY = (torch.as_tensor(a, device="cuda") for a in (x, w, b, dy))
    F = torch.nn.functional
    gi, gw = torch.nn.grad.conv2d_input, torch.nn.grad.conv2d_weight
    fwd = lambda: F.conv2d(X, Wt, B, s, 1)  # noqa: E731
    dx = lambda: gi(X.shape, Wt, DY, s, 1)  # noqa: E731
    dw = lambda: (gw(X, Wt.shape, DY, s, 1), DY.sum((0, 2, 3)))  # noqa: E731
    return tuple(gpu_ms(cp, f) for f in (fwd, dx, dw))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", nargs="+", default=["auto", *G.TILES], choices=["auto", *G.TILES],
                    help="tiles to time (default: all and auto)")
    ap.add_argument("--batch", type=int, default=128, help="N (default: %(default)s, the UNet's)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch cuDNN")
    args = ap.parse_args(argv)
    if args.batch < 1:
        ap.exit(2, "--batch must be at least 1\n")
    try:
        import cupy as cp
        cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - any CuPy or driver failure means: no GPU here
        ap.exit(1, f"needs CuPy and a GPU ({type(e).__name__}: {str(e).splitlines()[0][:80]})\n")

    rng = np.random.default_rng(0)
    print(f"{'shape':<24}{'tile':<10}{'taken fwd/dx/dw':<24}{'fwd':>8}{'dx':>8}{'dw':>8}{'sum':>8}  ms")
    for C, H, s in SHAPES:
        Ho = (H + 2 - 3) // s + 1
        x = cp.asarray(rng.standard_normal((args.batch, C, H, H), dtype=np.float32))  # N,C,H,W
        w = cp.asarray(rng.standard_normal((C, C, 3, 3), dtype=np.float32) / (3 * C ** 0.5))
        b = cp.asarray(rng.standard_normal(C, dtype=np.float32))  # C
        dy = cp.asarray(rng.standard_normal((args.batch, C, Ho, Ho), dtype=np.float32))
        name = f"N{args.batch} C{C} {H}x{H} s{s}"
        first = None
        for tile in args.tiles:
            ms, taken, outs = time_igemm(cp, tile, x, w, b, dy, s)
            if first is None:
                first = outs
            for o, f in zip(outs, first):  # same sums in another order: float32 rounding only
                err = float(cp.abs(o - f).max() / (cp.abs(f).max() + 1e-30))
                if err > 1e-4:
                    sys.exit(f"tile {tile} disagrees with tile {args.tiles[0]} at {name}: {err:.2e}")
            print(f"{name:<24}{tile:<10}{'/'.join(taken):<24}" + "".join(f"{t:8.3f}" for t in ms)
                  + f"{sum(ms):8.3f}")
        G.TILE = "auto"
        if s > 1:  # the input gradient's gather over every tap, before the parity split
            gather = gpu_ms(cp, lambda: G.backward_input(G.MODULES, dy, w, x.shape, s, 1,
                                                          parity_split=False))
            print(f"{name:<24}{'auto':<10}{'dx, every tap':<24}{'':8}{gather:8.3f}")
        t = None if args.no_torch else time_torch(x, w, b, dy, s)
        if t is not None:
            print(f"{name:<24}{'cudnn':<10}{'':<24}" + "".join(f"{v:8.3f}" for v in t) + f"{sum(t):8.3f}")


if __name__ == "__main__":
    main()
