"""Named random streams: one independent generator per (experiment coordinates, purpose).

An experiment that trains many models (runs in chunks, generations of a loop, steps of Algorithm
1) gives each purpose its own stream, keyed by the seed and integer coordinates only, never by a
setting that is swept (w, |D_s|, the method). Two cells of a sweep then share the real data and
the generation-1 base model of a run (common random numbers), and switching guidance on or off
never shifts another stream.

    streams = Streams(("data", "base", "aux", "sample"))
    rng = streams.rng(seed, generation, "base")                     # backend generator
    rng = streams.rng(seed, generation, "data", numpy=True)         # always NumPy's
    rng = streams.rng(seed, generation, "base", runs=range(a, b))   # runs a..b-1, one stream each

The key is numpy's ``SeedSequence(seed, spawn_key=(*coords, index of the name))``. A device
generator (CuPy on the GPU) is seeded with one 32-bit word of that sequence.

Per-run streams. An experiment that trains R runs at once on an ensemble axis asks for
``streams.rng(seed, *coords, name, runs=range(first, first + R))``: a :class:`RunGenerator`,
whose draws of shape (R, ...) give row r from run r's own stream. Run r's numbers then depend on
the seed, the stream and r alone: not on how many runs share the job, how they are chunked or
which worker runs the chunk. It is counter-based (Philox4x32-10, written out in
:func:`minisims.ops.philox_words`; one kernel on the GPU), and its integer arithmetic gives the
same bits on NumPy and CuPy.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend, ops


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

    def rng(self, seed: int, *key, numpy: bool = False, runs=None):
        """The generator of one stream: NumPy's with numpy=True, else the current device's. With
        ``runs`` (global run indices, e.g. range(first, first + R)) a :class:`RunGenerator` whose
        draws (R, ...) give each run its own stream (NumPy arrays with numpy=True)."""
        ss = self.seed_sequence(seed, *key)
        if runs is not None:
            return RunGenerator(ss, runs, numpy=numpy)
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


class RunGenerator:
    """One random stream per run, for arrays whose first axis is the run axis (R, ...).

    A draw of shape (R, *rest) fills row i with run ``runs[i]``'s values only: word p of the
    draw's n-th call for run r is word p % 4 of Philox4x32-10 (:func:`minisims.ops.philox4x32`) at
    the counter (p // 4, n, r, 0) under the stream's 64-bit key. The numbers of run r therefore
    depend on the key, r and the sequence of draw shapes alone (the same in every chunk, since all
    runs of a job step together), never on the other runs. Answers what the library asks of a
    generator: ``standard_normal``, ``random``, ``integers``.

    Conversions: ``random`` takes 53 bits per double (two words, NumPy's recipe) and 24 per float32;
    ``standard_normal`` is Box-Muller on 53-bit doubles, computed in float64 and then cast (so the
    same draw in float32 is the rounded float64 one); ``integers`` maps a word to [low, high) by
    multiply-and-shift, with a bias below (high - low) / 2^32 (at most 1e-8 for the toy's 40 DDPM
    levels). Normals differ from NumPy's own generator (another algorithm), not in distribution.
    """

    def __init__(self, key, runs, numpy: bool = False):
        if isinstance(key, np.random.SeedSequence):
            key = key.generate_state(2)  # 2 x 32 bits
        self.key = tuple(int(k) for k in key)
        self.runs = [int(r) for r in runs]
        if not self.runs or min(self.runs) < 0 or max(self.runs) > 0xFFFFFFFF:
            raise ValueError(f"runs must be a non-empty list of indices in [0, 2^32), got {runs!r}")
        self.numpy = numpy
        xp = np if numpy else backend.xp()
        self._runs = xp.asarray(self.runs, dtype=np.uint64)  # R, on the device of the draws
        self.calls = 0  # the counter's draw word: one per call, the same for every run

    @property
    def xp(self):
        """The array module of the draws: NumPy, or the device's the generator was made on."""
        return backend.xp(self._runs)

    def _check(self, size) -> tuple:
        size = tuple(size) if isinstance(size, (tuple, list)) else (int(size),)
        if not size or size[0] != len(self.runs):
            raise ValueError(f"a per-run draw needs the run axis ({len(self.runs)} runs) first, "
                             f"got shape {size}")
        return size

    def words(self, per_run: int):
        """(R, per_run) uint64 random words (< 2^32) of the next call."""
        if self.calls > 0xFFFFFFFF:
            raise RuntimeError("a per-run stream ran out of draw counters (2^32 calls)")
        out = ops.philox_words(self.key, self._runs, self.calls, per_run)  # R,per_run
        self.calls += 1
        return out

    def random(self, size, dtype=np.float64):
        size = self._check(size)
        m = math.prod(size[1:])
        if np.dtype(dtype) == np.float32:
            return uniform24(self.words(m)).reshape(size)  # R,...
        w = self.words(2 * m)  # R,2m
        return uniform53(w[:, 0::2], w[:, 1::2]).reshape(size)  # R,...

    def standard_normal(self, size, dtype=np.float64):
        size = self._check(size)
        xp, m = self.xp, math.prod(size[1:])
        half = -(-m // 2)
        w = self.words(4 * half)  # R,4*half: two doubles per pair of normals
        u1 = 1.0 - uniform53(w[:, 0::4], w[:, 1::4])  # R,half in (0, 1]: log is finite
        u2 = uniform53(w[:, 2::4], w[:, 3::4])        # R,half in [0, 1)
        rad = xp.sqrt(-2.0 * xp.log(u1))               # R,half
        z = xp.stack([rad * xp.cos(2 * math.pi * u2), rad * xp.sin(2 * math.pi * u2)], axis=-1)  # R,half,2
        return z.reshape(len(self.runs), 2 * half)[:, :m].reshape(size).astype(dtype, copy=False)

    def integers(self, low, high=None, size=None, dtype=np.int64):
        if high is None:
            low, high = 0, low
        span = int(high) - int(low)
        if not 0 < span <= 2 ** 32:
            raise ValueError(f"integers needs 0 < high - low <= 2^32, got [{low}, {high})")
        size = self._check(size)
        w = self.words(math.prod(size[1:]))  # R,m
        return ((w * span) >> 32).astype(dtype).reshape(size) + int(low)  # exact: w*span < 2^64


def uniform53(hi, lo):
    """Doubles in [0, 1) from pairs of 32-bit words, 53 random bits each (NumPy's recipe:
    (hi >> 5) * 2^26 + (lo >> 6), divided by 2^53)."""
    return ((hi >> 5) * 67108864 + (lo >> 6)).astype(np.float64) * (1.0 / 9007199254740992.0)


def uniform24(word):
    """Floats in [0, 1) from 32-bit words, 24 random bits each (so float32 never rounds to 1)."""
    return (word >> 8).astype(np.float32) * np.float32(1.0 / 16777216.0)


MAX_SEED = 2 ** 32 - 1  # NumPy's SeedSequence takes any, EDM's seeds are 32-bit words
MAX_SEEDS = 10 ** 7     # one image per seed: more would not fit in memory


def parse_seeds(text: str) -> list[int]:
    """EDM's seed syntax: "0-49999", "1,5,9", "0-9,20-29" -> a list of distinct ints in
    [0, 2^32), in order, at most MAX_SEEDS of them. Raises ValueError with a one-line message on
    anything else."""
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
        if b > MAX_SEED:
            raise ValueError(f"bad seeds {text!r}: {b} is above the largest seed, 2^32 - 1")
        if len(seeds) + b - a + 1 > MAX_SEEDS:
            raise ValueError(f"bad seeds {text!r}: more than {MAX_SEEDS:,} seeds (one image each)")
        seeds.extend(range(a, b + 1))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"bad seeds {text!r}: a seed is listed twice")
    return seeds
