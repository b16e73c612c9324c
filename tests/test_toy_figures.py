"""Each figure command runs end to end at its tiny preset and writes reloadable results; the
toy/ scripts are thin commands over the importable minisims.figures modules."""
import dataclasses
import importlib
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from minisims.cli_util import from_dict, override
from minisims.loops.results import converged_ratio, load_results

TOY = pathlib.Path(__file__).parent.parent / "toy"
FIGURES = ("figure4", "figure5", "figure6", "autoguidance")


def script(name):
    return importlib.import_module(f"minisims.figures.{name}")


def test_figure4_tiny_writes_panels_raw_results_and_the_paper_table(tmp_path, capsys):
    f4 = script("figure4")
    assert f4.main(["--preset", "tiny", "--outdir", str(tmp_path), "--quiet"]) == 0
    for name in ("figure4.png", "figure4_loops.npz", "figure4_gen1.npz", "figure4_table.md", "figure4.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    cfg, results, meta = load_results(str(tmp_path / "figure4_loops.npz"))
    s = f4.PRESETS["tiny"]
    assert meta["preset"] == "tiny" and cfg.generations == s.generations
    assert from_dict(type(s), meta["settings"]) == s  # the preset as data, saved with the results
    assert len(results) == len(s.n_synth) * (1 + len(s.omega))
    for cell, r in results.items():
        assert r.mu.shape == (s.runs, s.generations, 2) and np.isfinite(r.mu).all()
    # the table's standard ratio is the converged ratio of the saved standard cell
    table = (tmp_path / "figure4_table.md").read_text()
    std = [r for c, r in results.items() if c.method == "standard" and c.n_synth == s.n_synth[0]][0]
    ratio = converged_ratio(std, cfg.mean, cfg.cov, start=s.inf_from)
    assert f"| {s.n_synth[0]} |" in table and f"{ratio:.3f}" in table
    # panel 1 at w = 0 is generation 1 of the standard loop (same streams)
    with np.load(tmp_path / "figure4_gen1.npz") as z:
        w0 = list(z["w"]).index(0.0)
        assert np.array_equal(z["mu"][w0], std.mu[:, 0])
    assert "paper SIMS" in capsys.readouterr().out
    # the table and figure can be rebuilt from the saved files alone
    (tmp_path / "figure4_table.md").unlink()
    (tmp_path / "figure4.png").unlink()
    assert f4.main(["--replot", str(tmp_path)]) == 0
    assert (tmp_path / "figure4_table.md").read_text() == table and (tmp_path / "figure4.png").exists()


@pytest.mark.parametrize("name,files", [("figure5", ["figure5.png", "figure5.npz", "figure5.md"]),
                                        ("figure6", ["figure6.png", "figure6.npz", "figure6.md"]),
                                        ("autoguidance", ["autoguidance.png", "autoguidance.npz", "autoguidance.md"])])
def test_other_figures_tiny(name, files, tmp_path):
    assert script(name).main(["--preset", "tiny", "--outdir", str(tmp_path)]) == 0
    for f in files:
        assert (tmp_path / f).stat().st_size > 0, f
    with np.load(tmp_path / files[1]) as z:
        assert all(np.isfinite(z[k]).all() for k in z.files if z[k].dtype.kind == "f" and k != "dist")


@pytest.mark.parametrize("name,argv,message", [
    ("figure4", ["--preset", "tiny", "--inf-from", "9"], "beyond --generations"),
    ("figure4", ["--runs", "0"], "below the minimum"),
    ("figure4", ["--replot", "/nonexistent"], "no figure4_loops.npz"),
    ("figure5", ["--pollution", "0"], "must be >= 1"),
    ("figure5", ["--replot", "/nonexistent"], "no figure5.npz"),
    ("figure6", ["--target", "1.5"], "strictly between 0 and 1"),
])
def test_bad_input_is_one_line_and_exit_2(name, argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        script(name).main(argv + ["--outdir", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name", FIGURES)
def test_presets_are_frozen_data_and_flags_override_them(name):
    mod = script(name)
    args = mod.build_parser().parse_args(["--preset", "tiny", "--runs", "5", "--omega", "1,2"])
    for preset in mod.PRESETS.values():
        assert dataclasses.is_dataclass(preset)
        with pytest.raises(dataclasses.FrozenInstanceError):
            preset.runs = 1
    s = override(mod.PRESETS["tiny"], args)
    assert s.runs == 5 and s.omega == (1.0, 2.0)
    assert dataclasses.replace(s, runs=mod.PRESETS["tiny"].runs, omega=mod.PRESETS["tiny"].omega) == mod.PRESETS["tiny"]


@pytest.mark.parametrize("name", FIGURES)
def test_toy_script_is_a_thin_command_with_the_same_help(name):
    p = subprocess.run([sys.executable, str(TOY / f"{name}.py"), "--help"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == script(name).build_parser().format_help()
    assert f"python toy/{name}.py" in p.stdout and "examples:" in p.stdout and "--preset" in p.stdout
    assert len((TOY / f"{name}.py").read_text().splitlines()) < 15


def test_halves_split_the_runs_into_disjoint_choosing_and_reporting_sets():
    from minisims.figures.common import halves
    assert halves(5) == ([0, 2, 4], [1, 3]) and halves(1) == ([0], []) and halves(2) == ([0], [1])


def test_figure5_held_out_w_is_chosen_on_other_runs_than_it_is_measured_on():
    from minisims.figures.figure5 import _held_out
    omega = [0.0, 1.0, 2.0]
    d = np.array([[9, 9, 9, 9],      # w = 0 (never chosen)
                  [1, 5, 1, 5],      # w = 1: best on runs 0, 2; 5 on runs 1, 3
                  [2, 2, 2, 2.0]])   # w = 2: best over all runs (2 < 3), worse on runs 0, 2
    assert _held_out(d, omega) == "5.000 +- 0.000 (1)"  # the choice does not see runs 1, 3
    assert "needs 2 runs" in _held_out(d[:, :1], omega)


def test_figure4_held_out_ratio_is_measured_on_the_runs_that_did_not_choose_it():
    from minisims.figures.figure4 import summary_table
    from minisims.loops.loop import Cell
    from types import SimpleNamespace
    mean, cov = np.zeros(2), np.eye(2)

    class Result:  # distances R,G given directly: runs 0, 2 prefer w = 1, runs 1, 3 w = 3
        def __init__(self, d):
            self.d, self.mu = np.asarray(d, float), np.zeros((len(d), 1, 2))

        def distance(self, mean, cov, squared=False):
            return self.d

    results = {Cell(50, 0.0, "standard"): Result([[1, 2]] * 4),
               Cell(50, 1.0, "sims"): Result([[1, 0.5], [1, 3.0], [1, 0.5], [1, 3.0]]),
               Cell(50, 3.0, "sims"): Result([[1, 1.0]] * 4)}
    rows, data = summary_table(SimpleNamespace(mean=mean, cov=cov), results, [50], 2, False)
    held = data[50]["held_out"]
    assert data[50]["w_best"] == 3.0 and held["w"] == 1.0 and held["ratio"] == 3.0
    assert "| 3.000 +- 0.000 | 1 |" in rows[-1]
