"""Test data in exactly CIFAR-10's layout, cut from real photographs, written as Python 2 wrote it.

CIFAR-10 cannot be downloaded in the tests, and a restricted unpickler tested only on pickles
that Python 3 writes may refuse the real files (/work/shared/notes/reference-facts.md, "CIFAR-10
(python version)"). So this module builds the real thing in miniature:

- ``cifar-10-batches-py/`` with data_batch_1..5, test_batch and batches.meta, and
  ``cifar-10-python.tar.gz`` (a gzip'd tar with that folder as its top-level member);
- each batch a dict {b"batch_label", b"labels", b"data", b"filenames"}, data uint8 (n, 3072) with
  the 1024 R, then G, then B values of each 32x32 image;
- pickled with the opcodes of Python 2's cPickle at protocol 2 (:func:`python2_pickle`): PROTO 2,
  strings as SHORT_BINSTRING / BINSTRING, the array rebuilt through GLOBAL
  'numpy.core.multiarray _reconstruct', 'numpy ndarray' and 'numpy dtype' with REDUCE and BUILD,
  every container and string memoized with BINPUT, lists and dicts filled 1000 items per
  APPENDS / SETITEMS as cPickle batches them. The opcodes are those of ``pickletools``;
- images: 32x32 patches of scikit-image's bundled photographs (no download), each cut at a
  random place and scale; an image's label is the photograph it came from.

Use :func:`make_cifar_like` (``per_batch`` images in each batch, 20 by default, for speed).
"""
from __future__ import annotations

import functools
import os
import struct
import tarfile
from dataclasses import dataclass

import numpy as np

# scikit-image's photographs that ship inside its wheel (no pooch download); label = index here
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "motorcycle")
LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@functools.lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """One bundled scikit-image photograph, uint8 (H,W,3)."""
    import skimage.data
    im = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3, (name, im.shape)
    return im


