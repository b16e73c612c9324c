"""Saving and loading model weights, atomically.

A checkpoint is an .npz of the model's state dict (parameter name -> array), plus a JSON string of
metadata, plus optional extra groups of arrays stored as ``group/name`` (the EMA weights, the
optimizer's moments). It is written through :func:`minisims.atomic.atomic_write`, so an
interrupted save never leaves a half-written file where a good one was. Only arrays and JSON are
stored: loading never unpickles anything.
"""
from __future__ import annotations

import json

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
    as "ema"); returns the metadata dict."""
    with np.load(path, allow_pickle=False) as z:
        prefix = "" if group is None else group + "/"
        names = [k for k in z.files if k != _META and ("/" not in k if group is None else k.startswith(prefix))]
        if group is not None and not names:
            raise ValueError(f"{path} has no {group!r} weights")
        state = {k[len(prefix):]: z[k] for k in names}
        meta = json.loads(str(z[_META])) if _META in z.files else {}
    model.load_state_dict(state)
    return meta
