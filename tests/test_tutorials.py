"""Every tutorial runs top to bottom at its small size (MINISIMS_TUTORIAL_FAST=1) and opens as a
notebook through jupytext; every executed notebook in docs/tutorials/ has its source's code."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))


def build_module():
    """tutorials/build_notebooks.py, imported from its path (tutorials/ is not a package)."""
    path = ROOT / "tutorials" / "build_notebooks.py"
    spec = importlib.util.spec_from_file_location("build_notebooks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = build_module()


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


@pytest.mark.parametrize("source", BUILD.sources(), ids=lambda p: p.stem)
def test_notebook_has_its_sources_code(source):
    """The committed notebook's code cells are the source's, as jupytext reads them: a change to
    a tutorial's code without a rebuild fails here, as does a tutorial without a notebook."""
    jupytext = pytest.importorskip("jupytext")
    notebook = BUILD.notebook_for(source)
    rebuild = f"rebuild it: python tutorials/build_notebooks.py {source.stem}"
    name = notebook.relative_to(ROOT)
    assert notebook.exists(), f"{source.name} has no notebook {name}; {rebuild}"
    built = BUILD.code_cells(jupytext.read(notebook))
    wanted = BUILD.code_cells(jupytext.read(source))
    first = next((i for i, (a, b) in enumerate(zip(built, wanted)) if a != b),
                 min(len(built), len(wanted)))
    assert built == wanted, (f"{name} differs from {source.name} from code cell {first} on "
                             f"({len(built)} code cells against {len(wanted)}); {rebuild}")


def test_every_notebook_has_a_source():
    stems = {p.stem for p in BUILD.sources()}
    orphans = [p.name for p in sorted(BUILD.DOCS.glob("*.ipynb")) if p.stem not in stems]
    assert not orphans, f"notebooks without a source in tutorials/ (renamed? delete): {orphans}"


def test_notebooks_are_executed_with_figures():
    """Each committed notebook holds its run: every code cell executed, a PNG figure somewhere,
    no error output, and none of the timings that would change on every rebuild."""
    for source in BUILD.sources():
        notebook = BUILD.notebook_for(source)
        if not notebook.exists():
            continue  # test_notebook_has_its_sources_code reports it
        nb = json.loads(notebook.read_text(encoding="utf-8"))
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        outputs = [o for c in code for o in c["outputs"]]
        assert all(c["execution_count"] for c in code), f"{notebook.name}: a cell was not run"
        assert not [o for o in outputs if o["output_type"] == "error"], f"{notebook.name}: an error"
        pngs = [o for o in outputs if "image/png" in o.get("data", {})]
        assert pngs, f"{notebook.name}: no figure"
        assert not any("execution" in c["metadata"] for c in nb["cells"]), f"{notebook.name}: timings"


def _run_build(args, tutorials, tmp_path):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "tutorials" / "build_notebooks.py"), *args,
                           "--sources", str(tutorials), "--outdir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)


def test_build_writes_an_executed_notebook(tmp_path):
    """The command itself, at the small size on the appendix (seconds): figure inline as PNG."""
    p = _run_build(["--fast", "05a"], ROOT / "tutorials", tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    nb = json.loads((tmp_path / "05a_appendix_cifar_archive.ipynb").read_text(encoding="utf-8"))
    assert "Edit the source" in "".join(nb["cells"][0]["source"])
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 1


def test_build_stops_at_a_failing_cell(tmp_path):
    """One line naming the notebook, the cell and the error; exit status 1; nothing written."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "99_fails.py").write_text("# %% [markdown]\n# # fails\n\n# %%\nx = 1\n\n# %%\nx / 0\n")
    p = _run_build(["--fast"], src, tmp_path / "out")
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr.strip().splitlines()[-1] == \
        "build_notebooks: 99_fails: cell 3 failed: ZeroDivisionError: division by zero"
    assert not list((tmp_path / "out").glob("*.ipynb"))
