"""Atomic file writes: the one place a result or checkpoint file is written.

The content goes to a temporary file in the destination's folder, is flushed and fsynced, and is
then moved into place with ``os.replace`` (atomic on POSIX and Windows). An interrupted or failed
write leaves the previous file untouched and removes the temporary one, so a user never finds a
half-written checkpoint or results file where a good one was.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb"):
    """``with atomic_write(path) as f: ...`` writes ``path`` all at once or not at all.

    ``mode`` is "wb" (binary) or "w" (text, UTF-8). The file appears only when the block ends
    without an exception.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]  # np.savez appends .npz to names without it
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, obj, indent: int = 1) -> None:
    """``obj`` as JSON at ``path``, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent)
