"""benchmarks/bench_unet.py --profile's table: every layer kind timed once, shares that add up,
and the library left exactly as it was (the profile wraps its classes for the profile only).

A tiny UNet (8 channels, 8x8, one block per level, attention at 4x4) on the CPU, two steps."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from minisims.diffusion import EDM, EDMPrecond
from minisims.nn.conv import Conv2d
from minisims.nn.unet import UNet, UNetConfig
from minisims.train import Adam, EMA

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_unet.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_unet", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_unet"] = mod  # its dataclass looks its module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("bench_unet", None)


def tiny_training(seed=0):
    """A tiny UNet, its EMA, and train_step's arguments (net, EDM, Adam, data, generator, EMA)."""
    cfg = UNetConfig(img_resolution=8, channels=8, channel_mult=(1, 2), blocks_per_level=1,
                     attn_resolutions=(4,), dropout=0.1)
    net = UNet(cfg, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    net.set_dropout(rng)
    y = np.random.default_rng(seed + 2).uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)
    edm = EDM(precond=EDMPrecond(0.5), member_ndim=0, data_ndim=3)
    opt, ema = Adam(net, lr=1e-3), EMA(net, beta=0.9)
    return net, ema, (net, edm, opt, y, rng, ema)


@pytest.mark.parametrize("fused", [False, True])
def test_profile_times_every_kind_once_and_the_shares_add_up(bench, fused, monkeypatch):
    net, _, args = tiny_training()
    # fused on the CPU: kernels/groupnorm_silu.py's numba loops; not: minisims.ops' own code
    monkeypatch.setattr(bench.ops, "FUSE_GROUP_NORM", fused)
    prof = bench.profile_steps(lambda: bench.train_step(*args, fused=fused), 2, bench.HostClock())
    rows = bench.profile_rows(prof)
    names = [r[0] for r in rows]
    # the optimiser is one row, Adam+EMA (Adam.step); every GroupNorm (with its SiLU, attention's
    # too) one row fused or not, and SiLU the embedding's
    expected = list(bench.KINDS)
    assert names == expected + [bench.OTHER, "step"]
    kinds = rows[:len(expected)]
    # this network has every kind (resampling: the nearest 2x before each up-sampling conv), and
    # each one was called and timed
    for kind in expected:
        assert prof.calls[kind] > 0 and prof.seconds[kind] > 0, kind
    # one dgrad and one wgrad kernel per conv forward: Conv2d.backward's own time adds no call
    assert prof.calls["conv dgrad (dx)"] == prof.calls["conv wgrad (dW, db)"] == \
        prof.calls["conv forward"]
    # nothing counted twice: exclusive times of calls inside the step add up to at most the step
    assert sum(prof.seconds.values()) <= prof.step_seconds
    assert rows[-2][1] >= 0  # 'other', the step less every kind
    # the shares: kinds plus 'other' are the whole step (exactly before rounding; the printed
    # table rounds each to 0.1, so 14 rows sum to 100 within 14 x 0.05)
    assert sum(r[2] for r in rows[:-1]) == pytest.approx(100.0, abs=1e-9)
    assert abs(sum(round(r[2], 1) for r in rows[:-1]) - 100.0) <= 0.05 * len(rows[:-1]) + 1e-9
    assert rows[-1][1] == pytest.approx(sum(r[1] for r in kinds) + rows[-2][1], rel=1e-12)
    table = bench.profile_table(prof)
    assert table.count("\n") == len(rows) + 1 and "| **step** |" in table


def test_profile_changes_nothing_and_takes_its_wrappers_off(bench):
    before = [vars(owner)[name] for owner, name, _, _ in bench.timed_targets()]
    runs = []
    for profiled in (False, True):
        net, ema, args = tiny_training()
        if profiled:
            bench.profile_steps(lambda: bench.train_step(*args), 2, bench.HostClock())
        else:
            for _ in range(2):
                bench.train_step(*args)
        runs.append([m.params[k].copy() for model in (net, ema.shadow)
                     for _, m, k in model.named_parameters()])
    for a, b in zip(*runs):  # the same arithmetic in the same order: equal bit for bit
        np.testing.assert_array_equal(a, b)
    after = [vars(owner)[name] for owner, name, _, _ in bench.timed_targets()]
    assert all(a is b for a, b in zip(before, after)) and len(before) == len(after) > 20
    assert Conv2d.backward is before[3]  # (the list's order: forward, dgrad, wgrad, backward)


