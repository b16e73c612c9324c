"""Does the emulator's race check see a missing barrier? For a CUDA C kernel source, remove each
``__syncthreads();`` in turn, compile the rest with tests/cuda_emu.py, and run a launch under both
schedule orders (``cuda_emu.assert_race_free``): a removal is caught when the two orders disagree
(or the launch fails). The README's counts come from running this file:

    python tests/check_barriers.py        # every CUDA C kernel with barriers: caught / removed

A barrier whose removal is not caught is either not needed by the kernel as it is called, or
guards a race that neither order exposes: look at it. tests/test_kernels_mlp_train.py runs this on
the fused training kernels, all of whose removals must be caught.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cuda_emu  # noqa: E402

BARRIER = "__syncthreads();"


def barrier_removals(source: str, make_run) -> list[tuple[int, bool]]:
    """[(line of the barrier in ``source``, caught)] for each ``__syncthreads();`` removed alone;
    ``make_run(module)`` returns the launch to check (as ``assert_race_free`` takes it)."""
    out = []
    for m in re.finditer(re.escape(BARRIER), source):
        mutated = source[:m.start()] + "/* removed */" + source[m.end():]
        module = cuda_emu.EmulatedModule(mutated)
        try:
            cuda_emu.assert_race_free(module, make_run(module))
            caught = False
        except (AssertionError, RuntimeError):  # the orders disagree, or a barrier deadlock
            caught = True
        out.append((source[:m.start()].count("\n") + 1, caught))
    return out


def _packed(spec, R, rng):
    rows = []
    for din, dout in spec.layer_shapes():
        rows += [rng.standard_normal((R, din * dout)) / np.sqrt(din), rng.standard_normal((R, dout)) * 0.5]
    return np.concatenate(rows, axis=1).astype(np.float32)  # R,P


def mlp_train_case(spec=None):
    """(source, make_run) for the fused training kernels: forward then backward, 2 members,
    300 points (3 tiles, the last partial)."""
    from minisims.kernels import _mlp_train_cupy, mlp_train
    from minisims.kernels.mlp_eval import MLPSpec
    spec = spec or MLPSpec()
    rng = np.random.default_rng(0)
    params = _packed(spec, 2, rng)
    params_t = mlp_train.pack_transposed(params, spec)
    h_in = rng.standard_normal((2, 300, spec.dim + spec.emb_dim)).astype(np.float32)
    dy = rng.standard_normal((2, 300, spec.dim)).astype(np.float32)

    def make_run(mod):
        def run():
            y, saved = _mlp_train_cupy.forward(mod, h_in, params, spec)
            return (y, saved, *_mlp_train_cupy.backward(mod, dy, h_in, saved, params_t, spec))
        return run
    return _mlp_train_cupy.source(spec), make_run


def _cases():
    """(name, source, make_run) for every CUDA C kernel with barriers."""
    from minisims.kernels import _conv2d_igemm as G
    from minisims.kernels import _groupnorm_silu_cupy as GN
    from minisims.kernels import _mlp_eval_cupy, _mlp_eval_tiled
    from minisims.kernels.conv2d import out_size
    from minisims.kernels.mlp_eval import MLPSpec
    yield ("mlp_train (forward, backward)", *mlp_train_case())
    rng = np.random.default_rng(1)
    spec = MLPSpec()
    params, freqs = _packed(spec, 2, rng), np.ones(8, np.float32)
    x = rng.standard_normal((2, 300, 2)).astype(np.float32)
    for name, version in (("mlp_eval tiled", _mlp_eval_tiled), ("mlp_eval cupy", _mlp_eval_cupy)):
        yield (name, version.source(spec),
               lambda mod, v=version: lambda: v.evaluate(mod, x, 0.3, params, freqs, spec))
    N, C, O, H, W, k, s, p = 2, 15, 130, 11, 13, 3, 2, 1  # remainders of every tile, stride 2
    xc = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((O, C, k, k)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    dy = rng.standard_normal((N, O, out_size(H, k, s, p), out_size(W, k, s, p))).astype(np.float32)
    for tile in G.TILES:
        def make_run(mod, tile=tile):
            mods = {t: mod for t in G.TILES}
            return lambda: (G.forward(mods, xc, w, b, s, p, tile),
                            G.backward_input(mods, dy, w, xc.shape, s, p, tile),
                            *G.backward_weight(mods, dy, xc, w.shape, s, p, 32, tile),
                            *G.backward_weight(mods, dy, xc, w.shape, s, p, 48, tile))
        yield f"igemm {tile} (forward, dx, dw with splits of 2 and 3 row tiles)", G.source(tile), make_run
    xg = rng.standard_normal((2, 4, 20, 15)).astype(np.float32)
    dyg = rng.standard_normal(xg.shape).astype(np.float32)
    gamma, beta = np.full(4, 1.1, np.float32), np.full(4, 0.2, np.float32)
    bias = rng.standard_normal((2, 4)).astype(np.float32)

    def gn_run(mod):
        def run():
            y, mean, rstd = GN.forward(mod, xg, gamma, beta, 2, 1e-5, bias, True)
            return (y, mean, rstd, *GN.backward(mod, dyg, xg, gamma, beta, mean, rstd, bias, True))
        return run
    yield "groupnorm_silu (forward, backward)", GN.SOURCE, gn_run


def main() -> int:
    if not cuda_emu.available():
        print("needs g++")
        return 1
    for name, source, make_run in _cases():
        found = barrier_removals(source, make_run)
        missed = [line for line, caught in found if not caught]
        print(f"{name}: {sum(c for _, c in found)} of {len(found)} removals caught"
              + (f"; not caught at source lines {missed}" if missed else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
