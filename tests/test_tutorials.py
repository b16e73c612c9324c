"""Every tutorial runs top to bottom at its small size (MINISIMS_TUTORIAL_FAST=1) and opens as a
notebook through jupytext."""
import os
import pathlib
import subprocess
import sys

import pytest

TUTORIALS = sorted((pathlib.Path(__file__).parent.parent / "tutorials").glob("[0-9][0-9]_*.py"))


def test_there_are_tutorials():
    assert TUTORIALS, "no tutorials found"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(path, tmp_path):
    # one BLAS thread: at their small size the tutorials multiply small matrices, where a second
    # OpenBLAS thread only spins (tutorial 01 took 72 s instead of 5 s on a busy 2-core machine)
    env = {**os.environ, "MINISIMS_TUTORIAL_FAST": "1", "MINISIMS_TUTORIAL_OUT": str(tmp_path),
           "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert list(tmp_path.glob("*.png")), "a tutorial should leave at least one figure"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_is_a_percent_notebook(path):
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.read(path)
    kinds = {c.cell_type for c in nb.cells}
    assert kinds == {"markdown", "code"} and len(nb.cells) >= 6