def test_the_cuda_event_clock_measures_between_its_two_events(bench):
    """The GPU clock's plumbing, with a stand-in for cupy.cuda whose events read a host clock
    (the real events run only on a GPU: benchmarks/gpu_check.sh)."""
    import time
    from types import SimpleNamespace

    class Event:
        synced = 0

        def record(self):
            self.t = time.perf_counter()

        def synchronize(self):
            Event.synced += 1

    fake = SimpleNamespace(cuda=SimpleNamespace(
        Event=Event, get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3))  # ms, as CuPy's
    clock = bench.CudaEventClock(fake)
    _, _, args = tiny_training()
    prof = bench.profile_steps(lambda: bench.train_step(*args), 1, clock)
    assert 0 < sum(prof.seconds.values()) <= prof.step_seconds < 60
    # one synchronisation per phase, no more: every counted call, each Conv2d.backward (it adds
    # time, not a call), UNet.forward and .backward (the glue), and the step
    assert Event.synced == sum(prof.calls.values()) + prof.calls["conv dgrad (dx)"] + 2 + 1


def test_conv_option_refuses_a_version_that_cannot_run_here(bench, capsys):
    # --conv sets what "auto" resolves to for one run; a GPU-only version on the CPU is one line
    with pytest.raises(SystemExit) as e:
        bench.main(["--conv", "igemm"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--conv igemm does not run on the cpu" in err[0]


def test_profile_splits_the_conv_rows_by_shape(bench):
    """The three conv rows, filed by shape too: per shape the calls of each phase match, and the
    shapes' times add up to the rows' (Conv2d.backward's own adds, counted in the dW row with
    no call of their own, are the only time not filed by shape)."""
    net, _, args = tiny_training()
    prof = bench.profile_steps(lambda: bench.train_step(*args), 2, bench.HostClock())
    rows = bench.conv_shape_rows(prof)
    convs = [m for m in net.modules() if isinstance(m, Conv2d)]
    labels = {bench.conv_label((2, m.params["W"].shape[1], 0, 0), m.params["W"].shape, m.stride,
                               m.padding).rsplit(" ", 2)[0] for m in convs}
    assert {r[0].rsplit(" ", 2)[0] for r in rows} == labels  # every conv's kernel, stride, channels
    for kind in bench.CONV_KINDS:
        calls = sum(n for (k, _), n in prof.conv_calls.items() if k == kind)
        assert calls == prof.calls[kind] == 2 * len(convs)
    assert sum(r[1] for r in rows) == len(convs)  # calls per step
    shaped = sum(v for (k, _), v in prof.conv_seconds.items())
    rows_total = sum(prof.seconds[k] for k in bench.CONV_KINDS)
    assert 0 < shaped <= rows_total * (1 + 1e-12)
    assert rows == sorted(rows, key=lambda r: -r[3])
    table = bench.conv_shape_table(prof)
    assert table.count("\n") == len(rows) + 1 and "3x3 s2" in table  # the down-sampling conv


def test_torch_conv_times_by_shape_from_profiler_events(bench):
    """torch.profiler's events (stand-ins with its attributes) filed under the same labels as
    ours: stride and padding from the concrete inputs, forward and backward averaged per call,
    a shape without both calls left out, and a backward that skipped dx (the first layer) marked."""
    class Event:
        def __init__(self, name, shapes, args, us):
            self.name, self.input_shapes, self.concrete_inputs = name, shapes, args
            self.cpu_time_total, self.device_time_total = us, us / 10

    x, w, dy = [8, 64, 32, 32], [64, 64, 3, 3], [8, 64, 32, 32]
    x2, dy2 = [8, 64, 32, 32], [8, 64, 16, 16]
    fwd = lambda xs, ws, s, us: Event("aten::convolution", [xs, ws, [64]], [None, None, None, [s, s], [1, 1], [1, 1], False, [0, 0], 1], us)  # noqa: E731
    bwd = lambda d, xs, ws, s, us, mask=(True, True, True): Event(  # noqa: E731
        "aten::convolution_backward", [d, xs, ws], [None, None, None, [64], [s, s], [1, 1], [1, 1], False, [0, 0], 1, list(mask)], us)
    events = [fwd(x, w, 1, 1000), fwd(x, w, 1, 3000), bwd(dy, x, w, 1, 5000),
              fwd(x2, w, 2, 700), bwd(dy2, x2, w, 2, 900),
              fwd([8, 3, 32, 32], [64, 3, 3, 3], 1, 400), bwd(dy, [8, 3, 32, 32], [64, 3, 3, 3], 1, 600, (False, True, True)),
              fwd([8, 64, 8, 8], [64, 64, 1, 1], 1, 50),  # no backward: left out
              Event("aten::addmm", [[8, 4]], [], 99),
              Event("aten::convolution", [x, w, [64]], [], 10)]  # no scalars recorded: skipped
    got = bench.torch_conv_shapes(events, gpu=False)
    assert got == {"3x3 s1 64->64 32x32 p1": (2.0, 5.0), "3x3 s2 64->64 32x32 p1": (0.7, 0.9),
                   "3x3 s1 3->64 32x32 p1 (no dx)": (0.4, 0.6)}
    assert bench.torch_conv_shapes(events, gpu=True)["3x3 s1 64->64 32x32 p1"] == (0.2, 0.5)
    net, _, args = tiny_training()
    prof = bench.profile_steps(lambda: bench.train_step(*args), 1, bench.HostClock())
    label = bench.conv_shape_rows(prof)[0][0]
    table = bench.conv_shape_table(prof, {label: (1.0, 2.0)})
    row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
    assert row.endswith("x |") and "| 1.00 | 2.00 |" in row
    calls = bench.conv_shape_rows(prof)[0][1]
    assert table.splitlines()[-1].startswith("| **all of these** |") and \
        f"| {3.0 * calls:.1f} |" in table.splitlines()[-1]  # torch's total: the one shape it has


def test_between_runs_before_each_step_with_the_wrappers_off(bench):
    """PyTorch's profiled steps alternate with ours: ``between`` runs before each of our steps,
    outside the wrappers (its work is not timed into our rows)."""
    net, _, args = tiny_training()
    original = vars(Conv2d)["forward"]
    seen = []
    prof = bench.profile_steps(lambda: seen.append("step") or bench.train_step(*args), 3,
                               bench.HostClock(),
                               between=lambda: seen.append(vars(Conv2d)["forward"] is original))
    assert seen == [True, "step"] * 3 and prof.steps == 3
    assert vars(Conv2d)["forward"] is original


def test_torch_profile_accumulates_steps_and_files_its_convolutions(bench, capsys):
    """TorchProfile on a tiny UNet (where PyTorch is installed): its steps' operator table, and its
    convolutions under the labels ours use, each with a forward and a backward time."""
    torch = pytest.importorskip("torch")
    net, _, args = tiny_training()
    model = bench.torch_unet(net, torch, "cpu")
    model.train()
    topt = torch.optim.Adam(model.parameters(), lr=1e-3)
    yt = torch.as_tensor(args[3])
    tprof = bench.TorchProfile(model, topt, yt, torch, False, lambda: None)
    tprof.step()
    tprof.step()
    tprof.print_table()
    assert "(2 steps" in capsys.readouterr().out
    got = tprof.conv_ms()
    prof = bench.profile_steps(lambda: bench.train_step(*args), 1, bench.HostClock())
    ours = {r[0] for r in bench.conv_shape_rows(prof)}
    assert {label.replace(" (no dx)", "") for label in got} == ours
    assert sum(label.endswith("(no dx)") for label in got) == 1  # the first layer's
    assert all(f > 0 and b > 0 for f, b in got.values())
