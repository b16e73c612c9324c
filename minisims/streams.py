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
