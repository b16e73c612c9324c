"""One writer per run folder: a lock file that names its owner.

    with folder_lock(outdir, log):   # FolderInUse (one line) if another command holds it
        ...                          # the command's work; the lock goes when the block ends

The lock is ``<folder>/.minisims.lock``, holding the owner's PID, host and command. It is
written under a name of its own first and then linked into place, which fails if the lock
exists: of two commands started together one wins, and no one reads a half-written lock. A
lock left by a process that no longer runs on this host (killed, or the machine rebooted) is
taken over, and the log says so; one from another host cannot be checked, so the message says
how to remove it.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time

LOCK_NAME = ".minisims.lock"


class FolderInUse(RuntimeError):
    """Another command is writing into the folder."""


def command_line() -> str:
    """This process's command as it was typed: ``python -m minisims.images sims ...``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    prog = f"python -m {spec.name.removesuffix('.__main__')}" if spec else f"python {sys.argv[0]}"
    return " ".join([prog, *sys.argv[1:]])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _owner(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            owner = json.load(f)
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):  # being written this instant, or damaged
        return {}


@contextlib.contextmanager
def folder_lock(folder: str, log=print):
    path = os.path.join(folder, LOCK_NAME)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "command": command_line(),
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    mine, taken = f"{path}.{me['pid']}", False
    try:
        with open(mine, "w", encoding="utf-8") as f:
            json.dump(me, f)
        _take(folder, path, mine, me, log)
        taken = True
        yield path
    finally:  # once taken the lock is ours: nobody takes over one whose owner runs
        for name in (mine, path) if taken else (mine,):
            with contextlib.suppress(FileNotFoundError):
                os.remove(name)


def _take(folder: str, path: str, mine: str, me: dict, log) -> None:
    for attempt in range(2):
        try:
            os.link(mine, path)  # atomic: FileExistsError if another command holds the lock
            return
        except FileExistsError:
            owner = _owner(path)
            pid, host = owner.get("pid"), owner.get("host")
            stale = isinstance(pid, int) and host == me["host"] and not _alive(pid)
            if not owner:  # empty or damaged (not written by this module, which links it whole)
                with contextlib.suppress(OSError):
                    stale = time.time() - os.path.getmtime(path) > 5
            if not stale or attempt:
                who = (f"PID {pid} on {host} ({owner.get('command', '?')}, since "
                       f"{owner.get('since', '?')})" if pid else "another command")
                raise FolderInUse(f"{folder} is in use by {who}: wait for it to end, or choose "
                                  f"another --outdir (if that process is gone, remove {path})") from None
            log(f"taking over {path}: " + (f"PID {pid} on this host no longer runs" if pid else
                                            "an unreadable lock file more than 5 s old"))
            for name in (path, f"{path}.{pid}"):  # the lock, and the dead owner's copy of it
                with contextlib.suppress(FileNotFoundError):
                    os.remove(name)

