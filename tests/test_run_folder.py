"""Issue "A run folder you can trust": the defects a reliability probe found, one test each.
Every value bounded and checked before any work (one line, status 2, no folder left behind);
damaged side files and unfinished checkpoints are one line naming the file; no temporary file
survives an interrupt; errors name the command; Ctrl-C is caught before the image command's
imports. (The resume, run-independence and bad-data probes that held are kept in
tests/test_cli_reliability.py, tests/test_images.py and tests/test_train.py.)"""
import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from cifar_like import make_cifar_like

from minisims import atomic, toy
from minisims.images import cli as images
from minisims.images.pipeline import run_sims
from minisims.images.presets import PRESETS
from minisims.train import MAX_STEPS, TrainConfig


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run F and its data D."""
    data = make_cifar_like(str(tmp_path_factory.mktemp("data")), per_batch=16)
    out = str(tmp_path_factory.mktemp("run"))
    run_sims(PRESETS["tiny"], data.archive, out, md5=None, progress=False, log=lambda *a: None)
    return out, data.archive


def _copy(src, dst, names):
    os.makedirs(dst, exist_ok=True)
    for name in names:
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))


def _one_line_exit(main, argv, capsys, code):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == code and len(err.splitlines()) == 1, (e.value.code, err)
    return err


@pytest.mark.parametrize("argv, message", [
    (["sample", "--interval", "5,1", "--w", "1", "--budget", "32"], "0 <= LO < HI"),
    (["sample", "--interval=-1,-0.5", "--w", "1", "--budget", "32"], "0 <= LO < HI"),
    (["sims", "--aux-budgets", "64,0"], "0 is outside [1,"),
    (["sims", "--aux-budgets", "-5"], "is outside [1,"),
    (["sample", "--seeds="], "empty item"),
    (["sample", "--seeds", "0-999999999999"], "2^32 - 1"),
    (["sample", "--seeds", "0-99999999"], "more than 10,000,000 seeds"),
    (["train", "--base-images", "99999999999999"], "above the maximum"),
    (["train", "--base-images", "9999999999"], "more than 10,000,000 steps"),
    (["aux", "--budget", "1000000000000000"], "above the maximum"),
    (["synth", "--n-synth", "1000000000000"], "above the maximum"),
    (["sims", "--omegas", "0,1e308"], "largest value"),
    (["train", "--blas-threads", "99999999999999999999"], "above the maximum 1,024"),
    (["train", "--seed", "4294967296"], "above the maximum"),
])
def test_an_image_command_checks_every_value_before_any_work(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    err = _one_line_exit(images.main, argv + ["--outdir", str(out)], capsys, 2)
    assert message in err and err.startswith("python -m minisims.images"), err
    assert not out.exists()  # refused before the folder was made


@pytest.mark.parametrize("argv, message", [
    (["--base-epochs", "1000000000000"], "above the maximum"),
    (["--base-epochs", "9999999999"], "more than the 10,000,000"),
    (["--aux-epochs", "99999999"], "more than the 10,000,000"),
    (["--memory-mb", "1e308"], "largest value"),
    (["--blas-threads", "99999999999999999999"], "above the maximum"),
    (["--omega", "1e308"], "largest value"),
])
def test_the_toy_checks_every_value_before_any_work(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    err = _one_line_exit(toy.main, argv + ["--outdir", str(out)], capsys, 2)
    assert message in err, err
    assert not out.exists()


def test_a_training_budget_of_too_many_steps_is_refused_before_its_schedule_is_built():
    cfg = TrainConfig(batch_size=10, epochs=MAX_STEPS)  # 10 steps an epoch over 100 samples
    with pytest.raises(ValueError, match="steps over 100 samples"):
        cfg.schedule(100)
    assert len(TrainConfig(batch_size=10, epochs=3).schedule(100)) == 3
    with pytest.raises(ValueError, match="more than"):
        TrainConfig(batch_size=1, images=MAX_STEPS + 1)


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 truncated"], ids=["empty", "truncated"])
def test_damaged_reference_statistics_are_one_line_naming_the_file(finished, damage, tmp_path, capsys):
    out, data = finished
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "ref_stats_randconv.npz").write_bytes(damage)
    err = _one_line_exit(images.main, ["fd", "--data", data, "--data-md5", "none", "--outdir", str(folder),
                                       "--images", os.path.join(out, "samples", "base", "samples.npz")],
                         capsys, 1)
    assert "ref_stats_randconv.npz" in err and "remove it" in err, err


def _rewrite_meta(src, dst, change):
    z = dict(np.load(src))
    z["__meta__"] = np.array(json.dumps(change(json.loads(str(z["__meta__"])))))
    np.savez(dst, **z)


def test_a_checkpoint_whose_metadata_is_not_a_record_is_one_line(finished, tmp_path, capsys):
    out, _ = finished
    _rewrite_meta(os.path.join(out, "base.npz"), tmp_path / "base.npz", lambda m: [1, 2])
    err = _one_line_exit(images.main, ["synth", "--outdir", str(tmp_path)], capsys, 1)
    assert "base.npz" in err and "not a record" in err, err


@pytest.mark.parametrize("argv", [["synth"], ["sample"], ["aux", "--budget", "32"]])
def test_an_unfinished_base_is_never_sampled_from_or_fine_tuned(finished, argv, tmp_path, capsys):
    out, _ = finished
    _rewrite_meta(os.path.join(out, "base.npz"), tmp_path / "base.npz",
                  lambda m: {k: v for k, v in m.items() if k != "finished"})
    if argv[0] == "aux":  # the aux step needs S too
        _copy(out, tmp_path, ["synthetic.npz"])
    err = _one_line_exit(images.main, argv + ["--outdir", str(tmp_path)], capsys, 1)
    assert "base.npz is an interrupted training run" in err and "--resume" in err, err


def test_an_unfinished_aux_is_never_sampled_from(finished, tmp_path, capsys):
    out, _ = finished
    _copy(out, tmp_path, ["base.npz", "synthetic.npz"])
    _rewrite_meta(os.path.join(out, "aux_32.npz"), tmp_path / "aux_32.npz",
                  lambda m: {k: v for k, v in m.items() if k != "finished"})
    err = _one_line_exit(images.main, ["sample", "--budget", "32", "--w", "1", "--outdir", str(tmp_path)],
                         capsys, 1)
    assert "aux_32.npz is an interrupted training run" in err, err


def test_no_temporary_file_survives_an_interrupt_as_it_is_created(tmp_path, monkeypatch):
    """Ctrl-C landing just as os.open returns (the file exists, 0 bytes): it is removed."""
    real_open = os.open

    def open_then_interrupt(path, *args):
        real_open(path, *args)
        raise KeyboardInterrupt
    monkeypatch.setattr(atomic.os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_json(str(tmp_path / "r.json"), {"a": 1})
    assert os.listdir(tmp_path) == []


def test_an_os_error_in_an_image_command_names_the_command(monkeypatch, capsys):
    def full_disk(argv=None):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/base.npz")
    monkeypatch.setattr(images, "main", full_disk)
    with pytest.raises(SystemExit) as e:
        images.entry([])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1
    assert err == "python -m minisims.images: error: No space left on device: runs/x/base.npz", err


def test_the_image_command_loads_nothing_before_its_ctrl_c_handler():
    """images/__init__.py imports no module of its own: python -m minisims.images reaches
    cli_util.during_startup (images/__main__.py) before NumPy loads."""
    code = "import sys, minisims.images; print(sorted(m for m in ('numpy', 'minisims.images.presets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- one writer per folder

def test_two_commands_on_one_folder_cannot_interleave(finished, tmp_path):
    """Two trainings started together into one folder (seeds 0 and 1): one runs, the other is
    refused at once in one line naming the owner; the finished base is the winner's."""
    _, data = finished
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "minisims.images", "train", "--data", data, "--data-md5", "none",
           "--outdir", str(out), "--quiet", "--base-images", "512"]
    procs = [subprocess.Popen(cmd + ["--seed", str(s)], stderr=subprocess.PIPE, text=True) for s in (0, 1)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], (codes, errs)
    loser = errs[codes.index(1)].strip()
    assert len(loser.splitlines()) == 1 and "is in use by PID" in loser, loser
    winner_seed = codes.index(0)
    meta = json.loads(str(np.load(out / "base.npz")["__meta__"]))
    assert meta["seed"] == winner_seed and meta["finished"]
    assert not (out / ".minisims.lock").exists()  # released at the end


