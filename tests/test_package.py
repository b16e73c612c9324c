"""The package as people find it: its version everywhere alike, --version on every command, the
licence and citation files, and an sdist whose tests collect."""
import configparser
import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

import minisims
from minisims import toy
from minisims.figures import autoguidance, figure4, figure5, figure6, when_sims_helps
from minisims.images import cli as images_cli

ROOT = Path(__file__).resolve().parents[1]
SETUP = configparser.ConfigParser()
SETUP.read(ROOT / "setup.cfg")


def test_the_version_is_the_installed_one_and_the_same_in_every_file():
    assert minisims.__version__ == version("minisims") == SETUP["metadata"]["version"]
    assert yaml.safe_load((ROOT / "CITATION.cff").read_text())["version"] == minisims.__version__
    assert f"## {minisims.__version__}" in (ROOT / "CHANGELOG.md").read_text()


@pytest.mark.parametrize("module,argv", [
    (toy, []), (figure4, []), (figure5, []), (figure6, []), (autoguidance, []),
    (when_sims_helps, []), (images_cli, []), (images_cli, ["sims"]), (images_cli, ["fd"]),
], ids=lambda v: getattr(v, "__name__", " ".join(v) if isinstance(v, list) else v))
def test_every_command_answers_version(module, argv, capsys):
    with pytest.raises(SystemExit) as e:
        module.build_parser().parse_args(argv + ["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"(minisims {minisims.__version__}, NumPy " in out and out.count("\n") == 1, out


def test_version_from_the_command_line():
    out = subprocess.run([sys.executable, "-m", "minisims.toy", "--version"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60, check=True).stdout
    assert out.startswith(f"python -m minisims.toy (minisims {minisims.__version__}, NumPy ")


def test_the_licence_is_mit_as_the_metadata_says():
    assert SETUP["metadata"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_the_citation_file_cites_minisims_and_the_sims_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["authors"]
    assert cff["title"].startswith("minisims") and cff["license"] == "MIT"
    paper, = [r for r in cff["references"] if r["type"] == "article"]
    assert paper["title"] == "Self-Improving Diffusion Models with Synthetic Data"
    assert paper["authors"][0]["family-names"] == "Alemohammad" and paper["year"] == 2024
    assert "2408.16333" in paper["url"]


def test_the_sdist_carries_what_its_tests_need(tmp_path):
    build = ("import sys; from setuptools import build_meta; "
             "print(build_meta.build_sdist(sys.argv[1]))")
    name = subprocess.run([sys.executable, "-c", build, str(tmp_path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, check=True).stdout.split()[-1]
    with tarfile.open(tmp_path / name) as tar:
        tar.extractall(tmp_path, filter="data")
    tree = tmp_path / name.removesuffix(".tar.gz")
    for f in ("LICENSE", "CITATION.cff", "CHANGELOG.md", "tests/conftest.py", "tests/cifar_like.py",
              "tests/cuda_emu.h", "toy/figure4.py", "tutorials/01_diffusion_and_sims_2d.py"):
        assert (tree / f).is_file(), f
    collect = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                              "-p", "no:cacheprovider"], capture_output=True, text=True, cwd=tree,
                             timeout=300)
    assert collect.returncode == 0, collect.stdout[-2000:]  # 2 where a module fails to import
    assert "tests collected" in collect.stdout
    # the wheel built from it installs kernels/ as minisims.kernels, and no top-level `kernels`
    # (a name taken on PyPI: installing beside that package would break it)
    wheel = ("import sys; from setuptools import build_meta; "
             "print(build_meta.build_wheel(sys.argv[1]))")
    name = subprocess.run([sys.executable, "-c", wheel, str(tmp_path / "wheel")], capture_output=True,
                          text=True, cwd=tree, timeout=300, check=True).stdout.split()[-1]
    with zipfile.ZipFile(tmp_path / "wheel" / name) as whl:
        names = whl.namelist()
    assert "minisims/kernels/conv2d.py" in names and "minisims/ops.py" in names
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"minisims"}, tops


def test_the_gpu_hint_installs_the_extra_from_the_checkout(monkeypatch):
    """minisims is not on PyPI: the hint is the checkout's extra, not 'minisims[...]'."""
    from minisims import backend
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    with pytest.raises(backend.BackendError, match=r"pip install -e '\.\[gpu-cuda13\]'"):
        backend._import_cupy()
