"""The when-SIMS-helps study (issue 11) at its tiny preset: files, shapes, the ratio's definition
against the raw per-run distances, w = 0 equal to the base bit for bit, one-line errors before any
work, --replot, and the first-order algebra on constructed moments."""
import dataclasses
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from minisims.cli_util import override
from minisims.figures import when_sims_helps as wsh
from minisims.metrics import gaussian_w2_from_moments

TOY = pathlib.Path(__file__).parent.parent / "toy"
FILES = ("when_sims_helps.png", "when_sims_helps_curves.png", "when_sims_helps_cov.png",
         "when_sims_helps.npz", "when_sims_helps.md")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny run (3 runs in chunks of 2 and 1), shared by the tests that read it."""
    out = tmp_path_factory.mktemp("wsh")
    assert wsh.main(["--preset", "tiny", "--outdir", str(out), "--quiet"]) == 0
    with np.load(out / "when_sims_helps.npz") as z:
        r = {k: z[k] for k in z.files}
    return out, r


def test_tiny_writes_every_file_with_the_grid_shapes(tiny):
    out, r = tiny
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    s = wsh.PRESETS["tiny"]
    R, F, Bb, Ba, W = s.runs, len(s.formulations), len(s.base_epochs), len(s.aux_epochs), len(s.omega) + 1
    assert list(r["omega"]) == sorted(set(s.omega) | {0.0})  # 0 added
    assert r["w2_base"].shape == (R, F, Bb) and r["w2_aux"].shape == (R, F, Bb, Ba)
    assert r["w2"].shape == (R, F, Bb, Ba, W) and r["cov"].shape == (R, F, Bb, Ba, W, 2, 2)
    assert r["mu_aux"].shape == (R, F, Bb, Ba, 2) and r["cov_base"].shape == (R, F, Bb, 2, 2)
    assert np.isfinite(r["w2"]).all() and (r["base_diverged"] == 0).all()
    # each stored distance is the closed-form W2 of the stored moments
    assert np.allclose(r["w2"], gaussian_w2_from_moments(r["mu"], r["cov"], r["mean"], r["cov_r"]), rtol=1e-12)
    # runs differ: the chunks (2 + 1 runs) got their own streams and their own data
    assert len(np.unique(r["w2_base"][:, 0, 0])) == R


def test_a_run_depends_on_its_index_alone_not_the_chunks(tiny, tmp_path):
    """Per-run streams: 2 runs in chunks of 1 equal the first 2 runs of the fixture (chunks 2 + 1),
    here for its first formulation (ddpm) alone."""
    _, r = tiny
    assert wsh.main(["--preset", "tiny", "--runs", "2", "--chunk-size", "1", "--formulations", "ddpm",
                     "--outdir", str(tmp_path), "--quiet"]) == 0
    with np.load(tmp_path / "when_sims_helps.npz") as z:
        assert np.array_equal(z["mu_data"], r["mu_data"][:2])
        for k in ("cov_base", "mu_aux", "cov_aux", "mu", "cov", "w2"):
            assert np.array_equal(z[k], r[k][:2, :1]), k


def test_w0_row_is_the_base_exactly(tiny):
    _, r = tiny
    k0 = list(r["omega"]).index(0.0)
    Ba = r["mu"].shape[3]
    for j in range(Ba):  # every aux budget, sampled at w = 0 with its aux, gives the base's samples
        assert np.array_equal(r["mu"][:, :, :, j, k0], r["mu_base"])
        assert np.array_equal(r["cov"][:, :, :, j, k0], r["cov_base"])
        assert np.array_equal(r["w2"][:, :, :, j, k0], r["w2_base"])
    # and guidance changes the samples (w > 0 differs from the base)
    assert not np.array_equal(r["cov"][:, :, :, :, k0 + 1], r["cov"][:, :, :, :, k0])


def test_ratio_is_best_w_mean_over_base_mean_from_the_raw_distances(tiny):
    out, r = tiny
    imp = wsh.improvement(r)
    table = (out / "when_sims_helps.md").read_text()
    omega = list(r["omega"])
    for f, form in enumerate(r["formulations"]):
        for i, b in enumerate(r["base_epochs"]):
            base = np.mean(r["w2_base"][:, f, i])
            cells = []
            for j in range(len(r["aux_epochs"])):
                per_w = {w: np.mean(r["w2"][:, f, i, j, k]) for k, w in enumerate(omega) if w > 0}
                w_best = min(per_w, key=per_w.get)
                ratio = per_w[w_best] / base
                assert imp["ratio"][f, i, j] == pytest.approx(ratio, rel=1e-12)
                assert imp["best_w"][f, i, j] == w_best
                cells.append(f"{ratio:.3f} (w {w_best:g}")
            row = [ln for ln in table.splitlines() if ln.startswith(f"| {form} | {b} | ")][0]
            assert all(c in row for c in cells), (row, cells)


def test_held_out_ratio_chooses_w_on_odd_runs_and_measures_it_on_even_runs(tiny):
    """Runs 1, 3, 5, ... (indices 0, 2, ...) choose w; runs 2, 4, ... report its ratio."""
    out, r = tiny
    imp = wsh.improvement(r)
    R = r["w2"].shape[0]
    choose, report = list(range(0, R, 2)), list(range(1, R, 2))
    omega = list(r["omega"])
    for f, i, j, form, b, a in wsh.grid_cells(r):
        on = {w: np.mean(r["w2"][choose, f, i, j, k]) for k, w in enumerate(omega) if w > 0}
        w_held = min(on, key=on.get)
        k = omega.index(w_held)
        want = np.mean(r["w2"][report, f, i, j, k]) / np.mean(r["w2_base"][report, f, i])
        assert imp["held_out_w"][f, i, j] == w_held
        assert imp["held_out_ratio"][f, i, j] == pytest.approx(want, rel=1e-12)
    held = (out / "when_sims_helps.md").read_text().split("Held out:")[1]
    assert f"{imp['held_out_ratio'][0, 0, 0]:.3f} (w {imp['held_out_w'][0, 0, 0]:g})" in held


@pytest.mark.parametrize("argv,message", [
    (["--omega=-1,0"], "needs a w > 0"),
    (["--base-epochs", "0,100"], "--base-epochs must be >= 1"),
    (["--aux-epochs", "-1"], "--aux-epochs must be >= 0"),
    (["--formulations", "ddpm,dpm"], "dpm: use one or more of"),
    (["--runs", "0"], "below the minimum"),
    (["--n-synth", "1"], "below the minimum"),
    (["--n-real", "2.5"], "not an integer"),
    (["--omega", "nan"], "not a finite number"),
    (["--replot", "/nonexistent"], "no when_sims_helps.npz"),
])
def test_bad_input_is_one_line_exit_2_before_any_work(argv, message, capsys, tmp_path):
    outdir = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        wsh.main(["--preset", "tiny"] + argv + ["--outdir", str(outdir)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not outdir.exists()  # refused before the output folder was made


def test_replot_rebuilds_and_a_corrupt_file_is_one_line(tiny, tmp_path, capsys):
    out, _ = tiny
    table = (out / "when_sims_helps.md").read_text()
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "when_sims_helps.npz").write_bytes((out / "when_sims_helps.npz").read_bytes())
    assert wsh.main(["--replot", str(copy)]) == 0
    assert (copy / "when_sims_helps.md").read_text() == table
    for name in FILES:
        assert (copy / name).stat().st_size > 0, name
    capsys.readouterr()
    # a truncated file, and an npz of another command: one line naming the file, status 1
    data = (out / "when_sims_helps.npz").read_bytes()
    for content in (data[: len(data) // 2], None):
        bad = tmp_path / f"bad{content is None}"
        bad.mkdir()
        if content is None:
            np.savez(bad / "when_sims_helps.npz", omega=np.array([0.0, 1.0]))
        else:
            (bad / "when_sims_helps.npz").write_bytes(content)
        with pytest.raises(SystemExit) as e:
            wsh.main(["--replot", str(bad)])
        assert e.value.code == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "when_sims_helps.npz" in err, err


def test_replot_refuses_arrays_that_do_not_fit_the_grid(tiny, tmp_path, capsys):
    out, r = tiny
    r = dict(r, w2=r["w2"][:, :, :, :, :-1])  # one w too few
    np.savez(tmp_path / "when_sims_helps.npz", **r)
    with pytest.raises(SystemExit) as e:
        wsh.main(["--replot", str(tmp_path)])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "do not fit the grid" in err and len(err.splitlines()) == 1


def test_first_order_on_constructed_moments():
    """Delta' = Delta / 2 exactly: cos 1, gain 1/2, w* 2, and the predicted covariance at w is
    Sigma_b - w Delta' (so Sigma itself at w* = 2)."""
    Sigma = np.array([[2.0, 1.0], [1.0, 2.0]])
    Delta = np.array([[0.6, 0.2], [0.2, 0.4]])
    R, omega = 2, np.array([0.0, 1.0, 2.0])
    Sb = np.broadcast_to(Sigma + Delta, (R, 1, 1, 2, 2))  # R,F,Bb,D,D
    Sa = np.broadcast_to(Sigma + 1.5 * Delta, (R, 1, 1, 1, 2, 2))  # R,F,Bb,Ba,D,D
    r = {"omega": omega, "mean": np.zeros(2), "cov_r": Sigma, "cov_base": Sb, "cov_aux": Sa,
         "mu_base": np.zeros((R, 1, 1, 2)), "mu_aux": np.zeros((R, 1, 1, 1, 2))}
    fo = wsh.first_order(r)
    assert fo["cos"][0, 0, 0] == pytest.approx(1.0, abs=1e-12)
    assert fo["gain"][0, 0, 0] == pytest.approx(0.5, abs=1e-12)
    assert fo["w_star"][0, 0, 0] == pytest.approx(2.0, abs=1e-12)
    for k, w in enumerate(omega):
        assert np.allclose(fo["cov_pred"][:, 0, 0, 0, k], Sigma + Delta - w * Delta / 2, atol=1e-12)
    assert fo["w2_pred"][0, 0, 0, 2] == pytest.approx(0.0, abs=1e-6)  # Sigma exactly
    assert fo["w2_pred"][0, 0, 0, 0] > fo["w2_pred"][0, 0, 0, 1] > fo["w2_pred"][0, 0, 0, 2]


