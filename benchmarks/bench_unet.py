"""Benchmark: one UNet training step (EDM loss, forward + backward + Adam), minisims vs PyTorch.

Both run the same architecture in the same process: the PyTorch model below mirrors
minisims.nn.unet layer for layer, is loaded with the same weights, and its output is compared with
ours before any timing (printed as 'max |F_ours - F_torch|'). Steps alternate between the two in
rounds so that a noisy machine slows both alike; the table gives the median step time of each and
the ratio ours / torch (the issue's target: within 1.5x). On the CPU PyTorch runs both with its
oneDNN convolutions (its default) and without, and the table takes the faster, saying which.
Without PyTorch only our column runs.

--profile then runs rounds x steps more of our steps (as minisims.train runs them, EMA update
included) with every layer kind timed: the layer classes' forward/backward, the two convolution
gradient kernels that Conv2d.backward calls, the loss, Adam.step (Adam and the EMA update; the
GroupNorm fused or not: --fused) are wrapped in this
process for the profile only (the library is unchanged; the wrappers come off afterwards). Each
row is exclusive time, so nested modules count once; 'other' is the step less every row. On the
GPU a CUDA event pair brackets each phase and each phase is synchronised, which slows the profiled
step: read the shares, and the unprofiled median printed beside it. A second table splits the
three convolution rows by shape (ms per call of each phase, in the step itself: caches and threads
as the step leaves them, which bench_conv.py's calls in turn do not show), beside PyTorch's own
convolutions by shape from its profiler (forward, and dx + dW in its one backward call) and the
ratio per shape. PyTorch's profiled steps alternate with ours, one before each, so both tables
come from the same minutes.

examples:
  python benchmarks/bench_unet.py                      # CPU, 32x32x3, batch 8, ~1 minute
  python benchmarks/bench_unet.py --profile            # and where our step spends its time
  python benchmarks/bench_unet.py --threads 1          # one BLAS / torch thread each
  python benchmarks/bench_unet.py --device gpu --profile   # ours on CuPy vs torch CUDA, batch 128
  python benchmarks/bench_unet.py --device gpu --profile --fused off   # without fused kernels
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minisims import backend, ops  # noqa: E402
from minisims.cli_util import Parser, fail, int_at_least  # noqa: E402
from minisims.diffusion import EDM, EDMPrecond  # noqa: E402
from minisims.nn.attention import SelfAttention2d  # noqa: E402
from minisims.nn.blocks import Downsample, ResBlock, Upsample  # noqa: E402
from minisims.nn.conv import Conv2d  # noqa: E402
from minisims.nn.dropout import Dropout  # noqa: E402
from minisims.nn.layers import Linear, Module, NoiseEmbedding, SiLU  # noqa: E402
from minisims.nn.norm import GroupNorm  # noqa: E402
from minisims.nn.resample import AvgPool2x, Upsample2x  # noqa: E402
from minisims.nn.unet import UNet, UNetConfig  # noqa: E402
from minisims.train import Adam, EMA  # noqa: E402

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
    p.add_argument("--fused", choices=["auto", "on", "off"], default="auto",
                   help="GroupNorm(+SiLU) and Adam+EMA as fused kernels: auto fuses both in float32 "
                        "(CUDA C on the gpu, numba loops on the cpu; default auto; 'on' also fuses "
                        "the GroupNorm in float64, through its NumPy reference; Adam+EMA fuses "
                        "float32 only)")
    p.add_argument("--conv", default="auto",
                   help="the convolution version 'auto' picks for this run (kernels/conv2d.py: "
                        "numba or direct on the cpu, igemm or cupy on the gpu; default: auto's own)")
    p.add_argument("--profile", action="store_true",
                   help="also time our step per layer kind (rounds x steps steps, synchronised per "
                        "phase) and print a markdown table, then the convolutions by shape beside "
                        "PyTorch's")
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


@contextmanager
def torch_config(torch, onednn):
    """PyTorch's CPU convolutions through oneDNN (True) or its own fallback (False); None: as
    it is (the GPU)."""
    if onednn is None:
        yield
        return
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = onednn
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


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
# Where our step spends its time, by layer kind (--profile)
# ------------------------------------------------------------------------------------------------

# The table's rows, in order, and what each one holds. Every row is the *exclusive* time of the
# calls timed into it (their own work, less the timed calls they make), so a module nested in
# another (attention's GroupNorm and 1x1 convolutions, the kernels inside Conv2d.backward) counts
# once, in its own row.
KINDS = {
    "conv forward": "Conv2d.forward: 3x3, stride-2, 1x1 skip and attention's qkv/proj convolutions",
    "conv dgrad (dx)": "conv2d_backward_input, the input gradient, as Conv2d.backward calls it",
    "conv wgrad (dW, db)": "conv2d_backward_weight, and Conv2d.backward adding dW, db into its grads",
    "GroupNorm": "GroupNorm.forward and .backward, with the SiLU and the embedding's bias where the "
                 "layer has them (one kernel each way when fused), attention's GroupNorm included",
    "SiLU": "SiLU.forward and .backward (the embedding's mapping layers)",
    "dropout": "Dropout.forward (drawing the mask) and .backward",
    "attention": "SelfAttention2d's own work: scores, softmax, the two batched products, backward",
    "resampling": "Upsample2x and AvgPool2x (the convolutions around them are convs)",
    "embedding": "the Fourier features, the mapping MLP's and every ResBlock's affine Linear layers",
    "loss": "EDM.loss_and_grad's own arithmetic: noise draws, preconditioning, the loss, dL/dF",
    "zero grads": "Module.zero_grad at the start of the step",
    "Adam+EMA": "Adam.step: Adam, then the EMA update when one is kept (minisims.ops.adam_ema; "
                "one kernel when fused)",
}
OTHER = "other"
OTHER_HOLDS = ("the step less every row above: the UNet's glue (residual adds and scalings, "
               "concatenations, splits, skip-gradient sums), Python, the timers themselves")


def timed_targets():
    """(owner, attribute, kind, counted) for every method and function the profile wraps. kind
    None times a call only so that its callers do not count it (the UNet's own glue falls into
    'other'); counted False adds the time but not a call (Conv2d.backward's own adds: its two
    kernels are the calls)."""
    from minisims import ops  # Conv2d.backward looks its two gradients up here

    targets = [(Conv2d, "forward", "conv forward", True),
               (ops, "conv2d_backward_input", "conv dgrad (dx)", True),
               (ops, "conv2d_backward_weight", "conv wgrad (dW, db)", True),
               (Conv2d, "backward", "conv wgrad (dW, db)", False),
               (UNet, "forward", None, False), (UNet, "backward", None, False),
               (EDM, "loss_and_grad", "loss", True),
               (Module, "zero_grad", "zero grads", True),
               (Adam, "step", "Adam+EMA", True)]
    for cls, kind in [(GroupNorm, "GroupNorm"), (SiLU, "SiLU"),
                      (Dropout, "dropout"),
                      (SelfAttention2d, "attention"), (Upsample2x, "resampling"),
                      (AvgPool2x, "resampling"), (NoiseEmbedding, "embedding"),
                      (Linear, "embedding")]:
        targets += [(cls, "forward", kind, True), (cls, "backward", kind, True)]
    return targets


CONV_KINDS = ("conv forward", "conv dgrad (dx)", "conv wgrad (dW, db)")


def conv_label(x_shape, w_shape, stride, padding):
    """'3x3 s1 64->64 32x32 p1': a convolution's kernel, stride, channels, input size, padding."""
    N, C, H, W = x_shape
    Cout, _, kh, kw = w_shape
    return f"{kh}x{kw} s{stride} {C}->{Cout} {H}x{W} p{padding}"


