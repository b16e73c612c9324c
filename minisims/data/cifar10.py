"""CIFAR-10 from the user's own copy, and :func:`load_images`, the one entry for image data.

# N images, H W = 32 32, 3 channels RGB

CIFAR-10 (python version) is ``cifar-10-python.tar.gz`` (170,498,071 bytes, MD5
c58f30108f718f92721af3b95e74349a, from https://www.cs.toronto.edu/~kriz/cifar.html), which holds
``cifar-10-batches-py/`` with data_batch_1..5 (10000 training images each), test_batch and
batches.meta. Each batch is a Python 2 pickle of a dict: b"data" uint8 (n, 3072) (the 1024 red,
then green, then blue values of each 32x32 image, row-major) and b"labels" (n ints in 0..9).

Nothing here downloads anything: :func:`load_images` reads

- the archive itself (its MD5 checked first, the batches read straight out of the tar in memory,
  nothing extracted to disk),
- the extracted ``cifar-10-batches-py`` folder, or a folder that holds it or the archive,
- a folder of PNGs or an npz of uint8 NHWC images (``images.py``: the user's own data),
- with no path, the folder named by the environment variable ``MINISIMS_DATA``.

The batches are read with the restricted unpickler of ``safe_pickle.py`` (pickle runs code while
loading; these files come from the internet) and then checked for shape, dtype and label range.
"""
from __future__ import annotations

import hashlib
import os
import tarfile

import numpy as np

from .images import DataError, ImageSet, one_line, read_npz, read_png_folder
from .safe_pickle import restricted_loads

OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
ENV = "MINISIMS_DATA"
SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
MAX_BATCH_BYTES = 256 << 20  # an official batch is 31 MB; refuse anything absurd before reading it


def not_found_message(where: str) -> str:
    return (f"no CIFAR-10 found{where}: put {ARCHIVE} (from {URL}) in ${ENV} "
            f"or pass --data PATH")


# ------------------------------------------------------------------------------------------------
# One batch
# ------------------------------------------------------------------------------------------------

def _field(d: dict, key: str):
    """d[b"key"] as the official (Python 2) batches have it, or d["key"] in one written by Python 3."""
    return d[key.encode()] if key.encode() in d else d.get(key)


def parse_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images uint8 (n,32,32,3), labels int64 (n,). ``source`` names it in
    errors."""
    try:
        d = restricted_loads(data, encoding="bytes")
    except Exception as e:  # a refused global, a truncated stream, a malformed array state, ...
        raise DataError(f"{source}: not a CIFAR-10 batch ({one_line(e)})") from None
    if not isinstance(d, dict):
        raise DataError(f"{source}: not a CIFAR-10 batch (a pickled {type(d).__name__}, not a dict)")
    x, labels = _field(d, "data"), _field(d, "labels")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        what = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise DataError(f"{source}: b'data' is {what}; expected uint8 (n, 3072)")
    if not isinstance(labels, list) or len(labels) != len(x) \
            or not all(type(y) is int and 0 <= y <= 9 for y in labels):
        raise DataError(f"{source}: b'labels' must be a list of {len(x)} ints in 0..9")
    images = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # n,32,32,3 (rows hold R, G, B planes)
    return np.ascontiguousarray(images), np.array(labels, dtype=np.int64)


def _collect(batches, source: str, limit: int | None) -> ImageSet:
    """Concatenate (name, read) pairs in order, stopping once ``limit`` images are in."""
    images, labels, n = [], [], 0
    for name, read in batches:
        x, y = parse_batch(read(), f"{source}: {name}")
        images.append(x)
        labels.append(y)
        n += len(x)
        if limit is not None and n >= limit:
            break
    x, y = np.concatenate(images)[:limit], np.concatenate(labels)[:limit]
    return ImageSet(x, y, source)


# ------------------------------------------------------------------------------------------------
# The archive and the folder
# ------------------------------------------------------------------------------------------------

def file_md5(path: str, chunk: int = 1 << 20) -> str:
    """MD5 of a file, streamed (the archive is 170 MB)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_archive(path: str, split: str = "train", *, md5: str | None = OFFICIAL_MD5,
                 limit: int | None = None) -> ImageSet:
    """The batches of ``split`` straight from a ``.tar.gz`` holding ``cifar-10-batches-py/``.

    ``md5`` is checked first (default: the official archive's); pass ``md5=None`` to skip the
    check for an archive of your own making (tests do).
    """
    if md5 is not None:
        got = file_md5(path)
        if got != md5.lower():
            raise DataError(f"{path}: MD5 {got} does not match the expected {md5} (a damaged or "
                            f"different file; download {ARCHIVE} again from {URL})")
    names = SPLITS[split]
    try:
        with tarfile.open(path, "r:gz") as tar:
            raw = {}  # batch name -> its bytes, read in one pass over the gzip stream, in memory
            for m in tar:
                parts = m.name.lstrip("./").split("/")
                if len(parts) >= 2 and parts[-2] == FOLDER and parts[-1] in names:
                    if not m.isfile() or m.size > MAX_BATCH_BYTES:
                        raise DataError(f"{path}: {m.name} is not a batch file "
                                        f"({'too large' if m.isfile() else 'not a regular file'})")
                    raw[parts[-1]] = tar.extractfile(m).read()
            while tar.fileobj.read(1 << 20):  # on to the gzip trailer: its CRC and length catch
                pass  # a truncated or damaged file even where the md5 check is off
    except DataError:
        raise
    except Exception as e:  # truncated gzip (EOFError), not gzip, bad CRC, broken tar headers, ...
        raise DataError(f"{path}: cannot read this archive ({one_line(e)})") from None
    missing = [n for n in names if n not in raw]
    if missing:
        raise DataError(f"{path}: no {FOLDER}/{missing[0]} in this archive")
    return _collect(((n, lambda n=n: raw.pop(n)) for n in names), f"{path} ({split})", limit)