def test_presets_are_frozen_and_flags_override_them():
    args = wsh.build_parser().parse_args(["--preset", "tiny", "--runs", "5", "--n-synth", "123",
                                          "--n-real", "77", "--base-epochs", "3,1", "--formulations", "edm"])
    for preset in wsh.PRESETS.values():
        assert dataclasses.is_dataclass(preset)
        with pytest.raises(dataclasses.FrozenInstanceError):
            preset.runs = 1
    assert set(wsh.PRESETS) == {"tiny", "cpu", "gpu"}
    s = override(wsh.PRESETS["tiny"], args)
    assert (s.runs, s.n_s, s.n_real, s.base_epochs, s.formulations) == (5, 123, 77, (3, 1), ("edm",))
    s = wsh.settings(args)
    assert s.base_epochs == (1, 3) and s.omega[0] == 0.0  # sorted, w = 0 added


def test_toy_script_is_a_thin_command_with_the_same_help():
    p = subprocess.run([sys.executable, str(TOY / "when_sims_helps.py"), "--help"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == wsh.build_parser().format_help()
    assert "python toy/when_sims_helps.py" in p.stdout and "--n-synth" in p.stdout and "--replot" in p.stdout
    assert len((TOY / "when_sims_helps.py").read_text().splitlines()) < 15
