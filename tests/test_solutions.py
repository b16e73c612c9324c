"""Every tutorial's exercises have solutions, and every solutions file runs top to bottom at its
small size (MINISIMS_TUTORIAL_FAST=1), its own asserts included.

A tutorial solves its exercises either in a cell of its own (a "## Solutions" section, as
tutorial 00 does) or in tutorials/solutions/NN_solutions.py, with one "## Exercise k" section per
exercise of the tutorial's "## Exercises" list."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]*_*.py"))
SOLUTIONS = sorted((ROOT / "tutorials" / "solutions").glob("*_solutions.py"))


def exercise_numbers(tutorial: pathlib.Path) -> set:
    """The numbers k of the items '# k. ...' in a tutorial's '## Exercises' list."""
    text = tutorial.read_text()
    if "# ## Exercises" not in text:
        return set()
    after = text.split("# ## Exercises", 1)[1]
    block = re.split(r"\n# ## |\n# %%", after, maxsplit=1)[0]  # up to the next section or cell
    return {int(k) for k in re.findall(r"^# (\d+)\. ", block, flags=re.M)}


def solution_for(tutorial: pathlib.Path) -> pathlib.Path:
    return ROOT / "tutorials" / "solutions" / f"{tutorial.stem.split('_')[0]}_solutions.py"


def test_there_are_solutions():
    assert SOLUTIONS, "no solutions found"


@pytest.mark.parametrize("tutorial", TUTORIALS, ids=lambda p: p.stem)
def test_every_exercise_has_a_solution(tutorial):
    wanted = exercise_numbers(tutorial)
    if not wanted or "# ## Solutions" in tutorial.read_text():
        return  # no exercises, or solved in the tutorial itself (its test runs them)
    path = solution_for(tutorial)
    assert path.exists(), f"{tutorial.name} has exercises {sorted(wanted)} but no {path.relative_to(ROOT)}"
    solved = {int(k) for k in re.findall(r"^# ## Exercise (\d+)\b", path.read_text(), flags=re.M)}
    assert solved == wanted, (f"{path.name} solves exercises {sorted(solved)}; "
                              f"{tutorial.name} poses {sorted(wanted)}")


def test_the_exercise_finder_finds_exercises():
    """The check above is only as good as exercise_numbers: it must see tutorial 01's three."""
    assert exercise_numbers(ROOT / "tutorials" / "01_diffusion_and_sims_2d.py") == {1, 2, 3}


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solutions_run(path, tmp_path):
    # one BLAS thread, as the tutorials' test: small matrices, a busy machine
    env = {**os.environ, "MINISIMS_TUTORIAL_FAST": "1", "MINISIMS_TUTORIAL_OUT": str(tmp_path),
           "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True,
                       timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solutions_are_percent_notebooks(path):
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.read(path)
    assert {c.cell_type for c in nb.cells} == {"markdown", "code"}
