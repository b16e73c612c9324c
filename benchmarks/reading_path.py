"""What a reader of a command must follow: the lines and files of minisims/ and kernels/ the
command executes, counted by coverage.py.

A line counts once however often it runs. A module counts as soon as any of its lines runs, even
if that is only its imports and ``def`` lines: a reader who follows the command meets it.

    python benchmarks/reading_path.py -- -m minisims.toy --omega 3 --runs 2
    python benchmarks/reading_path.py --files -- -m minisims.images sims --preset tiny --data PATH

Everything after ``--`` is the command, run by this Python in a child process from the
repository root. It prints "N lines in F files" (with --files, each file's count too; with
--json, one JSON object). docs/modules.md has the counts of the toy and of the image command.
Needs coverage.py (it comes with the test extras).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = ("minisims", "kernels")  # minisims/kernels links to kernels/: counted once, as kernels/


def reading_path(command: list[str]) -> dict[str, int]:
    """{file relative to the repository root: lines executed} for ``python <command>``."""
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "coverage.data")
        include = ",".join(f"{ROOT / tree}/*" for tree in TREES)
        run = subprocess.run([sys.executable, "-m", "coverage", "run", f"--data-file={data}",
                              f"--include={include}", *command], cwd=ROOT, capture_output=True,
                             text=True)
        if run.returncode != 0:
            tail = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"the command exited with status {run.returncode}: {tail}")
        report = str(Path(tmp) / "coverage.json")
        subprocess.run([sys.executable, "-m", "coverage", "json", f"--data-file={data}", "-q",
                        "-o", report], cwd=ROOT, check=True)
        files = json.loads(Path(report).read_text())["files"]
    counts = {}
    for name, entry in files.items():
        path = (ROOT / name).resolve().relative_to(ROOT).as_posix()  # names are relative to ROOT
        if entry["summary"]["covered_lines"] > 0:
            counts[path] = entry["summary"]["covered_lines"]
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("usage: python benchmarks/reading_path.py [--files | --json] -- COMMAND...", file=sys.stderr)
        return 2
    at = argv.index("--")
    p = argparse.ArgumentParser(prog="python benchmarks/reading_path.py")
    p.add_argument("--files", action="store_true", help="also each file's count")
    p.add_argument("--json", action="store_true", help="one JSON object: lines, files, per file")
    args = p.parse_args(argv[:at])
    try:
        counts = reading_path(argv[at + 1:])
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 1
    total = sum(counts.values())
    if args.json:
        print(json.dumps({"lines": total, "files": len(counts), "per_file": counts}))
        return 0
    print(f"{total:,} lines in {len(counts)} files")
    if args.files:
        for path, n in counts.items():
            print(f"  {n:5d}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
