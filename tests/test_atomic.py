"""minisims.atomic: no temporary outlives its writer, and saved files follow the umask.

The signal tests run a child Python that writes a large file slowly through ``atomic_write`` and
is signalled in the middle of it; the parent then looks at the folder.
"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from minisims import atomic, checkpoint
from minisims.atomic import atomic_write, write_json
from minisims.nn.mlp import MLPConfig, MLPDenoiser

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals, umask and PIDs")

# Writes 1 MB chunks with pauses (about 10 s in all) and says "writing" after the first one.
SLOW_WRITER = r"""
import signal, sys, time
from minisims.atomic import atomic_write
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
if sys.argv[2] == "own-handler":  # a program that handles SIGTERM itself: exit via SystemExit
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(3))
with atomic_write(sys.argv[1], "wb") as f:
    for i in range(500):
        f.write(b"x" * 2**20)
        f.flush()
        if i == 0:
            print("writing", flush=True)
        time.sleep(0.02)
"""


def _signal_mid_write(path, sig, handler="default"):
    """Start the slow writer on ``path``, send ``sig`` once it writes; returns its exit code."""
    child = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(path), handler],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing", child.stderr.read()
        assert any(p.name.startswith(".tmp-") for p in path.parent.iterdir())  # mid-write
        child.send_signal(sig)
        return child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@posix_only
@pytest.mark.parametrize("sig, handler, expected_rc", [
    (signal.SIGTERM, "default", -signal.SIGTERM),  # still dies of SIGTERM, as without the handler
    (signal.SIGINT, "default", -signal.SIGINT),  # KeyboardInterrupt; Python re-raises SIGINT
    (signal.SIGTERM, "own-handler", 3),  # the program's own handler is kept and runs
])
def test_a_signal_mid_write_leaves_no_temporary_and_the_old_file(tmp_path, sig, handler, expected_rc):
    path = tmp_path / "big.bin"
    path.write_bytes(b"old")
    rc = _signal_mid_write(path, sig, handler)
    assert rc == expected_rc
    assert [p.name for p in tmp_path.iterdir()] == ["big.bin"]  # no .tmp-* left
    assert path.read_bytes() == b"old"


def test_the_temporary_is_named_with_the_pid(tmp_path):
    with atomic_write(str(tmp_path / "a.npz")) as f:
        (tmp,) = [p.name for p in tmp_path.iterdir()]
        f.write(b"data")
    assert re.fullmatch(rf"\.tmp-{os.getpid()}-[0-9a-f]{{16}}\.npz", tmp), tmp
    assert atomic._TMP_NAME.fullmatch(tmp)


def _dead_pid():
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@posix_only
def test_stale_temporaries_of_dead_processes_are_swept(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    old = time.time() - 2 * atomic.STALE_AFTER_S
    names = {
        "stale": f".tmp-{dead}-0123456789abcdef.npz",  # dead and old: swept
        "fresh": f".tmp-{dead}-1123456789abcdef.npz",  # dead but recent: may be another host's
        "alive": f".tmp-{alive}-2123456789abcdef.npz",  # its process runs: being written
        "foreign": ".tmp-x1y2z3.npz",  # not our pattern (mkstemp's): never touched
        "user": "results.npz",
    }
    for key, name in names.items():
        (tmp_path / name).write_bytes(b"x")
        if key != "fresh":
            os.utime(tmp_path / name, (old, old))
    write_json(str(tmp_path / "r.json"), {"a": 1})  # the first write into the folder sweeps it
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {names[k] for k in ("fresh", "alive", "foreign", "user")} | {"r.json"}


@posix_only
def test_a_sigkill_leftover_is_swept_by_the_next_writer(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"old")
    assert _signal_mid_write(path, signal.SIGKILL) == -signal.SIGKILL
    (leftover,) = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # Python ran no code
    old = time.time() - 2 * atomic.STALE_AFTER_S
    os.utime(leftover, (old, old))
    atomic._swept_folders.discard(str(tmp_path))
    with atomic_write(str(path)) as f:
        f.write(b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["big.bin"]
    assert path.read_bytes() == b"new"


@posix_only
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_follow_the_umask(tmp_path, rng, umask):
    model = MLPDenoiser(MLPConfig(hidden=4, depth=1), rng)
    previous = os.umask(umask)
    try:
        write_json(str(tmp_path / "r.json"), {"a": 1})
        checkpoint.save_checkpoint(str(tmp_path / "m.npz"), model)
        (tmp_path / "plain").write_bytes(b"")  # what open() gives, for comparison
    finally:
        os.umask(previous)
    for name in ("r.json", "m.npz", "plain"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == oct(0o666 & ~umask), name


def test_a_failed_write_unregisters_its_temporary(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_write(str(tmp_path / "a.bin")) as f:
            f.write(b"half")
            raise RuntimeError("interrupted")
    assert not atomic._open_temps
    assert list(tmp_path.iterdir()) == []
