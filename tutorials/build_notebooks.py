"""Build the executed notebooks in docs/tutorials/ from the percent-format sources in tutorials/.

    python tutorials/build_notebooks.py            # every tutorial at full size (minutes)
    python tutorials/build_notebooks.py 01 05a     # only these (a name's start is enough)
    python tutorials/build_notebooks.py --fast 04  # the tests' small size, in runs/notebooks-fast/

Each source (tutorials/NN_*.py and the appendix 05a; not sims_in_one_file.py, a plain script) is
read with jupytext, run top to bottom by nbclient in a python3 (ipykernel) kernel whose working
directory is the repository root, and written as docs/tutorials/<name>.ipynb with its printed
output and its figures inline (PNG, from minisims.plots.show). Its first cell says where it came
from. tests/test_tutorials.py fails when a notebook's code cells differ from its source's.

So that a rebuild differs only where the results do: cell ids are numbered, timings are not
recorded, progress bars are off (TQDM_DISABLE=1; a bar is a widget or a stream of carriage
returns, neither of which reads well on a page) and carriage returns in printed text are resolved
as a terminal would. A failing cell stops the build with one line (the notebook, the cell, the
error) and exit status 1; the notebook already in docs/tutorials/ is left as it was.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
DOCS = ROOT / "docs" / "tutorials"
COMMAND = "python tutorials/build_notebooks.py"


def sources(folder: Path = TUTORIALS) -> list[Path]:
    """The tutorials built into notebooks: tutorials/NN_*.py and NNa_*.py (the appendix)."""
    return sorted(Path(folder).glob("[0-9][0-9]*_*.py"))


def notebook_for(source: Path, outdir: Path = DOCS) -> Path:
    return outdir / (source.stem + ".ipynb")


def code_cells(nb) -> list[str]:
    """The sources of a notebook's code cells, in order: what must match between .py and .ipynb."""
    return [c.source for c in nb.cells if c.cell_type == "code"]


def read_source(source: Path, fast: bool = False):
    """The tutorial as jupytext reads it, with a first cell that names its source."""
    import jupytext
    import nbformat

    nb = jupytext.read(source)
    rel = Path(os.path.relpath(source, ROOT)).as_posix()
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(
        f"*Generated from [`{rel}`](../../{rel}) by `{COMMAND}`, with the outputs of a "
        f"{'small (MINISIMS_TUTORIAL_FAST=1)' if fast else 'full-size'} run. Edit the source, not "
        f"this file.*"))
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:03d}"  # numbered, not random: a rebuild leaves them as they were
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                  "language": "python"}, "language_info": {"name": "python"}}
    return nb


def terminal_text(text: str) -> str:
    """Printed text as a terminal shows it: on each line, what follows its last carriage return."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def tidy(nb) -> None:
    """Drop what changes from run to run without changing a result (timings, the language's
    version); join the pieces of printed text that arrived apart, and resolve carriage returns."""
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        outputs = []
        for out in cell.get("outputs", []):
            last = outputs[-1] if outputs else None
            if (out.output_type == "stream" and last is not None
                    and last.output_type == "stream" and last.name == out.name):
                last.text += out.text
            else:
                outputs.append(out)
        for out in outputs:
            if out.output_type == "stream":
                out.text = terminal_text(out.text)
        if cell.cell_type == "code":
            cell.outputs = outputs


class CellFailed(Exception):
    pass


def kernel_env(fast: bool) -> dict:
    """The kernel's environment: this one, at the chosen size, figures in runs/tutorials/NN/ (not
    a temporary folder, whose name would change in the printed output on every build)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MINISIMS_TUTORIAL_OUT", "MINISIMS_TUTORIAL_FAST")}
    if fast:
        env["MINISIMS_TUTORIAL_FAST"] = "1"
    env["TQDM_DISABLE"] = "1"
    env["PYTHONWARNINGS"] = "ignore:IProgress not found"  # tqdm.auto's, without ipywidgets
    env.setdefault("OPENBLAS_NUM_THREADS", "1")  # each tutorial also limits it itself
    return env


