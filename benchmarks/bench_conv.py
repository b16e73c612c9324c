"""Benchmark: 3x3 convolution forward + backward (input and weight gradients), N 64, C 64 -> 64,
32x32 and 16x16, stride 1, padding 1: every version of kernels/conv2d.py against PyTorch
(torch.nn.functional.conv2d + autograd), side by side in one process, with the machine's own
float32 matmul rate measured in the same run as the ceiling.

# N batch, C channels (in = out), H W spatial

Every version is first validated against the NumPy reference (small shapes, float32 and float64
(igemm: float32 only), stride 1 and 2, 1x1 and 3x3); then the contenders run interleaved (one
forward + backward each, in turn, repeated) and the table gives medians. Other processes share
the cores: read ratios, and rerun when the matmul rate looks low.

    PYTHONPATH=. python benchmarks/bench_conv.py                    # CPU: numpy, numba, direct, torch
    PYTHONPATH=. python benchmarks/bench_conv.py --threads 1        # one core for everyone
    PYTHONPATH=. python benchmarks/bench_conv.py --breakdown        # + where the time goes
    PYTHONPATH=. python benchmarks/bench_conv.py --device gpu       # GPU: cupy, igemm, cuda (tiled),
                                                                    #   cuda_naive, numpy, torch cudnn
    PYTHONPATH=. python benchmarks/bench_conv.py --unet             # the UNet's own convolutions

--unet times, instead of the two square shapes, every distinct convolution of bench_unet.py's
default network (6.46M parameters, 32x32x3) at its CPU batch (8): each shape's forward, input
gradient and weight gradient, per call, for "numba", "direct" and PyTorch (its phases through
torch.ops.aten.convolution_backward), interleaved, and the totals weighted by how many times
each shape runs in one training step (62 convolutions: 3x3 at 32x32, 16x16 and 8x8, the stride-2
down-sampling, the 1x1 skips and attention's qkv and proj). The shapes are found by running the
network's forward once with the convolution wrapped. Measurements: docs/performance.md.

PyTorch runs twice on the CPU: "torch", its default, with oneDNN's convolutions, and "torch-off",
its own fallback (torch.backends.mkldnn off). Which is faster depends on the machine (oneDNN was
several times slower on some of this project's machines, and is twice as fast on others), so
"vs torch" is against the faster: PyTorch at its best here.

On the CPU each contender's turn ends in a pause (PAUSE) and starts with one untimed call, so
that no one pays for another's spinning threads; the square shapes' table pauses too since a
later session (without it "direct" at 16x16 on two threads ran slower than on one).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minisims.kernels import conv2d as K  # noqa: E402
from minisims.kernels.conv2d import (conv2d_backward_input, conv2d_backward_weight,  # noqa: E402
                            conv2d_forward, out_size)

SIZES = [32, 16]
UNET_BATCH = 8  # bench_unet.py's batch on the CPU
PAUSE = 0.2  # s of sleep after each contender's turn on the CPU: an OpenBLAS worker spins for
# 2^28 cycles (about 0.1 s, OPENBLAS_THREAD_TIMEOUT) after every threaded BLAS call and takes a
# core from whoever runs next ("direct" 1.4-1.6x slower right after one), torch's OpenMP threads
# spin too; without the pause each contender paid for the one before it. In the square shapes'
# table, without it, "direct" at 16x16 took 69-72 ms on two threads, more than on one (66 ms),
# and 37 ms when timed alone (one-off script, load 1.1)


def runnable(impls, xp):
    """The versions that run here; one that cannot (e.g. numba-cuda broken by the installed NumPy)
    is reported and left out instead of stopping the benchmark."""
    x, w = xp.ones((1, 1, 3, 3), dtype=np.float32), xp.ones((1, 1, 3, 3), dtype=np.float32)
    ok = []
    for impl in impls:
        try:
            conv2d_forward(x, w, None, 1, 1, impl)
            ok.append(impl)
        except Exception as e:
            print(f"skipping {impl}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    return ok


def validate(impls, xp, to_numpy):
    """Each version against the NumPy reference, float32 and float64, before any timing."""
    rng = np.random.default_rng(0)
    for N, C, O, H, k, s, p in [(2, 8, 8, 9, 3, 1, 1), (2, 8, 6, 9, 3, 2, 1), (3, 5, 7, 6, 1, 1, 0),
                                (2, 4, 4, 7, 1, 2, 0)]:
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal((N, C, H, H)).astype(dtype)  # N,C,H,W
            w = rng.standard_normal((O, C, k, k)).astype(dtype)  # O,C,k,k
            b = rng.standard_normal(O).astype(dtype)  # O
            Ho = out_size(H, k, s, p)
            dy = rng.standard_normal((N, O, Ho, Ho)).astype(dtype)  # N,O,Ho,Wo
            ref = [conv2d_forward(x, w, b, s, p, "reference"),
                   conv2d_backward_input(dy, w, x.shape, s, p, "reference"),
                   *conv2d_backward_weight(dy, x, w.shape, s, p, "reference")]
            tol = 1e-4 if dtype == np.float32 else 1e-10  # float32: K <= 72 reordered products
            X, W_, B, DY = (xp.asarray(a) for a in (x, w, b, dy))
            for impl in impls:
                if impl in K.FLOAT32_ONLY and dtype != np.float32:
                    continue
                got = [conv2d_forward(X, W_, B, s, p, impl),
                       conv2d_backward_input(DY, W_, x.shape, s, p, impl),
                       *conv2d_backward_weight(DY, X, w.shape, s, p, impl)]
                for name, g, r in zip(("y", "dx", "dw", "db"), got, ref):
                    g = to_numpy(g)
                    assert g.dtype == dtype and np.allclose(g, r, rtol=tol, atol=tol), \
                        f"{impl} {name} {(N, C, O, H, k, s, p)} {dtype.__name__}: max diff {np.abs(g - r).max()}"
    print(f"validated {', '.join(impls)} against the reference (4 shapes x 2 dtypes)")


def ours(impl, x, w, b, dy):
    def fwd():
        conv2d_forward(x, w, b, 1, 1, impl)

    def bwd():
        conv2d_backward_input(dy, w, x.shape, 1, 1, impl)
        conv2d_backward_weight(dy, x, w.shape, 1, 1, impl)
    return fwd, bwd


def torch_pair(torch, x, w, b, dy, device):
    tx = torch.tensor(np.asarray(x), device=device, requires_grad=True)
    tw = torch.tensor(np.asarray(w), device=device, requires_grad=True)
    tb = torch.tensor(np.asarray(b), device=device, requires_grad=True)
    tdy = torch.tensor(np.asarray(dy), device=device)
    state = {}

    def fwd():
        state["y"] = torch.nn.functional.conv2d(tx, tw, tb, stride=1, padding=1)

    def bwd():
        state["y"].backward(tdy)
        tx.grad = tw.grad = tb.grad = None
    return fwd, bwd


def onednn_off(torch, fns):
    """The same calls with PyTorch's CPU convolutions on its own fallback instead of oneDNN: on
    some machines oneDNN is several times slower, on others faster, so both are timed and the
    faster is the one we compare with (PyTorch at its best configuration here)."""
    def off(f):
        def call():
            before = torch.backends.mkldnn.enabled
            torch.backends.mkldnn.enabled = False
            try:
                return f()
            finally:
                torch.backends.mkldnn.enabled = before
        return call
    return tuple(off(f) for f in fns)


def faster_torch(med):
    """(seconds, name) of the faster PyTorch configuration timed, by the sum of its phases."""
    return min((sum(med[k]), k) for k in TORCH if k in med)


TORCH = ("torch", "torch-off")  # oneDNN on (PyTorch's default), off


def timed(runs, repeats, sync, pause=0.0):
    """Interleave the contenders; each run is a tuple of phases ((fwd, bwd), or --unet's (fwd,
    dx, dw)) or a single callable. Medians in s, one per phase (at least two: 0.0 if missing).
    ``pause`` seconds of sleep after each contender's turn (see PAUSE), and the next turn
    starts with one untimed call of its first phase (threads asleep after the pause took up to
    10 ms to wake in torch's first call)."""
    for f in runs.values():  # warm-up: compiles, first-touch page faults, cuDNN autotuning
        for g in (f if isinstance(f, tuple) else (f,)):
            g()
    sync()
    t = {k: tuple([] for _ in range(max(2, len(f) if isinstance(f, tuple) else 1)))
         for k, f in runs.items()}  # one list per phase; a single callable's second stays empty
    for _ in range(repeats):
        for k, f in runs.items():
            if pause:  # after the pause: wake this contender's threads, untimed
                (f if isinstance(f, tuple) else (f,))[0]()
            for g, acc in zip(f if isinstance(f, tuple) else (f,), t[k]):
                t0 = time.perf_counter()
                g()
                sync()
                acc.append(time.perf_counter() - t0)
            time.sleep(pause)
    return {k: tuple(statistics.median(a) if a else 0.0 for a in v) for k, v in t.items()}


def breakdown(N, C, H, repeats):
    """Where the CPU versions' forward time goes (N, C, HxH, 3x3, stride 1, padding 1)."""
    from minisims.kernels import _conv2d_direct as KD
    from minisims.kernels import _conv2d_numba as KN
    from minisims.kernels._conv2d_common import weight_matrix
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)  # N,C,H,W
    w = rng.standard_normal((C, C, 3, 3)).astype(np.float32)  # C,C,3,3
    wmat = np.ascontiguousarray(weight_matrix(w))  # C,K
    xpad = K._pad_nhwc(np, x, 1, "bench_pad")
    cols = K._im2col_nhwc(np, xpad, 3, 3, 1, H, H, "bench_cols")  # N,HW,K
    y = np.empty((N * H * H, C), np.float32)  # M,C
    out = np.empty((N, C, H, H), np.float32)
    B = KN._chunk(N, H * H)
    cb = np.empty((B, H * H, 9 * C), np.float32)
    yb = np.empty((B, H, H, C), np.float32)
    sq = rng.standard_normal((2048, 2048)).astype(np.float32)
    phases = {
        "numpy: pad + NCHW->NHWC": lambda: K._pad_nhwc(np, x, 1, "bench_pad"),
        "numpy: im2col (kh,kw,C)": lambda: K._im2col_nhwc(np, xpad, 3, 3, 1, H, H, "bench_cols"),
        "numpy: GEMM (M,K)@(K,C)": lambda: np.matmul(cols.reshape(N * H * H, -1), wmat.T, out=y),
        "numpy: NHWC->NCHW": lambda: K._nhwc_to_nchw(np, y.reshape(N, H, H, C), out),
        f"numba: im2col x{-(-N // B)} chunks": lambda: [KN._im2col(x, n0, 1, 1, 3, 3, H, H, cb[:min(B, N - n0)])
                                                        for n0 in range(0, N, B)],
        f"numba: GEMM x{-(-N // B)} chunks": lambda: [np.matmul(cb.reshape(-1, 9 * C), wmat.T, out=yb.reshape(-1, C))
                                                      for n0 in range(0, N, B)],
        "numba: NHWC->NCHW": lambda: [KN._nhwc_to_nchw(yb[:min(B, N - n0)], n0, out) for n0 in range(0, N, B)],
        "direct: whole forward, no columns": lambda: KD.conv2d_forward(x, w, None, 1, 1),
        "sgemm 2048^3 (the ceiling)": lambda: np.matmul(sq, sq),
    }
    med = timed(phases, repeats, lambda: None)
    flops = 2 * N * H * H * C * 9 * C
    print(f"\nforward breakdown, N {N}, C {C}, {H}x{H} (median of {repeats}):")
    for k, (t, _) in med.items():
        f = 2 * 2048 ** 3 if k.startswith("sgemm") else flops
        extra = f"  {f / t / 1e9:6.1f} GFLOP/s" if "GEMM" in k or k.startswith(("sgemm", "direct")) else ""
        print(f"  {k:<32} {t * 1e3:8.2f} ms{extra}")


