#!/usr/bin/env bash
# Everything this project checks on a GPU, in one run: the toy command line on CuPy, the GPU tests
# and timings (benchmarks/gpu_check.sh, which runs tests/gpu including the image pipeline's), the
# toy experiments' GPU check (toy/gpu_check.py: bit-exact loops on CuPy, the tiny figure presets,
# and timings that project the Figure 4 gpu and paper presets), and the image experiment's `gpu`
# preset at two training seeds (python -m minisims.images sims --preset gpu --train-seeds 0,1:
# summary.md is its table over the seeds; resumable, so a second call finishes a run cut short by
# IMAGES_SECONDS when $IMAGES_DIR keeps the folder) on an archive of CIFAR-10's layout made
# from scikit-image's photographs (no CIFAR-10 can be fetched on the GPU machine; with a real copy,
# point --data at it). Results go to $OUT (or ./gpu_session_logs), packed into one archive.
#     bash benchmarks/gpu_session.sh [TOY_CHECK_SECONDS] [IMAGES_SECONDS]
# numba-cuda 0.x fails to compile any kernel with NumPy 2.5 (np.row_stack is gone): run it with
# NumPy <= 2.4 (on the H100 image: carry a numpy 2.4 wheel and put it first on PYTHONPATH).
set -u
cd "$(dirname "$0")/.."
DEST="${OUT:-./gpu_session_logs}"
WORK=$(mktemp -d)
mkdir -p "$DEST"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
TOY_CHECK_SECONDS=${1:-260}  # gpu_check times each generation with the fused MLP evaluation on and off
IMAGES_SECONDS=${2:-420}

echo "=== toy on the GPU ==="
t0=$SECONDS
timeout 120 python3 -m minisims.toy --device gpu --runs 256 --omega 0,0.5,1,2,3 --quiet \
    --outdir "$WORK/toy_gpu" 2>&1 | tee "$WORK/toy_gpu.log"
echo "=== toy: $((SECONDS - t0)) s ==="

OUT="$WORK/gpu_check" timeout 420 bash benchmarks/gpu_check.sh

echo "=== per-run random streams on the GPU: the draws at R = 1000, and a toy job at R = 256 ==="
timeout 150 python3 benchmarks/bench_streams.py --device gpu --runs 1000 --no-job 2>&1 | tee "$WORK/bench_streams_gpu.log"
timeout 150 python3 benchmarks/bench_streams.py --device gpu --runs 256 --job-repeats 1 2>&1 \
    | tail -n 3 | tee -a "$WORK/bench_streams_gpu.log"

echo "=== toy experiments on the GPU (limit ${TOY_CHECK_SECONDS} s) ==="
t0=$SECONDS
timeout "$TOY_CHECK_SECONDS" python3 toy/gpu_check.py --outdir "$WORK/toy_gpu_check" 2>&1 \
    | tail -n 60 | tee "$WORK/toy_gpu_check.log"
echo "=== toy gpu check: exit ${PIPESTATUS[0]}, $((SECONDS - t0)) s ==="

echo "=== images: the gpu preset (limit ${IMAGES_SECONDS} s) ==="
t0=$SECONDS
python3 -c "import sys; sys.path.insert(0, 'tests'); from cifar_like import make_cifar_like; \
make_cifar_like('$WORK/cifar_like', per_batch=10000)" && \
IMAGES_DIR=${IMAGES_DIR:-$WORK/images_gpu}
timeout "$IMAGES_SECONDS" python3 -m minisims.images sims --device gpu --preset gpu --quiet \
    --train-seeds 0,1 --data "$WORK/cifar_like/cifar-10-python.tar.gz" --data-md5 none \
    --outdir "$IMAGES_DIR" 2>&1 | tail -n 60 | tee "$WORK/images_gpu.log"
echo "=== images gpu preset: exit ${PIPESTATUS[0]}, $((SECONDS - t0)) s ==="
mkdir -p "$WORK/images_gpu_tables"  # the tables and results, not the weights or samples
(cd "$IMAGES_DIR" && find . -name '*.md' -o -name '*.json' -o -name '*.png' | tar cf - -T -) \
    | tar xf - -C "$WORK/images_gpu_tables"
rm -rf "$WORK/images_gpu" "$WORK"/cifar_like/cifar-10-python.tar.gz  # keep the archive small

tar czf "$DEST/gpu_session.tgz" -C "$WORK" .
echo "packed into $DEST/gpu_session.tgz"
