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
