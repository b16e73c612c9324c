"""What made each file of an image run folder, and when a file may be reused.

Every file a step writes carries a provenance record (a checkpoint in its metadata, an .npz under
the key ``provenance``, a sample folder in ``provenance.json``)::

    {"made_by": "train", "command": "python -m minisims.images sims ...",
     "settings": {"seed": 0, "base_images": 128, ...},     # what determines the file's contents
     "inputs": {"data": "3f2a...", ...},                    # digests of what it was made from
     "versions": {"minisims": "0.1.0", "numpy": "2.4.6", "array": "numpy 2.4.6"},
     "digest": "9c41..."}                                   # of made_by, settings and inputs

The digest is what a later step records as its input (synthetic.npz records the base's, each
aux model the base's and S's), so a chain of files is checked link by link without reading a
weight. A step reuses a file, or resumes an interrupted one, only when the record it would write
now has the same made_by, settings and inputs; otherwise :class:`ProvenanceError` names the file
and the first entry that differs. The versions are recorded, not compared: a file made on the
GPU may be sampled on the CPU, and NumPy's patch releases change no result of these steps.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np


class ProvenanceError(ValueError):
    """A file in the run folder was made otherwise than this run would make it."""


def digest_of(value) -> str:
    """sha256 of the canonical JSON of ``value`` (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def data_digest(images) -> str:
    """sha256 of uint8 images (N,H,W,C), shape included: the data a step was given."""
    images = np.ascontiguousarray(images)
    h = hashlib.sha256(f"{images.dtype}{images.shape}".encode())
    h.update(memoryview(images).cast("B"))
    return h.hexdigest()


def versions() -> dict:
    from .. import backend
    import minisims
    xp = backend.xp()
    return {"minisims": minisims.__version__, "numpy": np.__version__,
            "array": f"{xp.__name__} {xp.__version__}"}


def record(made_by: str, settings: dict, inputs: dict) -> dict:
    """The provenance of a file this run makes now (settings made JSON-plain: tuples to lists)."""
    core = json.loads(json.dumps({"made_by": made_by, "settings": settings, "inputs": inputs}))
    return {**core, "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
            "versions": versions(), "digest": digest_of(core)}


def check(path: str, found: dict | None, want: dict, advice: str) -> None:
    """ProvenanceError unless ``found`` (the record read from ``path``) has ``want``'s made_by,
    settings and inputs; the message names the first entry that differs and ends in ``advice``."""
    if not isinstance(found, dict) or "settings" not in found:
        raise ProvenanceError(f"{path} has no provenance record (written by another program, or "
                              f"before minisims recorded one): {advice}")
    for part in ("made_by", "settings", "inputs"):
        a, b = found.get(part), want[part]
        if a == b:
            continue
        if not (isinstance(a, dict) and isinstance(b, dict)):
            raise ProvenanceError(f"{path} was made by the {a} step, not {b}: {advice}")
        key = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
        if part == "inputs":
            raise ProvenanceError(f"{path} was made from another {key} than this run's: {advice}")
        raise ProvenanceError(f"{path} was made with {key} = {_show(a.get(key))}, this run asks "
                              f"for {_show(b.get(key))}: {advice}")


def _show(v) -> str:
    return "(none)" if v is None else json.dumps(v)