def conv_shape(owner, name, args):
    """The conv_label of a timed convolution call (Conv2d.forward, the two gradient kernels)
    from its arguments; None for every other target."""
    if owner is Conv2d and name == "forward":
        layer, x = args[0], args[1]
        return conv_label(x.shape, layer.params["W"].shape, layer.stride, layer.padding)
    if name == "conv2d_backward_input":  # (dy, w, x_shape, stride, padding, ...)
        return conv_label(args[2], args[1].shape, args[3], args[4])
    if name == "conv2d_backward_weight":  # (dy, x, w_shape, stride, padding, ...)
        return conv_label(args[1].shape, args[2], args[3], args[4])
    return None


class HostClock:
    """perf_counter: on the CPU an array operation has finished when its call returns."""

    def start(self):
        return time.perf_counter()

    def stop(self, t0) -> float:
        return time.perf_counter() - t0


class CudaEventClock:
    """A CUDA event recorded on the current stream at a phase's start and one at its end; stop
    waits for the end event (the per-phase synchronisation, in profile mode only) and returns the
    device time between the two, in seconds."""

    def __init__(self, cupy):
        self.cupy = cupy

    def start(self):
        start = self.cupy.cuda.Event()
        start.record()
        return start

    def stop(self, start) -> float:
        end = self.cupy.cuda.Event()
        end.record()
        end.synchronize()
        return self.cupy.cuda.get_elapsed_time(start, end) / 1e3  # ms -> s


