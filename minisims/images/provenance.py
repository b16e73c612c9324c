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

The records of an image run's files (each step's settings, as minisims/images/pipeline.py makes
them): :func:`base_record`, :func:`synth_record`, :func:`aux_record`, :func:`stats_record`,
:func:`samples_record`; :func:`stored` reads one back and :func:`digest` gives its digest.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import asdict

import numpy as np

from ..checkpoint import checkpoint_groups
from ..folder_lock import command_line
from ..sims import SYNTH_SEEDS_FROM


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
    return {**core, "command": command_line(),
            "versions": versions(), "digest": digest_of(core)}


def check(path: str, want: dict) -> None:
    """ProvenanceError unless the record stored in ``path`` has ``want``'s made_by, settings and
    inputs; the message names the first entry that differs and says how to start afresh."""
    found, advice = stored(path), afresh(path)
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


# ---------------------------------------------------------------- the files of an image run

def base_record(p, seed: int, data_digest: str) -> dict:
    return record("train", {
        "seed": seed, "resolution": p.resolution, "n_train": p.n_train, "unet": asdict(p.unet_config()),
        "formulation": p.formulation, "sigma_data": p.sigma_data, "batch": p.batch, "lr": p.lr,
        "base_images": p.base_images, "warmup_images": p.warmup_images,
        "ema_half_life_images": p.ema_half_life_images, "hflip": p.hflip}, {"data": data_digest})


def synth_record(p, base_digest: str) -> dict:
    return record("synth", {
        "n_synth": p.n_synth, "first_seed": SYNTH_SEEDS_FROM, "num_steps": p.num_steps,
        "formulation": p.formulation, "sigma_data": p.sigma_data}, {"base": base_digest})


def aux_record(p, budget: int, seed: int, base_digest: str, s_digest: str) -> dict:
    return record("aux", {
        "budget": budget, "seed": seed, "aux_lr": p.aux_lr, "batch": p.batch,
        "aux_trainable": p.aux_trainable, "hflip": p.hflip, "formulation": p.formulation,
        "sigma_data": p.sigma_data}, {"base": base_digest, "S": s_digest})


def stats_record(p, features: str, data_digest: str) -> dict:
    return record("reference statistics", {
        "features": features, "resolution": p.resolution, "n_train": p.n_train}, {"data": data_digest})


def samples_record(p, w: float, seeds, base_digest: str, aux_digest: str | None) -> dict:
    seeds = list(seeds)
    return record("sample", {
        "w": float(w), "seeds": [seeds[0], seeds[-1], len(seeds)] if seeds else [],
        "num_steps": p.num_steps, "interval": p.interval, "formulation": p.formulation,
        "sigma_data": p.sigma_data},
        {"base": base_digest, **({} if aux_digest is None else {"aux": aux_digest})})


def stored(path: str) -> dict | None:
    """The provenance record of a file of the run folder: an .npz's ``provenance`` entry, or a
    checkpoint's metadata's (None where there is none)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "provenance" in z.files:
                return json.loads(str(z["provenance"]))
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, AttributeError, TypeError) as e:
        raise ProvenanceError(f"{path} cannot be read ({type(e).__name__}): {afresh(path)}") from None
    return checkpoint_groups(path)[1].get("provenance")


def digest(path: str) -> str:
    """The digest recorded in ``path`` (a step's input), or a one-line error."""
    rec = stored(path)
    if not isinstance(rec, dict) or "digest" not in rec:
        raise ProvenanceError(f"{path} has no provenance record (written before minisims "
                                         "recorded one): remove it to make it again")
    return rec["digest"]


def afresh(path: str) -> str:
    return f"remove {path} (or choose another --outdir) to start afresh"