# ------------------------------------------------------------------------------------------------
# --unet: the convolutions of bench_unet.py's default network, shape by shape
# ------------------------------------------------------------------------------------------------

def unet_conv_shapes(batch=UNET_BATCH):
    """[((x_shape, w_shape, stride, padding), calls per training step)] for bench_unet.py's
    default network, in the order the forward first runs them. Each Conv2d runs its forward once
    a step and, in the backward, one input gradient and one weight gradient."""
    import importlib.util

    from minisims import ops
    from minisims.nn.unet import UNet, UNetConfig
    bench_unet = sys.modules.get("bench_unet")
    if bench_unet is None:
        spec = importlib.util.spec_from_file_location("bench_unet", Path(__file__).with_name("bench_unet.py"))
        bench_unet = importlib.util.module_from_spec(spec)
        sys.modules["bench_unet"] = bench_unet  # its dataclass looks its module up there
        spec.loader.exec_module(bench_unet)
    a = bench_unet.build_parser().parse_args([])  # its defaults: the network it times
    cfg = UNetConfig(img_resolution=a.res, channels=a.channels, channel_mult=a.mult,
                     blocks_per_level=a.blocks, attn_resolutions=a.attn, dropout=a.dropout)
    net = UNet(cfg, np.random.default_rng(0))
    calls = {}
    forward = ops.conv2d

    def counted(x, w, b, stride=1, padding=0):
        key = (tuple(x.shape), tuple(w.shape), stride, padding)
        calls[key] = calls.get(key, 0) + 1
        return forward(x, w, b, stride, padding)
    ops.conv2d = counted  # Conv2d.forward looks it up there, the seam
    try:
        x = np.zeros((batch, cfg.in_channels, cfg.img_resolution, cfg.img_resolution), np.float32)
        net.forward(x, np.zeros(batch, np.float32))
    finally:
        ops.conv2d = forward
    return list(calls.items())