@dataclass
class Profile:
    """Exclusive seconds and calls per kind, summed over ``steps`` profiled steps, and the steps'
    own time (``step_seconds``, summed, measured by the same clock); ``conv_seconds`` and
    ``conv_calls`` split the three convolution kinds by shape: {(kind, conv_label): ...}."""
    seconds: dict
    calls: dict
    step_seconds: float
    steps: int
    conv_seconds: dict = None
    conv_calls: dict = None


class PhaseTimer:
    """Wraps every target of :func:`timed_targets` for as long as ``installed()`` is open (the
    classes get their own methods back on exit) and adds each call's exclusive time to its kind."""

    def __init__(self, clock):
        self.clock = clock
        self.seconds, self.calls = defaultdict(float), defaultdict(int)
        self.conv_seconds, self.conv_calls = defaultdict(float), defaultdict(int)
        self.inner = []  # one entry per open call: the time spent in the timed calls it made

    def wrap(self, fn, kind, counted: bool, shape=None):
        """fn timed into ``kind``; ``shape(args)`` (convolutions) also files it by shape."""
        def timed(*args, **kwargs):
            t0 = self.clock.start()
            self.inner.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                dt = self.clock.stop(t0)
                inner = self.inner.pop()
                if kind is not None:
                    self.seconds[kind] += dt - inner
                    self.calls[kind] += counted
                    if shape is not None:
                        key = (kind, shape(args))
                        self.conv_seconds[key] += dt - inner
                        self.conv_calls[key] += 1
                if self.inner:
                    self.inner[-1] += dt
        return timed

    @contextmanager
    def installed(self):
        saved = []
        try:
            for owner, name, kind, counted in timed_targets():
                fn = vars(owner)[name]  # the owner's own attribute, never an inherited one
                saved.append((owner, name, fn))
                shaped = None
                if counted and kind in CONV_KINDS:  # file each call under its shape too
                    shaped = lambda args, owner=owner, name=name: conv_shape(owner, name, args)  # noqa: E731
                setattr(owner, name, self.wrap(fn, kind, counted, shaped))
            yield self
        finally:
            for owner, name, fn in reversed(saved):
                setattr(owner, name, fn)


def profile_steps(step, steps: int, clock, between=None) -> Profile:
    """Run ``step()`` ``steps`` times with every layer kind timed (see :data:`KINDS`);
    ``between()``, if given, runs before each of them with the wrappers off (PyTorch's profiled
    step, so that both profiles come from the same minutes)."""
    timer = PhaseTimer(clock)
    total = 0.0
    for _ in range(steps):
        if between is not None:
            between()
        with timer.installed():
            t0 = clock.start()
            step()
            total += clock.stop(t0)
    return Profile(dict(timer.seconds), dict(timer.calls), total, steps,
                   dict(timer.conv_seconds), dict(timer.conv_calls))


def conv_shape_rows(prof: Profile) -> list:
    """[(conv_label, calls per step, (fwd, dx, dw) ms per call, ms per step)], the most
    expensive shape first: where the three conv rows' time goes, shape by shape, in the step
    itself (caches and threads as the step leaves them, unlike bench_conv.py's calls in turn)."""
    labels = {label for _, label in prof.conv_seconds}
    rows = []
    for label in labels:
        ms = tuple(1e3 * prof.conv_seconds.get((k, label), 0.0) / max(prof.conv_calls.get((k, label), 0), 1)
                   for k in CONV_KINDS)
        calls = prof.conv_calls.get((CONV_KINDS[0], label), 0) / prof.steps
        step_ms = 1e3 * sum(prof.conv_seconds.get((k, label), 0.0) for k in CONV_KINDS) / prof.steps
        rows.append((label, calls, ms, step_ms))
    return sorted(rows, key=lambda r: -r[3])


