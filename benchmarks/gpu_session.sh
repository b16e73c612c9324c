#!/usr/bin/env bash
# Everything this project checks on a GPU, in one run of under ten minutes on one H100:
# the toy command line on CuPy, the GPU tests and timings (benchmarks/gpu_check.sh), and the toy
# experiments' GPU check (toy/gpu_check.py: bit-exact loops on CuPy, the tiny figure presets, and
# timings that project the Figure 4 gpu and paper presets). Results go to $OUT (or
# ./gpu_session_logs), packed into one archive.
#     bash benchmarks/gpu_session.sh [TOY_CHECK_SECONDS]
# numba-cuda 0.x fails to compile any kernel with NumPy 2.5 (np.row_stack is gone): run it with
# NumPy <= 2.4 (on the H100 image: carry a numpy 2.4 wheel and put it first on PYTHONPATH).
set -u
cd "$(dirname "$0")/.."
DEST="${OUT:-./gpu_session_logs}"
WORK=$(mktemp -d)
mkdir -p "$DEST"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
TOY_CHECK_SECONDS=${1:-200}

echo "=== toy on the GPU ==="
t0=$SECONDS
timeout 120 python3 -m minisims.toy --device gpu --runs 256 --omega 0,0.5,1,2,3 --quiet \
    --outdir "$WORK/toy_gpu" 2>&1 | tee "$WORK/toy_gpu.log"
echo "=== toy: $((SECONDS - t0)) s ==="

OUT="$WORK/gpu_check" timeout 330 bash benchmarks/gpu_check.sh

echo "=== toy experiments on the GPU (limit ${TOY_CHECK_SECONDS} s) ==="
t0=$SECONDS
timeout "$TOY_CHECK_SECONDS" python3 toy/gpu_check.py --outdir "$WORK/toy_gpu_check" 2>&1 \
    | tail -n 60 | tee "$WORK/toy_gpu_check.log"
echo "=== toy gpu check: exit ${PIPESTATUS[0]}, $((SECONDS - t0)) s ==="

tar czf "$DEST/gpu_session.tgz" -C "$WORK" .
echo "packed into $DEST/gpu_session.tgz"
