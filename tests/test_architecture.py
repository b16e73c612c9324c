"""The house rules of /work/shared/notes/architecture.md, checked on the source: arrows point down.

Every .py file under minisims/ and kernels/ is parsed with ``ast`` (nothing is imported), every
import in it is resolved to a dotted module name (relative imports included; a package's
``__init__.py`` is the package module), and each import is held against the rules below. Imports
inside functions count as much as those at the top of a file: a lazy import is still an arrow.
Only the arrows written in a file are drawn: importing a.b.c also runs a/__init__.py and
a/b/__init__.py, but drawing that would put every submodule in a cycle with the package
__init__.py that re-exports it. Imports by string (importlib) are not seen.

- kernels/ stands alone: the standard library, numpy, numba, cupy and kernels' own modules only.
- minisims/nn/ and minisims/diffusion/ know nothing of Algorithm 1 (sims), the training loop, the
  experiments or the command lines; layers know nothing of diffusion and samplers nothing of
  layers.
- The bottom floor (backend, guidance, metrics, checkpoint, atomic, streams, data/, lazy) imports
  of minisims only the bottom floor.
- minisims/train.py knows nothing of sims, the experiments or the command lines.
- No import cycles among the modules of kernels/, nor among those of minisims/.

Run as a script, ``python tests/test_architecture.py`` prints the import graph, one line per
module: ``module -> modules of this project it imports``.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("minisims", "kernels")  # the source trees checked, as folders under the root

# The command lines and experiments: the top floor, which nothing below may import.
EXPERIMENTS = ("minisims.loops", "minisims.shift", "minisims.polluted", "minisims.autoguidance",
               "minisims.toy", "minisims.images", "minisims.figures", "minisims.cli_util",
               "minisims.executors")
BOTTOM_FLOOR = ("minisims.backend", "minisims.guidance", "minisims.metrics", "minisims.checkpoint",
                "minisims.atomic", "minisims.streams", "minisims.data", "minisims.ops")
KERNELS_MAY_IMPORT = ("numpy", "numba", "cupy", "kernels")  # besides the standard library


@dataclass(frozen=True)
class Import:
    """One import statement's arrow: ``importer`` (module) imports ``target`` (module)."""
    importer: str  # dotted module name of the importing file
    path: str  # the importing file, relative to the root
    line: int
    target: str  # the imported module, resolved to an absolute dotted name
    statement: str  # the import as written, for messages
    in_function: bool  # True for a lazy import inside a function

    def where(self) -> str:
        lazy = " (inside a function)" if self.in_function else ""
        return f"{self.path}:{self.line}: `{self.statement}`{lazy}"


def _within(name: str, prefix: str) -> bool:
    """True when module ``name`` is ``prefix`` or inside it (a package and its submodules)."""
    return name == prefix or name.startswith(prefix + ".")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the checked packages under ``root``."""
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":  # a package's __init__.py is the package module
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _source_name(name: str) -> str:
    """kernels/ is installed as minisims.kernels (minisims/kernels links to the folder): an import
    of minisims.kernels.x is an arrow to the folder's module kernels.x."""
    return "kernels" + name[len("minisims.kernels"):] if _within(name, "minisims.kernels") else name


