"""Shared pieces of the command lines: typed argparse values, one-line errors, the options every
toy command has, presets as frozen dataclasses with flags that override them, and the entry
wrapper. ``python -m minisims.toy`` and the figure commands (``minisims/figures``) use these.

Ctrl-C while a command is still starting ends in one line too: a command spends its first second
importing NumPy, SciPy, Numba and matplotlib, and a Ctrl-C there would print a traceback from
inside some import. So every command's ``__main__`` calls :func:`during_startup` before its other
imports (this module imports only the standard library), and :func:`run_command` puts Python's
own handler back once the imports are done. Importing the library never changes a handler."""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import signal
import sys
import threading


class Parser(argparse.ArgumentParser):
    """argparse that reports bad input in one line (no usage dump) and exits with status 2,
    answers ``--version`` with minisims' version and NumPy's, and takes a value that starts with a
    minus sign after a space (``--omega -1,0,3``: see :func:`join_negative_values`). Subcommands'
    parsers are of this class too, so they take such values as well."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=version_line(self.prog))

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(join_negative_values(self, args), namespace)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


_NEGATIVE_VALUE = re.compile(r"-\.?\d")  # how -1, -0.5, -.5, -1e-3 and -1,0,3 begin


def join_negative_values(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """``["--omega", "-1,0,3"]`` -> ``["--omega=-1,0,3"]``, for every option of ``parser`` that
    takes one value. argparse reads any word that starts with '-' as an option unless it is a
    plain negative number (-1, -0.5), so a list such as -1,0,3 (or -1e-3) after a space fails with
    "expected one argument"; joined with '=' it is that option's value. Words after ``--`` and
    words that are options of ``parser`` are left alone."""
    options = parser._option_string_actions  # option string -> action (argparse's own table)
    out, i = [], 0
    while i < len(args):
        word = args[i]
        if word == "--":
            out.extend(args[i:])
            break
        action = options.get(word)
        if (action is not None and action.nargs is None and i + 1 < len(args)
                and _NEGATIVE_VALUE.match(args[i + 1]) and args[i + 1] not in options):
            out.append(f"{word}={args[i + 1]}")
            i += 2
        else:
            out.append(word)
            i += 1
    return out


def version_line(prog: str) -> str:
    """'<prog> (minisims 0.1.0, NumPy 2.4.6, Python 3.11.7)'."""
    import platform

    import numpy

    import minisims
    return f"{prog} (minisims {minisims.__version__}, NumPy {numpy.__version__}, " \
           f"Python {platform.python_version()})"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and the examples' line breaks; option help starts at column 32."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=32)


def command_parser(prog: str, description: str, examples: str) -> Parser:
    """A Parser with ``description`` above the options and ``examples`` below them."""
    return Parser(prog=prog, description=description, epilog=examples, formatter_class=_HelpFormatter)


# ---------------------------------------------------------------- typed values

# The largest values a command takes: past these a run could not fit in memory or finish, and
# would fail late with a traceback instead of at once with one line.
MAX_INT = 10 ** 10      # counts: images, budgets, epochs, runs, steps
MAX_SEED = 2 ** 32 - 1  # seeds are 32-bit words, as in EDM
MAX_ABS = 1e6           # real values: guidance weights, noise levels, learning rates, memory in MB
MAX_THREADS = 1024


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, where the OS says (else None)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if abs(v) > MAX_ABS:
        raise argparse.ArgumentTypeError(f"{text!r} is beyond the largest value taken, {MAX_ABS:g}")
    return v


def float_list(text: str) -> list[float]:
    """'3' or '0,0.5,1' -> [floats]; each value finite, at most MAX_ABS in size."""
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if not parts:
        raise argparse.ArgumentTypeError("expected one or more numbers, e.g. 3 or 0,1,2")
    return [finite_float(p) for p in parts]


def int_list(text: str) -> list[int]:
    """'125' or '125,250' -> [ints]; a value that is not a whole number (2.7) is refused, never
    truncated."""
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if not parts:
        raise argparse.ArgumentTypeError("expected one or more integers, e.g. 3 or 125,250")
    out = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{p!r} is not a number") from None
        if not (math.isfinite(v) and v.is_integer()):
            raise argparse.ArgumentTypeError(f"{p!r} is not an integer")
        if abs(v) > MAX_INT:
            raise argparse.ArgumentTypeError(f"{p!r} is beyond the largest value taken, {MAX_INT:,}")
        out.append(int(v))
    return out


def int_at_least(lo: int, hi: int = MAX_INT):
    """An integer in [lo, hi] (by default at most MAX_INT)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{v} is below the minimum {lo}")
        if v > hi:
            raise argparse.ArgumentTypeError(f"{v} is above the maximum {hi:,}")
        return v
    parse.__name__ = f"integer >= {lo}"
    return parse


def int_list_at_least(lo: int, hi: int = MAX_INT):
    """'125' or '125,250' -> [ints], each in [lo, hi]."""
    def parse(text: str) -> list[int]:
        values = int_list(text)
        for v in values:
            if not lo <= v <= hi:
                raise argparse.ArgumentTypeError(f"{v} is outside [{lo}, {hi:,}]")
        return values
    parse.__name__ = f"integers >= {lo}"
    return parse


def positive_float(text: str) -> float:
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{v} must be positive")
    return v


def writable_dir(path: str) -> str:
    """Create ``path`` if needed and check a file can be written there, before any work starts.
    The probe file has a unique name, so several commands starting into one folder do not race."""
    import tempfile
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".minisims-write-test-"):
            pass  # created and removed
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot write to {path!r}: {e.strerror or e}") from None
    return path


