"""Image data: CIFAR-10 from its archive, its folder or $MINISIMS_DATA, PNG folders, npz, the
restricted unpickler, and the model's pixel scale. Every bad input must be a one-line DataError.

The CIFAR-10 files are built by tests/cifar_like.py in exactly the official layout, with the
opcodes Python 2 wrote, from patches of scikit-image's bundled photographs.
"""
import hashlib
import io
import os
import pickle
import pickletools
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from cifar_like import BATCHES, make_cifar_like, photo_patches, python2_pickle
from minisims.data.cifar10 import OFFICIAL_MD5, load_images, parse_batch
from minisims.data.images import DataError, ImageSet, to_model, to_uint8
from minisims.data.safe_pickle import ALLOWED_GLOBALS, ForbiddenGlobal, restricted_loads

PER_BATCH = 20


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return make_cifar_like(str(tmp_path_factory.mktemp("cifar")), per_batch=PER_BATCH, seed=0)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("MINISIMS_DATA", raising=False)


def data_error(fn, *args, **kwargs) -> str:
    """Call fn, expect a DataError, return its message after checking it is one line."""
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message and "Traceback" not in message, repr(message)
    return message


def read_bytes(path) -> bytes:
    return Path(path).read_bytes()


def npy_bytes(a) -> bytes:
    f = io.BytesIO()
    np.save(f, a)
    return f.getvalue()


def write_pngs(folder, images, names=None):
    os.makedirs(folder, exist_ok=True)
    names = names or [f"{i:03d}.png" for i in range(len(images))]
    for name, im in zip(names, images):
        Image.fromarray(im).save(os.path.join(folder, name))
    return folder


def assert_same(got: ImageSet, images, labels):
    assert got.images.dtype == np.uint8 and got.images.shape == images.shape
    np.testing.assert_array_equal(got.images, images)
    if labels is None:
        assert got.labels is None
    else:
        assert got.labels.dtype == np.int64
        np.testing.assert_array_equal(got.labels, labels)


# ------------------------------------------------------------------------------------------------
# The fixture is what Python 2 wrote
# ------------------------------------------------------------------------------------------------

def test_fixture_has_the_official_layout(cifar):
    assert sorted(os.listdir(cifar.folder)) == sorted(BATCHES + ["batches.meta"])
    with tarfile.open(cifar.archive, "r:gz") as tar:
        names = tar.getnames()
    assert names[0] == "cifar-10-batches-py"
    assert sorted(names[1:]) == sorted(f"cifar-10-batches-py/{n}" for n in BATCHES + ["batches.meta"])
    assert cifar.train_images.shape == (5 * PER_BATCH, 32, 32, 3)
    assert cifar.test_images.shape == (PER_BATCH, 32, 32, 3)
    # real photographs, not flat colour: patches differ and have texture
    assert cifar.train_images.std() > 20 and len({im.tobytes() for im in cifar.train_images}) == 100


