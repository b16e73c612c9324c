"""The 2D toy loads only what the 2D experiment needs (issue "A readable core", item 4): a reader
who follows `python -m minisims.toy` never passes through the UNet, the image data, the loops or
any kernel (nor numba). Checked on the modules a whole (tiny) toy run has imported."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = """
import json, runpy, sys
sys.argv = ["minisims.toy", "--runs", "2", "--base-epochs", "3", "--aux-epochs", "2",
            "--n-real", "60", "--n-synth", "50", "--n-eval", "80", "--quiet", "--no-plot",
            "--outdir", sys.argv[1]]
try:
    runpy.run_module("minisims.toy", run_name="__main__")
except SystemExit as e:
    assert e.code in (0, None), e.code
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "numba")))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("minisims", "kernels"))))
"""


def test_the_toy_imports_only_the_2d_experiment(tmp_path):
    out = subprocess.run([sys.executable, "-c", RUN, str(tmp_path)], capture_output=True,
                         text=True, cwd=ROOT, timeout=300, check=True).stdout
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    assert {"minisims.nn.mlp", "minisims.sims", "minisims.train", "minisims.data.toy"} <= loaded
    never = ["minisims.nn.unet", "minisims.nn.conv", "minisims.nn.attention", "minisims.nn.blocks",
             "minisims.shared_encoder", "minisims.data.cifar10", "minisims.data.safe_pickle",
             "minisims.loops", "minisims.checkpoint", "minisims.kernels.conv2d", "minisims.kernels.mlp_eval",
             "minisims.kernels.mlp_train", "minisims.kernels.heun", "minisims.kernels.adam_ema", "minisims.kernels.softmax"]
    assert not loaded & set(never), sorted(loaded & set(never))
    # no fast path at all: the per-run streams' words are ops.philox_words' array code on NumPy
    assert not [m for m in loaded if m.startswith(("minisims.kernels", "kernels"))], sorted(loaded)
    assert "numba" not in json.loads(out.strip().splitlines()[-2]), "the toy imported numba"


def test_a_reader_of_the_toy_follows_fifteen_files(tmp_path):
    """The issue's measure (benchmarks/reading_path.py, coverage.py): the files of minisims/ and
    kernels/ a toy run executes. With progress bars and the figure (no --quiet, no --no-plot) it is
    two more: progress.py and plots.py."""
    pytest.importorskip("coverage")
    tiny = ["--runs", "2", "--base-epochs", "3", "--aux-epochs", "2", "--n-real", "60",
            "--n-synth", "50", "--n-eval", "80", "--outdir", str(tmp_path)]
    counts = {}
    for extra in (["--quiet", "--no-plot"], []):
        out = subprocess.run([sys.executable, "benchmarks/reading_path.py", "--json", "--", "-m",
                              "minisims.toy", *tiny, *extra], capture_output=True, text=True,
                             cwd=ROOT, timeout=300, check=True).stdout
        counts[len(extra)] = json.loads(out)["per_file"]
    quiet, full = counts[2], counts[0]
    assert len(quiet) <= 15, sorted(quiet)
    assert not [f for f in quiet if not f.startswith("minisims/")], sorted(quiet)  # no kernel
    assert {"minisims/toy.py", "minisims/sims.py", "minisims/diffusion.py", "minisims/guidance.py",
            "minisims/nn/mlp.py", "minisims/train.py"} <= set(quiet)
    assert set(full) - set(quiet) == {"minisims/progress.py", "minisims/plots.py"}, sorted(full)
