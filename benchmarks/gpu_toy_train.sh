#!/usr/bin/env bash
# The toy's fused training step on a GPU, in one short run (issue 9's toy goal: the Figure 4
# `paper` preset in an hour): the GPU tests of the fused kernels (training and sampling), one
# Figure 4 generation at R = 1000 timed with the fused training on and off (the fused sampling
# on both times) and the presets projected from it, then where a generation's time goes with the
# fused training (benchmarks/profile_toy_gpu.py). Run from the repository root:
#
#     bash benchmarks/gpu_toy_train.sh
#
# Logs go to $OUT if it is set, else ./gpu_toy_train_logs. Every step has its own time limit
# (120 + 240 + 150 s, under 9 minutes at worst; about 4 on an H200 by the earlier runs' sizes);
# the script goes on past a failing step and exits non-zero if any failed. Needs python3 with
# cupy, pytest (and torch for the profiler's kernel table). numba-cuda is not needed here.
set -u
cd "$(dirname "$0")/.."
LOG="${OUT:-./gpu_toy_train_logs}"
mkdir -p "$LOG"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
failed=()

step() {  # step NAME SECONDS COMMAND...: run with a time limit into $LOG/NAME.log, show its tail
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($*) ==="
    local t0=$SECONDS
    timeout "$limit" "$@" > "$LOG/$name.log" 2>&1
    local rc=$?
    tail -n 45 "$LOG/$name.log"
    echo "=== $name: exit $rc, $((SECONDS - t0)) s ==="
    [ "$rc" -eq 0 ] || failed+=("$name($rc)")
}

step pytest_mlp 120 "$PY" -m pytest -q -rs tests/gpu/test_mlp_train_gpu.py tests/gpu/test_mlp_eval_gpu.py
step toy_timings 240 "$PY" toy/gpu_check.py --sizes 1000 --fused-eval on --fused-train both \
    --outdir "$LOG/toy_gpu_check"
step toy_profile 150 "$PY" benchmarks/profile_toy_gpu.py --runs 1000 --kernels 20

if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all steps passed"