def conv_shape_table(prof: Profile, torch_ms=None) -> str:
    """:func:`conv_shape_rows` as a markdown table; with ``torch_ms`` ({conv_label: (fwd, dx+dW)
    ms per call}, :func:`torch_conv_shapes`) also PyTorch's in its own step, and the ratio of the
    two shapes' ms per step."""
    head = "| convolution | calls / step | fwd ms / call | dx ms / call | dW ms / call | ms / step |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if torch_ms is not None:
        head += " torch fwd | torch dx+dW | torch ms / step | ratio |"
        rule += "---:|---:|---:|---:|"
    lines = [head, rule]
    ours_total = torch_total = 0.0  # ms per step over the shapes both sides have
    for label, calls, (f, dx, dw), step_ms in conv_shape_rows(prof):
        line = f"| {label} | {calls:g} | {f:.2f} | {dx:.2f} | {dw:.2f} | {step_ms:.1f} |"
        if torch_ms is not None:
            if label in torch_ms:
                tf, tb = torch_ms[label]
                t_step, ours, mark = calls * (tf + tb), step_ms, ""
            elif label + " (no dx)" in torch_ms:  # torch skips the first layer's dx: so do we here
                tf, tb = torch_ms[label + " (no dx)"]
                t_step, ours, mark = calls * (tf + tb), step_ms - calls * dx, " (no dx)"
            else:
                lines.append(line + " | | | |")
                continue
            ours_total += ours
            torch_total += t_step
            line += f" {tf:.2f} | {tb:.2f}{mark} | {t_step:.1f} | {ours / t_step:.2f}x{mark} |"
        lines.append(line)
    if torch_total:
        lines.append(f"| **all of these** | | | | | {ours_total:.1f} | | | {torch_total:.1f} | "
                     f"{ours_total / torch_total:.2f}x |")
    return "\n".join(lines)


def profile_rows(prof: Profile) -> list:
    """[(kind, ms per step, % of the step, calls per step)]: every kind of :data:`KINDS` that was
    called, in order (the fused and the unfused optimiser rows exclude each other), then 'other'
    (the step less all of them; calls None), then 'step' (100%)."""
    per_step = 1e3 / prof.steps
    rows = [(kind, prof.seconds.get(kind, 0.0) * per_step,
             100 * prof.seconds.get(kind, 0.0) / prof.step_seconds,
             prof.calls.get(kind, 0) / prof.steps) for kind in KINDS if prof.calls.get(kind, 0)]
    rest = prof.step_seconds - sum(prof.seconds.get(kind, 0.0) for kind in KINDS)
    rows.append((OTHER, rest * per_step, 100 * rest / prof.step_seconds, None))
    rows.append(("step", prof.step_seconds * per_step, 100.0, None))
    return rows


def profile_table(prof: Profile) -> str:
    """The rows of :func:`profile_rows` as a markdown table (ms to 0.01 below 10 ms)."""
    lines = ["| kind | ms / step | % of step | calls / step |", "|---|---:|---:|---:|"]
    for kind, ms, pct, calls in profile_rows(prof):
        name = f"**{kind}**" if kind == "step" else kind
        ms_text = f"{ms:.2f}" if ms < 10 else f"{ms:.1f}"
        calls_text = "" if calls is None else f"{calls:g}"
        lines.append(f"| {name} | {ms_text} | {pct:.1f} | {calls_text} |")
    return "\n".join(lines)


def print_profile(prof: Profile, device: str, unprofiled_s: float, torch_ms=None):
    how = ("CUDA events, synchronised after every phase" if device == "gpu" else
           "perf_counter around every phase")
    profiled_ms = prof.step_seconds / prof.steps * 1e3
    print(f"\nwhere our step spends its time: exclusive time per layer kind, mean of {prof.steps} "
          f"step{'s' * (prof.steps != 1)} ({how}); the profiled step takes {profiled_ms:.1f} ms, "
          f"the median unprofiled one {unprofiled_s * 1e3:.1f} ms")
    print(profile_table(prof))
    print("\nrows:")
    for kind, holds in list(KINDS.items()) + [(OTHER, OTHER_HOLDS)]:
        if kind == OTHER or prof.calls.get(kind, 0):
            print(f"  {kind}: {holds}")
    if prof.conv_seconds:
        print("\nthe three conv rows by shape, in the step (kernel, stride, channels, input size, "
              "padding; the same exclusive times; Conv2d.backward's own adds stay in the dW row "
              "only)" + ("; torch's from its profiler, in its own steps, which alternated with "
                         "ours (aten::convolution and aten::convolution_backward, inclusive)"
                         if torch_ms else "") + ":")
        print(conv_shape_table(prof, torch_ms or None))


