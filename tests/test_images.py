"""SIMS on images end to end: `python -m minisims.images` on an archive of CIFAR-10's exact layout
(made from real photographs by tests/cifar_like.py), its steps one at a time, and bad input."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image
from cifar_like import make_cifar_like

from minisims.images import cli
from minisims.images.pipeline import downsample, load_model, run_sims, sample_images
from minisims.images.presets import PRESETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return make_cifar_like(str(tmp_path_factory.mktemp("data")), per_batch=16)


@pytest.fixture(scope="module")
def tiny_run(cifar, tmp_path_factory):
    """The whole tiny experiment once; the tests below read what it wrote."""
    out = str(tmp_path_factory.mktemp("run"))
    res = run_sims(PRESETS["tiny"], cifar.archive, out, md5=None, progress=False, log=lambda *a: None)
    return out, res


def run(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "minisims.images", *argv], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **(env or {})})


def test_sims_writes_the_table_heatmap_grids_and_every_number(tiny_run):
    out, res = tiny_run
    p = PRESETS["tiny"]
    for name in ("base.npz", "synthetic.npz", "results.json", "fd_table.md", "fd_heatmap.png",
                 "grid_base.png", *[f"aux_{b}.npz" for b in p.aux_budgets]):
        assert os.path.exists(os.path.join(out, name)), name
    saved = json.load(open(os.path.join(out, "results.json")))
    assert saved["label"] == "FD_randconv" and set(saved["fd"]) == {str(b) for b in p.aux_budgets}
    for b in p.aux_budgets:
        row = saved["fd"][str(b)]
        assert set(row) == {str(w) for w in p.omegas} and row["0.0"] == saved["base_fd"]
        assert all(np.isfinite(v) for v in row.values())
    table = open(os.path.join(out, "fd_table.md")).read()
    assert "paired bootstrap standard error" in table and "FID" not in table
    with np.load(os.path.join(out, "samples", "base", "samples.npz"), allow_pickle=False) as z:
        x = z["arr_0"]
    assert x.dtype == np.uint8 and x.shape == (p.n_eval, p.resolution, p.resolution, 3)
    with zipfile.ZipFile(os.path.join(out, "samples", "base", "samples.zip")) as z:  # the same, as PNGs
        names = z.namelist()
        assert len(names) == p.n_eval and all(n.endswith(".png") for n in names)
        with z.open(names[0]) as f, Image.open(f) as im:
            assert np.array_equal(np.asarray(im), x[0])


def test_the_cell_is_chosen_on_validation_seeds_and_reported_on_disjoint_test_seeds(tiny_run):
    out, res = tiny_run
    p = PRESETS["tiny"]
    v, t = res["validation"], res["test"]
    assert v["seeds"] == [0, p.n_eval - 1] and t["seeds"] == [p.n_eval, 2 * p.n_eval - 1]
    cells = {(int(b), float(w)): fd for b, row in v["fd"].items() for w, fd in row.items() if float(w) > 0}
    assert (t["chosen"]["budget"], t["chosen"]["w"]) == min(cells, key=cells.get)
    name = f"sims_B{t['chosen']['budget']}_w{t['chosen']['w']:g}"
    for folder, first in (("base", 0), ("test_base", p.n_eval), ("test_" + name, p.n_eval)):
        rec = json.load(open(os.path.join(out, "samples", folder, "provenance.json")))
        assert rec["settings"]["seeds"] == [first, first + p.n_eval - 1, p.n_eval], folder
    # the test numbers are the FDs of the test sample sets, recomputed here from the files
    from minisims.features import image_stats
    from minisims.metrics import fd_from_stats, load_stats
    ref = load_stats(os.path.join(out, "ref_stats_randconv.npz"))
    for folder, key in (("test_base", "base_fd"), ("test_" + name, "sims_fd")):
        with np.load(os.path.join(out, "samples", folder, "samples.npz")) as z:
            assert fd_from_stats(*image_stats(z["arr_0"]), *ref) == pytest.approx(t[key], rel=1e-12)
    assert t["gain"] == t["base_fd"] - t["sims_fd"]
    assert all(t[k] > 0 for k in ("base_se", "sims_se", "gain_se"))
    assert all(se > 0 for row in v["paired_se"].values() for w, se in row.items() if float(w) != 0)
    table = open(os.path.join(out, "fd_table.md")).read()
    assert f"gain {t['gain']:+.3f} ± {t['gain_se']:.3f} (paired)" in table
    # the first-order prediction at w = 0 is the base's own FD, and at w = -1 the aux's (up to
    # the rounding of clipping the rank-deficient covariances' eigenvalues at 0: n_eval < D)
    for b in p.aux_budgets:
        pred = res["first_order"][str(b)]["predicted_fd"]
        assert pred["0.0"] == pytest.approx(v["base_fd"], rel=1e-7)
        assert pred["-1.0"] == pytest.approx(v["fd"][str(b)]["-1.0"], rel=1e-7)


def test_a_second_run_reuses_every_sample_set_and_gives_the_same_numbers(cifar, tiny_run, tmp_path):
    import dataclasses
    import shutil
    from minisims.images.provenance import ProvenanceError
    out, res = tiny_run
    again = str(tmp_path / "again")
    shutil.copytree(out, again)
    quiet = dict(md5=None, progress=False, log=lambda *a: None)
    res2 = run_sims(PRESETS["tiny"], cifar.archive, again, **quiet)
    assert "sampling" not in res2["seconds"] and "train base" in res2["seconds"]
    for key in ("validation", "test", "first_order", "fd"):
        assert res2[key] == res[key], key
    # a sample set made otherwise (here without a guidance interval) is named, never reused
    p = dataclasses.replace(PRESETS["tiny"], interval=(0.1, 1.0))
    with pytest.raises(ProvenanceError, match=r"base/samples\.npz was made with interval = \(none\), "
                                              r"this run asks for \[0\.1, 1\.0\]"):
        run_sims(p, cifar.archive, again, **quiet)


def test_guidance_endpoints_on_images(tiny_run):
    """w = 0 samples the base and w = -1 the aux, bit for bit, through the shared encoder path."""
    out, _ = tiny_run
    p = PRESETS["tiny"]
    base = load_model(os.path.join(out, "base.npz"), p, group="ema")
    aux = load_model(os.path.join(out, f"aux_{p.aux_budgets[0]}.npz"), p)
    aux.train_encoder = False
    seeds = [3, 9, 4]
    assert np.array_equal(sample_images(p, base, aux, 0.0, seeds), sample_images(p, base, None, 0.0, seeds))
    assert np.array_equal(sample_images(p, base, aux, -1.0, seeds), sample_images(p, aux, None, 0.0, seeds))
    shared = sample_images(p, base, aux, 1.0, seeds)  # shared encoder pass
    p_full = __import__("dataclasses").replace(p, aux_trainable="all")
    assert np.array_equal(shared, sample_images(p_full, base, aux, 1.0, seeds))  # two full passes


def test_decoder_only_aux_kept_the_base_encoder(tiny_run):
    out, _ = tiny_run
    p = PRESETS["tiny"]
    base = load_model(os.path.join(out, "base.npz"), p, group="ema").state_dict()
    aux = load_model(os.path.join(out, f"aux_{p.aux_budgets[-1]}.npz"), p).state_dict()
    assert all(np.array_equal(base[k], aux[k]) for k in base if k.startswith("encoder."))
    assert any(not np.array_equal(base[k], aux[k]) for k in base if k.startswith("decoder."))


def test_the_steps_one_at_a_time(cifar, tmp_path):
    out = str(tmp_path / "steps")
    common = ["--preset", "tiny", "--outdir", out, "--quiet"]
    r = run("train", "--data", cifar.folder, *common)
    assert r.returncode == 0, r.stderr
    r = run("train", "--data", cifar.folder, *common)  # finished: reused, not retrained
    assert r.returncode == 0 and "reusing" in r.stdout
    assert run("synth", *common).returncode == 0
    assert run("aux", "--budget", "32", *common).returncode == 0
    r = run("sample", "--budget", "32", "--w", "0,1", "--seeds", "0-3,7", *common)
    assert r.returncode == 0, r.stderr
    pngs = sorted(os.listdir(os.path.join(out, "samples", "sims_B32_w1")))
    assert pngs == [f"{s:06d}.png" for s in (0, 1, 2, 3, 7)] + ["provenance.json", "samples.npz", "samples.zip"]
    r = run("fd", "--data", cifar.folder, "--images", os.path.join(out, "samples", "base"), *common)
    assert r.returncode == 0 and "\nFD_randconv = " in r.stdout, r.stderr


@pytest.mark.parametrize("argv, message", [
    (["sample", "--seeds", "5-1"], "runs backwards"),
    (["sample", "--seeds", "a"], "bad seeds"),
    (["sample", "--w", "1"], "needs an auxiliary model"),
    (["synth"], "base.npz does not exist"),
    (["train", "--data", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["sims", "--n-eval", "1"], "below the minimum"),
    (["fd", "--images", "x.npz", "--features", "inception", "--data", "/nonexistent"], "")])
def test_bad_input_is_one_line_and_nonzero(argv, message, tmp_path):
    r = run(*argv, "--preset", "tiny", "--outdir", str(tmp_path / "o"), "--quiet")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr


def test_unwritable_outdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = run("synth", "--outdir", str(blocker / "sub"))
    assert r.returncode == 2 and "cannot write" in r.stderr and "Traceback" not in r.stderr


def test_wrong_md5_names_the_file_and_both_digests(cifar, tmp_path):
    r = run("train", "--data", cifar.archive, "--preset", "tiny", "--outdir", str(tmp_path), "--quiet")
    assert r.returncode != 0 and "c58f30108f718f92721af3b95e74349a" in r.stderr
    assert cifar.archive in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_checkpoint_of_another_network_size_is_refused(tiny_run, tmp_path):
    out, _ = tiny_run
    r = run("aux", "--budget", "32", "--preset", "cpu", "--outdir", out, "--quiet")
    assert r.returncode != 0 and "another network" in r.stderr and "Traceback" not in r.stderr
    r = run("synth", "--preset", "cpu", "--outdir", out, "--quiet")  # S's base is checked first
    assert r.returncode != 0 and "base.npz holds another network" in r.stderr and "Traceback" not in r.stderr


def test_help_teaches():
    text = cli.build_parser().format_help()
    for word in ("sims", "train", "synth", "aux", "sample", "fd", "MINISIMS_DATA", "FD_"):
        assert word in text
    r = run("sims", "--help")
    assert r.returncode == 0 and "--aux-budgets" in r.stdout and "examples" in r.stdout


def test_downsample_averages_blocks():
    x = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    y = downsample(x, 2)
    assert y.shape == (2, 2, 2, 3) and y[0, 0, 0, 0] == np.rint(x[0, :2, :2, 0].mean())


def test_an_interrupted_train_command_resumes_to_the_same_weights(cifar, tmp_path, monkeypatch):
    """Ctrl-C in step 6 of 8 leaves the checkpoint of step 4 (64 images); without --resume the
    command refuses to overwrite it, with --resume it ends where the uninterrupted run ends.
    (All three run on one BLAS thread, as this test session does: OpenBLAS's rounding depends on
    the thread count, so bit-for-bit equality holds for one machine and one thread count.)"""
    from minisims import train as train_module
    from minisims.images.pipeline import step_train
    p = PRESETS["tiny"]
    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    one = ("--preset", "tiny", "--quiet", "--blas-threads", "1")
    assert run("train", "--data", cifar.folder, "--outdir", whole, *one).returncode == 0
    real_step, calls = train_module.Adam.step, []

    def step(self, ema=None):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(1)
        real_step(self, ema)
    monkeypatch.setattr(train_module.Adam, "step", step)
    with pytest.raises(KeyboardInterrupt):
        step_train(p, cifar.folder, cut, md5=None, progress=False, log=lambda *a: None)
    monkeypatch.undo()
    r = run("train", "--data", cifar.folder, "--outdir", cut, *one)
    assert r.returncode != 0 and "--resume" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("train", "--data", cifar.folder, "--outdir", cut, *one, "--resume")
    assert r.returncode == 0, r.stderr
    with np.load(os.path.join(whole, "base.npz")) as a, np.load(os.path.join(cut, "base.npz")) as b:
        assert sorted(a.files) == sorted(b.files)
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "__meta__")


def test_interval_and_formulation_flags(cifar, tmp_path):
    out = str(tmp_path / "vp")
    common = ["--preset", "tiny", "--outdir", out, "--quiet", "--formulation", "vp"]
    assert run("train", "--data", cifar.folder, "--base-images", "32", *common).returncode == 0
    r = run("synth", "--preset", "tiny", "--outdir", out, "--quiet")  # the preset's edm
    assert r.returncode != 0 and "--formulation vp" in r.stderr
    assert run("synth", "--n-synth", "8", *common).returncode == 0
    assert run("aux", "--budget", "16", *common).returncode == 0
    r = run("sample", "--budget", "16", "--w", "2", "--seeds", "0-1", "--interval", "0.5,5", *common)
    assert r.returncode == 0, r.stderr
    r = run("sample", "--budget", "16", "--w", "2", "--interval", "0.5", *common)
    assert r.returncode == 2 and "LO,HI" in r.stderr


def test_train_seeds_summarise_over_seeds_and_a_study_over_base_budgets(cifar, tmp_path):
    import shutil
    from minisims.images.study import run_study
    out = str(tmp_path / "seeds")
    r = run("sims", "--data", cifar.archive, "--data-md5", "none", "--preset", "tiny",
            "--outdir", out, "--quiet", "--train-seeds", "0,1")
    assert r.returncode == 0, r.stderr
    per_seed = [json.load(open(os.path.join(out, f"seed_{s}", "results.json"))) for s in (0, 1)]
    assert [x["seed"] for x in per_seed] == [0, 1]
    assert per_seed[0]["validation"]["base_fd"] != per_seed[1]["validation"]["base_fd"]
    summary = json.load(open(os.path.join(out, "summary.json")))
    p = PRESETS["tiny"]
    for b in p.aux_budgets:
        for w in p.omegas:
            fds = [x["validation"]["fd"][str(b)][str(float(w))] for x in per_seed]
            cell = summary["grid"][f"{b}/{float(w)}"]
            assert cell["mean"] == pytest.approx(np.mean(fds)) and cell["sd"] == pytest.approx(np.std(fds, ddof=1))
    gains = [x["test"]["gain"] for x in per_seed]
    assert summary["beats"] == sum(g > 0 for g in gains)
    assert summary["gain_mean"] == pytest.approx(np.mean(gains))
    text = open(os.path.join(out, "summary.md")).read()
    assert f"beats the base in {summary['beats']} of 2 training seeds" in text
    # the study: the same two seeds at base budgets 64 and 128 (128 is tiny's own, copied: reused)
    study_dir = tmp_path / "study"
    shutil.copytree(out, study_dir / "base_128", ignore=shutil.ignore_patterns("summary.*"))
    study = run_study(p, cifar.archive, str(study_dir), [64, 128], [0, 1], md5=None, progress=False,
                      log=lambda *a: None, reps=20)
    for key, cell in summary["grid"].items():  # reused samples; features summed in another
        got = study["summaries"]["128"]["grid"][key]  # BLAS thread count, so not bit for bit
        assert got["mean"] == pytest.approx(cell["mean"], rel=1e-8) and got["below_base"] == cell["below_base"]
    assert study["summaries"]["64"]["base_validation"] != summary["base_validation"]
    for name in ("study.md", "study.json", "study_heatmap.png", "base_64/summary.md"):
        assert os.path.exists(study_dir / name), name
    fo = study["first_order"]
    assert fo["cells"] == 2 * 2 * len(p.aux_budgets) * sum(w > 0 for w in p.omegas)
    assert 0 <= fo["agree"] <= fo["cells"]


@pytest.mark.parametrize("omegas, checked", [("0.5,1", False), ("-1,1", True)])
def test_a_study_without_w_0_or_w_minus_1_in_its_grid(cifar, tmp_path, omegas, checked):
    """The first-order check needs the aux alone (w = -1): a grid without it says so in the
    study, and one without w = 0 (the base, always sampled) still has its prediction there."""
    out = str(tmp_path / "study")
    r = run("study", "--data", cifar.archive, "--data-md5", "none", "--preset", "tiny", "--outdir", out,
            "--quiet", "--omegas", omegas, "--base-budgets", "64", "--train-seeds", "0")
    assert r.returncode == 0, r.stderr
    study = json.load(open(os.path.join(out, "study.json")))
    text = open(os.path.join(out, "study.md")).read()
    assert (study["first_order"]["cells"] > 0) == checked
    assert ("not checked, as no run sampled w = -1" in text) != checked


@pytest.mark.parametrize("argv, message", [
    (["sims", "--seed", "3", "--train-seeds", "0,1"], "not both"),
    (["study", "--seed", "3"], "not both"),
    (["sims", "--train-seeds", "0,0"], "lists a value twice"),
    (["study", "--base-budgets", "64,64"], "lists a value twice"),
    (["study", "--base-images", "64"], "unrecognized arguments")])
def test_seed_flags_are_checked_before_any_work(argv, message, tmp_path):
    r = run(*argv, "--preset", "tiny", "--outdir", str(tmp_path / "o"), "--quiet")
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "o")
