import json

import numpy as np
import pytest

from minisims import checkpoint
from minisims.nn.mlp import MLPConfig, MLPDenoiser


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


def _params(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def _assert_unchanged(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert after[k].dtype == v.dtype and after[k].tobytes() == v.tobytes(), k  # bit for bit


def test_a_failed_load_leaves_every_parameter_as_it_was(tmp_path, rng):
    model = MLPDenoiser(MLPConfig(hidden=6, depth=3), rng)
    before = _params(model)
    state = {k: rng.standard_normal(v.shape) for k, v in before.items()}
    last = list(state)[-1]
    state[last] = np.zeros(state[last].shape + (1,))  # only the last array is wrong
    with pytest.raises(ValueError, match=f"{last}: shape"):
        model.load_state_dict(state)
    _assert_unchanged(model, before)

    path = tmp_path / "other.npz"  # the same through a file
    np.savez(path, **state)
    with pytest.raises(ValueError, match=f"{path} does not fit this model"):
        checkpoint.load_checkpoint(str(path), model)
    _assert_unchanged(model, before)


def test_load_state_dict_checks_dtypes_and_accepts_castable_ones(rng):
    model = MLPDenoiser(MLPConfig(hidden=4, depth=1), rng)
    before = _params(model)
    with pytest.raises(ValueError, match="complex128 cannot become float32"):
        model.load_state_dict({k: v.astype(np.complex128) for k, v in before.items()})
    _assert_unchanged(model, before)
    model.load_state_dict({k: 2.0 * v.astype(np.float64) for k, v in before.items()})  # float64 ok
    for k, v in model.state_dict().items():
        assert v.dtype == before[k].dtype and np.array_equal(v, 2 * before[k])


def _corrupt(path, kind):
    """Write a broken checkpoint of ``kind`` at ``path`` (from a good one already there)."""
    good = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint at all\n" * 10)
    elif kind == "flipped bytes":  # the last data byte of every member: each one's CRC fails
        import struct
        import zipfile
        data = bytearray(good)
        for info in zipfile.ZipFile(path).infolist():
            name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
            data[info.header_offset + 30 + name_len + extra_len + info.compress_size - 1] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "bad metadata":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["__meta__"] = np.array("{not json")
        np.savez(path, **arrays)
    elif kind == "npy":
        path.unlink()
        np.save(open(path, "wb"), np.zeros(3))
    elif kind == "missing":
        path.unlink()
    elif kind == "folder":
        path.unlink()
        path.mkdir()


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage", "flipped bytes", "bad metadata",
                                  "npy", "missing", "folder"])
@pytest.mark.parametrize("group", [None, "ema"])
def test_a_broken_file_gives_one_line_naming_it_and_the_model_is_unchanged(tmp_path, rng, kind, group):
    model = MLPDenoiser(MLPConfig(hidden=6, depth=2), rng)
    path = tmp_path / "m.npz"
    checkpoint.save_checkpoint(str(path), model, {"epoch": 1}, extra={"ema": model.state_dict()})
    _corrupt(path, kind)
    before = _params(model)
    with pytest.raises(ValueError) as info:
        checkpoint.load_checkpoint(str(path), model, group=group)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "pickle" not in message, message
    _assert_unchanged(model, before)


def test_a_missing_group_is_named(tmp_path, rng):
    model = MLPDenoiser(MLPConfig(hidden=4, depth=1), rng)
    path = tmp_path / "m.npz"
    checkpoint.save_checkpoint(str(path), model)
    with pytest.raises(ValueError, match=f"{path} has no 'ema' weights"):
        checkpoint.load_checkpoint(str(path), model, group="ema")


def test_the_gpu_error_says_why(monkeypatch):
    """CuPy imports without a GPU; the reason it gives is kept in the one-line BackendError."""
    import sys
    import types

    from minisims import backend

    class CUDARuntimeError(RuntimeError):
        pass

    def no_device():
        raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(backend, "_cupy", None)
    with pytest.raises(backend.BackendError) as info:
        backend.use_device("gpu")
    assert str(info.value) == ("CuPy is installed but no GPU is usable (CUDARuntimeError: "
                               "cudaErrorNoDevice: no CUDA-capable device is detected)")
    assert backend.current_device() == "cpu"
