"""Ctrl-C while a command is still starting: one line and exit 130, never a traceback.

A command spends its first second importing NumPy, SciPy, Numba and matplotlib; a Ctrl-C there
would raise KeyboardInterrupt inside some import and print a long traceback. Every command
calls :func:`during_startup` before its other imports (this module imports only the standard
library): SIGINT then ends the process at once with "interrupted" and status 130, until
:func:`minisims.cli_util.run_command` puts Python's own handler back, from where on a
KeyboardInterrupt is handled there (pools cancelled, what finished kept). Only a command's
``__main__`` calls it; importing the library never changes a signal handler.
"""
from __future__ import annotations

import os
import signal


def _exit_interrupted(signum, frame):
    os.write(2, b"interrupted\n")
    os._exit(130)  # nothing has run yet that needs cleaning up: only imports


def during_startup() -> None:
    """Make SIGINT end the process with one line until run_command takes over."""
    signal.signal(signal.SIGINT, _exit_interrupted)


def restore() -> None:
    """Python's own SIGINT handler (KeyboardInterrupt) again."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