def test_fixture_is_a_python2_pickle_that_standard_pickle_reads_alike(cifar):
    for name in BATCHES:
        raw = read_bytes(os.path.join(cifar.folder, name))
        ops = [op.name for op, arg, pos in pickletools.genops(raw)]
        assert raw[:2] == b"\x80\x02" and ops[0] == "PROTO"
        assert "SHORT_BINSTRING" in ops and "BINSTRING" in ops  # Python 2 str, short and long
        assert not {"BINUNICODE", "SHORT_BINBYTES", "BINBYTES", "STACK_GLOBAL", "FRAME"} & set(ops)
        text = io.StringIO()
        pickletools.dis(raw, out=text)
        text = text.getvalue()
        for g in ("numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"):
            assert f"GLOBAL     '{g}'" in text
        assert "_codecs" not in text and "numpy._core" not in text

        reference = pickle.loads(raw, encoding="bytes")  # the standard, unrestricted reading
        images, labels = parse_batch(raw, name)
        ref_images = reference[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(images, ref_images)
        np.testing.assert_array_equal(labels, reference[b"labels"])
        assert restricted_loads(raw).keys() == reference.keys()
    meta = restricted_loads(read_bytes(os.path.join(cifar.folder, "batches.meta")))
    assert meta[b"label_names"][0] == b"airplane" and meta[b"num_vis"] == 3072


# ------------------------------------------------------------------------------------------------
# Every way in
# ------------------------------------------------------------------------------------------------

def test_archive_train_and_test(cifar):
    got = load_images(cifar.archive, md5=None)
    assert_same(got, cifar.train_images, cifar.train_labels)
    assert cifar.archive in got.source and "train" in got.source
    assert_same(load_images(cifar.archive, split="test", md5=None), cifar.test_images,
                cifar.test_labels)
    got = load_images(Path(cifar.archive), md5=None, limit=25)  # stops after the second batch
    assert_same(got, cifar.train_images[:25], cifar.train_labels[:25])


def test_archive_with_its_right_md5(cifar):
    digest = hashlib.md5(read_bytes(cifar.archive)).hexdigest()
    assert_same(load_images(cifar.archive, md5=digest, split="test"), cifar.test_images,
                cifar.test_labels)


def test_archive_md5_mismatch_names_file_and_both_digests(cifar):
    digest = hashlib.md5(read_bytes(cifar.archive)).hexdigest()
    message = data_error(load_images, cifar.archive)  # default: the official digest
    assert cifar.archive in message and OFFICIAL_MD5 in message and digest in message


def test_archive_is_read_in_memory(cifar, tmp_path, monkeypatch):
    before = sorted(os.listdir(cifar.root))
    monkeypatch.chdir(tmp_path)
    load_images(cifar.archive, md5=None, split="test")
    assert os.listdir(tmp_path) == [] and sorted(os.listdir(cifar.root)) == before


@pytest.mark.parametrize("cut", [0.5, 0.9, -1])
def test_truncated_archive(cifar, tmp_path, cut):
    raw = read_bytes(cifar.archive)
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(raw[:int(len(raw) * cut)] if cut > 0 else raw[:cut])  # -1: the last byte off
    message = data_error(load_images, str(bad), md5=None)
    assert str(bad) in message
    assert OFFICIAL_MD5 in data_error(load_images, str(bad))  # with the check, MD5 fails first


def test_damaged_archive(cifar, tmp_path):
    raw = bytearray(read_bytes(cifar.archive))
    for where in (len(raw) // 3, len(raw) - 6):  # in the deflate data; in the gzip CRC trailer
        bad = tmp_path / f"damaged_{where}.tar.gz"
        damaged = raw.copy()
        damaged[where] ^= 0x55
        bad.write_bytes(damaged)
        assert str(bad) in data_error(load_images, str(bad), md5=None)


def test_corrupt_archive(tmp_path):
    bad = tmp_path / "mine.tgz"
    bad.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 8)
    assert str(bad) in data_error(load_images, str(bad), md5=None)
    bad.write_bytes(b"not gzip at all")
    assert str(bad) in data_error(load_images, str(bad), md5=None)


def test_archive_without_the_batches(tmp_path):
    path = tmp_path / "other.tar.gz"
    (tmp_path / "x.txt").write_text("hello")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tmp_path / "x.txt", arcname="x.txt")
    assert "cifar-10-batches-py/data_batch_1" in data_error(load_images, str(path), md5=None)


def test_batches_folder_and_folders_holding_it(cifar, tmp_path):
    assert_same(load_images(cifar.folder), cifar.train_images, cifar.train_labels)
    assert_same(load_images(cifar.folder, split="test"), cifar.test_images, cifar.test_labels)
    assert_same(load_images(cifar.root, split="test"), cifar.test_images, cifar.test_labels)
    # a folder holding only the archive
    only = tmp_path / "only_archive"
    only.mkdir()
    os.symlink(cifar.archive, only / "cifar-10-python.tar.gz")
    got = load_images(str(only), md5=None, limit=3)
    assert_same(got, cifar.train_images[:3], cifar.train_labels[:3])
    assert "cifar-10-python.tar.gz" in got.source


