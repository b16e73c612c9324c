#!/usr/bin/env bash
# One short GPU run for the whole repository: the GPU tests (tests/gpu) and the GPU timings
# (the toy MLP's training step and evaluation vs torch; conv: ours vs torch cuDNN, by wall clock
# and, for igemm, by GPU time per phase; fused Heun step vs unfused CuPy; the UNet step vs torch
# and its per-layer-kind profile). Run from the repository root:
#
#     bash benchmarks/gpu_check.sh
#     bash benchmarks/gpu_check.sh toy   # only the toy MLP's fused kernels: tests, bench_mlp_gpu,
#                                        # toy/gpu_check.py timings at R = 1000, the toy profile
#                                        # (time limits 120 + 90 + 240 + 150 s; not yet run)
#     bash benchmarks/gpu_check.sh pending   # all that has never run on a GPU, sized for one
#                                        # device call (limits 20 + 120 + 75 + 200 + 45 + 90 s =
#                                        # 550 s at worst): the toy's fused kernels as above, and
#                                        # igemm's parity-split stride-2 input gradient (its GPU
#                                        # test and bench_igemm_tiles.py, which times it both ways)
#
# Logs go to $OUT if it is set, else ./gpu_check_logs. Installs nothing (the README's "GPU" says
# how: the gpu-cuda12 / gpu-cuda13 extras). It first prints what it runs on: the CuPy package
# (cupy-cuda12x or cupy-cuda13x), the CUDA runtime and driver, numba and numba-cuda, NumPy, torch.
# Every step runs under its own time limit (20 + 120 + 90 + 90 + 45 + 30 + 90 + 60 s = under 10 minutes
# at worst; most of the time is first-use compilation by NVRTC and numba); the script goes on past a
# failing or timed-out step and exits non-zero if any step failed. Needs python3 with cupy,
# numba-cuda, torch, pytest.
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

# What this run used: which CuPy wheel, the CUDA runtime it loaded, numba-cuda, NumPy.
read -r -d '' ENV_PY <<'EOF'
import importlib.metadata as md
import sys

import numpy


def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def cuda_version(n):
    return f"{n // 1000}.{n % 1000 // 10}"  # CUDA's 13010 is 13.1


print("python", sys.version.split()[0], "| numpy", numpy.__version__, "| numba", version("numba"),
      "| numba-cuda", version("numba-cuda") or "not installed", "| torch", version("torch"))
wheels = md.packages_distributions().get("cupy", [])
print("cupy package:", ", ".join(f"{d} {version(d)}" for d in wheels) or "none")
ok = True
try:
    import cupy
    rt = cupy.cuda.runtime
    name = rt.getDeviceProperties(0)["name"]
    print("CUDA runtime", cuda_version(rt.runtimeGetVersion()), "| driver",
          cuda_version(rt.driverGetVersion()), "|", name.decode() if isinstance(name, bytes) else name,
          "| cupy", cupy.__version__)
    cupy.zeros(1).sum()
except Exception as e:
    ok = False
    print("CuPy cannot run:", type(e).__name__, *str(e).strip().splitlines()[:1])
try:
    from numba import cuda
    print("numba.cuda available:", cuda.is_available())
except Exception as e:
    print("numba.cuda does not import:", type(e).__name__, *str(e).strip().splitlines()[:1])
if version("numba-cuda") and tuple(int(p) for p in numpy.__version__.split(".")[:2]) >= (2, 5):
    print("WARNING: numba-cuda (0.30.4 and older) compiles no kernel under NumPy >= 2.5 "
          "(np.row_stack is gone): pip install 'numpy<2.5'")
sys.exit(0 if ok else 1)
EOF
export ENV_PY PY
step env 20 bash -c 'nvidia-smi -L; "$PY" -c "$ENV_PY"'
if [ "${1:-all}" = pending ]; then
    # what no GPU has run yet: the toy MLP's fused training and tiled evaluation (tests, against
    # PyTorch, a Figure 4 generation at R = 1000 with the fused training on and off, the profile)
    # and igemm's stride-2 input gradient by parity classes (the GPU test, then GPU time per phase)
    step pytest_pending 120 "$PY" -m pytest -q -rs tests/gpu/test_mlp_train_gpu.py \
        tests/gpu/test_mlp_eval_gpu.py tests/gpu/test_kernels_gpu.py -k "mlp or igemm"
    step bench_mlp_gpu 75 "$PY" benchmarks/bench_mlp_gpu.py --runs 1000 --points 2000 --repeats 15
    step toy_timings 200 "$PY" toy/gpu_check.py --sizes 1000 --fused-eval on --fused-train both \
        --eval-version tiled --outdir "$LOG/toy_gpu_check"
    step bench_igemm 45 "$PY" benchmarks/bench_igemm_tiles.py --tiles auto
    step toy_profile 90 "$PY" benchmarks/profile_toy_gpu.py --runs 1000 --kernels 20
    echo "logs in $LOG"
    [ ${#failed[@]} -eq 0 ] || { echo "FAILED: ${failed[*]}"; exit 1; }
    echo "all pending GPU steps passed"
    exit 0
fi
if [ "${1:-all}" = toy ]; then
    # the toy MLP's fused kernels alone: their GPU tests, the training step and the evaluation
    # against PyTorch, a Figure 4 generation at R = 1000 with the fused training on and off (and
    # the presets projected from it), and where a generation's time goes
    step pytest_mlp 120 "$PY" -m pytest -q -rs tests/gpu/test_mlp_train_gpu.py tests/gpu/test_mlp_eval_gpu.py
    step bench_mlp_gpu 90 "$PY" benchmarks/bench_mlp_gpu.py --runs 1000 --points 2000 --repeats 15
    step toy_timings 240 "$PY" toy/gpu_check.py --sizes 1000 --fused-eval on --fused-train both \
        --outdir "$LOG/toy_gpu_check"
    step toy_profile 150 "$PY" benchmarks/profile_toy_gpu.py --runs 1000 --kernels 20
    echo "logs in $LOG"
    [ ${#failed[@]} -eq 0 ] || { echo "FAILED: ${failed[*]}"; exit 1; }
    echo "all toy GPU steps passed"
    exit 0
fi
step pytest_gpu 120 "$PY" -m pytest -q -rs --durations=8 tests/gpu
step bench_mlp_gpu 90 "$PY" benchmarks/bench_mlp_gpu.py --runs 1000 --points 2000 --repeats 15
step bench_conv_gpu 90 "$PY" benchmarks/bench_conv.py --device gpu --repeats 7
# igemm by GPU time against cuDNN per phase, and the stride-2 input gradient with and without its parity split
step bench_igemm 45 "$PY" benchmarks/bench_igemm_tiles.py --tiles auto
step bench_heun_gpu 30 "$PY" benchmarks/bench_heun.py --device gpu --repeats 30
# the UNet step against torch, then where our step spends its time (a markdown table per layer kind)
step bench_unet_gpu 90 "$PY" benchmarks/bench_unet.py --device gpu --profile
# the same without the fused GroupNorm+SiLU and Adam+EMA kernels: the before/after of the fusion
step bench_unet_gpu_unfused 60 "$PY" benchmarks/bench_unet.py --device gpu --profile --rounds 2 --fused off

echo "logs in $LOG"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all GPU steps passed"