def test_a_lock_held_by_a_running_process_refuses_and_a_dead_ones_is_taken_over(finished, tmp_path, capsys):
    import socket
    out, _ = finished
    folder = tmp_path / "run"
    _copy(out, folder, ["base.npz"])
    lock = folder / ".minisims.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": "x"}))
    err = _one_line_exit(images.main, ["synth", "--outdir", str(folder), "--quiet"], capsys, 1)
    assert f"in use by PID {os.getpid()}" in err and str(lock) in err, err
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    lock.write_text(json.dumps({"pid": int(gone), "host": socket.gethostname(), "command": "x"}))
    assert images.main(["synth", "--outdir", str(folder), "--quiet"]) == 0
    assert f"taking over {lock}: PID {gone}" in capsys.readouterr().err
    assert not lock.exists() and (folder / "synthetic.npz").exists()


# ---------------------------------------------------------------- provenance: nothing stale is reused


@pytest.fixture(scope="module")
def other_data(tmp_path_factory):
    return make_cifar_like(str(tmp_path_factory.mktemp("other")), per_batch=16, seed=1).archive


def test_every_file_records_what_made_it(finished):
    out, _ = finished
    base = json.loads(str(np.load(os.path.join(out, "base.npz"))["__meta__"]))["provenance"]
    assert base["made_by"] == "train" and base["settings"]["seed"] == 0
    assert base["settings"]["base_images"] == PRESETS["tiny"].base_images and set(base["inputs"]) == {"data"}
    assert {"minisims", "numpy", "array"} <= set(base["versions"]) and len(base["digest"]) == 64
    S = json.loads(str(np.load(os.path.join(out, "synthetic.npz"))["provenance"]))
    assert S["made_by"] == "synth" and S["inputs"] == {"base": base["digest"]}
    aux = json.loads(str(np.load(os.path.join(out, "aux_32.npz"))["__meta__"]))["provenance"]
    assert aux["inputs"] == {"base": base["digest"], "S": S["digest"]} and aux["settings"]["budget"] == 32
    stats = json.loads(str(np.load(os.path.join(out, "ref_stats_randconv.npz"))["provenance"]))
    assert stats["inputs"] == base["inputs"]  # the same real images
    sample = json.load(open(os.path.join(out, "samples", "sims_B32_w1", "provenance.json")))
    assert sample["inputs"] == {"base": base["digest"], "aux": aux["digest"]} and sample["settings"]["w"] == 1.0
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["inputs"]["base"] == base["digest"] and results["inputs"]["aux_32"] == aux["digest"]
    assert results["inputs"]["data"] == base["inputs"]["data"] and "numpy" in results["versions"]


