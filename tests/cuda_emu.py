"""CUDA C kernels on the CPU, for tests: the CuPy RawModule sources of kernels/ compiled with g++
against tests/cuda_emu.h and launched on NumPy arrays, so CI checks them without a GPU.

    mod = EmulatedModule(SOURCE)                   # like cupy.RawModule(code=SOURCE)
    kernel = mod.get_function("name")              # like RawModule.get_function
    kernel(grid, block, (x, y, np.int32(n)), shared_mem=nbytes)   # like a RawKernel call

How it runs (the header says more): the blocks of a launch one after another; the threads of a
block as fibers that switch at every __syncthreads, __syncwarp and warp shuffle; a barrier that
some threads of a block never reach stops the launch with a one-line error instead of hanging.
Every argument is checked against the kernel's own parameter types before the launch: an array for
a pointer, of the pointee's size and kind (float32 for float*), and a NumPy scalar of exactly the
parameter's type (np.int32 for int). CuPy does not check a Python number against the type the
kernel declares; here a mismatch is an error, so the Python side of a kernel is checked too.

Limits: one source per module, no templates (extern "C" kernels only), no CUDA headers. Results
match a GPU's up to the fused multiply-adds nvcc adds by default (compiled here with
-ffp-contract=off): compare within a float32 tolerance. Races between barriers stay hidden in one
run; ``assert_race_free`` runs a launch in both schedule orders, which reveals many of them
(EmulatedModule's docstring).

``nvcc_ptx(SOURCE)`` compiles the same source for a real GPU (PTX, no device needed) where nvcc is
installed: what g++ accepts but CUDA would not is caught there.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HEADER = Path(__file__).with_name("cuda_emu.h")
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(')
_DYNAMIC_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?([\w ]+?)\s+(\w+)\s*\[\s*\]\s*;")
_SCALARS = {"f": np.float32, "d": np.float64, "i": np.int32, "u": np.uint32, "l": np.int64,
            "L": np.uint64}


def available() -> bool:
    """True where g++ can build the emulator (C++20 and ucontext)."""
    return shutil.which("g++") is not None


def _cache_dir() -> Path:
    d = Path(tempfile.gettempdir()) / f"minisims-cuda-emu-{os.getuid()}"
    d.mkdir(exist_ok=True)
    return d


class EmulatedKernel:
    """One __global__ function of an EmulatedModule; call it as a CuPy RawKernel."""

    def __init__(self, lib, name, module=None):
        self.name, self.module = name, module
        self._launch = getattr(lib, f"__emu_launch_{name}")
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                 ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]
        buf = ctypes.create_string_buffer(512)
        getattr(lib, f"__emu_describe_{name}")(buf)
        self.params = buf.value.decode().split()  # e.g. ["p4f", "i"]: float*, int

    def _arg(self, i, spec, a):
        where = f"{self.name}: argument {i}"
        if spec[0] == "p":
            size, kind = int(spec[1]), spec[2]
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{where} is a pointer: pass an array, not {type(a).__name__}")
            if not a.flags.c_contiguous:
                raise TypeError(f"{where}: the array must be C-contiguous")
            if a.dtype.itemsize != size or a.dtype.kind != kind:
                raise TypeError(f"{where}: the kernel reads {kind}{8 * size} values, the array is {a.dtype}")
            return ctypes.c_void_p(a.ctypes.data), a  # the slot holding the address
        want = _SCALARS.get(spec)
        if want is None:
            raise TypeError(f"{where}: parameter type {spec!r} is not supported by the emulator")
        if not isinstance(a, np.generic) or a.dtype != np.dtype(want):
            raise TypeError(f"{where}: pass np.{np.dtype(want).name}(...), not {type(a).__name__} "
                            f"(the GPU reads exactly the declared width)")
        box = np.array(a)  # 0-d array: its buffer outlives the call
        return ctypes.c_void_p(box.ctypes.data), box

    def __call__(self, grid, block, args, shared_mem=0):
        grid = tuple(grid) + (1,) * (3 - len(tuple(grid))) if isinstance(grid, tuple) else (grid, 1, 1)
        block = tuple(block) + (1,) * (3 - len(tuple(block))) if isinstance(block, tuple) else (block, 1, 1)
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, {len(args)} given")
        # args[i] points at argument i's value, as cuLaunchKernel takes them: for a pointer
        # parameter a slot holding the array's address, for a scalar the 0-d array's buffer
        keep = [self._arg(i, spec, a) for i, (spec, a) in enumerate(zip(self.params, args))]
        ptrs = (ctypes.c_void_p * max(1, len(keep)))()
        for i, (value, _) in enumerate(keep):
            ptrs[i] = ctypes.addressof(value) if self.params[i][0] == "p" else value.value
        g = (ctypes.c_uint * 3)(*map(int, grid))
        b = (ctypes.c_uint * 3)(*map(int, block))
        if self.module is not None:
            self.module.set_order()
        rc = self._launch(g, b, int(shared_mem), ptrs)
        if rc:
            raise RuntimeError(f"{self.name}: emulated launch failed (code {rc}; see stderr)")


class EmulatedModule:
    """A CUDA C source compiled for the CPU; ``get_function(name)`` as cupy.RawModule's.

    ``order`` ("ascending", the default, or "descending") is the schedule its launches use: the
    threads of a block between two barriers, and the blocks of the grid, in index order or in
    reverse. A kernel free of races gives the same bits either way (tests/cuda_emu.h says which
    races a difference reveals): ``assert_race_free`` runs a launch both ways and compares."""

    ORDERS = ("ascending", "descending")

    def __init__(self, code: str, options: tuple = ()):
        self.order = "ascending"
        self.names = _KERNEL.findall(code)
        if not self.names:
            raise ValueError('no extern "C" __global__ kernel in the source')
        body = _DYNAMIC_SHARED.sub(r"\1* \2 = reinterpret_cast<\1*>(__emu_dynamic_smem);", code)
        glue = "".join(
            f'extern "C" int __emu_launch_{n}(const unsigned* g, const unsigned* b, std::size_t s, '
            f'void** a) {{ return emu::launch("{n}", {n}, g, b, s, a); }}\n'
            f'extern "C" void __emu_describe_{n}(char* out) {{ emu::describe({n}, out); }}\n'
            for n in self.names) + 'extern "C" void __emu_set_order(int d) { emu::descending = d; }\n'
        source = body + "\n" + glue
        flags = ["-std=c++20", "-O1", "-fPIC", "-shared", "-ffp-contract=off", "-w",
                 *[str(o) for o in options]]
        key = hashlib.sha256("\0".join([HEADER.read_text(), source, *flags]).encode()).hexdigest()[:24]
        lib_path = _cache_dir() / f"{key}.so"
        if not lib_path.exists():
            src = _cache_dir() / f"{key}.{os.getpid()}.cpp"
            tmp = _cache_dir() / f"{key}.{os.getpid()}.so.tmp"
            src.write_text(source)
            cmd = ["g++", *flags, "-include", str(HEADER), str(src), "-o", str(tmp)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            src.unlink(missing_ok=True)
            if done.returncode:
                raise RuntimeError("g++ could not compile the kernel source:\n" + done.stderr[-4000:])
            os.replace(tmp, lib_path)
        self._lib = ctypes.CDLL(str(lib_path))

    def get_function(self, name: str) -> EmulatedKernel:
        if name not in self.names:
            raise KeyError(f"no kernel {name!r} in the source (has {self.names})")
        return EmulatedKernel(self._lib, name, self)

    def set_order(self):
        """Make the next launch use ``self.order``."""
        if self.order not in self.ORDERS:
            raise ValueError(f"order must be one of {self.ORDERS}, got {self.order!r}")
        getattr(self._lib, "__emu_set_order")(ctypes.c_int(self.order == "descending"))


def assert_race_free(modules, run):
    """``run()`` (which launches kernels of ``modules``, one EmulatedModule or several, and returns
    an array or a tuple of arrays) under both schedule orders: the results must be equal bit for
    bit, else AssertionError naming the first output that differs. Returns the ascending run's
    result."""
    modules = [modules] if isinstance(modules, EmulatedModule) else list(modules)
    results = {}
    try:
        for order in EmulatedModule.ORDERS:
            for m in modules:
                m.order = order
            out = run()
            results[order] = out if isinstance(out, tuple) else (out,)
    finally:
        for m in modules:
            m.order = "ascending"
    for i, (a, b) in enumerate(zip(*results.values())):
        a, b = np.asarray(a), np.asarray(b)
        if a.tobytes() != b.tobytes():
            raise AssertionError(f"output {i} differs between the ascending and descending "
                                 f"schedules: a race (a missing barrier, or blocks sharing data)")
    out = results["ascending"]
    return out if len(out) > 1 else out[0]


def nvcc_ptx(code: str, arch: str = "sm_90", options: tuple = ()) -> str | None:
    """Compile ``code`` to PTX with nvcc, as CuPy would for a GPU; the PTX text, or None where nvcc
    is not installed. Raises RuntimeError with nvcc's message if the source does not compile."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        src, out = Path(d) / "k.cu", Path(d) / "k.ptx"
        src.write_text(code)
        done = subprocess.run([nvcc, "-ptx", f"-arch={arch}", *options, str(src), "-o", str(out)],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError("nvcc could not compile the kernel source:\n" + done.stderr[-4000:])
        return out.read_text()
