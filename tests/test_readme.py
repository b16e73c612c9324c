"""The README's module list ("Every module") names every module of the library and of kernels/,
so a reader can find each file's one-line purpose there."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end, text.index(start))]


def test_every_module_is_listed_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    every = _section(readme, "### Every module", "## What the tests prove")
    lib = _section(every, "`minisims/`, the library", "`kernels/`, the fast paths")
    kern = every[every.index("`kernels/`, the fast paths"):]
    missing = [f"minisims/{p}" for p in _modules("minisims") if f"`{p}`" not in lib]
    missing += [f"kernels/{p}" for p in _modules("kernels") if f"`{p}`" not in kern]
    assert not missing, f"README's 'Every module' lacks {missing}"


def _modules(package: str):
    return sorted(str(p.relative_to(ROOT / package)) for p in (ROOT / package).rglob("*.py"))