@pytest.mark.parametrize("argv, message", [
    (["sims", "--base-images", "256"], "base.npz was made with base_images = 128, this run asks for 256"),
    (["train", "--seed", "7"], "base.npz was made with seed = 0, this run asks for 7"),
    (["synth", "--n-synth", "64"], "synthetic.npz was made with n_synth = 32, this run asks for 64"),
    (["sims", "--num-steps", "4"], "synthetic.npz was made with num_steps = 3, this run asks for 4"),
])
def test_a_finished_file_made_otherwise_is_not_reused(finished, argv, message, tmp_path, capsys):
    out, data = finished
    run = tmp_path / "F"
    _copy(out, run, ["base.npz", "synthetic.npz", "aux_32.npz", "aux_64.npz", "ref_stats_randconv.npz"])
    data_args = ["--data", data, "--data-md5", "none"] if argv[0] in ("sims", "train") else []
    err = _one_line_exit(images.main, argv + data_args + ["--outdir", str(run), "--quiet"], capsys, 1)
    assert message in err and "to start afresh" in err, err


def test_fd_against_other_data_does_not_reuse_the_reference_statistics(finished, other_data, tmp_path, capsys):
    out, _ = finished
    run = tmp_path / "F"
    _copy(out, run, ["ref_stats_randconv.npz"])
    err = _one_line_exit(images.main, ["fd", "--data", other_data, "--data-md5", "none", "--outdir", str(run),
                                       "--images", os.path.join(out, "samples", "base", "samples.npz")],
                         capsys, 1)
    assert "ref_stats_randconv.npz was made from another data than this run's" in err, err


@pytest.mark.parametrize("change", ["seed", "data", "formulation"])
def test_resume_continues_only_the_run_it_would_have_been(finished, other_data, change, tmp_path, capsys):
    out, data = finished
    run = tmp_path / "I"
    run.mkdir()
    _rewrite_meta(os.path.join(out, "base.npz"), run / "base.npz",   # an interrupted base, seed 0
                  lambda m: {k: v for k, v in m.items() if k != "finished"})
    argv = ["train", "--resume", "--outdir", str(run), "--quiet", "--data-md5", "none"]
    argv += {"seed": ["--data", data, "--seed", "1"], "data": ["--data", other_data],
             "formulation": ["--data", data, "--formulation", "vp"]}[change]
    err = _one_line_exit(images.main, argv, capsys, 1)
    expected = {"seed": "base.npz was made with seed = 0, this run asks for 1",
                "data": "base.npz was made from another data",
                "formulation": "base.npz was trained with the edm formulation, not vp"}[change]
    assert expected in err, err