class TorchProfile:
    """PyTorch's steps under torch.profiler, one profiled step per call (``step()``), their
    events kept: ``print_table()`` prints its per-operator table of all of them (its own view,
    not ours), ``conv_ms()`` its convolutions by shape (:func:`torch_conv_shapes`)."""

    def __init__(self, model, topt, yt, torch, gpu: bool, sync):
        self.run = lambda: torch_edm_step(model, topt, yt, torch)  # noqa: E731
        self.gpu, self.sync, self.events, self.steps = gpu, sync, [], 0
        self.averages = {}  # operator: its FunctionEventAvg, summed over the steps

    def step(self):
        from torch.autograd.profiler_util import FunctionEventAvg
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.gpu else [])
        with profile(activities=acts, record_shapes=True) as prof:
            self.run()
            self.sync()
        self.events += list(prof.events())
        for avg in prof.key_averages():
            self.averages.setdefault(avg.key, FunctionEventAvg()).add(avg)
        self.steps += 1

    def print_table(self):
        from torch.autograd.profiler_util import EventList
        averages = EventList(list(self.averages.values()), use_device="cuda" if self.gpu else None)
        print(f"\nwhere torch's step spends its time ({self.steps} steps, each profiled just "
              f"before one of ours):")
        try:
            print(averages.table(sort_by="self_device_time_total" if self.gpu else
                                 "self_cpu_time_total", row_limit=14))
        except (KeyError, AttributeError, ValueError):  # older torch names the GPU column cuda
            print(averages.table(sort_by="self_cuda_time_total", row_limit=14))

    def conv_ms(self):
        return torch_conv_shapes(self.events, self.gpu)


def torch_conv_shapes(events, gpu: bool) -> dict:
    """{conv_label: (fwd, dx + dW) ms per call} from torch.profiler's events (recorded with
    shapes): aten::convolution(x, w, b, stride, padding, ...) and aten::convolution_backward(dy,
    x, w, bias sizes, stride, padding, dilation, transposed, output padding, groups, output
    mask), which computes dx, dW and db in one call; inclusive time, the device's on the GPU. A
    shape missing either call is left out. Where the output mask asked for no dx (the first
    layer: its input needs no gradient; ours computes it anyway) the label gets " (no dx)"."""
    sums = defaultdict(lambda: [0.0, 0, 0.0, 0])  # label: fwd us, calls, bwd us, calls
    no_dx = set()
    for e in events:
        if e.name not in ("aten::convolution", "aten::convolution_backward"):
            continue
        shapes, args = e.input_shapes or [], getattr(e, "concrete_inputs", None) or []
        fwd = e.name == "aten::convolution"
        if len(shapes) < 3 or len(args) < 6:  # shapes or scalars not recorded (an older torch)
            continue
        x_shape, w_shape = (shapes[0], shapes[1]) if fwd else (shapes[1], shapes[2])
        stride, padding = (args[3], args[4]) if fwd else (args[4], args[5])
        if not (x_shape and w_shape and stride and padding) or len(set(stride)) != 1 \
                or len(set(padding)) != 1:
            continue  # not a square-strided, evenly padded 2D convolution: none in this UNet
        label = conv_label(x_shape, w_shape, stride[0], padding[0])
        if not fwd and len(args) > 10 and args[10] and not args[10][0]:
            no_dx.add(label)
        us = e.device_time_total if gpu else e.cpu_time_total
        slot = sums[label]
        slot[0 if fwd else 2] += us
        slot[1 if fwd else 3] += 1
    return {label + " (no dx)" * (label in no_dx): (f / nf / 1e3, b / nb / 1e3)
            for label, (f, nf, b, nb) in sums.items() if nf and nb}


