"""Per-run random streams: Philox4x32-10 against Random123's known answers, and a run's numbers
(and results) independent of how many runs share the job and how they are chunked."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisims import ops
from minisims.kernels.philox import philox4x32, run_words
from minisims.streams import RunGenerator, Streams

# Random123's kat_vectors, "philox4x32 10": counter (4 words), key (2 words) -> output (4 words)
KAT = [((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
       ((0xffffffff,) * 4, (0xffffffff,) * 2, (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
       ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
        (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1))]


@pytest.mark.parametrize("bijection", [ops.philox4x32, philox4x32], ids=["ops", "kernels"])
@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_matches_random123_known_answers(bijection, counter, key, expected):
    out = bijection([np.array([c], np.uint64) for c in counter], key)
    assert tuple(int(o[0]) for o in out) == expected


def test_philox_is_elementwise_over_broadcast_counters():
    j = np.arange(5, dtype=np.uint64)[:, None]  # 5,1
    r = np.arange(3, dtype=np.uint64)[None, :]  # 1,3
    out = philox4x32((j, 7, r, 0), (11, 13))  # 4 x 5,3
    one = philox4x32((np.array([4], np.uint64), 7, np.array([2], np.uint64), 0), (11, 13))
    assert all(o[4, 2] == p[0] for o, p in zip(out, one))
    assert all(int(o.max()) < 2 ** 32 for o in out)


DRAWS = [("standard_normal", ((7, 2),), {}), ("random", ((5,),), {}),
         ("random", ((3, 3),), {"dtype": np.float32}), ("integers", (1, 40), {"size": (6,)}),
         ("standard_normal", ((3,),), {"dtype": np.float32})]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 50), st.integers(1, 6), st.integers(0, 5),
       st.integers(1, 4))
def test_a_runs_draws_do_not_depend_on_the_other_runs(seed, first, R, offset, sub):
    """Rows first+offset.. of a job of R + offset + sub runs equal a job of just those runs."""
    big = Streams(("a",)).rng(seed, "a", runs=range(first, first + R + offset + sub), numpy=True)
    small = Streams(("a",)).rng(seed, "a", runs=range(first + offset, first + offset + R), numpy=True)
    for name, args, kw in DRAWS:
        n_big, n_small = R + offset + sub, R
        a = _draw(big, name, args, kw, n_big)
        b = _draw(small, name, args, kw, n_small)
        assert np.array_equal(a[offset:offset + R], b), name


def _draw(g, name, args, kw, runs):
    if name == "integers":
        return g.integers(*args, size=(runs,) + kw["size"])
    return getattr(g, name)((runs,) + args[0], **{k: v for k, v in kw.items()})


def test_streams_and_runs_differ_and_repeat():
    s = Streams(("a", "b"))
    a = s.rng(1, 2, "a", runs=range(3), numpy=True).standard_normal((3, 100))
    assert np.array_equal(a, s.rng(1, 2, "a", runs=range(3), numpy=True).standard_normal((3, 100)))
    assert not np.array_equal(a, s.rng(1, 2, "b", runs=range(3), numpy=True).standard_normal((3, 100)))
    assert not np.array_equal(a, s.rng(1, 3, "a", runs=range(3), numpy=True).standard_normal((3, 100)))
    assert not np.array_equal(a[0], a[1])  # runs are different streams
    g = s.rng(1, 2, "a", runs=range(3), numpy=True)
    assert not np.array_equal(g.random((3, 4)), g.random((3, 4)))  # consecutive draws differ


def test_distributions():
    g = RunGenerator((5, 6), range(4), numpy=True)
    z = g.standard_normal((4, 50_000))  # 200k normals: mean and std within ~5 standard errors
    assert abs(z.mean()) < 0.012 and abs(z.std() - 1) < 0.008 and z.dtype == np.float64
    assert abs((np.abs(z) > 1.959964).mean() - 0.05) < 0.003  # the tails: P(|z| > 1.96) = 5%
    u = g.random((4, 50_000))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.004
    u32 = g.random((4, 10_000), dtype=np.float32)
    assert u32.dtype == np.float32 and u32.max() < 1
    k = g.integers(1, 40, size=(4, 39_000))
    counts = np.bincount(k.ravel(), minlength=40)
    assert counts[0] == 0 and k.max() == 39 and counts[1:].min() > 3400  # about 4000 each
    assert g.standard_normal((4, 3), dtype=np.float32).dtype == np.float32


def test_a_draw_without_the_run_axis_first_is_refused():
    g = RunGenerator((1, 2), range(3), numpy=True)
    with pytest.raises(ValueError, match="run axis"):
        g.standard_normal((2, 3))
    with pytest.raises(ValueError, match="high - low"):
        g.integers(5, 5, size=(3,))
    with pytest.raises(ValueError, match="runs must be"):
        RunGenerator((1, 2), [])


TOY = ["--base-epochs", "3", "--aux-epochs", "2", "--n-real", "60", "--n-synth", "60",
       "--n-eval", "50", "--hidden", "8", "--omega", "1", "--quiet", "--no-plot"]


def test_toy_run_k_does_not_depend_on_runs_or_chunks(tmp_path):
    from minisims import toy
    out = {}
    for name, extra in (("4", ["--runs", "4"]), ("6", ["--runs", "6"]),
                        ("6c2", ["--runs", "6", "--chunk-size", "2"]),
                        ("6c5", ["--runs", "6", "--chunk-size", "5"])):
        assert toy.main(TOY + extra + ["--outdir", str(tmp_path / name)]) == 0
        out[name] = json.loads((tmp_path / name / "toy_results.json").read_text())
    for w in ("0.0", "1.0"):
        four = out["4"]["distance_per_run"][w]
        for name in ("6", "6c2", "6c5"):  # bit for bit: JSON floats round-trip exactly
            assert out[name]["distance_per_run"][w][:4] == four
        assert out["6"]["distance_per_run"][w] == out["6c2"]["distance_per_run"][w]
    assert out["6"]["real_data_distance_per_run"][:4] == out["4"]["real_data_distance_per_run"]
    assert out["6c2"]["chunk_size_used"] == 2 and out["6"]["chunk_size_used"] == 6
    assert out["4"]["blas_threads_used"] == 1  # the count in force, not the option's 0 / default


@pytest.mark.parametrize("per_run", [1, 3, 4, 5, 17, 1000])
def test_the_seams_words_equal_the_kernels_reference(per_run):
    """ops.philox_words, what the streams call, against kernels/philox.py's reference (the one
    the CuPy kernel is checked against on the GPU): the same bits, and word p where it belongs."""
    runs = np.array([0, 7, 2 ** 32 - 1], np.uint64)
    ref = run_words((123, 2 ** 32 - 2), runs, 9, per_run, impl="reference")
    fast = ops.philox_words((123, 2 ** 32 - 2), runs, 9, per_run)
    assert fast.shape == (3, per_run) and fast.dtype == np.uint64 and np.array_equal(fast, ref)
    # word p of a run is word p % 4 of philox((p // 4, draw, run, 0), key)
    blk = philox4x32((np.array([per_run // 4 if per_run % 4 else per_run // 4 - 1], np.uint64), 9,
                      np.array([7], np.uint64), 0), (123, 2 ** 32 - 2))
    p = per_run - 1
    assert fast[1, p] == blk[p % 4][0]
