"""Benchmark: one UNet training step (EDM loss, forward + backward + Adam), minisims vs PyTorch.

Both run the same architecture in the same process: the PyTorch model below mirrors
minisims.nn.unet layer for layer, is loaded with the same weights, and its output is compared with
ours before any timing (printed as 'max |F_ours - F_torch|'). Steps alternate between the two in
rounds so that a noisy machine slows both alike; the table gives the median step time of each and
the ratio ours / torch (the issue's target: within 1.5x). Without PyTorch only our column runs.

examples:
  python benchmarks/bench_unet.py                      # CPU, 32x32x3, batch 8, ~1 minute
  python benchmarks/bench_unet.py --threads 1 --profile   # one thread each, and where time goes
  python benchmarks/bench_unet.py --device gpu --batch 128   # ours on CuPy vs torch CUDA
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minisims import backend  # noqa: E402
from minisims.cli_util import Parser, fail, int_at_least  # noqa: E402
from minisims.diffusion import EDM, EDMPrecond  # noqa: E402
from minisims.nn.attention import SelfAttention2d  # noqa: E402
from minisims.nn.blocks import Downsample, ResBlock, Upsample  # noqa: E402
from minisims.nn.conv import Conv2d  # noqa: E402
from minisims.nn.dropout import Dropout  # noqa: E402
from minisims.nn.embedding import NoiseEmbedding  # noqa: E402
from minisims.nn.layers import Linear, SiLU  # noqa: E402
from minisims.nn.norm import GroupNorm  # noqa: E402
from minisims.nn.optim import Adam  # noqa: E402
from minisims.nn.resample import AvgPool2x, Upsample2x  # noqa: E402
from minisims.nn.unet import UNet, UNetConfig, UNetDecoder, UNetEncoder  # noqa: E402

SIGMA_DATA = 0.5
PROG = "bench_unet.py"


def int_tuple(text):
    try:
        return tuple(int(t) for t in text.split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def build_parser():
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0],
               epilog=__doc__[__doc__.index("examples:"):],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="cpu: NumPy vs torch CPU; gpu: CuPy vs torch CUDA (default cpu)")
    p.add_argument("--batch", type=int_at_least(1), default=None, help="images per step (default 8 on cpu, 128 on gpu)")
    p.add_argument("--res", type=int_at_least(4), default=32, help="image size (default 32)")
    p.add_argument("--channels", type=int_at_least(1), default=64, help="channels at level 0 (default 64)")
    p.add_argument("--mult", type=int_tuple, default=(1, 2, 2), help="channel multipliers (default 1,2,2)")
    p.add_argument("--blocks", type=int_at_least(1), default=2, help="ResBlocks per level (default 2)")
    p.add_argument("--attn", type=int_tuple, default=(16,), help="attention resolutions (default 16)")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout probability (default 0.1)")
    p.add_argument("--rounds", type=int_at_least(1), default=3, help="timed rounds (default 3)")
    p.add_argument("--steps", type=int_at_least(1), default=None,
                   help="steps per framework per round (default 1 on cpu, 5 on gpu)")
    p.add_argument("--threads", type=int_at_least(1), default=None,
                   help="BLAS and torch threads (default: each library's own default)")
    p.add_argument("--profile", action="store_true", help="also print where our step spends its time")
    return p


# ------------------------------------------------------------------------------------------------
# The same architecture in PyTorch, loaded with our weights
# ------------------------------------------------------------------------------------------------

def torch_unet(net: UNet, torch, device):
    nn = torch.nn
    F = nn.functional
    cfg = net.cfg

    def t(a):
        return torch.as_tensor(backend.to_numpy(a).copy(), device=device)

    def conv(layer):
        W = layer.params["W"]
        c = nn.Conv2d(W.shape[1], W.shape[0], W.shape[2], stride=layer.stride, padding=layer.padding)
        c.weight.data, c.bias.data = t(W), t(layer.params["b"])
        return c

    def linear(layer):
        W = layer.params["W"]  # Din,Dout: torch keeps Dout,Din
        lin = nn.Linear(W.shape[0], W.shape[1])
        lin.weight.data, lin.bias.data = t(W).T.contiguous(), t(layer.params["b"])
        return lin

    def norm(layer):
        g = nn.GroupNorm(layer.G, layer.C, eps=layer.eps)
        g.weight.data, g.bias.data = t(layer.params["gamma"]), t(layer.params["beta"])
        return g

    class Attn(nn.Module):
        def __init__(self, a):
            super().__init__()
            self.norm, self.qkv, self.proj = norm(a.norm), conv(a.qkv), conv(a.proj)

        def forward(self, x):
            N, C, H, W = x.shape
            q, k, v = self.qkv(self.norm(x)).reshape(N, 3, C, H * W).unbind(1)
            A = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(C), dim=-1)  # N,L,L
            return x + self.proj((v @ A.transpose(1, 2)).reshape(N, C, H, W))

    class Block(nn.Module):
        def __init__(self, b: ResBlock):
            super().__init__()
            self.norm0, self.conv0, self.affine = norm(b.norm0), conv(b.conv0), linear(b.affine)
            self.norm1, self.conv1 = norm(b.norm1), conv(b.conv1)
            self.drop = nn.Dropout(b.dropout.p)
            self.skip = conv(b.skip) if b.skip is not None else None
            self.attn = Attn(b.attn) if b.attn is not None else None

        def forward(self, x, emb):
            h = self.conv0(F.silu(self.norm0(x))) + self.affine(emb)[:, :, None, None]
            h = self.conv1(self.drop(F.silu(self.norm1(h))))
            y = (h + (x if self.skip is None else self.skip(x))) * math.sqrt(0.5)
            return y if self.attn is None else self.attn(y) * math.sqrt(0.5)

    def stage(s):
        if isinstance(s, Conv2d):
            return conv(s)
        if isinstance(s, ResBlock):
            return Block(s)
        if isinstance(s, Downsample):
            return conv(s.op) if isinstance(s.op, Conv2d) else nn.AvgPool2d(2)
        assert isinstance(s, Upsample)
        up = nn.Upsample(scale_factor=2, mode="nearest")
        return nn.Sequential(up, conv(s.conv)) if s.conv is not None else up

    class TorchUNet(nn.Module):
        def __init__(self):
            super().__init__()
            enc, dec = net.encoder, net.decoder
            self.register_buffer("freqs", t(enc.embed.freqs))
            self.map0, self.map1 = linear(enc.map0), linear(enc.map1)
            self.enc = nn.ModuleList([stage(s) for s in enc.stages])
            self.mid = nn.ModuleList([Block(b) for b in dec.mid])
            self.dec = nn.ModuleList([stage(s) for s in dec.stages])
            self.norm_out, self.conv_out = norm(dec.norm_out), conv(dec.conv_out)

        def forward(self, x, c_noise):
            arg = c_noise[:, None] * self.freqs
            emb = F.silu(self.map1(F.silu(self.map0(torch.cat([arg.cos(), arg.sin()], 1)))))
            skips, h = [], x
            for s in self.enc:
                h = s(h, emb) if isinstance(s, Block) else s(h)
                skips.append(h)
            for b in self.mid:
                h = b(h, emb)
            for s in self.dec:
                h = s(torch.cat([h, skips.pop()], 1), emb) if isinstance(s, Block) else s(h)
            return self.conv_out(F.silu(self.norm_out(h)))

    assert cfg.in_channels == cfg.out_channels
    return TorchUNet().to(device)


def torch_edm_step(model, opt, y, torch):
    """EDM loss (Karras et al. 2022) written in torch, then backward and Adam: the same step."""
    N = y.shape[0]
    sigma = torch.exp(torch.randn(N, 1, 1, 1, device=y.device) * 1.2 - 1.2)
    x = y + torch.randn_like(y) * sigma
    sd2 = SIGMA_DATA ** 2
    c_skip, c_out = sd2 / (sigma ** 2 + sd2), sigma * SIGMA_DATA / (sigma ** 2 + sd2).sqrt()
    c_in, c_noise = 1 / (sigma ** 2 + sd2).sqrt(), sigma.log().flatten() / 4
    D = c_skip * x + c_out * model(c_in * x, c_noise)
    loss = ((D - y) ** 2 / c_out ** 2).mean()
    opt.zero_grad(set_to_none=False)
    loss.backward()
    opt.step()


# ------------------------------------------------------------------------------------------------
# Where our step spends its time, by layer type
# ------------------------------------------------------------------------------------------------

class LayerTimer:
    """Wraps the forward/backward of every layer class and records each one's exclusive time
    (its own work, without the layers it calls), synchronising the GPU around each call. The
    exclusive time of ResBlock, the encoder/decoder and the UNet is their glue: residual adds,
    scalings, concatenations and splits."""

    CLASSES = [Conv2d, GroupNorm, SiLU, Dropout, Linear, NoiseEmbedding, Upsample2x, AvgPool2x,
               SelfAttention2d, ResBlock, Downsample, Upsample, UNetEncoder, UNetDecoder, UNet]

    def __init__(self, sync):
        self.sync, self.total, self.stack = sync, defaultdict(float), []
        for cls in self.CLASSES:
            for method in ("forward", "backward"):
                if method in vars(cls):
                    self._wrap(cls, method, f"{cls.__name__}.{method}")
        self._wrap(EDM, "loss_and_grad", "EDM loss (its own arithmetic)")
        self._wrap(Adam, "step", "Adam.step")

    def _wrap(self, cls, method, key):
        orig = getattr(cls, method)

        def run(obj, *a, **kw):
            self.sync()
            t0 = time.perf_counter()
            self.stack.append(0.0)
            out = orig(obj, *a, **kw)
            self.sync()
            dt = time.perf_counter() - t0
            self.total[key] += dt - self.stack.pop()
            if self.stack:
                self.stack[-1] += dt
            return out
        setattr(cls, method, run)

    def step(self, fn):
        t0 = time.perf_counter()
        fn()
        self.total["(step, wall)"] += time.perf_counter() - t0

    def report(self, steps):
        wall = self.total.pop("(step, wall)")
        print(f"\nwhere our step spends its time (exclusive ms per step, {steps} steps, synchronised per call):")
        for key, t in sorted(self.total.items(), key=lambda kv: -kv[1]):
            print(f"  {key:34s}{t / steps * 1e3:10.1f}  {100 * t / wall:5.1f}%")
        rest = wall - sum(self.total.values())
        print(f"  {'(outside these calls)':34s}{rest / steps * 1e3:10.1f}  {100 * rest / wall:5.1f}%")


def main(argv=None):
    args = build_parser().parse_args(argv)
    with backend.blas_threads(args.threads):  # None: each library's default
        run(args)


def run(args):
    if not 0 <= args.dropout < 1:
        fail(PROG, "--dropout must be in [0, 1)")
    try:
        cfg = UNetConfig(img_resolution=args.res, channels=args.channels, channel_mult=args.mult,
                         blocks_per_level=args.blocks, attn_resolutions=args.attn, dropout=args.dropout)
    except ValueError as e:
        fail(PROG, str(e))
    gpu = args.device == "gpu"
    if args.batch is None:
        args.batch = 128 if gpu else 8
    if args.steps is None:
        args.steps = 5 if gpu else 1
    if gpu:
        try:
            backend.use_device("gpu")
        except backend.BackendError as e:
            fail(PROG, str(e))
    xp = backend.xp()
    try:
        import torch
    except ImportError:
        torch = None
    tdev = "cuda" if gpu else "cpu"
    if torch is not None and args.threads:
        torch.set_num_threads(args.threads)
    if torch is not None and gpu and not torch.cuda.is_available():
        print("torch has no CUDA here: the torch column is skipped")
        torch = None
    if torch is not None and gpu:  # CuPy computes in full float32: no TF32 on either side
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False

    net = UNet(cfg, np.random.default_rng(0))  # float32, on the current device
    # non-trivial weights so the equivalence check sees every layer (the near-zero inits would not)
    host = np.random.default_rng(1)
    for _, mod, k in net.named_parameters():
        p = mod.params[k]
        p[...] = xp.asarray(host.standard_normal(p.shape).astype(np.float32) * 0.05 + (k == "gamma"))
    rng = backend.default_rng(2)
    y = xp.asarray(host.uniform(-1, 1, (args.batch, 3, args.res, args.res)).astype(np.float32))
    edm = EDM(precond=EDMPrecond(SIGMA_DATA), member_ndim=0, data_ndim=3)
    threads = args.threads or "default"
    print(f"UNet {cfg.channels}x{cfg.channel_mult}, {cfg.blocks_per_level} blocks/level, attention at "
          f"{cfg.attn_resolutions}, dropout {cfg.dropout}: {net.num_parameters() / 1e6:.2f}M parameters; "
          f"batch {args.batch} x 3x{args.res}x{args.res}, float32, device {args.device}")
    print((f"cupy {xp.__version__}, " if gpu else "") + f"numpy {np.__version__} (BLAS threads: {threads})" +
          (f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else ", no torch"))

    model = None
    if torch is not None:
        model = torch_unet(net, torch, tdev)
        x0 = host.standard_normal((2, 3, args.res, args.res)).astype(np.float32)
        c0 = np.array([-0.3, 0.6], np.float32)
        with torch.no_grad():
            Ft = model.eval()(torch.as_tensor(x0, device=tdev), torch.as_tensor(c0, device=tdev)).cpu().numpy()
        Fo = backend.to_numpy(net.forward(xp.asarray(x0), xp.asarray(c0)))
        print(f"same network: max |F_ours - F_torch| = {np.abs(Fo - Ft).max():.2e} "
              f"(|F| up to {np.abs(Ft).max():.2f}; float32)")
        model.train()
        topt = torch.optim.Adam(model.parameters(), lr=1e-3)
        yt = torch.as_tensor(backend.to_numpy(y), device=tdev)

    net.set_dropout(rng)
    opt = Adam(net, lr=1e-3)

    def ours():
        net.zero_grad()
        edm.loss_and_grad(net, y, rng)
        opt.step()

    def sync():
        if gpu:
            xp.cuda.Device().synchronize()
            if torch is not None:
                torch.cuda.synchronize()

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    ours()  # warm-up: buffers, BLAS and kernel caches
    if model is not None:
        torch_edm_step(model, topt, yt, torch)
    t_ours, t_torch = [], []
    for _ in range(args.rounds):
        t_ours += [timed(ours) for _ in range(args.steps)]
        if model is not None:
            t_torch += [timed(lambda: torch_edm_step(model, topt, yt, torch)) for _ in range(args.steps)]

    mo = float(np.median(t_ours))
    print(f"\n{'':28s}{'minisims':>12s}{'torch':>12s}{'ratio':>10s}")
    row = f"{'train step (ms)':28s}{mo * 1e3:12.1f}"
    row2 = f"{'images / s':28s}{args.batch / mo:12.1f}"
    if t_torch:
        mt = float(np.median(t_torch))
        row += f"{mt * 1e3:12.1f}{mo / mt:9.2f}x"
        row2 += f"{args.batch / mt:12.1f}"
    print(row)
    print(row2)
    print(f"(median of {len(t_ours)} steps each; min ours {min(t_ours) * 1e3:.1f} ms" +
          (f", min torch {min(t_torch) * 1e3:.1f} ms)" if t_torch else ")"))

    if args.profile:
        timer = LayerTimer(sync)
        for _ in range(args.steps):
            timer.step(ours)
        timer.report(args.steps)
        if model is not None:
            from torch.profiler import ProfilerActivity, profile
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
            with profile(activities=acts) as prof:
                for _ in range(args.steps):
                    torch_edm_step(model, topt, yt, torch)
                sync()
            print(f"\nwhere torch's step spends its time ({args.steps} steps):")
            try:
                print(prof.key_averages().table(sort_by="self_device_time_total" if gpu else
                                                "self_cpu_time_total", row_limit=14))
            except (KeyError, AttributeError, ValueError):  # older torch names the GPU column cuda
                print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=14))


if __name__ == "__main__":
    main()