def train_step(net, edm, opt, y, rng, ema=None, fused=None):
    """One training step as minisims.train runs it: zero the grads, the EDM loss and backward,
    Adam, then the EMA update when one is kept: as one fused pass (``fused`` True), as
    minisims.ops' own code (False), or where the fused pass pays (None, ops.FUSE_ADAM_FROM)."""
    net.zero_grad()
    with ops.network_threads(y):  # as the image command runs its networks (ops.network_threads)
        edm.loss_and_grad(net, y, rng)
    if fused is None:
        opt.step(ema)
        return
    saved = dict(ops.FUSE_ADAM_FROM)
    ops.FUSE_ADAM_FROM.update(cpu=0 if fused else math.inf, gpu=0 if fused else math.inf)
    try:
        opt.step(ema)
    finally:
        ops.FUSE_ADAM_FROM.update(saved)


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
    if args.conv != "auto":  # what minisims.ops.conv2d's fast path resolves to, for this run only
        from minisims.kernels import conv2d as K
        allowed = K.GPU_IMPLS if gpu else K.CPU_IMPLS
        if args.conv not in allowed:
            fail(PROG, f"--conv {args.conv} does not run on the {args.device}: one of "
                       f"{', '.join(allowed)}", 2)
        if gpu:
            K.AUTO_GPU_FLOAT32 = args.conv
        else:
            K.AUTO_CPU = args.conv
        print(f"convolutions: {args.conv}")
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
    fused = {"auto": None, "on": True, "off": False}[args.fused]
    ops.FUSE_GROUP_NORM = fused
    print(f"fused GroupNorm(+SiLU) and Adam+EMA: {args.fused}" + (" (float32: on)" if fused is None else ""))

    def ours():
        train_step(net, edm, opt, y, rng, fused=fused)

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

    # PyTorch at its best configuration here: on the CPU its convolutions through oneDNN are several
    # times slower than its own fallback on some machines and faster on others, so both are timed
    onednn = [True, False] if model is not None and not gpu else [None]
    ours()  # warm-up: buffers, BLAS and kernel caches
    for on in onednn if model is not None else []:
        with torch_config(torch, on):
            torch_edm_step(model, topt, yt, torch)
    t_ours, t_torch = [], {on: [] for on in onednn}
    for _ in range(args.rounds):
        t_ours += [timed(ours) for _ in range(args.steps)]
        for on in onednn if model is not None else []:
            with torch_config(torch, on):
                t_torch[on] += [timed(lambda: torch_edm_step(model, topt, yt, torch))
                                for _ in range(args.steps)]

    mo = float(np.median(t_ours))
    med = {on: float(np.median(t)) for on, t in t_torch.items() if t}
    best = min(med, key=med.get) if med else None
    print(f"\n{'':28s}{'minisims':>12s}{'torch':>12s}{'ratio':>10s}")
    row = f"{'train step (ms)':28s}{mo * 1e3:12.1f}"
    row2 = f"{'images / s':28s}{args.batch / mo:12.1f}"
    if med:
        mt = med[best]
        row += f"{mt * 1e3:12.1f}{mo / mt:9.2f}x"
        row2 += f"{args.batch / mt:12.1f}"
    print(row)
    print(row2)
    print(f"(median of {len(t_ours)} steps each; min ours {min(t_ours) * 1e3:.1f} ms" +
          (f", min torch {min(t_torch[best]) * 1e3:.1f} ms)" if med else ")"))
    if len(med) == 2:
        print("torch: the faster of oneDNN on (the default) and off: " + ", ".join(
            f"{'on' if on else 'off'} {med[on] * 1e3:.1f} ms" for on in (True, False)) +
            f"; the column is oneDNN {'on' if best else 'off'}")

    if args.profile:
        # the profiled step is minisims.train's with an EMA kept: the comparison above has none
        net.set_dropout(None)  # the copy must not hold the generator (CuPy's cannot be copied)
        ema = EMA(net, beta=0.999)
        net.set_dropout(rng)
        clock = CudaEventClock(xp) if gpu else HostClock()
        train_step(net, edm, opt, y, rng, ema, fused)  # warm-up of the EMA's arrays
        sync()
        tprof = TorchProfile(model, topt, yt, torch, gpu, sync) if model is not None else None
        failed = []

        def torch_turn():  # torch's profiled step before each of ours, alternating
            if tprof is not None and not failed:
                try:
                    with torch_config(torch, best):  # the configuration the table compared
                        tprof.step()
                except Exception as e:  # a profiler without CUPTI must not cost us our table
                    failed.append(f"{type(e).__name__}: {e}")
        ours_prof = profile_steps(lambda: train_step(net, edm, opt, y, rng, ema, fused),
                                  args.rounds * args.steps, clock, torch_turn)
        torch_ms = None
        if failed:
            print(f"\ntorch's profiler failed: {failed[0]}")
        elif tprof is not None:  # torch's own per-operator table first: ours ends the output
            tprof.print_table()
            torch_ms = tprof.conv_ms()
        print_profile(ours_prof, args.device, mo, torch_ms)


if __name__ == "__main__":
    main()
