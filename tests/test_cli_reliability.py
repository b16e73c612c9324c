"""The command lines fail early, in one line, and keep what finished (issue 12, items 1, 2, 4, 6, 9).

Each probe of the issue is one test here, at tiny sizes: settings that would crash the end of a run
are refused before the first step; a run whose training or samples diverge is reported and left
out, not printed as a number; Ctrl-C ends in "interrupted" and status 130 within seconds; a closed
pipe, a corrupt --replot file and a full disk end in one line, never a traceback.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from minisims import backend, toy
from minisims.figures import autoguidance, figure4, figure5, figure6

ROOT = Path(__file__).parent.parent
TINY_TOY = ["--runs", "2", "--base-epochs", "3", "--aux-epochs", "2", "--n-real", "60",
            "--n-synth", "50", "--n-eval", "80", "--quiet", "--no-plot"]


def run(args, timeout=120, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, **kw)


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- 1. settings checked before work

@pytest.mark.parametrize("module,argv,message", [
    (figure4, ["--preset", "tiny", "--omega", "0"], "--omega needs a SIMS w other than 0"),
    (figure5, ["--preset", "tiny", "--omega", "0"], "--omega needs a SIMS w other than 0"),
    (figure4, ["--preset", "tiny", "--n-synth", "2.7"], "'2.7' is not an integer"),     # item 9
    (figure5, ["--preset", "tiny", "--pollution", "2.7"], "'2.7' is not an integer"),
])
def test_a_setting_that_would_fail_at_the_end_is_refused_at_once(module, argv, message, tmp_path, capsys):
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        module.main(argv + ["--outdir", str(tmp_path / "out")])
    assert e.value.code == 2 and time.perf_counter() - t0 < 2
    assert message in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def figure4_run(tmp_path_factory):
    """One finished tiny figure 4 run (2 runs, 2 generations), shared by the --replot probes."""
    out = tmp_path_factory.mktemp("figure4")
    assert figure4.main(["--preset", "tiny", "--generations", "2", "--n-synth", "50", "--outdir",
                         str(out), "--quiet"]) == 0
    return out


def test_replot_of_a_file_without_sims_cells_still_writes_the_table(figure4_run, tmp_path, capsys):
    from minisims.loops.results import load_results, save_results
    cfg, results, meta = load_results(str(figure4_run / "figure4_loops.npz"))
    save_results(str(tmp_path / "figure4_loops.npz"), cfg,
                 {c: r for c, r in results.items() if c.method == "standard"}, meta)
    shutil.copy(figure4_run / "figure4_gen1.npz", tmp_path)
    assert figure4.main(["--replot", str(tmp_path)]) == 0
    assert "no SIMS cell" in (tmp_path / "figure4_table.md").read_text()
    capsys.readouterr()


def test_figure4_json_is_valid_json_with_one_run(tmp_path, capsys):           # item 9: NaN -> null
    assert figure4.main(["--preset", "tiny", "--runs", "1", "--generations", "2", "--n-synth", "50",
                         "--outdir", str(tmp_path), "--quiet"]) == 0
    text = (tmp_path / "figure4.json").read_text()
    d = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in figure4.json"))
    assert d["tables"]["w2"]["50"]["sims_min_se"] is None
    capsys.readouterr()


# ---------------------------------------------------------------- 6. corrupt --replot input

def _truncated(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flipped(p):
    b = bytearray(p.read_bytes())
    b[len(b) // 3] ^= 0xFF
    p.write_bytes(bytes(b))


def _foreign(p):  # a valid npz, but not figure 4's
    np.savez(p, x=np.zeros(3))


def _directory(p):  # opening it raises IsADirectoryError (an OSError, like PermissionError)
    p.unlink()
    p.mkdir()


@pytest.mark.parametrize("damage", [lambda p: p.write_bytes(b""), lambda p: p.write_bytes(b"garbage" * 50),
                                    _truncated, _flipped, _foreign, _directory],
                         ids=["empty", "garbage", "truncated", "flipped-byte", "foreign", "directory"])
@pytest.mark.parametrize("name", ["figure4_loops.npz", "figure4_gen1.npz"])
def test_corrupt_replot_input_is_one_line_naming_the_file(figure4_run, tmp_path, name, damage):
    for f in ("figure4_loops.npz", "figure4_gen1.npz"):
        shutil.copy(figure4_run / f, tmp_path)
    damage(tmp_path / name)
    p = run(["toy/figure4.py", "--replot", str(tmp_path)], timeout=60)
    assert p.returncode == 1
    assert name in one_line(p.stderr)


def test_corrupt_figure5_npz_is_one_line(tmp_path):
    (tmp_path / "figure5.npz").write_bytes(b"PK\x03\x04 not really a zip")
    p = run(["toy/figure5.py", "--replot", str(tmp_path)], timeout=60)
    assert p.returncode == 1 and "figure5.npz" in one_line(p.stderr)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_replot_folder_is_one_line(figure4_run, tmp_path):
    for f in ("figure4_loops.npz", "figure4_gen1.npz"):
        shutil.copy(figure4_run / f, tmp_path)
    (tmp_path / "figure4_loops.npz").chmod(0)
    try:
        p = run(["toy/figure4.py", "--replot", str(tmp_path)], timeout=60)
    finally:
        (tmp_path / "figure4_loops.npz").chmod(0o644)
    assert p.returncode != 0 and "figure4_loops.npz" in one_line(p.stderr)


def test_full_disk_is_one_line(tmp_path):
    code = ("import errno, os, sys\n"
            "def full(fd): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
            "os.fsync = full\n"
            "from minisims.toy import entry\n"
            f"entry({TINY_TOY + ['--outdir', str(tmp_path)]!r})\n")
    p = run(["-c", code])
    assert p.returncode == 1 and "No space left on device" in one_line(p.stderr)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


# ---------------------------------------------------------------- 2. NaN in the toy

def test_toy_runs_whose_training_diverged_are_reported_and_left_out(tmp_path, monkeypatch, capsys):
    real_fit = toy.fit_sims

    def fit(*a, **k):  # run 2's base "diverged" at step 3 (the library's API: (R,) 1-based, 0 never)
        f = real_fit(*a, **k)
        return types.SimpleNamespace(base=f.base, aux=f.aux, base_diverged=np.array([0, 3]),
                                     aux_diverged=np.array([0, 0]))

    monkeypatch.setattr(toy, "fit_sims", fit)
    assert toy.main(TINY_TOY + ["--omega", "2", "--outdir", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert err.strip() == ("run 2: the base model's loss became NaN/inf at step 3 — learning rate "
                           "too high? (--lr 0.001); left out of the means")
    assert "(1 of 2 runs)" in out and "runs 2 diverged in training" in out
    res = json.loads((tmp_path / "toy_results.json").read_text())
    assert res["diverged"]["base_step"] == [0, 3]
    assert res["distance_per_run"]["2.0"][1] is None and res["distance_per_run"]["2.0"][0] > 0


def test_toy_with_a_huge_learning_rate_exits_1_with_results(tmp_path):
    p = run(["-m", "minisims.toy", *TINY_TOY, "--lr", "1e6", "--outdir", str(tmp_path)])
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "learning rate too high" in p.stderr and "Warning" not in p.stderr
    res = json.loads((tmp_path / "toy_results.json").read_text())
    assert any(res["diverged"]["base_step"]) or any(res["diverged"]["aux_step"])


@pytest.mark.parametrize("w", ["1000", "3000"])
def test_toy_w_whose_samples_diverge_is_reported_not_printed(tmp_path, w):
    p = run(["-m", "minisims.toy", *TINY_TOY, "--omega", w, "--outdir", str(tmp_path)])
    assert p.returncode == 1
    assert one_line(p.stderr).startswith(f"w = {w}: 2/2 runs' samples diverged")
    row = [l for l in p.stdout.splitlines() if l.split()[:1] == [w]][0]
    assert row.split()[1] == "diverged"
    res = json.loads((tmp_path / "toy_results.json").read_text())
    assert res["distance_per_run"][f"{float(w)}"] == [None, None]


# ---------------------------------------------------------------- 4. interrupts and pipes

def _interrupt_when(args, started, tmp_path, before_signal=None):
    """Start ``args``, wait until ``started()`` (work has begun), call ``before_signal(process)``
    if given, send one SIGINT; returns (returncode, stderr, seconds from the signal to the exit)."""
    p = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not started() and time.time() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert p.poll() is None, "finished before it could be interrupted"
        time.sleep(1.0)
        if before_signal is not None:
            before_signal(p)
        t0 = time.perf_counter()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
        return p.returncode, err, time.perf_counter() - t0
    finally:
        if p.poll() is None:
            p.kill()


@pytest.mark.parametrize("pool", [["--workers", "2"], ["--processes", "2"]], ids=["threads", "processes"])
def test_one_ctrl_c_stops_figure4_with_its_pool_at_once(tmp_path, pool):
    out = tmp_path / "out"
    rc, err, seconds = _interrupt_when(
        ["toy/figure4.py", "--preset", "tiny", "--generations", "400", "--outdir", str(out),
         "--quiet", *pool], lambda: (out / "figure4_gen1.npz").exists(), tmp_path)
    assert rc == 130 and one_line(err) == "interrupted" and seconds < 5
    assert (out / "figure4_gen1.npz").exists()  # what finished is kept
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="needs dask[distributed]")
def test_one_ctrl_c_stops_figure4_on_a_local_dask_cluster_and_its_workers(tmp_path):
    import psutil  # a dependency of distributed
    out, workers = tmp_path / "out", []
    rc, err, seconds = _interrupt_when(
        ["toy/figure4.py", "--preset", "tiny", "--generations", "400", "--outdir", str(out),
         "--quiet", "--dask-local", "2"], lambda: (out / "figure4_gen1.npz").exists(), tmp_path,
        before_signal=lambda p: workers.extend(psutil.Process(p.pid).children(recursive=True)))
    assert rc == 130 and one_line(err) == "interrupted" and seconds < 5
    assert workers and not psutil.wait_procs(workers, timeout=5)[1]  # no worker process left running
    assert (out / "figure4_gen1.npz").exists()  # what finished is kept


@pytest.mark.parametrize("script", ["figure5", "figure6", "autoguidance"])
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, script):
    out = tmp_path / "out"
    rc, err, seconds = _interrupt_when([f"toy/{script}.py", "--preset", "cpu", "--outdir", str(out),
                                        "--quiet"], out.exists, tmp_path)
    assert rc == 130 and one_line(err) == "interrupted" and seconds < 5


def test_ctrl_c_with_a_progress_bar_ends_the_bar_then_says_interrupted(tmp_path):
    out = tmp_path / "out"
    rc, err, _ = _interrupt_when(["toy/figure6.py", "--preset", "cpu", "--outdir", str(out)],
                                 out.exists, tmp_path)
    assert rc == 130 and "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted"


ENTRY_FILES = ["minisims/toy.py", "minisims/figures/figure4.py", "minisims/figures/figure5.py",
               "minisims/figures/figure6.py", "minisims/figures/autoguidance.py",
               "minisims/images/__main__.py", "toy/figure4.py", "toy/figure5.py", "toy/figure6.py",
               "toy/autoguidance.py"]


@pytest.mark.parametrize("path", ENTRY_FILES)
def test_every_command_catches_ctrl_c_before_its_imports(path):
    """The first thing a command does (after `from __future__`) is minisims.cli_util.during_startup,
    so a Ctrl-C while NumPy and the rest load is one line too; importing the module as a library
    changes no signal handler (it sits under `if __name__ == "__main__"` there)."""
    lines = [ln.strip() for ln in (ROOT / path).read_text().splitlines()]
    at = next(i for i, ln in enumerate(lines) if ln.startswith("during_startup()"))
    before = [ln for ln in lines[:at] if ln.startswith(("import ", "from "))]
    assert before in (["from minisims.cli_util import during_startup"],
                      ["from __future__ import annotations",
                       "from minisims.cli_util import during_startup"]), before


def test_ctrl_c_while_a_command_is_still_importing_is_one_line(tmp_path):
    code = ("from minisims.cli_util import during_startup; during_startup(); import sys; "
            "print('ready', flush=True); "
            "import time; time.sleep(30)")  # stands for the imports: Ctrl-C lands in the handler
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130 and one_line(err) == "interrupted"


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_an_early_ctrl_c_in_the_toy_is_one_line(delay, tmp_path):
    # 100000 base epochs: a run of tens of seconds, so the signal always lands inside the command
    # (in the imports or early in main, depending on the machine), never after a run that ended
    argv = [*TINY_TOY, "--base-epochs", "100000", "--outdir", str(tmp_path / "out")]
    p = subprocess.Popen([sys.executable, "-m", "minisims.toy", *argv],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)  # a lost interrupt would run on: TimeoutExpired
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130 and one_line(err) == "interrupted", (p.returncode, err)


@pytest.mark.parametrize("reader", ["head -1", "true"])
def test_output_into_a_closed_pipe_raises_nothing(tmp_path, reader):
    cmd = (f"{sys.executable} -m minisims.toy {' '.join(TINY_TOY)} --outdir {tmp_path} "
           f"2>{tmp_path}/err | {reader}")
    subprocess.run(cmd, shell=True, cwd=ROOT, timeout=120, check=True, capture_output=True)
    err = (tmp_path / "err").read_text()
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err
    assert (tmp_path / "toy_results.json").exists()  # written before the printing


# ---------------------------------------------------------------- 9. device and BLAS options alike

COMMANDS = [(toy, []), (figure4, ["--preset", "tiny"]), (figure5, ["--preset", "tiny"]),
            (figure6, ["--preset", "tiny"]), (autoguidance, ["--preset", "tiny"])]


@pytest.mark.parametrize("module,argv", COMMANDS, ids=lambda v: getattr(v, "__name__", ""))
def test_blas_threads_0_is_accepted_by_every_command(module, argv):
    assert module.build_parser().parse_args(argv + ["--blas-threads", "0"]).blas_threads == 0


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is usable here")
@pytest.mark.parametrize("module,argv", COMMANDS, ids=lambda v: getattr(v, "__name__", ""))
def test_gpu_without_a_gpu_is_exit_2_and_leaves_no_folder(module, argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        module.main(argv + ["--device", "gpu", "--outdir", str(tmp_path / "out")])
    assert e.value.code == 2 and "GPU" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
    backend.use_device("cpu")


def test_many_commands_can_probe_one_output_folder_at_once(tmp_path):
    """The write probe has a unique name: eight threads checking one folder never collide."""
    from concurrent.futures import ThreadPoolExecutor

    from minisims.cli_util import writable_dir
    folder = str(tmp_path / "shared")
    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda _: writable_dir(folder), range(64)))
    assert results == [folder] * 64 and os.listdir(folder) == []


def test_a_size_that_cannot_fit_is_refused_before_any_work(tmp_path):   # item 5
    out = tmp_path / "never"
    r = run(["-m", "minisims.toy", "--runs", "1000000000", "--outdir", str(out)], timeout=60)
    assert r.returncode == 2 and "use at most about" in one_line(r.stderr) and not out.exists()


def test_a_ctrl_c_inside_a_c_callback_ends_the_run_in_one_line(tmp_path):
    """A KeyboardInterrupt that Python cannot raise (it lands in a ctypes callback, as in numba's
    compiler cache) goes to sys.unraisablehook: run_command's ends the run as a Ctrl-C."""
    script = tmp_path / "cb.py"
    script.write_text(
        "import ctypes, signal, sys\n"
        "from minisims.cli_util import run_command\n"
        "def main(argv):\n"
        "    def callback():\n"
        "        raise KeyboardInterrupt\n"
        "    ctypes.CFUNCTYPE(None)(callback)()\n"
        "    print('carried on')\n"
        "    return 0\n"
        "run_command(main, [], prog='cb')\n")
    p = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 130 and p.stderr.strip() == "interrupted" and "carried on" not in p.stdout


# ---------------------------------------------------------------- the GPU scripts without a GPU

@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is here: the scripts would run")
@pytest.mark.parametrize("script", [["toy/gpu_check.py"], ["benchmarks/profile_toy_gpu.py"],
                                    ["benchmarks/bench_streams.py", "--device", "gpu"],
                                    ["benchmarks/bench_mlp_gpu.py"]])
def test_a_gpu_script_without_a_gpu_says_why_in_one_line(script, tmp_path):
    """benchmarks/gpu_check.sh runs these on a GPU machine; where CuPy or the GPU is missing each
    ends with status 2 and one error line under its usage, never a traceback."""
    p = subprocess.run([sys.executable, *script], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert "error:" in last and ("CuPy" in last or "GPU" in last), last