def test_an_aux_of_another_synthetic_set_is_refused(finished, tmp_path, capsys):
    """S made from another base (here: S's record names another base) is not fine-tuned on."""
    out, _ = finished
    run = tmp_path / "F"
    _copy(out, run, ["base.npz"])
    z = dict(np.load(os.path.join(out, "synthetic.npz")))
    rec = json.loads(str(z["provenance"]))
    rec["inputs"]["base"] = "0" * 64
    z["provenance"] = np.array(json.dumps(rec))
    np.savez(run / "synthetic.npz", **z)
    err = _one_line_exit(images.main, ["synth", "--outdir", str(run), "--quiet"], capsys, 1)
    assert "synthetic.npz was made from another base than this run's" in err, err


def test_a_file_without_a_record_is_not_reused(finished, tmp_path, capsys):
    out, _ = finished
    run = tmp_path / "F"
    _copy(out, run, ["base.npz"])
    np.savez(run / "synthetic.npz", arr_0=np.load(os.path.join(out, "synthetic.npz"))["arr_0"])
    err = _one_line_exit(images.main, ["synth", "--outdir", str(run), "--quiet"], capsys, 1)
    assert "synthetic.npz has no provenance record" in err, err


def test_fd_of_images_at_another_resolution_than_the_presets_is_refused(finished, tmp_path, capsys):
    out, data = finished
    big = tmp_path / "big.npz"
    np.savez(big, arr_0=np.zeros((4, 32, 32, 3), np.uint8))
    err = _one_line_exit(images.main, ["fd", "--data", data, "--data-md5", "none", "--outdir", out,
                                       "--images", str(big)], capsys, 1)
    assert "holds 32x32 images; preset 'tiny' measures 8x8" in err, err


# ---------------------------------------------------------------- the probes that held, kept

@pytest.fixture(scope="module")
def uninterrupted(finished, tmp_path_factory):
    _, data = finished
    out = tmp_path_factory.mktemp("whole")
    subprocess.run([sys.executable, "-m", "minisims.images", "train", "--data", data, "--data-md5", "none",
                    "--base-images", "1024", "--outdir", str(out), "--quiet"], check=True, capture_output=True)
    return dict(np.load(out / "base.npz"))


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_a_train_command_stopped_after_a_save_resumes_bit_for_bit(finished, uninterrupted, sig, tmp_path):
    """Stopped by a signal once its first checkpoint is on disk (SIGKILL and SIGTERM end the
    process where it stands and leave its lock behind: the resumed command takes it over; Ctrl-C
    releases it), `train --resume` ends where the uninterrupted run ends: every array of base.npz
    (weights, EMA, Adam's moments) bit for bit."""
    import signal
    import time
    _, data = finished
    out = tmp_path / "I"
    cmd = [sys.executable, "-m", "minisims.images", "train", "--data", data, "--data-md5", "none",
           "--base-images", "1024", "--outdir", str(out), "--quiet"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "base.npz").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    assert p.poll() is None, "finished before it could be stopped"
    p.send_signal(getattr(signal, sig))
    p.communicate(timeout=60)
    meta = json.loads(str(np.load(out / "base.npz")["__meta__"]))
    assert not meta.get("finished")  # stopped mid-run
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert ("taking over" in r.stderr) == (sig != "SIGINT"), r.stderr
    assert not [f for f in os.listdir(out) if f.startswith(".minisims.lock") or f.startswith(".tmp-")]
    resumed = dict(np.load(out / "base.npz"))
    assert set(resumed) == set(uninterrupted)
    for k, v in uninterrupted.items():
        if k != "__meta__":
            assert resumed[k].tobytes() == v.tobytes(), k


@pytest.mark.parametrize("argv", [["synth", "--n-synth", "9000000"], ["sample", "--seeds", "0-9999999"],
                                  ["sims", "--n-eval", "5000000"]])
def test_an_image_set_that_cannot_fit_in_memory_is_refused_before_any_work(argv, tmp_path, capsys, monkeypatch):
    from minisims import cli_util
    monkeypatch.setattr(cli_util, "physical_memory", lambda: 16 * 2 ** 30)  # a 16 GiB machine
    out = tmp_path / "out"
    err = _one_line_exit(images.main, argv + ["--preset", "gpu", "--outdir", str(out)], capsys, 2)
    assert "GiB at once, more than this machine's 16 GiB" in err and not out.exists(), err
