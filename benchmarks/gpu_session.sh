#!/usr/bin/env bash
# Everything this project checks on a GPU, in one run of under ten minutes on one H100:
# the toy command line on CuPy, the GPU tests and timings (benchmarks/gpu_check.sh), and a short
# Figure 4 sweep on CuPy. Results go to $OUT (or ./gpu_session_logs), packed into one archive.
#     bash benchmarks/gpu_session.sh [FIG4_SECONDS]
set -u
cd "$(dirname "$0")/.."
DEST="${OUT:-./gpu_session_logs}"
WORK=$(mktemp -d)
mkdir -p "$DEST"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
FIG4_SECONDS=${1:-200}

echo "=== toy on the GPU ==="
t0=$SECONDS
timeout 120 python3 -m minisims.toy --device gpu --runs 256 --omega 0,0.5,1,2,3 --quiet \
    --outdir "$WORK/toy_gpu" 2>&1 | tee "$WORK/toy_gpu.log"
echo "=== toy: $((SECONDS - t0)) s ==="

OUT="$WORK/gpu_check" timeout 330 bash benchmarks/gpu_check.sh

echo "=== figure 4 on the GPU (limit ${FIG4_SECONDS} s) ==="
t0=$SECONDS
timeout "$FIG4_SECONDS" python3 toy/figure4.py --preset gpu --device gpu --generations 12 \
    --inf-from 6 --quiet --outdir "$WORK/figure4_gpu" 2>&1 | tail -n 40 | tee "$WORK/figure4_gpu.log"
echo "=== figure 4: exit ${PIPESTATUS[0]}, $((SECONDS - t0)) s ==="

cp "$WORK"/figure4_gpu/figure4.png "$DEST/" 2>/dev/null
cp "$WORK"/figure4_gpu/figure4_table.md "$DEST/" 2>/dev/null
tar czf "$DEST/gpu_session.tgz" -C "$WORK" .
echo "packed into $DEST/gpu_session.tgz"
