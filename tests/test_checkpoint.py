import json

import numpy as np
import pytest

from minisims import checkpoint
from minisims.nn import MLPConfig, MLPDenoiser


def test_roundtrip(tmp_path, rng):
    a = MLPDenoiser(MLPConfig(hidden=6, depth=2), rng, ensemble=2)
    b = MLPDenoiser(MLPConfig(hidden=6, depth=2), rng, ensemble=2)
    path = tmp_path / "m.npz"
    checkpoint.save_checkpoint(str(path), a, {"epoch": 3})
    assert checkpoint.load_checkpoint(str(path), b) == {"epoch": 3}
    for k, v in a.state_dict().items():
        assert np.array_equal(v, b.state_dict()[k])


def test_failed_save_keeps_the_old_checkpoint(tmp_path, rng, monkeypatch):
    a = MLPDenoiser(MLPConfig(hidden=4, depth=1), rng)
    path = tmp_path / "m.npz"
    checkpoint.save_checkpoint(str(path), a, {"v": 1})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", boom)
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(str(path), a, {"v": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary left behind


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    from minisims.atomic import atomic_write, write_json
    path = tmp_path / "results.json"
    write_json(str(path), {"good": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(str(path), "w") as f:
            f.write('{"half": ')
            raise RuntimeError("interrupted mid-write")
    assert json.loads(path.read_text()) == {"good": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # the temporary file is gone


def test_random_streams_are_keyed_by_name_and_coordinates():
    from minisims.streams import Streams
    s = Streams(("data", "base"))
    a = s.rng(0, 1, 2, "base", numpy=True).random(3)
    assert np.array_equal(a, s.rng(0, 1, 2, "base", numpy=True).random(3))
    ref = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(1, 2, 1))).random(3)
    assert np.array_equal(a, ref)  # the documented key: SeedSequence(seed, (*coords, index))
    assert not np.array_equal(a, s.rng(0, 1, 2, "data", numpy=True).random(3))
    with pytest.raises(ValueError, match="unknown random stream"):
        s.rng(0, 1, "sample")
