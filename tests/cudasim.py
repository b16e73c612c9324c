"""Run a test file's checks in a child process under numba's CUDA simulator.

NUMBA_ENABLE_CUDASIM=1 must be set before numba is first imported, and the rest of the suite
imports numba normally, so a simulator test starts its own file as a script with the variable set
(the file's ``__main__`` block runs the checks and prints what passed)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_under_simulator(path, timeout: int = 300) -> str:
    """Run ``python path`` with the simulator on and the repository importable; its stdout.
    Fails the calling test, with the child's output, when the child fails."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(path)], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"simulator checks failed:\n{out.stdout}\n{out.stderr[-3000:]}"
    return out.stdout
