"""Atomic file writes: the one place a result or checkpoint file is written.

The content goes to a temporary file in the destination's folder, is flushed and fsynced, and is
then moved into place with ``os.replace`` (atomic on POSIX and Windows). An interrupted or failed
write leaves the previous file untouched and removes the temporary one, so a user never finds a
half-written checkpoint or results file where a good one was.

The temporary file is ``.tmp-<pid>-<16 hex>`` plus the destination's extension, created with mode
0o666 so that the operating system applies the umask (and any default ACL) itself: the final file
has the permissions of any other file the user creates (``tempfile.mkstemp`` would give 0600).

No temporary file outlives its process where Python gets a say:

- an exception, Ctrl-C (KeyboardInterrupt) or ``sys.exit`` inside the block removes it on the way
  out, and an ``atexit`` hook removes any still registered when the interpreter exits;
- SIGTERM: at the first write (from the main thread) a handler is installed if SIGTERM still has
  its default action (SIG_DFL); it removes the open temporaries, restores SIG_DFL and sends
  SIGTERM again, so the process still ends the way it would have (killed by SIGTERM, exit status
  143 in a shell). A handler the program installed itself is left alone. Python runs handlers
  between bytecodes of the main thread, so a process busy in one long C call (a big matrix
  product) ends when that call returns rather than at once.
- kill -9 (SIGKILL), a power cut or a crash of the interpreter run no code at all. For those, a
  writer sweeps the destination folder (once per folder and process, on POSIX) and removes
  temporaries of this module's naming pattern that are older than an hour and whose process
  (the PID in the name) is no longer alive. Files of any other name are never touched; a PID that
  was reused by a new process only delays the sweep.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import secrets
import signal
import threading
import time

_TMP_PREFIX = ".tmp-"
_TMP_NAME = re.compile(r"\.tmp-(?P<pid>[0-9]+)-[0-9a-f]{16}(\.[^/\\]*)?")  # ours, and only ours
STALE_AFTER_S = 3600.0  # a temporary untouched this long whose process is gone is swept

_open_temps: set[str] = set()  # temporaries of this process still being written
_swept_folders: set[str] = set()
_sigterm_installed = False


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb"):
    """``with atomic_write(path) as f: ...`` writes ``path`` all at once or not at all.

    ``mode`` is "wb" (binary) or "w" (text, UTF-8). The file appears only when the block ends
    without an exception; its permissions follow the umask.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]  # np.savez appends .npz to names without it
    _install_sigterm_cleanup()
    _sweep_stale_temps(folder)
    fd, tmp = _create_temp(folder, suffix)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    finally:
        _open_temps.discard(tmp)


def json_safe(obj):
    """``obj`` with every NaN or infinite float replaced by None, so that the JSON written is valid
    (json writes a bare NaN otherwise, which strict readers refuse)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: str, obj, indent: int = 1) -> None:
    """``obj`` as JSON at ``path``, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent)


def _create_temp(folder: str, suffix: str) -> tuple[int, str]:
    """Create ``folder/.tmp-<pid>-<random><suffix>`` exclusively; returns (fd, path).

    The path is registered before the file exists, so a signal arriving just after creation still
    finds it. Mode 0o666 lets the kernel apply the umask: no need to read it (reading it means
    setting it, a race with other threads).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{suffix}")
        _open_temps.add(tmp)
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # 64 random bits: practically never
            _open_temps.discard(tmp)
        except BaseException:  # e.g. Ctrl-C as os.open returns: the file may exist, 0 bytes
            with contextlib.suppress(OSError):
                os.remove(tmp)
            _open_temps.discard(tmp)
            raise
    raise FileExistsError(f"could not create a temporary file in {folder}")


def _remove_open_temps() -> None:
    """Remove every temporary this process is still writing (at exit, or on SIGTERM)."""
    for tmp in tuple(_open_temps):
        with contextlib.suppress(OSError):
            os.remove(tmp)
    _open_temps.clear()


atexit.register(_remove_open_temps)


def _on_sigterm(signum, frame):
    """Remove the open temporaries, then die of the signal as the default action would."""
    _remove_open_temps()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_sigterm_cleanup() -> None:
    """Install :func:`_on_sigterm` once, from the main thread, if SIGTERM has its default action."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    _sigterm_installed = True
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (POSIX: signal 0 checks without sending anything)."""
    if pid <= 0:
        return True  # not a PID we wrote: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists but belongs to another user
        return True
    return True


def _sweep_stale_temps(folder: str, now: float | None = None) -> list[str]:
    """Remove this module's temporaries in ``folder`` left by dead processes (kill -9, a crash)
    and untouched for :data:`STALE_AFTER_S`; returns the names removed. Once per folder per
    process, POSIX only (``os.kill(pid, 0)`` would end the process on Windows)."""
    if os.name != "posix" or folder in _swept_folders:
        return []
    _swept_folders.add(folder)
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        m = _TMP_NAME.fullmatch(entry.name)
        if not m or int(m["pid"]) == os.getpid():
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if now - entry.stat(follow_symlinks=False).st_mtime < STALE_AFTER_S or _pid_alive(int(m["pid"])):
                continue
            os.remove(entry.path)
            removed.append(entry.name)
        except OSError:  # removed by another sweeper, or not ours to remove
            continue
    return removed
