"""Issue "A run folder you can trust": the defects a reliability probe found, one test each.
Every value bounded and checked before any work (one line, status 2, no folder left behind);
damaged side files and unfinished checkpoints are one line naming the file; no temporary file
survives an interrupt; errors name the command; Ctrl-C is caught before the image command's
imports. (The resume, run-independence and bad-data probes that held are kept in
tests/test_cli_reliability.py, tests/test_images.py and tests/test_train.py.)"""
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from cifar_like import make_cifar_like

from minisims import atomic, toy
from minisims.images import PRESETS
from minisims.images import cli as images
from minisims.images.pipeline import run_sims
from minisims.train import MAX_STEPS, TrainConfig


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run F and its data D."""
    data = make_cifar_like(str(tmp_path_factory.mktemp("data")), per_batch=16)
    out = str(tmp_path_factory.mktemp("run"))
    run_sims(PRESETS["tiny"], data.archive, out, md5=None, progress=False, log=lambda *a: None)
    return out, data.archive


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
        (tmp_path / "synthetic.npz").write_bytes(open(os.path.join(out, "synthetic.npz"), "rb").read())
    err = _one_line_exit(images.main, argv + ["--outdir", str(tmp_path)], capsys, 1)
    assert "base.npz is an interrupted training run" in err and "--resume" in err, err


def test_an_unfinished_aux_is_never_sampled_from(finished, tmp_path, capsys):
    out, _ = finished
    for name in ("base.npz", "synthetic.npz"):
        (tmp_path / name).write_bytes(open(os.path.join(out, name), "rb").read())
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
    sigint.during_startup (images/__main__.py) before NumPy loads."""
    code = "import sys, minisims.images; print(sorted(m for m in ('numpy', 'minisims.images.presets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
