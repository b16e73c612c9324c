"""A restricted unpickler: NumPy arrays out of a pickle, and nothing that runs code.

Pickle is a small stack machine whose GLOBAL / STACK_GLOBAL opcodes import any name and whose
REDUCE opcode calls it: ``pickle.load`` on a file from elsewhere may run ``os.system``. The
CIFAR-10 batches are pickles, so they are read with :class:`RestrictedUnpickler`, whose
``find_class`` (the one door through which every global passes, INST, EXT1/2/4 and
STACK_GLOBAL included) admits only what the official batches contain:

    numpy.core.multiarray._reconstruct   (Python 2 / NumPy 1 spelling, as in the official files)
    numpy._core.multiarray._reconstruct  (NumPy 2's spelling, in pickles NumPy 2 writes)
    numpy.ndarray
    numpy.dtype

Both spellings of ``_reconstruct`` map to the function the installed NumPy itself uses to pickle
an array (taken from ``ndarray.__reduce__``, so neither the deprecated ``numpy.core`` shim nor a
private module is imported), wrapped to accept only the empty placeholder shape ``(0,)`` that
NumPy writes: the real shape and data arrive later through ``ndarray.__setstate__`` (BUILD), which
checks that the bytes match the shape. Anything else is refused with :class:`ForbiddenGlobal`,
which names the global, before it is imported or called.

What is deliberately refused, and so which pickles load:
- Python 2 pickles (the official batches): loaded with ``encoding="bytes"``, their strings are
  bytes and their arrays come through the globals above.
- Python 3 pickles at protocol 3 or 4: bytes are BINBYTES opcodes (no global), arrays as above:
  they load.
- Python 3 pickles at protocol 2 rebuild every bytes object through ``_codecs.encode``, and
  protocol 5 rebuilds arrays through ``numpy._core.numeric._frombuffer``: both are refused. The
  official files need neither, and every admitted name widens what a hostile file can reach.
  Re-write such files at protocol 4, or as an npz of uint8 images.
"""
from __future__ import annotations

import io
import pickle

import numpy as np

# The function NumPy's own ndarray.__reduce__ names, whatever module the installed version keeps it
_numpy_reconstruct = np.empty(0).__reduce__()[0]


def _reconstruct(subtype, shape, dtype):
    """numpy's ``_reconstruct`` for the placeholder array a pickle starts from, nothing larger."""
    if subtype is not np.ndarray or tuple(shape) != (0,):
        raise pickle.UnpicklingError(
            f"_reconstruct({getattr(subtype, '__name__', subtype)!s}, {shape!r}, ...) is not the "
            f"empty placeholder array NumPy pickles")
    return _numpy_reconstruct(subtype, shape, dtype)


ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global outside :data:`ALLOWED_GLOBALS` (it would import or run code)."""


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`; it never imports."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(
                f"refused to load the global {module}.{name}: only "
                f"{', '.join(sorted(m + '.' + n for m, n in ALLOWED_GLOBALS))} are allowed") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent id: not a plain data pickle")


def restricted_loads(data: bytes, *, encoding: str = "bytes"):
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    ``encoding="bytes"`` keeps Python 2 strings as bytes, as the CIFAR-10 page prescribes (the
    pixel data is a Python 2 str). Raises ``pickle.UnpicklingError`` (:class:`ForbiddenGlobal` for
    a refused global) or whatever a malformed stream raises (EOFError, ValueError, ...): the
    caller turns these into its own one-line error.
    """
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