def read_batches_folder(folder: str, split: str = "train", *, limit: int | None = None) -> ImageSet:
    """The batches of ``split`` from an extracted ``cifar-10-batches-py`` folder."""
    def reader(path):
        def read():
            if os.path.getsize(path) > MAX_BATCH_BYTES:
                raise DataError(f"{path}: too large for a CIFAR-10 batch")
            with open(path, "rb") as f:
                return f.read()
        return read

    paths = [os.path.join(folder, n) for n in SPLITS[split]]
    for p in paths:
        if not os.path.isfile(p):
            raise DataError(f"{p}: missing (a {FOLDER} folder holds {', '.join(SPLITS['train'])}, "
                            f"test_batch)")
    return _collect(((p, reader(p)) for p in paths), f"{folder} ({split})", limit)


# ------------------------------------------------------------------------------------------------
# Finding the data: load_images
# ------------------------------------------------------------------------------------------------

def _is_batches_folder(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, n)) for n in SPLITS["train"] + SPLITS["test"])


def find_cifar10(folder: str) -> str | None:
    """The CIFAR-10 in ``folder``: the folder itself if it holds the batches, else its
    ``cifar-10-batches-py`` subfolder, else its ``cifar-10-python.tar.gz``; None if none."""
    for candidate in (folder, os.path.join(folder, FOLDER)):
        if os.path.isdir(candidate) and _is_batches_folder(candidate):
            return candidate
    archive = os.path.join(folder, ARCHIVE)
    return archive if os.path.isfile(archive) else None


def _is_archive(path: str) -> bool:
    return path.lower().endswith((".tar.gz", ".tgz"))


def load_images(path: str | None = None, *, split: str = "train", md5: str | None = OFFICIAL_MD5,
                limit: int | None = None) -> ImageSet:
    """Images for training or for reference statistics, from whatever the user has.

    path:  a ``.tar.gz``/``.tgz`` archive holding ``cifar-10-batches-py/`` (CIFAR-10's own); a
           ``cifar-10-batches-py`` folder or a folder holding it or ``cifar-10-python.tar.gz``; a
           folder of PNGs (sorted by name, one size, RGB); an ``.npz`` with uint8 (N,H,W,3) under
           ``arr_0``; or None: CIFAR-10 in the folder named by ``$MINISIMS_DATA``.
    split: "train" (data_batch_1..5, 50000 images) or "test" (test_batch, 10000); CIFAR-10 only.
    md5:   the archive's expected MD5, checked before reading (default: the official one); None
           skips the check, for archives of your own.
    limit: keep only the first ``limit`` images (small presets); only the batches needed are read.

    Labels are int64 for CIFAR-10 and None for PNGs and npz. Raises :class:`DataError`, one line.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer))
                              or limit < 1):
        raise DataError(f"limit must be a positive integer or None, got {limit!r}")
    if path is None:
        folder = os.environ.get(ENV, "")
        if not folder:
            raise DataError(not_found_message(f" (${ENV} is not set)"))
        found = folder if os.path.isfile(folder) and _is_archive(folder) else \
            (find_cifar10(folder) if os.path.isdir(folder) else None)
        if found is None:
            raise DataError(not_found_message(f" in ${ENV}={folder}"))
        path = found
    path = os.fspath(path)
    if os.path.isdir(path):
        found = find_cifar10(path)
        if found is None:
            if any(n.lower().endswith(".png") for n in os.listdir(path)):
                return read_png_folder(path, limit=limit)
            raise DataError(f"{path}: no images here: expected PNG files, a {FOLDER} folder or "
                            f"{ARCHIVE}")
        path = found
        if os.path.isdir(path):
            return read_batches_folder(path, split, limit=limit)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or folder")
    if _is_archive(path):
        return read_archive(path, split, md5=md5, limit=limit)
    if path.lower().endswith(".npz"):
        return read_npz(path, limit=limit)
    raise DataError(f"{path}: not a folder, .tar.gz archive or .npz file")