def photo_patches(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n images uint8 (n,32,32,3): a (32s)x(32s) crop of a photograph averaged over s x s blocks,
    s in 1..4 (so a patch holds a textured detail or a small whole object); labels (n,) int64."""
    images = np.empty((n, 32, 32, 3), np.uint8)
    labels = rng.integers(0, len(PHOTOS), n)
    for i, k in enumerate(labels):
        im = photo(PHOTOS[k])
        s = int(rng.integers(1, 5))
        size = 32 * s
        top = int(rng.integers(0, im.shape[0] - size + 1))
        left = int(rng.integers(0, im.shape[1] - size + 1))
        crop = im[top:top + size, left:left + size].astype(np.float64)  # 32s,32s,3
        images[i] = np.rint(crop.reshape(32, s, 32, s, 3).mean(axis=(1, 3)))  # 32,32,3
    return images, labels.astype(np.int64)


# ------------------------------------------------------------------------------------------------
# Python 2 cPickle, protocol 2, by hand
# ------------------------------------------------------------------------------------------------

class _Py2Pickler:
    """Writes bytes, str (as Python 2 str: bytes), int, bool, None, list, tuple, dict and uint8
    ndarrays with the opcodes Python 2's cPickle used at protocol 2."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")  # PROTO 2
        self.memo = 0

    def put(self):
        """BINPUT (LONG_BINPUT past 255): cPickle memoizes every string, container, global and
        reduce result."""
        if self.memo < 256:
            self.out += b"q" + bytes([self.memo])
        else:
            self.out += b"r" + struct.pack("<I", self.memo)
        self.memo += 1

    def global_(self, module: str, name: str):
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL
        self.put()

    def save(self, obj):
        if obj is None:
            self.out += b"N"  # NONE
        elif obj is True or obj is False:
            self.out += b"\x88" if obj else b"\x89"  # NEWTRUE / NEWFALSE
        elif isinstance(obj, int):
            if 0 <= obj < 256:
                self.out += b"K" + bytes([obj])  # BININT1
            elif 0 <= obj < 65536:
                self.out += b"M" + struct.pack("<H", obj)  # BININT2
            else:
                self.out += b"J" + struct.pack("<i", obj)  # BININT (4-byte signed)
        elif isinstance(obj, (bytes, str)):
            s = obj.encode("latin-1") if isinstance(obj, str) else obj  # a Python 2 str
            if len(s) < 256:
                self.out += b"U" + bytes([len(s)]) + s  # SHORT_BINSTRING
            else:
                self.out += b"T" + struct.pack("<i", len(s)) + s  # BINSTRING
            self.put()
        elif isinstance(obj, tuple):
            if len(obj) == 0:
                self.out += b")"  # EMPTY_TUPLE
            elif len(obj) > 3:
                self.tuple_marked(obj)
            else:
                for item in obj:
                    self.save(item)
                self.out += b"\x85\x86\x87"[len(obj) - 1:len(obj)]  # TUPLE1 / TUPLE2 / TUPLE3
                self.put()
        elif isinstance(obj, list):
            self.out += b"]"  # EMPTY_LIST
            self.put()
            for i in range(0, len(obj), 1000):  # cPickle's BATCHSIZE
                chunk = obj[i:i + 1000]
                if len(chunk) == 1:
                    self.save(chunk[0])
                    self.out += b"a"  # APPEND
                else:
                    self.out += b"("  # MARK
                    for item in chunk:
                        self.save(item)
                    self.out += b"e"  # APPENDS
        elif isinstance(obj, dict):
            self.out += b"}"  # EMPTY_DICT
            self.put()
            items = list(obj.items())
            for i in range(0, len(items), 1000):
                self.out += b"("  # MARK
                for k, v in items[i:i + 1000]:
                    self.save(k)
                    self.save(v)
                self.out += b"u"  # SETITEMS
        elif isinstance(obj, np.ndarray):
            self.ndarray(obj)
        else:
            raise TypeError(f"cannot write {type(obj).__name__} as a Python 2 pickle here")

    def tuple_marked(self, items):
        """A tuple longer than 3: MARK, the items, TUPLE."""
        self.out += b"("  # MARK
        for item in items:
            self.save(item)
        self.out += b"t"  # TUPLE
        self.put()

    def ndarray(self, a: np.ndarray):
        """As numpy 1.x under Python 2 reduced an array: _reconstruct(ndarray, (0,), 'b'), then
        BUILD with (1, shape, dtype, is_fortran, raw bytes); dtype('u1', 0, 1) then BUILD with
        (3, '|', None, None, None, -1, -1, 0)."""
        assert a.dtype == np.uint8 and a.flags.c_contiguous
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        self.save((0,))
        self.save(b"b")
        self.out += b"\x87"  # TUPLE3 (ndarray, (0,), 'b')
        self.put()
        self.out += b"R"  # REDUCE
        self.put()
        self.out += b"("  # MARK: the state tuple
        self.save(1)  # pickle version of the array state
        self.save(tuple(a.shape))
        self.global_("numpy", "dtype")
        self.save(b"u1")
        self.save(0)
        self.save(1)
        self.out += b"\x87"  # TUPLE3 ('u1', 0, 1)
        self.put()
        self.out += b"R"  # REDUCE
        self.put()
        self.tuple_marked((3, b"|", None, None, None, -1, -1, 0))  # the dtype's state
        self.out += b"b"  # BUILD
        self.save(False)  # not Fortran-ordered
        self.save(a.tobytes())  # the pixels, as one Python 2 str
        self.out += b"t"  # TUPLE (MARK ... )
        self.put()
        self.out += b"b"  # BUILD

    def finish(self) -> bytes:
        return bytes(self.out + b".")  # STOP


def python2_pickle(obj) -> bytes:
    """``obj`` pickled as Python 2's cPickle.dump(obj, f, 2) wrote it (see :class:`_Py2Pickler`)."""
    p = _Py2Pickler()
    p.save(obj)
    return p.finish()


# ------------------------------------------------------------------------------------------------
# The folder and the archive
# ------------------------------------------------------------------------------------------------

def batch_dict(images: np.ndarray, labels: np.ndarray, batch_label: str, first: int) -> dict:
    """A batch as the official files hold it (keys are Python 2 str: bytes under encoding='bytes')."""
    rows = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), 3072)  # n,3072
    return {b"batch_label": batch_label.encode(),
            b"labels": [int(y) for y in labels],
            b"data": rows,
            b"filenames": [f"photo_patch_{first + i:06d}.png".encode() for i in range(len(images))]}


@dataclass
class CifarLike:
    root: str  # the folder holding both of the below
    folder: str  # root/cifar-10-batches-py
    archive: str  # root/cifar-10-python.tar.gz
    train_images: np.ndarray  # uint8 (5 per_batch, 32, 32, 3), batches 1..5 in order
    train_labels: np.ndarray  # int64
    test_images: np.ndarray
    test_labels: np.ndarray


def make_cifar_like(root: str, *, per_batch: int = 20, seed: int = 0) -> CifarLike:
    """Write ``root/cifar-10-batches-py/`` and ``root/cifar-10-python.tar.gz``; return both with
    the arrays they hold."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for k, name in enumerate(BATCHES):
        images, labels = photo_patches(per_batch, rng)
        label = ("training batch %d of 5" % (k + 1)) if k < 5 else "testing batch 1 of 1"
        with open(os.path.join(folder, name), "wb") as f:
            f.write(python2_pickle(batch_dict(images, labels, label, k * per_batch)))
        arrays[name] = (images, labels)
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in LABEL_NAMES],
            b"num_vis": 3072}
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        f.write(python2_pickle(meta))
    archive = os.path.join(root, "cifar-10-python.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py", recursive=False)  # the folder member first
        for name in BATCHES + ["batches.meta"]:
            tar.add(os.path.join(folder, name), arcname=f"cifar-10-batches-py/{name}")
    train = [arrays[n] for n in BATCHES[:5]]
    return CifarLike(root, folder, archive,
                     np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                     *arrays["test_batch"])
