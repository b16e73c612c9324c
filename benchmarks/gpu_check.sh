#!/usr/bin/env bash
# One short GPU run for the whole repository: the GPU tests (tests/gpu) and the GPU timings
# (conv: ours vs torch cuDNN; fused Heun step vs unfused CuPy; the UNet step when its benchmark
# exists). Run from the repository root:
#
#     bash benchmarks/gpu_check.sh
#
# Logs go to $OUT if it is set, else ./gpu_check_logs. Installs nothing. Every step runs under
# its own time limit (20 + 120 + 60 + 30 + 60 s = under 5 minutes at worst; most of the time is
# first-use compilation by NVRTC and numba); the script goes on past a failing or timed-out step
# and exits non-zero if any step failed. Needs python3 with cupy, numba(-cuda), torch, pytest.
set -u
cd "$(dirname "$0")/.."
LOG="${OUT:-./gpu_check_logs}"
mkdir -p "$LOG"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
unset NUMBA_ENABLE_CUDASIM
PY="${PYTHON:-python3}"
failed=()

step() {  # step NAME SECONDS COMMAND...: run with a time limit into $LOG/NAME.log, show its tail
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($*) ==="
    local t0=$SECONDS
    timeout "$limit" "$@" > "$LOG/$name.log" 2>&1
    local rc=$?
    tail -n 60 "$LOG/$name.log"
    echo "=== $name: exit $rc, $((SECONDS - t0)) s ==="
    [ "$rc" -eq 0 ] || failed+=("$name($rc)")
}

step env 20 bash -c "nvidia-smi -L; $PY -c 'import sys, numpy, numba, cupy; print(sys.version); \
print(\"numpy\", numpy.__version__, \"numba\", numba.__version__, \"cupy\", cupy.__version__); \
import numba.cuda as c; print(\"numba cuda available\", c.is_available()); \
import torch; print(\"torch\", torch.__version__, \"cuda\", torch.cuda.is_available())'"
step pytest_gpu 120 "$PY" -m pytest -q -rs --durations=8 tests/gpu
step bench_conv_gpu 60 "$PY" benchmarks/bench_conv.py --device gpu --repeats 7
step bench_heun_gpu 30 "$PY" benchmarks/bench_heun.py --device gpu --repeats 30
if [ -f benchmarks/bench_unet.py ]; then
    step bench_unet_gpu 60 "$PY" benchmarks/bench_unet.py --device gpu
fi

echo "logs in $LOG"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all GPU steps passed"