def phases(impl, x, w, b, dy, s, p):
    """(forward, input gradient, weight gradient) of one convolution, each a callable."""
    return (lambda: conv2d_forward(x, w, b, s, p, impl),
            lambda: conv2d_backward_input(dy, w, x.shape, s, p, impl),
            lambda: conv2d_backward_weight(dy, x, w.shape, s, p, impl))


def torch_phases(torch, x, w, b, dy, s, p):
    """PyTorch's three phases apart: the forward as autograd records it (w needs a gradient), the
    input and the weight gradient as aten.convolution_backward, which autograd calls, with one
    output each (in a training step autograd asks for all three in one call)."""
    tx, tw, tb, tdy = (torch.tensor(a) for a in (x, w, b, dy))
    tw.requires_grad_(True)
    bwd = torch.ops.aten.convolution_backward

    def grads(mask):
        return lambda: bwd(tdy, tx, tw.detach(), [tw.shape[0]], [s, s], [p, p], [1, 1], False,
                           [0, 0], 1, mask)
    return (lambda: torch.nn.functional.conv2d(tx, tw, tb, stride=s, padding=p),
            grads([True, False, False]), grads([False, True, True]))


def shape_label(x_shape, w_shape, s, p):
    N, C, H, W = x_shape
    Cout, _, kh, kw = w_shape
    return f"{kh}x{kw} s{s} {C}->{Cout} {H}x{W}"