def _resolve_base(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module named by ``from <level dots><name> import ...`` inside ``module``."""
    if level == 0:
        return name or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(package) - 1:
        raise ValueError(f"relative import beyond the top package in {module}")
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([name] if name else []))


class _Collector(ast.NodeVisitor):
    def __init__(self):
        self.found = []  # (node, in_function)
        self.depth = 0

    def _function(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Import(self, node):
        self.found.append((node, self.depth > 0))

    visit_ImportFrom = visit_Import


def file_imports(root: Path, module: str, path: Path, known: set[str]) -> list[Import]:
    """Every import in one file, each imported name resolved to the module it comes from."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    rel = path.relative_to(root).as_posix()
    collector = _Collector()
    collector.visit(tree)
    out = []
    for node, in_function in collector.found:
        statement = ast.unparse(node)
        if isinstance(node, ast.Import):
            targets = []
            for alias in node.names:
                # import a.b.c: the longest prefix that is one of ours, else the name as written
                parts = _source_name(alias.name).split(".")
                ours = [".".join(parts[:k]) for k in range(len(parts), 0, -1)
                        if ".".join(parts[:k]) in known]
                targets.append(ours[0] if ours else alias.name)
        else:
            base = _source_name(_resolve_base(module, is_package, node.level, node.module))
            targets = []
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                # from pkg import sub: a submodule when the file exists, else a name in pkg
                targets.append(sub if sub in known else base)
        for target in dict.fromkeys(targets):  # one arrow per target and statement
            out.append(Import(module, rel, node.lineno, target, statement, in_function))
    return out


def project_imports(root: Path = ROOT) -> list[Import]:
    """Every import in every file of the checked packages under ``root``."""
    files = module_files(root)
    known = set(files)
    return [imp for mod, path in files.items() for imp in file_imports(root, mod, path, known)]


def import_graph(imports: list[Import], known: set[str]) -> dict[str, list[str]]:
    """module -> sorted modules of this project that it imports (itself excluded)."""
    graph = {m: set() for m in known}
    for imp in imports:
        if imp.target in known and imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
    return {m: sorted(graph[m]) for m in sorted(graph)}


# ------------------------------------------------------------------------------------------------
# The rules: (who, what it may not import, why). A rule is a function of one Import that returns
# a message, or None when the import is fine.
# ------------------------------------------------------------------------------------------------

def _kernels_rule(imp: Import) -> str | None:
    if not _within(imp.importer, "kernels"):
        return None
    top = imp.target.split(".")[0]
    if top in KERNELS_MAY_IMPORT or top in sys.stdlib_module_names:
        return None
    return (f"{imp.where()} imports {imp.target}: kernels/ stands alone; it may import only the "
            f"standard library, {', '.join(KERNELS_MAY_IMPORT)}")


def _deny(who: tuple[str, ...], denied: tuple[str, ...], why: str):
    def rule(imp: Import) -> str | None:
        if not any(_within(imp.importer, w) for w in who):
            return None
        if any(_within(imp.target, d) for d in denied):
            return f"{imp.where()} imports {imp.target}, which is upward: {why}"
        return None
    return rule


def _bottom_floor_rule(imp: Import) -> str | None:
    if not any(_within(imp.importer, w) for w in BOTTOM_FLOOR):
        return None
    if not _within(imp.target, "minisims") or any(_within(imp.target, b) for b in BOTTOM_FLOOR):
        return None
    return (f"{imp.where()} imports {imp.target}, which is upward: the bottom floor "
            f"({', '.join(m.split('.', 1)[1] for m in BOTTOM_FLOOR)}) may import of minisims only "
            f"itself (backend, atomic, ...)")


RULES = [
    _kernels_rule,
    _deny(("minisims.nn", "minisims.diffusion"),
          ("minisims.sims", "minisims.train") + EXPERIMENTS,
          "layers and diffusion know nothing of Algorithm 1 (sims.py), the training loop "
          "(train.py), the experiments or the command lines"),
    _deny(("minisims.nn",), ("minisims.diffusion",), "layers know nothing of diffusion"),
    _deny(("minisims.diffusion",), ("minisims.nn",),
          "samplers take a denoiser callable and know nothing of layers"),
    _bottom_floor_rule,
    _deny(("minisims.train",), ("minisims.sims",) + EXPERIMENTS,
          "train.py (loop, EMA, checkpoints) knows nothing of sims.py, the experiments or the "
          "command lines"),
]


def rule_violations(imports: list[Import]) -> list[str]:
    return [msg for imp in imports for rule in RULES if (msg := rule(imp)) is not None]


def find_cycles(imports: list[Import], known: set[str], within: str) -> list[str]:
    """One message per strongly connected group of modules inside ``within`` that import each
    other, with one cycle through them written out import by import."""
    graph = {m: [t for t in targets if _within(t, within)]
             for m, targets in import_graph(imports, known).items() if _within(m, within)}
    where = {}  # (importer, target) -> the first statement that draws this arrow
    for imp in imports:
        where.setdefault((imp.importer, imp.target), imp)
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def strongconnect(v):  # Tarjan's algorithm (recursion depth = module count: small)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for t in graph[v]:
            if t not in index:
                strongconnect(t)
                low[v] = min(low[v], low[t])
            elif t in on_stack:
                low[v] = min(low[v], index[t])
        if low[v] == index[v]:
            group = []
            while True:
                t = stack.pop()
                on_stack.discard(t)
                group.append(t)
                if t == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in graph:
        if v not in index:
            strongconnect(v)
    messages = []
    for group in sorted(groups):
        # shortest cycle through the group's first module, by breadth-first search inside it
        start, members = group[0], set(group)
        parent, frontier, end = {start: None}, [start], None
        while frontier and end is None:
            nxt = []
            for v in frontier:
                for t in graph[v]:
                    if t == start:
                        end = v
                        break
                    if t in members and t not in parent:
                        parent[t] = v
                        nxt.append(t)
                if end is not None:
                    break
            frontier = nxt
        path = [start]
        v = end
        while v is not None and v != start:
            path.insert(1, v)
            v = parent[v]
        path.append(start)
        steps = "\n".join(f"    {a} -> {b}   {where[(a, b)].where()}" for a, b in zip(path, path[1:]))
        messages.append(f"import cycle among {', '.join(group)}:\n{steps}")
    return messages


# ------------------------------------------------------------------------------------------------
# The tests
# ------------------------------------------------------------------------------------------------

def _fail_with(problems: list[str], what: str):
    assert not problems, f"{len(problems)} {what} (see /work/shared/notes/architecture.md):\n" + \
        "\n".join(problems)


def test_imports_point_down():
    _fail_with(rule_violations(project_imports()), "upward imports")


def test_kernels_have_no_import_cycles():
    imports = project_imports()
    _fail_with(find_cycles(imports, set(module_files(ROOT)), "kernels"), "import cycles in kernels/")


def test_minisims_has_no_import_cycles():
    imports = project_imports()
    _fail_with(find_cycles(imports, set(module_files(ROOT)), "minisims"), "import cycles in minisims/")


def test_every_source_file_was_seen():
    # guard against a checker that silently checks nothing (a moved root, a renamed package)
    files = module_files(ROOT)
    assert "kernels.conv2d" in files and "minisims.backend" in files, sorted(files)
    graph = import_graph(project_imports(), set(files))
    assert "kernels.conv2d" in graph["minisims.ops"], graph["minisims.ops"]  # the seam, inside functions


# The checker itself, on a small made-up tree where every rule is broken once.

def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for pkg in PACKAGES:
        (root / pkg).mkdir(exist_ok=True)
    return root


CLEAN = {
    "kernels/__init__.py": "",
    "kernels/conv2d.py": "import math\nimport numpy as np\nfrom ._common import f\n"
                         "def g():\n    from . import _numba\n",
    "kernels/_common.py": "from __future__ import annotations\nimport numpy\n",
    "kernels/_numba.py": "from numba import njit\nfrom ._common import f\n",
    "minisims/__init__.py": "",
    "minisims/backend.py": "import numpy as np\n",
    "minisims/atomic.py": "import os\n",
    "minisims/guidance.py": "from . import backend\n",
    "minisims/checkpoint.py": "from . import backend\nfrom .atomic import write\n",
    "minisims/data/__init__.py": "from .toy import sample\n",
    "minisims/data/toy.py": "from .. import backend\n",
    "minisims/nn/__init__.py": "from .conv import Conv2d\n",
    "minisims/nn/conv.py": "from kernels.conv2d import conv2d_forward\nfrom .. import backend\n",
    "minisims/diffusion/__init__.py": "from .samplers import edm_sampler\n",
    "minisims/diffusion/samplers.py": "from kernels.heun import stage\nfrom ..guidance import sims_combine\n",
    "minisims/train.py": "from . import backend\nfrom .nn import Conv2d\nfrom .checkpoint import save\n",
    "minisims/sims.py": "from .train import train\nfrom .diffusion import edm_sampler\nfrom . import nn\n",
    "minisims/loops/__init__.py": "from .loop import run\n",
    "minisims/loops/loop.py": "from ..sims import fit\n",
}


def _check_tree(root: Path):
    imports = project_imports(root)
    known = set(module_files(root))
    return (rule_violations(imports), find_cycles(imports, known, "kernels"),
            find_cycles(imports, known, "minisims"), import_graph(imports, known))


def test_checker_passes_a_clean_tree_and_resolves_relative_imports(tmp_path):
    rules, kcycles, mcycles, graph = _check_tree(_tree(tmp_path, CLEAN))
    assert rules == [] and kcycles == [] and mcycles == [], (rules, kcycles, mcycles)
    assert graph["kernels.conv2d"] == ["kernels._common", "kernels._numba"]  # the lazy one too
    assert graph["minisims.diffusion.samplers"] == ["minisims.guidance"]  # from ..guidance
    assert graph["minisims.data.toy"] == ["minisims.backend"]  # from .. import backend
    assert graph["minisims.data"] == ["minisims.data.toy"]  # __init__.py is the package module
    assert graph["minisims.sims"] == ["minisims.diffusion", "minisims.nn", "minisims.train"]
    assert graph["minisims.loops.loop"] == ["minisims.sims"]


def test_checker_catches_every_kind_of_upward_import(tmp_path):
    bad = dict(CLEAN)
    bad["kernels/_common.py"] += "def f():\n    from minisims import backend\n"  # lazy, still upward
    bad["kernels/_numba.py"] += "import scipy\n"
    bad["minisims/nn/conv.py"] += "from ..loops.loop import run\n"
    bad["minisims/nn/norm.py"] = "from ..diffusion import edm_sampler\n"
    bad["minisims/diffusion/samplers.py"] += "from ..sims import fit\n"
    bad["minisims/guidance.py"] += "from .nn import Conv2d\n"
    bad["minisims/data/toy.py"] += "from ..train import train\n"
    bad["minisims/train.py"] += "import minisims.sims\n"
    rules, _, _, _ = _check_tree(_tree(tmp_path, bad))
    expected = [
        ("kernels/_common.py:4: `from minisims import backend` (inside a function)", "minisims.backend"),
        ("kernels/_numba.py:3: `import scipy`", "scipy"),
        ("minisims/nn/conv.py:3: `from ..loops.loop import run`", "minisims.loops.loop"),
        ("minisims/nn/norm.py:1: `from ..diffusion import edm_sampler`", "minisims.diffusion"),
        ("minisims/diffusion/samplers.py:3: `from ..sims import fit`", "minisims.sims"),
        ("minisims/guidance.py:2: `from .nn import Conv2d`", "minisims.nn"),
        ("minisims/data/toy.py:2: `from ..train import train`", "minisims.train"),
        ("minisims/train.py:4: `import minisims.sims`", "minisims.sims"),
    ]
    for where, target in expected:
        assert any(m.startswith(where) and f"imports {target}" in m for m in rules), \
            f"no message for {where}:\n" + "\n".join(rules)
    assert len(rules) == len(expected), "\n".join(rules)


def test_checker_reports_cycles_with_their_path(tmp_path):
    bad = dict(CLEAN)
    bad["kernels/_common.py"] += "def f():\n    from .conv2d import g\n"  # lazy, still a cycle
    bad["minisims/atomic.py"] += "from .checkpoint import save\n"
    _, kcycles, mcycles, _ = _check_tree(_tree(tmp_path, bad))
    # one group (conv2d -> _numba -> _common -> conv2d is in it too), one shortest cycle written out
    assert len(kcycles) == 1 and "among kernels._common, kernels._numba, kernels.conv2d:" in kcycles[0], \
        kcycles
    assert "kernels._common -> kernels.conv2d   kernels/_common.py:4: `from .conv2d import g`" \
        in kcycles[0], kcycles[0]
    assert "kernels.conv2d -> kernels._common   kernels/conv2d.py:3" in kcycles[0], kcycles[0]
    assert len(mcycles) == 1 and "minisims.atomic, minisims.checkpoint" in mcycles[0], mcycles


def main():
    imports = project_imports()
    for module, targets in import_graph(imports, set(module_files(ROOT))).items():
        print(f"{module} -> {', '.join(targets)}" if targets else f"{module} ->")


if __name__ == "__main__":
    main()


def test_kernels_are_imported_by_their_installed_name():
    """kernels/ is installed as minisims.kernels only: an import of a top-level `kernels` works
    in the checkout (the root is on sys.path) but not where minisims is installed."""
    import re
    pattern = re.compile(r"^\s*(from|import)\s+kernels\b", re.M)
    found = [f"{p.relative_to(ROOT)}" for d in ("minisims", "tests", "benchmarks", "toy", "tutorials")
             for p in sorted((ROOT / d).rglob("*.py")) if pattern.search(p.read_text(encoding="utf-8"))]
    assert not found, f"import minisims.kernels, not kernels, in: {', '.join(found)}"
