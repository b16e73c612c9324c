"""Saving and loading model weights, atomically.

A checkpoint is an .npz of the model's state dict plus a JSON string of metadata. It is written to
a temporary file in the same folder and moved into place with os.replace, so an interrupted save
never leaves a half-written file where a good one was.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from . import backend

_META = "__meta__"


def save_checkpoint(path: str, model, meta: dict | None = None) -> None:
    arrays = {name: backend.to_numpy(p) for name, p in model.state_dict().items()}
    arrays[_META] = np.array(json.dumps(meta or {}))
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path: str, model) -> dict:
    """Load weights into ``model`` in place; returns the metadata dict."""
    with np.load(path, allow_pickle=False) as z:
        state = {k: z[k] for k in z.files if k != _META}
        meta = json.loads(str(z[_META])) if _META in z.files else {}
    model.load_state_dict(state)
    return meta
