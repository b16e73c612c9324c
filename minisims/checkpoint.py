"""Saving and loading model weights, atomically.

A checkpoint is an .npz of the model's state dict (parameter name -> array), plus a JSON string of
metadata, plus optional extra groups of arrays stored as ``group/name`` (the EMA weights, the
optimizer's moments). It is written through :func:`minisims.atomic.atomic_write`, so an
interrupted save never leaves a half-written file where a good one was. Only arrays and JSON are
stored: loading never unpickles anything.

Loading reads and checks the whole file, then every array against the model, before the model
changes: a missing, truncated, damaged or foreign file, or weights of another shape, raise one
ValueError that names the file (a command line prints it as its one-line message), and the model
keeps the weights it had.
"""
from __future__ import annotations

import json
import zipfile
import zlib

import numpy as np

from . import backend
from .atomic import atomic_write

_META = "__meta__"


def save_checkpoint(path: str, model, meta: dict | None = None, extra: dict | None = None) -> None:
    """Write ``model``'s weights (and ``extra``: {group: {name: array}}) to ``path`` atomically."""
    arrays = {name: backend.to_numpy(p) for name, p in model.state_dict().items()}
    for group, state in (extra or {}).items():
        if "/" in group:
            raise ValueError(f"extra group names cannot contain '/': {group!r}")
        arrays.update({f"{group}/{name}": backend.to_numpy(a) for name, a in state.items()})
    arrays[_META] = np.array(json.dumps(meta or {}))
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_checkpoint(path: str, model, group: str | None = None) -> dict:
    """Load weights into ``model`` in place (the model's own weights, or an extra ``group`` such
    as "ema"); returns the metadata dict.

    All or nothing: on any problem (the file missing or unreadable, not an .npz, truncated or
    damaged, no such group, names or shapes that do not fit the model) a ValueError naming
    ``path`` is raised and ``model`` is unchanged.
    """
    state, meta = read_checkpoint(path, group)
    try:
        model.load_state_dict(state)
    except ValueError as e:
        raise ValueError(f"{path} does not fit this model: {e}") from None
    return meta


# What np.load and reading a member raise on a damaged or foreign file: OSError (missing,
# unreadable, a folder), EOFError (empty), BadZipFile (truncated, bad CRC), zlib.error (a
# compressed member damaged), ValueError (a bad .npy header, bytes that are neither npy nor zip),
# KeyError (a member listed but absent).
_UNREADABLE = (OSError, EOFError, zipfile.BadZipFile, zlib.error, ValueError, KeyError)


def read_checkpoint(path: str, group: str | None = None) -> tuple[dict, dict]:
    """Every array of ``group`` (None: the model's own) in the checkpoint at ``path``, read and
    CRC-checked, and its metadata; a ValueError naming ``path`` if the file cannot give them."""
    prefix = "" if group is None else group + "/"
    try:
        z = np.load(path, allow_pickle=False)
    except _UNREADABLE as e:
        raise _unreadable(path, e) from e
    if not isinstance(z, np.lib.npyio.NpzFile):  # an .npy file holds one bare array
        raise ValueError(f"cannot load checkpoint {path}: a single .npy array, not an .npz checkpoint")
    with z:
        names = [k for k in z.files if k != _META and ("/" not in k if group is None else k.startswith(prefix))]
        if group is not None and not names:
            raise ValueError(f"{path} has no {group!r} weights")
        try:
            state = {k[len(prefix):]: z[k] for k in names}  # reading a member checks its CRC
            meta = json.loads(str(z[_META])) if _META in z.files else {}
        except _UNREADABLE as e:  # json.JSONDecodeError is a ValueError
            raise _unreadable(path, e) from e
    if not isinstance(meta, dict):
        raise ValueError(f"cannot load checkpoint {path}: its metadata is not a JSON object")
    return state, meta


def checkpoint_groups(path: str) -> tuple[set, dict]:
    """The extra groups a checkpoint holds (e.g. {"ema", "adam_m"}) and its metadata, reading no
    weights; a ValueError naming ``path`` if it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as z:
            groups = {k.split("/", 1)[0] for k in z.files if "/" in k}
            meta = json.loads(str(z[_META])) if _META in z.files else {}
    except (AttributeError, TypeError):  # an .npy file: no members, no context manager
        raise ValueError(f"cannot load checkpoint {path}: a single .npy array, not an .npz checkpoint") from None
    except _UNREADABLE as e:
        raise _unreadable(path, e) from e
    if not isinstance(meta, dict):
        raise ValueError(f"cannot load checkpoint {path}: its metadata is a {type(meta).__name__}, "
                         "not a record: the file was not written by minisims, or is damaged")
    return groups, meta


def _unreadable(path: str, e: BaseException) -> ValueError:
    """One line saying why ``path`` cannot be read, without numpy's allow_pickle hint."""
    if isinstance(e, OSError) and e.strerror:
        why = e.strerror  # "No such file or directory", "Permission denied", "Is a directory"
    elif isinstance(e, ValueError) and "pickle" in str(e):  # neither npy nor zip: np.load's last guess
        why = "not an .npz file"
    elif isinstance(e, EOFError):
        why = "the file is empty or truncated"
    else:
        why = f"the file is damaged or truncated ({type(e).__name__}: {e})"
    return ValueError(f"cannot load checkpoint {path}: {why}")
