"""Benchmark: the toy MLP ensemble (R runs at once, 64 wide, 4 hidden ReLU layers) on a GPU, ours
against PyTorch side by side in one process: one training step's forward + backward, and one
sampler evaluation.

# R runs, N points per run, DIN = 3 inputs (x, the noise level), H 64, D 2 outputs

Ours (minisims.nn.MLPDenoiser, float32 CuPy):
- train ``fused``: kernels/mlp_train.py, the forward and the backward one launch each;
- train ``layers``: the same network layer by layer (batched products, bias, ReLU, mask);
- eval ``tiled`` and ``cupy``: the two versions of kernels/mlp_eval.py (register-tiled products,
  and one point per thread);
- eval ``layers``: MLPDenoiser's layers.
PyTorch (TF32 off): the same ensemble as torch.baddbmm + relu, autograd for the backward, the
gradients of every weight computed (as ours are); evaluation under no_grad.

Every version is first checked against the layers (max difference over max|.|); then all run
interleaved, in turn, and the table gives median wall-clock times per call with the device
synchronised after each, and each one's ratio to PyTorch's. Sizes: the Figure 4 `gpu` preset's
aux fine-tuning (R = 1000, N = 2000) by default.

    PYTHONPATH=. python benchmarks/bench_mlp_gpu.py                          # GPU, R 1000, N 2000
    PYTHONPATH=. python benchmarks/bench_mlp_gpu.py --runs 256 --points 1000
    PYTHONPATH=. python benchmarks/bench_mlp_gpu.py --device cpu --runs 8 --points 500   # smoke test

On the CPU (one thread each; a smoke test of this script, layers against PyTorch) the toy's own
CPU comparison is benchmarks/bench_toy.py.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minisims import backend  # noqa: E402
from minisims.kernels import mlp_eval  # noqa: E402
from minisims.nn.layers import Linear  # noqa: E402
from minisims.nn.mlp import MLPConfig, MLPDenoiser
from minisims.nn.mlp_fused import FusedMLPDenoiser, spec  # noqa: E402


def _ours_train(net, x, c, dy, fused):
    def step():
        cls = FusedMLPDenoiser if fused else MLPDenoiser  # net is a FusedMLPDenoiser
        net.zero_grad()
        y = cls.forward(net, x, c)
        cls.backward(net, dy)
        return y
    return step


def _ours_eval(net, x, c, impl):
    layers = [m for m in net.net.layers if isinstance(m, Linear)]
    params = mlp_eval.pack([m.params["W"] for m in layers], [m.params["b"] for m in layers])

    def call():
        if impl == "layers":
            return MLPDenoiser.forward(net, x, c)
        return mlp_eval.mlp_eval(x, c, params, net.embed.freqs, spec(net), impl=impl)
    return call


def _torch_net(net, device):
    """The ensemble's weights as torch leaf tensors [(W (R,Din,Dout), b (R,1,Dout)), ...]."""
    import torch
    return [(torch.tensor(backend.to_numpy(m.params["W"]), device=device, requires_grad=True),
             torch.tensor(backend.to_numpy(m.params["b"])[:, None, :], device=device,
                          requires_grad=True))
            for m in net.net.layers if isinstance(m, Linear)]


def _torch_forward(layers, h):
    import torch
    for i, (W, b) in enumerate(layers):
        h = torch.baddbmm(b, h, W)  # R,N,Dout
        if 0 < i < len(layers) - 1:
            h = torch.relu(h)
    return h


def _torch_train(layers, h, dy):
    def step():
        for W, b in layers:
            W.grad = b.grad = None
        y = _torch_forward(layers, h)
        y.backward(dy)
        return y
    return step


def _torch_eval(layers, h):
    import torch

    def call():
        with torch.no_grad():
            return _torch_forward(layers, h)
    return call


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    ap.add_argument("--runs", type=int, default=1000, help="R, runs at once (default 1000)")
    ap.add_argument("--points", type=int, default=2000, help="N, points per run (default 2000)")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per version (median)")
    args = ap.parse_args(argv)
    if min(args.runs, args.points, args.repeats) < 1:
        ap.error("--runs, --points and --repeats must be >= 1")
    try:
        import torch
    except ImportError:
        torch = None
    if args.device == "gpu":
        try:
            backend.use_device("gpu")
            import cupy
            cupy.zeros(1).sum()
        except Exception as e:  # not installed, or installed without a usable GPU
            ap.error(f"--device gpu needs CuPy and a GPU ({type(e).__name__}: {e})")
        sync, tdev = cupy.cuda.Device().synchronize, "cuda"
        if torch is not None:
            torch.backends.cuda.matmul.allow_tf32 = False
    else:
        sync, tdev = (lambda: None), "cpu"
        if torch is not None:
            torch.set_num_threads(1)  # its idle threads would spin on the cores NumPy runs on
    xp = backend.xp()
    R, N = args.runs, args.points
    rng = np.random.default_rng(0)
    net = FusedMLPDenoiser(MLPConfig(), rng, ensemble=R)
    x = xp.asarray(rng.standard_normal((R, N, 2)), dtype=np.float32)  # R,N,D
    c = xp.asarray(rng.integers(1, 40, (R, N)), dtype=np.float32)  # R,N, DDPM step indices
    dy = xp.asarray(rng.standard_normal((R, N, 2)), dtype=np.float32)  # R,N,D
    gpu = args.device == "gpu"
    cases = {"train layers": _ours_train(net, x, c, dy, False),
             "eval layers": _ours_eval(net, x, 17.0, "layers")}
    if gpu:
        cases = {"train fused": _ours_train(net, x, c, dy, True), **cases,
                 "eval tiled": _ours_eval(net, x, 17.0, "tiled"),
                 "eval cupy": _ours_eval(net, x, 17.0, "cupy")}
    if torch is not None:
        layers = _torch_net(net, tdev)
        h = torch.tensor(np.concatenate([backend.to_numpy(x), backend.to_numpy(c)[..., None]], -1),
                         device=tdev)  # R,N,DIN
        h17 = torch.tensor(np.concatenate([backend.to_numpy(x), np.full((R, N, 1), 17.0,
                                                                        np.float32)], -1),
                           device=tdev)
        cases["train torch"] = _torch_train(layers, h, torch.tensor(backend.to_numpy(dy), device=tdev))
        cases["eval torch"] = _torch_eval(layers, h17)

    # check every version against the layers before timing
    ref = {kind: backend.to_numpy(cases[f"{kind} layers"]()).astype(np.float64)
           for kind in ("train", "eval")}
    for name, fn in cases.items():
        out = fn()
        out = out.detach().cpu().numpy() if hasattr(out, "detach") else backend.to_numpy(out)
        r = ref[name.split()[0]]
        print(f"check {name:13s}: max|diff| / max|y| = {np.abs(out - r).max() / np.abs(r).max():.2e}")

    times = {name: [] for name in cases}
    with backend.blas_threads(None if gpu else 1):
        for _ in range(args.repeats):
            for name, fn in cases.items():
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - t0)
    print(f"\nR = {R}, N = {N}, H 64, 4 hidden ReLU layers, {args.device}, median of "
          f"{args.repeats} (ms, ratio to PyTorch's):")
    for kind in ("train", "eval"):
        peer = statistics.median(times[f"{kind} torch"]) if f"{kind} torch" in times else None
        for name in [n for n in cases if n.startswith(kind)]:
            t = statistics.median(times[name])
            ratio = f"{t / peer:6.2f}x" if peer else "      "
            print(f"  {name:13s} {1e3 * t:9.2f} ms  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
