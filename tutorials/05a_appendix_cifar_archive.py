# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Appendix to tutorial 05: reading CIFAR-10 safely
#
# Tutorial 05 runs SIMS on scikit-learn's digits. The paper's own image experiment uses CIFAR-10,
# and `python -m minisims.images sims --data cifar-10-python.tar.gz` reads it. This appendix
# shows how that reader works, which has nothing to do with SIMS and everything to do with not
# running a stranger's code: the archive's MD5, the Python 2 pickles inside it, the restricted
# unpickler that reads them, and the step from uint8 files to the model's [-1, 1] scale.
#
# **Needs a checkout of the repository and scikit-image** (`pip install -e ".[tutorials]"`): it
# writes its stand-in archive with `tests/cifar_like.py`, which cuts 32x32 patches from
# scikit-image's bundled photographs. Run it with `python tutorials/05a_appendix_cifar_archive.py`
# (a few seconds); its figure and archive go to `runs/tutorials/05a/`, or to the folder
# `MINISIMS_TUTORIAL_OUT` names.

# %%
import os
import pickle
import pickletools
import sys

import numpy as np

from minisims.data.cifar10 import OFFICIAL_MD5, file_md5, load_images
from minisims.data.images import DataError, to_model, to_uint8
from minisims.data.safe_pickle import ForbiddenGlobal, restricted_loads
from minisims.exports import image_grid
from minisims.images.pipeline import downsample
from minisims.plots import show, tutorial_dir

OUT = tutorial_dir("05a")  # the figure: shown inline in Jupyter, saved here (runs/tutorials/05a/)


# %% [markdown]
# ## 1. The archive and its checksum
# CIFAR-10 ships as `cifar-10-python.tar.gz`: a folder `cifar-10-batches-py/` holding five
# training batches and a test batch, each a **Python 2 pickle** of a dict whose `b"data"` is uint8
# (n, 3072): per image the 1024 red, then green, then blue values of a 32x32 picture.
#
# This appendix cannot download it, so `tests/cifar_like.py` writes an archive of exactly that
# layout, byte for byte as Python 2 pickled it, filled with 32x32 patches of scikit-image's bundled
# photographs (the label is the photograph a patch came from). It stands in for your own
# `cifar-10-python.tar.gz`: with a real copy you would pass its path to `load_images` and leave
# `md5` at its default, the official digest, which is checked before anything is read.
# (`tests/` is not a package, so we put its folder on `sys.path`.)

# %%
# A script finds tests/ beside its own folder; a notebook has no __file__ and looks from its
# working directory: tutorials/ when opened there, the repository root when built into docs/.
HERE = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else os.getcwd()
sys.path.insert(0, next(p for p in (os.path.join(HERE, "..", "tests"), os.path.join(HERE, "tests"))
                        if os.path.isfile(os.path.join(p, "cifar_like.py"))))
from cifar_like import make_cifar_like  # noqa: E402  (tests/cifar_like.py)

cifar = make_cifar_like(os.path.join(OUT, "cifar-like"), per_batch=16)  # written beside the figure
print(f"{os.path.basename(cifar.archive)}: {os.path.getsize(cifar.archive):,} bytes")
print(f"official CIFAR-10 MD5 {OFFICIAL_MD5}; this archive's {file_md5(cifar.archive)}")
try:  # the default md5 is the official one: a different file is refused before it is read
    load_images(cifar.archive)
    raise AssertionError("an archive with another MD5 was read")
except DataError as e:
    print("refused:", str(e)[:110], "...")
real = load_images(cifar.archive, split="train", md5=file_md5(cifar.archive))  # our own digest
print(f"{real.source}: images {real.images.dtype} {real.images.shape}, labels {real.labels[:8]}")
assert np.array_equal(real.images, cifar.train_images)  # what was written is what is read
print("the 32x32 images read back equal the ones written, pixel for pixel")

# %% [markdown]
# ## 2. Why a restricted unpickler
# Pickle is a little stack machine: its GLOBAL opcode imports any name and REDUCE calls it, so
# `pickle.load` on a file from the internet can run `os.system`. `minisims.data.safe_pickle`
# admits only the four globals a CIFAR batch needs (numpy's `_reconstruct`, under its two
# spellings, `ndarray` and `dtype`) and refuses everything else **by name, before importing or
# calling it**. Below is a pickle that would run a shell command. Building it runs nothing, and
# the restricted unpickler stops at the GLOBAL, so it is safe to show.

# %%
class Payload:
    def __reduce__(self):  # "to rebuild me, call os.system('echo pwned')"
        return (os.system, ("echo pwned",))


evil = pickle.dumps(Payload(), protocol=2)
print("opcodes:", " ".join(op.name if arg is None else f"{op.name}({arg!r})"
                           for op, arg, _ in pickletools.genops(evil)))
try:
    restricted_loads(evil)
    raise AssertionError("the restricted unpickler loaded a pickle that calls os.system")
except ForbiddenGlobal as e:
    print("refused:", e)

# %% [markdown]
# ## 3. From files to the model's scale
# Files hold uint8 images NHWC, (N, 32, 32, 3). The models work on float32 NCHW in [-1, 1]
# (x / 127.5 - 1, the scale EDM assumes), and `to_uint8` goes back exactly. The `cpu` preset
# averages 2x2 blocks down to 16x16 (`downsample`); here we average 4x4 blocks to 8x8 and check
# one pixel by hand.

# %%
images = downsample(real.images, 8)  # N,8,8,3 uint8
x = to_model(images)  # N,3,8,8 float32 in [-1, 1]
manual = real.images[0, :4, :4].reshape(-1, 3).mean(axis=0)  # the top-left 4x4 block of image 0
print(f"downsample {real.images.shape[1:3]} -> {images.shape[1:3]}: pixel (0,0) of image 0 "
      f"{images[0, 0, 0]} = rint of the block mean {manual.round(2)}")
assert np.array_equal(images[0, 0, 0], np.rint(manual))
print(f"to_model: {x.dtype} {x.shape}, range [{x.min():.2f}, {x.max():.2f}], std {x.std():.3f}")
assert np.array_equal(to_uint8(x), images)  # the round trip is exact for every uint8 value
print("to_uint8(to_model(images)) == images: exact")
big = np.repeat(np.repeat(images[:16], 4, axis=1), 4, axis=2)  # 16,32,32,3: blown up to compare
path = os.path.join(OUT, "05a_cifar_like.png")
image_grid(np.concatenate([real.images[:16], big]), path, cols=16,
           labels=["32x32"] + [None] * 15 + ["8x8"] + [None] * 15, scale=2)
show(path)
print("figure in", OUT)

# %% [markdown]
# ## Summary
# - CIFAR-10 is read from your own archive, its MD5 checked first (`load_images(path)` refuses
#   another file unless you pass its digest yourself).
# - Its Python 2 pickles go through an unpickler that admits four NumPy names and refuses the
#   rest by name, before importing or calling anything.
# - Images go from uint8 NHWC to float32 NCHW in [-1, 1] and back exactly; `downsample` averages
#   blocks.
#
# With a real copy, tutorial 05's steps run on CIFAR-10 in one command (16x16 images, about half
# an hour on 2 cores with the `cpu` preset):
#
#     python -m minisims.images sims --data ~/data/cifar-10-python.tar.gz --preset cpu --outdir runs/cifar16