def test_batches_folder_missing_a_batch(cifar, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in BATCHES[:3]:
        (folder / name).write_bytes(read_bytes(os.path.join(cifar.folder, name)))
    assert "data_batch_4" in data_error(load_images, str(folder))


def test_minisims_data_resolution(cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("MINISIMS_DATA", cifar.root)  # holds the folder (preferred) and the archive
    assert_same(load_images(split="test"), cifar.test_images, cifar.test_labels)
    monkeypatch.setenv("MINISIMS_DATA", cifar.folder)  # the batches folder itself
    assert_same(load_images(split="test"), cifar.test_images, cifar.test_labels)
    only = tmp_path / "only_archive"
    only.mkdir()
    os.symlink(cifar.archive, only / "cifar-10-python.tar.gz")
    monkeypatch.setenv("MINISIMS_DATA", str(only))
    assert_same(load_images(split="test", md5=None), cifar.test_images, cifar.test_labels)
    assert OFFICIAL_MD5 in data_error(load_images, split="test")  # the check is on by default
    monkeypatch.setenv("MINISIMS_DATA", cifar.archive)  # the archive itself
    assert_same(load_images(split="test", md5=None), cifar.test_images, cifar.test_labels)


def test_not_found_says_where_to_put_the_archive(tmp_path, monkeypatch):
    for env in (None, str(tmp_path), str(tmp_path / "missing")):
        if env is None:
            monkeypatch.delenv("MINISIMS_DATA", raising=False)
        else:
            monkeypatch.setenv("MINISIMS_DATA", env)
        message = data_error(load_images)
        assert message.startswith("no CIFAR-10 found")
        for part in ("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar.html",
                     "$MINISIMS_DATA", "--data PATH"):
            assert part in message, message
        if env is not None:
            assert env in message


def test_png_folder_sorted_by_name(tmp_path):
    images, _ = photo_patches(7, np.random.default_rng(3))
    names = [f"img_{i:02d}.png" for i in range(7)]
    order = [3, 0, 6, 1, 5, 2, 4]  # written out of order: the file names decide
    write_pngs(tmp_path / "pngs", images[order], [names[i] for i in order])
    (tmp_path / "pngs" / "notes.txt").write_text("ignored")
    got = load_images(str(tmp_path / "pngs"))
    assert_same(got, images, None)
    assert_same(load_images(str(tmp_path / "pngs"), limit=2), images[:2], None)


def test_png_rgba_opaque_is_rgb_and_transparent_is_an_error(tmp_path):
    images, _ = photo_patches(2, np.random.default_rng(4))
    folder = tmp_path / "rgba"
    folder.mkdir()
    alpha = np.full((32, 32, 1), 255, np.uint8)
    Image.fromarray(np.concatenate([images[0], alpha], -1), "RGBA").save(folder / "a.png")
    Image.fromarray(images[1]).save(folder / "b.png")
    assert_same(load_images(str(folder)), images, None)
    alpha[5, 5] = 128
    Image.fromarray(np.concatenate([images[0], alpha], -1), "RGBA").save(folder / "a.png")
    message = data_error(load_images, str(folder))
    assert str(folder / "a.png") in message and "transparent" in message


def test_png_folder_bad_inputs(tmp_path):
    images, _ = photo_patches(3, np.random.default_rng(5))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    assert "no images" in data_error(load_images, str(empty))

    mixed = write_pngs(tmp_path / "mixed", images)
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(mixed / "001.png")
    message = data_error(load_images, str(mixed))
    assert str(mixed / "001.png") in message and "48x40" in message and "32x32" in message

    gray = write_pngs(tmp_path / "gray", images)
    Image.fromarray(images[1, :, :, 0], "L").save(gray / "001.png")
    message = data_error(load_images, str(gray))
    assert str(gray / "001.png") in message and "grayscale" in message

    for name, damage in [("truncated", lambda b: b[:len(b) // 2]),
                         ("garbage", lambda b: b[:8] + bytes(200)),
                         ("not_png", lambda b: b"hello, world")]:
        folder = write_pngs(tmp_path / name, images)
        path = folder / "002.png"
        path.write_bytes(damage(path.read_bytes()))
        assert str(path) in data_error(load_images, str(folder)), name


def test_npz(tmp_path):
    images, _ = photo_patches(5, np.random.default_rng(6))
    np.savez(tmp_path / "s.npz", images)
    got = load_images(str(tmp_path / "s.npz"))
    assert_same(got, images, None)
    assert_same(load_images(str(tmp_path / "s.npz"), limit=2), images[:2], None)


def test_npz_bad_inputs(tmp_path):
    images, _ = photo_patches(2, np.random.default_rng(7))
    cases = {
        "object.npz": lambda p: np.savez(p, np.array([images[0], "x"], dtype=object)),
        "float.npz": lambda p: np.savez(p, images.astype(np.float32)),
        "nhw.npz": lambda p: np.savez(p, images[..., 0]),
        "four_channels.npz": lambda p: np.savez(p, np.concatenate([images, images[..., :1]], -1)),
        "no_arr0.npz": lambda p: np.savez(p, samples=images),
        "pickle.npz": lambda p: Path(p).write_bytes(pickle.dumps(images)),
        "npy.npz": lambda p: Path(p).write_bytes(npy_bytes(images)),
    }
    for name, write in cases.items():
        path = tmp_path / name
        write(str(path))
        assert str(path) in data_error(load_images, str(path)), name


def test_bad_arguments(cifar, tmp_path):
    assert "split" in data_error(load_images, cifar.folder, split="valid")
    for limit in (0, -1, 2.5, True):
        assert "limit" in data_error(load_images, cifar.folder, limit=limit)
    assert "no such" in data_error(load_images, str(tmp_path / "nothing.npz"))
    (tmp_path / "x.csv").write_text("1,2")
    assert str(tmp_path / "x.csv") in data_error(load_images, str(tmp_path / "x.csv"))


# ------------------------------------------------------------------------------------------------
# The restricted unpickler
# ------------------------------------------------------------------------------------------------

def _evil_global_pickle(module: bytes, name: bytes, command: str) -> bytes:
    """PROTO 2, GLOBAL module name, the command as a Python 2 str, TUPLE1, REDUCE: calls it."""
    c = command.encode()
    return b"\x80\x02c" + module + b"\n" + name + b"\nU" + bytes([len(c)]) + c + b"\x85R."


class _Evil:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_pickle_that_would_run_code_runs_nothing(cifar, tmp_path):
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    pickles = {
        "os.system": _evil_global_pickle(b"os", b"system", command),
        "posix.system": _evil_global_pickle(b"posix", b"system", command),
        "builtins.eval": _evil_global_pickle(b"builtins", b"eval", f"open({str(marker)!r}, 'w')"),
    }
    for protocol in (0, 2, 5):  # GLOBAL (text), GLOBAL, STACK_GLOBAL
        pickles[f"protocol {protocol}"] = pickle.dumps(_Evil(command), protocol=protocol)
    # the standard unpickler would run it: the test's pickles are live
    pickle.loads(pickles["os.system"])
    assert marker.exists()
    marker.unlink()
    for what, raw in pickles.items():
        with pytest.raises(ForbiddenGlobal):
            restricted_loads(raw)
        folder = tmp_path / "evil" / what.replace(" ", "_")
        folder.mkdir(parents=True)
        for name in BATCHES:  # a batches folder whose first batch is hostile
            (folder / name).write_bytes(read_bytes(os.path.join(cifar.folder, name)))
        (folder / "data_batch_1").write_bytes(raw)
        message = data_error(load_images, str(folder))
        assert "data_batch_1" in message and "refused" in message, message
        if what in ("os.system", "posix.system", "builtins.eval"):
            assert what in message, message
        else:
            assert "system" in message, message
        assert not marker.exists(), what


def test_what_the_unpickler_admits(cifar):
    assert set(ALLOWED_GLOBALS) == {("numpy.core.multiarray", "_reconstruct"),
                                    ("numpy._core.multiarray", "_reconstruct"),
                                    ("numpy", "ndarray"), ("numpy", "dtype")}
    images, labels = cifar.test_images, cifar.test_labels
    rows = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(-1, 3072)
    batch = {b"data": rows, b"labels": [int(y) for y in labels]}
    # Python 3 at protocol 3 and 4: bytes are BINBYTES, arrays via _reconstruct: accepted
    for protocol in (3, 4):
        x, y = parse_batch(pickle.dumps(batch, protocol=protocol), "py3")
        np.testing.assert_array_equal(x, images)
        np.testing.assert_array_equal(y, labels)
    # Python 3 at protocol 2 (_codecs.encode) and 5 (_frombuffer): refused, by name
    assert "_codecs.encode" in data_error(parse_batch, pickle.dumps(batch, protocol=2), "p2")
    assert "_frombuffer" in data_error(parse_batch, pickle.dumps(batch, protocol=5), "p5")


def test_reconstruct_only_builds_the_empty_placeholder():
    raw = python2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]})
    big = raw.replace(b"K\x00\x85", b"J\x00\xca\x9a\x3b\x85", 1)  # _reconstruct(ndarray, (1e9,), ..)
    assert "placeholder" in data_error(parse_batch, big, "big")


@pytest.mark.parametrize("name, batch, expected", [
    ("not a dict", [1, 2, 3], "not a dict"),
    ("no data", {b"labels": [1]}, "b'data'"),
    ("int16 data", {b"data": np.zeros((2, 3072), np.int16), b"labels": [1, 2]}, "b'data'"),
    ("short rows", {b"data": np.zeros((2, 3000), np.uint8), b"labels": [1, 2]}, "b'data'"),
    ("label 10", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 10]}, "0..9"),
    ("label count", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "b'labels'"),
    ("label type", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, b"2"]}, "b'labels'"),
])
def test_batch_contents_are_checked(name, batch, expected):
    message = data_error(parse_batch, pickle.dumps(batch, protocol=4), f"batch {name}")
    assert f"batch {name}" in message and expected in message, message


