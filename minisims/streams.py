"""Named random streams: one independent generator per (experiment coordinates, purpose).

An experiment that trains many models (runs in chunks, generations of a loop, steps of Algorithm
1) gives each purpose its own stream, keyed by the seed and integer coordinates only, never by a
setting that is swept (w, |D_s|, the method). Two cells of a sweep then share the real data and
the generation-1 base model of a run (common random numbers), and switching guidance on or off
never shifts another stream.

    streams = Streams(("data", "base", "aux", "sample"))
    rng = streams.rng(seed, chunk, generation, "base")            # backend generator
    rng = streams.rng(seed, chunk, generation, "data", numpy=True)  # always NumPy's

The key is numpy's ``SeedSequence(seed, spawn_key=(*coords, index of the name))``. A device
generator (CuPy on the GPU) is seeded with one 32-bit word of that sequence.
"""
from __future__ import annotations

import numpy as np

from . import backend


class Streams:
    """A fixed, ordered list of stream names; the order is part of the random-number contract."""

    def __init__(self, names):
        self.names = tuple(names)

    def seed_sequence(self, seed: int, *key) -> np.random.SeedSequence:
        """``key`` is integer coordinates followed by one stream name."""
        *coords, name = key
        if name not in self.names:
            raise ValueError(f"unknown random stream {name!r}: one of {', '.join(self.names)}")
        return np.random.SeedSequence(seed, spawn_key=(*map(int, coords), self.names.index(name)))

    def rng(self, seed: int, *key, numpy: bool = False):
        """The generator of one stream: NumPy's with numpy=True, else the current device's."""
        ss = self.seed_sequence(seed, *key)
        if numpy:
            return np.random.default_rng(ss)
        return backend.default_rng(int(ss.generate_state(1)[0]))


def derive_seed(seed: int, *key: int) -> int:
    """A 32-bit seed for a sub-task of ``seed`` (e.g. the aux model's training), independent of
    ``seed`` itself and of every other key: one word of SeedSequence(seed, spawn_key=key)."""
    return int(np.random.SeedSequence(int(seed), spawn_key=tuple(map(int, key))).generate_state(1)[0])


class StackedRandomGenerator:
    """One generator per sample, as EDM's generate.py does it: a draw of shape (B, ...) stacks
    each sample's own draw of shape (...), so sample i depends on seeds[i] alone, never on the
    batch it is drawn in or on the batch size. Answers what the samplers ask of a generator."""

    def __init__(self, seeds):
        self.seeds = [int(s) for s in seeds]
        self.generators = [backend.default_rng(s) for s in self.seeds]

    def _stack(self, draws):
        return backend.xp(draws[0]).stack(draws)

    def _check(self, size):
        size = tuple(size) if isinstance(size, (tuple, list)) else (int(size),)
        if not size or size[0] != len(self.generators):
            raise ValueError(f"a stacked draw needs the batch size {len(self.generators)} "
                             f"first, got shape {size}")
        return size[1:]

    def standard_normal(self, size, dtype=np.float64):
        rest = self._check(size)
        return self._stack([g.standard_normal(rest, dtype=dtype) for g in self.generators])  # B,...

    def random(self, size, dtype=np.float64):
        rest = self._check(size)
        return self._stack([g.random(rest, dtype=dtype) for g in self.generators])  # B,...


def parse_seeds(text: str) -> list[int]:
    """EDM's seed syntax: "0-49999", "1,5,9", "0-9,20-29" -> a list of distinct ints >= 0, in
    order. Raises ValueError with a one-line message on anything else."""
    seeds = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            raise ValueError(f"bad seeds {text!r}: empty item (use e.g. 0-49999 or 1,5,9)")
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"bad seeds {text!r}: {part!r} is not N or N-M with whole numbers >= 0")
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a:
            raise ValueError(f"bad seeds {text!r}: range {part!r} runs backwards")
        seeds.extend(range(a, b + 1))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"bad seeds {text!r}: a seed is listed twice")
    return seeds
