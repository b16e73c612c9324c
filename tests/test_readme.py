"""The README tells the truth: its quick start shows what the command prints, its result tables
are the commands' own files, and the module list it points to (docs/modules.md) names every
module of the library and of kernels/."""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end, text.index(start))]


def test_every_module_is_listed_in_docs_modules():
    every = (ROOT / "docs" / "modules.md").read_text()
    assert "docs/modules.md" in (ROOT / "README.md").read_text()  # the README points there
    lib = _section(every, "`minisims/`, the library", "`kernels/`, the fast paths")
    kern = every[every.index("`kernels/`, the fast paths"):]
    missing = [f"minisims/{p}" for p in _modules("minisims") if f"`{p}`" not in lib]
    missing += [f"kernels/{p}" for p in _modules("kernels") if f"`{p}`" not in kern]
    assert not missing, f"docs/modules.md lacks {missing}"


def _modules(package: str):
    return sorted(str(p.relative_to(ROOT / package)) for p in (ROOT / package).rglob("*.py"))


def _toy_rows(text: str) -> dict:
    """The toy's printed table as {'0': (mean, std), '3': (mean, std, ratio, better, runs),
    'D_r': (mean, std)}."""
    rows = {}
    for m in re.finditer(r"^\s*(0 \(base\)|[\d.]+|D_r)\s+([\d.]+) \+- ([\d.]+)(?:\s+([\d.]+)"
                         r"(?:\s+(\d+)/(\d+))?)?", text, re.M):
        key = "0" if m[1] == "0 (base)" else m[1]
        rows[key] = tuple(float(v) for v in m.groups()[1:] if v is not None)
    return rows


def test_the_quick_start_prints_what_the_readme_shows(tmp_path):
    """The README's first command, run here, against the output block the README shows: the
    digits depend on the BLAS kernel (the README's table of kernels), so each mean must lie
    within 3 standard errors of a difference of two 16-run means, as the README states."""
    readme = (ROOT / "README.md").read_text()
    block = _section(readme, "SIMS on the 2D Gaussian: ddpm, 16 runs", "```")
    want = _toy_rows(block)
    out = subprocess.run([sys.executable, "-m", "minisims.toy", "--omega", "3", "--quiet",
                          "--no-plot", "--outdir", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600, check=True).stdout
    got = _toy_rows(out)
    assert set(got) == set(want) == {"0", "3", "D_r"}, (got, want)
    for w in ("0", "3"):
        tol = 3 * math.sqrt(2) * want[w][1] / math.sqrt(16)
        assert abs(got[w][0] - want[w][0]) < tol, (w, got[w], want[w], tol)
    assert got["D_r"] == want["D_r"]  # the real points' own fit: no training, no BLAS kernel
    ratio, better, runs = got["3"][2:]
    assert ratio < 0.5 and better >= 13 and runs == 16, got["3"]


def test_the_image_results_in_the_docs_are_the_commands_own():
    """docs/images.md shows the cpu preset's summary over training seeds and the study's table
    word for word as the commands wrote them (docs/images_cpu/summary.md, docs/images_study/
    study.md), and each mean and spread there is recomputed here from the per-seed results."""
    import numpy as np
    page = (ROOT / "docs" / "images.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for folder, name in (("images_cpu", "summary.md"), ("images_study", "study.md")):
        assert (ROOT / "docs" / folder / name).read_text().strip() in page, (folder, name)
    summary = json.loads((ROOT / "docs" / "images_cpu" / "summary.json").read_text())
    runs = [json.loads((ROOT / "docs" / "images_cpu" / f"seed_{s}" / "results.json").read_text())
            for s in summary["seeds"]]
    for key, cell in summary["grid"].items():
        b, w = key.split("/")
        fds = [r["validation"]["fd"][b][w] for r in runs]
        assert cell["mean"] == np.mean(fds) and cell["sd"] == np.std(fds, ddof=1), key
    gains = [r["test"]["gain"] for r in runs]
    assert summary["beats"] == sum(g > 0 for g in gains) and summary["gain_mean"] == np.mean(gains)
    line = [ln for ln in (ROOT / "docs" / "images_cpu" / "summary.md").read_text().splitlines()
            if ln.startswith("On the test seeds")][0]
    assert line in readme  # the README states the measured result over seeds, not one seed's
    study = json.loads((ROOT / "docs" / "images_study" / "study.json").read_text())
    assert len(study["base_budgets"]) >= 3 and len(study["seeds"]) >= 2


def test_the_figure4_rows_in_the_readme_are_the_commands_own():
    readme = (ROOT / "README.md").read_text()
    table = (ROOT / "toy" / "results" / "figure4_cpu_ddpm" / "figure4_table.md").read_text()
    rows = [ln for ln in _section(readme, "| \\|D_s\\| | SIMS, min over w", "\n\n").splitlines()
            if ln.startswith("| 1") or ln.startswith("| 2") or ln.startswith("| 5")]
    assert len(rows) == 4
    for row in rows:  # the README leaves out the file's last column
        assert any(ln.startswith(row) for ln in table.splitlines()), row
