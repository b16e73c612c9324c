"""A sweep's finished cells on disk, one file each, so that a killed sweep can be resumed.

# C cells

    <folder>/sweep.json               the settings the sweep runs under, and whether it finished
    <folder>/<method>_ds<N>_w<w>.npz  one cell, written atomically the moment it finishes
                                      (minisims.loops.save_results: its LoopConfig and the
                                      sweep's settings are inside)

A sweep killed at any moment (even SIGKILL) loses only the cells it was computing: ``--resume``
loads the finished ones, checks they ran under the same settings, and runs the rest. A folder
that holds an unfinished sweep is never started over silently; the table and the figure are
built from the files, whichever run wrote them.
"""
from __future__ import annotations

import json
import os
import re

from ..atomic import write_json
from ..loops.loop import Cell, LoopConfig
from ..loops.results import load_results, save_results

SETTINGS = "sweep.json"
_CELL_FILE = re.compile(r"(standard|sims)_ds[0-9]+_w[-+0-9.e]+\.npz")  # ours, and only ours


def cell_file(cell: Cell) -> str:
    return f"{cell.method}_ds{cell.n_synth}_w{cell.w:g}.npz"


def _as_json(obj):
    """``obj`` as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(obj))


def _differences(there: dict, here: dict, most: int = 3) -> str:
    """'runs: 2 there, 4 here; seed: ...' for the first ``most`` keys that differ."""
    keys = [k for k in sorted(set(there) | set(here)) if there.get(k) != here.get(k)]
    text = "; ".join(f"{k}: {there.get(k)} there, {here.get(k)} here" for k in keys[:most])
    return text + ("; ..." if len(keys) > most else "")


class SweepFolder:
    """The cells folder of one sweep run under ``settings`` (a flat dict of everything that
    changes the results: sizes, cells, formulation, seed, device; not the chunk size or the
    executor, which change only memory and speed)."""

    def __init__(self, folder: str, settings: dict):
        self.folder = folder
        self.settings = _as_json(settings)
        self.where = os.path.dirname(folder.rstrip(os.sep)) or "."  # the run's output folder

    def _state(self) -> dict | None:
        path = os.path.join(self.folder, SETTINGS)
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return None
        except ValueError as e:  # bad JSON or bad UTF-8
            raise ValueError(f"{path} is corrupt ({type(e).__name__}: {e})") from None
        if not (isinstance(state, dict) and isinstance(state.get("settings"), dict) and "finished" in state):
            raise ValueError(f"{path} is not a sweep's settings file")
        return state

    def check(self, resume: bool) -> None:
        """Before any work: with ``resume``, the folder must hold a sweep of the same settings;
        without, it must not hold an unfinished one. ValueError (one line) otherwise."""
        state = self._state()
        if resume:
            if state is None:
                raise ValueError(f"nothing to resume in {self.where!r}: no {self.folder}/{SETTINGS}")
            if state["settings"] != self.settings:
                raise ValueError(f"cannot resume {self.where}: it ran with other settings "
                                 f"({_differences(state['settings'], self.settings)}); repeat the "
                                 f"command that started it, or choose another --outdir")
        elif state is not None and not state["finished"]:
            raise ValueError(f"{self.where} holds an interrupted sweep: --resume {self.where} "
                             f"continues it, or choose another --outdir")

    def start(self, fresh: bool, stale=()) -> None:
        """Record the settings (unfinished). ``fresh``: first remove the cells of an earlier
        sweep in the folder and the ``stale`` files (its outputs), so none is taken for ours."""
        os.makedirs(self.folder, exist_ok=True)
        if fresh:
            for name in os.listdir(self.folder):
                if _CELL_FILE.fullmatch(name):
                    os.remove(os.path.join(self.folder, name))
            for path in stale:
                if os.path.exists(path):
                    os.remove(path)
        write_json(os.path.join(self.folder, SETTINGS), {"settings": self.settings, "finished": False})

    def save(self, cfg: LoopConfig, cell: Cell, result) -> None:
        """One finished cell, atomically, with the settings it ran under."""
        save_results(os.path.join(self.folder, cell_file(cell)), cfg, {cell: result},
                     {"sweep": self.settings})

    def load(self, cfg: LoopConfig, cells) -> dict:
        """{cell: LoopResult} of the ``cells`` whose file is there, in the order of ``cells``. A
        file that ran under other settings or is damaged raises ValueError naming it."""
        out = {}
        for cell in cells:
            path = os.path.join(self.folder, cell_file(cell))
            if not os.path.exists(path):
                continue
            file_cfg, results, meta = load_results(path)
            if file_cfg != cfg or meta.get("sweep") != self.settings or list(results) != [cell]:
                raise ValueError(f"{path} is not a cell of this sweep (other settings): remove it "
                                 f"or choose another --outdir")
            out[cell] = results[cell]
        return out

    def finish(self) -> None:
        write_json(os.path.join(self.folder, SETTINGS), {"settings": self.settings, "finished": True})