def bench_unet_shapes(impls, torch, batch, repeats):
    """Per shape of :func:`unet_conv_shapes`, per phase, per contender: the median time of one
    call (rounds interleaved: every contender's three phases in turn, then the next round); then
    the totals weighted by the calls per step. Prints both tables; returns the totals."""
    rng = np.random.default_rng(0)
    shapes = unet_conv_shapes(batch)
    names = impls + (list(TORCH) if torch is not None else [])
    total = {k: np.zeros(3) for k in names}  # ms per training step: fwd, dx, dw
    print(f"\nthe convolutions of bench_unet.py's default network, batch {batch}, float32 "
          f"({sum(n for _, n in shapes)} per step, {len(shapes)} shapes); ms per call, median of "
          f"{repeats} interleaved rounds")
    print(f"{'shape':<24} {'calls':>5} {'version':<9} {'fwd':>7} {'dx':>7} {'dw':>7} {'sum':>7} "
          f"{'vs torch':>9}")
    for (xs, ws, s, p), n in shapes:
        x = rng.standard_normal(xs).astype(np.float32)  # N,C,H,W
        w = (rng.standard_normal(ws) / np.sqrt(np.prod(ws[1:]))).astype(np.float32)  # Cout,C,kh,kw
        b = rng.standard_normal(ws[0]).astype(np.float32)  # Cout
        dy = rng.standard_normal((xs[0], ws[0], out_size(xs[2], ws[2], s, p),
                                  out_size(xs[3], ws[3], s, p))).astype(np.float32)  # N,Cout,Ho,Wo
        runs = {impl: phases(impl, x, w, b, dy, s, p) for impl in impls}
        if torch is not None:
            runs["torch"] = torch_phases(torch, x, w, b, dy, s, p)
            runs["torch-off"] = onednn_off(torch, torch_phases(torch, x, w, b, dy, s, p))
        med = timed(runs, repeats, lambda: None, PAUSE)
        t_torch = faster_torch(med)[0] if torch is not None else None  # this shape's faster
        for k in names:
            t = np.array(med[k])
            total[k] += n * t * 1e3
            vs = f"{t.sum() / t_torch:8.2f}x" if t_torch else "      --"
            print(f"{shape_label(xs, ws, s, p):<24} {n:>5} {k:<9} {t[0] * 1e3:7.2f} {t[1] * 1e3:7.2f} "
                  f"{t[2] * 1e3:7.2f} {t.sum() * 1e3:7.2f} {vs}")
    print("\nper training step (each shape's time x its calls), ms:")
    print(f"{'version':<9} {'fwd':>8} {'dx':>8} {'dw':>8} {'sum':>8} {'vs torch':>9}")
    best = faster_torch(total)[1] if torch is not None else None  # one configuration, the faster
    for k in names:
        t = total[k]
        vs = f"{t.sum() / total[best].sum():8.2f}x" if torch is not None else "      --"
        print(f"{k:<9} {t[0]:8.1f} {t[1]:8.1f} {t[2]:8.1f} {t.sum():8.1f} {vs}")
    if torch is not None:
        print(f"vs torch: per shape against the faster of torch (oneDNN on, its default) and "
              f"torch-off (its own fallback); per step against {best}, the faster in all")
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where the arrays live")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds (median taken)")
    ap.add_argument("--batch", type=int, default=None,
                    help=f"N (default 64; with --unet, {UNET_BATCH}: bench_unet.py's CPU batch)")
    ap.add_argument("--channels", type=int, default=64, help="C in = C out")
    ap.add_argument("--breakdown", action="store_true", help="also time the phases of the CPU versions")
    ap.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    ap.add_argument("--unet", action="store_true",
                    help="time the distinct convolutions of bench_unet.py's default network instead "
                         "(CPU: numba, direct, torch), per shape and weighted by calls per step")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for every contender (BLAS, the direct version's pool, torch); "
                         "default: each library's own (2 here)")
    args = ap.parse_args(argv)
    if args.batch is None:
        args.batch = UNET_BATCH if args.unet else 64
    if args.unet and args.device != "cpu":
        ap.error("--unet runs on the cpu")
    if args.repeats < 1 or args.batch < 1 or args.channels < 1:
        ap.error("--repeats, --batch and --channels must be >= 1")
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")

    try:
        import torch
    except ImportError:
        torch = None
    if args.no_torch:
        torch = None

    if args.device == "gpu":
        try:
            import cupy as xp
            xp.zeros(1).sum()
        except Exception as e:  # not installed, or installed without a usable GPU
            ap.error(f"--device gpu needs CuPy and a GPU ({type(e).__name__}: {e})")
        impls = ["cupy", "igemm", "cuda", "cuda_naive", "numpy"]  # cuda = the tiled rung
        sync = xp.cuda.Device().synchronize
        to_numpy = xp.asnumpy
        n_mm = 8192
        if torch is not None:
            if not torch.cuda.is_available():
                torch = None
            else:  # compare float32 with float32: no TF32 in cuDNN or cuBLAS
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
                torch.backends.cudnn.benchmark = True
        tdev = "cuda"
    else:
        xp = np
        impls = ["numpy", "numba", "direct"]
        if args.threads is not None:  # one count for all: BLAS (numpy, numba), direct's pool, torch
            from threadpoolctl import threadpool_limits

            from minisims.kernels import _threads
            threadpool_limits(limits=args.threads, user_api="blas")
            _threads.THREADS = args.threads
            if torch is not None:
                torch.set_num_threads(args.threads)
        sync = lambda: None  # noqa: E731
        to_numpy = np.asarray
        n_mm = 2048
        tdev = "cpu"
    if args.unet:
        impls = ["numba", "direct"]
    impls = runnable(impls, xp)
    validate(impls, xp, to_numpy)
    if args.unet:
        bench_unet_shapes(impls, torch, args.batch, args.repeats)
        return

    rng = np.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((n_mm, n_mm)).astype(np.float32))
    N, C = args.batch, args.channels
    threads = f", torch threads {torch.get_num_threads()}" if torch is not None and tdev == "cpu" else ""
    print(f"\nconv 3x3 stride 1 pad 1, float32, N {N}, C {C} -> {C}, {args.device}{threads}; "
          f"median of {args.repeats} interleaved rounds")
    print(f"{'HxW':<6} {'version':<14} {'fwd ms':>8} {'bwd ms':>8} {'total ms':>9} {'GFLOP/s':>8} "
          f"{'% sgemm':>8} {'vs torch':>9}")
    for H in SIZES:
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)  # N,C,H,W
        w = (rng.standard_normal((C, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)  # C,C,3,3
        b = rng.standard_normal(C).astype(np.float32)  # C
        dy = rng.standard_normal((N, C, H, H)).astype(np.float32)  # N,C,H,W
        X, W_, B, DY = (xp.asarray(v) for v in (x, w, b, dy))
        runs = {impl: ours(impl, X, W_, B, DY) for impl in impls}
        if torch is not None:
            runs["torch"] = torch_pair(torch, x, w, b, dy, tdev)
            if tdev == "cpu":
                runs["torch-off"] = onednn_off(torch, torch_pair(torch, x, w, b, dy, tdev))
        runs["sgemm"] = (lambda: xp.matmul(a, a),)
        med = timed(runs, args.repeats, sync, PAUSE if args.device == "cpu" else 0.0)
        gemm_rate = 2 * n_mm ** 3 / med["sgemm"][0] / 1e9
        flops = 3 * 2 * N * H * H * C * 9 * C  # forward, input gradient, weight gradient
        t_torch = faster_torch(med)[0] if torch is not None else None
        for k, (tf, tb) in med.items():
            if k == "sgemm":
                continue
            total = tf + tb
            rate = flops / total / 1e9
            vs = f"{total / t_torch:8.2f}x" if t_torch else "      --"
            print(f"{H}x{H:<4} {k:<14} {tf * 1e3:8.2f} {tb * 1e3:8.2f} {total * 1e3:9.2f} {rate:8.1f} "
                  f"{100 * rate / gemm_rate:7.0f}% {vs}")
        print(f"{H}x{H:<4} {f'sgemm {n_mm}^3':<14} {'':>8} {'':>8} {med['sgemm'][0] * 1e3:9.2f} {gemm_rate:8.1f}")
    target = "at most 1.0x and 60% of sgemm" if args.device == "cpu" else "at most 1.3x"
    print(f"vs torch = our time / PyTorch's time, the faster of torch (oneDNN on, its default) and "
          f"torch-off on the CPU (issue 9's target on the {args.device}: {target})")
    if args.breakdown and args.device == "cpu":
        breakdown(N, C, 32, args.repeats)


if __name__ == "__main__":
    main()
