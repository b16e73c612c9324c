"""Shared pieces of the command lines: typed argparse values, one-line errors, output folders."""
from __future__ import annotations

import argparse
import math
import os
import sys


class Parser(argparse.ArgumentParser):
    """argparse that reports bad input in one line (no usage dump) and exits with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def float_list(text: str) -> list[float]:
    """'3' or '0,0.5,1' -> [floats]; each value finite."""
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if not parts:
        raise argparse.ArgumentTypeError("expected one or more numbers, e.g. 3 or 0,1,2")
    return [finite_float(p) for p in parts]


def int_at_least(lo: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{v} is below the minimum {lo}")
        return v
    parse.__name__ = f"integer >= {lo}"
    return parse


def positive_float(text: str) -> float:
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{v} must be positive")
    return v


def writable_dir(path: str) -> str:
    """Create ``path`` if needed and check a file can be written there, before any work starts."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".minisims-write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot write to {path!r}: {e.strerror or e}") from None
    return path


def fail(prog: str, message: str, code: int = 1):
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)