# ---------------------------------------------------------------- the options every toy command has

def add_formulation(p: argparse.ArgumentParser) -> None:
    p.add_argument("--formulation", choices=["ddpm", "edm", "vp"], default="ddpm",
                   help="ddpm: the paper's toy (eps-prediction, cosine, 40 steps, ancestral); "
                        "edm/vp: EDM loss and Heun sampler with EDM or VP preconditioning (default: ddpm)")


def add_run_options(p: argparse.ArgumentParser, outdir: str, quiet: bool = False) -> None:
    """--seed, --device, --outdir (default ``outdir``), --blas-threads and, with ``quiet``, --quiet."""
    p.add_argument("--seed", type=int_at_least(0, MAX_SEED), default=0, help="random seed (default: 0)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="cpu (NumPy) or gpu (CuPy) (default: cpu)")
    p.add_argument("--outdir", default=outdir, help=f"output folder (default: {outdir})")
    p.add_argument("--blas-threads", type=int_at_least(0, MAX_THREADS), default=1,
                   help="BLAS threads (per task when tasks run at once); the toy's matrices are small, "
                        "so one is fastest; 0 leaves the library default (default: 1)")
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def blas_limit(args) -> int | None:
    """--blas-threads as minisims.backend.blas_threads takes it (0 -> None: leave it alone)."""
    return args.blas_threads or None


def prepare_run(prog: str, args) -> str:
    """Switch to --device, then check --outdir is writable (the device first, so that a missing
    GPU leaves no empty folder behind), before any work starts; on failure exit with status 2 and
    one line. Returns the output folder."""
    from . import backend
    try:
        backend.use_device(args.device)
        outdir = writable_dir(args.outdir)
    except (argparse.ArgumentTypeError, backend.BackendError) as e:
        fail(prog, str(e), 2)
    return outdir


# ---------------------------------------------------------------- presets

def add_preset(p: argparse.ArgumentParser, presets: dict, default: str = "cpu") -> None:
    p.add_argument("--preset", choices=sorted(presets), default=default,
                   help=f"sizes; flags given beside it override its values (default: {default})")


def override(preset, args):
    """``preset`` (a frozen dataclass) with every field that has a flag of the same name given on
    the command line (not None) replaced by the flag's value; lists become tuples."""
    given = {}
    for f in dataclasses.fields(preset):
        v = getattr(args, f.name, None)
        if v is not None:
            given[f.name] = tuple(v) if isinstance(v, list) else v
    return dataclasses.replace(preset, **given)


def from_dict(cls, d: dict):
    """A preset dataclass from its ``dataclasses.asdict`` form (e.g. read back from JSON)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})


# ---------------------------------------------------------------- exits

def during_startup() -> None:
    """Make Ctrl-C (SIGINT) end the process at once with "interrupted" and status 130, until
    :func:`run_command` takes over: nothing has run yet that needs cleaning up, only imports."""
    signal.signal(signal.SIGINT, _exit_interrupted)


def _exit_interrupted(signum, frame):
    os.write(2, b"interrupted\n")
    os._exit(130)


def fail(prog: str, message: str, code: int = 1):
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


def run_command(main, argv=None, prog: str | None = None):
    """``sys.exit(main(argv))``, with the ways a run can end early each ending in one line:

    Ctrl-C            "interrupted", status 130 (a command with a worker pool cancels its pending
                      tasks before the KeyboardInterrupt reaches here; threads still running are
                      not waited for, what finished is already on disk)
    a closed pipe     (e.g. ``| head -1``) silence, status 1; results are written before printing
    an OSError        (a full disk, an unreadable file) "<prog>: error: <reason>: <file>", status 1
    """
    prog = prog or os.path.basename(sys.argv[0])
    try:
        if threading.current_thread() is threading.main_thread():
            # from here on Ctrl-C is a KeyboardInterrupt, handled below (a signal that arrived
            # just before is delivered to this handler, so it is handled below too)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if not getattr(sys.unraisablehook, "ends_on_ctrl_c", False):  # once, not a chain
                sys.unraisablehook = _interrupted_in_a_callback(sys.unraisablehook)
        code = main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except KeyboardInterrupt:
        _exit_now("interrupted", 130)
    except BrokenPipeError:
        # point stdout at /dev/null so the interpreter's final flush cannot raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        _exit_now(f"{prog}: error: {e.strerror or e}{where}", 1)
    sys.exit(code)


def _interrupted_in_a_callback(previous):
    """An unraisable-exception hook: a Ctrl-C that lands inside a C callback (numba's compiler
    writing its cache, through llvmlite's ctypes callback) cannot be raised there, and Python
    would print it as "Exception ignored ... KeyboardInterrupt" with a traceback and carry on;
    this ends the run as any Ctrl-C does. Other unraisable exceptions go to ``previous``."""
    def hook(args):
        if args.exc_type is not None and issubclass(args.exc_type, KeyboardInterrupt):
            _exit_now("interrupted", 130, at_once=True)
        previous(args)
    hook.ends_on_ctrl_c = True
    return hook


def _exit_now(message: str, code: int, at_once: bool = False):
    """Print ``message`` on stderr and exit with ``code``. Worker threads that are still running
    (a thread pool interrupted mid-task) would make a normal exit wait for them, so then the
    process ends at once with os._exit, as it does with ``at_once`` (from where an exception
    cannot end the run: an unraisable-exception hook). Progress bars still on the screen are
    closed first, so the message starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()
    print(message, file=sys.stderr)
    if at_once or any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        try:
            sys.stdout.flush()
        except OSError:
            pass
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