def test_truncated_batch_is_a_data_error(cifar):
    raw = read_bytes(os.path.join(cifar.folder, "test_batch"))
    for cut in (1, 100, len(raw) // 2, len(raw) - 1):
        assert "test_batch" in data_error(parse_batch, raw[:cut], "test_batch")


# ------------------------------------------------------------------------------------------------
# The model's scale
# ------------------------------------------------------------------------------------------------

def test_to_model_scale_and_layout():
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)  # N,H,W,C
    images[..., 1] = 255 - images[..., 1]
    x = to_model(images)
    assert x.dtype == np.float32 and x.shape == (1, 3, 16, 16)
    assert x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_allclose(x[0, 0], images[0, :, :, 0] / 127.5 - 1, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(to_uint8(x), images)  # all 256 values, exactly


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=4, max_dims=4, max_side=6)
                  .map(lambda s: s[:3] + (3,))))
def test_round_trip_is_exact(images):
    x = to_model(images)
    assert x.shape == (images.shape[0], 3) + images.shape[1:3]
    assert -1 <= x.min() and x.max() <= 1
    np.testing.assert_array_equal(to_uint8(x), images)
    np.testing.assert_array_equal(to_uint8(x.astype(np.float64)), images)


def test_to_uint8_rounds_and_clips():
    x = np.array([-3.0, -1.0, -0.999, 0.0, 1.0, 2.5], np.float64).reshape(1, 1, 1, 6)  # N,C,H,W
    # (x+1)*127.5 = -255, 0, 0.1275, 127.5 (half: to even 128), 255, 446.25
    np.testing.assert_array_equal(to_uint8(x)[0, 0, :, 0], [0, 0, 0, 128, 255, 255])
    assert "NaN" in data_error(to_uint8, np.full((1, 3, 2, 2), np.nan, np.float32))
    data_error(to_model, np.zeros((1, 3, 2, 2), np.float32))