def execute(nb, name: str, fast: bool, cell_timeout: int):
    """Run every code cell of ``nb`` in a fresh python3 kernel at the repository root."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from minisims.progress import LogLines, bar

    n_code = len(code_cells(nb))
    # a bar on a terminal, else plain lines; not bar()'s own test, which takes this process for a
    # notebook once a kernel's start has imported ipykernel here
    progress = (bar if sys.stderr.isatty() else LogLines)(total=n_code, desc=name, unit="cell")
    client = NotebookClient(nb, kernel_name="python3", timeout=cell_timeout, record_timing=False,
                            resources={"metadata": {"path": str(ROOT)}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no TCP warning
                            on_cell_executed=lambda **kw: progress.update(1))
    try:
        client.execute(env=kernel_env(fast))
    except CellExecutionError as e:
        index = next((i for i, c in enumerate(nb.cells) if any(
            o.output_type == "error" for o in c.get("outputs", []))), None)
        where = f"cell {index}" if index is not None else "a cell"
        raise CellFailed(f"{name}: {where} failed: {e.ename}: {e.evalue}") from None
    finally:
        progress.close()
    return nb


def build_one(source: Path, outdir: Path, fast: bool, cell_timeout: int) -> tuple[float, int]:
    """Execute one tutorial and write its notebook; returns (seconds, bytes written)."""
    import nbformat

    t0 = time.perf_counter()
    nb = execute(read_source(source, fast), source.stem, fast, cell_timeout)
    tidy(nb)
    nbformat.validate(nb)
    path = notebook_for(source, outdir)
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return time.perf_counter() - t0, path.stat().st_size


def select(names: list[str], folder: Path = TUTORIALS) -> list[Path]:
    """The sources whose names start with one of ``names`` (all of them when none is given)."""
    every = sources(folder)
    if not names:
        return every
    chosen = []
    for name in names:
        stem = Path(name).stem
        hits = [s for s in every if s.stem.startswith(stem)]
        if stem[:2].isdigit() and len(stem) == 2:  # "05" means 05_*, not the appendix 05a_*
            hits = [s for s in hits if s.stem[2] == "_"]
        if len(hits) != 1:
            known = ", ".join(s.stem for s in every)
            raise SystemExit(f"build_notebooks: {name!r} names {len(hits)} tutorials; "
                             f"one of: {known}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="tutorials to build, by the start of their names "
                   "(01, 05a, 06_when); all when none is given")
    p.add_argument("--fast", action="store_true", help="the tests' small size "
                   "(MINISIMS_TUTORIAL_FAST=1), written to runs/notebooks-fast/ unless --outdir")
    p.add_argument("--outdir", type=Path, default=None,
                   help="where to write the notebooks (default docs/tutorials/, or "
                        "runs/notebooks-fast/ with --fast)")
    p.add_argument("--sources", type=Path, default=TUTORIALS,
                   help="the folder of percent-format tutorials NN_*.py (default tutorials/)")
    p.add_argument("--cell-timeout", type=int, default=3600, help="seconds one cell may run (default 3600)")
    args = p.parse_args(argv)
    if args.cell_timeout < 1:
        p.error("--cell-timeout must be at least 1")
    outdir = args.outdir or (ROOT / "runs" / "notebooks-fast" if args.fast else DOCS)
    chosen = select(args.names, args.sources)
    outdir.mkdir(parents=True, exist_ok=True)


    size = "fast" if args.fast else "full"
    print(f"building {len(chosen)} notebook(s) at {size} size into {os.path.relpath(outdir)}/",
          flush=True)
    total_s = total_b = 0
    for source in chosen:
        try:
            seconds, nbytes = build_one(source, outdir, args.fast, args.cell_timeout)
        except CellFailed as e:
            print(f"build_notebooks: {e}", file=sys.stderr)
            return 1
        total_s, total_b = total_s + seconds, total_b + nbytes
        print(f"{source.stem}: {seconds:.0f} s, {nbytes / 1e3:.0f} kB", flush=True)
    print(f"done: {len(chosen)} notebook(s), {total_s:.0f} s, {total_b / 1e6:.2f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
